"""The dense AdamW of the reference bank (``bank.optimizer = "dense"``), as the released code runs.

The released code keeps the bank as one parameter under a plain (dense) AdamW: every step
updates *every* row, also those not in the batch (their gradient is 0). Between two visits of a
row its first moment decays as ``beta1 ** k`` but keeps moving the row (about ten more steps of
the same size at ``beta1 = 0.9``), its second moment decays as ``beta2 ** k`` (to 0.22 after the
~1,500 iterations between visits on RRSIS-D), and weight decay shrinks every row at every step.
So a visit moves a row much further under dense AdamW than under the row-sparse AdamW of
:class:`~wrel.methods.bank.ReferenceBank` at the same learning rate
(``research/bank_movement.py`` measures the factor; docs/paper-recipe.md records it).

This module reproduces those dynamics without the dense gradient tensor the released code
allocates: moments are decayed in place and the batch's rows receive their gradient by
``index_add_``; the update runs over chunks of rows, so the only temporaries are one chunk.
Memory is the bank's own (rows + two moments). The per-row step counts of the bank all advance
by one per step (every row is updated), and bias correction uses them, so a bank that was
trained sparse before (stage 2) and dense after (stage 3) stays well defined.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

__all__ = ["BANK_OPTIMIZERS", "DenseBankState", "dense_adamw_step"]

#: Valid ``bank.optimizer`` values: ``sparse`` (default, row-lazy AdamW) and ``dense``.
BANK_OPTIMIZERS = ("sparse", "dense")

_CHUNK_ELEMENTS = 1 << 22  # rows per chunk * P * D: ~16 MB float32 temporaries per chunk


class _AdamHyper(Protocol):
    beta1: float
    beta2: float
    eps: float


class DenseBankState(Protocol):
    """What the step reads and updates (:class:`~wrel.methods.bank.ReferenceBank` is one):
    ``rows (N, P, D)``, their two moments of the same shape, ``steps (N,)`` per-row step counts,
    the Adam hyper-parameters and the bank's projection (e.g. a norm bound)."""

    rows: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    steps: Tensor

    @property
    def cfg(self) -> _AdamHyper: ...

    @property
    def num_rows(self) -> int: ...

    def project_rows(self, rows: Tensor) -> None: ...


@torch.no_grad()
def dense_adamw_step(
    bank: DenseBankState,
    rows: Tensor,
    grads: Tensor,
    total: int,
    *,
    lr: float,
    weight_decay: float,
) -> None:
    """One dense AdamW step of ``bank`` (all rows), equal to ``torch.optim.AdamW`` on the whole
    ``bank.rows`` with a gradient that is zero outside ``rows``.

    Args:
        bank: the bank whose ``rows``, ``exp_avg``, ``exp_avg_sq`` and ``steps`` are updated.
        rows: ``(K,)`` row indices of the (all-rank) batch, duplicates allowed.
        grads: ``(K, P, D)`` their gradient sums (duplicates are summed).
        total: number of samples the sums cover (the gradient is divided by it).
        lr: learning rate of this step.
        weight_decay: decoupled weight decay, applied to every row.
    """
    if total <= 0:
        return
    cfg = bank.cfg
    b1, b2 = cfg.beta1, cfg.beta2
    uniq, inverse = torch.unique(rows, return_inverse=True)  # (U,), (K,)
    grad = torch.zeros(
        (uniq.numel(), *grads.shape[1:]), dtype=bank.rows.dtype, device=bank.rows.device
    ).index_add_(0, inverse.to(bank.rows.device), grads.to(bank.rows))
    grad /= total  # (U, P, D)
    bank.steps.add_(1)
    bank.rows.mul_(1.0 - lr * weight_decay)
    bank.exp_avg.mul_(b1).index_add_(0, uniq, grad, alpha=1.0 - b1)
    bank.exp_avg_sq.mul_(b2).index_add_(0, uniq, grad * grad, alpha=1.0 - b2)
    per_row = max(1, int(bank.rows[0].numel()) if bank.num_rows else 1)
    chunk = max(1, _CHUNK_ELEMENTS // per_row)
    for start in range(0, bank.num_rows, chunk):  # chunks of rows, not samples
        end = min(start + chunk, bank.num_rows)
        steps = bank.steps[start:end].double()
        bc1 = (1.0 - b1**steps).to(bank.rows.dtype)[:, None, None]  # (C, 1, 1)
        bc2 = (1.0 - b2**steps).to(bank.rows.dtype)[:, None, None]
        denom = (bank.exp_avg_sq[start:end] / bc2).sqrt_().add_(cfg.eps)
        bank.rows[start:end].sub_(lr * (bank.exp_avg[start:end] / bc1) / denom)
    bank.project_rows(torch.arange(bank.num_rows, device=bank.rows.device))
