"""Segmentation losses of the method (docs/training.md), device-agnostic and vectorised.

The loss everywhere is ``0.9 * weighted CE + 0.1 * Dice`` with class weights
``[0.9, 1.1]`` (background, foreground). How a batch is reduced (:data:`REDUCTIONS`,
``StageConfig.loss_reduction``):

- ``per-image-mean`` (default): both terms per image (the CE a weighted mean over the image's
  pixels), then the mean over the images, so that the loss of a global batch equals the mean of
  the losses of its per-rank shards (a DDP run matches a single-process run).
- ``batch-sum`` (the released code): the weighted CE is one weighted mean over every pixel of
  the batch (``sum(w * ce) / sum(w)``, as ``torch.nn.CrossEntropyLoss(weight=...)``), and the
  Dice is *summed* over the images of the batch. The batch is the one each process sees: with
  torchrun that is ``train.batch_size / world_size`` images (the released runs: 2 per GPU on
  4 GPUs, so the Dice term weighs ``0.1 * 2`` images); on one process with batch 8 the sum runs
  over 8 images, four times the released Dice weight.

:func:`per_sample_seg_loss` returns per-image values whose *mean* is the batch loss under either
reduction, so the callers (student steps take the mean, bank steps sum and divide by the count)
need not know which one is configured.

Dice variants (:data:`DICE_VARIANTS`, ``StageConfig.dice``):

- ``foreground-mean-smooth1`` (default): soft Dice of the foreground probability,
  ``1 - (2 sum(p1 t) + 1) / (sum(p1) + sum(t) + 1)`` per sample, then the batch mean.
- ``per-class-sum-smooth1e-6`` (the released code): a soft Dice per image *and per class*
  (background and foreground softmax probabilities against the one-hot target, sums over
  ``H x W``), ``1 - (2 sum(p_c t_c) + 1e-6) / (sum(p_c + t_c) + 1e-6)``, summed over the two
  classes: a per-image value in [0, 2]. With ``batch-sum`` this is the released Dice exactly.
- ``both-classes-sum-smooth1e-6`` (kept for the records that used it; *not* the released Dice):
  one soft Dice pooled over both classes, the sums running over the two classes and all pixels,
  ``1 - (2 sum_c sum(p_c t_c) + 1e-6) / (sum_c sum(p_c) + sum_c sum(t_c) + 1e-6)`` with the
  one-hot target ``t_c``. Both sums in the denominator equal ``H * W``, so the loss is
  ``1 - mean`` probability of each pixel's true class (up to the smoothing): a background
  pixel counts as much as a foreground one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CE_WEIGHTS",
    "DICE_VARIANTS",
    "REDUCTIONS",
    "per_sample_seg_loss",
    "seg_loss",
    "dice_loss",
    "consistency_loss",
    "confidence_threshold",
]

#: Class weights of the cross-entropy term: background 0.9, foreground 1.1.
CE_WEIGHTS = (0.9, 1.1)
CE_FACTOR = 0.9
DICE_FACTOR = 0.1


#: Batch reductions of the segmentation loss (see the module docstring).
REDUCTIONS = ("per-image-mean", "batch-sum")

#: Dice variant name -> per-sample Dice loss ``(logits, mask) -> (B,)``; filled below.
DICE_VARIANTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}


def dice_loss(logits: Tensor, mask: Tensor, smooth: float = 1.0) -> Tensor:
    """Per-sample soft Dice loss on the foreground probability.

    Args:
        logits: ``(B, 2, H, W)`` two-class logits.
        mask: ``(B, H, W)`` ground truth in {0, 1}.
        smooth: additive smoothing in numerator and denominator.

    Returns:
        ``(B,)`` Dice losses in [0, 1].
    """
    prob = logits.float().softmax(dim=1)[:, 1].flatten(1)  # (B, H*W)
    target = mask.float().flatten(1)  # (B, H*W)
    inter = (prob * target).sum(1)
    total = prob.sum(1) + target.sum(1)
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def _two_class_maps(logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax probabilities and one-hot targets of both classes, ``(B, 2, H*W)`` float each."""
    prob = logits.float().softmax(dim=1).flatten(2)
    target = F.one_hot(mask.long().flatten(1), 2).transpose(1, 2).float()
    return prob, target


def both_classes_dice_loss(logits: Tensor, mask: Tensor, smooth: float = 1e-6) -> Tensor:
    """Per-sample soft Dice loss over both classes with sums over classes and pixels.

    Args:
        logits: ``(B, 2, H, W)`` two-class logits.
        mask: ``(B, H, W)`` ground truth in {0, 1}.
        smooth: additive smoothing in numerator and denominator.

    Returns:
        ``(B,)`` Dice losses in [0, 1].
    """
    prob, target = _two_class_maps(logits, mask)  # (B, 2, H*W) each
    inter = (prob * target).sum(dim=(1, 2))  # (B,)
    total = prob.sum(dim=(1, 2)) + target.sum(dim=(1, 2))
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def per_class_dice_loss(logits: Tensor, mask: Tensor, smooth: float = 1e-6) -> Tensor:
    """Per-image soft Dice loss of each class, summed over the two classes (the released Dice).

    Args:
        logits: ``(B, 2, H, W)`` two-class logits.
        mask: ``(B, H, W)`` ground truth in {0, 1}.
        smooth: additive smoothing in numerator and denominator.

    Returns:
        ``(B,)`` losses in [0, 2]: ``sum_c 1 - (2 sum(p_c t_c) + s) / (sum(p_c + t_c) + s)``.
    """
    prob, target = _two_class_maps(logits, mask)  # (B, 2, H*W) each
    inter = (prob * target).sum(dim=2)  # (B, 2)
    union = (prob + target).sum(dim=2)  # (B, 2)
    return (1.0 - (2.0 * inter + smooth) / (union + smooth)).sum(dim=1)  # (B,)


DICE_VARIANTS.update(
    {
        "foreground-mean-smooth1": dice_loss,
        "per-class-sum-smooth1e-6": per_class_dice_loss,
        "both-classes-sum-smooth1e-6": both_classes_dice_loss,
    }
)


def _dice_fn(dice: str) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        return DICE_VARIANTS[dice]
    except KeyError:
        raise ValueError(f"unknown Dice variant {dice!r}; valid: {sorted(DICE_VARIANTS)}") from None


def per_sample_seg_loss(
    logits: Tensor,
    mask: Tensor,
    dice: str = "foreground-mean-smooth1",
    reduction: str = "per-image-mean",
) -> Tensor:
    """``0.9 * weighted CE + 0.1 * Dice`` for each sample, scaled so that the mean over the
    batch is the batch loss of ``reduction``.

    ``per-image-mean``: the loss of each image. ``batch-sum``: image ``i`` gets
    ``B * (0.9 * sum_i(w * ce) / sum_batch(w) + 0.1 * dice_i)``, whose batch mean is
    ``0.9 * CE(batch, weighted mean over all pixels) + 0.1 * sum_i dice_i``.

    Args:
        logits: ``(B, 2, H, W)`` two-class logits (any dtype; computed in float32).
        mask: ``(B, H, W)`` integer ground truth in {0, 1}.
        dice: a key of :data:`DICE_VARIANTS`.
        reduction: one of :data:`REDUCTIONS`.

    Returns:
        ``(B,)`` per-sample losses.
    """
    dice_fn = _dice_fn(dice)
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown loss reduction {reduction!r}; valid: {list(REDUCTIONS)}")
    if logits.shape[-2:] != mask.shape[-2:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} differ in size; "
            "the model must return logits at the input resolution"
        )
    target = mask.long()
    weights = torch.tensor(CE_WEIGHTS, device=logits.device, dtype=torch.float32)
    pixel_ce = F.cross_entropy(logits.float(), target, reduction="none")  # (B, H, W)
    pixel_w = weights[target]  # (B, H, W)
    weighted = (pixel_ce * pixel_w).flatten(1).sum(1)  # (B,)
    dice_term = dice_fn(logits, target)  # (B,)
    if reduction == "batch-sum":
        batch = target.shape[0]
        return batch * (CE_FACTOR * weighted / pixel_w.sum() + DICE_FACTOR * dice_term)
    ce = weighted / pixel_w.flatten(1).sum(1)  # (B,)
    return CE_FACTOR * ce + DICE_FACTOR * dice_term


def seg_loss(
    logits: Tensor,
    mask: Tensor,
    dice: str = "foreground-mean-smooth1",
    reduction: str = "per-image-mean",
) -> Tensor:
    """The batch loss: the mean of :func:`per_sample_seg_loss` over the batch (a scalar)."""
    return per_sample_seg_loss(logits, mask, dice, reduction).mean()


def confidence_threshold(
    progress: float, start: float = 0.6, end: float = 0.8, ramp_epochs: float = 5.0
) -> float:
    """Teacher-confidence threshold of the consistency loss, linear ``start -> end``."""
    frac = min(max(progress / ramp_epochs, 0.0), 1.0) if ramp_epochs > 0 else 1.0
    return start + (end - start) * frac


def consistency_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 0.7,
    threshold: float = 0.6,
) -> Tensor:
    """KL from the student to a sharpened teacher on confident pixels.

    Args:
        student_logits: ``(B, 2, H, W)``.
        teacher_logits: ``(B, 2, H, W)``, treated as constant.
        temperature: sharpening temperature (< 1 sharpens).
        threshold: pixels whose teacher max-probability is below it are ignored.

    Returns:
        Scalar mean KL over the confident pixels (0 when there are none).
    """
    target = (teacher_logits.detach().float() / temperature).softmax(dim=1)  # (B, 2, H, W)
    confident = (target.max(dim=1).values >= threshold).float()  # (B, H, W)
    log_student = student_logits.float().log_softmax(dim=1)
    kl = (target * (target.clamp_min(1e-8).log() - log_student)).sum(dim=1)  # (B, H, W)
    return (kl * confident).sum() / confident.sum().clamp_min(1.0)
