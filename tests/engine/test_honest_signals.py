"""Empty-prediction share, final warnings, metrics timestamps and paths.json."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import torch

from wrel.engine.trainer import _empty_warnings
from wrel.evaluation import Evaluator


def test_evaluator_reports_the_empty_prediction_share() -> None:
    ev = Evaluator()
    gt = torch.zeros(4, 8, 8, dtype=torch.bool)
    gt[:, 2:5, 2:5] = True
    pred = torch.zeros(4, 8, 8, dtype=torch.bool)
    pred[0, 2:5, 2:5] = True  # one of four predictions has foreground
    ev.update(pred[:2], gt[:2])
    ev.update(pred[2:], gt[2:])
    assert ev.compute()["empty_prediction_share"] == 0.75
    other = Evaluator()
    other.update(gt[:4], gt[:4])
    assert ev.merge(other).compute()["empty_prediction_share"] == 0.375
    assert Evaluator().compute()["empty_prediction_share"] == 0.0


def test_empty_warnings() -> None:
    assert _empty_warnings({"val": 0.1, "test": None}) == []
    all_empty = _empty_warnings({"val": 1.0, "test": 1.0})
    assert len(all_empty) == 2 and "every val prediction" in all_empty[0]
    assert "60% of the test predictions" in _empty_warnings({"test": 0.6})[0]


def test_run_files_carry_times_paths_and_signals(tmp_path: Path, tiny_bench: Path,
                                                 tiny_model_sets: list[str], caplog) -> None:  # fmt: skip
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train

    cfg = build_experiment(
        "naive",
        assignments=[f"data.root={tiny_bench}", "train.output_dir=runs", "data.image_size=16",
                     "train.batch_size=4", "train.progress=false", *tiny_model_sets],
    )  # fmt: skip
    cfg.stages[0].epochs = 1
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with caplog.at_level("WARNING"):
            result = train(cfg)
    finally:
        os.chdir(cwd)
    run = tmp_path / result["run_dir"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0
        assert list(line)[-1] == "time"
    final = json.loads((run / "final_metrics.json").read_text())
    shares = final["empty_prediction_share"]
    assert set(shares) == {"val", "test"} and 0.0 <= shares["test"] <= 1.0
    assert shares["test"] == final["test"]["empty_prediction_share"]
    assert sorted(final["warnings"]) == sorted(_empty_warnings(shares))
    for message in final["warnings"]:
        assert message in caplog.text
    paths = json.loads((run / "paths.json").read_text())
    assert paths["train.output_dir"] == {"given": "runs", "absolute": str(tmp_path / "runs")}
    assert paths["data.root"]["absolute"] == str(tiny_bench.resolve())
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["output_dir"] == "runs"  # what the user gave, for --resume
