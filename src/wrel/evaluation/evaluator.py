"""Accumulating evaluator: ``reset() / update(pred, gt, categories) / compute() -> dict``.

It stores only per-sample intersection/union counts (two int64 per expression) and whether the
prediction was empty (one bool), so it is cheap at any data set size, exact under accumulation (several updates equal one big update) and keeps the
per-sample IoUs that :mod:`wrel.theory` needs. Under ``torch.distributed`` ``compute()`` gathers
every rank's counts (without pickling) so that each rank reports the global metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from wrel.evaluation.gather import _device, all_gather_records, is_distributed
from wrel.evaluation.metrics import (
    ArrayLike,
    EvalProtocol,
    intersection_union,
    match_resolution,
    prediction_from_scores,
    summarize,
)

__all__ = ["Evaluator"]

log = logging.getLogger(__name__)

_NO_ID = -1  # stored sample id when update() got none; per_sample() reports it as None


def _to_tensor(x: ArrayLike) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x


class Evaluator:
    """Accumulates per-expression intersection/union and reports oIoU, mIoU and Prec@X.

    Args:
        protocol: an :class:`EvalProtocol`, or a short string for :meth:`EvalProtocol.parse`
            (``"input"``, ``"original"``, ``"input,empty=1"``).

    Example:
        >>> ev = Evaluator()
        >>> ev.update(pred, gt, categories=["vehicle", "ship"])  # (B, H, W) masks
        >>> ev.compute()["mIoU"]  # percentage
    """

    def __init__(self, protocol: EvalProtocol | str | None = None) -> None:
        if protocol is None:
            protocol = EvalProtocol()
        elif isinstance(protocol, str):
            protocol = EvalProtocol.parse(protocol)
        self.protocol = protocol
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated sample."""
        self._inter: list[torch.Tensor] = []
        self._union: list[torch.Tensor] = []
        self._ids: list[torch.Tensor] = []
        self._empty: list[torch.Tensor] = []  # bool (B,): no predicted foreground pixel
        self._categories: list[str] = []
        self._has_categories = True

    def __len__(self) -> int:
        return len(self._categories)

    def update(
        self,
        pred: ArrayLike,
        gt: ArrayLike,
        categories: Sequence[str] | None = None,
        sample_ids: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add a batch.

        Args:
            pred: predicted masks ``(B, H, W)`` bool, foreground probabilities ``(B, H, W)`` /
                ``(B, 1, H, W)``, or 2-class logits ``(B, 2, H, W)`` (see the protocol's rule).
            gt: ground-truth masks ``(B, H', W')``; when the size differs from ``pred``'s it is
                matched by nearest resizing as the protocol's ``resolution`` says.
            categories: class name per sample (enables the per-category split).
            sample_ids: stable id per sample (e.g. ref id), kept for :meth:`per_sample`.

        Raises:
            ValueError: on inconsistent batch sizes or shapes.
        """
        p = prediction_from_scores(_to_tensor(pred), self.protocol.prediction)
        g = _to_tensor(gt)
        if g.dim() == 2:
            g = g.unsqueeze(0)  # (H, W) -> (1, H, W)
        if p.dim() == 2:
            p = p.unsqueeze(0)
        p, g = match_resolution(p.bool(), g.bool().to(p.device), self.protocol.resolution)
        inter, union = intersection_union(p, g)
        empty = ~p.flatten(1).any(dim=1)  # (B,) bool, vectorised
        batch = inter.numel()
        if categories is not None and len(categories) != batch:
            raise ValueError(f"update got {len(categories)} categories for a batch of {batch}")
        ids = self._ids_tensor(sample_ids, batch)
        if categories is None:
            self._has_categories = False
        self._inter.append(inter.cpu())
        self._union.append(union.cpu())
        self._ids.append(ids)
        self._empty.append(empty.cpu())
        self._categories.extend(list(categories) if categories is not None else [""] * batch)

    @staticmethod
    def _ids_tensor(
        sample_ids: Sequence[int] | torch.Tensor | np.ndarray | None, batch: int
    ) -> torch.Tensor:
        if sample_ids is None:
            return torch.full((batch,), _NO_ID, dtype=torch.int64)
        if isinstance(sample_ids, torch.Tensor):
            ids = sample_ids.detach().cpu()
        else:
            ids = torch.from_numpy(np.asarray(list(sample_ids), dtype=np.int64))
        ids = ids.reshape(-1).to(torch.int64)
        if (ids < 0).any():
            raise ValueError("sample_ids must be non-negative (e.g. ref ids)")
        if ids.numel() != batch:
            raise ValueError(f"update got {ids.numel()} sample_ids for a batch of {batch}")
        return ids

    def merge(self, other: Evaluator) -> Evaluator:
        """Append ``other``'s samples to this evaluator (same protocol required); returns self."""
        if other.protocol != self.protocol:
            raise ValueError(
                f"cannot merge evaluators with different protocols: {self.protocol.describe()!r} "
                f"vs {other.protocol.describe()!r}"
            )
        self._inter.extend(other._inter)
        self._union.extend(other._union)
        self._ids.extend(other._ids)
        self._empty.extend(other._empty)
        self._categories.extend(other._categories)
        self._has_categories = self._has_categories and other._has_categories
        return self

    def _local(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        def cat(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

        return cat(self._inter), cat(self._union), cat(self._ids), list(self._categories)

    def _gathered(self, gather: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        inter, union, ids, cats = self._local()

        if gather and is_distributed():
            inter, union, ids, cats = all_gather_records(inter, union, ids, cats)
        return inter, union, ids, cats

    def compute(self, gather: bool = True) -> dict[str, Any]:
        """Metrics of everything accumulated, as percentages in [0, 100].

        Args:
            gather: when ``torch.distributed`` is initialised with several ranks, first gather
                every rank's samples (a collective: call it on every rank). Ignored otherwise.

        Returns:
            ``{"oIoU", "mIoU", "Prec@0.5".."Prec@0.9", "num_samples", "per_category":
            {name: {...}}, "protocol": {...}, "empty_prediction_share"}``; ``per_category``
            is empty when any update came without categories; ``empty_prediction_share`` is
            the share (0-1) of samples whose predicted mask has no foreground pixel.
        """
        inter, union, _, cats = self._gathered(gather)
        if inter.numel() == 0:
            log.warning("Evaluator.compute() called with no samples; metrics are 0")
        has_categories = self._has_categories and all(cats)
        metrics = summarize(inter, union, cats if has_categories else None, self.protocol)
        metrics["empty_prediction_share"] = self._empty_share(gather)
        return metrics

    def _empty_share(self, gather: bool) -> float:
        """Share of accumulated (all ranks' with ``gather``) predictions that are empty."""
        empty = torch.cat(self._empty) if self._empty else torch.zeros(0, dtype=torch.bool)
        counts = torch.tensor([int(empty.sum()), empty.numel()], dtype=torch.int64)

        if gather and is_distributed():
            import torch.distributed as dist

            counts = counts.to(_device())
            dist.all_reduce(counts)  # sum of (empty, total) over ranks
            counts = counts.cpu()
        total = int(counts[1])
        return round(int(counts[0]) / total, 6) if total else 0.0

    def per_sample(self, gather: bool = False) -> list[tuple[int | None, str | None, int, int]]:
        """``(sample_id, category, I, U)`` of every accumulated sample, in update order.

        ``sample_id`` / ``category`` are None where ``update`` got none. With ``gather=True``
        under ``torch.distributed``, the samples of all ranks (rank order) are returned.
        """
        inter, union, ids, cats = self._gathered(gather)
        return [
            (None if sid == _NO_ID else sid, cat or None, i, u)
            for sid, cat, i, u in zip(
                ids.tolist(), cats, inter.tolist(), union.tolist(), strict=True
            )
        ]
