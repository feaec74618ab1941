"""Tile grids cover scenes exactly and the row stitcher blends them without seams."""

from __future__ import annotations

import numpy as np
import pytest

from wrel.inference.tiling import RowStitcher, blend_weights, tile_grid, tile_starts


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 32, 8), (64, 64, 16), (20, 32, 4)])
def test_tile_starts_cover_axis(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert starts[0] == 0 and min(length, starts[-1] + tile) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_tile_starts_rejects_bad_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, 32)


def test_blend_weights_ramp() -> None:
    w = blend_weights(16, 16, overlap=4)
    assert w.shape == (16, 16) and w.max() == pytest.approx(1.0)
    assert w[0, 0] < w[2, 2] < w[8, 8]
    assert np.all(blend_weights(8, 8, 0) == 1.0)


def test_stitcher_reproduces_constant_field_and_flushes_rows() -> None:
    height, width, tile, overlap = 70, 50, 24, 6
    field = np.linspace(0, 1, height * width, dtype=np.float32).reshape(height, width)
    out = np.full((height, width), 7, np.uint8)
    stitcher = RowStitcher(height, width, overlap)
    grid = tile_grid(height, width, tile, overlap)
    flushed = []
    for i, row in enumerate(grid):
        for t in row:
            stitcher.add(t, field[t.row : t.row + t.height, t.col : t.col + t.width])
        nxt = grid[i + 1][0].row if i + 1 < len(grid) else height
        for r0, block in stitcher.finish_row(nxt):
            flushed.append((r0, block.shape[0]))
            out[r0 : r0 + block.shape[0]] = block
    for r0, block in stitcher.close():
        out[r0 : r0 + block.shape[0]] = block
    # Blending the same field from overlapping tiles gives the field back (to uint8 precision).
    assert np.abs(out.astype(np.float32) / 255 - field).max() <= 1 / 255 + 1e-6
    # Rows were emitted progressively: memory stays at about one row of tiles.
    assert len(flushed) >= len(grid) - 1
    assert stitcher._sum.shape[0] == 0
