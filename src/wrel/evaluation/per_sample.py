"""Per-sample losses ``1 - IoU`` from the evaluator's ``(sample_id, category, I, U)`` records.

The bound's estimators (:mod:`wrel.theory`) take these losses; the trainer's class-name trace
and ``wrel bound`` (:mod:`wrel.studies.bound`) compute them. Everything is numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Record", "losses_from_counts", "paired_losses"]

Record = tuple[int | None, str | None, int, int]  # (sample_id, category, I, U)


def losses_from_counts(
    inter: Sequence[int] | np.ndarray, union: Sequence[int] | np.ndarray, empty_score: float = 0.0
) -> np.ndarray:
    """Per-sample loss ``1 - IoU`` in [0, 1] (IoU = ``empty_score`` where ``U = 0``); ``(N,)``."""
    i = np.asarray(inter, dtype=np.float64)
    u = np.asarray(union, dtype=np.float64)
    iou = np.where(u > 0, i / np.maximum(u, 1.0), float(empty_score))
    return 1.0 - iou


def paired_losses(
    accurate: Sequence[Record], weak: Sequence[Record], empty_score: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align two ``Evaluator.per_sample()`` lists of one checkpoint by sample id.

    Args:
        accurate: records scored with the accurate expressions.
        weak: records of the same samples scored with the class names.
        empty_score: IoU credited to empty-vs-empty samples (the evaluation protocol's).

    Returns:
        ``(loss_accurate (N,), loss_weak (N,), sample_ids (N,))`` sorted by sample id.

    Raises:
        ValueError: when ids are missing or the two lists cover different samples.
    """

    def by_id(records: Sequence[Record], name: str) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for sid, _, i, u in records:
            if sid is None:
                raise ValueError(f"{name} records lack sample ids; pass sample_ids to update()")
            out[int(sid)] = (int(i), int(u))
        return out

    acc, wk = by_id(accurate, "accurate"), by_id(weak, "weak")
    if acc.keys() != wk.keys():
        only = sorted(acc.keys() ^ wk.keys())[:5]
        raise ValueError(f"accurate and weak records cover different samples (e.g. ids {only})")
    ids = np.array(sorted(acc), dtype=np.int64)
    a = np.array([acc[s] for s in ids.tolist()], dtype=np.int64).reshape(-1, 2)
    w = np.array([wk[s] for s in ids.tolist()], dtype=np.int64).reshape(-1, 2)
    return (
        losses_from_counts(a[:, 0], a[:, 1], empty_score),
        losses_from_counts(w[:, 0], w[:, 1], empty_score),
        ids,
    )
