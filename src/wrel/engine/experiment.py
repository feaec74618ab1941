"""The experiment config: data + model + training loop + bank + the list of stages.

A method is nothing but a preset of config overrides (:data:`METHOD_PRESETS`): which stages run
on which samples, and, for Full, ``accurate_ratio = 1``. Resolution order: dataclass defaults
<- method preset <- YAML files <- ``--set key=value``; unknown keys are errors.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wrel.core.config_io import apply_overrides, from_dict, merge, parse_assignment, to_dict
from wrel.core.distributed import check_device_name
from wrel.data.image_reading import ImageScaling
from wrel.data.preprocessing import DEFAULT_IMAGE_SIZE, MAX_INPUT_SIDE
from wrel.data.splits import SplitFileInfo, split_file_info
from wrel.data.transforms import CUTOUT_KINDS, check_cutout, check_squares
from wrel.methods.bank import BankConfig
from wrel.methods.base import (
    STAGE_CONFIGS,
    BankStageConfig,
    JointConfig,
    RetrieveConfig,
    StageConfig,
    SupervisedConfig,
    stage_keys,
)
from wrel.models import ModelConfig

__all__ = [
    "DataConfig",
    "TrainConfig",
    "ExperimentConfig",
    "METHOD_PRESETS",
    "method_names",
    "build_experiment",
    "validate_experiment",
    "check_run_name",
    "split_and_ratio_error",
]

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Which data set, which weak split, and how it is loaded."""

    root: str = "data"  # folder holding <name>/refs(unc).p (refer layout)
    name: str | None = None  # auto-detected when the root holds a single data set
    accurate_ratio: float | None = 0.1  # None: keep the files' own accurate/weak marks
    split_file: str | None = None  # a published weak-split refs file (overrides the ratio)
    split_seed: int = 0  # seed of the weak split builder
    image_size: int = DEFAULT_IMAGE_SIZE  # square network input (the paper uses 480)
    num_workers: int = 0  # DataLoader workers per rank
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation; best = last
    test_split: str | None = "test"  # evaluated once at the end with the best model
    # let image file names in instances.json be absolute or hold ".." (trusted data only)
    allow_outside_root: bool = False
    # Cut-out of training images (masks untouched; wrel.data.transforms, docs/training.md).
    # "box": each visit of an item draws, with probability cutout_prob, one box of the network
    # input (cutout_scale of each side) set to 0 after normalisation (the ImageNet mean colour).
    # "squares" (released): a fixed share cutout_prob of the train refs, drawn once per run from
    # train.seed, get cutout_count black squares of cutout_side x the shorter raw image side on
    # the raw image, redrawn at every visit. Paper recipe: squares, 0.2, (20, 60), 32/800
    cutout: Literal["box", "squares"] = "box"
    cutout_prob: float = 0.0
    cutout_scale: tuple[float, float] = (0.1, 0.3)  # box height / width, fraction of the side
    cutout_count: tuple[int, int] = (20, 60)  # squares per visit (inclusive range)
    cutout_side: float = 0.04  # square side / shorter raw side (released: 32 px of 800)
    # stage kinds whose training images get the cut-out; None: every training stage (the
    # released code cuts out in every training script: stage 1, 2, 3 and Naive-WREL)
    cutout_stages: list[str] | None = None
    # how image files become the model's 8-bit RGB (bands, value mapping); recorded in the
    # exported model and applied by `wrel predict` (wrel.data.image_reading, docs/data.md)
    image_scaling: ImageScaling = field(default_factory=ImageScaling)


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
    # keep checkpoints/last.prev, the previous resume checkpoint and the fallback of a damaged
    # last/; false keeps only last/ (half the disk, no fallback: docs/training.md)
    keep_previous_checkpoint: bool = True
    # keep a copy of the resume checkpoint at the end of every stage but the last
    # (checkpoints/stage-<i>/): another run that shares this run's first stages starts from it
    # (`wrel bench` does; storage only, the numbers do not change)
    keep_stage_checkpoints: bool = False
    # keep the training state when the run finishes (checkpoints/last, last.prev: optimizer
    # and bank moments, for training on); false keeps what a user needs: checkpoints/best, the
    # compact bank, config, logs, metrics (docs/training.md "Run folder")
    keep_training_state: bool = False
    # also write the metrics.jsonl scalars (train, val, leakage) as TensorBoard event files
    # under <run>/tensorboard (needs the tensorboard package: pip install 'wrel[tensorboard]')
    tensorboard: bool = False
    eval_every: int = 1  # evaluate on val every N epochs of a stage (and at its last epoch)
    # also evaluate on val every N optimizer steps inside epochs (0: off): the val curve of a
    # run with few long epochs, for the plateau check; no class-name trace at these points
    val_every_steps: int = 0
    select_metric: Literal["oIoU", "mIoU"] = "mIoU"  # best checkpoint criterion, on val
    # also keep checkpoints/best-oIoU and checkpoints/best-mIoU: the final stage's best student
    # by each val metric (the released code keeps both); checkpoints/best stays select_metric's
    best_per_metric: bool = False
    protocol: str = "input"  # scoring resolution, passed to wrel.evaluation.Evaluator
    log_every: int = 10  # steps between metrics.jsonl train lines
    output_dir: str = "runs"  # the run folder is <output_dir>/<name>
    progress: bool = True  # tqdm bars on rank 0
    # At every epoch-end val evaluation (and a mid-epoch one that becomes the best) also score
    # val with each sample's class name as its text and append both per-sample losses
    # (1 - IoU) to risk_trace.jsonl: the checkpoints the run visits, for the Delta of `wrel
    # bound`. Does not change training (own RNG, eval mode).
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
    stages: list[StageConfig] = field(default_factory=lambda: [SupervisedConfig()])


def _stage(kind: str, samples: str, epochs: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "samples": samples, "epochs": epochs, **extra}


def _paper_optim(lr: float) -> dict[str, float]:
    return {"lr_backbone": lr, "lr_text": lr, "lr_head": lr}


#: The released loss (wrel.methods.losses): Dice per image and class summed over the 2 classes
#: and the (per-process) batch, plus the CE as one weighted mean over the batch's pixels.
PAPER_LOSS: dict[str, Any] = {"dice": "per-class-sum-smooth1e-6", "loss_reduction": "batch-sum"}
#: The released cut-out (wrel.data.transforms): 20-60 black squares (32 px of 800) on a fixed
#: 20 % of the train refs, in every training stage (each released training script cuts out).
PAPER_CUTOUT: dict[str, Any] = {
    "cutout": "squares",
    "cutout_prob": 0.2,
    "cutout_count": [20, 60],
    "cutout_side": 32 / 800,
    "cutout_stages": None,
}
#: Teacher warm-up of the paper recipe: the released README's ``model_epoch_15.pth`` of stage 1,
#: saved after epoch index 15, i.e. 16 epochs. On the accurate share rho = 0.1 that is
#: 16 * 0.1 / 40 = 4 % of the joint stage's iterations; for another rho keep the share:
#: epochs = round(1.6 / rho) (docs/paper-recipe.md).
PAPER_TEACHER_EPOCHS = 16
#: Bank learning rates of the paper recipe (row-sparse AdamW), matched to the per-visit row
#: movement of the released dense AdamW at 1e-5 (bank init) and 1e-6 (joint): 30x, between the
#: measured 26.8x (constant gradient) and 31.3x (noisy) of research/bank_movement.py
#: (figures in docs/paper-recipe.md "Paper recipe").
PAPER_BANK_LR = {"bank-init": 3e-4, "joint": 3e-5}
#: Epochs of the released stages on RRSIS-D (the teacher's on the accurate share).
PAPER_STAGE_EPOCHS = {"teacher-warmup": PAPER_TEACHER_EPOCHS, "bank-init": 40, "joint": 40}

#: Network learning rates of this project's joint stage: 2/3 of the supervised ones
#: (OptimConfig's defaults), as the released 2e-5 joint vs 3e-5 warm-up.
JOINT_OPTIM = {"lr_backbone": 2e-4, "lr_text": 6.7e-5, "lr_head": 6.7e-4}


def _lrb_paper(*, fixed: bool) -> dict[str, Any]:
    """The ``lrb-paper`` preset (``fixed``: ``lrb-paper-fixed``). Both: the released loss,
    cut-out, trainable text set (no embeddings), teacher length, learning rates, frozen copy in
    train mode, EMA of the segmenter with the teacher in eval mode, a fresh stage-3 bank AdamW,
    both best checkpoints, and a bank kept identical on every rank. Released defects that only
    ``fixed`` repairs: the stage-2 bank chosen by oIoU on the samples it was fitted to
    (``bank_select``) and an EMA that leaves the teacher's BatchNorm statistics at stage 1's
    (``ema_buffers``)."""
    return {
        "data": dict(PAPER_CUTOUT),
        "model": {"text": {"train_embeddings": False}},
        "train": {"best_per_metric": True},
        "bank": {"optimizer": "sparse"},
        "stages": [
            _stage(
                "supervised",
                "accurate",
                PAPER_TEACHER_EPOCHS,
                name="teacher-warmup",
                optim=_paper_optim(3e-5),
                **PAPER_LOSS,
            ),
            _stage(
                "bank_init",
                "weak",
                PAPER_STAGE_EPOCHS["bank-init"],
                name="bank-init",
                evaluate=False,
                bank_lr=PAPER_BANK_LR["bank-init"],
                frozen_mode="train",
                bank_select="last" if fixed else "train-oIoU",
                **PAPER_LOSS,
            ),
            _stage(
                "joint",
                "all",
                PAPER_STAGE_EPOCHS["joint"],
                name="joint",
                bank_lr=PAPER_BANK_LR["joint"],
                optim=_paper_optim(2e-5),
                ema_scope="segmenter",
                ema_buffers="average" if fixed else "skip",
                bank_moments="fresh",
                **PAPER_LOSS,
            ),
        ],
    }


#: Method name -> config overrides. Epoch counts are for the small synthetic benchmark, except
#: the ``*-paper`` presets (RRSIS-D epochs of the released training).
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
                optim=dict(JOINT_OPTIM),
            ),
        ]
    },
    # LRB-WREL as released, its defects included (docs/paper-recipe.md "Paper recipe"); model:
    # configs/paper_rrsisd.yaml. lrb-paper-fixed: the same with the released defects fixed
    "lrb-paper": _lrb_paper(fixed=False),
    "lrb-paper-fixed": _lrb_paper(fixed=True),
    # -- diagnostic ablations of LRB-WREL (docs/results; `wrel bench --profile ablations`) --
    # LRB-WREL without its bank: the teacher warm-up, then the joint stage's schedule on all
    # samples with bare class names. Equal to LRB-WREL with no prompt slots (with the
    # consistency term off, as released, the EMA teacher only serves the bank step).
    "naive-teacher": {
        "stages": [
            _stage("supervised", "accurate", 12, name="teacher-warmup"),
            _stage(
                "supervised",
                "all",
                12,
                name="joint",
                optim=dict(JOINT_OPTIM),
            ),
        ]
    },
    # -- beyond the paper: a bank of real expressions (wrel.methods.retrieval) --
    # the teacher warm-up; per weak sample, the accurate expression of its category (one of 16
    # drawn) under which the frozen teacher segments its mask best; then naive-teacher's joint
    # schedule, the weak samples reading their chosen expression instead of the class name
    "retrieve": {
        "stages": [
            _stage("supervised", "accurate", 12, name="teacher-warmup"),
            _stage("retrieve", "weak", 1, name="retrieve"),
            _stage(
                "supervised",
                "all",
                12,
                name="joint",
                weak_text="retrieved",
                optim=dict(JOINT_OPTIM),
            ),
        ]
    },
    # Naive-WREL given as many optimizer steps as LRB-WREL's model (teacher + joint stages).
    "naive-long": {"stages": [_stage("supervised", "all", 24, name="naive-long")]},
    # Naive-WREL as released (its script has none of the defects lrb-paper-fixed fixes)
    "naive-paper": {
        "data": dict(PAPER_CUTOUT),
        "model": {"text": {"train_embeddings": False}},
        "train": {"best_per_metric": True},
        "stages": [
            _stage("supervised", "all", 40, name="naive", optim=_paper_optim(3e-5), **PAPER_LOSS)
        ],
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
    the CLI's ``--accurate-ratio`` says; YAML files and ``--set`` still override it. A
    ``data.split_file`` is resolved here, so no caller patches the config afterwards: the file
    is read and checked against the stages, and ``data.accurate_ratio`` becomes None (the
    file's own accurate / weak marks).

    Args:
        method: a key of :data:`METHOD_PRESETS`, or None for the config's own stages.
        base: overrides applied after the preset (e.g. from CLI flags).
        yaml_files: YAML override files, applied in order.
        assignments: ``key=value`` strings, applied last.

    Raises:
        ValueError: unknown method or unknown config key; a split file with a ratio, with
            ``full``, or without samples for a stage.
        FileNotFoundError: the split file does not exist.
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
    _check_placeholders(cfg)
    _sync_model_input_size(cfg)
    _check_cutout(cfg.data)
    _resolve_split_file(cfg)
    validate_experiment(cfg)
    return cfg


#: Marks a value a user must fill in (configs/paper_rrsisd.yaml).
PLACEHOLDER = "SET_ME"


def _check_placeholders(cfg: ExperimentConfig) -> None:
    """Refuse a config that still holds a ``SET_ME`` placeholder, naming every such key."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}.{index}")
        elif isinstance(node, str) and node.startswith(PLACEHOLDER):
            found.append(f"{where}={node}")

    walk(to_dict(cfg), "")
    if found:
        keys = " ".join(f"--set {item.split('=')[0]}=..." for item in found)
        raise ValueError(
            f"the config still holds placeholders: {', '.join(found)}; fill them in the YAML "
            f"file or with {keys} (a --config file is applied after --data, so use --set)"
        )


def _check_cutout(data: DataConfig) -> None:
    """The cut-out keys' values (wrel.data.transforms), one ValueError naming the fix."""
    check_cutout(data.cutout_prob, data.cutout_scale)
    check_squares(data.cutout_count, data.cutout_side)
    if data.cutout not in CUTOUT_KINDS:
        raise ValueError(f"data.cutout={data.cutout!r}: use one of {list(CUTOUT_KINDS)}")
    bad = [k for k in data.cutout_stages or [] if k not in STAGE_CONFIGS]
    if bad:
        raise ValueError(
            f"data.cutout_stages holds {bad}, not stage kinds; use None (every training stage) "
            f"or a list of {sorted(STAGE_CONFIGS)}"
        )


def _sync_model_input_size(cfg: ExperimentConfig) -> None:
    """``model.input_size`` follows ``data.image_size``, its one owner (Swin is built for it)."""
    size = cfg.data.image_size
    if cfg.model.input_size is not None and cfg.model.input_size != size:
        raise ValueError(
            f"model.input_size={cfg.model.input_size} differs from data.image_size={size}; "
            "model.input_size is filled from data.image_size: set data.image_size only"
        )
    cfg.model.input_size = size


def check_run_name(name: object) -> str:
    """A run name is one plain folder name inside ``train.output_dir`` (never a path)."""
    seps = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(sep in name for sep in seps)
        or any(ord(ch) < 32 for ch in name)
        or len(name) > 200
    ):
        raise ValueError(
            f"invalid run name {name!r}: it must be a single folder name (no '/', '\\', '..' or "
            "control characters, at most 200 characters); the run folder is "
            "<train.output_dir>/<name>, so set train.output_dir / --output-dir for another place"
        )
    return name


def validate_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """Reject a config that cannot train, before any data is read or any model is built.

    Checks: the run name is a plain folder name; every float is finite; batch sizes,
    ``log_every``, ``eval_every`` and stage epochs are >= 1, ``checkpoint_every`` >= 0;
    learning rates and weight decays are >= 0 (0 freezes a group or the bank, as in the
    ablations); the device has a valid form; the stages' sample sets exist at the configured
    ``data.accurate_ratio`` (for example LRB-WREL needs weak samples, so not ratio 1).

    Returns:
        ``cfg`` itself. Raises ``ValueError`` naming the key, the value and the fix.
    """

    check_run_name(cfg.name)
    _check_finite(cfg, "")
    problems: list[str] = []

    def need(ok: bool, key: str, value: object, rule: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r} ({rule})")

    t, d = cfg.train, cfg.data
    for key in ("batch_size", "eval_batch_size", "log_every", "eval_every"):
        need(getattr(t, key) >= 1, f"train.{key}", getattr(t, key), "must be >= 1")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every, "0 or more")
    need(t.val_every_steps >= 0, "train.val_every_steps", t.val_every_steps, "0 (off) or more")
    need(bool(str(t.output_dir).strip()), "train.output_dir", t.output_dir, "must not be empty")
    need(d.image_size >= 8, "data.image_size", d.image_size, "must be >= 8 pixels")
    need(
        d.image_size <= MAX_INPUT_SIDE,
        "data.image_size",
        d.image_size,
        f"must be <= {MAX_INPUT_SIDE}",
    )
    for key in ("batch_size", "eval_batch_size"):
        need(getattr(t, key) <= 4096, f"train.{key}", getattr(t, key), "must be <= 4096")
    need(d.num_workers >= 0, "data.num_workers", d.num_workers, "0 or more")
    ratio = d.accurate_ratio
    need(ratio is None or 0 <= ratio <= 1, "data.accurate_ratio", ratio, "must be in [0, 1]")
    b = cfg.bank
    need(b.num_prompts >= 1, "bank.num_prompts", b.num_prompts, "must be >= 1")
    need(b.init_std >= 0, "bank.init_std", b.init_std, "0 or more")
    need(0 <= b.beta1 < 1 and 0 <= b.beta2 < 1, "bank.beta1/beta2", (b.beta1, b.beta2), "[0, 1)")
    need(b.eps > 0, "bank.eps", b.eps, "must be > 0")
    if not cfg.stages:
        problems.append("stages=[] (a method needs at least one stage)")
    for index, st in enumerate(cfg.stages):
        at = f"stages.{st.name or index}"
        need(st.epochs >= 1, f"{at}.epochs", st.epochs, "must be >= 1")
        share = st.epoch_fraction
        need(0 < share <= 1, f"{at}.epoch_fraction", share, "must be in (0, 1]")
        need(st.eval_every >= 0, f"{at}.eval_every", st.eval_every, "0 (train.eval_every) or more")
        for key in ("lr_backbone", "lr_text", "lr_head", "weight_decay", "grad_clip"):
            value = getattr(st.optim, key)
            need(value >= 0, f"{at}.optim.{key}", value, "must be >= 0")
        need(st.optim.poly_power >= 0, f"{at}.optim.poly_power", st.optim.poly_power, ">= 0")
        betas = st.optim.betas
        need(all(0 <= x < 1 for x in betas), f"{at}.optim.betas", betas, "each in [0, 1)")
        if isinstance(st, BankStageConfig):
            need(st.bank_lr >= 0, f"{at}.bank_lr", st.bank_lr, "must be >= 0")
            decay = st.bank_weight_decay
            need(decay >= 0, f"{at}.bank_weight_decay", decay, ">= 0")
        if isinstance(st, JointConfig):
            _check_joint(st, at, need)
        if isinstance(st, RetrieveConfig):
            need(st.samples == "weak", f"{at}.samples", st.samples, "a retrieve stage reads weak")
            need(st.epochs == 1, f"{at}.epochs", st.epochs, "a retrieve stage makes one pass")
            need(st.epoch_fraction == 1, f"{at}.epoch_fraction", st.epoch_fraction,
                 "a retrieve stage reads every weak sample: 1")  # fmt: skip
            need(st.candidates >= 1, f"{at}.candidates", st.candidates, "must be >= 1")
            need(st.chunk >= 1, f"{at}.chunk", st.chunk, "must be >= 1")
            need(index > 0, f"{at}.kind", st.kind, "needs a model trained by a stage before it")
            need(st.autocast in ("inherit", "bf16"), f"{at}.autocast", st.autocast, "inherit/bf16")
        if isinstance(st, SupervisedConfig) and st.weak_text == "retrieved":
            need(
                any(isinstance(p, RetrieveConfig) for p in cfg.stages[:index]),
                f"{at}.weak_text",
                st.weak_text,
                "reads the expressions a retrieve stage before it chose",
            )
        if isinstance(st, SupervisedConfig) and st.handover == "best":
            need(
                index < len(cfg.stages) - 1,
                f"{at}.handover",
                st.handover,
                "only a stage followed by another hands over; the last stage's best model is "
                "the run's result already",
            )
            need(st.evaluate, f"{at}.evaluate", st.evaluate, "handover=best needs val scores")
        if d.split_file is None and ratio is not None:
            weak_stage = st.samples == "weak" or st.kind in ("bank_init", "joint", "retrieve")
            if weak_stage and ratio >= 1:
                problems.append(
                    f"{at} ({st.kind} on {st.samples!r} samples) needs weak samples but "
                    f"data.accurate_ratio={ratio} leaves none; use a ratio below 1 or a method "
                    "without a reference bank (full, naive)"
                )
            if st.samples == "accurate" and ratio <= 0:
                problems.append(
                    f"{at} trains on accurate samples but data.accurate_ratio={ratio} leaves "
                    "none; use a ratio above 0"
                )
    try:
        check_device_name(t.device)
    except ValueError as err:
        problems.append(f"train.device: {err}")
    if problems:
        raise ValueError("invalid experiment config: " + "; ".join(problems))
    return cfg


def _check_joint(st: JointConfig, at: str, need: Callable[[bool, str, object, str], None]) -> None:
    """The value rules of a joint stage's own keys."""
    need(st.bank_steps >= 0, f"{at}.bank_steps", st.bank_steps, "0 or more")
    need(st.bank_update_every >= 1, f"{at}.bank_update_every", st.bank_update_every, ">= 1")
    need(st.ema_time_scale > 0, f"{at}.ema_time_scale", st.ema_time_scale, "must be > 0")
    need(st.consistency_weight >= 0, f"{at}.consistency_weight", st.consistency_weight, ">= 0")
    temp = st.consistency_temperature
    need(temp > 0, f"{at}.consistency_temperature", temp, "must be > 0")
    lo_hi = st.consistency_threshold
    need(all(0 <= x <= 1 for x in lo_hi), f"{at}.consistency_threshold", lo_hi, "in [0, 1]")
    ramp = st.consistency_ramp_epochs
    need(ramp >= 0, f"{at}.consistency_ramp_epochs", ramp, "0 or more")


def _check_finite(node: object, where: str) -> None:
    """Every float of a (nested) config is finite; the error names the key."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _check_finite(getattr(node, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            _check_finite(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f"invalid experiment config: {where}={node!r} must be a finite number")


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
        cfg.stages[i] = _override_stage(cfg.stages[i], rest, value)


def _override_stage(stage: StageConfig, key: str, value: str) -> StageConfig:
    """``stage`` with ``key=value`` applied; a new ``kind`` keeps only the keys that kind has."""
    data = merge(to_dict(stage), parse_assignment(f"{key}={value}"))
    if data.get("kind") != stage.kind and data.get("kind") in STAGE_CONFIGS:
        keep = stage_keys(STAGE_CONFIGS[data["kind"]])
        data = {k: v for k, v in data.items() if k in keep or k == key.split(".")[0]}
    return from_dict(StageConfig, data, where=f"stages.{stage.name}" if stage.name else "")


def split_and_ratio_error(split_file: str, ratio: float | None) -> ValueError:
    """The error of a config (or command line) that gives a split file and a ratio."""
    return ValueError(
        f"pass either a split file ({split_file}) or an accurate ratio ({ratio}), not both: a "
        "split file fixes which expressions are weak, so its ratio is read from the file"
    )


def _resolve_split_file(cfg: ExperimentConfig) -> SplitFileInfo | None:
    """Make an experiment config train on its ``data.split_file`` (in place, while resolving).

    The accurate ratio is the file's: ``data.accurate_ratio`` becomes None (the loader then
    keeps the file's accurate / weak marks) and the file's counts are logged and returned. A
    configured ratio other than ``DataConfig``'s default (e.g. from a YAML file) counts as
    given; a command line that passes both flags checks that itself
    (:func:`split_and_ratio_error`).

    Returns:
        The file's counts, or None when the config has no split file.

    Raises:
        ValueError: a ratio was given too; the method is ``full`` (it trains on every
            expression, so a weak split contradicts it); the file leaves a stage without
            samples (e.g. LRB-WREL with no weak refs).
    """
    data = cfg.data
    if not data.split_file:
        return None
    if cfg.method == "full":
        raise ValueError(
            f"--method full trains with every train expression accurate (accurate ratio 1), "
            f"so the weak split file {data.split_file} cannot apply; drop --split-file for "
            "Full (it reads the data set's own refs(unc).p), or use naive / only-accurate / lrb "
            "with the split file"
        )
    if data.accurate_ratio not in (None, DataConfig().accurate_ratio):
        raise split_and_ratio_error(data.split_file, data.accurate_ratio)
    info = split_file_info(data.split_file, data.train_split)
    data.accurate_ratio = None
    for stage in cfg.stages:
        weak_stage = stage.samples == "weak" or stage.kind in ("bank_init", "joint", "retrieve")
        if weak_stage and info.num_weak == 0:
            raise ValueError(
                f"stage {stage.name or stage.kind!r} needs weak samples but {info.describe()}; "
                "use a split file with weak refs or a method without a reference bank"
            )
        if stage.samples == "accurate" and info.num_accurate == 0:
            raise ValueError(
                f"stage {stage.name or stage.kind!r} trains on accurate samples but "
                f"{info.describe()}"
            )
    log.info("%s", info.describe())
    return info
