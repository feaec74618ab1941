"""Resume exactness: a crashed-and-resumed run ends bitwise equal to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wrel.engine.experiment import build_experiment


@pytest.fixture
def make_cfg(tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]):
    def make(name: str, epoch_fraction: float = 1.0):
        return _cfg(tmp_path, tiny_bench, tiny_model_sets, name, epoch_fraction)

    return make


def _cfg(tmp_path: Path, data: Path, model_sets: list[str], name: str, epoch_fraction: float = 1.0):
    cfg = build_experiment(
        "lrb",
        assignments=[
            f"train.output_dir={tmp_path}",
            f"name={name}",
            "train.batch_size=2",
            "train.eval_batch_size=4",
            "train.progress=false",
            "train.checkpoint_every=2",
            "data.image_size=16",
            "data.accurate_ratio=0.5",
            "train.trace_class_names=true",  # its log is truncated on resume like metrics.jsonl
            "train.keep_training_state=true",  # the final resume states are compared
            f"data.root={data}",
            *model_sets,
        ],
    )
    for stage in cfg.stages:
        stage.epochs = 2
        stage.epoch_fraction = epoch_fraction
    return cfg


def _final_state(run: Path) -> dict:
    from wrel.engine.state import load_resume_state

    return load_resume_state(run / "checkpoints" / "last")


def _train_until_killed(cfg, monkeypatch, crash_at: int) -> None:
    """Train ``cfg`` and kill it (KeyboardInterrupt) at its ``crash_at``-th training step."""
    from wrel.engine.trainer import train
    from wrel.methods.base import Stage

    calls = {"n": 0}
    stage_classes = [c for c in Stage.__subclasses__()] + [
        c for sub in Stage.__subclasses__() for c in sub.__subclasses__()
    ]
    originals = {
        c: c.__dict__["training_step"] for c in stage_classes if "training_step" in c.__dict__
    }

    def crashing(original):
        def step(self, batch, progress):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt("simulated kill")
            return original(self, batch, progress)

        return step

    for cls, original in originals.items():
        monkeypatch.setattr(cls, "training_step", crashing(original))
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    for cls, original in originals.items():
        monkeypatch.setattr(cls, "training_step", original)


# mid stage 1; mid stage 3 (after a stage-2 -> 3 resume point); with half epochs (2 + 2 + 4
# steps per epoch instead of 4 + 4 + 8): mid stage 3's first epoch, a resume point inside it
@pytest.mark.parametrize(("crash_at", "fraction"), [(5, 1.0), (16, 1.0), (11, 0.5)])
def test_resume_after_crash_matches_uninterrupted(
    tmp_path: Path, make_cfg, monkeypatch, crash_at, fraction
) -> None:
    from wrel.engine.trainer import train

    reference = train(make_cfg("ref", fraction))
    _train_until_killed(make_cfg("crash", fraction), monkeypatch, crash_at)
    resumed = train(make_cfg("crash", fraction), resume=True)

    assert resumed["test"] == reference["test"]
    # 2 epochs of each stage: 4 + 4 + 8 steps per epoch on 8 accurate / 8 weak refs, batch 2
    steps = [json.loads(x)["step"] for x in (tmp_path / "ref" / "metrics.jsonl").open()]
    assert max(steps) == round(32 * fraction)
    ref_state, res_state = _final_state(tmp_path / "ref"), _final_state(tmp_path / "crash")
    for part in ("model", "teacher", "bank"):
        for key, value in ref_state["stage"][part].items():
            assert torch.equal(value, res_state["stage"][part][key]), f"{part}.{key}"
    ref_log = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    res_log = (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()

    def untimed(lines: list[str]) -> list[dict]:  # each line carries its wall-clock "time"
        records = [json.loads(x) for x in lines]
        assert all("time" in r for r in records)
        return [{k: v for k, v in r.items() if k != "time"} for r in records]

    assert untimed(ref_log) == untimed(res_log)
    ref_trace = (tmp_path / "ref" / "risk_trace.jsonl").read_text().splitlines()
    res_trace = (tmp_path / "crash" / "risk_trace.jsonl").read_text().splitlines()
    assert ref_trace and ref_trace == res_trace


def test_resume_without_checkpoint_or_with_other_config_fails(make_cfg) -> None:
    from wrel.engine.trainer import train

    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(make_cfg("none"), resume=True)
    cfg = make_cfg("done")
    train(cfg)
    cfg.train.seed = 5
    with pytest.raises(ValueError, match="differs"):
        train(cfg, resume=True)


def test_resume_of_a_run_saved_before_keys_were_added(make_cfg) -> None:
    """A config.json written before a key existed (issue 29 added loss_reduction, ema_buffers,
    bank_moments, bank_select, best_per_metric and the square cut-out keys) reads those keys
    as their defaults, which is what that run trained with: --resume accepts it."""
    from wrel.engine.trainer import train

    cfg = make_cfg("older")
    train(cfg)
    path = Path(cfg.train.output_dir) / "older" / "config.json"
    saved = json.loads(path.read_text())
    del saved["train"]["best_per_metric"], saved["data"]["cutout"]
    for stage in saved["stages"]:
        stage.pop("loss_reduction")
        stage.pop("ema_buffers", None)
        stage.pop("bank_select", None)
    path.write_text(json.dumps(saved))
    assert "test" in train(cfg, resume=True)
    cfg.stages[2].ema_buffers = "skip"  # a value other than the default is still a difference
    with pytest.raises(ValueError, match="differs"):
        train(cfg, resume=True)


def _drop_elapsed(folder: Path) -> None:
    """Make a resume state look saved before ``loop.elapsed_s`` existed (manifest re-sealed)."""
    from wrel.engine.checkpoint import file_record

    path = folder / "state.json"
    skeleton = json.loads(path.read_text())
    loop = dict(skeleton["__dict__"])["loop"]["__dict__"]
    loop[:] = [pair for pair in loop if pair[0] != "elapsed_s"]
    path.write_text(json.dumps(skeleton))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.json"] = file_record(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_resumed_run_counts_the_time_of_every_process(
    tmp_path: Path, make_cfg, monkeypatch
) -> None:
    """A killed and resumed run reports its training time over both processes (the killed one
    up to its last checkpoint); one resumed from a state older than that count says unknown."""
    import shutil
    import time

    from wrel.core.config_io import dumps
    from wrel.engine.trainer import train

    _train_until_killed(make_cfg("crash"), monkeypatch, 16)
    before = _final_state(tmp_path / "crash")["loop"]["elapsed_s"]
    assert isinstance(before, float) and before > 0  # the killed process's time, saved
    shutil.copytree(tmp_path / "crash", tmp_path / "older")
    (tmp_path / "older" / "config.json").write_text(dumps(make_cfg("older")))
    for name in ("last", "last.prev"):
        if (tmp_path / "older" / "checkpoints" / name).is_dir():
            _drop_elapsed(tmp_path / "older" / "checkpoints" / name)

    start = time.monotonic()
    resumed = train(make_cfg("crash"), resume=True)
    took = time.monotonic() - start
    assert before < resumed["wall_time_s"] <= before + took  # both processes, nothing twice
    saved = json.loads((tmp_path / "crash" / "final_metrics.json").read_text())
    assert saved["wall_time_s"] == resumed["wall_time_s"]
    # a never-stopped run counts itself from its start
    start = time.monotonic()
    whole = train(make_cfg("whole"))
    assert 0 < whole["wall_time_s"] <= time.monotonic() - start
    # part of the run predates the count: unknown, not the resumed part alone
    assert train(make_cfg("older"), resume=True)["wall_time_s"] is None
