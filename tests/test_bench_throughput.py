"""benchmarks/bench_throughput.py times the stage it is asked for.

It once ignored ``--stage`` and timed the method's first stage whatever was asked: its
"joint-stage" figure was the supervised teacher warm-up's (docs/model.md, "Training throughput").
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _argv(tiny_bench: Path, tiny_model_sets: list[str], *extra: str) -> list[str]:
    # the profile trains MiniLM's last two of six layers; the tiny encoder has two (and a
    # variant splits on commas)
    tiny = [*tiny_model_sets, "model.text.trainable_layers=[1]"]
    # half the 16 tiny samples accurate, so that the teacher stage has batches to time
    sets = ",".join([*tiny, "data.image_size=32", "train.batch_size=2", "data.accurate_ratio=0.5"])
    return [
        "--data",
        str(tiny_bench),
        "--profile",
        "full",
        "--method",
        "lrb",
        "--variant",
        f"tiny={sets}",
        "--batches",
        "1",
        "--rounds",
        "1",
        *extra,
    ]


@pytest.mark.parametrize(
    ("stage", "expected"),
    [(None, ("teacher-warmup", "supervised")), ("joint", ("joint", "joint"))],
)
def test_the_timed_stage_is_the_one_asked_for(
    tiny_bench: Path,
    tiny_model_sets: list[str],
    benchmark_script,
    stage: str | None,
    expected: tuple[str, str],
) -> None:
    script = benchmark_script("bench_throughput")
    extra = ("--stage", stage) if stage else ()
    args = script.build_parser().parse_args(_argv(tiny_bench, tiny_model_sets, *extra))
    report = script.run(args)
    (row,) = report["rows"]
    assert (row["stage"], row["stage_kind"]) == expected
    assert report["stage"] == stage
    assert row["step_samples_per_s"] > 0 and row["towers_samples_per_s"] > 0
    assert f"| tiny | {expected[0]} |" in script.markdown(report)


def test_an_unknown_stage_names_the_methods_stages(
    tiny_bench: Path, tiny_model_sets: list[str], benchmark_script
) -> None:
    script = benchmark_script("bench_throughput")
    with pytest.raises(SystemExit, match="teacher-warmup.*bank-init.*joint"):
        args = script.build_parser().parse_args(
            _argv(tiny_bench, tiny_model_sets, "--stage", "nope")
        )
        script.run(args)
