"""GeoTIFF reading (bands, 16-bit stretch, windows), GeoTIFF/GeoJSON writing, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from wrel.data.rasters import GeoRaster, compute_stretch, select_bands, to_rgb8
from wrel.inference.geo import mask_to_geojson, write_geojson, write_mask_geotiff
from wrel.inference.inputs import decode_picture, open_image
from wrel.inference.tiling import Tile

CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4600000.0)  # 0.5 m pixels


def write_tif(path: Path, data: np.ndarray, georef: bool = True) -> Path:
    """Write ``data`` ``(C, H, W)`` as a GeoTIFF."""
    count, height, width = data.shape
    extra = {"crs": CRS_UTM, "transform": TRANSFORM} if georef else {}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=count,
        dtype=data.dtype.name,
        **extra,
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture
def tif16(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, size=(4, 40, 48), dtype=np.uint16)
    data[2, 10:20, 10:20] = 60000  # a bright outlier patch in band 3
    return write_tif(tmp_path / "scene.tif", data)


def test_select_bands_defaults_and_errors() -> None:
    assert select_bands(4, None) == (1, 2, 3)
    assert select_bands(1, None) == (1, 1, 1)
    assert select_bands(5, [4]) == (4, 4, 4)
    with pytest.raises(ValueError, match="band index \\[7\\] does not exist.*4 band"):
        select_bands(4, [7, 1, 2])
    with pytest.raises(ValueError, match="one band .* or three"):
        select_bands(4, [1, 2])


def test_to_rgb8_handles_dtypes_and_band_counts() -> None:
    gray16 = np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 50
    rgb = to_rgb8(gray16)
    assert rgb.shape == (30, 20, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1] = 200
    assert np.array_equal(to_rgb8(rgba), rgba[..., :3])  # 8-bit data is used as is
    with pytest.raises(ValueError, match="empty"):
        to_rgb8(np.zeros((0, 5, 3), np.uint8))


def test_constant_bands_stretch_without_dividing_by_zero() -> None:
    # lo + 1e-6 rounds back to lo in float32 above 16: the stretch must still widen
    for value in (7.0, 10000.0, 3.0e6):
        flat = np.full((6, 6, 3), value, np.float32)
        lo, hi = compute_stretch(flat, "percentile")
        assert np.all(hi > lo)
        with np.errstate(all="raise"):  # no divide-by-zero or invalid value anywhere
            rgb = to_rgb8(flat)
        assert rgb.dtype == np.uint8 and np.all(rgb == 0)


def test_percentile_stretch_ignores_outliers() -> None:
    sample = np.full((10, 10, 3), 100, np.uint16)
    sample[:5] = 200
    sample[0, 0] = 65000
    lo, hi = compute_stretch(sample, "percentile", (2, 98))
    assert np.all(lo == 100) and np.all(hi == 200)
    assert np.all(compute_stretch(sample, "none")[1] == 65535)


def test_georaster_reads_windows_with_one_stretch(tif16: Path) -> None:
    raster = GeoRaster(tif16, bands=[3, 2, 1])
    assert (raster.height, raster.width) == (40, 48) and raster.is_georeferenced
    full = raster.read_rgb()
    tile = raster.read_rgb(Tile(row=8, col=12, height=16, width=20))
    assert full.dtype == np.uint8 and full.shape == (40, 48, 3)
    assert np.array_equal(tile, full[8:24, 12:32])  # windows share the global stretch
    assert full[15, 15, 0] == 255  # band 3 (now red) saturates on the bright patch
    assert raster.read_rgb_resized(10, 12).shape == (10, 12, 3)
    raster.close()


def test_open_image_errors(tmp_path: Path, tif16: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        open_image(tmp_path / "missing.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported image format '.txt'"):
        open_image(tmp_path / "notes.txt")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        open_image(tmp_path / "empty.png")
    (tmp_path / "broken.tif").write_bytes(tif16.read_bytes()[:200])
    with pytest.raises(ValueError, match="broken.tif"):
        open_image(tmp_path / "broken.tif").read_rgb()
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="not a supported image"):
        open_image(tmp_path / "fake.png")
    with pytest.raises(ValueError, match="band index"):
        open_image(tif16, bands=[9])
    with pytest.raises(ValueError, match="zero|empty"):
        open_image(np.zeros((4, 0), np.uint8))


def test_decode_picture_limits_pixels_and_keeps_16_bit(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "g16.png"
    Image.fromarray(np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 20).save(path)
    rgb = decode_picture(path)
    assert rgb.shape == (64, 32, 3) and rgb.max() == 255 and rgb.min() == 0
    with pytest.raises(ValueError, match="over the limit"):
        decode_picture(path.read_bytes(), max_pixels=100)


def test_mask_geotiff_and_geojson_keep_crs(tmp_path: Path) -> None:
    mask = np.zeros((40, 48), bool)
    mask[4:14, 6:16] = True  # 10 x 10 pixels = 25 m2 at 0.5 m
    mask[30:34, 40:44] = True
    out = write_mask_geotiff(tmp_path / "mask.tif", mask, CRS_UTM, TRANSFORM)
    with rasterio.open(out) as ds:
        assert ds.crs == CRS_UTM and ds.transform == TRANSFORM
        assert np.array_equal(ds.read(1).astype(bool), mask)
    collection = mask_to_geojson(mask, TRANSFORM, CRS_UTM)
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    areas = sorted(f["properties"]["area"] for f in collection["features"])
    assert areas == pytest.approx([4.0, 25.0])
    xs = [x for f in collection["features"] for x, _ in f["geometry"]["coordinates"][0]]
    assert min(xs) == pytest.approx(500000.0 + 6 * 0.5)
    path = write_geojson(tmp_path / "m.geojson", mask, TRANSFORM, CRS_UTM, {"text": "a car"})
    loaded = json.loads(path.read_text())
    assert loaded["features"][0]["properties"]["text"] == "a car"


def test_geojson_without_georeference_uses_pixels() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 3:6] = True
    collection = mask_to_geojson(mask)
    assert "crs" not in collection
    assert collection["features"][0]["properties"]["area"] == pytest.approx(6.0)


def test_nodata_is_left_out_of_the_stretch_and_read_as_black(tmp_path: Path) -> None:
    data = np.full((3, 20, 30), 2000, np.uint16)
    data[:, :, 15:] = 4000
    data[:, :, :6] = 0  # nodata, a fifth of the scene: it would drag the 2% percentile to 0
    path = tmp_path / "nd.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=20, width=30, count=3, dtype="uint16",
        crs=CRS_UTM, transform=TRANSFORM, nodata=0,
    ) as dst:  # fmt: skip
        dst.write(data)
    raster = GeoRaster(path)
    assert raster.has_nodata and raster.nodata == (0, 0, 0)
    lo, hi = raster.stretch
    assert np.all(lo == 2000) and np.all(hi == 4000)
    valid = raster.valid_mask()
    assert valid is not None and not valid[:, :6].any() and valid[:, 6:].all()
    rgb = raster.read_rgb()
    assert not rgb[:, :6].any() and np.all(rgb[:, 6:15] == 0) and np.all(rgb[:, 15:] == 255)
    window = raster.valid_mask(Tile(row=2, col=4, height=5, width=6))
    assert window is not None and window.shape == (5, 6) and window[:, 2:].all()
    assert not window[:, :2].any()
    assert not raster.read_rgb_resized(10, 15)[:, :3].any()
    raster.close()
    plain = GeoRaster(write_tif(tmp_path / "plain.tif", data))  # no nodata declared
    assert not plain.has_nodata and plain.valid_mask() is None
    plain.close()


def test_compute_stretch_with_valid_mask() -> None:
    sample = np.full((10, 10, 3), 500, np.uint16)
    sample[:, 5:] = 900
    sample[:4] = 65535  # invalid rows
    valid = np.ones((10, 10), bool)
    valid[:4] = False
    lo, hi = compute_stretch(sample, "percentile", (2, 98), valid=valid)
    assert np.all(lo == 500) and np.all(hi == 900)
    lo, hi = compute_stretch(sample, "percentile", (2, 98), valid=np.zeros((10, 10), bool))
    assert np.all(hi > lo)  # all nodata: a harmless default, no crash


def test_declared_size_is_capped_before_reading(tmp_path: Path, tif16: Path) -> None:
    from wrel.data.rasters import check_pixel_count

    with pytest.raises(ValueError, match=r"48 x 40 = 1,920 pixels, over the limit of 1,000"):
        GeoRaster(tif16, max_pixels=1000)
    with pytest.raises(ValueError, match="over the limit"):
        open_image(tif16, max_pixels=1000)
    assert GeoRaster(tif16, max_pixels=None).height == 40
    check_pixel_count(10**6, 10**6, None)  # None: no limit
    with pytest.raises(ValueError, match="positive"):
        check_pixel_count(1, 1, 0)


def test_writers_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wrel.inference.geo

    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    tif = write_mask_geotiff(tmp_path / "m.tif", mask)
    gj = write_geojson(tmp_path / "m.geojson", mask)
    before = {p: p.read_bytes() for p in (tif, gj)}

    def broken_dumps(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wrel.inference.geo.json, "dumps", broken_dumps)
    with pytest.raises(OSError, match="No space"):
        write_geojson(gj, ~mask)
    monkeypatch.undo()
    monkeypatch.setattr(wrel.inference.geo, "_write_mask_geotiff", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_mask_geotiff(tif, ~mask)
    assert {p: p.read_bytes() for p in (tif, gj)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.geojson", "m.tif"]


def test_check_output_paths(tmp_path: Path) -> None:
    from wrel.core.outfiles import check_output_paths

    src = tmp_path / "in.tif"
    src.write_bytes(b"x")
    ok = check_output_paths({"--out": tmp_path / "new" / "deeper" / "m.tif"}, inputs=[src])
    assert ok["--out"] == tmp_path / "new" / "deeper" / "m.tif"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(ValueError, match="is the input image"):
        check_output_paths({"--out": tmp_path / "sub" / ".." / "in.tif"}, inputs=[src])
    with pytest.raises(ValueError, match="is a folder"):
        check_output_paths({"--geojson": tmp_path})
    with pytest.raises(ValueError, match=r"unsupported suffix '.txt'; use one of .geojson"):
        check_output_paths({"--geojson": tmp_path / "a.txt"}, suffixes={"--geojson": [".geojson"]})
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        check_output_paths({"--out": src})
    assert check_output_paths({"--out": src}, overwrite=True)["--out"] == src
    with pytest.raises(ValueError, match="same file as --out"):
        check_output_paths({"--out": tmp_path / "a.png", "--probs": f"{tmp_path}/./a.png"})
