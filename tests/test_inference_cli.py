"""``wrel predict`` and ``Predictor.from_checkpoint`` with a tiny real checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS

from wrel.cli import main

CRS_UTM = CRS.from_epsg(32631)
TRANSFORM = Affine(2.0, 0.0, 400000.0, 0.0, -2.0, 5000000.0)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from wrel.engine.checkpoint import save_model
    from wrel.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny())
    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny", model, {"image_size": [32, 32]})


def make_geotiff(path: Path, height: int = 72, width: int = 90) -> Path:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, size=(4, height, width), dtype=np.uint16)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=4,
        dtype="uint16",
        crs=CRS_UTM,
        transform=TRANSFORM,
    ) as dst:
        dst.write(data)
    return path


def test_from_checkpoint_reads_image_size(tiny_checkpoint: Path) -> None:
    from wrel.inference import Predictor

    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    assert predictor.image_size == (32, 32)
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    probs = predictor.predict(image, "the red car", return_probs=True)
    assert probs.shape == (40, 56) and np.isfinite(probs).all()
    masks = predictor.predict_batch([image, image[:20]], ["the red car", "a ship"])
    assert [m.shape for m in masks] == [(40, 56), (20, 56)]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Predictor.from_checkpoint(tiny_checkpoint.parent / "nope")


def test_predict_geotiff_tiled_writes_georeferenced_outputs(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tif = make_geotiff(tmp_path / "scene.tif")
    out = tmp_path / "out" / "mask.tif"
    code = main(
        [
            "predict",
            str(tiny_checkpoint),
            str(tif),
            "the building at the top",
            "--out",
            str(out),
            "--overlay",
            str(tmp_path / "ov.png"),
            "--mode",
            "tile",
            "--tile-size",
            "32",
            "--overlap",
            "8",
            "--bands",
            "3,2,1",
            "--threshold",
            "0.3",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["size"] == [72, 90] and Path(summary["geojson"]) == out.with_suffix(".geojson")
    with rasterio.open(out) as ds:
        assert ds.crs == CRS_UTM and ds.transform == TRANSFORM and ds.shape == (72, 90)
        written = ds.read(1)
    assert set(np.unique(written)) <= {0, 255}
    collection = json.loads(out.with_suffix(".geojson").read_text())
    assert collection["crs"]["properties"]["name"].endswith("32631")
    area = sum(f["properties"]["area"] for f in collection["features"])
    assert area == pytest.approx((written > 0).sum() * 4.0)  # 2 m pixels
    assert Image.open(tmp_path / "ov.png").size == (90, 72)


def test_predict_png_gives_png_and_clear_errors(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "photo.png"
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(png)
    out = tmp_path / "m.png"
    assert main(["predict", str(tiny_checkpoint), str(png), "a ship", "--out", str(out)]) == 0
    assert Image.open(out).size == (40, 30) and not (tmp_path / "m.geojson").exists()
    capsys.readouterr()
    assert main(["predict", str(tiny_checkpoint), str(png), "  ", "--out", str(out)]) == 2
    assert "expression is empty" in capsys.readouterr().err
    assert main(["predict", str(tiny_checkpoint), str(png), "a ship", "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    argv = ["predict", str(tiny_checkpoint), str(png), "a ship", "--out", str(out), "--overwrite"]
    assert main(argv) == 0
    tif = make_geotiff(tmp_path / "s.tif", 20, 20)
    assert main(["predict", str(tiny_checkpoint), str(tif), "x", "--bands", "5"]) == 2
    assert "band index [5] does not exist" in capsys.readouterr().err
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    assert main(["predict", str(tiny_checkpoint), str(tmp_path / "doc.pdf"), "x"]) == 2
    assert "unsupported image format '.pdf'" in capsys.readouterr().err


def test_predict_writes_beside_the_input_by_default(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Without --out the mask (and, for a georeferenced input, the GeoJSON) goes next to the
    input, not into the working folder; --out still decides when given."""
    data = tmp_path / "data"
    data.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tif = make_geotiff(data / "scene.tif", 20, 24)
    png = data / "photo.png"
    Image.fromarray(np.full((18, 22, 3), 90, np.uint8)).save(png)
    for image in (tif, png):
        assert main(["predict", str(tiny_checkpoint), str(image), "a ship"]) == 0
    summaries = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [Path(s["mask"]) for s in summaries] == [
        data / "scene_mask.tif",
        data / "photo_mask.png",
    ]
    assert Path(summaries[0]["geojson"]) == data / "scene_mask.geojson"
    assert (data / "scene_mask.geojson").is_file() and (data / "photo_mask.png").is_file()
    with rasterio.open(data / "scene_mask.tif") as ds:
        assert ds.shape == (20, 24) and ds.crs == CRS_UTM
    assert list(elsewhere.iterdir()) == []  # nothing written into the working folder
    # a relative --out is relative to the working folder, as any path argument
    assert main(["predict", str(tiny_checkpoint), str(png), "a ship", "--out", "m.png"]) == 0
    assert (elsewhere / "m.png").is_file()
