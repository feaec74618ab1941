"""Instance geometry and the visually grounded predicates that referring expressions use.

A predicate is judged with margins so that what an expression says is clear from the pixels:
an instance *clearly* satisfies it or *clearly* fails it; anything in between is unclear and
cannot be used to tell instances apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CELL_NAMES",
    "EXTREMES",
    "SIZES",
    "POSITION_MARGIN",
    "Instance",
    "cell_margin",
    "clearly_fails",
    "clearly_holds",
    "scale_word",
    "singles_out",
]

#: 3x3 grid cells (row, column) -> position name.
CELL_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "upper left", (0, 1): "top", (0, 2): "upper right",
    (1, 0): "left", (1, 1): "middle", (1, 2): "right",
    (2, 0): "lower left", (2, 1): "bottom", (2, 2): "lower right",
}  # fmt: skip
_CELLS = {name: cell for cell, name in CELL_NAMES.items()}
#: Extremes among the instances of a class: name -> (axis: 0 = x / 1 = y, sign: -1 = smallest).
EXTREMES: dict[str, tuple[int, int]] = {
    "leftmost": (0, -1), "rightmost": (0, 1), "topmost": (1, -1), "bottommost": (1, 1),
}  # fmt: skip
SIZES = ("largest", "smallest")

#: Size words said of an object against its class's usual size (``Instance.relative_size``),
#: as RRSIS-D's "tiny vehicle" / "huge airport": (word, lower bound, upper bound).
SCALE_WORDS = (("tiny", 0.0, 0.8), ("small", 0.8, 0.92), ("large", 1.1, 1.25),
               ("huge", 1.25, float("inf")))  # fmt: skip


def scale_word(relative_size: float) -> str | None:
    """The size word for an object ``relative_size`` times its class's mid length, or None."""
    for word, lo, hi in SCALE_WORDS:
        if lo <= relative_size < hi:
            return word
    return None


# Margins, as fractions of the image side unless noted.
POSITION_MARGIN = 0.05  # centroid this far from a 3x3 grid line
EXTREME_MARGIN = 0.08  # the extreme instance leads the runner-up by this much
SIZE_RATIO = 1.6  # largest / smallest: area ratio to every other instance of the class
NEAR_GAP = 0.04  # "next to": box gap at most this
FAR_GAP = 0.12  # ... and every other instance of the class at least this far away


@dataclass(frozen=True)
class Instance:
    """What expressions may refer to: class, colour name, centroid, area and box (x, y, w, h)."""

    category: str
    colour: str
    cx: float
    cy: float
    area: float
    bbox: tuple[float, float, float, float]
    relative_size: float = 1.0  # drawn length / the class's mid length (PlacedObject)

    @classmethod
    def from_mask(
        cls, category: str, colour: str, mask: np.ndarray, relative_size: float = 1.0
    ) -> Instance:
        """Measure an instance from its mask ``(H, W)`` bool."""
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            raise ValueError(f"empty mask for a {category} instance")
        box = (float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1))
        return cls(
            category, colour, float(xs.mean() + 0.5), float(ys.mean() + 0.5), float(len(ys)), box,
            float(relative_size),
        )  # fmt: skip


def _box_gap(a: Instance, b: Instance) -> float:
    gx = max(0.0, max(a.bbox[0], b.bbox[0]) - min(a.bbox[0] + a.bbox[2], b.bbox[0] + b.bbox[2]))
    gy = max(0.0, max(a.bbox[1], b.bbox[1]) - min(a.bbox[1] + a.bbox[3], b.bbox[1] + b.bbox[3]))
    return float(np.hypot(gx, gy))


def _gap_to(inst: Instance, category: str, instances: list[Instance]) -> float:
    gaps = [_box_gap(inst, o) for o in instances if o.category == category]
    return min(gaps) if gaps else float("inf")


def _cell_offsets(inst: Instance, name: str, size: int) -> list[float]:
    """Signed distance inside the cell per axis (negative: outside), ignoring image borders."""
    row, col = _CELLS[name]
    out = []
    for coord, index in ((inst.cx, col), (inst.cy, row)):
        lo = -np.inf if index == 0 else index * size / 3
        hi = np.inf if index == 2 else (index + 1) * size / 3
        out.append(float(min(coord - lo, hi - coord)))
    return out


def cell_margin(inst: Instance, name: str, size: int) -> float:
    """How far (pixels) the centroid lies inside 3x3 cell ``name``; negative: outside."""
    return min(_cell_offsets(inst, name, size))


def _lead(target: Instance, other: Instance, key: str, value: str, size: int) -> bool:
    """Whether ``target`` clearly beats ``other`` on a superlative."""
    if key == "extreme":
        axis, sign = EXTREMES[value]
        t, o = (target.cx, other.cx) if axis == 0 else (target.cy, other.cy)
        return sign * (t - o) >= EXTREME_MARGIN * size
    if value == "largest":
        return target.area >= SIZE_RATIO * other.area
    return other.area >= SIZE_RATIO * target.area


def clearly_holds(
    key: str,
    value: Any,
    target: Instance,
    same_class: list[Instance],
    instances: list[Instance],
    size: int,
) -> bool:
    """Whether ``target`` clearly has attribute ``key=value`` (``same_class`` excludes it)."""
    if key == "position":
        return min(_cell_offsets(target, value, size)) >= POSITION_MARGIN * size
    if key in ("extreme", "size"):
        return bool(same_class) and all(_lead(target, o, key, value, size) for o in same_class)
    if key == "colour":
        return target.colour == value
    if key == "next_to":
        return value != target.category and _gap_to(target, value, instances) <= NEAR_GAP * size
    if key == "scale":
        return scale_word(target.relative_size) == value
    raise ValueError(f"unknown attribute {key!r}")


def clearly_fails(
    key: str, value: Any, other: Instance, target: Instance, instances: list[Instance], size: int
) -> bool:
    """Whether ``other`` (same class as ``target``) clearly lacks attribute ``key=value``."""
    if key == "position":
        return min(_cell_offsets(other, value, size)) <= -POSITION_MARGIN * size
    if key in ("extreme", "size"):
        return _lead(target, other, key, value, size)
    if key == "colour":
        return other.colour != value
    if key == "next_to":
        return _gap_to(other, value, instances) >= FAR_GAP * size
    if key == "scale":  # said of the target against its class, never used to rule others out
        return False
    raise ValueError(f"unknown attribute {key!r}")


def singles_out(
    attributes: dict[str, Any], target_index: int, instances: list[Instance], size: int
) -> bool:
    """Whether ``attributes`` hold for the target and rule out every other instance of its class.

    Args:
        attributes: attribute name -> value, e.g. ``{"colour": "red", "position": "left"}``.
        target_index: index of the target in ``instances``.
        instances: every instance of the image.
        size: image side in pixels (margins scale with it).
    """
    target = instances[target_index]
    same = [
        o for i, o in enumerate(instances) if i != target_index and o.category == target.category
    ]
    if not all(clearly_holds(k, v, target, same, instances, size) for k, v in attributes.items()):
        return False
    return all(
        any(clearly_fails(k, v, o, target, instances, size) for k, v in attributes.items())
        for o in same
    )
