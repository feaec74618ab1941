"""Bounded parsing: no small file makes wrel use a lot of memory, time or stack.

YAML aliases ("billion laughs"), nesting too deep for the parser, files too large to read
whole, pictures whose decoded pixels would not fit the ``--max-pixels`` promise, sizes on the
command line past any real use, and a checkpoint ``config.json`` edited after export. Each
case fails with one ``ValueError`` (or subclass) naming the file or the key, before the work
it would make expensive.
"""

from __future__ import annotations

import json
import re
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from wrel.cli import main
from wrel.core.bounded import (
    DATA_FILE_ENV,
    MAX_NESTING_DEPTH,
    load_json,
    loads_json,
    safe_yaml_load,
)
from wrel.core.config_io import load_yaml, parse_assignment
from wrel.engine.checkpoint import CheckpointError, config_seal, load_model, save_model
from wrel.models import ModelConfig, build_model

# -- YAML aliases -------------------------------------------------------------------------------


def _alias_bomb(levels: int = 9, fanout: int = 9) -> str:
    """About 1 kB of YAML that expands to ``fanout ** levels`` strings (387 M for 9 x 9)."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"bomb: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _bounded(call) -> tuple[Exception, float, int]:
    """Run ``call`` (expected to raise); return the error, seconds and peak traced bytes.

    PyYAML is imported first: its one-time import (slow under tracemalloc) is not the bomb.
    """
    safe_yaml_load("warm: up")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        call()
    except Exception as err:  # the error is checked by the caller
        error = err
    else:  # pragma: no cover - the assertion below reports it
        error = AssertionError("no error raised")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, seconds, peak


def test_alias_bomb_config_file_fails_fast_and_small(tmp_path: Path) -> None:
    text = _alias_bomb()
    assert 400 < len(text.encode()) <= 1024
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    error, seconds, peak = _bounded(lambda: load_yaml(path))
    assert isinstance(error, ValueError), error
    assert str(path) in str(error) and "aliases" in str(error) and "line 2" in str(error)
    assert seconds < 1.0 and peak < 200 * 2**20, (seconds, peak)


def test_alias_bomb_in_one_set_value_fails_fast_and_small() -> None:
    flow = "{" + ", ".join(_alias_bomb().strip().splitlines()) + "}"
    error, seconds, peak = _bounded(lambda: parse_assignment(f"data.name={flow}"))
    assert isinstance(error, ValueError), error
    assert "--set data.name" in str(error) and "aliases" in str(error)
    assert seconds < 1.0 and peak < 200 * 2**20, (seconds, peak)


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {lr: 1}\nstage: {<<: *b}\n",  # a merge key is an alias too
        "a: &x 1\nb: *x\n",  # one harmless alias: refused the same way (write values out)
    ],
    ids=["merge key", "single alias"],
)
def test_any_alias_is_refused_with_the_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"aliases \(\*\w+\) are not supported.*line 2"):
        load_yaml(path)


def test_anchor_without_alias_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: &t {seed: 3}\n")
    assert load_yaml(path) == {"train": {"seed": 3}}


def test_cli_alias_bomb_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    start = time.perf_counter()
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "aliases" in err[0]
    assert time.perf_counter() - start < 5.0


# -- nesting depth --------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [MAX_NESTING_DEPTH + 1, 100_000])
def test_deep_yaml_is_a_value_error_not_a_recursion_error(tmp_path: Path, levels: int) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * levels + "]" * levels + "\n")
    with pytest.raises(ValueError, match=rf"{path}.*nested more than {MAX_NESTING_DEPTH}"):
        load_yaml(path)
    with pytest.raises(ValueError, match="--set a: .*nested more than"):
        parse_assignment("a=" + "{b: " * levels + "1" + "}" * levels)


def test_yaml_at_the_depth_limit_loads(tmp_path: Path) -> None:
    levels = MAX_NESTING_DEPTH - 1  # the top-level mapping is one level
    path = tmp_path / "ok.yaml"
    path.write_text("a: " + "[" * levels + "]" * levels + "\n")
    assert isinstance(load_yaml(path)["a"], list)


@pytest.mark.parametrize("levels", [MAX_NESTING_DEPTH + 1, 100_000])
def test_deep_json_is_a_value_error_naming_the_file(tmp_path: Path, levels: int) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * levels + "]" * levels)
    with pytest.raises(ValueError, match=rf"{path} nests lists or "):
        load_json(path, "JSON file")
    assert loads_json("[" * MAX_NESTING_DEPTH + "]" * MAX_NESTING_DEPTH, "x") is not None


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny()).eval()


@pytest.fixture
def best(tmp_path: Path, tiny_model) -> Path:
    meta = {"method": "naive", "image_size": [32, 32]}
    return save_model(tmp_path / "best", tiny_model, meta)


def _deep(levels: int = 100_000) -> str:
    return '{"a": ' + "[" * levels + "]" * levels + "}"


def test_deep_checkpoint_config_is_a_checkpoint_error(best: Path) -> None:
    (best / "config.json").write_text(_deep())
    with pytest.raises(CheckpointError, match=r"config\.json nests lists or objects too deeply"):
        load_model(best)


def test_deep_resume_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    from wrel.engine.state import read_resume_state, save_resume_state

    folder = save_resume_state(tmp_path / "last", {"loop": {"step": torch.zeros(1)}})
    (folder / "state.json").write_text(_deep())
    (folder / "manifest.json").unlink()  # an older folder: no checksum to catch the edit first
    with pytest.raises(CheckpointError, match=r"state\.json nests lists or objects too deep"):
        read_resume_state(folder)


def test_deep_run_config_on_resume_names_the_file(tmp_path: Path, tiny_bench, tiny_model_sets):
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import Trainer

    cfg = build_experiment(
        "naive",
        assignments=[f"train.output_dir={tmp_path}", f"data.root={tiny_bench}", *tiny_model_sets],
    )
    trainer = Trainer(cfg, resume=True)
    trainer.run_dir.mkdir(parents=True)
    (trainer.run_dir / "config.json").write_text(_deep())
    with pytest.raises(ValueError, match=r"config\.json is not a wrel run config"):
        trainer._prepare_run_dir()


def test_predict_reads_a_deep_checkpoint_config_without_recursion(best: Path) -> None:
    from wrel.inference import Predictor
    from wrel.inference.predictor import read_checkpoint_scaling

    (best / "config.json").write_text(_deep())
    assert read_checkpoint_scaling(best) is None  # the model load reports it, clearly
    with pytest.raises(CheckpointError, match="too deeply"):
        Predictor.from_checkpoint(best)


# -- sizes before reading -----------------------------------------------------------------------


def test_refs_file_over_the_limit_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrel.data.refer as refer

    path = tmp_path / "refs(unc).p"
    with open(path, "wb") as handle:
        handle.truncate(2 * 2**20 + 1)  # sparse: 2 MiB + 1 byte, nothing written
    monkeypatch.setenv(DATA_FILE_ENV, "2")
    monkeypatch.setattr(refer, "restricted_loads", lambda *a: pytest.fail("the file was read"))
    pattern = rf"refs file {re.escape(str(path))} is 2,097,153 bytes.*{DATA_FILE_ENV}"
    with pytest.raises(ValueError, match=pattern):
        refer.load_refs(path)
    monkeypatch.setenv(DATA_FILE_ENV, "a lot")
    with pytest.raises(ValueError, match=f"{DATA_FILE_ENV}='a lot' must be a whole number"):
        refer.load_refs(path)


def test_instances_over_the_limit_is_refused(
    tmp_path: Path, tiny_bench: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from wrel.data.refer import read_refer

    root = tmp_path / "data"
    shutil.copytree(tiny_bench / "synthetic", root / "synthetic")
    instances = root / "synthetic" / "instances.json"
    with open(instances, "ab") as handle:
        handle.truncate(2**20 + 10)  # trailing NULs: invalid JSON, but never parsed
    monkeypatch.setenv(DATA_FILE_ENV, "1")
    with pytest.raises(ValueError, match=rf"annotation file {instances} is 1,048,586 bytes"):
        read_refer(root, "synthetic")
    monkeypatch.delenv(DATA_FILE_ENV)
    with pytest.raises(ValueError, match="is not valid JSON"):  # under the default limit
        read_refer(root, "synthetic")


def test_config_file_over_16_mib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(16 * 2**20 + 1)
    with pytest.raises(ValueError, match=rf"config file {path} is 16,777,217 bytes"):
        load_yaml(path)


def test_state_file_over_its_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrel.engine.state as state

    folder = state.save_resume_state(tmp_path / "last", {"loop": {"x": 1}, "w": torch.ones(2)})
    monkeypatch.setattr(state, "MAX_STATE_BYTES", 10)
    with pytest.raises(CheckpointError, match=r"resume state .*state\.json is \d+ bytes, over"):
        state.read_resume_state(folder)


# -- one decode budget for pictures ---------------------------------------------------------------


def write_png16(path: Path, width: int, height: int, value: int = 1000) -> Path:
    """A 16-bit greyscale PNG of one grey ``value``, written in well under a second and a few
    MB of memory whatever its size: one block of rows is deflated once (ended by a full flush,
    which resets the compressor so the same input gives the same bytes) and repeated; the
    stream then ends with an empty final stored block and the Adler-32 of all rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" + struct.pack(">H", value) * width  # filter 0, then big-endian samples
    rows_per_block = 64
    count, rest = divmod(height, rows_per_block)
    block, tail = row * rows_per_block, row * rest
    compressor = zlib.compressobj(9)
    header = compressor.compress(b"") + compressor.flush(zlib.Z_FULL_FLUSH)  # zlib header
    deflated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    last = compressor.compress(tail) + compressor.flush(zlib.Z_FULL_FLUSH) if rest else b""
    adler = 1
    for _ in range(count):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(tail, adler)
    stream = header + deflated * count + last + b"\x01\x00\x00\xff\xff" + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def png_13k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png16(tmp_path_factory.mktemp("png") / "big16.png", 13_000, 13_000)


def test_13k_16_bit_png_is_refused_by_predict_from_its_header(
    png_13k: Path, best: Path, tmp_path: Path, capsys
) -> None:
    assert png_13k.stat().st_size < 1_000_000  # a small file of 169 M pixels
    out = tmp_path / "mask.png"
    argv = ["predict", str(best), str(png_13k), "a ship", "--out", str(out)]
    tracemalloc.start()
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(png_13k) in err[0]
    assert "13000 x 13000 pixels of mode I;16" in err[0] and "tiled GeoTIFF" in err[0]
    assert peak < 200 * 2**20 and seconds < 30, (peak, seconds)  # nothing was decoded
    assert not out.exists()


def test_picture_budget_follows_max_pixels(tmp_path: Path) -> None:
    from wrel.data.images import ImageTooLargeError
    from wrel.inference.inputs import open_image

    png = write_png16(tmp_path / "p.png", 300, 300)
    assert open_image(png).read_rgb().shape == (300, 300, 3)  # the default budget: fine
    from PIL import Image

    with Image.open(write_png16(tmp_path / "v.png", 70, 131, 4242)) as img:  # a valid PNG
        assert img.mode == "I;16" and (np.asarray(img) == 4242).all()
    # 90,000 pixels fit 1e6 pixels, but decoding 16-bit data whole costs ~61 bytes a pixel
    with pytest.raises(ImageTooLargeError, match=r"p\.png is 300 x 300 pixels of mode I;16"):
        open_image(png, max_pixels=1_000_000)
    assert open_image(png, max_pixels=None).height == 300  # 0 / None: no limit, no budget


def test_training_reader_refuses_a_16_bit_picture_over_the_decode_budget(tmp_path: Path):
    from wrel.data.image_reading import read_image
    from wrel.data.images import MAX_IMAGE_PIXELS, ImageTooLargeError

    png = write_png16(tmp_path / "train16.png", 6000, 6000)  # under the pixel cap
    assert MAX_IMAGE_PIXELS > 6000 * 6000
    with pytest.raises(ImageTooLargeError, match=r"train16\.png .*decoding it whole needs"):
        read_image(png)


# -- sizes on the command line --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e300", "1.5"])
def test_max_pixels_inf_and_friends_are_clean_errors(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", "m", "i.png", "x", f"--max-pixels={value}"])
    assert info.value.code == 2
    assert "--max-pixels expects a whole number of pixels up to 1e11" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, pattern",
    [
        ("--tile-size", "100000", r"tile_size must be in \[16, 8192\]"),
        ("--batch-size", "1000000", r"batch_size must be in \[1, 1024\]"),
        ("--max-whole-side", "10000000", r"max_whole_side must be in \[1, 65536\]"),
    ],
)
def test_predict_sizes_have_upper_bounds(flag, value, pattern, tmp_path: Path, capsys) -> None:
    assert main(["predict", "m", str(tmp_path / "i.png"), "x", flag, value]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    from wrel.inference import PredictorConfig

    with pytest.raises(ValueError, match=pattern):
        PredictorConfig(**{flag[2:].replace("-", "_"): int(value)})


@pytest.mark.parametrize(
    "assignment, pattern",
    [
        ("image_size=100000", r"image_size=100000 must be in \[32, 4096\]"),
        ("num_train=1000000000000", r"num_train=1000000000000 must be in \[0, 1,000,000\]"),
        ("num_test=2000000", r"num_test=2000000 must be in"),
        ("refs_per_image=1000", r"refs_per_image=1000 must be in \[1, 64\]"),
        ("max_instances=100000", r"max_instances <= 256"),
    ],
)
def test_synth_sizes_have_upper_bounds(assignment: str, pattern: str, tmp_path, capsys) -> None:
    out = tmp_path / "data"
    assert main(["data", "synth", "--out", str(out), "--set", assignment]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrel: error:" in err[0]
    from wrel.core.config_io import apply_overrides
    from wrel.data.synth import SynthConfig

    with pytest.raises(ValueError, match=pattern):
        apply_overrides(SynthConfig, assignments=[assignment])
    assert not out.exists()


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--image-size", "100000"], r"--image-size must be in \[8, 4,096\], got 100,000"),
        (["--batch-size", "0"], r"--batch-size must be in \[1, 1,024\], got 0"),
        (["--batch-size", "99999999"], r"--batch-size must be in"),
    ],
)
def test_eval_sizes_are_bounded_before_the_model_loads(args, pattern, capsys) -> None:
    assert main(["eval", "no-such-model", "--data", "no-such-data", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(pattern, err), err


def test_stats_sizes_are_bounded(tmp_path: Path, capsys) -> None:
    assert main(["data", "stats", "--data", str(tmp_path), "--input-size", "99999"]) == 2
    assert "--input-size must be in [8, 4,096]" in capsys.readouterr().err
    assert main(["data", "stats", "--data", str(tmp_path), "--pixel-images", "10000000"]) == 2
    assert "--pixel-images must be in [0, 100,000]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "assignment, pattern",
    [
        ("data.image_size=100000", r"data\.image_size=100000 \(must be <= 4096\)"),
        ("train.batch_size=100000", r"train\.batch_size=100000 \(must be <= 4096\)"),
    ],
)
def test_training_sizes_have_upper_bounds(assignment: str, pattern: str) -> None:
    from wrel.engine.experiment import build_experiment

    with pytest.raises(ValueError, match=pattern):
        build_experiment("naive", assignments=[assignment])


# -- checkpoint metadata: sealed and validated ----------------------------------------------------


def _edit(folder: Path, edit, *, reseal: bool) -> None:
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    if reseal:  # someone who also recomputes the seal: the validation still refuses
        data["config_sha256"] = config_seal(data)
    (folder / "config.json").write_text(json.dumps(data))


def _spy_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import wrel.engine.checkpoint

    calls: list[str] = []
    monkeypatch.setattr(wrel.engine.checkpoint, "build_model", lambda cfg: calls.append("built"))
    return calls


def test_tampered_image_size_is_refused_by_the_seal(best: Path, monkeypatch) -> None:
    builds = _spy_builds(monkeypatch)
    _edit(best, lambda d: d["metadata"].update(image_size=[100000, 100000]), reseal=False)
    with pytest.raises(CheckpointError, match=r"config\.json was edited after export"):
        load_model(best)
    assert builds == []


BAD_METADATA = {
    "image_size 100000": ({"image_size": [100000, 100000]}, r"image_size = \[100000, 100000\]"),
    "image_size int 100000": ({"image_size": 100000}, r"image_size = \[100000, 100000\]"),
    "image_size a string": ({"image_size": "480"}, r"image_size = '480' must be an int"),
    "image_size a float": ({"image_size": [32.5, 32]}, r"image_size = \[32\.5, 32\]"),
    "image_size zero": ({"image_size": [0, 32]}, r"image_size = \[0, 32\]"),
    "std zero": ({"image_std": [0.2, 0.0, 0.2]}, r"image_std = \[0\.2, 0\.0, 0\.2\] must be > 0"),
    "std negative": ({"image_std": [-1, 1, 1]}, r"image_std .* must be > 0"),
    "mean NaN": ({"image_mean": [float("nan"), 0.5, 0.5]}, r"image_mean = \[nan.*NaN or inf"),
    "std inf": ({"image_std": [1, 1, float("inf")]}, r"image_std = .*inf.*NaN or infinity"),
    "std two values": ({"image_std": [0.2, 0.2]}, r"image_std must be a list of 3 numbers"),
    "mean strings": ({"image_mean": ["a", "b", "c"]}, r"image_mean must be a list of 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_resealed_bad_metadata_is_refused_before_any_build(
    best: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    update, pattern = BAD_METADATA[case]
    builds = _spy_builds(monkeypatch)
    _edit(best, lambda d: d["metadata"].update(update), reseal=True)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_model(best)
    assert str(best / "config.json") in str(info.value)
    assert builds == []  # refused before the model (or anything large) is built


def test_model_input_size_is_bounded(best: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = _spy_builds(monkeypatch)
    _edit(best, lambda d: d["model"].update(input_size=100000), reseal=True)
    with pytest.raises(CheckpointError, match=r"model\.input_size = 100000"):
        load_model(best)
    assert builds == []


def test_metadata_update_keeps_the_seal_and_refuses_an_edited_config(best: Path) -> None:
    from wrel.engine.checkpoint import update_model_metadata

    update_model_metadata(best, {"test": {"mIoU": 1.0}})
    assert load_model(best)[1]["test"] == {"mIoU": 1.0}  # re-sealed by the update
    _edit(best, lambda d: d["metadata"].update(method="lrb"), reseal=False)
    with pytest.raises(CheckpointError, match="edited after export"):
        update_model_metadata(best, {"test": {"mIoU": 2.0}})


def test_unsealed_export_loads_with_a_warning_but_is_still_validated(
    best: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _edit(best, lambda d: d.pop("config_sha256"), reseal=False)
    with caplog.at_level("WARNING"):
        assert load_model(best)[1]["image_size"] == [32, 32]
    assert "carries no config_sha256" in caplog.text
    _edit(best, lambda d: d["metadata"].update(image_std=[0, 0, 0]), reseal=False)
    with pytest.raises(CheckpointError, match="image_std"):
        load_model(best)
