"""Hostile inputs and faults for ``wrel predict``: a catalogue of cases with a tiny checkpoint.

Every case runs the real command in-process and asserts its exit code and a fragment of its
message, plus what must (not) be on disk afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
SENTINEL = b"previous output, must survive"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from wrel.engine.checkpoint import save_model
    from wrel.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny())
    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny", model, {"image_size": [32, 32]})


def make_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def make_geotiff(path: Path, nodata: float | None = None, left_nodata: int = 0) -> Path:
    """A 3-band uint16 GeoTIFF (48 x 64); the ``left_nodata`` first columns hold ``nodata``."""
    data = np.random.default_rng(1).integers(1000, 3000, size=(3, 48, 64), dtype=np.uint16)
    if nodata is not None:
        data[:, :, :left_nodata] = nodata
    profile = {
        "driver": "GTiff",
        "height": 48,
        "width": 64,
        "count": 3,
        "dtype": "uint16",
        "crs": CRS_UTM,
        "transform": TRANSFORM,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def make_huge_sparse_geotiff(path: Path, side: int = 200_000) -> Path:
    """A ~1 MB sparse tiled GeoTIFF declaring ``side x side`` pixels (one tiny block written)."""
    profile = {
        "driver": "GTiff",
        "height": side,
        "width": side,
        "count": 3,
        "dtype": "uint16",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "sparse_ok": True,
        "crs": CRS_UTM,
        "transform": TRANSFORM,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((3, 64, 64), np.uint16), window=((0, 64), (0, 64)))
    return path


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@dataclass
class Expect:
    """One case: the arguments after ``wrel predict CKPT`` and what must happen."""

    argv: list[str]
    code: int
    fragment: str  # in stderr (errors) or stdout (success)
    check: Callable[[], None] = field(default=lambda: None)
    max_seconds: float | None = None
    model_must_not_load: bool = False


def _unchanged(path: Path, content: bytes) -> Callable[[], None]:
    def check() -> None:
        assert path.read_bytes() == content

    return check


# -- cases: each gets (tmp_path, monkeypatch) and returns an Expect ------------------------------


def out_is_input(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    before = png.read_bytes()
    return Expect(
        [str(png), "a ship", "--out", str(png)], 2, "is the input image", _unchanged(png, before)
    )


def out_is_input_via_symlink(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    (tmp / "link.png").symlink_to(png)
    before = png.read_bytes()
    argv = [str(tmp / "link.png"), "a ship", "--out", str(png), "--overwrite"]
    return Expect(argv, 2, "is the input image", _unchanged(png, before))


def out_is_input_via_relative_path(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    (tmp / "sub").mkdir()
    mp.chdir(tmp / "sub")
    before = png.read_bytes()
    argv = [str(png), "a ship", "--out", "../sub/../scene.png", "--overwrite"]
    return Expect(argv, 2, "is the input image", _unchanged(png, before))


def out_is_input_via_hard_link(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    os.link(png, tmp / "same.png")
    before = png.read_bytes()
    argv = [str(png), "a ship", "--out", str(tmp / "same.png"), "--overwrite"]
    return Expect(argv, 2, "is the input image", _unchanged(png, before))


def geojson_is_input(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    tif = make_geotiff(tmp / "scene.tif")
    before = tif.read_bytes()
    argv = [str(tif), "a ship", "--out", str(tmp / "m.tif"), "--geojson", str(tif), "--overwrite"]
    return Expect(argv, 2, f"--geojson {tif} is the input image", _unchanged(tif, before))


def overlay_is_input(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    before = png.read_bytes()
    argv = [str(png), "a ship", "--out", str(tmp / "m.png"), "--overlay", f"{tmp}/./scene.png"]
    return Expect(argv, 2, f"--overlay {png} is the input image", _unchanged(png, before))


def existing_output_without_overwrite(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    (tmp / "m.png").write_bytes(SENTINEL)
    argv = [str(png), "a ship", "--out", str(tmp / "m.png")]
    return Expect(argv, 2, "already exists; pass --overwrite", _unchanged(tmp / "m.png", SENTINEL))


def existing_default_output_without_overwrite(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    tif = make_geotiff(tmp / "scene.tif")
    mp.chdir(tmp)
    (tmp / "scene_mask.geojson").write_bytes(SENTINEL)  # the default --geojson
    argv = [str(tif), "a ship"]

    def check() -> None:
        assert (tmp / "scene_mask.geojson").read_bytes() == SENTINEL
        assert not (tmp / "scene_mask.tif").exists()

    return Expect(argv, 2, "scene_mask.geojson already exists", check, model_must_not_load=True)


def existing_output_with_overwrite(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    (tmp / "m.png").write_bytes(SENTINEL)
    argv = [str(png), "a ship", "--out", str(tmp / "m.png"), "--overwrite"]

    def check() -> None:
        assert Image.open(tmp / "m.png").size == (40, 30)
        assert not [p for p in tmp.iterdir() if ".partial" in p.name]

    return Expect(argv, 0, '"mask":', check)


def geojson_is_a_folder(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    (tmp / "in").mkdir()
    tif = make_geotiff(tmp / "in" / "scene.tif")
    (tmp / "out" / "polys").mkdir(parents=True)
    argv = [
        str(tif),
        "a ship",
        "--out",
        str(tmp / "out" / "m.tif"),
        "--geojson",
        str(tmp / "out" / "polys"),
    ]

    def check() -> None:
        assert listing(tmp / "out") == {"polys"}  # nothing written at all

    return Expect(argv, 2, "is a folder", check, model_must_not_load=True)


def parent_is_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    (tmp / "notes.txt").write_text("x")
    argv = [str(png), "a ship", "--out", str(tmp / "notes.txt" / "m.png")]
    return Expect(argv, 2, "is a file, not a folder", model_must_not_load=True)


def unwritable_parent(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: simulate the kernel's answer
        real_access = os.access

        def access(path, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
            if Path(path) == locked and mode & os.W_OK:
                return False
            return real_access(path, mode, *args, **kwargs)

        mp.setattr(os, "access", access)
    argv = [str(png), "a ship", "--out", str(locked / "sub" / "m.png")]

    def check() -> None:
        locked.chmod(0o755)
        assert listing(locked) == set()

    return Expect(argv, 2, "cannot write to the folder", check, model_must_not_load=True)


def unsupported_suffix(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    argv = [str(png), "a ship", "--out", str(tmp / "m.jpg")]
    return Expect(argv, 2, "unsupported suffix '.jpg'", model_must_not_load=True)


def two_outputs_one_file(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    argv = [str(png), "a ship", "--out", str(tmp / "m.png"), "--probs", str(tmp / "m.png")]
    fragment = f"--probs {tmp / 'm.png'} is the same file as --out"
    return Expect(argv, 2, fragment, model_must_not_load=True)


def huge_declared_geotiff(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    tif = make_huge_sparse_geotiff(tmp / "huge.tif")
    assert tif.stat().st_size < 5_000_000
    argv = [str(tif), "a ship", "--out", str(tmp / "m.tif"), "--mode", "tile"]

    def check() -> None:
        assert listing(tmp) == {"huge.tif"}

    return Expect(
        argv,
        2,
        "over the limit of 1,000,000,000 pixels",
        check,
        max_seconds=5.0,
        model_must_not_load=True,
    )


def pixel_cap_option(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    tif = make_geotiff(tmp / "scene.tif")
    argv = [str(tif), "a ship", "--out", str(tmp / "m.tif"), "--max-pixels", "1e3"]
    return Expect(argv, 2, "--max-pixels", max_seconds=5.0, model_must_not_load=True)


def _nodata_case(mode: str) -> Callable[[Path, pytest.MonkeyPatch], Expect]:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
        tif = make_geotiff(tmp / "scene.tif", nodata=0, left_nodata=24)
        out = tmp / "m.tif"
        argv = [
            str(tif),
            "a ship",
            "--out",
            str(out),
            "--probs",
            str(tmp / "p.tif"),
            "--mode",
            mode,
            "--tile-size",
            "32",
            "--overlap",
            "8",
            "--threshold",
            "0.001",
        ]

        def check() -> None:
            with rasterio.open(out) as ds:
                mask = ds.read(1)
            with rasterio.open(tmp / "p.tif") as ds:
                probs = ds.read(1)
            assert not mask[:, :24].any() and not probs[:, :24].any()  # nodata: never foreground
            assert mask[:, 24:].any()  # the valid part is predicted
            from wrel.data.rasters import GeoRaster

            raster = GeoRaster(tif)
            assert raster.has_nodata and np.all(raster.stretch[0] >= 1000)  # nodata not stretched
            assert not raster.read_rgb()[:, :24].any()
            raster.close()

        return Expect(argv, 0, '"foreground_fraction"', check)

    return case


def write_fails_midway(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    (tmp / "m.png").write_bytes(SENTINEL)

    def failing_save(self, fp, format=None, **params):  # type: ignore[no-untyped-def]
        Path(fp).write_bytes(b"\x89PNG half an image")  # the encoder got this far, then:
        raise OSError(28, "No space left on device")

    mp.setattr(Image.Image, "save", failing_save)
    argv = [str(png), "a ship", "--out", str(tmp / "m.png"), "--overwrite"]

    def check() -> None:
        assert (tmp / "m.png").read_bytes() == SENTINEL
        assert listing(tmp) == {"scene.png", "m.png"}  # no temporary file remains

    return Expect(argv, 1, f"could not write {tmp / 'm.png'}: [Errno 28] No space left", check)


def second_output_fails(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    """The mask is written, the GeoJSON fails: neither final file is touched."""
    tif = make_geotiff(tmp / "scene.tif")
    (tmp / "m.tif").write_bytes(SENTINEL)
    (tmp / "m.geojson").write_bytes(SENTINEL)
    import wrel.inference.geo

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    mp.setattr(wrel.inference.geo, "mask_to_geojson", boom)
    argv = [str(tif), "a ship", "--out", str(tmp / "m.tif"), "--overwrite"]

    def check() -> None:
        assert (tmp / "m.tif").read_bytes() == SENTINEL
        assert (tmp / "m.geojson").read_bytes() == SENTINEL
        assert listing(tmp) == {"scene.tif", "m.tif", "m.geojson"}

    return Expect(argv, 1, f"could not write {tmp / 'm.geojson'}: [Errno 5]", check)


def interrupted_write(tmp: Path, mp: pytest.MonkeyPatch) -> Expect:
    png = make_png(tmp / "scene.png")
    (tmp / "m.png").write_bytes(SENTINEL)

    def interrupted(self, fp, format=None, **params):  # type: ignore[no-untyped-def]
        Path(fp).write_bytes(b"\x89PNG")
        raise KeyboardInterrupt

    mp.setattr(Image.Image, "save", interrupted)
    argv = [str(png), "a ship", "--out", str(tmp / "m.png"), "--overwrite"]

    def check() -> None:
        assert (tmp / "m.png").read_bytes() == SENTINEL
        assert listing(tmp) == {"scene.png", "m.png"}

    return Expect(argv, 130, "interrupted", check)


CASES = {
    "out-is-input": out_is_input,
    "out-is-input-symlink": out_is_input_via_symlink,
    "out-is-input-relative": out_is_input_via_relative_path,
    "out-is-input-hard-link": out_is_input_via_hard_link,
    "geojson-is-input": geojson_is_input,
    "overlay-is-input": overlay_is_input,
    "existing-output": existing_output_without_overwrite,
    "existing-default-output": existing_default_output_without_overwrite,
    "existing-output-overwrite": existing_output_with_overwrite,
    "geojson-is-folder": geojson_is_a_folder,
    "parent-is-file": parent_is_a_file,
    "unwritable-parent": unwritable_parent,
    "unsupported-suffix": unsupported_suffix,
    "two-outputs-one-file": two_outputs_one_file,
    "huge-declared-geotiff": huge_declared_geotiff,
    "pixel-cap-option": pixel_cap_option,
    "nodata-tile": _nodata_case("tile"),
    "nodata-whole": _nodata_case("whole"),
    "write-fails-midway": write_fails_midway,
    "second-output-fails": second_output_fails,
    "interrupted-write": interrupted_write,
}


@pytest.mark.parametrize("name", list(CASES))
def test_predict_catalogue(
    name: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wrel.inference import Predictor

    expect = CASES[name](tmp_path, monkeypatch)
    loads: list[object] = []
    if expect.model_must_not_load:
        monkeypatch.setattr(Predictor, "from_checkpoint", lambda *a, **k: loads.append(a))
    start = time.perf_counter()
    code = main(["predict", str(tiny_checkpoint), *expect.argv, "--device", "cpu"])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    message = captured.err if expect.code else captured.out
    assert code == expect.code, captured.err
    assert expect.fragment in message
    if expect.code:  # one clear line, no traceback
        assert "Traceback" not in captured.err
        assert any(
            line.startswith("wrel") and expect.fragment in line
            for line in captured.err.splitlines()
        )
    if expect.max_seconds is not None:
        assert elapsed < expect.max_seconds
    assert not loads, "the model was loaded although the input was refused"
    monkeypatch.undo()  # restore patched writers before the checks read files
    expect.check()


def test_hard_kill_during_write_leaves_previous_file(tmp_path: Path) -> None:
    """SIGKILL while the writer is half-way: the previous output is intact (only a .partial
    temporary file may remain)."""
    target = tmp_path / "m.geojson"
    target.write_bytes(SENTINEL)
    script = """
import sys, time
import numpy as np
import wrel.inference.geo as geo

def slow(path, *args, **kwargs):
    with open(path, "w") as f:
        f.write('{"type": "FeatureCollection", "feat')
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

geo._write_geojson = slow
geo.write_geojson(sys.argv[1], np.zeros((4, 4), bool))
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert target.read_bytes() == SENTINEL
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(n.startswith(".m.geojson.") and ".partial" in n for n in leftovers)


def test_predictor_api_caps_and_masks_nodata(tmp_path: Path) -> None:
    """The Python API honours the same cap and nodata; its signatures are unchanged."""
    import torch

    from wrel.inference import Predictor, PredictorConfig
    from wrel.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny())
    tif = make_geotiff(tmp_path / "scene.tif", nodata=0, left_nodata=24)
    predictor = Predictor(model, image_size=(32, 32), config=PredictorConfig(threshold=0.001))
    mask = predictor.predict(tif, "a ship")
    assert mask.shape == (48, 64) and not mask[:, :24].any() and mask[:, 24:].any()
    [probs] = predictor.predict_batch([tif], ["a ship"], return_probs=True)
    assert not probs[:, :24].any()
    capped = Predictor(model, image_size=(32, 32), config=PredictorConfig(max_pixels=1000))
    with pytest.raises(ValueError, match="over the limit of 1,000 pixels"):
        capped.predict(tif, "a ship")
    with pytest.raises(ValueError, match="over the limit"):
        capped.predict(np.zeros((48, 64, 3), np.uint8), "a ship")
    with pytest.raises(ValueError, match="max_pixels"):
        PredictorConfig(max_pixels=0)
