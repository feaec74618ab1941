"""Preview grid of a refer-layout benchmark: image, target outline, expression and class name."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from wrel.core.outfiles import write_file
from wrel.data.images import decode_segmentation, read_rgb
from wrel.data.refer import image_file
from wrel.data.synth.stats import read_benchmark
from wrel.data.synth.writer import DATASET_NAME

__all__ = ["preview_protected_folders", "render_preview"]

logger = logging.getLogger(__name__)


def _draw_panel(ax: Any, image: np.ndarray, mask: np.ndarray, info: dict[str, Any]) -> None:
    """One panel: image ``(H, W, 3)``, target outline from ``mask`` ``(H, W)``, texts."""
    ax.imshow(image, interpolation="nearest")
    ax.contour(mask, levels=[0.5], colors="yellow", linewidths=1.2)
    title = "\n".join(textwrap.wrap(f"\u201c{info['expression']}\u201d", 34))
    count = info["num_same_class"]
    ax.set_title(f"{title}\nclass: {info['class_name']} (\u00d7{count})", fontsize=8)


def preview_protected_folders(root: str | Path) -> list[Path]:
    """The benchmark's folders under ``root``: a preview is never written inside them."""
    return [Path(root) / DATASET_NAME, Path(root) / "images" / DATASET_NAME]


def render_preview(
    root: str | Path,
    out_png: str | Path,
    n: int = 12,
    *,
    split: str | None = None,
    columns: int = 4,
    overwrite: bool = True,
    name: str = "preview",
) -> Path:
    """Draw ``n`` samples of ``<root>/synthetic`` into one PNG.

    Each panel shows the image with the target mask outlined in yellow, the accurate
    expression, the class name (the weak expression) and how often that class occurs.

    Args:
        root: data root holding ``synthetic/`` and ``images/synthetic/``.
        out_png: where to write the grid (parent folders are created).
        n: number of samples, spread evenly over the refs.
        split: only refs of this split (default: all).
        columns: panels per row.
        overwrite: replace an existing ``out_png`` (``False``: refuse it).
        name: how ``out_png`` is named in errors (e.g. ``--preview``).

    Returns:
        The written path, written atomically (:func:`wrel.core.outfiles.write_file`); never
        inside the benchmark's own folders (:func:`preview_protected_folders`).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    if n < 1:
        raise ValueError(f"n={n}: the preview needs at least one sample")
    data = read_benchmark(root)
    refs = [r for r in data["refs"] if split is None or r["split"] == split]
    if not refs:
        raise ValueError(f"no refs in split {split!r} under {root}; use train, val or test")
    picks = [refs[int(i)] for i in np.linspace(0, len(refs) - 1, min(n, len(refs)))]
    anns = {a["id"]: a for a in data["instances"]["annotations"]}
    rows = -(-len(picks) // columns)
    fig = Figure(figsize=(3.0 * columns, 3.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    image_dir = Path(root) / "images" / DATASET_NAME / "JPEGImages"
    images = {im["id"]: im for im in data["instances"]["images"]}
    for ax, ref in zip(axes.ravel(), picks, strict=False):
        ann = anns[ref["ann_id"]]
        info = images[ann["image_id"]]
        # validated decode (bounded sizes and runs) and a path that stays in the image folder
        mask = decode_segmentation(ann["segmentation"], info["height"], info["width"])
        image = read_rgb(image_file(image_dir, info["file_name"]))  # (H, W, 3) uint8
        _draw_panel(ax, image, mask, data["attributes"][str(ref["ref_id"])])
    fig.tight_layout()
    fmt = Path(out_png).suffix.lower().lstrip(".") or "png"
    out = write_file(
        out_png,
        lambda tmp: fig.savefig(tmp, format=fmt, dpi=90, metadata={"Software": None}),
        name=name,
        overwrite=overwrite,
        folders=preview_protected_folders(root),
    )
    logger.info("wrote preview of %d samples to %s", len(picks), out)
    return out
