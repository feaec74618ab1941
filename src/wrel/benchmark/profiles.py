"""Benchmark profiles: the generator settings, training overrides and run grid of `wrel bench`.

A profile fixes everything that decides a number in ``docs/results/``: how the embedded
benchmark is rendered, the network input size, the epochs of every stage, and which methods,
accurate ratios and seeds run. ``wrel demo`` trains LRB-WREL at 10 % with the ``demo`` profile:
the ``full`` profile's data and model with half its steps, to fit 15 minutes on a 2-core CPU.

Budgets (this project's idle 2-core CPU): ``quick`` (10 %, one seed, the four methods, a
smaller render) <= 15 minutes and ``demo`` <= 15 minutes are targets; ``full`` (the complete
one-seed table) is estimated from the measured step rates (docs/model.md) at about 160 minutes,
over its 120-minute target, because converging Full takes 4 epochs of 12,000 samples;
``seeds`` adds about 125 minutes; ``gpu`` < 8 minutes on one H100 (no GPU has been lent to
this project's sessions yet). docs/results reports the measured wall times.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Profile", "PROFILES", "get_profile", "METHOD_ORDER"]

#: Methods in table order; ``full`` is trained once per seed at 100 % accurate.
METHOD_ORDER = ["only-accurate", "naive", "lrb", "full"]


@dataclass(frozen=True)
class Profile:
    """One benchmark setting; see the module docstring."""

    name: str
    description: str
    synth: dict[str, Any]  # SynthConfig overrides (the generator's defaults otherwise)
    data_dir: str  # where the benchmark is rendered when --data is not given
    sets: tuple[str, ...]  # experiment overrides applied to every run (``--set`` syntax)
    epochs: dict[str, int]  # stage name -> epochs (the method presets' defaults otherwise)
    # Stages on a subset (Only-Accurate, the LRB teacher warm-up) get as many optimizer steps as
    # a stage on all samples: epochs / accurate ratio. With fixed epochs a 10 % run would take
    # a tenth of the steps and the baseline would be starved rather than short of expressions.
    equal_steps: bool = True
    methods: tuple[str, ...] = tuple(METHOD_ORDER)
    ratios: tuple[float, ...] = (0.1, 0.3, 0.5)
    seeds: tuple[int, ...] = (0,)
    notes: dict[str, str] = field(default_factory=dict)

    def experiment_sets(self) -> list[str]:
        """The ``--set`` overrides of every run, epochs included."""
        return list(self.sets)


_CPU_SETS = (
    # Training MiniLM's six layers is ~60 % of a CPU step at 64 px; the last two layers train
    # (the reference trains 10 of BERT-base's 12), which makes a step 2.4x faster.
    "model.text.trainable_layers=[4,5]",
    "model.text.train_embeddings=false",
    # EfficientNet-Lite0's stem and first stage (stride 4, below the first language fusion)
    # keep their ImageNet weights: no backward through the highest-resolution layers
    # (docs/model.md, "Training throughput").
    "model.backbone.frozen_stages=1",
    "data.image_size=96",  # the benchmark is rendered at 96 px: no resize
    # batch 32 runs 1.27x the samples/s of batch 16 here (benchmarks/bench_throughput.py)
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.channels_last=true",
    "train.log_every=20",
    "train.val_every_steps=100",  # a val point every 3,200 samples: the plateau check's curve
    "train.trace_class_names=true",  # per-checkpoint class-name risk for `wrel bound`
)

#: Stage epochs of the CPU profiles (stage names of wrel.experiment.METHOD_PRESETS). An epoch
#: is 12,000 samples (374 steps of 32); stages on the accurate subset get as many steps
#: (``equal_steps``). Calibration (docs/results/calibration.md): at 3 epochs Full was still
#: gaining 4.1 val mIoU points over its last 20 % of steps, hence 4; Only-Accurate at 10 %
#: peaked at 1.6 epoch-equivalents and then overfit, so the LRB teacher, handed over as its
#: last model, warms up for 2.
_CPU_EPOCHS = {
    "only-accurate": 4,
    "naive": 4,
    "full": 4,
    "teacher-warmup": 2,
    "bank-init": 1,
    "joint": 4,
}

_CPU_FULL = Profile(
    name="full",
    description="10 / 30 / 50 % accurate plus Full, one seed; about 160 min on a 2-core CPU",
    synth={},  # the generator's defaults: the calibrated benchmark (docs/data.md)
    data_dir="data",
    sets=_CPU_SETS,
    epochs=_CPU_EPOCHS,
)

PROFILES: dict[str, Profile] = {
    "quick": replace(
        _CPU_FULL,
        name="quick",
        description=(
            "10 % accurate, one seed, the four methods on a 4,000-image render, two epochs "
            "per stage (one for bank initialisation); target <= 15 min on a 2-core CPU (a "
            "check of the pipeline, not the table)"
        ),
        synth={"num_train": 4000, "num_val": 500, "num_test": 1000},
        data_dir="data-quick",
        epochs={k: 1 if k == "bank-init" else 2 for k in _CPU_EPOCHS},
        ratios=(0.1,),
    ),
    "full": _CPU_FULL,
    "demo": replace(
        _CPU_FULL,
        name="demo",
        description=(
            "the settings of `wrel demo`: the full profile's data and model with fewer steps "
            "(teacher warm-up, bank initialisation and joint stage one epoch-equivalent each) "
            "and val at stage ends only; <= 15 min on a 2-core CPU"
        ),
        # val at stage ends only: a val pass with the leakage monitor costs ~15 s here
        sets=(*_CPU_SETS, "train.val_every_steps=0"),
        epochs={"teacher-warmup": 1, "bank-init": 1, "joint": 1},
        ratios=(0.1,),
        methods=("lrb",),
    ),
    "seeds": replace(
        _CPU_FULL,
        name="seeds",
        description="10 % accurate plus Full, seeds 0-2 (the seed spread at 10 %)",
        ratios=(0.1,),
        seeds=(0, 1, 2),
    ),
    "gpu": Profile(
        name="gpu",
        description=(
            "256 px images of the calibrated benchmark, the complete table; target < 8 min on "
            "one H100 (not yet run)"
        ),
        synth={"image_size": 256},
        data_dir="data-gpu",
        sets=(
            "data.image_size=256",
            "data.num_workers=8",
            "train.batch_size=32",
            "train.eval_batch_size=128",
            "train.channels_last=true",
            "train.amp=bf16",
            "train.log_every=20",
            "train.val_every_steps=150",
            "train.trace_class_names=true",
        ),
        epochs={k: v + 2 for k, v in _CPU_EPOCHS.items()},
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error lists the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {sorted(PROFILES)}") from None
