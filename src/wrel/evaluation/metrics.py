"""Referring-segmentation metrics as pure functions (the field's protocol, made explicit).

Per expression ``i``: ``I_i = |pred & gt|`` and ``U_i = |pred | gt|`` (pixel counts).

- oIoU (overall IoU) = ``sum_i I_i / sum_i U_i``: large objects weigh more.
- mIoU (mean IoU) = ``mean_i I_i / U_i``, where ``U_i = 0`` (empty prediction *and* empty
  ground truth) scores ``empty_score`` (0 in the field's reference protocol, 1 in some repos).
- Prec@X = share of expressions with ``IoU_i >= X`` (``>=``: an IoU of exactly 0.5 counts).

Every function here returns fractions in [0, 1]; :func:`summarize` (and therefore the
``Evaluator``) reports percentages in [0, 100], as papers in the field do. See
:class:`EvalProtocol` for the choices a number depends on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EvalProtocol",
    "intersection_union",
    "iou_per_sample",
    "match_resolution",
    "miou",
    "oiou",
    "precision_at",
    "prediction_from_scores",
    "summarize",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)

ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class EvalProtocol:
    """The choices a referring-segmentation score depends on (defaults: the field's protocol).

    Attributes:
        resolution: ``"input"`` scores at the network input size against the nearest-resized
            ground truth (the reference protocol); ``"original"`` scores at the image's original
            size (the prediction is nearest-resized up to the ground truth).
        empty_score: IoU credited to an expression whose prediction and ground truth are both
            empty (``U = 0``): 0.0 (reference protocol) or 1.0.
        threshold_op: comparison used by Prec@X; only ``">="`` (IoU exactly X counts).
        prediction: how scores become a mask: ``"argmax"`` over 2-class logits ``(B, 2, H, W)``
            or foreground probability ``> 0.5`` (``"prob>0.5"``) for ``(B, H, W)`` /
            ``(B, 1, H, W)`` probabilities. Both give the same mask for softmax outputs.
        thresholds: the X of Prec@X.
    """

    resolution: Literal["input", "original"] = "input"
    empty_score: float = 0.0
    threshold_op: Literal[">="] = ">="
    prediction: Literal["argmax", "prob>0.5"] = "argmax"
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS

    def __post_init__(self) -> None:
        if self.resolution not in ("input", "original"):
            raise ValueError(
                f"protocol resolution {self.resolution!r} is not 'input' or 'original'"
            )
        if self.empty_score not in (0.0, 1.0):
            raise ValueError(f"protocol empty_score {self.empty_score!r} must be 0.0 or 1.0")
        if self.threshold_op != ">=":
            raise ValueError(f"protocol threshold_op {self.threshold_op!r}: only '>=' is supported")
        if self.prediction not in ("argmax", "prob>0.5"):
            raise ValueError(
                f"protocol prediction {self.prediction!r} is not 'argmax' or 'prob>0.5'"
            )
        if not self.thresholds or any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"protocol thresholds {self.thresholds!r} must lie in [0, 1]")

    @classmethod
    def parse(cls, text: str) -> EvalProtocol:
        """Build a protocol from a short string: ``"input"``, ``"original"``, ``"input,empty=1"``.

        Raises:
            ValueError: when the string names an unknown resolution or option.
        """
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ValueError("empty protocol string; use 'input' or 'original'")
        kwargs: dict[str, Any] = {"resolution": parts[0]}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key == "empty" and value in ("0", "1"):
                kwargs["empty_score"] = float(value)
            elif key == "prediction" and value in ("argmax", "prob>0.5"):
                kwargs["prediction"] = value
            else:
                raise ValueError(
                    f"unknown protocol option {part!r} in {text!r}; "
                    "valid: empty=0|1, prediction=argmax|prob>0.5"
                )
        return cls(**kwargs)

    def describe(self) -> str:
        """One-line human description, for tables and model cards."""
        where = (
            "network input size (nearest-resized GT)"
            if self.resolution == "input"
            else ("original image size")
        )
        rule = "argmax" if self.prediction == "argmax" else "foreground prob > 0.5"
        return (
            f"scored at {where}; prediction = {rule}; empty-vs-empty IoU = "
            f"{self.empty_score:g}; Prec@X counts IoU >= X; percentages"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (thresholds as a list)."""
        return {
            "resolution": self.resolution,
            "empty_score": self.empty_score,
            "threshold_op": self.threshold_op,
            "prediction": self.prediction,
            "thresholds": list(self.thresholds),
        }


def _as_bool_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if t.dim() == 2:
        t = t.unsqueeze(0)  # (H, W) -> (1, H, W)
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got {tuple(t.shape)}")
    return t if t.dtype == torch.bool else t != 0


def intersection_union(pred: ArrayLike, gt: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample intersection and union pixel counts.

    Args:
        pred: predicted masks ``(B, H, W)`` (bool, or numbers where nonzero = foreground).
        gt: ground-truth masks ``(B, H, W)``, same shape.

    Returns:
        ``(I, U)``, each int64 ``(B,)`` on ``pred``'s device.

    Raises:
        ValueError: when the shapes differ (resize first, see :func:`match_resolution`).
    """
    p, g = _as_bool_tensor(pred, "pred"), _as_bool_tensor(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(
            f"pred {tuple(p.shape)} and gt {tuple(g.shape)} differ; resize one to the other "
            "with wrel.evaluation.match_resolution"
        )
    g = g.to(p.device)
    inter = (p & g).flatten(1).sum(1, dtype=torch.int64)  # (B,)
    union = (p | g).flatten(1).sum(1, dtype=torch.int64)  # (B,)
    return inter, union


def _as_counts(x: ArrayLike) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    return t.reshape(-1).to(torch.float64)


def iou_per_sample(i: ArrayLike, u: ArrayLike, empty_score: float = 0.0) -> torch.Tensor:
    """IoU of each sample, ``I / U``, with ``empty_score`` where ``U == 0``; float64 ``(B,)``."""
    it, ut = _as_counts(i), _as_counts(u)
    return torch.where(ut > 0, it / ut.clamp_min(1), torch.full_like(ut, float(empty_score)))


def oiou(i: ArrayLike, u: ArrayLike) -> float:
    """Overall IoU ``sum I / sum U`` as a fraction (0.0 when every union is empty)."""
    it, ut = _as_counts(i), _as_counts(u)
    total = float(ut.sum())
    return float(it.sum()) / total if total > 0 else 0.0


def miou(i: ArrayLike, u: ArrayLike, empty_score: float = 0.0) -> float:
    """Mean of the per-sample IoUs as a fraction (0.0 for no samples)."""
    iou = iou_per_sample(i, u, empty_score)
    return float(iou.mean()) if iou.numel() else 0.0


def precision_at(
    i: ArrayLike,
    u: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    empty_score: float = 0.0,
) -> dict[float, float]:
    """Share of samples with ``IoU >= X`` for each threshold X, as fractions."""
    iou = iou_per_sample(i, u, empty_score)
    if iou.numel() == 0:
        return {float(t): 0.0 for t in thresholds}
    thr = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)
    # Tiny tolerance so that IoUs like 3/6 that round below 0.5 in float still count.
    hits = iou[:, None] >= thr[None, :] - 1e-12  # (B, T)
    shares = hits.to(torch.float64).mean(0)
    return {float(t): float(s) for t, s in zip(thresholds, shares, strict=True)}


def prediction_from_scores(scores: torch.Tensor, rule: str = "argmax") -> torch.Tensor:
    """Turn model outputs into a bool mask ``(B, H, W)``.

    Args:
        scores: bool masks ``(B, H, W)`` (returned as is), 2-class logits ``(B, 2, H, W)``
            (argmax), or foreground probabilities ``(B, H, W)`` / ``(B, 1, H, W)`` (``> 0.5``).
        rule: ``"argmax"`` or ``"prob>0.5"``; only used to validate 2-class inputs.
    """
    if scores.dtype == torch.bool:
        return scores
    if scores.dim() == 4 and scores.shape[1] == 2:
        return scores.argmax(dim=1).bool()
    if scores.dim() == 4 and scores.shape[1] == 1:
        scores = scores[:, 0]  # (B, 1, H, W) -> (B, H, W)
    if scores.dim() != 3:
        raise ValueError(
            f"scores must be (B, H, W) masks/probabilities or (B, 2, H, W) logits, "
            f"got {tuple(scores.shape)} (rule {rule!r})"
        )
    if not scores.is_floating_point():
        return scores != 0
    return scores > 0.5


def match_resolution(
    pred: torch.Tensor, gt: torch.Tensor, resolution: str = "input"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring ``pred`` and ``gt`` ``(B, H, W)`` to one size with nearest resizing.

    ``"input"`` resizes the ground truth to the prediction's size (reference protocol);
    ``"original"`` resizes the prediction to the ground truth's size.
    """
    if pred.shape[-2:] == gt.shape[-2:]:
        return pred, gt
    if resolution not in ("input", "original"):
        raise ValueError(f"resolution {resolution!r} is not 'input' or 'original'")
    src, size = (gt, pred.shape[-2:]) if resolution == "input" else (pred, gt.shape[-2:])
    resized = F.interpolate(src[:, None].to(torch.uint8), size=tuple(size), mode="nearest")
    resized = resized[:, 0].bool()  # (B, 1, h, w) -> (B, h, w)
    return (pred, resized) if resolution == "input" else (resized, gt)


def _block(i: torch.Tensor, u: torch.Tensor, protocol: EvalProtocol) -> dict[str, Any]:
    out: dict[str, Any] = {
        "oIoU": 100.0 * oiou(i, u),
        "mIoU": 100.0 * miou(i, u, protocol.empty_score),
    }
    prec = precision_at(i, u, protocol.thresholds, protocol.empty_score)
    out.update({f"Prec@{t:g}": 100.0 * v for t, v in prec.items()})
    out["num_samples"] = int(i.numel())
    return out


def summarize(
    i: ArrayLike,
    u: ArrayLike,
    categories: Sequence[str] | None = None,
    protocol: EvalProtocol | None = None,
) -> dict[str, Any]:
    """All metrics of a set of samples as percentages in [0, 100].

    Args:
        i: intersections ``(N,)``.
        u: unions ``(N,)``.
        categories: class name of each sample, for the per-category split (optional).
        protocol: scoring protocol (defaults to the field's).

    Returns:
        ``{"oIoU", "mIoU", "Prec@0.5", ..., "Prec@0.9", "num_samples", "per_category":
        {name: {same keys}}, "protocol": {...}}``.
    """
    protocol = protocol or EvalProtocol()
    it, ut = _as_counts(i), _as_counts(u)
    out = _block(it, ut, protocol)
    per_category: dict[str, dict[str, Any]] = {}
    if categories is not None:
        if len(categories) != it.numel():
            raise ValueError(f"{len(categories)} categories for {it.numel()} samples")
        names = np.asarray(list(categories), dtype=object)
        for name in sorted(set(categories)):
            idx = torch.from_numpy(np.flatnonzero(names == name))
            per_category[name] = _block(it[idx], ut[idx], protocol)
    out["per_category"] = per_category
    out["protocol"] = {**protocol.to_dict(), "description": protocol.describe()}
    return out
