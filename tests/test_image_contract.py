"""One image-reading contract for training and `wrel predict` (wrel.data.image_reading)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "data"))
from refer_testdata import SIZE, make_refer  # noqa: E402

from wrel.data.image_reading import ImageScaling, read_image, scale_to_rgb8  # noqa: E402
from wrel.data.images import read_rgb  # noqa: E402


def _pan_chip(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A 16-bit single-band chip like a real pan image: values 55-6615, median about 450."""
    values = rng.lognormal(mean=np.log(450.0), sigma=0.6, size=(size, size))
    return np.clip(values, 55, 6615).astype(np.uint16)


def _write_u16(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)  # mode I;16 PNG


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_eight_bit_images_are_read_as_before(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / "x.png"
    img.save(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(read_image(path), expected)
    assert np.array_equal(read_image(path), read_rgb(path))  # the reader before the contract


def test_sixteen_bit_pan_chip_is_not_black(tmp_path: Path) -> None:
    chip = _pan_chip(np.random.default_rng(1))
    path = tmp_path / "pan.png"
    _write_u16(path, chip)
    legacy = read_rgb(path)  # divided by 257: the model saw a near-black image
    assert np.median(legacy) <= 3
    image = read_image(path)  # auto: per-image 2-98 % percentiles
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 2])  # one band replicated to three
    lo, hi = np.percentile(chip.astype(np.float32), [2, 98])
    scaled = (chip.astype(np.float32) - np.float32(lo)) * (255.0 / np.float32(hi - lo)) + 0.5
    assert np.abs(image[..., 0].astype(int) - np.clip(scaled, 0, 255).astype(int)).max() <= 1
    assert np.median(image) >= 40  # legacy: <= 3
    fixed = read_image(path, ImageScaling(method="fixed_range", value_range=(0.0, 1000.0)))
    expected = np.clip(chip.astype(np.float32) * 255 / 1000 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(fixed[..., 1], expected)
    stats = ImageScaling(method="dataset_stats", band_low=(55.0,), band_high=(6615.0,))
    assert np.array_equal(read_image(path, stats), scale_to_rgb8(chip, stats))


def test_scaling_spec_is_validated_and_round_trips() -> None:
    spec = ImageScaling(method="per_image_percentile", bands=(1,), percentiles=(1.0, 99.0))
    assert ImageScaling.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="value_range"):
        ImageScaling(method="fixed_range")
    with pytest.raises(ValueError, match="wrel data stats"):
        ImageScaling(method="dataset_stats")
    with pytest.raises(ValueError, match="bands"):
        ImageScaling(bands=(1, 2))
    with pytest.raises(ValueError, match="unknown key"):
        ImageScaling.from_dict({"method": "auto", "stretch": 3})


def _sixteen_bit_refer(root: Path) -> None:
    make_refer(root)
    rng = np.random.default_rng(2)
    for path in sorted((root / "images" / "tiny" / "JPEGImages").glob("*.png")):
        _write_u16(path, _pan_chip(rng))


@pytest.mark.parametrize(
    "scaling_sets",
    [
        [],  # auto: per-image percentiles for 16-bit data
        pytest.param(
            ["data.image_scaling.method=fixed_range", "data.image_scaling.value_range=[0,3000]"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_predict_feeds_the_model_what_training_did(
    tmp_path: Path, tiny_model_sets: list[str], scaling_sets: list[str]
) -> None:
    """Train a tiny model on 16-bit single-band images; the predictor's model input for an
    image equals the trainer's loader tensor for it."""
    from wrel.data.dataset import load_samples
    from wrel.engine.experiment import build_experiment
    from wrel.engine.loaders import eval_loader
    from wrel.engine.trainer import train
    from wrel.inference import Predictor

    data = tmp_path / "data"
    _sixteen_bit_refer(data)
    cfg = build_experiment(
        "naive",
        assignments=[
            f"data.root={data}",
            f"train.output_dir={tmp_path / 'runs'}",
            f"data.image_size={SIZE}",
            "data.accurate_ratio=0.5",
            "train.batch_size=2",
            "train.eval_batch_size=2",
            "train.progress=false",
            *tiny_model_sets,
            *scaling_sets,
        ],
    )
    cfg.stages[0].epochs = 1
    result = train(cfg)
    best = Path(result["run_dir"]) / "checkpoints" / "best"
    meta = json.loads((best / "config.json").read_text())["metadata"]
    assert ImageScaling.from_dict(meta["image_scaling"]) == cfg.data.image_scaling

    samples = load_samples(data, "val")
    batch = next(iter(eval_loader(cfg, samples)))
    trained = batch["image"][0]  # (3, H, W): what the trainer's loaders feed the model

    predictor = Predictor.from_checkpoint(best)
    assert predictor.scaling == cfg.data.image_scaling
    seen: list[torch.Tensor] = []
    handle = predictor.model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    predictor.predict(samples[0].image_path, samples[0].text)
    handle.remove()
    assert len(seen) == 1
    fed = seen[0][0].cpu()
    assert fed.shape == trained.shape
    torch.testing.assert_close(fed, trained, atol=1e-5, rtol=0)
    # ...and not what the old reader (/257) or an 8-bit reading would give
    assert float(trained.std()) > 0.3


def test_predict_warns_on_empty_masks_and_legacy_checkpoints(
    tmp_path: Path, tiny_model_sets: list[str], capsys, caplog
) -> None:
    from wrel.cli import main
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train
    from wrel.inference import Predictor

    data = tmp_path / "data"
    _sixteen_bit_refer(data)
    cfg = build_experiment(
        "naive",
        assignments=[f"data.root={data}", f"train.output_dir={tmp_path / 'runs'}",
                     "data.image_size=16", "train.batch_size=2", "train.progress=false",
                     *tiny_model_sets],
    )  # fmt: skip
    cfg.stages[0].epochs = 1
    best = Path(train(cfg)["run_dir"]) / "checkpoints" / "best"
    image = data / "images" / "tiny" / "JPEGImages" / "000.png"
    out = tmp_path / "mask.png"
    args = ["predict", str(best), str(image), "the ship", "--out", str(out), "--threshold", "0.999"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "warning: the mask is empty" in captured.err
    assert "highest foreground probability" in captured.err
    assert json.loads(captured.out)["max_probability"] < 0.999
    # a checkpoint written before the contract: the auto stretch, with a warning for 16-bit data
    config = best / "config.json"
    document = json.loads(config.read_text())
    del document["metadata"]["image_scaling"]
    del document["metadata"]["experiment"]["data"]["image_scaling"]
    del document["config_sha256"]  # older checkpoints carry no seal
    config.write_text(json.dumps(document))
    predictor = Predictor.from_checkpoint(best)
    assert predictor.scaling is None
    with caplog.at_level("WARNING"):
        predictor.predict(image, "the ship")
    assert "records no image_scaling" in caplog.text
