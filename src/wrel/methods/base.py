"""The stage interface every training method is built from.

A method is a list of stages (data in the experiment config); a stage kind is an ``nn.Module``
whose :meth:`Stage.training_step` does its own forward, backward and optimizer steps. The
trainer hands each stage the previous stage's :class:`Handover` (the student model and the
reference bank), and never needs to know which method it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from wrel.core.config_io import from_dict
from wrel.core.distributed import average_buffers
from wrel.methods.bank import BankConfig, ReferenceBank
from wrel.methods.optim import OptimConfig

__all__ = [
    "StageConfig",
    "SupervisedConfig",
    "BankStageConfig",
    "BankInitConfig",
    "JointConfig",
    "RetrieveConfig",
    "STAGE_CONFIGS",
    "ONE_PASS_KINDS",
    "stage_keys",
    "stage_config",
    "StageContext",
    "Handover",
    "PreparedBatch",
    "Stage",
    "all_finite",
    "NonFiniteLossError",
]

StageKind = Literal["supervised", "bank_init", "joint", "retrieve"]
SampleSet = Literal["accurate", "weak", "all"]


class NonFiniteLossError(FloatingPointError):
    """Raised before any optimizer step when a loss is NaN or infinite."""


Dice = Literal["foreground-mean-smooth1", "per-class-sum-smooth1e-6", "both-classes-sum-smooth1e-6"]


@dataclass
class StageConfig:
    """The keys of every stage kind; each kind's own knobs are in its subclass.

    A stage is configured by the class of its kind (:data:`STAGE_CONFIGS`):
    :class:`SupervisedConfig`, :class:`BankInitConfig` or :class:`JointConfig`. A mapping with
    a ``kind`` (a preset, a YAML file, ``config.json``) becomes that class through
    :meth:`config_class_for`; a key its kind does not have is an error naming the kinds that
    have it. Defaults suit tiny models on the synthetic benchmark; the paper's values are in
    docs/paper-recipe.md.
    """

    kind: StageKind = "supervised"
    samples: SampleSet = "all"  # training samples the stage iterates over
    epochs: int = 1
    # share of the stage's samples one epoch visits, in (0, 1]: the first ones of the epoch's
    # shuffle, so a random subset redrawn every epoch (wrel.engine.loaders); 1 visits all.
    # Optimizer steps, schedules and resume count the shortened epoch (`wrel demo` shortens
    # its bank initialisation and joint stage: wrel.studies.profiles.DEMO_EPOCH_FRACTIONS)
    epoch_fraction: float = 1.0
    name: str = ""  # for logs; default "<index>-<kind>"
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Dice term of the segmentation loss (wrel.methods.losses.DICE_VARIANTS)
    dice: Dice = "foreground-mean-smooth1"
    # how the loss reduces a batch (wrel.methods.losses.REDUCTIONS): "per-image-mean", or
    # "batch-sum" (released: CE a weighted mean over the batch's pixels, Dice summed over images)
    loss_reduction: Literal["per-image-mean", "batch-sum"] = "per-image-mean"
    evaluate: bool = True  # evaluate the student on val after each epoch of this stage
    eval_every: int = 0  # evaluate every N epochs of this stage; 0: train.eval_every

    def __post_init__(self) -> None:
        owner = STAGE_CONFIGS.get(self.kind)
        if owner is not None and type(self) is not owner:
            raise TypeError(
                f"a {self.kind} stage is configured by {owner.__name__}, not "
                f"{type(self).__name__} (wrel.methods.base.STAGE_CONFIGS)"
            )

    @classmethod
    def config_class_for(cls, data: dict[str, Any], where: str = "") -> type[StageConfig]:
        """The config class of the stage kind ``data["kind"]`` (``wrel.core.config_io`` hook).

        Raises:
            ValueError: unknown kind, or a key of ``data`` that this kind does not have (the
                message names the stage, its kind, the key and the kinds that have it).
        """
        if cls is not StageConfig:
            return cls
        at = f"{where}." if where else ""
        kind = data.get("kind", "supervised")
        if kind not in STAGE_CONFIGS:
            raise ValueError(f"{at}kind: {kind!r} is not one of {sorted(STAGE_CONFIGS)}")
        chosen = STAGE_CONFIGS[kind]
        own = stage_keys(chosen)
        for key in data:
            if key in own:
                continue
            owners = [k for k, c in STAGE_CONFIGS.items() if key in stage_keys(c)]
            if owners:
                stage = data.get("name") or where or kind
                raise ValueError(
                    f"stage {stage!r} (kind {kind}) has no key {key!r}: {key} belongs to the "
                    f"stage kind(s) {', '.join(owners)} only; keys of a {kind} stage: "
                    f"{sorted(own)}"
                )
        return chosen  # a key of no kind: from_dict lists the valid keys


@dataclass
class SupervisedConfig(StageConfig):
    """A supervised stage (Only-Accurate, Naive, Full, the LRB teacher warm-up)."""

    kind: Literal["supervised"] = "supervised"
    # what a stage that is not the last hands to the next: "last", its model at the stage's end
    # (the released recipe's teacher); "best", its model at its best val point
    # (``train.select_metric``), kept in memory and in the resume state. The last stage's best
    # model is always the run's exported result.
    handover: Literal["last", "best"] = "last"
    # the text of the weak samples: "class_name" (Naive-WREL), or "retrieved": the real
    # expression a preceding retrieve stage chose for each (wrel.methods.retrieval)
    weak_text: Literal["class_name", "retrieved"] = "class_name"


@dataclass
class BankStageConfig(StageConfig):
    """The keys of the stage kinds that train the reference bank (bank_init and joint)."""

    kind: Literal["bank_init", "joint"] = "joint"
    bank_lr: float = 5e-3  # paper: 1e-5 (bank init), 1e-6 (joint) for BERT-base on RRSIS-D
    bank_weight_decay: float = 0.01


@dataclass
class BankInitConfig(BankStageConfig):
    """Stage 2 of LRB-WREL: fit the bank through a frozen copy of the model."""

    kind: Literal["bank_init"] = "bank_init"  # type: ignore[assignment]
    # mode of the frozen copy the bank is fitted through; "train" (the released code) keeps
    # stochastic depth and BatchNorm batch statistics on (a stochastic teacher)
    frozen_mode: Literal["eval", "train"] = "eval"
    # the bank handed to the next stage: "last" (the stage's end), or "train-oIoU" (released):
    # the bank of the epoch whose oIoU on this stage's own (weak training) samples, scored through
    # the frozen model in eval mode, is best. A selection on the fitted samples (docs/paper-recipe.md)
    bank_select: Literal["last", "train-oIoU"] = "last"


@dataclass
class JointConfig(BankStageConfig):
    """Stage 3 of LRB-WREL: bank steps through the EMA teacher, student steps, EMA update."""

    kind: Literal["joint"] = "joint"  # type: ignore[assignment]
    bank_steps: int = 1  # bank updates per iteration
    bank_update_every: int = 1  # do the bank step(s) every k iterations
    consistency_weight: float = 0.0  # teacher->student KL; 0 as in the released recipe
    consistency_temperature: float = 0.7
    consistency_threshold: tuple[float, float] = (0.6, 0.8)  # ramped over the epochs below
    consistency_ramp_epochs: float = 5.0
    # EMA momentum a -> a ** ema_time_scale: the paper's schedule assumes ~1500 iterations per
    # epoch; k times fewer per epoch and k keeps its horizon in epochs.
    ema_time_scale: float = 1.0
    # each weak sample reads its bare class name, without its bank prompts, in the student
    # step with this probability (docs/variants.md "Bank variants")
    prompt_dropout: float = 0.0
    # what the EMA teacher averages; "segmenter" (the released code) shares the student's live
    # text encoder with the teacher (wrel.methods.ema.EMA_SCOPES)
    ema_scope: Literal["segmenter+text", "segmenter"] = "segmenter+text"
    # what the EMA does with buffers (BatchNorm statistics): "average" them like parameters
    # (floats; integer counters copied), or "skip" them (released: the teacher keeps its
    # stage-1 statistics). The teacher is in eval mode either way (wrel.methods.ema)
    ema_buffers: Literal["average", "skip"] = "average"
    # the bank's AdamW state at the stage start: "carry" the bank-init stage's moments and step
    # counts, or "fresh" (released: a new AdamW; moments and counts start at 0)
    bank_moments: Literal["carry", "fresh"] = "carry"
    # where the student starts. "handover": the previous stage's model (the teacher warm-up's),
    # as released; "pretrained": the weights as built before any stage (ImageNet backbone,
    # pretrained text encoder, fresh fusion and decoder; the ablation that separates the
    # teacher initialisation from the bank), except what the EMA teacher shares with it
    student_init: Literal["handover", "pretrained"] = "handover"


@dataclass
class RetrieveConfig(StageConfig):
    """Choose, per weak training sample, a real expression written for another sample of its
    category: the one under which a frozen copy of the model segments the sample's mask best
    (wrel.methods.retrieval). One pass over the weak samples; no weight moves."""

    kind: Literal["retrieve"] = "retrieve"
    samples: SampleSet = "weak"
    evaluate: bool = False
    candidates: int = 16  # accurate expressions of the same category drawn per weak sample
    seed: int = 0  # draws the candidates (the same on every rank)
    chunk: int = 64  # candidate forwards per pass of the frozen model
    # precision of those forwards: "inherit" (train.amp) or "bf16" (a ranking needs no fp32:
    # on the project's CPU, bf16 with channels_last scores 2x the candidates per second)
    autocast: Literal["inherit", "bf16"] = "inherit"


#: Stage kind -> the config class that owns its keys.
STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "supervised": SupervisedConfig,
    "bank_init": BankInitConfig,
    "joint": JointConfig,
    "retrieve": RetrieveConfig,
}

#: Stage kinds whose epochs neither ``wrel train --epochs`` nor a bench profile's equal-steps
#: scaling touch: bank initialisation (its visits per row) and retrieval (one pass).
ONE_PASS_KINDS = frozenset({"bank_init", "retrieve"})


def stage_keys(cls: type[StageConfig]) -> set[str]:
    """The keys a stage config class has."""
    return {f.name for f in fields(cls)}


def stage_config(kind: str, **values: Any) -> StageConfig:
    """A stage config of ``kind`` from plain values (nested ``optim`` as a mapping or config)."""
    return from_dict(StageConfig, {"kind": kind, **values})


@dataclass
class Handover:
    """What one stage passes to the next."""

    model: nn.Module
    bank: ReferenceBank | None = None
    expressions: Any = None  # wrel.methods.retrieval.ExpressionBank of a retrieve stage


@dataclass
class StageContext:
    """Everything a stage needs from the engine, built by the trainer."""

    model: Any  # the RefSegModel (student), already on ``device``
    device: torch.device
    iters_per_epoch: int
    weak_ids: list[int]  # sample ids of the weak training samples (bank rows)
    bank_cfg: BankConfig = field(default_factory=BankConfig)
    bank: ReferenceBank | None = None
    amp: Literal["none", "bf16"] = "none"
    channels_last: bool = False
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m  # DDP wrapper (identity: one process)
    # the model's weights as built, before any stage (only kept when a stage asks for them)
    initial_state: dict[str, Any] | None = None
    expressions: Any = None  # wrel.methods.retrieval.ExpressionBank handed over, if any
    # the training samples (wrel.data.Sample): a retrieve stage draws its candidates from them
    train_samples: Sequence[Any] = ()


@dataclass
class PreparedBatch:
    """A collated batch on the training device, with tokenised text."""

    images: Tensor  # (B, 3, H, W)
    masks: Tensor  # (B, H, W) int64
    input_ids: Tensor  # (B, L)
    attention_mask: Tensor  # (B, L)
    sample_ids: Tensor  # (B,)
    is_weak: Tensor  # (B,) bool


def all_finite(value: Tensor) -> bool:
    """True when ``value`` is finite on every rank (a collective under torch.distributed)."""
    flag = torch.isfinite(value.detach()).all().to(torch.int32).reshape(1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


class Stage(nn.Module):
    """Base class of the stage kinds; see the module docstring for the contract."""

    model: Any  # RefSegModel: tokenize / embed_tokens / forward
    forward_model: Callable[..., Any]  # the (DDP-)wrapped model's forward

    def __init__(self, cfg: StageConfig, ctx: StageContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx
        self.model = ctx.model

    @property
    def total_iters(self) -> int:
        return max(1, self.cfg.epochs * self.ctx.iters_per_epoch)

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, float]:
        """One iteration: forward, backward and optimizer steps; returns scalars to log.

        Args:
            batch: output of ``wrel.data.collate_samples``.
            progress: ``epoch + iteration / iters_per_epoch`` within this stage.
        """
        raise NotImplementedError

    def eval_model(self) -> nn.Module:
        """The model to evaluate (the student, used with real expressions and no bank)."""
        return self.model

    def handover(self) -> Handover:
        """The student and bank for the next stage."""
        return Handover(self.model, self.ctx.bank, self.ctx.expressions)

    def observe_val(self, value: float, where: dict[str, Any]) -> None:
        """A val score of :meth:`eval_model` at ``where`` (stage, epoch, step), given by the
        trainer after each evaluation of a stage that is not the run's last; a stage that hands
        over its best model keeps it here."""

    def handover_info(self) -> dict[str, Any] | None:
        """What :meth:`handover` handed over, for the run's log; None: the stage's last state."""
        return None

    def train_scoring(self) -> tuple[nn.Module, Any] | None:
        """``(model, bank)`` that the trainer scores on this stage's own training samples after
        every epoch, passing the metrics to :meth:`observe_train_score`; None (default): none."""
        return None

    def observe_train_score(self, metrics: dict[str, Any], where: dict[str, Any]) -> None:
        """The metrics of :meth:`train_scoring`'s model on the stage's samples at ``where``."""

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Everything needed to resume: weights, optimizer, scheduler, teacher, bank."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore :meth:`state_dict` (strict)."""
        raise NotImplementedError

    # helpers shared by the kinds -------------------------------------------------------

    def prepare(self, batch: dict[str, Any]) -> PreparedBatch:
        """Move a collated batch to the device and tokenise its text."""
        device = self.ctx.device
        input_ids, attention_mask = self.model.tokenize(list(batch["text"]))
        images = batch["image"].to(device, non_blocking=True)
        if self.ctx.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return PreparedBatch(
            images=images,
            masks=batch["mask"].to(device, non_blocking=True),
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            sample_ids=torch.as_tensor(batch["sample_id"]).to(device),
            is_weak=torch.as_tensor(batch["is_weak"]).to(device, torch.bool),
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the training device when ``amp == "bf16"``."""
        if self.ctx.amp == "bf16":
            return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def check_finite(self, loss: Tensor, what: str, progress: float) -> None:
        """Raise :class:`NonFiniteLossError` (on every rank) if ``loss`` is not finite."""
        if not all_finite(loss):
            raise NonFiniteLossError(
                f"non-finite {what} ({float(loss.detach()):.4g} on this rank) at progress "
                f"{progress:.3f} of stage {self.cfg.name or self.cfg.kind!r}; lower the learning "
                "rates or check the data; the last good checkpoint is kept"
            )

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, loss: Tensor, params: Iterator[Tensor] | None
    ) -> None:
        """zero_grad, backward, optional grad clipping, step; then, under torchrun on CPU, the
        student's BatchNorm statistics are averaged over the ranks (identical on every rank)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip > 0 and params is not None:
            torch.nn.utils.clip_grad_norm_(list(params), self.cfg.optim.grad_clip)
        optimizer.step()
        if self.ctx.device.type != "cuda":  # CUDA ranks use SyncBatchNorm instead
            average_buffers(self.model)
