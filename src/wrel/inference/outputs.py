"""Write a prediction: PNG or GeoTIFF mask, GeoJSON polygons, probabilities, PNG overlay."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wrel.geo import write_geojson, write_mask_geotiff
from wrel.inference.images import RASTER_SUFFIXES, Raster

__all__ = ["overlay_mask", "save_mask", "save_overlay", "PredictionFiles", "write_prediction"]

log = logging.getLogger(__name__)

OVERLAY_COLOR = (255, 48, 48)  # red-orange, visible on most aerial scenes
OVERLAY_MAX_SIDE = 2048  # quick-look overlays of large scenes are downscaled to this


def overlay_mask(
    rgb: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = OVERLAY_COLOR,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend ``color`` over the ``True`` pixels: uint8 ``(H, W, 3)`` and bool ``(H, W)``."""
    out = rgb.copy()
    tint = np.asarray(color, dtype=np.float32)
    blended = (1.0 - alpha) * rgb[mask].astype(np.float32) + alpha * tint  # (N, 3)
    out[mask] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def save_mask(path: str | Path, mask: np.ndarray, raster: Raster | None = None) -> Path:
    """Write a bool mask ``(H, W)`` (0/255): GeoTIFF for .tif (with the raster's CRS), else PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        crs = getattr(raster, "crs", None)
        transform = getattr(raster, "transform", None)
        return write_mask_geotiff(path, mask.astype(bool, copy=False), crs, transform)
    if path.suffix.lower() != ".png":
        raise ValueError(f"mask output {path} must end in .png or .tif")
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def save_overlay(
    path: str | Path, raster: Raster, mask: np.ndarray, max_side: int = OVERLAY_MAX_SIDE
) -> Path:
    """PNG quick look: the image with the mask tinted, downscaled to ``max_side`` if larger."""
    from PIL import Image

    scale = min(1.0, max_side / max(raster.height, raster.width))
    if scale < 1.0:
        h, w = max(1, round(raster.height * scale)), max(1, round(raster.width * scale))
        rgb = raster.read_rgb_resized(h, w)
        full = Image.fromarray(mask.astype(bool, copy=False).view(np.uint8))
        mask = np.asarray(full.resize((w, h), Image.Resampling.NEAREST)).astype(bool)
        del full
    else:
        rgb = raster.read_rgb()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_mask(rgb, mask)).save(path)
    return path


@dataclass
class PredictionFiles:
    """Paths written by :func:`write_prediction` (None when not requested)."""

    mask: Path | None = None
    overlay: Path | None = None
    geojson: Path | None = None
    probs: Path | None = None


def write_prediction(
    raster: Raster,
    probs_u8: np.ndarray,
    mask: np.ndarray,
    *,
    mask_path: str | Path | None = None,
    overlay_path: str | Path | None = None,
    geojson_path: str | Path | None = None,
    probs_path: str | Path | None = None,
    properties: dict[str, Any] | None = None,
) -> PredictionFiles:
    """Write the requested outputs of one prediction.

    Args:
        raster: the input (its CRS and transform georeference GeoTIFF/GeoJSON outputs).
        probs_u8: uint8 probabilities ``(H, W)``.
        mask: bool ``(H, W)``.
        mask_path: ``.png`` or ``.tif``.
        overlay_path: PNG quick look.
        geojson_path: polygons in the raster's CRS (pixel coordinates when not georeferenced).
        probs_path: uint8 probabilities as ``.tif`` (georeferenced) or ``.png``.
        properties: added to every GeoJSON feature (e.g. the expression).
    """
    files = PredictionFiles()
    if mask_path is not None:
        files.mask = save_mask(mask_path, mask, raster)
    if probs_path is not None:
        files.probs = _save_probs(Path(probs_path), probs_u8, raster)
    if overlay_path is not None:
        files.overlay = save_overlay(overlay_path, raster, mask)
    if geojson_path is not None:
        if not raster.is_georeferenced:
            log.warning("%s: the image is not georeferenced; polygons are in pixels", geojson_path)
        files.geojson = write_geojson(
            geojson_path, mask, raster.transform, raster.crs, properties=properties
        )
    return files


def _save_probs(path: Path, probs_u8: np.ndarray, raster: Raster) -> Path:
    from PIL import Image

    if path.suffix.lower() in RASTER_SUFFIXES[:2]:
        return write_mask_geotiff(path, probs_u8, raster.crs, raster.transform)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(probs_u8).save(path)
    return path
