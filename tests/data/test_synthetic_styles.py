"""Appearance styles within a class (``SynthConfig.styles``): a Zipf tail of looks (16 by default
since v9a); 1 draws nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wrel.data.synth import SynthConfig, generate_benchmark
from wrel.data.synth.scene import _crop_patch
from wrel.data.synth.styles import PLAIN, class_style, draw_style, style_weights

SMALL = {"num_train": 160, "num_val": 0, "num_test": 0, "seed": 5}


def test_one_style_draws_nothing_and_stays_out_of_the_hash() -> None:
    rng, again = np.random.default_rng(1), np.random.default_rng(1)
    assert draw_style(rng, 1, 1.0) == 0
    assert rng.random() == again.random()  # no draw was taken from the render's stream
    plain = SynthConfig(styles=1, fill_splits=False)
    assert SynthConfig(styles=1, style_tail=1.0, fill_splits=False).settings_hash() == (
        plain.settings_hash()
    )
    assert plain.settings_hash() == "fe24e61c35af"  # v7's, rendered before styles existed
    assert SynthConfig(styles=16).settings_hash() != plain.settings_hash()
    assert SynthConfig(styles=16, style_tail=2.0).settings_hash() != (
        SynthConfig(styles=16).settings_hash()
    )


def test_style_weights_are_a_zipf_tail() -> None:
    w = style_weights(16, 1.0)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) < 0)
    assert w[0] / w[1] == pytest.approx(2.0) and w[0] / w[15] == pytest.approx(16.0)
    assert np.allclose(style_weights(4, 0.0), 0.25)  # tail 0: uniform
    rng = np.random.default_rng(0)
    draws = np.bincount([draw_style(rng, 8, 1.0) for _ in range(20_000)], minlength=8)
    assert np.abs(draws / 20_000 - style_weights(8, 1.0)).max() < 0.01
    with pytest.raises(ValueError, match="styles must be"):
        style_weights(0, 1.0)


def test_class_styles_are_fixed_per_class_and_index() -> None:
    assert class_style("vehicle", 0) == PLAIN
    a, b = class_style("vehicle", 3), class_style("vehicle", 3)
    assert a == b and a != PLAIN
    assert class_style("ship", 3) != a and class_style("vehicle", 4) != a
    for name in ("vehicle", "airport", "harbor"):
        for k in range(1, 20):
            s = class_style(name, k)
            assert 0.08 <= s.warp <= 0.25 and 2 <= s.lobes <= 6
            assert 0.7 <= s.aspect <= 1.4 and 0.1 <= s.stripe_depth <= 0.25
    with pytest.raises(ValueError, match="style index"):
        class_style("vehicle", -1)


def test_wobble_and_stripes_change_the_look_only_when_styled() -> None:
    u, v = np.meshgrid(np.linspace(-8, 8, 33), np.linspace(-8, 8, 33))
    assert PLAIN.warp_coords(u, v)[0] is u
    style = class_style("storagetank", 2)
    wu, wv = style.warp_coords(u, v)
    radius = np.hypot(u, v)
    ratio = np.hypot(wu, wv)[radius > 0] / radius[radius > 0]
    assert ratio.min() >= 1 / (1 + style.warp) - 1e-6 and ratio.max() <= 1 / (1 - style.warp) + 1e-6
    rgb = np.full((33, 33, 3), 200.0, dtype=np.float32)
    mask = radius <= 6
    style.paint(rgb, mask, u, v, 12.0)
    dark = rgb[..., 0] < 200
    assert dark.any() and not (dark & ~mask).any()  # stripes inside the object only
    assert np.allclose(rgb[dark, 0], 200 * (1 - style.stripe_depth))
    assert dark[mask].mean() < 0.7  # the named colour stays the object's dominant one


def test_crop_patch_keeps_the_part_inside_the_image() -> None:
    mask = np.ones((5, 5), dtype=bool)
    rgb = np.zeros((5, 5, 3), dtype=np.float32)
    y0, x0, m, c = _crop_patch(-2, 3, mask, rgb, 6)
    assert (y0, x0, m.shape, c.shape[:2]) == (0, 3, (3, 3), (3, 3))
    assert _crop_patch(1, 1, mask, rgb, 6)[2].shape == (5, 5)


def test_validation_names_the_bad_style_setting() -> None:
    with pytest.raises(ValueError, match="styles=0"):
        SynthConfig(styles=0)
    with pytest.raises(ValueError, match="styles=65"):
        SynthConfig(styles=65)
    with pytest.raises(ValueError, match="style_tail=-1"):
        SynthConfig(styles=4, style_tail=-1.0)


def _render(root: Path, **settings: object) -> dict:
    generate_benchmark(root, SynthConfig(**SMALL, **settings), progress=False)  # type: ignore[arg-type]
    return json.loads((root / "synthetic" / "instances.json").read_text())


def test_a_styled_render_is_deterministic_and_follows_the_tail(tmp_path: Path) -> None:
    data = _render(tmp_path / "a", styles=8, style_tail=1.0)
    again = _render(tmp_path / "b", styles=8, style_tail=1.0)
    assert data == again
    plain = _render(tmp_path / "plain", styles=1)
    assert all("style" not in a for a in plain["annotations"])  # as before styles existed
    styles = Counter(a["style"] for a in data["annotations"])
    assert set(styles) <= set(range(8)) and len(styles) >= 6
    expected = style_weights(8, 1.0) * sum(styles.values())
    assert styles[0] > styles[7]
    assert abs(styles[0] - expected[0]) < 4 * np.sqrt(expected[0])  # ~ its Zipf share
    size = data["images"][0]["height"]
    for ann in data["annotations"]:  # every wobbled mask lies inside its image and is not empty
        rle = ann["segmentation"]
        m = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert m.shape == (size, size) and m.sum() == ann["area"] > 0
