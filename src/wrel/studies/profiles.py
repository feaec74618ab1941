"""Benchmark profiles: the generator settings, training overrides and run grid of `wrel bench`.

A profile fixes everything that decides a number in ``docs/results/``: how the embedded
benchmark is rendered, the network input size, the epochs of every stage, and which methods,
accurate ratios and seeds run. ``wrel demo`` trains LRB-WREL at 10 % with the ``demo`` profile:
the ``full`` profile's data and model with a short schedule, to fit 15 minutes on a 2-core CPU.

Budgets (this project's idle 2-core CPU): ``quick`` (10 %, one seed, four methods, a smaller
render) <= 15 minutes and ``demo`` <= 15 minutes are targets. ``demo`` meets it: 9.0 min on
benchmark v9a, 1.3 of them rendering, 10.4 with a fresh clone's venv set-up (README;
``DEMO_EPOCH_FRACTIONS``); ``quick`` does not:
19.0 min (and a smaller render leaves its baselines at 0 mIoU).
``full`` (the complete one-seed table: Only-Accurate, Naive-WREL, the LRB-WREL paper recipe,
the word bank and retrieved expressions at 10 / 30 / 50 % and Full) is about 24 hours of
one-thread run time by the measured run times (12 with two runs at a time): a 4-epoch supervised run 29-49 minutes, an 8-epoch one 55-75 (converging
Full, and every method from 30 % accurate on, takes 8 epochs of 12,000 samples), an LRB-WREL
run 79-95 minutes at 10 % and about 2.4 times a supervised run of its length;
``seeds`` adds seeds 1-2 at 10 % (about 5 hours), ``ablations`` about 2.5 hours. A run stopped
with the session resumes from its last checkpoint. ``gpu`` < 8 minutes on one H100 (not run:
no GPU has been lent to this project's sessions yet). docs/results reports the measured wall
times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from wrel.engine.experiment import PAPER_BANK_LR, PAPER_STAGE_EPOCHS
from wrel.methods.optim import OptimConfig

__all__ = ["Profile", "PROFILES", "get_profile", "METHOD_ORDER", "BENCH_PRESETS", "preset_of"]

#: Bench methods in table order; ``full`` is trained once per seed at 100 % accurate. A bench
#: method runs the :data:`wrel.engine.experiment.METHOD_PRESETS` preset of the same name, or the one
#: :data:`BENCH_PRESETS` names, with the profile's ``sets`` and then its ``method_sets``.
#: ``lrb`` is this project's first recipe (larger bank steps); ``lrb-paper`` the released one,
#: scaled to the profile's stage lengths (:func:`paper_cpu_sets`); ``lrb-words`` the released
#: recipe with a bank of real words (docs/variants.md "Bank variants").
METHOD_ORDER = [
    "only-accurate",
    "naive",
    "lrb",
    "lrb-paper",
    "lrb-words",
    # diagnostic ablations (profile ``ablations``): what LRB-WREL owes to its teacher
    # initialisation and to its extra steps rather than to its bank
    "naive-teacher",  # the teacher warm-up, then the joint schedule without a bank
    "naive-long",  # Naive-WREL with LRB-WREL's optimizer steps
    "lrb-imagenet",  # lrb-paper whose student starts from ImageNet, not from the teacher
    # lrb-paper without the joint stage's bank steps: the bank stays as initialised (the
    # paper recipe moves it ~0.02 word-embedding norms over the joint stage), and the joint
    # stage costs a supervised step per iteration
    "lrb-fixed",
    "lrb-dropout",  # lrb-paper with lrb-words' prompt dropout: the word bank minus the words
    # lrb-paper whose teacher trains as long as Only-Accurate and is handed over at its best
    # val point: the paper recipe from the best model the accurate expressions give
    "lrb-oa-teacher",
    # beyond the paper: a bank of real expressions; per weak sample the frozen teacher picks
    # one of 16 accurate expressions of its category, which the student then reads
    # (wrel.methods.retrieval): it cannot store a mask, and it can be read
    "retrieve",
    "full",
]

#: Bench method -> preset, where the two names differ.
BENCH_PRESETS = {
    "lrb-words": "lrb-paper",
    "lrb-imagenet": "lrb-paper",
    "lrb-fixed": "lrb-paper",
    "lrb-dropout": "lrb-paper",
    "lrb-oa-teacher": "lrb-paper",
}


def preset_of(method: str) -> str:
    """The wrel.engine.experiment preset a bench method trains."""
    return BENCH_PRESETS.get(method, method)


def _no_method_sets(epochs: dict[str, int]) -> dict[str, tuple[str, ...]]:
    return {}


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
    # bench method -> extra ``--set`` overrides of that method's runs (after ``sets``), made
    # from the run's stage epochs (stage name -> epochs, as :meth:`stage_epochs` gives them):
    # the paper recipe's bank learning rates depend on its stage lengths
    method_sets: Callable[[dict[str, int]], dict[str, tuple[str, ...]]] = _no_method_sets
    # from an accurate ratio on (ascending), stage name -> epochs over ``epochs``: runs with
    # more accurate expressions learn longer before their plateau (Full needs 8 epochs)
    ratio_epochs: tuple[tuple[float, dict[str, int]], ...] = ()
    # bench method -> stage name -> epochs of that method's runs, over the above; a stage name
    # as the value: as many epochs as that stage has in the same run's table
    method_epochs: dict[str, dict[str, int | str]] = field(default_factory=dict)

    def stage_epochs(self, method: str | None = None, ratio: float | None = None) -> dict[str, int]:
        """Stage name -> epochs of a run of ``method`` at accurate ``ratio`` (the profile's
        own epochs where either is None)."""
        table = dict(self.epochs)
        for start, epochs in self.ratio_epochs:
            if ratio is not None and ratio >= start - 1e-9:
                table.update(epochs)
        base = dict(table)
        for stage, value in (self.method_epochs.get(method, {}) if method else {}).items():
            if isinstance(value, str) and value not in base:
                raise ValueError(
                    f"profile {self.name}: {method}'s {stage} runs as long as {value}, which "
                    f"has no epochs in the profile (stages with epochs: {sorted(base)})"
                )
            table[stage] = base[value] if isinstance(value, str) else value
        return table

    def experiment_sets(self, method: str | None = None, ratio: float | None = None) -> list[str]:
        """The ``--set`` overrides of every run (of ``method``'s runs at accurate ``ratio`` with
        its own after)."""
        if method is None:
            return list(self.sets)
        own = self.method_sets(self.stage_epochs(method, ratio)).get(method, ())
        return [*self.sets, *own]

    def with_epochs(self, epochs: dict[str, int]) -> Profile:
        """This profile with the given stages' epochs for every method and ratio (``wrel bench
        --epochs``; a ratio's or a method's own epochs of those stages give way too)."""
        ratio_epochs = tuple(
            (start, {k: v for k, v in own.items() if k not in epochs})
            for start, own in self.ratio_epochs
        )
        method_epochs = {
            method: {k: v for k, v in own.items() if k not in epochs}
            for method, own in self.method_epochs.items()
        }
        return replace(
            self,
            epochs={**self.epochs, **epochs},
            ratio_epochs=ratio_epochs,
            method_epochs=method_epochs,
        )


_CPU_SETS = (
    # this project's network (EfficientNet-Lite0 + MiniLM + LAVT-style fusion), not the paper's
    # RMSIN: every method of the table runs on it, the paper recipe's presets included
    "model.arch=refseg",
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
    # LRB-WREL variants of a seed share their teacher (and most their bank initialisation):
    # keep each stage's end so that the next variant starts there (wrel.engine.shared_prefix)
    "train.keep_stage_checkpoints=true",
)

#: Share of its samples every epoch of each demo stage visits (StageConfig.epoch_fraction). At
#: one epoch-equivalent per stage the demo took 17.3 minutes on the idle 2-core CPU, over its
#: 15 (test mIoU 51.34); at 0.6 for all three 11.9 minutes, but its teacher fell from 38.1 to
#: 26.1 val mIoU and the demo's test mIoU to 38.49, below Only-Accurate. The teacher keeps its
#: full epoch-equivalent (4.3 of the 17.3 minutes); bank initialisation and the joint stage,
#: which start from it, are shortened. At 0.4 and 0.6 a fresh clone's `make demo` took 13.6
#: minutes on benchmark v7 but 15.1 on v8b (idle, 2 threads; the joint stage 4.3 min at 0.8
#: steps/s), over the budget, hence 0.3 and 0.5: 12.8 minutes (joint stage 3.3 min at 0.9
#: steps/s; test mIoU 52.23 against 53.00); on v9a 10.4 minutes, test mIoU 46.20; on v9b
#: test mIoU 43.93 (timed only on a loaded machine).
DEMO_EPOCH_FRACTIONS = {"teacher-warmup": 1.0, "bank-init": 0.3, "joint": 0.5}

#: Stage epochs of the CPU profiles (stage names of wrel.engine.experiment.METHOD_PRESETS). An epoch
#: is 12,000 samples (374 steps of 32); stages on the accurate subset get as many steps
#: (``equal_steps``). Calibration (docs/results/calibration.md): at 3 epochs Full was still
#: gaining 4.1 val mIoU points over its last 20 % of steps and at 4 epochs 1.06 and 2.60 (seeds
#: 0 and 1), hence 8; Naive-WREL and the joint stage reached their plateau at 4. Only-Accurate
#: at 10 % peaked at 1.6 epoch-equivalents and then overfit, so the LRB teacher, handed over as
#: its last model, warms up for 2. (The table's Only-Accurate runs since kept gaining to 4: chosen
#: at 54.1 / 50.4 / 49.1 val mIoU on seeds 0-2 against the teacher's 45.8 / 46.9 / 45.5; the
#: ``lrb-oa-teacher`` variant warms up as long as Only-Accurate and hands over its best.)
#: Naive-WREL at 10 % trains on Full's 12,000 images and masks, 9 in 10 with a class name for a
#: target, and learns slower than Full: on calibration v7 (docs/results/calibration.md) it was
#: still gaining 1.76 val points over its last 20 % of steps at 4 epochs and 1.07 at 8 (Full
#: 0.42 at 8), hence 10 (3,740 steps, about 75 minutes on one thread).
_CPU_EPOCHS = {
    "only-accurate": 4,
    "naive": 10,
    "full": 8,
    "teacher-warmup": 2,
    "bank-init": 1,
    "joint": 4,
}
# Naive-WREL with as many optimizer steps as LRB-WREL's model takes (teacher + joint stages)
_CPU_EPOCHS["naive-long"] = _CPU_EPOCHS["teacher-warmup"] + _CPU_EPOCHS["joint"]


def _ratio_epochs(epochs: dict[str, int]) -> tuple[tuple[float, dict[str, int]], ...]:
    """From 30 % accurate on, Only-Accurate, Naive-WREL and the LRB-WREL joint stage train as
    long as Full: with 3,600 or more accurate expressions they learn as Full does, not as at 10
    % (Naive-WREL at 30 %, seed 0, gained 5.2 val mIoU points over the last 20 % of 4 epochs).
    The LRB teacher keeps its short warm-up and the bank initialisation its one visit."""
    long = epochs["full"]
    longer = {"only-accurate": long, "naive": long, "joint": long}
    return ((0.3, {**longer, "naive-long": epochs["teacher-warmup"] + long}),)


def paper_cpu_sets(epochs: dict[str, int]) -> tuple[str, ...]:
    """The ``lrb-paper`` preset on a CPU profile whose stages run ``epochs``.

    The released recipe's values stay where they belong to the method and do not depend on the
    network or the stage length: the frozen copy in train mode, the EMA over the segmenter, the
    row-sparse bank optimiser matched to their dense one, the teacher's length on its own data
    (15 epochs there; 2 epoch-equivalents here, 20 epochs at 10 %). What every method of the table shares is the table's: no
    cut-outs and this project's Dice, as the baselines train. Two kinds of values are rescaled
    (docs/paper-recipe.md, "Paper recipe on the CPU profile"):

    - the network's learning rates: 3e-5 is the released value for Swin-B / BERT-base; ours are
      this project's supervised rates for EfficientNet-Lite0 / MiniLM, with the joint stage at
      2/3 of the teacher's as the released 2e-5 / 3e-5;
    - the bank's learning rates: the released per-visit movement (``PAPER_BANK_LR``, matched to
      their dense AdamW) times the released epochs over ours, so that a row moves as far over
      the stage as it does in the released run (a row is visited once per epoch).
    """

    return (
        *_SHARED_SETS,
        *_RECORDED_SETS,
        *_paper_optim_sets(),
        *_bank_lr_sets(_paper_bank_lrs(epochs)),
    )


#: What every method of the table shares, so that LRB and the baselines differ only in the
#: method: no cut-outs, this project's Dice and loss reduction (the released ones are in the
#: preset).
_SHARED_SETS = (
    "data.cutout=box",  # the default's kind, so that the data settings equal the baselines'
    "data.cutout_prob=0",
    *(f"stages.{stage}.dice=foreground-mean-smooth1" for stage in PAPER_STAGE_EPOCHS),
    *(f"stages.{stage}.loss_reduction=per-image-mean" for stage in PAPER_STAGE_EPOCHS),
)

#: The paper recipe as the table's records (docs/results) ran it, before the preset took up
#: more of the released code (issue 29): the last stage-2 bank, an EMA over buffers too, the
#: stage-2 bank moments carried into stage 3, one best checkpoint. Kept so those records stand.
_RECORDED_SETS = (
    "stages.bank-init.bank_select=last",
    "stages.joint.ema_buffers=average",
    "stages.joint.bank_moments=carry",
    "train.best_per_metric=false",
)


def _paper_optim_sets() -> tuple[str, ...]:
    """The network's rates of the recipe's stages: ours, the joint stage at 2/3 of them."""
    base = OptimConfig()
    rates = {"lr_backbone": base.lr_backbone, "lr_text": base.lr_text, "lr_head": base.lr_head}
    return (
        *(f"stages.teacher-warmup.optim.{key}={value:g}" for key, value in rates.items()),
        *(f"stages.joint.optim.{key}={value * 2 / 3:.3g}" for key, value in rates.items()),
    )


def _paper_bank_lrs(epochs: dict[str, int]) -> dict[str, float]:
    """Bank rate per bank stage: the released per-visit movement times released / our epochs."""
    return {
        stage: PAPER_BANK_LR[stage] * PAPER_STAGE_EPOCHS[stage] / epochs[stage]
        for stage in ("bank-init", "joint")
    }


def _bank_lr_sets(lrs: dict[str, float]) -> tuple[str, ...]:
    return tuple(f"stages.{stage}.bank_lr={lr:.3g}" for stage, lr in lrs.items())


#: Bank learning rate of ``lrb-words``' initialisation visit: its rows are mixture logits over
#: the vocabulary, whose step sizes are not the free bank's. Chosen with
#: ``research/bank_screen.py`` (weak training samples through an Only-Accurate teacher;
#: docs/variants.md "Screening bank variants"): one visit at 0.3 lifts the teacher from 28.0
#: (class name) to 41.7 mIoU, below the true expressions' 53.6; a third visit passes them.
WORDS_BANK_LR = 0.3


def words_cpu_sets(epochs: dict[str, int]) -> tuple[str, ...]:
    """``lrb-words`` on a CPU profile whose stages run ``epochs``: the paper recipe
    (:func:`paper_cpu_sets`) with a vocabulary-anchored bank, each prompt a softmax mixture of
    real words' embeddings (in their convex hull, readable with ``wrel bank decode``), and
    prompt dropout 0.3 in the student step.

    - the temperature falls from 1 to 0.5 at the row's first update and stays there (the
      screened setting; sharper mixtures, as the nearest-word projection, scored below the class
      name alone in the screen);
    - the joint stage's bank rate keeps the paper recipe's ratio of joint to initialisation
      movement per stage.
    """
    paper = _paper_bank_lrs(epochs)
    words = {stage: WORDS_BANK_LR * lr / paper["bank-init"] for stage, lr in paper.items()}
    return (
        *paper_cpu_sets(epochs),
        "bank.parametrization=vocab",
        "bank.temperature_start=1.0",
        "bank.temperature_end=0.5",
        "bank.temperature_steps=1",
        *_bank_lr_sets(words),
        "stages.joint.prompt_dropout=0.3",
    )


def _method_sets(epochs: dict[str, int]) -> dict[str, tuple[str, ...]]:
    return {
        "lrb-paper": paper_cpu_sets(epochs),
        "lrb-words": words_cpu_sets(epochs),
        "lrb-imagenet": (*paper_cpu_sets(epochs), "stages.joint.student_init=pretrained"),
        "lrb-fixed": (*paper_cpu_sets(epochs), "stages.joint.bank_steps=0"),
        # lrb-words' prompt dropout on the paper recipe's free bank: the word bank's gain
        # without the words
        "lrb-dropout": (*paper_cpu_sets(epochs), "stages.joint.prompt_dropout=0.3"),
        # the same network learning rates as lrb-paper's stages
        "naive-teacher": _paper_optim_sets(),
        # naive-teacher's schedule, reading retrieved texts; the candidates ranked in bf16
        # (2x the forwards per second of fp32 here, docs/variants.md "Retrieved expressions")
        "retrieve": (*_paper_optim_sets(), "stages.retrieve.autocast=bf16"),
        "lrb-oa-teacher": (*paper_cpu_sets(epochs), "stages.teacher-warmup.handover=best"),
    }


#: lrb-oa-teacher's teacher warm-up runs as many steps as Only-Accurate of the same table
_METHOD_EPOCHS: dict[str, dict[str, int | str]] = {
    "lrb-oa-teacher": {"teacher-warmup": "only-accurate"}
}


_CPU_FULL = Profile(
    name="full",
    description=(
        "10 / 30 / 50 % accurate plus Full, one seed; about 12 hours on a 2-core CPU, two runs "
        "at a time (resumable)"
    ),
    synth={},  # the generator's defaults: the calibrated benchmark (docs/data.md)
    data_dir="data",
    sets=_CPU_SETS,
    epochs=_CPU_EPOCHS,
    # the baselines, the paper recipe and the bank variants the table's "best bank variant"
    # is chosen from on val (retrieve: the one chosen at 10 %, docs/results)
    methods=("only-accurate", "naive", "lrb-paper", "lrb-words", "retrieve", "full"),
    method_sets=_method_sets,
    ratio_epochs=_ratio_epochs(_CPU_EPOCHS),
    method_epochs=_METHOD_EPOCHS,
)

_QUICK_EPOCHS = {k: 1 if k == "bank-init" else 2 for k in _CPU_EPOCHS}

_GPU_EPOCHS = {k: v + 2 for k, v in _CPU_EPOCHS.items()}

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
        # a pipeline check: val at stage ends only and no class-name trace (31 val passes
        # took 110 s of the 17.1 minutes measured with the full profile's val settings)
        sets=(*_CPU_SETS, "train.val_every_steps=0", "train.trace_class_names=false"),
        epochs=_QUICK_EPOCHS,
        ratios=(0.1,),
        methods=("only-accurate", "naive", "lrb-paper", "full"),
        ratio_epochs=(),  # one ratio; the quick schedule throughout
    ),
    "full": _CPU_FULL,
    "demo": replace(
        _CPU_FULL,
        name="demo",
        description=(
            "the settings of `wrel demo`: the full profile's data and model with fewer steps "
            "(teacher warm-up one epoch-equivalent, bank initialisation "
            f"{DEMO_EPOCH_FRACTIONS['bank-init']:.0%} and joint stage "
            f"{DEMO_EPOCH_FRACTIONS['joint']:.0%} of one: their epochs visit a random share of "
            "the samples) and val at stage ends only; <= 15 min on a 2-core CPU"
        ),
        # val at stage ends only: a val pass with the leakage monitor costs ~15 s here
        sets=(
            *_CPU_SETS,
            "train.val_every_steps=0",
            *(
                f"stages.{stage}.epoch_fraction={share}"
                for stage, share in DEMO_EPOCH_FRACTIONS.items()
                if share < 1
            ),
        ),
        epochs={"teacher-warmup": 1, "bank-init": 1, "joint": 1},
        ratios=(0.1,),
        methods=("lrb-paper",),
    ),
    "seeds": replace(
        _CPU_FULL,
        name="seeds",
        description="10 % accurate plus Full, seeds 0-2 (the seed spread at 10 %)",
        ratios=(0.1,),
        seeds=(0, 1, 2),
    ),
    "ablations": replace(
        _CPU_FULL,
        name="ablations",
        description=(
            "10 % accurate, the diagnostic ablations of LRB-WREL (teacher initialisation "
            "without a bank, Naive with LRB's steps, LRB with an ImageNet student, LRB with "
            "its bank fixed in the joint stage, LRB with prompt dropout, LRB from a teacher as "
            "long as Only-Accurate handed over at its best val point) and the retrieved-"
            "expression bank, to read "
            "beside the full profile's records of the same seeds"
        ),
        ratios=(0.1,),
        # METHOD_ORDER's diagnostic ablations and the teacher variant, in table order
        methods=tuple(
            METHOD_ORDER[METHOD_ORDER.index("naive-teacher") : METHOD_ORDER.index("full")]
        ),
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
            "model.arch=refseg",  # this project's network, as the CPU profiles
            "data.image_size=256",
            "data.num_workers=8",
            "train.batch_size=32",
            "train.eval_batch_size=128",
            "train.channels_last=true",
            "train.amp=bf16",
            "train.log_every=20",
            "train.val_every_steps=150",
            "train.trace_class_names=true",
            "train.keep_stage_checkpoints=true",
        ),
        epochs=_GPU_EPOCHS,
        # sized for < 8 min without retrieve (its scoring pass adds 17 forwards per weak
        # sample); add it with --methods
        methods=("only-accurate", "naive", "lrb-paper", "lrb-words", "full"),
        method_sets=_method_sets,
        ratio_epochs=_ratio_epochs(_GPU_EPOCHS),
        method_epochs=_METHOD_EPOCHS,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error lists the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {sorted(PROFILES)}") from None
