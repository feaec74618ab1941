"""Appearance styles within a class: a long tail of looks that a few samples do not cover.

With ``SynthConfig.styles`` = K > 1, every annotated object is drawn in one of K styles of its
class, style k with probability proportional to ``(k + 1) ** -style_tail`` (a Zipf tail). Style
0 is the class's plain look; each other style is fixed per (class, k) and changes

- the outline: a radial wobble of the shape (``lobes`` bumps, ``warp`` of the radius);
- the proportions: the width times ``aspect``;
- the surface: stripes that darken part of the object by ``stripe_depth`` (the named colour
  stays the object's dominant one).

So the common styles are learnt from a few hundred samples of a class, the rare ones only from
thousands: perception that 1,200 masks do not teach but 12,000 do (docs/data.md). ``styles`` = 1
draws nothing and renders what the generator did before the setting existed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["PLAIN", "Style", "class_style", "draw_style", "style_weights"]

Array = np.ndarray

# Ranges of the per-style draws (chosen so that a style stays its class: the outline moves by at
# most a quarter of its radius, the width by at most 40 %, and stripes darken by at most 25 %).
_WARP = (0.08, 0.25)
_LOBES = (2, 6)
_ASPECT = (0.7, 1.4)
_STRIPE_DEPTH = (0.1, 0.25)
_STRIPE_PERIOD = (0.18, 0.5)  # share of the object's length


@dataclass(frozen=True)
class Style:
    """One look of a class (see the module docstring); :data:`PLAIN` changes nothing."""

    warp: float = 0.0
    lobes: int = 0
    phase: float = 0.0
    aspect: float = 1.0
    stripe_depth: float = 0.0
    stripe_angle: float = 0.0
    stripe_period: float = 1.0

    def warp_coords(self, u: Array, v: Array) -> tuple[Array, Array]:
        """Object-local coordinates seen through the outline's wobble (identity when plain)."""
        if self.warp <= 0:
            return u, v
        factor = 1.0 + self.warp * np.sin(self.lobes * np.arctan2(v, u) + self.phase)
        return u / factor, v / factor

    def paint(self, rgb: Array, mask: Array, u: Array, v: Array, length: float) -> Array:
        """Darken the stripes of the style inside ``mask`` (in place; returns ``rgb``)."""
        if self.stripe_depth <= 0:
            return rgb
        along = u * np.cos(self.stripe_angle) + v * np.sin(self.stripe_angle)
        stripes = np.sin(2.0 * np.pi * along / max(1.0, self.stripe_period * length)) > 0
        rgb[mask & stripes] *= np.float32(1.0 - self.stripe_depth)
        return rgb


PLAIN = Style()


@lru_cache(maxsize=4096)
def class_style(category: str, index: int) -> Style:
    """Style ``index`` of ``category``: fixed by the two (not by the render's seed), so that train,
    val and test share each class's styles. Index 0 is :data:`PLAIN`."""
    if index < 0:
        raise ValueError(f"style index must be >= 0, got {index}")
    if index == 0:
        return PLAIN
    rng = np.random.default_rng([zlib.crc32(category.encode()), index])
    return Style(
        warp=float(rng.uniform(*_WARP)),
        lobes=int(rng.integers(_LOBES[0], _LOBES[1] + 1)),
        phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        aspect=float(np.exp(rng.uniform(np.log(_ASPECT[0]), np.log(_ASPECT[1])))),
        stripe_depth=float(rng.uniform(*_STRIPE_DEPTH)),
        stripe_angle=float(rng.uniform(0.0, np.pi)),
        stripe_period=float(rng.uniform(*_STRIPE_PERIOD)),
    )


@lru_cache(maxsize=64)
def style_weights(styles: int, tail: float) -> Array:
    """Probabilities of styles ``0..styles-1``: proportional to ``(k + 1) ** -tail`` (cached and
    read-only: every object of a render draws from the same weights)."""
    if styles < 1:
        raise ValueError(f"styles must be >= 1, got {styles}")
    w = np.arange(1, styles + 1, dtype=np.float64) ** -float(tail)
    w /= w.sum()
    w.flags.writeable = False
    return w


def draw_style(rng: np.random.Generator, styles: int, tail: float) -> int:
    """A style index; no draw from ``rng`` when ``styles`` is 1 (renders stay as before)."""
    if styles <= 1:
        return 0
    return int(rng.choice(styles, p=style_weights(styles, tail)))
