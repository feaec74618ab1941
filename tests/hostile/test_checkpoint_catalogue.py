"""Hostile checkpoints: damaged, stuck, hand-edited or unwritable; each case fails clearly.

Resume checkpoints (``checkpoints/last`` + ``last.prev``), exported model folders
(``checkpoints/best``) and the run folder checks of the trainer. Every case is small: unit
states of a few tensors, the tiny model, and one tiny end-to-end run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wrel.engine.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    config_seal,
    file_record,
    load_model,
    load_tensors,
    save_model,
    save_tensors,
)
from wrel.engine.experiment import build_experiment
from wrel.engine.state import load_resume_state, read_resume_state, save_resume_state
from wrel.models import ModelConfig, build_model


def _state(step: int) -> dict:
    torch.manual_seed(step)
    return {
        "loop": {"global_step": step},
        "stage": {"w": torch.randn(64, 8), "opt": {0: {"step": torch.tensor(float(step))}}},
        "rng": {"torch": torch.get_rng_state()},
    }


def _step(state: dict) -> int:
    return int(state["loop"]["global_step"])


@pytest.fixture
def two_saves(tmp_path: Path) -> Path:
    """``checkpoints/last`` (step 2) and ``checkpoints/last.prev`` (step 1)."""
    last = tmp_path / "checkpoints" / "last"
    save_resume_state(last, _state(1))
    save_resume_state(last, _state(2))
    return last


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- resume checkpoints: layout and rotation ------------------------------------------------


def test_rotation_keeps_one_previous_checkpoint_with_manifests(two_saves: Path) -> None:
    folder = two_saves.parent
    assert sorted(p.name for p in folder.iterdir()) == ["last", "last.prev"]
    for name, step in (("last", 2), ("last.prev", 1)):
        manifest = json.loads((folder / name / "manifest.json").read_text())
        assert set(manifest["files"]) == {"tensors.safetensors", "state.json"}
        assert manifest["files"]["tensors.safetensors"] == file_record(
            folder / name / "tensors.safetensors"
        )
        assert _step(load_resume_state(folder / name)) == step
    save_resume_state(two_saves, _state(3))  # the oldest one goes, no temporaries stay
    assert sorted(p.name for p in folder.iterdir()) == ["last", "last.prev"]
    assert _step(load_resume_state(folder / "last.prev")) == 2
    state, source = read_resume_state(two_saves)
    assert _step(state) == 3 and source == two_saves
    assert torch.equal(state["stage"]["w"], _state(3)["stage"]["w"])
    assert state["stage"]["opt"] == {0: {"step": torch.tensor(3.0)}}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # inside the tensor data: the file still parses
    path.write_bytes(bytes(raw))


def _flip_json_digit(path: Path) -> None:
    text = path.read_text()
    path.write_text(text.replace("global_step", "global_stop"))  # still valid JSON


DAMAGES = {
    "tensors truncated": ("tensors.safetensors", _truncate),
    "tensors bit-flipped": ("tensors.safetensors", _flip_last_byte),
    "tensors deleted": ("tensors.safetensors", lambda p: p.unlink()),
    "state.json edited": ("state.json", _flip_json_digit),
    "state.json not JSON": ("state.json", lambda p: p.write_text("{oops")),
    "state.json deleted": ("state.json", lambda p: p.unlink()),
    "manifest not JSON": ("manifest.json", lambda p: p.write_text("[1,")),
    "manifest hash edited": (
        "manifest.json",
        lambda p: p.write_text(p.read_text().replace('"sha256": "', '"sha256": "0', 1)),
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_last_falls_back_to_prev_with_a_warning(
    two_saves: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, harm = DAMAGES[damage]
    harm(two_saves / name)
    with caplog.at_level(logging.WARNING, logger="wrel.engine.state"):
        state, source = read_resume_state(two_saves)
    assert _step(state) == 1 and source.name == "last.prev"  # never the damaged step 2
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "unusable" in warnings and str(two_saves) in warnings and "previous" in warnings


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_last_without_fallback_names_the_file(two_saves: Path, damage: str) -> None:
    import shutil

    shutil.rmtree(two_saves.with_name("last.prev"))
    name, harm = DAMAGES[damage]
    harm(two_saves / name)
    with pytest.raises(CheckpointError) as info:
        load_resume_state(two_saves)
    message = str(info.value)
    assert str(two_saves / name) in message or (
        name == "manifest.json" and str(two_saves) in message
    ), message
    assert "Delete" in message and isinstance(info.value, ValueError)  # never SafetensorError


def test_both_damaged_lists_both_and_never_leaks_a_safetensor_error(two_saves: Path) -> None:
    for folder in (two_saves, two_saves.with_name("last.prev")):
        _truncate(folder / "tensors.safetensors")
        (folder / "manifest.json").unlink()  # as written by an older wrel: no checksum
    with pytest.raises(CheckpointError) as info:
        load_resume_state(two_saves)
    message = str(info.value)
    assert "last/tensors.safetensors" in message and "last.prev/tensors.safetensors" in message
    assert "truncated or corrupt" in message


def test_kill_between_the_renames_resumes_from_prev(two_saves: Path) -> None:
    os.replace(two_saves, two_saves.with_name(".last.tmp-999999"))  # as if killed mid-rotation
    state, source = read_resume_state(two_saves)
    assert _step(state) == 1 and source.name == "last.prev"


def test_no_checkpoint_at_all_is_file_not_found(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / ".last.tmp-1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no resume checkpoint"):
        load_resume_state(tmp_path / "checkpoints" / "last")


# -- full or read-only disk -------------------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["tensors", "fsync", "rename"])
def test_full_disk_during_a_resume_save_keeps_the_previous(
    two_saves: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import safetensors.torch

    if where == "tensors":
        monkeypatch.setattr(safetensors.torch, "save_file", _enospc)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", _enospc)
    else:  # the first rename of the rotation
        monkeypatch.setattr(os, "replace", _enospc)
    with pytest.raises(CheckpointWriteError) as info:
        save_resume_state(two_saves, _state(3))
    monkeypatch.undo()
    message = str(info.value)
    assert str(two_saves) in message and "No space left on device" in message
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert sorted(p.name for p in two_saves.parent.iterdir()) == ["last", "last.prev"]
    assert _step(load_resume_state(two_saves)) == 2


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores chmod")
def test_read_only_folder_gives_a_clear_error_chmod(two_saves: Path) -> None:
    folder = two_saves.parent
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointWriteError, match="Permission denied") as info:
            save_resume_state(two_saves, _state(3))
        assert str(two_saves) in str(info.value)
    finally:
        folder.chmod(0o755)
    assert _step(load_resume_state(two_saves)) == 2


def test_read_only_file_system_gives_a_clear_error(
    two_saves: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What root (whom chmod does not stop) sees on a read-only mount."""

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]))

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(CheckpointWriteError, match="Read-only file system") as info:
        save_resume_state(two_saves, _state(3))
    monkeypatch.undo()
    assert str(info.value).startswith(f"cannot write checkpoint {two_saves}: ")
    assert sorted(p.name for p in two_saves.parent.iterdir()) == ["last", "last.prev"]
    assert _step(load_resume_state(two_saves)) == 2


# -- exported model folders -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny()).eval()


@pytest.fixture
def best(tmp_path: Path, tiny_model) -> Path:
    return save_model(tmp_path / "best", tiny_model, {"method": "naive"})


def _edit_config(folder: Path, edit) -> None:
    """A deliberate edit: the config's seal is recomputed, so the later checks are reached."""
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    data["config_sha256"] = config_seal(data)
    (folder / "config.json").write_text(json.dumps(data))


def _rewrite_weights(folder: Path, edit) -> None:
    """Change the weights and their recorded checksum (a deliberate edit)."""
    tensors = load_tensors(folder / "model.safetensors")
    edit(tensors)
    save_tensors(folder / "model.safetensors", tensors)
    _edit_config(folder, lambda d: d["files"].update(
        {"model.safetensors": file_record(folder / "model.safetensors")}
    ))  # fmt: skip


def test_huge_config_is_refused_before_anything_is_allocated(
    best: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrel.engine.checkpoint

    devices = []
    original = wrel.engine.checkpoint.build_model

    def spy(cfg):
        devices.append(torch.get_default_device().type)
        return original(cfg)

    monkeypatch.setattr(wrel.engine.checkpoint, "build_model", spy)
    _edit_config(best, lambda d: d["model"]["decoder"].update(dim=200000))  # ~2.9 TB of weights
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="refused before building the model.*decoder"):
        load_model(best)
    assert devices == ["meta"]  # only the shape skeleton was built
    assert time.perf_counter() - start < 30


def _nan(t: dict) -> None:
    t["decoder.classifier.weight"][0, 0] = float("nan")


def _inf(t: dict) -> None:
    t["decoder.classifier.bias"][-1] = float("-inf")


@pytest.mark.parametrize("poison", [_nan, _inf], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_naming_file_and_tensor(best: Path, poison) -> None:
    tensors = load_tensors(best / "model.safetensors")
    poison(tensors)
    bad = next(k for k, v in tensors.items() if not torch.isfinite(v).all())
    _rewrite_weights(best, poison)
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        load_model(best)
    assert str(best / "model.safetensors") in str(info.value) and repr(bad) in str(info.value)


MODEL_DAMAGES = {
    "weights bit-flipped": (
        lambda f: _flip_last_byte(f / "model.safetensors"),
        CheckpointError,
        r"model\.safetensors is corrupt: its SHA-256",
    ),
    "weights truncated": (
        lambda f: _truncate(f / "model.safetensors"),
        CheckpointError,
        r"model\.safetensors has \d+ bytes but .*config\.json records",
    ),
    "weights deleted": (
        lambda f: (f / "model.safetensors").unlink(),
        CheckpointError,
        r"model\.safetensors is missing",
    ),
    "tokenizer edited": (
        lambda f: (f / "text_encoder" / "tokenizer.json").write_text("{}"),
        CheckpointError,
        r"text_encoder/tokenizer.json has \d+ bytes",
    ),
    "text encoder folder deleted": (
        lambda f: __import__("shutil").rmtree(f / "text_encoder"),
        FileNotFoundError,
        r"lacks its text encoder folder .*text_encoder",
    ),
    "config not JSON": (
        lambda f: (f / "config.json").write_text("{"),
        CheckpointError,
        r"config\.json is not valid JSON",
    ),
    "manifest escapes the folder": (
        lambda f: _edit_config(f, lambda d: d["files"].update({"../x": {"sha256": "0"}})),
        CheckpointError,
        r"leaves the checkpoint folder",
    ),
    "config with an unknown key": (
        lambda f: _edit_config(f, lambda d: d["model"]["decoder"].update(depth=3)),
        CheckpointError,
        r"config\.json: unknown config key",
    ),
}


@pytest.mark.parametrize("damage", sorted(MODEL_DAMAGES))
def test_damaged_model_folder_names_the_file(best: Path, damage: str) -> None:
    harm, error, pattern = MODEL_DAMAGES[damage]
    harm(best)
    with pytest.raises(error, match=pattern) as info:
        load_model(best)
    assert "huggingface.co" not in str(info.value) and str(best) in str(info.value)


def test_export_without_checksums_still_loads(best: Path) -> None:
    _edit_config(best, lambda d: d.pop("files"))  # as written before checksums existed
    model, metadata = load_model(best)
    assert metadata["method"] == "naive" and not model.training


def test_full_disk_during_export_keeps_the_previous_model(
    best: Path, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    before = (best / "config.json").read_text()
    monkeypatch.setattr(safetensors.torch, "save_file", _enospc)
    with pytest.raises(CheckpointWriteError, match="No space left on device") as info:
        save_model(best, tiny_model, {"method": "lrb"})
    monkeypatch.undo()
    assert str(best) in str(info.value)
    assert [p.name for p in best.parent.iterdir()] == ["best"]  # no temporaries left
    assert (best / "config.json").read_text() == before
    assert load_model(best)[1]["method"] == "naive"


# -- the run folder (trainer) -----------------------------------------------------------------


@pytest.fixture
def make_cfg(tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]):
    def make(name: str = "run", *extra: str):
        cfg = build_experiment(
            "only-accurate",
            assignments=[
                f"train.output_dir={tmp_path / 'runs'}",
                f"name={name}",
                "train.batch_size=4",
                "train.eval_batch_size=4",
                "train.progress=false",
                "data.image_size=16",
                f"data.root={tiny_bench}",
                *tiny_model_sets,
                *extra,
            ],
        )
        cfg.stages[0].epochs = 1
        return cfg

    return make


def _killed_in_first_save(run: Path, cfg, pid: int) -> Path:
    """The run folder a SIGKILL during the first checkpoint write leaves behind."""
    from wrel.core.config_io import dumps

    tmp = run / "checkpoints" / f".last.tmp-{pid}"
    tmp.mkdir(parents=True)
    (tmp / "tensors.safetensors").write_bytes(b"\x08\x00\x00")  # cut short
    (run / "config.json").write_text(dumps(cfg))
    (run / "metrics.jsonl").write_text('{"event": "train", "step": 1}\n{"event": "tr')
    return tmp


@pytest.mark.parametrize("resume", [False, True], ids=["restart", "resume"])
def test_run_killed_in_its_first_save_restarts_cleanly(
    make_cfg, resume: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from wrel.engine.trainer import Trainer

    cfg = make_cfg()
    trainer = Trainer(cfg, resume=resume)
    tmp = _killed_in_first_save(trainer.run_dir, cfg, _dead_pid())
    with caplog.at_level(logging.WARNING):
        assert trainer._prepare_run_dir() is None  # from the beginning
    assert not tmp.exists()
    assert (trainer.run_dir / "metrics.jsonl").read_text() == ""
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "left behind by an interrupted checkpoint write" in text
    assert "starting" in text and "from the beginning" in text


def test_temporary_of_a_live_writer_is_refused(make_cfg) -> None:
    from wrel.engine.trainer import Trainer

    cfg = make_cfg()
    trainer = Trainer(cfg)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _killed_in_first_save(trainer.run_dir, cfg, live.pid)
        with pytest.raises(ValueError, match=f"process {live.pid}, which is still running"):
            trainer._prepare_run_dir()
    finally:
        live.kill()
        live.wait()


def test_broken_run_config_is_named_on_resume(make_cfg) -> None:
    from wrel.engine.trainer import Trainer

    trainer = Trainer(make_cfg(), resume=True)
    trainer.run_dir.mkdir(parents=True)
    (trainer.run_dir / "config.json").write_text("{half")
    with pytest.raises(ValueError, match=r"config\.json is not a wrel run config"):
        trainer._prepare_run_dir()


def test_kill_in_first_save_then_restart_end_to_end(
    make_cfg, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Real runs: interrupted in the first checkpoint write (the export of ``best``), started
    again without --resume; a finished run then refuses a plain restart and a resume."""
    import safetensors.torch

    from wrel.engine.trainer import train

    cfg = make_cfg("e2e")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the first checkpoint")

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    ckpts = Path(cfg.train.output_dir) / "e2e" / "checkpoints"
    assert list(ckpts.iterdir()) == []  # the interrupted writer removed its temporary
    stale = ckpts / f".best.tmp-{_dead_pid()}-x"  # what a SIGKILL would have left
    stale.mkdir()
    with caplog.at_level(logging.WARNING, logger="wrel.engine.trainer"):
        result = train(cfg)
    assert "holds no complete checkpoint" in caplog.text and not stale.exists()
    assert "test" in result and sorted(p.name for p in ckpts.iterdir()) == ["best"]
    with pytest.raises(ValueError, match="already has checkpoints; pass --resume"):
        train(cfg)
    # its training state was removed at the end: --resume names the finished run
    with pytest.raises(ValueError, match="is a finished run .* nothing to resume"):
        train(cfg, resume=True)


def _loop_state(step: int) -> dict:
    from dataclasses import asdict

    from wrel.engine.trainer import LoopState

    return {"loop": asdict(LoopState(global_step=step)), "stage": {}, "rng": {}}


def test_resume_from_prev_then_first_save_sets_the_damaged_last_aside(
    make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from wrel.core.config_io import dumps
    from wrel.engine.trainer import LoopState, Trainer

    cfg = make_cfg()
    trainer = Trainer(cfg, resume=True)
    trainer.run_dir.mkdir(parents=True)
    (trainer.run_dir / "config.json").write_text(dumps(cfg))
    log_lines = [{"event": "train", "step": s} for s in (1, 2, 3)]
    (trainer.run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log_lines))
    last = trainer.ckpt_dir / "last"
    save_resume_state(last, _loop_state(2))
    save_resume_state(last, _loop_state(3))
    _flip_last_byte(last / "tensors.safetensors")
    with caplog.at_level(logging.WARNING):
        state = trainer._prepare_run_dir()
    assert state is not None and state["loop"]["global_step"] == 2
    assert "previous checkpoint" in caplog.text
    steps = [json.loads(x)["step"] for x in (trainer.run_dir / "metrics.jsonl").open()]
    assert steps == [1, 2]  # the log is cut back to the checkpoint resumed from
    names = lambda: sorted(p.name for p in trainer.ckpt_dir.iterdir())  # noqa: E731
    assert names() == ["last", "last.prev"]  # loading changes nothing on disk
    stage = SimpleNamespace(state_dict=lambda: {})
    trainer._save_state(stage, LoopState(global_step=3))  # the first save after the fallback
    assert names() == ["last", "last.damaged", "last.prev"] and "last.damaged" in caplog.text
    assert _step_of(last.with_name("last.prev")) == 2 and _step_of(last) == 3
    trainer._save_state(stage, LoopState(global_step=4))  # then the usual rotation
    assert _step_of(last.with_name("last.prev")) == 3 and _step_of(last) == 4


def test_resume_state_of_another_layout_is_named(make_cfg) -> None:
    from wrel.core.config_io import dumps
    from wrel.engine.trainer import Trainer

    cfg = make_cfg()
    trainer = Trainer(cfg, resume=True)
    trainer.run_dir.mkdir(parents=True)
    (trainer.run_dir / "config.json").write_text(dumps(cfg))
    save_resume_state(trainer.ckpt_dir / "last", {"loop": {"step": 1}, "stage": {}, "rng": {}})
    with pytest.raises(CheckpointError, match="last is not a wrel resume checkpoint"):
        trainer._prepare_run_dir()


def _step_of(last: Path) -> int:
    return int(load_resume_state(last)["loop"]["global_step"])


# -- a file where a folder is expected -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["eval", "{file}", "--data", "{tmp}"], "checkpoint folder"),
        (["bank", "decode", "{file}"], "run folder"),
    ],
    ids=["eval", "bank-decode"],
)
def test_a_file_given_for_a_folder_is_named_as_such(
    tmp_path: Path, argv: list[str], what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 (a usage error) and "is a file, not a folder", not "does not exist"."""
    from wrel.cli import main

    file = tmp_path / "model.safetensors"
    file.write_bytes(b"not a folder")
    assert main([a.format(file=file, tmp=tmp_path) for a in argv]) == 2
    assert f"{what} {file} is a file, not a folder" in capsys.readouterr().err


def test_require_folder_tells_missing_from_not_a_folder(tmp_path: Path) -> None:
    from wrel.core.paths import require_folder

    assert require_folder(tmp_path, "run folder") == tmp_path
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"run folder .*f is a file, not a folder; hint"):
        require_folder(file, "run folder", "hint")
    with pytest.raises(FileNotFoundError, match=r"run folder .*nope does not exist$"):
        require_folder(tmp_path / "nope", "run folder")
    from wrel.inference import Predictor

    with pytest.raises(NotADirectoryError, match="checkpoint folder .* is a file"):
        Predictor.from_checkpoint(file)
