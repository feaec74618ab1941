"""EMA teacher and its dynamic momentum schedule (docs/training.md, the joint stage).

Buffers (:data:`EMA_BUFFERS`): by default (``average``) the EMA covers buffers too, BatchNorm
running statistics averaged like parameters and integer buffers (``num_batches_tracked``)
copied, so the teacher never keeps stale normalisation statistics. ``skip`` is the released
code: parameters only, the teacher's buffers stay those of the model it was copied from. The
teacher is in eval mode in both, so its BatchNorm layers always read their running statistics.

Scope (``EMA_SCOPES``): ``segmenter+text`` (default) averages the whole model;
``segmenter`` (the released code) averages the backbone, fusion and decoder only, and the
teacher's ``text_encoder`` *is* the student's live text encoder (one module, shared), so the
bank step goes through the student's current text encoder.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA_BUFFERS", "EMA_SCOPES", "ema_momentum", "EmaTeacher"]

#: What :meth:`EmaTeacher.update` does with buffers: average them, or skip them (as released).
EMA_BUFFERS = ("average", "skip")

#: EMA scope -> name prefixes of the student that the teacher shares instead of averaging.
EMA_SCOPES: dict[str, tuple[str, ...]] = {"segmenter+text": (), "segmenter": ("text_encoder",)}


def ema_momentum(progress: float, time_scale: float = 1.0) -> float:
    """Momentum ``a`` of ``teacher <- a * teacher + (1 - a) * student``.

    Args:
        progress: ``epoch + iteration / iterations_per_epoch`` within the joint stage.
        time_scale: the schedule's momentum is raised to this power, so the teacher forgets
            ``time_scale`` times faster per iteration. The paper's values suit ~1500 iterations
            per epoch (RRSIS-D at batch 8), where 0.9995 averages over ~1.3 epochs; with ``k``
            times fewer iterations per epoch, ``time_scale = k`` keeps that horizon in epochs.

    Returns:
        (0.95 -> 0.99 linearly for ``p < 1``, 0.99 -> 0.999 linearly for ``1 <= p < 3``,
        then 0.9995) ** ``time_scale``.
    """
    if not time_scale > 0:
        raise ValueError(f"ema time_scale must be > 0, got {time_scale}")
    p = max(progress, 0.0)
    if p < 1.0:
        a = 0.95 + (0.99 - 0.95) * p
    elif p < 3.0:
        a = 0.99 + (0.999 - 0.99) * (p - 1.0) / 2.0
    else:
        a = 0.9995
    return a**time_scale  # x ** 1.0 == x exactly: the default is the paper's schedule


class EmaTeacher(nn.Module):
    """A frozen copy of the student that follows it by exponential moving average.

    The teacher is always in eval mode and its own weights never require gradients; ``train()`` calls are
    ignored so that a parent ``.train()`` cannot switch its BatchNorm/dropout back on.

    Args:
        student: the model to follow.
        scope: a key of :data:`EMA_SCOPES`. With ``segmenter`` the student's ``text_encoder``
            child is shared (tied), not copied: it keeps the student's ``requires_grad`` flags,
            :meth:`update` skips it, and :meth:`averaged_state_dict` leaves it out. Its train /
            eval mode still follows the teacher's ``eval()`` calls, so a student step must set
            ``student.train()`` itself (the stages do).
        buffers: a value of :data:`EMA_BUFFERS`.
    """

    def __init__(
        self, student: nn.Module, scope: str = "segmenter+text", buffers: str = "average"
    ) -> None:
        super().__init__()
        if scope not in EMA_SCOPES:
            raise ValueError(f"unknown EMA scope {scope!r}; valid scopes: {sorted(EMA_SCOPES)}")
        if buffers not in EMA_BUFFERS:
            raise ValueError(f"unknown EMA buffers {buffers!r}; valid: {list(EMA_BUFFERS)}")
        self.scope = scope
        self.buffer_mode = buffers
        self.tied = EMA_SCOPES[scope]
        missing = [n for n in self.tied if not isinstance(getattr(student, n, None), nn.Module)]
        if missing:
            raise ValueError(f"EMA scope {scope!r}: the student has no child module(s) {missing}")
        # the memo maps each tied child to itself: deepcopy shares it instead of copying it
        memo = {id(getattr(student, name)): getattr(student, name) for name in self.tied}
        self.module = copy.deepcopy(student, memo)
        for name, param in self.module.named_parameters():
            if not self._is_tied(name):
                param.requires_grad_(False)
        self.module.eval()

    def _is_tied(self, name: str) -> bool:
        return any(name == p or name.startswith(f"{p}.") for p in self.tied)

    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's own (averaged) tensors: its state dict without the tied children."""
        return {k: v for k, v in self.module.state_dict().items() if not self._is_tied(k)}

    def load_averaged_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`averaged_state_dict`, strictly (missing or extra keys are errors)."""
        expected = set(self.averaged_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"EMA teacher state (scope {self.scope!r}) does not match: missing "
                f"{missing[:8]}, unexpected {unexpected[:8]}"
            )
        self.module.load_state_dict(state, strict=not self.tied)

    def train(self, mode: bool = True) -> EmaTeacher:  # noqa: ARG002 - always eval
        """Keep the teacher in eval mode whatever ``mode`` is."""
        self.module.eval()
        self.training = False
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """``teacher <- momentum * teacher + (1 - momentum) * student`` over parameters, and over
        buffers unless ``buffers == "skip"`` (tied children excluded: they are the student's)."""
        weight = 1.0 - momentum
        t_params = [(n, p) for n, p in self.module.named_parameters() if not self._is_tied(n)]
        s_params = [(n, p) for n, p in student.named_parameters() if not self._is_tied(n)]
        if [n for n, _ in t_params] != [n for n, _ in s_params]:
            raise ValueError("EMA teacher and student have different parameter lists")
        for (_, t), (_, s) in zip(t_params, s_params, strict=True):
            t.lerp_(s.detach().to(t.dtype), weight)
        if self.buffer_mode == "skip":
            return
        t_bufs = [b for n, b in self.module.named_buffers() if not self._is_tied(n)]
        s_bufs = [b for n, b in student.named_buffers() if not self._is_tied(n)]
        for tb, sb in zip(t_bufs, s_bufs, strict=True):
            if tb.is_floating_point():
                tb.lerp_(sb.to(tb.dtype), weight)
            else:
                tb.copy_(sb)

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run the teacher (no gradients to its weights; inputs may still require grad)."""
        return self.module(*args, **kwargs)
