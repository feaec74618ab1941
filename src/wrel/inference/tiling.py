"""Overlapping tiles for large scenes and a row-band stitcher with bounded memory.

A scene of ``H x W`` pixels is covered by square tiles of ``tile_size`` pixels that overlap by
``overlap`` pixels; the last tile of a row or column is shifted to end on the scene edge, so every
tile has the full size whenever the scene is at least one tile large. Tile probabilities are
blended with a weight that ramps down towards tile edges (edges see less context) and are
stitched one row of tiles at a time: only a float strip of ``tile_size x W`` is held, and rows
that no later tile touches are flushed as ``uint8`` probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from wrel.data.rasters import Tile

__all__ = ["Tile", "tile_starts", "tile_grid", "blend_weights", "RowStitcher"]


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets along one axis so that tiles of ``tile_size`` cover ``[0, length)``.

    Args:
        length: scene size along the axis, in pixels (> 0).
        tile_size: tile size in pixels (> 0).
        overlap: overlap between neighbouring tiles, ``0 <= overlap < tile_size``.

    Returns:
        Increasing offsets; the last tile ends exactly at ``length`` (or the single tile is
        shorter when ``length < tile_size``).
    """
    if length <= 0 or tile_size <= 0:
        raise ValueError(f"length ({length}) and tile_size ({tile_size}) must be positive")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return starts


def tile_grid(height: int, width: int, tile_size: int, overlap: int) -> list[list[Tile]]:
    """Rows of tiles covering an ``height x width`` scene (row-major)."""
    rows = tile_starts(height, tile_size, overlap)
    cols = tile_starts(width, tile_size, overlap)
    th, tw = min(tile_size, height), min(tile_size, width)
    return [[Tile(r, c, th, tw) for c in cols] for r in rows]


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """Blending weight of a tile: 1 inside, a linear ramp over ``overlap`` pixels at the edges.

    Returns:
        float32 array ``(height, width)`` with values in ``(0, 1]``.
    """

    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, dtype=np.float32)
        pos = np.arange(n, dtype=np.float32)
        dist = np.minimum(pos, n - 1 - pos) + 1.0  # 1 at the edge pixels
        return np.clip(dist / (overlap + 1.0), 1e-3, 1.0).astype(np.float32)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


class RowStitcher:
    """Blend tile probabilities row of tiles by row of tiles into ``uint8`` output rows.

    Usage: for each row of tiles (in order) call :meth:`add` for its tiles, then
    :meth:`finish_row`, which yields ``(row0, block)`` pairs of final rows; :meth:`close` yields
    the remainder. ``block`` is ``uint8 (h, W)`` with probability ``round(255 * p)``.
    """

    def __init__(self, height: int, width: int, overlap: int) -> None:
        self.height = height
        self.width = width
        self.overlap = overlap
        self._origin = 0  # scene row of the buffer's first row
        self._sum = np.zeros((0, width), dtype=np.float32)
        self._weight = np.zeros((0, width), dtype=np.float32)
        self._weight_cache: dict[tuple[int, int], np.ndarray] = {}

    def _grow(self, end_row: int) -> None:
        need = end_row - self._origin - self._sum.shape[0]
        if need > 0:
            pad = np.zeros((need, self.width), dtype=np.float32)
            self._sum = np.concatenate([self._sum, pad])
            self._weight = np.concatenate([self._weight, pad.copy()])

    def add(self, tile: Tile, probs: np.ndarray) -> None:
        """Blend one tile's probabilities ``(tile.height, tile.width)`` in ``[0, 1]``."""
        if tile.row < self._origin:
            raise ValueError(f"tile at row {tile.row} arrives after rows were flushed")
        key = (tile.height, tile.width)
        if key not in self._weight_cache:
            self._weight_cache[key] = blend_weights(tile.height, tile.width, self.overlap)
        weight = self._weight_cache[key]
        self._grow(tile.row + tile.height)
        r0 = tile.row - self._origin
        rows = slice(r0, r0 + tile.height)
        cols = slice(tile.col, tile.col + tile.width)
        self._sum[rows, cols] += probs.astype(np.float32) * weight
        self._weight[rows, cols] += weight

    def _flush(self, until: int) -> Iterator[tuple[int, np.ndarray]]:
        n = until - self._origin
        if n <= 0:
            return
        block = self._sum[:n]  # a view, finished with: scaled in place
        np.divide(block, np.maximum(self._weight[:n], 1e-6), out=block)
        block *= 255.0
        block += 0.5
        np.clip(block, 0, 255, out=block)
        yield self._origin, block.astype(np.uint8)
        self._sum = self._sum[n:]
        self._weight = self._weight[n:]
        self._origin = until

    def finish_row(self, next_row_start: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield the rows above ``next_row_start`` (no later tile touches them)."""
        yield from self._flush(min(next_row_start, self.height))

    def close(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield every remaining row."""
        yield from self._flush(self.height)
