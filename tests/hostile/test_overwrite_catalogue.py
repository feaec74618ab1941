"""Every command that writes a user-visible file, against existing files and its own inputs.

Each writing command is run in-process (``wrel.cli.main``): an existing output is refused with
exit 2 and left byte for byte, then replaced with ``--overwrite``; an output that is an input
(or a file the input reads: VRT sources, sidecars, the data set's annotation files, a run's
files; also through other spellings, symlinks and hard links) is refused even with
``--overwrite``; a failing or interrupted write leaves no temporary file and the previous
content. ``wrel bank decode`` and ``wrel bound`` get their heavy computation replaced by a fixed
report (their files still go through the real writer).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wrel.cli import main
from wrel.core.outfiles import PARTIAL_MARKER, OutputWriteError, write_file

OLD = b"a user's file, must survive byte for byte"
SYNTH_SETS = ["--set", "image_size=32", "--set", "num_train=4", "--set", "num_val=1",
              "--set", "num_test=1", "--set", "refs_per_image=1"]  # fmt: skip


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


def data_copy(tiny_bench: Path, tmp: Path) -> Path:
    """A data root holding a copy of the tiny benchmark's annotation files (no images)."""
    folder = tmp / "data" / "synthetic"
    folder.mkdir(parents=True)
    for name in ("refs(unc).p", "instances.json"):
        shutil.copy2(tiny_bench / "synthetic" / name, folder / name)
    return tmp / "data"


def fake_run(tmp: Path) -> Path:
    """A run folder as `wrel bank decode` reads it (contents are never decoded here)."""
    run = tmp / "run"
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "checkpoints" / "last").mkdir(parents=True)
    (run / "config.json").write_text('{"name": "run"}')
    (run / "bank.safetensors").write_bytes(b"bank")
    (run / "checkpoints" / "best" / "config.json").write_text("{}")
    (run / "checkpoints" / "last" / "state.json").write_text("{}")
    return run


REPORT = {
    "samples": [{"sample_id": 1, "nearest": [["red", "ship"]]}],
    "num_rows": 1,
    "num_prompts": 1,
    "k": 2,
    "vocabulary_size": 10,
    "vocabulary": "bert",
    "parametrization": "free",
}


def fake_computations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed results for bank decode and bound; their files still use the real writer."""
    import wrel.commands.bank
    import wrel.commands.bound
    import wrel.studies.bound

    monkeypatch.setattr(wrel.commands.bank, "decode_bank", lambda *a, **k: dict(REPORT))
    monkeypatch.setattr(wrel.commands.bank, "summary_table", lambda report: "table")
    monkeypatch.setattr(wrel.commands.bound, "load_records", lambda runs: [{"name": "x"}])
    monkeypatch.setattr(wrel.commands.bound, "load_traces", lambda runs, names: {})
    monkeypatch.setattr(wrel.commands.bound, "measure_bound", lambda *a, **k: {"gap": 1.0})
    monkeypatch.setattr(wrel.commands.bound, "bound_markdown", lambda result: "table")
    monkeypatch.setattr(wrel.studies.bound, "bound_markdown", lambda result: "table")
    monkeypatch.setattr(
        wrel.studies.bound,
        "plot_bound",
        lambda result, path: write_file(path, b"png", overwrite=True),
    )


@dataclass
class Ctx:
    tmp: Path
    bench: Path
    checkpoint: Path


# -- every writing command: (argv, the output file it writes) ------------------------------------


def split_out(c: Ctx) -> tuple[list[str], Path]:
    out = c.tmp / "split.p"
    argv = ["data", "split", "--data", str(c.bench), "--name", "synthetic"]
    return [*argv, "--accurate-ratio", "0.5", "--out", str(out)], out


def synth_preview(c: Ctx) -> tuple[list[str], Path]:
    out = c.tmp / "preview.png"
    argv = ["data", "synth", "--out", str(c.tmp / "d"), *SYNTH_SETS, "--workers", "1"]
    return [*argv, "--no-progress", "--preview", str(out)], out


def bank_decode_out(c: Ctx) -> tuple[list[str], Path]:
    run = fake_run(c.tmp)
    return ["bank", "decode", str(run)], run / "bank_decode.json"  # the default --out


def bank_decode_summary(c: Ctx) -> tuple[list[str], Path]:
    run, out = fake_run(c.tmp), c.tmp / "summary.json"
    return ["bank", "decode", str(run), "--out", str(c.tmp / "r.json"), "--summary", str(out)], out


def _predict(flag: str, name: str) -> Callable[[Ctx], tuple[list[str], Path]]:
    def case(c: Ctx) -> tuple[list[str], Path]:
        png, out = make_png(c.tmp / "scene.png"), c.tmp / name
        argv = ["predict", str(c.checkpoint), str(png), "a ship", "--device", "cpu"]
        extra = [] if flag == "--out" else ["--out", str(c.tmp / "mask.png")]
        return [*argv, *extra, flag, str(out)], out

    return case


def bench_report(c: Ctx) -> tuple[list[str], Path]:
    out = c.tmp / "results"
    out.mkdir()
    return ["bench", "--report-only", "--out", str(out)], out / "results.json"


def bound_report(c: Ctx) -> tuple[list[str], Path]:
    runs = c.tmp / "bench"
    runs.mkdir()
    return ["bound", "--runs", str(runs), "--data", str(c.bench)], runs / "bound.json"


WRITERS: dict[str, Callable[[Ctx], tuple[list[str], Path]]] = {
    "data split --out": split_out,
    "data synth --preview": synth_preview,
    "bank decode --out": bank_decode_out,
    "bank decode --summary": bank_decode_summary,
    "predict --out": _predict("--out", "mask.png"),
    "predict --overlay": _predict("--overlay", "overlay.png"),
    "predict --geojson": _predict("--geojson", "mask.geojson"),
    "predict --probs": _predict("--probs", "probs.png"),
    "bench report": bench_report,
    "bound report": bound_report,
}


def partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if PARTIAL_MARKER in p.name or p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_existing_output_is_refused_then_replaced_with_overwrite(
    command: str,
    tmp_path: Path,
    tiny_bench: Path,
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    fake_computations(monkeypatch)
    argv, out = WRITERS[command](Ctx(tmp_path, tiny_bench, tiny_checkpoint))
    out.write_bytes(OLD)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{out} already exists; pass --overwrite" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == OLD

    code = main([*argv, "--overwrite"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert out.read_bytes() not in (OLD, b"") and not partial_files(tmp_path)


def test_bench_rewrites_its_own_report_folder_without_overwrite(tmp_path: Path) -> None:
    """A folder holding run records is wrel bench's own; elsewhere a report needs --overwrite."""
    from wrel.studies.runner import check_report_paths

    (tmp_path / "results.md").write_bytes(OLD)
    with pytest.raises(ValueError, match=r"results\.md already exists; pass --overwrite"):
        check_report_paths(tmp_path)
    check_report_paths(tmp_path, overwrite=True)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "naive-r10-s0.json").write_text("{}")
    check_report_paths(tmp_path)  # the records make it a bench folder
    (tmp_path / "file").write_bytes(OLD)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_report_paths(tmp_path / "file")


# -- outputs that are inputs, or files the input reads: refused, also with --overwrite ----------


def _geotiff(path: Path) -> Path:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    profile = {"driver": "GTiff", "height": 24, "width": 32, "count": 3, "dtype": "uint16",
               "crs": CRS.from_epsg(32631), "transform": Affine(2, 0, 4e5, 0, -2, 5e6)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(1000, 3000, (3, 24, 32), dtype=np.uint16))
    return path


def _vrt(folder: Path) -> tuple[Path, Path]:
    """``scene.vrt`` reading ``src.tif`` (relative to the VRT), as GDAL writes it."""
    source = _geotiff(folder / "src.tif")
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">src.tif</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt = folder / "scene.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="32" rasterYSize="24"><SRS>EPSG:32631</SRS>'
        f"<GeoTransform>400000,2,0,5000000,0,-2</GeoTransform>{bands}</VRTDataset>"
    )
    return vrt, source


def _predict_argv(c: Ctx, image: Path, *extra: str) -> list[str]:
    return ["predict", str(c.checkpoint), str(image), "a ship", "--device", "cpu", *extra]


def vrt_source(c: Ctx) -> tuple[list[str], Path, str]:
    vrt, source = _vrt(c.tmp)
    argv = _predict_argv(c, vrt, "--out", str(source), "--overwrite")
    return argv, source, "a source or sidecar file that the input image"


def vrt_source_via_hard_link(c: Ctx) -> tuple[list[str], Path, str]:
    vrt, source = _vrt(c.tmp)
    os.link(source, c.tmp / "copy.tif")
    argv = _predict_argv(c, vrt, "--out", str(c.tmp / "copy.tif"), "--overwrite")
    return argv, source, f"reads ({source})"


def vrt_source_via_symlink(c: Ctx) -> tuple[list[str], Path, str]:
    vrt, source = _vrt(c.tmp)
    (c.tmp / "link.tif").symlink_to(source)
    argv = _predict_argv(c, vrt, "--out", str(c.tmp / "link.tif"), "--overwrite")
    return argv, source, "a source or sidecar file"


def model_file_as_geojson(c: Ctx) -> tuple[list[str], Path, str]:
    png, config = make_png(c.tmp / "scene.png"), c.checkpoint / "config.json"
    argv = _predict_argv(c, png, "--out", str(c.tmp / "m.png"), "--geojson", str(config))
    return [*argv, "--overwrite"], config, "a file of the model folder"


def split_over_refs(c: Ctx) -> tuple[list[str], Path, str]:
    data = data_copy(c.bench, c.tmp)
    refs = data / "synthetic" / "refs(unc).p"
    argv = ["data", "split", "--data", str(data), "--accurate-ratio", "0.5"]
    return [*argv, "--out", str(refs), "--overwrite"], refs, "a file of the data set"


def split_over_instances_other_spelling(c: Ctx) -> tuple[list[str], Path, str]:
    argv, refs, fragment = split_over_refs(c)
    instances = refs.parent / "instances.json"
    argv[argv.index("--out") + 1] = str(refs.parent / ".." / "synthetic" / "instances.json")
    return argv, instances, fragment


def split_over_refs_via_symlink(c: Ctx) -> tuple[list[str], Path, str]:
    argv, refs, fragment = split_over_refs(c)
    (c.tmp / "link.p").symlink_to(refs)
    argv[argv.index("--out") + 1] = str(c.tmp / "link.p")
    return argv, refs, fragment


def split_over_refs_via_hard_link(c: Ctx) -> tuple[list[str], Path, str]:
    argv, refs, fragment = split_over_refs(c)
    os.link(refs, c.tmp / "hard.p")
    argv[argv.index("--out") + 1] = str(c.tmp / "hard.p")
    return argv, refs, fragment


def bank_decode_over_run_config(c: Ctx) -> tuple[list[str], Path, str]:
    run = fake_run(c.tmp)
    argv = ["bank", "decode", str(run), "--out", str(run / "config.json"), "--overwrite"]
    return argv, run / "config.json", "a file of the run or model"


def bank_summary_over_state(c: Ctx) -> tuple[list[str], Path, str]:
    run = fake_run(c.tmp)
    state = run / "checkpoints" / "last" / "state.json"
    argv = ["bank", "decode", str(run), "--summary", str(state), "--overwrite"]
    return argv, state, "a file of the run or model"


def preview_inside_benchmark(c: Ctx) -> tuple[list[str], Path, str]:
    argv, _ = synth_preview(c)
    inside = c.tmp / "d" / "synthetic" / "preview.png"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(OLD)
    argv[argv.index("--preview") + 1] = str(inside)
    return [*argv, "--overwrite"], inside, "which this command reads or rewrites"


PROTECTED: dict[str, Callable[[Ctx], tuple[list[str], Path, str]]] = {
    f.__name__: f
    for f in (
        vrt_source,
        vrt_source_via_hard_link,
        vrt_source_via_symlink,
        model_file_as_geojson,
        split_over_refs,
        split_over_instances_other_spelling,
        split_over_refs_via_symlink,
        split_over_refs_via_hard_link,
        bank_decode_over_run_config,
        bank_summary_over_state,
        preview_inside_benchmark,
    )
}


@pytest.mark.parametrize("case", sorted(PROTECTED))
def test_inputs_and_the_files_they_read_are_never_written(
    case: str,
    tmp_path: Path,
    tiny_bench: Path,
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    fake_computations(monkeypatch)
    argv, protected, fragment = PROTECTED[case](Ctx(tmp_path, tiny_bench, tiny_checkpoint))
    before = protected.read_bytes()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert protected.read_bytes() == before and not partial_files(tmp_path)


@pytest.mark.parametrize(
    "sidecar", ["a.tif.aux.xml", "a.tif.ovr", "a.tfw", "a.tifw", "a.wld", "a.prj", "A.TFW"]
)
def test_sidecars_of_an_input_are_protected_even_before_they_exist(
    tmp_path: Path, sidecar: str
) -> None:
    image = tmp_path / "a.tif"
    image.write_bytes(b"image")
    with pytest.raises(ValueError, match="a source or sidecar file that the input image"):
        write_file(tmp_path / sidecar, b"x", inputs=[image], overwrite=True)
    assert not (tmp_path / sidecar).exists()


def test_nested_vrt_sources_are_protected(tmp_path: Path) -> None:
    from wrel.core.readfiles import files_read_by

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leaf.tif").write_bytes(b"leaf")
    inner = '<VRTDataset><SimpleSource><SourceFilename relativeToVRT="1">leaf.tif'
    (tmp_path / "sub" / "inner.vrt").write_text(
        inner + "</SourceFilename></SimpleSource></VRTDataset>"
    )
    outer = f"<VRTDataset><SourceFilename>{tmp_path / 'sub' / 'inner.vrt'}</SourceFilename></VRTDataset>"
    (tmp_path / "outer.vrt").write_text(outer)
    found = {p.resolve() for p in files_read_by([tmp_path / "outer.vrt"])}
    assert (tmp_path / "sub" / "leaf.tif").resolve() in found
    assert (tmp_path / "sub" / "leaf.tfw").resolve() in found
    with pytest.raises(ValueError, match="reads"):
        write_file(
            tmp_path / "sub" / "leaf.tif", b"x", inputs=[tmp_path / "outer.vrt"], overwrite=True
        )


# -- atomic writes: a failure or Ctrl-C leaves the previous file and no temporary --------------


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_failed_write_leaves_previous_file_and_no_temporary(
    tmp_path: Path, error: BaseException
) -> None:
    out = tmp_path / "report.json"
    out.write_bytes(OLD)

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half a rep")
        raise error

    expected = OutputWriteError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        write_file(out, failing, overwrite=True)
    assert out.read_bytes() == OLD and sorted(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize(
    ("error", "code", "fragment"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
        (KeyboardInterrupt(), 130, "wrel: interrupted"),
    ],
    ids=["disk-full", "ctrl-c"],
)
def test_command_write_failure_is_one_line_and_leaves_no_temporary(
    tmp_path: Path,
    tiny_bench: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    error: BaseException,
    code: int,
    fragment: str,
) -> None:
    argv, out = split_out(Ctx(tmp_path, tiny_bench, tmp_path))
    out.write_bytes(OLD)
    real_write_bytes = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if PARTIAL_MARKER in self.name:
            real_write_bytes(self, data[:10])
            raise error
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    got = main([*argv, "--overwrite"])
    err = capsys.readouterr().err
    assert got == code and fragment in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert out.read_bytes() == OLD and not partial_files(tmp_path)


def test_bench_report_files_are_written_without_temporaries(tmp_path: Path) -> None:
    from wrel.studies.runner import write_report

    paths = write_report(tmp_path)
    assert json.loads(paths["json"].read_text()) == [] and not partial_files(tmp_path)
