"""Procedural aerial backgrounds: vegetation, bare soil, built-up blocks, water and roads."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["render_background", "smooth_field"]

Array = np.ndarray

# Land-cover base colours (RGB) and how much each scene may shift them.
_LAND_COVER = np.array(
    [
        [74.0, 106.0, 58.0],  # vegetation
        [150.0, 128.0, 96.0],  # bare soil
        [146.0, 142.0, 136.0],  # built-up
        [108.0, 122.0, 74.0],  # dry grass / fields
    ],
    dtype=np.float32,
)
_WATER = np.array([34.0, 62.0, 88.0], dtype=np.float32)
_ROAD = np.array([96.0, 96.0, 100.0], dtype=np.float32)


def smooth_field(size: int, cells: int, rng: np.random.Generator) -> Array:
    """Smooth random field ``(size, size)`` float32: Gaussian noise on a ``cells`` grid, upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def _land_cover(size: int, rng: np.random.Generator) -> Array:
    fields = np.stack([smooth_field(size, int(rng.integers(2, 6)), rng) for _ in _LAND_COVER])
    fields += rng.normal(0.0, 0.6, size=(len(_LAND_COVER), 1, 1)).astype(np.float32)
    labels = fields.argmax(axis=0)  # (S, S) land-cover class per pixel
    colours = _LAND_COVER + rng.normal(0.0, 8.0, size=_LAND_COVER.shape).astype(np.float32)
    rgb = colours[labels]  # (S, S, 3)
    texture = smooth_field(size, max(4, size // 6), rng)[..., None] * 9.0
    rgb += texture
    built = labels == 2
    if built.any():  # rectangular blocks of roofs with thin darker streets between them
        block = max(4, size // 16)
        cells = -(-size // block)
        shades = rng.normal(0.0, 12.0, size=(cells, cells)).astype(np.float32)
        roofs = np.kron(shades, np.ones((block, block), dtype=np.float32))[:size, :size]
        grid = (np.arange(size) % block) == 0
        streets = (grid[:, None] | grid[None, :]).astype(np.float32) * -16.0
        rgb[built] += (roofs + streets)[built][:, None]
    return rgb


def _water_mask(size: int, rng: np.random.Generator) -> Array:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0.0, np.pi)
    offset = xx * np.cos(angle) + yy * np.sin(angle)
    offset = (offset - offset.min()) / (offset.max() - offset.min())  # 0..1 across the scene
    wobble = smooth_field(size, 3, rng) * 0.06
    if rng.random() < 0.5:  # a river band crossing the scene
        centre = rng.uniform(0.35, 0.65)
        return np.abs(offset - centre + wobble) < rng.uniform(0.1, 0.16)
    # otherwise a shore: water on one side of a wavy line
    return offset + wobble > rng.uniform(0.55, 0.7)


def _roads(size: int, rng: np.random.Generator) -> Array:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    roads = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(0, 3))):
        angle = rng.choice([0.0, np.pi / 2]) + rng.normal(0.0, 0.25)
        point = rng.uniform(0.15, 0.85, size=2) * size
        dist = (xx - point[0]) * np.sin(angle) - (yy - point[1]) * np.cos(angle)
        roads |= np.abs(dist) <= rng.uniform(1.0, 2.2) * size / 128
    return roads


def render_background(size: int, rng: np.random.Generator, *, water: bool) -> tuple[Array, Array]:
    """Render one background.

    Args:
        size: image side in pixels.
        rng: the scene's random generator.
        water: whether the scene has a water body (a river or a shore).

    Returns:
        ``rgb`` float32 ``(S, S, 3)`` in [0, 255] and the water mask ``(S, S)`` bool.
    """
    rgb = _land_cover(size, rng)
    roads = _roads(size, rng)
    rgb[roads] = _ROAD + rng.normal(0.0, 4.0, size=3).astype(np.float32)
    water_mask = _water_mask(size, rng) if water else np.zeros((size, size), dtype=bool)
    if water:
        ripples = smooth_field(size, max(4, size // 8), rng)[..., None] * 4.0
        tint = _WATER + rng.normal(0.0, 6.0, size=3).astype(np.float32)
        rgb = np.where(water_mask[..., None], tint + ripples, rgb)
    return rgb.astype(np.float32), water_mask
