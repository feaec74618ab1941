"""A run that starts from another run's stage-end checkpoint ends as if trained whole."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from wrel.engine.experiment import build_experiment
from wrel.engine.shared_prefix import find_shared_prefix, start_from_shared_prefix
from wrel.engine.state import load_resume_state


def _cfg(root: Path, data: Path, model_sets: list[str], name: str, *sets: str):
    cfg = build_experiment(
        "lrb",
        assignments=[
            f"train.output_dir={root}",
            f"name={name}",
            "train.batch_size=2",
            "train.eval_batch_size=4",
            "train.progress=false",
            "train.keep_stage_checkpoints=true",
            "train.keep_training_state=true",  # the final resume states are compared
            "data.image_size=16",
            "data.accurate_ratio=0.5",
            "train.trace_class_names=true",
            f"data.root={data}",
            *model_sets,
            *sets,
        ],
    )
    for stage in cfg.stages:
        stage.epochs = 2
    return cfg


def _untimed(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "time"}
        for line in path.read_text().splitlines()
    ]


def test_a_run_started_after_a_shared_prefix_equals_the_run_trained_whole(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]
) -> None:
    from wrel.engine.trainer import train

    shared, whole = tmp_path / "shared", tmp_path / "whole"
    donor = _cfg(shared, tiny_bench, tiny_model_sets, "donor", "train.keep_training_state=false")
    train(donor)  # teacher, bank initialisation, joint stage; keeps the ends of the first two
    kept = sorted(p.name for p in (shared / "donor" / "checkpoints").iterdir())
    assert kept == ["best", "stage-0", "stage-1"]  # its own training state is gone
    # a stage end keeps what the next stages read: no optimizer or schedule of the stage
    for index in (0, 1):
        end = load_resume_state(shared / "donor" / "checkpoints" / f"stage-{index}")
        assert "model" in end["stage"] and not {"optimizer", "scheduler"} & set(end["stage"])

    # the same teacher and bank initialisation, another joint stage (its bank stays fixed)
    variant = ("stages.joint.bank_steps=0",)
    cfg = _cfg(shared, tiny_bench, tiny_model_sets, "variant", *variant)
    assert find_shared_prefix(cfg, shared) == (shared / "donor", 2)
    assert start_from_shared_prefix(cfg, shared) == (shared / "donor", 2)
    started = train(cfg, resume=True)
    reference = train(_cfg(whole, tiny_bench, tiny_model_sets, "variant", *variant))

    assert started["test"] == reference["test"]
    a = load_resume_state(shared / "variant" / "checkpoints" / "last")
    b = load_resume_state(whole / "variant" / "checkpoints" / "last")
    for part in ("model", "teacher", "bank"):
        for key, value in b["stage"][part].items():
            assert torch.equal(value, a["stage"][part][key]), f"{part}.{key}"
    for name in ("metrics.jsonl", "risk_trace.jsonl"):
        assert _untimed(shared / "variant" / name) == _untimed(whole / "variant" / name), name

    # nothing is shared across other settings of a shared stage, another seed or a bank
    # setting once the prefix holds a bank stage; the teacher alone is still shared then
    other_teacher = _cfg(
        shared, tiny_bench, tiny_model_sets, "t", "stages.teacher-warmup.optim.lr_head=0.5"
    )
    assert find_shared_prefix(other_teacher, shared) is None
    assert (
        find_shared_prefix(_cfg(shared, tiny_bench, tiny_model_sets, "s", "train.seed=3"), shared)
        is None
    )
    other_bank = _cfg(shared, tiny_bench, tiny_model_sets, "b", "bank.num_prompts=3")
    assert find_shared_prefix(other_bank, shared) == (shared / "donor", 1)
    # an existing run folder is never overwritten
    assert start_from_shared_prefix(cfg, shared) is None


def test_a_teacher_handed_over_at_its_best_val_point_resumes_and_shares_exactly(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]
) -> None:
    from wrel.engine.trainer import train

    shared, whole = tmp_path / "shared", tmp_path / "whole"
    best = ("stages.teacher-warmup.handover=best",)
    train(_cfg(shared, tiny_bench, tiny_model_sets, "donor", *best))
    lines = [
        json.loads(line) for line in (shared / "donor" / "metrics.jsonl").read_text().splitlines()
    ]
    vals = [r for r in lines if r.get("event") == "val" and r["stage"] == "teacher-warmup"]
    (handed,) = [r for r in lines if r.get("event") == "handover"]
    top = max(r["mIoU"] for r in vals)
    assert handed["handover"] == "best" and handed["val"] == top
    # ties go to the later point, as for the run's exported best
    assert handed["best_step"] == max(r["step"] for r in vals if r["mIoU"] == top)
    kept = load_resume_state(shared / "donor" / "checkpoints" / "stage-0")
    assert kept["stage"]["best"]["value"] == top

    # a variant started from the kept teacher (best copy included) ends as the run trained
    # whole, with one handover line
    variant = (*best, "stages.joint.bank_steps=0")
    cfg = _cfg(shared, tiny_bench, tiny_model_sets, "variant", *variant)
    assert start_from_shared_prefix(cfg, shared) == (shared / "donor", 2)
    started = train(cfg, resume=True)
    reference = train(_cfg(whole, tiny_bench, tiny_model_sets, "variant", *variant))
    assert started["test"] == reference["test"]
    for name in ("metrics.jsonl", "risk_trace.jsonl"):
        assert _untimed(shared / "variant" / name) == _untimed(whole / "variant" / name), name

    # a teacher handed over at its end is another teacher: nothing is shared with it
    last = _cfg(shared, tiny_bench, tiny_model_sets, "last")
    assert find_shared_prefix(last, shared) is None
    # a donor saved before stages had a handover key ran handover=last, and shares with it
    for run in ("donor", "variant"):
        path = shared / run / "config.json"
        config = json.loads(path.read_text())
        for stage in config["stages"]:
            stage.pop("handover", None)
            if stage["kind"] == "supervised":
                stage["handover"] = "last"
        path.write_text(json.dumps(config))
    assert find_shared_prefix(last, shared) == (shared / "donor", 2)
    for run in ("donor", "variant"):
        path = shared / run / "config.json"
        config = json.loads(path.read_text())
        for stage in config["stages"]:
            stage.pop("handover", None)  # as written by wrel before the key existed
        path.write_text(json.dumps(config))
    assert find_shared_prefix(last, shared) == (shared / "donor", 2)
