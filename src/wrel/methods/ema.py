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


def ema_momentum(progress: float) -> float:
    """Momentum ``a`` of ``teacher <- a * teacher + (1 - a) * student``.

    Args:
        progress: ``epoch + iteration / iterations_per_epoch`` within the joint stage.

    Returns:
        0.95 -> 0.99 linearly for ``p < 1``, 0.99 -> 0.999 linearly for ``1 <= p < 3``,
        then 0.9995.
    """
    p = max(progress, 0.0)
    if p < 1.0:
        return 0.95 + (0.99 - 0.95) * p
    if p < 3.0:
        return 0.99 + (0.999 - 0.99) * (p - 1.0) / 2.0
    return 0.9995


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
