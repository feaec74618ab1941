"""End-to-end tests of the one training loop (tiny model, tiny data, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wrel.engine.experiment import build_experiment


@pytest.fixture
def tiny_experiment(tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]):
    def make(method: str, *extra: str):
        return _tiny_experiment(tmp_path, tiny_bench, tiny_model_sets, method, *extra)

    return make


def _tiny_experiment(tmp_path: Path, data: Path, model_sets: list[str], method: str, *extra: str):
    sets = [
        f"train.output_dir={tmp_path / 'runs'}",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.progress=false",
        "train.log_every=1",
        "data.image_size=16",
        f"data.root={data}",
        *model_sets,
        *extra,
    ]
    cfg = build_experiment(method, assignments=sets)
    for stage in cfg.stages:
        stage.epochs = 1
    return cfg


@pytest.mark.parametrize("method", ["only-accurate", "naive", "full", "lrb"])
def test_train_end_to_end_every_method(tiny_experiment, method: str) -> None:
    from wrel.engine.trainer import train

    result = train(tiny_experiment(method))
    run = Path(result["run_dir"])
    assert 0.0 <= result["test"]["mIoU"] <= 100.0
    assert json.loads((run / "final_metrics.json").read_text())["test"] == result["test"]
    assert json.loads((run / "config.json").read_text())["method"] == method
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(x["event"] == "train" for x in lines) and any(x["event"] == "val" for x in lines)
    # a finished run keeps the best model, not the training state (train.keep_training_state)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best"]
    assert (run / "bank.safetensors").is_file() == (method == "lrb")


def test_class_name_trace_leaves_training_unchanged(tiny_experiment) -> None:
    """train.trace_class_names logs every visited checkpoint's paired val losses, nothing else."""
    from wrel.engine.checkpoint import load_model
    from wrel.engine.trainer import train

    plain = Path(train(tiny_experiment("lrb", "name=plain"))["run_dir"])
    traced = Path(
        train(tiny_experiment("lrb", "name=traced", "train.trace_class_names=true"))["run_dir"]
    )
    a, _ = load_model(plain / "checkpoints" / "best")
    b, _ = load_model(traced / "checkpoints" / "best")
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert not (plain / "risk_trace.jsonl").exists()
    vals = [json.loads(x) for x in (traced / "metrics.jsonl").read_text().splitlines()]
    vals = [x for x in vals if x["event"] == "val"]
    trace = [json.loads(x) for x in (traced / "risk_trace.jsonl").read_text().splitlines()]
    assert len(trace) == len(vals) >= 2  # teacher warm-up and joint stage
    for line, val in zip(trace, vals, strict=True):
        assert (line["stage"], line["step"]) == (val["stage"], val["step"])
        n = len(line["sample_ids"])
        assert n == val["num_samples"] == len(line["loss"]) == len(line["loss_class_name"])
        # the accurate losses are exactly the evaluation's: risk = 1 - mIoU
        assert line["risk"] == pytest.approx(1 - val["mIoU"] / 100, abs=1e-9)
        assert line["risk_class_name"] == pytest.approx(1 - val["class_name"]["mIoU"] / 100)
        assert all(0.0 <= x <= 1.0 for x in line["loss"] + line["loss_class_name"])


def test_unknown_config_key_and_method_fail(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config key"):
        build_experiment("naive", assignments=["train.batch_szie=4"])
    with pytest.raises(ValueError, match="valid methods"):
        build_experiment("nope")
    full = build_experiment("full", base={"data": {"accurate_ratio": 0.1}})
    assert full.data.accurate_ratio == 1.0
    assert [s.kind for s in build_experiment("lrb").stages] == ["supervised", "bank_init", "joint"]


def test_stage_overrides_by_name_or_index() -> None:
    cfg = build_experiment(
        "lrb", assignments=["stages.joint.bank_lr=0", "stages.0.optim.lr_head=2e-3"]
    )
    assert cfg.stages[2].bank_lr == 0.0 and cfg.stages[1].bank_lr == 1e-2  # type: ignore[attr-defined]
    assert cfg.stages[0].optim.lr_head == 2e-3 and cfg.stages[2].optim.lr_head != 2e-3
    with pytest.raises(ValueError, match="no stage 'nope'.*teacher-warmup"):
        build_experiment("lrb", assignments=["stages.nope.bank_lr=1"])
    with pytest.raises(ValueError, match="unknown config key"):
        build_experiment("lrb", assignments=["stages.joint.bank_lrr=1"])
    with pytest.raises(ValueError, match="bad stage override"):
        build_experiment("lrb", assignments=["stages.joint=1"])


def test_non_finite_loss_stops_and_keeps_checkpoint(
    tmp_path: Path, tiny_experiment, monkeypatch
) -> None:
    from wrel.engine.trainer import train
    from wrel.methods.base import NonFiniteLossError
    from wrel.methods.supervised import SupervisedStage

    cfg = tiny_experiment("naive", "train.checkpoint_every=1")
    cfg.stages[0].epochs = 2
    original = SupervisedStage.training_step
    calls = {"n": 0}

    def poisoned(self, batch, progress):
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                next(self.model.decoder.parameters()).fill_(float("nan"))
        return original(self, batch, progress)

    monkeypatch.setattr(SupervisedStage, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(cfg)
    run = tmp_path / "runs" / cfg.name
    from wrel.engine.state import load_resume_state

    state = load_resume_state(run / "checkpoints" / "last")
    assert state["loop"]["global_step"] == 3  # the last good step; the poisoned one never saved
    assert all(torch.isfinite(v).all() for v in state["stage"]["model"].values())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "error"


def test_existing_run_requires_resume(tiny_experiment) -> None:
    from wrel.engine.trainer import train

    cfg = tiny_experiment("only-accurate")
    train(cfg)
    with pytest.raises(ValueError, match="--resume"):
        train(cfg)


def test_cli_train_then_eval(tmp_path: Path, tiny_bench: Path, tiny_model_sets, capsys) -> None:
    from wrel.cli import main

    rc = main(
        [
            "train",
            "--method",
            "naive",
            "--data",
            str(tiny_bench),
            "--epochs",
            "1",
            "--output-dir",
            str(tmp_path / "runs"),
            "--batch-size",
            "4",
            "--name",
            "cli",
            "--set",
            "data.image_size=16",
            "--set",
            "train.progress=false",
            *[x for kv in tiny_model_sets for x in ("--set", kv)],
            "--json",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    best = Path(result["run_dir"]) / "checkpoints" / "best"
    assert main(["eval", str(best), "--data", str(tiny_bench), "--json", "--device", "cpu"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["metrics"]["mIoU"] == pytest.approx(result["test"]["mIoU"])
    assert main(["train", "--method", "naive", "--set", "train.nope=1"]) == 2


def test_val_every_steps_and_plain_progress_lines(
    tiny_experiment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Mid-epoch val points every N steps; progress as plain lines when not on a terminal."""
    from wrel.engine.trainer import train

    monkeypatch.setenv("WREL_PROGRESS", "lines")
    monkeypatch.setenv("WREL_PROGRESS_INTERVAL", "0")
    cfg = tiny_experiment("naive", "train.progress=true", "train.val_every_steps=2")
    result = train(cfg)
    lines = [json.loads(x) for x in (Path(result["run_dir"]) / "metrics.jsonl").open()]
    steps = max(x["step"] for x in lines if x["event"] == "train")
    val_steps = [x["step"] for x in lines if x["event"] == "val"]
    assert val_steps == sorted(set(range(2, steps + 1, 2)) | {steps})
    err = capsys.readouterr().err
    assert "[wrel] naive epoch 1/1:" in err and f"{steps}/{steps} (100%)" in err
    assert "[wrel] val naive" in err
