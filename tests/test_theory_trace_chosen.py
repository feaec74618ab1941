"""The bench trace holds the chosen checkpoint itself, also when it was a mid-epoch evaluation.

`wrel bound --records` reads Gamma at each run's chosen checkpoint from the trace; before, only
epoch-end evaluations were traced and a mid-epoch best had to be stood in for.
"""

from __future__ import annotations

from pathlib import Path

from wrel.studies.bound import load_traces
from wrel.studies.bound_records import chosen_checkpoint
from wrel.studies.profiles import Profile
from wrel.studies.runner import load_records, plan_runs, run_benchmark


def test_mid_epoch_chosen_checkpoint_is_traced(tmp_path: Path, tiny_bench: Path,
                                               tiny_model_sets) -> None:  # fmt: skip
    profile = Profile(
        name="tiny-trace",
        description="test",
        synth={},
        data_dir="unused",
        sets=(
            "data.image_size=32",
            "train.batch_size=2",
            "train.eval_batch_size=4",
            "train.trace_class_names=true",
            "train.val_every_steps=1",
        ),  # fmt: skip
        epochs={"full": 1},
    )
    run_benchmark(
        profile,
        plan_runs(["full"], [0.5], [0]),
        data_root=tiny_bench,
        out_dir=tmp_path / "out",
        runs_dir=tmp_path / "runs",
        extra_sets=[*tiny_model_sets, "train.progress=false"],
        progress=False,
        echo=lambda _: None,
    )
    (rec,) = load_records(tmp_path / "out")
    lines = load_traces(tmp_path / "out", [rec["name"]])[rec["name"]]
    ck = chosen_checkpoint(rec, lines)
    assert ck.exact and ck.step == rec["best"]["step"]
    # the untrained tiny model ties at every evaluation, and ties go to the later checkpoint:
    # each mid-epoch evaluation became the best when it ran, so each is traced (before, only
    # the epoch end was); no step is traced twice
    steps = [ln["step"] for ln in lines]
    per_epoch = max(steps)
    assert any(step % per_epoch for step in steps) and len(set(steps)) == len(steps)
