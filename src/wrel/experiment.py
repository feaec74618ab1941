"""The experiment config: data + model + training loop + bank + the list of stages.

A method is nothing but a preset of config overrides (:data:`METHOD_PRESETS`): which stages run
on which samples, and, for Full, ``accurate_ratio = 1``. Resolution order: dataclass defaults
<- method preset <- YAML files <- ``--set key=value``; unknown keys are errors.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wrel.config import apply_overrides, merge, to_dict
from wrel.methods.bank import BankConfig
from wrel.methods.base import StageConfig
from wrel.models import ModelConfig

__all__ = [
    "DataConfig",
    "TrainConfig",
    "ExperimentConfig",
    "METHOD_PRESETS",
    "method_names",
    "build_experiment",
]


@dataclass
class DataConfig:
    """Which data set, which weak split, and how it is loaded."""

    root: str = "data"  # folder holding <name>/refs(unc).p (refer layout)
    name: str | None = None  # auto-detected when the root holds a single data set
    accurate_ratio: float | None = 0.1  # None: keep the files' own accurate/weak marks
    split_file: str | None = None  # a published weak-split refs file (overrides the ratio)
    split_seed: int = 0  # seed of the weak split builder
    image_size: int = 64  # square network input (the paper uses 480)
    num_workers: int = 0  # DataLoader workers per rank
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation; best = last
    test_split: str | None = "test"  # evaluated once at the end with the best model


@dataclass
class TrainConfig:
    """The loop: batch, device, checkpoints, evaluation, logging."""

    batch_size: int = 8  # GLOBAL batch; each of N torchrun ranks loads batch_size / N
    eval_batch_size: int = 16
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    amp: Literal["none", "bf16"] = "none"
    channels_last: bool = False
    drop_last: bool = True  # off automatically when a stage has fewer samples than a batch
    checkpoint_every: int = 0  # also write checkpoints/last every N steps (0: epoch ends only)
    eval_every: int = 1  # evaluate on val every N epochs of a stage (and at its last epoch)
    select_metric: Literal["oIoU", "mIoU"] = "mIoU"  # best checkpoint criterion, on val
    protocol: str = "input"  # scoring resolution, passed to wrel.evaluation.Evaluator
    log_every: int = 10  # steps between metrics.jsonl train lines
    output_dir: str = "runs"  # the run folder is <output_dir>/<name>
    progress: bool = True  # tqdm bars on rank 0
    # At every val evaluation also score val with each sample's class name as its text and
    # append both per-sample losses (1 - IoU) to risk_trace.jsonl: the checkpoints the run
    # visits, for the Delta of `wrel bound`. Does not change training (own RNG, eval mode).
    trace_class_names: bool = False
    # DDP: let the reducer skip parameters a forward does not use (custom modules only; costs
    # an extra graph traversal per step, and every built-in model uses all its parameters)
    find_unused_parameters: bool = False


@dataclass
class ExperimentConfig:
    """Everything one training run needs; saved resolved as ``config.json`` in the run folder."""

    name: str = "run"
    method: str = "custom"  # informative only: the trainer runs ``stages``
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])


def _stage(kind: str, samples: str, epochs: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "samples": samples, "epochs": epochs, **extra}


#: Method name -> config overrides. Epoch counts are for the small synthetic benchmark.
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "only-accurate": {"stages": [_stage("supervised", "accurate", 12, name="only-accurate")]},
    "naive": {"stages": [_stage("supervised", "all", 12, name="naive")]},
    "full": {
        "data": {"accurate_ratio": 1.0, "split_file": None},
        "stages": [_stage("supervised", "all", 12, name="full")],
    },
    "lrb": {
        "stages": [
            _stage("supervised", "accurate", 12, name="teacher-warmup"),
            _stage("bank_init", "weak", 3, name="bank-init", evaluate=False, bank_lr=1e-2),
            _stage(
                "joint",
                "all",
                12,
                name="joint",
                bank_lr=5e-3,
                # 2/3 of the supervised rates, as the paper's 2e-5 vs 3e-5
                optim={"lr_backbone": 2e-4, "lr_text": 6.7e-5, "lr_head": 6.7e-4},
            ),
        ]
    },
}


def method_names() -> list[str]:
    """Valid ``--method`` values."""
    return sorted(METHOD_PRESETS)


def build_experiment(
    method: str | None = None,
    *,
    base: dict[str, Any] | None = None,
    yaml_files: Sequence[str | Path] = (),
    assignments: Sequence[str] = (),
) -> ExperimentConfig:
    """Resolve an :class:`ExperimentConfig`: defaults <- base <- preset <- YAML <- assignments.

    The preset is applied after ``base`` so that e.g. Full keeps ``accurate_ratio = 1`` whatever
    the CLI's ``--accurate-ratio`` says; YAML files and ``--set`` still override it.

    Args:
        method: a key of :data:`METHOD_PRESETS`, or None for the config's own stages.
        base: overrides applied after the preset (e.g. from CLI flags).
        yaml_files: YAML override files, applied in order.
        assignments: ``key=value`` strings, applied last.

    Raises:
        ValueError: unknown method or unknown config key.
    """
    data = merge(to_dict(ExperimentConfig()), {"method": method, "name": method} if method else {})
    data = merge(data, base or {})
    if method is not None:
        if method not in METHOD_PRESETS:
            raise ValueError(f"unknown method {method!r}; valid methods: {method_names()}")
        data = merge(data, copy.deepcopy(METHOD_PRESETS[method]))  # preset beats CLI flags
    stage_sets = [a for a in assignments if a.strip().startswith("stages.")]
    others = [a for a in assignments if not a.strip().startswith("stages.")]
    cfg = apply_overrides(ExperimentConfig, data, yaml_files=yaml_files, assignments=others)
    for text in stage_sets:
        _set_stage_key(cfg, text)
    return cfg


def _set_stage_key(cfg: ExperimentConfig, text: str) -> None:
    """``stages.<name or index>.<key>=<value>``: override one key of the matching stage(s)."""
    key, sep, value = text.strip().partition("=")
    parts = key.split(".", 2)
    valid = [s.name or str(i) for i, s in enumerate(cfg.stages)]
    if not sep or len(parts) != 3 or not parts[2]:
        raise ValueError(
            f"bad stage override {text!r}; use stages.<stage name or index>.<key>=<value>, "
            f"stages: {valid}"
        )
    _, which, rest = parts
    hits = [i for i, s in enumerate(cfg.stages) if s.name == which or str(i) == which]
    if not hits:
        raise ValueError(f"{text!r}: no stage {which!r}; stages of this method: {valid}")
    for i in hits:
        cfg.stages[i] = apply_overrides(StageConfig, cfg.stages[i], assignments=[f"{rest}={value}"])
