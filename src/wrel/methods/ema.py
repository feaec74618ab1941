"""EMA teacher and its dynamic momentum schedule (PAPER.md section 5, step 3c).

Unlike the reference code, the EMA covers buffers too: BatchNorm running statistics are
averaged like parameters and integer buffers (``num_batches_tracked``) are copied, so the
teacher never keeps stale normalisation statistics.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ema_momentum", "EmaTeacher"]


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

    The teacher is always in eval mode and never requires gradients; ``train()`` calls are
    ignored so that a parent ``.train()`` cannot switch its BatchNorm/dropout back on.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.eval()
        self.module.requires_grad_(False)

    def train(self, mode: bool = True) -> EmaTeacher:  # noqa: ARG002 - always eval
        """Keep the teacher in eval mode whatever ``mode`` is."""
        self.module.eval()
        self.training = False
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """``teacher <- momentum * teacher + (1 - momentum) * student`` over params and buffers."""
        weight = 1.0 - momentum
        t_params = list(self.module.parameters())
        s_params = list(student.parameters())
        if len(t_params) != len(s_params):
            raise ValueError("EMA teacher and student have different parameter lists")
        for t, s in zip(t_params, s_params, strict=True):
            t.lerp_(s.detach().to(t.dtype), weight)
        for tb, sb in zip(self.module.buffers(), student.buffers(), strict=True):
            if tb.is_floating_point():
                tb.lerp_(sb.to(tb.dtype), weight)
            else:
                tb.copy_(sb)

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run the teacher (no gradients to its weights; inputs may still require grad)."""
        return self.module(*args, **kwargs)
