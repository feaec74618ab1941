"""The stage interface every training method is built from.

A method is a list of stages (data in the experiment config); a stage kind is an ``nn.Module``
whose :meth:`Stage.training_step` does its own forward, backward and optimizer steps. The
trainer hands each stage the previous stage's :class:`Handover` (the student model and the
reference bank), and never needs to know which method it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from wrel.core.distributed import average_buffers
from wrel.methods.bank import BankConfig, ReferenceBank
from wrel.methods.optim import OptimConfig

__all__ = [
    "StageConfig",
    "StageContext",
    "Handover",
    "PreparedBatch",
    "Stage",
    "all_finite",
    "NonFiniteLossError",
]

StageKind = Literal["supervised", "bank_init", "joint"]
SampleSet = Literal["accurate", "weak", "all"]


class NonFiniteLossError(FloatingPointError):
    """Raised before any optimizer step when a loss is NaN or infinite."""


@dataclass
class StageConfig:
    """One stage of a method. Bank and consistency knobs are read only by the kinds that use them.

    Defaults suit tiny models on the synthetic benchmark; the paper's values are in
    docs/training.md.
    """

    kind: StageKind = "supervised"
    samples: SampleSet = "all"  # training samples the stage iterates over
    epochs: int = 1
    name: str = ""  # for logs; default "<index>-<kind>"
    optim: OptimConfig = field(default_factory=OptimConfig)
    bank_lr: float = 5e-3  # paper: 1e-5 (bank init), 1e-6 (joint) for BERT-base on RRSIS-D
    bank_weight_decay: float = 0.01
    bank_steps: int = 1  # bank updates per iteration (joint)
    bank_update_every: int = 1  # do the bank step(s) every k iterations (joint)
    consistency_weight: float = 0.0  # teacher->student KL; 0 as in the released recipe
    consistency_temperature: float = 0.7
    consistency_threshold: tuple[float, float] = (0.6, 0.8)  # ramped over the epochs below
    consistency_ramp_epochs: float = 5.0
    # EMA momentum a -> a ** ema_time_scale (joint): the paper's schedule assumes ~1500
    # iterations per epoch; k times fewer per epoch and k keeps its horizon in epochs.
    ema_time_scale: float = 1.0
    # joint: each weak sample reads its bare class name, without its bank prompts, in the
    # student step with this probability (docs/training.md "Bank variants")
    prompt_dropout: float = 0.0
    # Dice term of the segmentation loss (wrel.methods.losses.DICE_VARIANTS)
    dice: Literal["foreground-mean-smooth1", "both-classes-sum-smooth1e-6"] = (
        "foreground-mean-smooth1"
    )
    # bank_init: mode of the frozen copy the bank is fitted through; "train" (the released
    # code) keeps stochastic depth and BatchNorm batch statistics on (a stochastic teacher)
    frozen_mode: Literal["eval", "train"] = "eval"
    # joint: what the EMA teacher averages; "segmenter" (the released code) shares the
    # student's live text encoder with the teacher (wrel.methods.ema.EMA_SCOPES)
    ema_scope: Literal["segmenter+text", "segmenter"] = "segmenter+text"
    # joint: where the student starts. "handover": the previous stage's model (the teacher
    # warm-up's), as released; "pretrained": the weights as built before any stage (ImageNet
    # backbone, pretrained text encoder, fresh fusion and decoder; the ablation that separates
    # the teacher initialisation from the bank), except what the EMA teacher shares with it
    student_init: Literal["handover", "pretrained"] = "handover"
    evaluate: bool = True  # evaluate the student on val after each epoch of this stage
    eval_every: int = 0  # evaluate every N epochs of this stage; 0: train.eval_every


@dataclass
class Handover:
    """What one stage passes to the next."""

    model: nn.Module
    bank: ReferenceBank | None = None


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
        return Handover(self.model, self.ctx.bank)

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
