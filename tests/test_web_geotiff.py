"""The web demo reads what `wrel predict` reads: a 16-bit single-band GeoTIFF, through the same
reader and the checkpoint's image scaling; honest signals (max probability, threshold)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

rasterio = pytest.importorskip("rasterio")

from rasterio.transform import Affine  # noqa: E402

from wrel.data.image_reading import ImageScaling  # noqa: E402
from wrel.engine.checkpoint import save_model  # noqa: E402
from wrel.inference import Predictor  # noqa: E402
from wrel.web.server import DemoApp, ServerLimits, create_app  # noqa: E402

SCALING = ImageScaling(method="fixed_range", value_range=(0.0, 4095.0))


def write_geotiff(path: Path, array: np.ndarray, **profile) -> Path:
    """``array`` (H, W) or (C, H, W) as a georeferenced GeoTIFF (UTM 33N, 10 m pixels)."""
    bands = array[None] if array.ndim == 2 else array
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=str(bands.dtype),
        crs="EPSG:32633",
        transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_600_000.0),
        **profile,
    ) as ds:
        ds.write(bands)
    return path


def pan_scene(height: int = 40, width: int = 52) -> np.ndarray:
    """A 12-bit pan scene in uint16: dark ground, one bright building."""
    rng = np.random.default_rng(3)
    img = rng.integers(200, 900, (height, width)).astype(np.uint16)
    img[8:20, 10:30] = 3900
    return img


def png_array(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wrel.models import ModelConfig, build_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    metadata = {"image_size": [32, 32], "image_scaling": SCALING.to_dict()}
    return save_model(folder, build_model(ModelConfig.tiny()), metadata)


@pytest.fixture
def recorded(checkpoint: Path):
    """A predictor from the checkpoint whose model records every input tensor."""
    predictor = Predictor.from_checkpoint(checkpoint)
    seen: list[torch.Tensor] = []
    predictor.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    return predictor, seen


def test_sixteen_bit_geotiff_upload_is_read_like_predict(recorded, tmp_path: Path) -> None:
    predictor, seen = recorded
    assert predictor.scaling == SCALING  # the trainer's metadata key, read by the Predictor
    path = write_geotiff(tmp_path / "pan.tif", pan_scene(), tiled=True, blockxsize=16,
                         blockysize=16, compress="deflate")  # fmt: skip
    demo = DemoApp(predictor, [], ServerLimits(max_side=256))
    with TestClient(create_app(demo)) as client:
        response = client.post(
            "/api/predict",
            files={"image": ("pan.tif", path.read_bytes(), "image/tiff")},
            data={"text": "the bright building"},
        )
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["width"], data["height"]) == (52, 40)
    web_input = seen[-1]

    # the same file through Predictor.predict: the model gets the identical tensor
    seen.clear()
    probs = predictor.predict(path, "the bright building", return_probs=True)
    assert len(seen) == 1 and torch.equal(web_input, seen[0])

    mask = png_array(data["mask"])
    assert mask.shape == (40, 52) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, predictor.predict(path, "the bright building"))
    assert data["threshold"] == 0.5
    assert data["max_probability"] == pytest.approx(float(probs.max()), abs=1e-4)
    web_probs = png_array(data["probabilities"])  # round(255 p), full size
    assert web_probs.shape == (40, 52)
    assert np.array_equal(web_probs, np.round(probs * 255).astype(np.uint8))
    # the preview is the 8-bit rendering the model saw: the fixed 0-4095 range, grey
    rendering = png_array(data["image"])
    expected = np.clip(pan_scene() * (255 / 4095) + 0.5, 0, 255).astype(np.uint8)
    assert rendering.shape == (40, 52, 3) and rendering.dtype == np.uint8
    assert np.array_equal(rendering[..., 0], expected)
    assert np.array_equal(rendering[..., 0], rendering[..., 2])
    assert png_array(data["overlay"]).shape == (40, 52, 3)


def test_threshold_parameter_and_empty_masks(recorded, tmp_path: Path) -> None:
    predictor, _ = recorded
    body = write_geotiff(tmp_path / "pan.tif", pan_scene()).read_bytes()
    demo = DemoApp(predictor, [], ServerLimits(max_side=256))
    with TestClient(create_app(demo)) as client:
        plain = client.post("/api/predict?text=roof", content=body).json()
        probs = png_array(plain["probabilities"])
        top = int(probs.max())
        above = client.post(f"/api/predict?text=roof&threshold={(top + 1) / 255:.4f}", content=body)
        assert above.status_code == 200, above.text
        empty = above.json()
        assert not png_array(empty["mask"]).any() and empty["foreground_fraction"] == 0.0
        assert (
            empty["max_probability"]
            == plain["max_probability"]
            == pytest.approx(top / 255, abs=1e-4)
        )
        low = client.post("/api/predict?text=roof&threshold=0.01", content=body).json()
        assert np.array_equal(png_array(low["mask"]) > 0, probs >= 3)  # round(2.55) = 3
        for bad in ("0", "1", "nan", "x", "-0.2"):
            refused = client.post(f"/api/predict?text=roof&threshold={bad}", content=body)
            assert refused.status_code == 400 and "threshold" in refused.json()["error"]
        assert client.get("/api/info").json()["threshold"] == 0.5


def test_tiff_header_checks_and_unsupported_tiffs(recorded, tmp_path: Path, monkeypatch) -> None:
    predictor, _ = recorded
    demo = DemoApp(predictor, [], ServerLimits(max_side=64, max_decode_bytes=2**20))

    def never(*args, **kwargs):
        raise AssertionError("the image was decoded")

    big = write_geotiff(tmp_path / "big.tif", np.zeros((100, 70), np.uint16)).read_bytes()
    # pixel-interleaved, one compressed strip: GDAL decodes all 300 bands of it at once
    bands = np.zeros((300, 60, 60), np.uint16)
    deep = write_geotiff(
        tmp_path / "deep.tif", bands, interleave="pixel", blockysize=60, compress="deflate"
    )
    with monkeypatch.context() as patch, TestClient(create_app(demo)) as client:
        patch.setattr(DemoApp, "segment", never)
        answer = client.post("/api/predict?text=x", content=big)
        assert answer.status_code == 413
        assert "70 x 100 pixels; the demo accepts up to 64 per side" in answer.json()["error"]
        answer = client.post("/api/predict?text=x", content=deep.read_bytes())
        assert answer.status_code == 413, answer.text
        assert "60 x 60 300-band uint16 image needs about" in answer.json()["error"]

    truncated = write_geotiff(tmp_path / "t.tif", pan_scene(), compress="deflate").read_bytes()
    three = ImageScaling(method="fixed_range", value_range=(0.0, 4095.0), bands=(4, 3, 2))
    with TestClient(create_app(demo)) as client:
        answer = client.post("/api/predict?text=x", content=truncated[:200])
        assert answer.status_code == 415 and "TIFF" in answer.json()["error"], answer.text
        assert "vsimem" not in answer.json()["error"]
        predictor.scaling = three  # a 4-band checkpoint meets a 1-band upload
        answer = client.post("/api/predict?text=x", content=truncated)
        assert answer.status_code == 415 and "band" in answer.json()["error"], answer.text
        assert "vsimem" not in answer.json()["error"]
