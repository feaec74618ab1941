"""Sample transforms: resizing to the model size, ImageNet normalisation, a text-aware flip and
cut-outs.

Referring expressions name directions, so a horizontal flip is only correct when "left" and
"right" in the text are swapped with it (:func:`hflip_sample`). A cut-out
(:func:`random_cutout_box`, :func:`apply_cutout`) blanks one box of the normalised network input
to 0, i.e. to the ImageNet mean colour; the mask is never touched, so pixels of the referred
object under the box keep their label.

The released cut-out (:func:`cutout_subset`, :func:`random_squares`, :func:`apply_squares`) is
another one: a fixed share of the training refs, drawn once per run, get 20-60 black squares on
their *raw* image (before resizing), at new random positions at every visit. The released code
draws 32 x 32 px squares on RRSIS-D's 800 x 800 px images; here a square's side is a fraction
of the raw image's shorter side (default ``32 / 800 = 0.04``), so that other image sizes get
squares of the same relative size. Squares may overlap and lie anywhere inside the image.
"""

from __future__ import annotations

import re

import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CUTOUT_KINDS",
    "apply_cutout",
    "apply_squares",
    "check_cutout",
    "check_squares",
    "cutout_subset",
    "random_squares",
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


#: ``data.cutout`` values: ``box`` (one box of the normalised input blanked to the ImageNet mean,
#: an independent draw per item and epoch) or ``squares`` (the released black squares).
CUTOUT_KINDS = ("box", "squares")


def check_squares(count: tuple[int, int] | list[int], side: float) -> tuple[int, int]:
    """Validate the released cut-out's square count range and side fraction."""
    if len(count) != 2 or not 1 <= int(count[0]) <= int(count[1]):
        raise ValueError(f"cutout_count must be two ints 1 <= low <= high, got {count!r}")
    if not 0.0 < side <= 1.0:
        raise ValueError(
            f"cutout_side must be a fraction in (0, 1] of the image's shorter side (the released "
            f"32 px on 800 px images: 0.04), got {side}"
        )
    return int(count[0]), int(count[1])


def cutout_subset(sample_ids: list[int], share: float, seed: int) -> frozenset[int]:
    """The refs that get the released cut-out: ``floor(share * N)`` of the ``N`` distinct ids,
    drawn without replacement from ``seed`` (the same ids and seed give the same subset)."""
    pool = sorted(set(int(i) for i in sample_ids))
    num = int(len(pool) * share)
    if num <= 0:
        return frozenset()
    pick = np.random.default_rng([seed, 20, 60]).choice(len(pool), size=num, replace=False)
    return frozenset(pool[int(i)] for i in pick)


def random_squares(
    rng: np.random.Generator, size: tuple[int, int], count: tuple[int, int], side: float
) -> list[tuple[int, int, int]]:
    """``(top, left, side_px)`` of a uniform number in ``count`` (inclusive) of squares inside an
    image of ``size = (H, W)``; ``side_px = max(1, round(side * min(H, W)))``."""
    height, width = _check_size(size)
    side_px = max(1, round(side * min(height, width)))
    num = int(rng.integers(count[0], count[1] + 1))
    tops = rng.integers(0, height - side_px + 1, size=num)
    lefts = rng.integers(0, width - side_px + 1, size=num)
    return [(int(t), int(left), side_px) for t, left in zip(tops, lefts, strict=True)]


def apply_squares(image: np.ndarray, squares: list[tuple[int, int, int]]) -> np.ndarray:
    """A copy of the raw ``(H, W, 3)`` uint8 image with every square set to black (0)."""
    out = image.copy()
    for top, left, side_px in squares:
        out[top : top + side_px, left : left + side_px] = 0
    return out
