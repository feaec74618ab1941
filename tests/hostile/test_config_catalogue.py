"""Hostile configs and CLI errors: every bad value is refused before any work, in one line.

``validate_experiment`` (run by ``build_experiment`` and by the trainer before it reads data)
and the CLI's error handling: one ``wrel: error: ...`` line on stderr, exit code 2 for bad
input and 1 for faults while working, the traceback only with ``--debug``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from wrel.cli import main
from wrel.core.config_io import load_yaml, parse_assignment
from wrel.core.distributed import resolve_device
from wrel.engine.experiment import build_experiment, check_run_name, validate_experiment

#: (method, --set overrides, pattern of the error)
BAD_CONFIGS = {
    "zero epochs": ("naive", ["stages.0.epochs=0"], r"stages\.naive\.epochs=0"),
    "negative epochs": ("lrb", ["stages.joint.epochs=-2"], r"stages\.joint\.epochs=-2"),
    "zero batch": ("naive", ["train.batch_size=0"], r"train\.batch_size=0 \(must be >= 1\)"),
    "negative batch": ("naive", ["train.batch_size=-4"], r"train\.batch_size=-4"),
    "zero eval batch": ("naive", ["train.eval_batch_size=0"], r"train\.eval_batch_size=0"),
    "zero log_every": ("naive", ["train.log_every=0"], r"train\.log_every=0"),
    "negative checkpoint_every": (
        "naive",
        ["train.checkpoint_every=-1"],
        r"train\.checkpoint_every=-1",
    ),
    "zero eval_every": ("naive", ["train.eval_every=0"], r"train\.eval_every=0"),
    "negative val_every_steps": (
        "naive",
        ["train.val_every_steps=-1"],
        r"train\.val_every_steps=-1",
    ),
    "negative lr": ("naive", ["stages.0.optim.lr_head=-1e-3"], r"optim\.lr_head=-0\.001"),
    "negative bank lr": ("lrb", ["stages.joint.bank_lr=-1e-3"], r"stages\.joint\.bank_lr"),
    "nan lr": ("naive", ["stages.0.optim.lr_backbone=.nan"], r"lr_backbone=nan .*finite"),
    "infinite lr": ("naive", ["stages.0.optim.lr_text=.inf"], r"lr_text=inf .*finite"),
    "nan ratio": ("naive", ["data.accurate_ratio=.nan"], r"data\.accurate_ratio=nan"),
    "ratio above 1": ("naive", ["data.accurate_ratio=1.5"], r"data\.accurate_ratio=1\.5"),
    "zero ema scale": ("lrb", ["stages.joint.ema_time_scale=0"], r"ema_time_scale=0\.0"),
    "tiny image": ("naive", ["data.image_size=0"], r"data\.image_size=0"),
    "negative workers": ("naive", ["data.num_workers=-1"], r"data\.num_workers=-1"),
    "device banana": ("naive", ["train.device=banana"], r"'banana'.*auto, cpu, cuda, cuda:N"),
    "device cuda:x": ("naive", ["train.device=cuda:x"], r"valid forms"),
    "lrb without weak samples": (
        "lrb",
        ["data.accurate_ratio=1.0"],
        r"bank-init .*needs weak samples but data\.accurate_ratio=1\.0 leaves none",
    ),
    "only-accurate without accurate samples": (
        "only-accurate",
        ["data.accurate_ratio=0"],
        r"trains on accurate samples but data\.accurate_ratio=0",
    ),
    "name leaving the output folder": (
        "naive",
        ["name=../../x"],
        r"invalid run name '\.\./\.\./x'",
    ),
    "name with a separator": ("naive", ["name=a/b"], r"invalid run name 'a/b'"),
    "name dot-dot": ("naive", ["name=.."], r"invalid run name '\.\.'"),
    "empty name": ("naive", ["name="], r"invalid run name ''"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_by_build_experiment(case: str) -> None:
    method, sets, pattern = BAD_CONFIGS[case]
    with pytest.raises(ValueError, match=pattern):
        build_experiment(method, assignments=sets)


def test_all_problems_are_listed_at_once() -> None:
    with pytest.raises(ValueError) as info:
        build_experiment("naive", assignments=["train.batch_size=0", "train.log_every=0"])
    assert "train.batch_size=0" in str(info.value) and "train.log_every=0" in str(info.value)


@pytest.mark.parametrize(
    "sets",
    [
        ["stages.bank-init.bank_lr=0", "stages.joint.bank_lr=0"],  # the frozen-bank ablation
        ["train.checkpoint_every=0", "stages.0.optim.lr_backbone=0"],
        ["train.device=cuda:1"],  # a valid form; availability is checked when training
        ["name=run-1.b_2"],
    ],
)
def test_edge_values_that_are_valid(sets: list[str]) -> None:
    build_experiment("lrb", assignments=sets)


def test_a_split_file_decides_the_ratio_checks() -> None:
    """With a split file the stages' sample sets are checked against the file (when
    build_experiment reads it), not against a ratio the file replaces."""
    cfg = build_experiment("lrb")
    cfg.data.accurate_ratio, cfg.data.split_file = 1.0, "refs.p"
    validate_experiment(cfg)
    with pytest.raises(ValueError, match="either a split file"):
        build_experiment("lrb", assignments=["data.accurate_ratio=1.0", "data.split_file=refs.p"])


def test_trainer_validates_edits_made_after_build(tmp_path: Path) -> None:
    from wrel.engine.trainer import Trainer

    cfg = build_experiment("naive", assignments=[f"data.root={tmp_path / 'missing'}"])
    cfg.stages[0].epochs = 0  # as `wrel train --epochs 0` does after building
    with pytest.raises(ValueError, match="epochs=0"):
        Trainer(cfg)
    cfg.stages[0].epochs = 1
    cfg.name = "../escape"
    with pytest.raises(ValueError, match="invalid run name"):
        validate_experiment(cfg)
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("name", ["x/..", "/abs", "a\\b", "tab\there", "a" * 201])
def test_run_names_that_are_not_a_folder_name(name: str) -> None:
    with pytest.raises(ValueError, match="single folder name"):
        check_run_name(name)


@pytest.mark.parametrize("name", ["banana", "cuda:", "cuda:-1", "meta", "cpu:0", ""])
def test_resolve_device_lists_the_valid_forms(name: str) -> None:
    with pytest.raises(ValueError, match=r"auto, cpu, cuda, cuda:N"):
        resolve_device(name)


def test_resolve_device_absent_cuda_index() -> None:
    import torch

    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device(f"cuda:{count + 7}")


# -- YAML -------------------------------------------------------------------------------------

EVIL_YAML = {
    "python object": "train: !!python/object/apply:os.system ['touch {marker}']\n",
    "python name": "train:\n  device: !!python/name:os.system\n",
    "python tuple in a list": "stages:\n- !!python/tuple [1, 2]\n",
}


@pytest.mark.parametrize("case", sorted(EVIL_YAML))
def test_yaml_language_tags_are_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.yaml"
    path.write_text(EVIL_YAML[case].format(marker=marker))
    with pytest.raises(ValueError, match=r"evil\.yaml: unsupported YAML tag .*python"):
        load_yaml(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("a: [1, 2\nb: 3\n", r"bad\.yaml: invalid YAML: .* line 2"),
        ("- just\n- a list\n", r"bad\.yaml: a config file must hold a mapping"),
    ],
)
def test_malformed_yaml_names_the_file(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        load_yaml(path)


def test_non_utf8_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValueError, match=r"latin\.yaml is not UTF-8"):
        load_yaml(path)


def test_set_value_with_a_tag_is_refused() -> None:
    with pytest.raises(ValueError, match=r"--set train\.device: unsupported YAML tag"):
        parse_assignment("train.device=!!python/name:os.system")


# -- CLI: one line, exit codes, --debug ------------------------------------------------------


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


CLI_BAD = {
    "epochs 0": (["--epochs", "0"], r"stages\.naive\.epochs=0"),
    "device banana": (["--device", "banana"], r"'banana'.*valid forms"),
    "name escapes": (["--name", "../../x"], r"invalid run name '\.\./\.\./x'"),
    "negative batch": (["--batch-size", "-2"], r"train\.batch_size=-2"),
    "negative lr": (["--set", "stages.0.optim.lr_head=-1"], r"lr_head=-1"),
}


@pytest.mark.parametrize("case", sorted(CLI_BAD))
def test_cli_config_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    extra, pattern = CLI_BAD[case]
    code, err = _run(
        capsys, "train", "--method", "naive", "--data", str(tmp_path / "nodata"),
        "--output-dir", str(tmp_path / "runs"), *extra,
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrel: error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "x").exists()


def test_cli_lrb_at_ratio_one_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = _run(
        capsys, "train", "--method", "lrb", "--accurate-ratio", "1.0",
        "--data", str(tmp_path), "--output-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert code == 2 and "needs weak samples" in err and not (tmp_path / "runs").exists()


def test_cli_yaml_tag_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.yaml"
    evil.write_text(EVIL_YAML["python object"].format(marker=marker))
    code, err = _run(capsys, "train", "--config", str(evil))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"wrel: error: config file {evil}: unsupported YAML tag" in err
    assert not marker.exists()


@pytest.mark.parametrize("position", ["before", "after"])
def test_cli_debug_prints_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture, position: str
) -> None:
    args = ["train", "--method", "naive", "--device", "banana"]
    argv = ["--debug", *args] if position == "before" else [*args, "--debug"]
    code, err = _run(capsys, *argv)
    assert code == 2
    assert "Traceback (most recent call last)" in err and "in validate_experiment" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("wrel: error: invalid experiment config: train.device: invalid")


def _raising(error: BaseException):
    def train(cfg, *, resume=False):
        raise error

    return train


@pytest.mark.parametrize(
    ("error", "code", "pattern"),
    [
        (FileNotFoundError("data root /nowhere does not exist"), 2, "data root /nowhere"),
        (PermissionError(errno.EACCES, "Permission denied", "/runs"), 2, "Permission denied"),
        (OSError(errno.EIO, "Input/output error"), 1, r"Input/output error"),
        (MemoryError(), 1, "MemoryError"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
    ids=["not-found", "permission", "eio", "memory", "ctrl-c"],
)
def test_cli_runtime_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    error: BaseException,
    code: int,
    pattern: str,
) -> None:
    import wrel.commands.train

    monkeypatch.setattr(wrel.commands.train, "train", _raising(error))
    got, err = _run(capsys, "train", "--method", "naive")
    assert got == code and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("wrel: ") and pattern in err


def test_cli_full_disk_is_a_fault_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import wrel.commands.train
    from wrel.engine.checkpoint import CheckpointWriteError

    folder = tmp_path / "runs" / "naive" / "checkpoints" / "last"
    fault = CheckpointWriteError(folder, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    monkeypatch.setattr(wrel.commands.train, "train", _raising(fault))
    code, err = _run(capsys, "train", "--method", "naive")
    assert code == 1 and err.count("\n") == 1
    assert f"wrel: error: cannot write checkpoint {folder}: No space left on device" in err


def test_cli_unexpected_exceptions_are_one_line_internal_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A bug is one line too (exit 1, named as such); --debug shows its traceback."""
    import wrel.commands.train

    monkeypatch.setattr(wrel.commands.train, "train", _raising(AttributeError("a bug")))
    code, err = _run(capsys, "train", "--method", "naive")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "internal error (AttributeError: a bug)" in err and "--debug" in err
    code, err = _run(capsys, "train", "--method", "naive", "--debug")
    assert code == 1 and "Traceback (most recent call last)" in err
