"""One error path: every exception that reaches ``wrel.cli.main`` is one line and an exit code.

Exit 2 for bad input (names the file and the key where known), 1 for a fault of the
environment (full disk, also inside safetensors' own error type; memory, with the size asked),
130 for Ctrl-C; ``--debug`` prints the traceback first. Each class is raised where the command
would meet it (monkeypatched into ``wrel train``), then the specific cases of issue 30 run for
real: ``--max-pixels inf``, ``--set`` values of the wrong type, a ref whose ``ann_id`` has no
annotation, an ``--output-dir`` that is a file, a full disk during a safetensors save, a
truncated bank file, a damaged ``tokenizer.json``.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import UnidentifiedImageError
from safetensors import SafetensorError

from wrel.cli import main
from wrel.core.errors import describe_error, memory_asked


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def _numpy_memory_error() -> MemoryError:
    try:
        np.empty((2**47,), dtype=np.float64)  # 1 PiB, beyond any address space: refused at once
    except MemoryError as err:
        return err
    raise AssertionError("numpy allocated 1 PiB")  # pragma: no cover


def _torch_allocation_error() -> RuntimeError:
    try:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB
    except RuntimeError as err:
        return err
    raise AssertionError("torch allocated 1 PiB")  # pragma: no cover


DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"
CLASSES = {
    "key error": (KeyError("ann_id"), 2, "missing key 'ann_id'"),
    "recursion": (RecursionError("maximum recursion depth exceeded"), 2, "nested too deeply"),
    "overflow": (OverflowError("cannot convert float infinity"), 2, "too large"),
    "type error": (TypeError("int() argument must be ... not 'list'"), 2, "wrong type"),
    "value error": (ValueError("f.json: bad value"), 2, "f.json: bad value"),
    "not found": (FileNotFoundError("data root /x does not exist"), 2, "/x does not exist"),
    "permission": (PermissionError(errno.EACCES, "Permission denied", "/r"), 2, "Permission"),
    "truncated safetensors": (
        SafetensorError("Error while deserializing header: invalid header length"),
        2,
        "damaged safetensors file",
    ),
    "safetensors disk full": (SafetensorError(DISK_FULL), 1, "No space left on device"),
    "disk full": (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 1, "No space left"),
    "numpy memory": (_numpy_memory_error(), 1, "an allocation of 1.00 PiB failed"),
    "torch cpu allocation": (_torch_allocation_error(), 1, "an allocation of 1024.0 TiB failed"),
    "cuda out of memory": (
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)"),
        1,
        "an allocation of 20.00 GiB failed",
    ),
    "bare memory error": (MemoryError(), 1, "out of memory: an allocation failed"),
    "truncated pickle": (EOFError("Ran out of input"), 2, "a damaged or truncated file"),
    "bad pickle": (pickle.UnpicklingError("invalid load key"), 2, "a damaged or truncated"),
    "unreadable image": (UnidentifiedImageError("cannot identify image file 'x.png'"), 2, "x.png"),
    "eio": (OSError(errno.EIO, "Input/output error"), 1, "Input/output error"),
    "bug": (ZeroDivisionError("division by zero"), 1, "internal error (ZeroDivisionError"),
}


def _raising(error: BaseException):  # type: ignore[no-untyped-def]
    def train(cfg, *, resume=False):  # type: ignore[no-untyped-def]
        raise error

    return train


@pytest.mark.parametrize("case", sorted(CLASSES))
def test_each_exception_class_is_one_line_with_its_exit_code(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import wrel.commands.train

    error, code, fragment = CLASSES[case]
    monkeypatch.setattr(wrel.commands.train, "train", _raising(error))
    got, err = _run(capsys, "train", "--method", "naive")
    assert got == code and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("wrel: error: ") and fragment in err, err

    got, err = _run(capsys, "train", "--method", "naive", "--debug")
    assert got == code and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("wrel: error: ")


def test_memory_asked_is_read_from_torch_and_numpy_messages() -> None:
    assert memory_asked("DefaultCPUAllocator: you tried to allocate 1073741824 bytes.") == (
        "1.0 GiB"
    )
    assert memory_asked("CUDA out of memory. Tried to allocate 2.50 GiB") == "2.50 GiB"
    assert memory_asked("Unable to allocate 7.45 GiB for an array") == "7.45 GiB"
    assert memory_asked("something else") is None


def test_our_messages_quoting_numbers_are_not_taken_for_os_errors() -> None:
    assert describe_error(ValueError("x.json: code 28 (os error 28)")) == (
        2,
        "x.json: code 28 (os error 28)",
    )


def test_debug_works_on_nested_subcommands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = _run(capsys, "data", "stats", "--data", str(tmp_path / "none"), "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err


# -- the specific cases of issue 30, for real ---------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e400", "-inf", "nan"])
def test_max_pixels_infinite_is_a_usage_error(value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "ckpt", "x.png", "a ship", f"--max-pixels={value}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--max-pixels expects a whole number" in err
    assert "Traceback" not in err and "OverflowError" not in err


@pytest.mark.parametrize(
    "assignment",
    [
        "train.batch_size=[1, 2]",
        "train.batch_size={a: 1}",
        "train.batch_size=2020-01-01",
        "train.batch_size=.inf",
        "stages.0.optim.lr_head=[1]",
        "data.image_size={x: 1}",
        "train.output_dir=[runs]",
    ],
)
def test_set_values_of_the_wrong_type_are_one_line_naming_the_key(
    assignment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    key = assignment.split("=")[0].replace("stages.0", "stages.naive")
    code, err = _run(
        capsys, "train", "--method", "naive", "--data", str(tmp_path), "--set", assignment
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"wrel: error: {key}: expected" in err


def _synthetic_copy(tiny_bench: Path, tmp: Path) -> Path:
    root = tmp / "data"
    shutil.copytree(tiny_bench / "synthetic", root / "synthetic")
    return root


def test_data_stats_ref_without_annotation_names_the_file(
    tiny_bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _synthetic_copy(tiny_bench, tmp_path)
    refs_path = root / "synthetic" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    refs[0]["ann_id"] = 999_999
    refs_path.write_bytes(pickle.dumps(refs))
    code, err = _run(capsys, "data", "stats", "--data", str(root))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{refs_path}: ref {refs[0]['ref_id']} has ann_id 999999" in err


def test_data_stats_missing_attributes_entry_names_the_file(
    tiny_bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _synthetic_copy(tiny_bench, tmp_path)
    attributes = root / "synthetic" / "attributes.json"
    attributes.write_text(json.dumps({}))
    code, err = _run(capsys, "data", "stats", "--data", str(root))
    assert code == 2 and f"{attributes}: ref" in err and "Traceback" not in err, err


def test_output_dir_that_is_a_file_is_bad_input_not_a_full_disk(
    tiny_bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for output_dir in (afile, afile / "sub"):
        code, err = _run(
            capsys, "train", "--method", "naive", "--data", str(tiny_bench),
            "--output-dir", str(output_dir),
        )  # fmt: skip
        assert code == 2 and "is a file, not a folder" in err, err
        assert "disk space" not in err and err.count("\n") == 1
    assert afile.read_text() == "not a folder"


def test_checkpoint_write_error_on_a_file_path_is_exit_2() -> None:
    from wrel.engine.checkpoint import CheckpointWriteError

    err = CheckpointWriteError(Path("afile/naive"), NotADirectoryError(errno.ENOTDIR, "Not a dir"))
    assert describe_error(err)[0] == 2 and "is a file, not a folder" in str(err)
    full = CheckpointWriteError(Path("runs/x"), OSError(errno.ENOSPC, "No space left on device"))
    assert describe_error(full)[0] == 1 and "Free disk space" in str(full)


def test_full_disk_in_safetensors_own_error_type_is_a_checkpoint_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    from wrel.engine.checkpoint import CheckpointWriteError, save_tensors

    def full(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        Path(filename).write_bytes(b"partial")
        raise SafetensorError(DISK_FULL)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    target = tmp_path / "ckpt" / "tensors.safetensors"
    with pytest.raises(CheckpointWriteError) as info:
        save_tensors(target, {"w": torch.zeros(2)})
    assert info.value.errno == errno.ENOSPC and info.value.exit_code == 1
    assert f"cannot write checkpoint {target}: No space left on device" in str(info.value)
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_truncated_bank_file_names_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from wrel.methods.bank import ReferenceBank

    path = tmp_path / "bank.safetensors"
    save_file({"rows": torch.zeros(4, 2, 8), "ids": torch.arange(4)}, str(path))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"reference bank file {path} is damaged"):
        ReferenceBank.load(path)


def test_damaged_tokenizer_is_one_line_naming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from PIL import Image

    from wrel.engine.checkpoint import save_model
    from wrel.models import ModelConfig, build_model

    torch.manual_seed(0)
    ckpt = save_model(tmp_path / "ckpt", build_model(ModelConfig.tiny()), {"image_size": [32, 32]})
    config = json.loads((ckpt / "config.json").read_text())
    config.pop("files")  # an export without checksums: the tokenizer is parsed, not hashed
    config.pop("config_sha256", None)  # ... and without the config seal (an older export)
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "text_encoder" / "tokenizer.json").write_text('{"model": 5, "version": "1.0"}')
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code, err = _run(
        capsys, "predict", str(ckpt), str(image), "a ship", "--out", str(tmp_path / "m.png")
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"cannot read the tokenizer in {ckpt / 'text_encoder'}" in err
