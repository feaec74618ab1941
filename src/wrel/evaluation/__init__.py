"""Referring-segmentation metrics (pure functions) and the accumulating ``Evaluator``.

Scores are reported as percentages under an explicit :class:`EvalProtocol` (defaults: the field's
protocol: network input size, argmax, empty-vs-empty IoU 0, Prec@X counts IoU >= X).
"""

from wrel.evaluation.evaluator import Evaluator
from wrel.evaluation.metrics import (
    DEFAULT_THRESHOLDS,
    EvalProtocol,
    intersection_union,
    iou_per_sample,
    match_resolution,
    miou,
    oiou,
    precision_at,
    prediction_from_scores,
    summarize,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EvalProtocol",
    "Evaluator",
    "intersection_union",
    "iou_per_sample",
    "match_resolution",
    "miou",
    "oiou",
    "precision_at",
    "prediction_from_scores",
    "summarize",
]
