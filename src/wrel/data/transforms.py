"""Sample transforms: resizing to the model size, ImageNet normalisation, a text-aware flip and
random box cut-outs.

Referring expressions name directions, so a horizontal flip is only correct when "left" and
"right" in the text are swapped with it (:func:`hflip_sample`). A cut-out
(:func:`random_cutout_box`, :func:`apply_cutout`) blanks one box of the normalised network input
to 0, i.e. to the ImageNet mean colour; the mask is never touched, so pixels of the referred
object under the box keep their label.
"""

from __future__ import annotations

import re

import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "apply_cutout",
    "check_cutout",
    "hflip_sample",
    "normalize_image",
    "random_cutout_box",
    "resize_mask",
    "resize_rgb",
    "swap_left_right",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0)
_LEFT_RIGHT = re.compile(r"\b(left|right)(most|ward|wards|-hand)?\b", re.IGNORECASE)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be two positive ints (H, W), got {size!r}")
    return height, width


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(h, w, 3)`` uint8 to ``(H, W, 3)`` uint8 (``size`` is ``(H, W)``)."""
    from PIL import Image

    height, width = _check_size(size)
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a ``(h, w)`` {0, 1} mask to ``(H, W)`` uint8."""
    from PIL import Image

    height, width = _check_size(size)
    if mask.shape == (height, width):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8)).resize(
        (width, height), Image.Resampling.NEAREST
    )
    return np.asarray(resized)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32, ImageNet mean/std normalised."""
    array = (image.astype(np.float32) - _MEAN) * _INV_STD  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (3, H, W)


def swap_left_right(text: str) -> str:
    """Swap "left" and "right" (and "leftmost"/"rightmost", ...) keeping their case."""

    def swap(match: re.Match[str]) -> str:
        word, suffix = match.group(1), match.group(2) or ""
        new = "right" if word.lower() == "left" else "left"
        if word.isupper():
            new = new.upper()
        elif word[0].isupper():
            new = new.capitalize()
        return new + suffix

    return _LEFT_RIGHT.sub(swap, text)


def hflip_sample(
    image: np.ndarray, mask: np.ndarray, text: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Mirror ``(H, W, 3)`` image and ``(H, W)`` mask left-right and swap left/right in text."""
    return image[:, ::-1].copy(), mask[:, ::-1].copy(), swap_left_right(text)


def check_cutout(prob: float, scale: tuple[float, float] | list[float]) -> tuple[float, float]:
    """Validate a cut-out probability and box scale range; returns the range as a tuple."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"cutout_prob must be in [0, 1], got {prob}")
    if len(scale) != 2 or not 0.0 < float(scale[0]) <= float(scale[1]) <= 1.0:
        raise ValueError(
            f"cutout_scale must be two fractions 0 < low <= high <= 1 of the image side, got "
            f"{scale!r}"
        )
    return float(scale[0]), float(scale[1])


def random_cutout_box(
    rng: np.random.Generator, size: tuple[int, int], scale: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A box ``(top, left, height, width)`` inside an image of ``size = (H, W)``.

    Its height and width are independent uniform fractions in ``scale`` of ``H`` and ``W``
    (at least one pixel); its position is uniform among the placements inside the image.
    """
    height, width = _check_size(size)
    box_h = max(1, round(rng.uniform(*scale) * height))
    box_w = max(1, round(rng.uniform(*scale) * width))
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    return top, left, box_h, box_w


def apply_cutout(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Set the pixels of ``box`` in a normalised ``(3, H, W)`` image to 0 (the ImageNet mean
    colour), in place; returns ``image``."""
    top, left, box_h, box_w = box
    image[:, top : top + box_h, left : left + box_w] = 0.0
    return image
