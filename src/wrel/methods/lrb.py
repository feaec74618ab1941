"""LRB-WREL stage kinds: bank initialisation and inner-loop joint optimisation.

Stage 1 of LRB-WREL (teacher warm-up) is a :class:`~wrel.methods.supervised.SupervisedStage`
on the accurate samples. Stage 2 (:class:`BankInitStage`) fits only the bank through the frozen
model, in eval mode (``frozen_mode="train"``: train mode, as the released code); by default it
hands over its last bank, and with ``bank_select="train-oIoU"`` (the released selection) the bank
of the epoch with the best oIoU on the very weak samples it was fitted to. Stage 3 (:class:`JointStage`) alternates bank steps through the frozen EMA
teacher with student steps on detached bank prompts; with ``ema_scope="segmenter"`` the teacher
shares the student's live text encoder. Bank gradients are taken with ``torch.autograd.grad``
for the bank rows only, so a bank step never writes ``.grad`` of any model weight (the live text
encoder's included).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from wrel.methods.bank import ReferenceBank, fill_prompts, text_inputs
from wrel.methods.base import (
    BankInitConfig,
    BankStageConfig,
    Handover,
    JointConfig,
    PreparedBatch,
    Stage,
    StageContext,
)
from wrel.methods.ema import EmaTeacher, ema_momentum
from wrel.methods.losses import (
    confidence_threshold,
    consistency_loss,
    per_sample_seg_loss,
    seg_loss,
)
from wrel.methods.optim import build_optimizer, build_poly_scheduler, poly_factor

__all__ = ["BankInitStage", "JointStage", "bank_update", "ensure_bank"]


def ensure_bank(ctx: StageContext) -> ReferenceBank:
    """The handed-over bank, or a fresh one over ``ctx.weak_ids`` (same seed on every rank)."""
    if ctx.bank is None:
        ctx.bank = ReferenceBank.for_model(ctx.weak_ids, ctx.model, ctx.bank_cfg, ctx.device)
    return ctx.bank


def bank_update(
    bank: ReferenceBank,
    net: Any,
    b: PreparedBatch,
    *,
    lr: float,
    weight_decay: float,
    dice: str,
    reduction: str = "per-image-mean",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    check: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """One bank update from the weak samples of ``b`` through the frozen network ``net``.

    The rows of the batch's weak samples are a leaf; their prompts fill the free text slots
    after the class name; the gradient of the summed per-sample segmentation loss is taken for
    the rows only (``torch.autograd.grad``: no model weight accumulates a ``.grad``) and applied
    by the bank's optimiser, which divides it by the (all-rank) count of weak samples: the bank
    moves along the gradient of the batch loss of ``reduction`` over the weak samples
    (:func:`~wrel.methods.losses.per_sample_seg_loss`). A collective under torch.distributed
    (every rank calls it).

    Args:
        check: called with the summed loss before the bank moves (e.g. a finiteness check).

    Returns:
        The mean segmentation loss of this rank's weak samples (0 when there are none).
    """
    weak = b.is_weak
    num_weak = int(weak.sum())
    rows = bank.row_index(b.sample_ids[weak])  # (W,)
    leaf = bank.rows[rows].clone().requires_grad_(True)  # (W, P, D or V)
    loss_sum = torch.zeros((), device=b.images.device)
    if num_weak:
        with torch.no_grad():
            embeds = net.embed_tokens(b.input_ids[weak])  # (W, L, D)
        prompts = bank.prompts(rows, leaf)  # (W, P, D)
        filled, mask = fill_prompts(
            embeds, b.attention_mask[weak], prompts, torch.ones_like(rows, dtype=torch.bool)
        )
        with autocast():
            out = net(b.images[weak], inputs_embeds=filled, attention_mask=mask)
        loss_sum = per_sample_seg_loss(out.logits, b.masks[weak], dice, reduction).sum()
    if check is not None:
        check(loss_sum)
    grads = torch.zeros_like(leaf)
    if num_weak:
        (grads,) = torch.autograd.grad(loss_sum, leaf)
    bank.apply_gradients(rows, grads, num_weak, lr=lr, weight_decay=weight_decay)
    return loss_sum.detach() / max(num_weak, 1)


class _BankStepMixin(Stage):
    bank: ReferenceBank
    cfg: BankStageConfig

    def bank_step(self, net: Any, b: PreparedBatch, lr: float, progress: float) -> Tensor:
        """One bank update from the weak samples of ``b`` through the frozen ``net``
        (:func:`bank_update`); raises on a non-finite loss before the bank moves.

        A collective under torch.distributed: every rank calls it, with or without weak samples.

        Returns:
            The mean segmentation loss of this rank's weak samples (0 when there are none).
        """
        return bank_update(
            self.bank,
            net,
            b,
            lr=lr,
            weight_decay=self.cfg.bank_weight_decay,
            dice=self.cfg.dice,
            reduction=self.cfg.loss_reduction,
            autocast=self.autocast,
            check=lambda loss: self.check_finite(loss, "bank loss", progress),
        )

    def bank_lr(self, progress: float) -> float:
        """Bank learning rate with the poly schedule over the stage."""
        return self.cfg.bank_lr * poly_factor(progress, self.cfg.epochs, self.cfg.optim.poly_power)


class BankInitStage(_BankStepMixin):
    """Stage 2: train only the bank, on weak samples, through a frozen copy of the model.

    The copy runs in eval mode, or with ``cfg.frozen_mode == "train"`` in train mode (stochastic
    depth on, BatchNorm on batch statistics; the copy's running statistics then drift, but they
    are never used in train mode and the copy is discarded at the stage end).

    With ``cfg.bank_select == "train-oIoU"`` the trainer scores the copy (eval mode) with the
    bank on the stage's own samples after every epoch (:meth:`train_scoring`); the rows of the
    best epoch (strictly best, so the first of a tie) are kept and handed over. The moments stay
    those of the last step (a ``bank_moments="fresh"`` joint stage drops them, as released).
    """

    cfg: BankInitConfig

    def __init__(self, cfg: BankInitConfig, ctx: StageContext) -> None:
        super().__init__(cfg, ctx)
        if cfg.frozen_mode not in ("eval", "train"):
            raise ValueError(
                f"bank_init: frozen_mode must be eval or train, got {cfg.frozen_mode!r}"
            )
        if cfg.bank_select not in ("last", "train-oIoU"):
            raise ValueError(
                f"bank_init: bank_select must be last or train-oIoU, got {cfg.bank_select!r}"
            )
        self.bank = ensure_bank(ctx)
        self.frozen = EmaTeacher(self.model)  # a frozen copy; the student is untouched
        self.best_rows: Tensor | None = None  # bank_select=train-oIoU: rows of the best epoch
        self.best_value = float("-inf")
        self.best_epoch = -1

    def train_scoring(self) -> tuple[Any, ReferenceBank] | None:
        """The frozen copy and the bank to score on the stage's samples at epoch ends."""
        return (self.frozen.module, self.bank) if self.cfg.bank_select == "train-oIoU" else None

    def observe_train_score(self, metrics: dict[str, Any], where: dict[str, Any]) -> None:
        value = float(metrics["oIoU"])
        if value > self.best_value:
            self.best_value, self.best_epoch = value, int(where["epoch"])
            self.best_rows = self.bank.rows.detach().clone()

    def handover(self) -> Handover:
        if self.best_rows is not None:
            self.bank.rows.copy_(self.best_rows)
        return super().handover()

    def handover_info(self) -> dict[str, Any] | None:
        if self.cfg.bank_select != "train-oIoU":
            return None
        return {
            "bank_select": "train-oIoU",
            "epoch": self.best_epoch,
            "train_oIoU": self.best_value,
        }

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, float]:
        b = self.prepare(batch)
        # set every step: a .train()/.eval() call on the stage resets an EmaTeacher to eval
        self.frozen.module.train(self.cfg.frozen_mode == "train")
        loss = self.bank_step(self.frozen.module, b, self.bank_lr(progress), progress)
        return {"bank_loss": float(loss), "bank_lr": self.bank_lr(progress)}

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        state = {"model": self.model.state_dict(), "bank": self.bank.state_dict()}
        if self.best_rows is not None:
            state["best"] = {
                "rows": self.best_rows,
                "value": torch.tensor(self.best_value, dtype=torch.float64),
                "epoch": torch.tensor(self.best_epoch),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.model.load_state_dict(state["model"], strict=True)
        self.frozen.module.load_state_dict(state["model"], strict=True)
        self.bank.load_state_dict(state["bank"])
        if "best" in state:
            best = state["best"]
            self.best_rows = best["rows"].to(self.bank.rows)
            self.best_value, self.best_epoch = float(best["value"]), int(best["epoch"])


class JointStage(_BankStepMixin):
    """Stage 3: bank step(s) via the EMA teacher, student step, EMA update; every iteration."""

    cfg: JointConfig

    def __init__(self, cfg: JointConfig, ctx: StageContext) -> None:
        super().__init__(cfg, ctx)
        if cfg.bank_steps < 0 or cfg.bank_update_every < 1 or not cfg.ema_time_scale > 0:
            raise ValueError(
                f"joint stage: bank_steps must be >= 0, bank_update_every >= 1 and "
                f"ema_time_scale > 0, got {cfg.bank_steps}, {cfg.bank_update_every} and "
                f"{cfg.ema_time_scale}"
            )
        if not 0.0 <= cfg.prompt_dropout <= 1.0:
            raise ValueError(
                f"joint stage: prompt_dropout must be in [0, 1], got {cfg.prompt_dropout}"
            )
        if cfg.student_init not in ("handover", "pretrained"):
            raise ValueError(
                f"joint stage: student_init must be handover or pretrained, got "
                f"{cfg.student_init!r}"
            )
        self.bank = ensure_bank(ctx)
        # starts from the handed-over (stage-1) weights; "segmenter" ties the text encoder
        self.teacher = EmaTeacher(self.model, cfg.ema_scope, cfg.ema_buffers)
        if cfg.bank_moments == "fresh":  # a new bank AdamW, as released (resume restores it)
            self.bank.reset_optimizer()
        elif cfg.bank_moments != "carry":
            raise ValueError(
                f"joint stage: bank_moments must be carry or fresh, got {cfg.bank_moments!r}"
            )
        if cfg.student_init == "pretrained":
            self._reset_student(ctx.initial_state)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_poly_scheduler(
            self.optimizer, self.total_iters, cfg.optim.poly_power
        )
        self.__dict__["forward_model"] = ctx.wrap(self.model)

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, float]:
        b = self.prepare(batch)
        logs: dict[str, float] = {}
        iteration = round(progress * self.ctx.iters_per_epoch)
        if iteration % self.cfg.bank_update_every == 0:
            for _ in range(self.cfg.bank_steps):
                logs["bank_loss"] = float(
                    self.bank_step(self.teacher.module, b, self.bank_lr(progress), progress)
                )
        self.model.train()
        prompted = self.prompt_dropout(b.is_weak)  # (B,) weak samples that keep their prompts
        text = text_inputs(
            self.model, b.input_ids, b.attention_mask, self.bank, b.sample_ids, prompted
        )
        with self.autocast():
            out = self.forward_model(b.images, **text)
        loss = seg_loss(out.logits, b.masks, self.cfg.dice, self.cfg.loss_reduction)
        logs["seg_loss"] = float(loss.detach())
        if self.cfg.consistency_weight > 0:
            loss = loss + self.cfg.consistency_weight * self._consistency(out.logits, b, progress)
        self.check_finite(loss, "student loss", progress)
        self.optimizer_step(self.optimizer, loss, self.model.parameters())
        logs["lr"] = float(self.optimizer.param_groups[0]["lr"])
        self.scheduler.step()
        momentum = ema_momentum(progress, self.cfg.ema_time_scale)
        self.teacher.update(self.model, momentum)
        logs.update(loss=float(loss.detach()), ema_momentum=momentum)
        return logs

    def _reset_student(self, initial: dict[str, Any] | None) -> None:
        """The student back to its weights before any stage (``student_init="pretrained"``),
        except the modules the EMA teacher shares with it (its text encoder with
        ``ema_scope="segmenter"``), which stay the teacher's."""
        if initial is None:
            raise ValueError(
                "joint stage: student_init=pretrained needs the initial weights "
                "(StageContext.initial_state), which the trainer keeps when a stage asks for them"
            )
        tied = tuple(f"{name}." for name in self.teacher.tied)
        state = {k: v for k, v in initial.items() if not k.startswith(tied)}
        missing = set(self.model.state_dict()) - set(state)
        if any(not k.startswith(tied) for k in missing):
            raise ValueError(f"joint stage: initial weights lack {sorted(missing)[:5]}")
        self.model.load_state_dict(state, strict=False)

    def prompt_dropout(self, is_weak: Tensor) -> Tensor:
        """``is_weak`` with each weak sample dropped (bare class name in the student step) with
        probability ``cfg.prompt_dropout``; drawn from the CPU generator, which resume restores.
        """
        if self.cfg.prompt_dropout <= 0:
            return is_weak
        keep = torch.rand(is_weak.shape[0]) >= self.cfg.prompt_dropout  # (B,)
        return is_weak & keep.to(is_weak.device)

    def _consistency(self, student_logits: Tensor, b: PreparedBatch, progress: float) -> Tensor:
        start, end = self.cfg.consistency_threshold
        with torch.no_grad(), self.autocast():
            text = text_inputs(
                self.teacher.module, b.input_ids, b.attention_mask, self.bank, b.sample_ids,
                b.is_weak,
            )  # fmt: skip
            teacher_logits = self.teacher(b.images, **text).logits
        threshold = confidence_threshold(progress, start, end, self.cfg.consistency_ramp_epochs)
        return consistency_loss(
            student_logits,
            teacher_logits,
            temperature=self.cfg.consistency_temperature,
            threshold=threshold,
        )

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "model": self.model.state_dict(),
            "teacher": self.teacher.averaged_state_dict(),  # tied text encoder left out
            "bank": self.bank.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.model.load_state_dict(state["model"], strict=True)
        self.teacher.load_averaged_state_dict(state["teacher"])
        self.bank.load_state_dict(state["bank"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
