"""``fill_splits``: split sizes counted in samples, the images without a ref left out."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import wrel.data.synth as synth
from wrel.data.refer import load_refs
from wrel.data.synth import SynthConfig, generate_benchmark
from wrel.data.synth.config import HASH_NEUTRAL
from wrel.data.synth.generate import ImageRecord

#: 300 train images of seed 0 give 297 samples unfilled: three targets find no room.
ASKED = {"num_train": 300, "num_val": 30, "num_test": 30}


def _split_refs(root: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ref in load_refs(root / "synthetic" / "refs(unc).p"):
        out.setdefault(ref["split"], []).append(ref)
    return out


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fill")
    generate_benchmark(root / "images", SynthConfig(**ASKED, fill_splits=False), progress=False)
    generate_benchmark(root / "filled", SynthConfig(**ASKED, fill_splits=True), progress=False)
    return root / "images", root / "filled"


def test_filled_splits_hold_exactly_the_samples_asked(renders: tuple[Path, Path]) -> None:
    unfilled, filled = renders
    short = json.loads((unfilled / "synthetic" / "meta.json").read_text())["splits"]
    assert short["train"]["refs"] < ASKED["num_train"]  # the case filling is for
    meta = json.loads((filled / "synthetic" / "meta.json").read_text())
    for split in ("train", "val", "test"):
        asked = ASKED[f"num_{split}"]
        assert meta["splits"][split]["refs"] == asked
        # one ref per image, and no image without one
        assert meta["splits"][split]["images"] == asked
    images = json.loads((filled / "synthetic" / "instances.json").read_text())["images"]
    refs_per_image = Counter(r["image_id"] for refs in _split_refs(filled).values() for r in refs)
    assert sorted(refs_per_image) == [im["id"] for im in images]
    assert set(refs_per_image.values()) == {1}


def test_a_filled_split_begins_with_the_unfilled_images(renders: tuple[Path, Path]) -> None:
    """Filling renders the next image indices, so every sample of the unfilled render is kept,
    in order, with the same pixels and expression."""
    unfilled, filled = renders
    a, b = _split_refs(unfilled), _split_refs(filled)
    pixels = {}
    for root in renders:
        folder = root / "images" / "synthetic" / "JPEGImages"
        pixels[root] = {p.name: p.read_bytes() for p in folder.iterdir()}
    for split in ("train", "val", "test"):
        kept = b[split][: len(a[split])]
        assert [r["sentences"][0]["sent"] for r in kept] == [
            r["sentences"][0]["sent"] for r in a[split]
        ]
        for ra, rb in zip(a[split], kept, strict=True):
            assert pixels[unfilled][ra["file_name"]] == pixels[filled][rb["file_name"]]
        extra = len(b[split]) - len(a[split])
        assert extra == ASKED[f"num_{split}"] - len(a[split])


def test_filled_render_is_the_same_with_workers(renders: tuple[Path, Path], tmp_path: Path) -> None:
    generate_benchmark(
        tmp_path, SynthConfig(**ASKED, fill_splits=True), num_workers=2, progress=False
    )
    _, filled = renders
    for name in ("refs(unc).p", "instances.json", "attributes.json", "meta.json"):
        assert (tmp_path / "synthetic" / name).read_bytes() == (
            filled / "synthetic" / name
        ).read_bytes(), name


def test_several_refs_per_image_are_cut_to_the_count(tmp_path: Path) -> None:
    cfg = SynthConfig(
        num_train=7, num_val=3, num_test=0, refs_per_image=2, regime="ambiguous",
        fill_splits=True,
    )  # fmt: skip
    generate_benchmark(tmp_path, cfg, progress=False)
    splits = json.loads((tmp_path / "synthetic" / "meta.json").read_text())["splits"]
    assert {s: v["refs"] for s, v in splits.items()} == {"train": 7, "val": 3, "test": 0}
    assert splits["train"]["images"] == 4  # 2 + 2 + 2 + 1
    assert splits["test"]["images"] == 0


def test_a_config_that_refers_to_nothing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filling gives up after 4 n + 64 images, naming the split and what it got."""
    empty = ImageRecord(png=b"", instances=[], refs=[])
    calls = []

    def no_refs(config: SynthConfig, split_index: int, index: int) -> ImageRecord:
        calls.append(index)
        return empty

    monkeypatch.setattr(synth, "build_image", no_refs)
    with pytest.raises(ValueError, match=r"train: 72 images gave only 0 of 2 samples"):
        generate_benchmark(
            tmp_path, SynthConfig(num_train=2, num_val=0, num_test=0, fill_splits=True),
            progress=False,
        )  # fmt: skip
    assert calls == list(range(72))


def test_fill_splits_is_hash_neutral_off_and_validated() -> None:
    assert HASH_NEUTRAL["fill_splits"] is False
    assert SynthConfig().fill_splits is True  # the default since v9b
    assert SynthConfig(fill_splits=False).settings_hash() == "2d5a18a07c7a"  # v9a's
    assert SynthConfig().settings_hash() == "6807aa7899ee"  # v9b's
    assert SynthConfig.for_regime("ambiguous").fill_splits is False
    with pytest.raises(ValueError, match="fill_splits='yes' must be true or false"):
        SynthConfig(fill_splits="yes")  # type: ignore[arg-type]
