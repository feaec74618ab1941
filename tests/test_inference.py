"""Predictor with a stand-in model: sizes, dtypes, bands, batching, tiling, text checks."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from wrel.data.preprocessing import DEFAULT_IMAGE_SIZE
from wrel.inference import Predictor, PredictorConfig, image_size_from_metadata


class BrightnessModel(torch.nn.Module):
    """Stand-in RefSegModel: foreground where the image is bright; counts forward calls."""

    max_length = 6

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(8.0))
        self.batch_sizes: list[int] = []

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), self.max_length, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, text in enumerate(texts):
            attn[i, : min(len(text.split()) + 2, self.max_length)] = 1
        return ids, attn

    def forward(self, images, input_ids=None, attention_mask=None, inputs_embeds=None):
        self.batch_sizes.append(images.shape[0])
        logit = self.gain * images.mean(dim=1)  # (B, H, W), > 0 on bright pixels
        return SimpleNamespace(logits=torch.stack([-logit, logit], dim=1))


def scene(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Dark uint8 RGB image with a bright box (r0, c0, r1, c1)."""
    img = np.full((height, width, 3), 20, np.uint8)
    r0, c0, r1, c1 = box
    img[r0:r1, c0:c1] = 240
    return img


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture
def predictor() -> Predictor:
    return Predictor(BrightnessModel(), image_size=(32, 32))


def test_predict_returns_mask_at_original_size(predictor: Predictor, tmp_path: Path) -> None:
    img = scene(48, 80, (10, 20, 30, 60))
    mask = predictor.predict(img, "the bright building")
    assert mask.dtype == np.bool_ and mask.shape == (48, 80)
    truth = img[..., 0] > 128
    assert iou(mask, truth) > 0.85
    probs = predictor.predict(img, "the bright building", return_probs=True)
    assert probs.dtype == np.float32 and probs.min() >= 0 and probs.max() <= 1
    assert np.array_equal(probs >= 0.5, mask)
    Image.fromarray(img).save(tmp_path / "x.png")
    assert np.array_equal(predictor.predict(tmp_path / "x.png", "a roof"), mask)
    assert np.array_equal(predictor.predict(Image.fromarray(img), "a roof"), mask)


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_predict_accepts_16_bit_and_band_counts(predictor: Predictor, bands: int) -> None:
    img16 = scene(40, 40, (5, 5, 20, 25)).astype(np.uint16)[..., :1].repeat(bands, -1) * 250
    mask = predictor.predict(img16, "the roof")
    assert iou(mask, img16[..., 0] > 30000) > 0.8


def test_predict_batch_uses_one_forward(predictor: Predictor) -> None:
    images = [
        scene(32, 32, (0, 0, 10, 10)),
        scene(40, 24, (20, 4, 36, 20)),
        scene(16, 64, (0, 0, 8, 8)),
    ]
    model = predictor.model
    model.batch_sizes.clear()
    masks = predictor.predict_batch(images, ["a", "b c", "d"])
    assert model.batch_sizes == [3]
    for img, mask in zip(images, masks, strict=True):
        assert mask.shape == img.shape[:2]
        single = predictor.predict(img, "x")
        assert iou(mask, single) > 0.99
    with pytest.raises(ValueError, match="2 images but 1 expressions"):
        predictor.predict_batch(images[:2], ["a"])


def test_tiled_mode_matches_object_and_batches_tiles() -> None:
    model = BrightnessModel()
    cfg = PredictorConfig(mode="auto", tile_size=48, overlap=12, max_whole_side=100, batch_size=4)
    predictor = Predictor(model, image_size=(32, 32), config=cfg)
    img = scene(150, 210, (100, 170, 112, 182))  # a small object near the bottom right
    mask = predictor.predict(img, "the small bright object")
    assert mask.shape == (150, 210)
    assert iou(mask, img[..., 0] > 128) > 0.7
    assert max(model.batch_sizes) == 4 and len(model.batch_sizes) > 4  # tiled, batched
    model.batch_sizes.clear()
    whole = predictor.predict_raster(predictor_raster(img), "the small bright object", mode="whole")
    assert model.batch_sizes == [1] and whole.shape == (150, 210)


def predictor_raster(img: np.ndarray):
    from wrel.inference import open_image

    return open_image(img)


def test_text_errors_and_truncation_warning(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    img = scene(16, 16, (0, 0, 8, 8))
    for bad in ["", "   "]:
        with pytest.raises(ValueError, match="expression is empty"):
            predictor.predict(img, bad)
    with caplog.at_level(logging.WARNING):
        predictor.predict(img, "one two three four five six seven")
    assert "truncated" in caplog.text


def test_config_validation_and_metadata_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Predictor(BrightnessModel(), config=PredictorConfig(tile_size=32, overlap=40))
    with pytest.raises(ValueError, match="mode"):
        Predictor(BrightnessModel()).predict(scene(8, 8, (0, 0, 2, 2)), "x", mode="big")  # type: ignore[arg-type]
    assert image_size_from_metadata({"image_size": [96, 64]}) == (96, 64)
    assert image_size_from_metadata({"experiment": {"data": {"image_size": 48}}}) == (48, 48)
    assert image_size_from_metadata({}) == (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE) == (64, 64)


def test_tiled_geotiff_reads_only_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rasterio

    from wrel.data.rasters import GeoRaster

    img = scene(130, 170, (60, 70, 80, 100))
    profile = {"driver": "GTiff", "height": 130, "width": 170, "count": 3, "dtype": "uint8"}
    with (
        pytest.warns(rasterio.errors.NotGeoreferencedWarning),
        rasterio.open(tmp_path / "s.tif", "w", **profile) as dst,
    ):
        dst.write(np.moveaxis(img, -1, 0))
    reads: list[object] = []
    original = GeoRaster.read_rgb

    def spy(self, tile=None):
        reads.append(tile)
        return original(self, tile)

    monkeypatch.setattr(GeoRaster, "read_rgb", spy)
    cfg = PredictorConfig(mode="tile", tile_size=40, overlap=8)
    mask = Predictor(BrightnessModel(), image_size=(32, 32), config=cfg).predict(
        tmp_path / "s.tif", "the bright field"
    )
    assert reads and all(t is not None and t.height <= 40 and t.width <= 40 for t in reads)
    assert iou(mask, img[..., 0] > 128) > 0.8
