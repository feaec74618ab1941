"""A finished run folder fits a laptop (best model, compact bank, config, logs, metrics; no
training state) and every command that reads a run works from it: eval, predict, serve, bank
decode; the size script reports it by part. Plus the optional TensorBoard event files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from wrel.cli import main
from wrel.methods.bank import BankConfig, ReferenceBank


def _train(out: Path, data: Path, model_sets: list[str], method: str, *extra: str) -> Path:
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train

    cfg = build_experiment(
        method,
        assignments=[
            f"train.output_dir={out}",
            f"data.root={data}",
            "data.image_size=16",
            "data.accurate_ratio=0.5",
            "train.batch_size=4",
            "train.eval_batch_size=4",
            "train.progress=false",
            "train.log_every=1",
            *model_sets,
            *extra,
        ],
    )
    for stage in cfg.stages:
        stage.epochs = 1
    return Path(train(cfg)["run_dir"])


@pytest.fixture(scope="module")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_bench: Path, tiny_model_sets: list[str]
) -> Path:
    """A finished tiny LRB-WREL run with the default storage settings."""
    return _train(tmp_path_factory.mktemp("finished"), tiny_bench, tiny_model_sets, "lrb")


def test_a_finished_run_keeps_the_best_model_and_a_compact_bank(finished_run: Path) -> None:
    from safetensors import safe_open

    names = sorted(p.name for p in finished_run.iterdir())
    assert names == [
        "bank.safetensors",
        "checkpoints",
        "config.json",
        "final_metrics.json",
        "metrics.jsonl",
        "paths.json",
    ]
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == ["best"]
    with safe_open(str(finished_run / "bank.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
        rows = handle.get_slice("rows")
        num, slots, dim = rows.get_shape()
        assert str(rows.get_dtype()) == "F16"
        assert handle.metadata()["moments"] == "none"
    assert keys == {"ids", "rows", "steps"}  # no AdamW moments
    size = (finished_run / "bank.safetensors").stat().st_size
    # half-precision rows + an id and a step count per row + the header
    assert size <= num * (slots * dim * 2 + 16) + 4096
    bank = ReferenceBank.load(finished_run / "bank.safetensors")
    assert bank.rows.dtype == torch.float32 and bank.num_rows == num
    assert not bank.exp_avg.any() and not bank.exp_avg_sq.any()


def test_eval_predict_serve_and_bank_decode_work_from_a_finished_run(
    finished_run: Path,
    tiny_bench: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    best = str(finished_run / "checkpoints" / "best")
    assert main(["eval", best, "--data", str(tiny_bench), "--device", "cpu", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["metrics"]
    final = json.loads((finished_run / "final_metrics.json").read_text())["test"]
    assert scored["mIoU"] == pytest.approx(final["mIoU"])  # the run's own test score

    image = tmp_path / "scene.png"
    pixels = np.random.default_rng(0).integers(0, 255, (24, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    mask = tmp_path / "mask.png"
    assert main(["predict", best, str(image), "the ship", "--out", str(mask)]) == 0
    assert Image.open(mask).size == (30, 24)

    served: dict[str, Any] = {}

    class _Server:  # stands in for the HTTP server: serve_forever returns at once
        def __init__(self, app: Any, host: str, port: int) -> None:
            served["app"] = app
            self.url = f"http://{host}:{port}/"

        def serve_forever(self) -> None:
            served["served"] = True

        def server_close(self) -> None:
            pass

    monkeypatch.setattr("wrel.commands.serve.DemoServer", _Server)
    assert main(["serve", "--checkpoint", best, "--device", "cpu"]) == 0
    assert served["served"]
    probs = served["app"].predictor.predict(pixels, "the ship", return_probs=True)
    assert probs.shape == (24, 30) and np.isfinite(probs).all()

    report = tmp_path / "decode.json"
    args = ["bank", "decode", str(finished_run), "--k", "2", "--show", "0", "--out", str(report)]
    assert main([*args, "--data", str(tiny_bench)]) == 0
    decoded = json.loads(report.read_text())
    rows = ReferenceBank.load(finished_run / "bank.safetensors").num_rows
    assert decoded["num_rows"] == rows == len(decoded["samples"])


def test_the_size_script_reports_a_finished_run_by_part(
    finished_run: Path,
    benchmark_script: Callable[[str], ModuleType],
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = benchmark_script("run_folder_size")
    report = script.measure(finished_run)
    assert set(report["parts"]) == {
        "checkpoints/best",
        "bank.safetensors",
        "other (config, logs, metrics)",
    }
    assert report["total"] == sum(report["parts"].values()) > 0
    assert report["bank"]["moments"] is False and report["bank"]["rows_dtype"] == "F16"
    assert script.main([str(finished_run)]) == 0
    printed = capsys.readouterr().out
    assert "checkpoints/best" in printed and "per weak sample" in printed
    assert script.main([str(finished_run / "checkpoints")]) == 2  # not a run folder


def test_compact_bank_round_trip_and_out_of_range_rows(tmp_path: Path) -> None:
    bank = ReferenceBank(list(range(0, 400, 2)), 32, BankConfig(num_prompts=4))
    rows = torch.tensor([0, 2, 150])
    bank.apply_gradients(rows, torch.randn(3, 4, 32), 3, lr=0.1, weight_decay=0.0)
    bank.save(tmp_path / "full.safetensors")
    bank.save(tmp_path / "compact.safetensors", compact=True)
    full = ReferenceBank.load(tmp_path / "full.safetensors")
    compact = ReferenceBank.load(tmp_path / "compact.safetensors")
    assert torch.equal(full.rows, bank.rows) and torch.equal(full.exp_avg, bank.exp_avg)
    assert torch.equal(compact.rows, bank.rows.half().float())
    assert torch.equal(compact.steps, bank.steps) and torch.equal(compact.ids, bank.ids)
    assert not compact.exp_avg.any() and bank.exp_avg.any()
    # rows + two moments in float32 -> rows in float16: a sixth, plus ids and step counts
    full_size = (tmp_path / "full.safetensors").stat().st_size
    assert (tmp_path / "compact.safetensors").stat().st_size < full_size / 5
    bank.rows[0, 0, 0] = 1e6  # beyond float16: that tensor stays float32
    bank.save(tmp_path / "wide.safetensors", compact=True)
    assert ReferenceBank.load(tmp_path / "wide.safetensors").rows[0, 0, 0] == 1e6
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compact.safetensors",
        "full.safetensors",
        "wide.safetensors",
    ]  # no temporaries


def test_tensorboard_event_files_hold_the_val_curve(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(
        tmp_path,
        tiny_bench,
        tiny_model_sets,
        "lrb",
        "train.tensorboard=true",
        "train.val_every_steps=1",  # a val curve of several points
    )
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    val = [(r["step"], r["mIoU"]) for r in records if r["event"] == "val"]
    assert len(val) >= 3
    logged = [(e.step, e.value) for e in events.Scalars("val/mIoU")]
    assert [s for s, _ in logged] == [s for s, _ in val]
    assert np.allclose([v for _, v in logged], [v for _, v in val])
    assert {"val/oIoU", "train/loss", "leakage/mIoU_bank"} <= tags, sorted(tags)


def test_tensorboard_without_the_package_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_sets: list[str]
) -> None:
    import importlib.util

    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import Trainer

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    cfg = build_experiment(
        "naive", assignments=[f"train.output_dir={tmp_path}", "train.tensorboard=true"]
    )
    with pytest.raises(ValueError, match=r"pip install 'wrel\[tensorboard\]'") as err:
        Trainer(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / cfg.name).exists()  # refused before anything is written


@pytest.mark.parametrize("keep_stage_ends", [False, True])
def test_remove_training_state_leaves_the_best_model_and_what_the_runner_asked_for(
    tmp_path: Path, keep_stage_ends: bool
) -> None:
    from wrel.engine.state import (
        complete_stage_state,
        finished_stage_state,
        remove_training_state,
        save_resume_state,
    )

    ckpt = tmp_path / "checkpoints"
    state = {"loop": {"global_step": 1}, "stage": {"model": {"w": torch.ones(2)}}}
    for name in ("last", "last.prev", "last.damaged", "stage-0", "stage-1"):
        save_resume_state(ckpt / name, state)
    (ckpt / "best").mkdir()
    (ckpt / "best" / "model.safetensors").write_bytes(b"weights")
    removed = remove_training_state(ckpt, keep_stage_ends=keep_stage_ends)
    kept = sorted(p.name for p in ckpt.iterdir())  # no temporaries either
    assert kept == (["best", "stage-0", "stage-1"] if keep_stage_ends else ["best"])
    assert {p.name for p in removed} | set(kept) == {
        "best", "last", "last.prev", "last.damaged", "stage-0", "stage-1"
    }  # fmt: skip
    assert remove_training_state(tmp_path / "absent") == []

    # a finished stage keeps what the next stages read; a resume fills in the rest
    full = {"model": 1, "bank": 2, "optimizer": 3, "scheduler": 4}
    trimmed = finished_stage_state(full)
    assert trimmed == {"model": 1, "bank": 2}
    fresh = {"model": 0, "bank": 0, "optimizer": "fresh", "scheduler": "fresh"}
    assert complete_stage_state(trimmed, fresh) == {
        "model": 1, "bank": 2, "optimizer": "fresh", "scheduler": "fresh"
    }  # fmt: skip
    assert complete_stage_state(full, fresh) == full  # a full state is loaded as saved
