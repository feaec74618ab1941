"""Write a prediction: PNG or GeoTIFF mask, GeoJSON polygons, probabilities, PNG overlay.

Every file is written to a temporary file in its folder and moved over the final path with
``os.replace`` once complete (:mod:`wrel.core.outfiles`); :func:`write_prediction` replaces all its
files only after every one of them was written, and never writes over the input image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wrel.core.outfiles import (
    Inputs,
    OutputWriteError,
    StagedOutputs,
    atomic_output,
    check_output_paths,
)
from wrel.inference.geo import _write_geojson, _write_mask_geotiff
from wrel.inference.inputs import Raster

__all__ = [
    "OUTPUT_SUFFIXES",
    "overlay_mask",
    "save_mask",
    "save_overlay",
    "PredictionFiles",
    "check_prediction_paths",
    "write_prediction",
]

log = logging.getLogger(__name__)

OVERLAY_COLOR = (255, 48, 48)  # red-orange, visible on most aerial scenes
OVERLAY_MAX_SIDE = 2048  # quick-look overlays of large scenes are downscaled to this
GEOTIFF_SUFFIXES = (".tif", ".tiff")
# Suffixes each output accepts (lower case), keyed by write_prediction's argument names.
OUTPUT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "mask_path": (".png", *GEOTIFF_SUFFIXES),
    "probs_path": (".png", *GEOTIFF_SUFFIXES),
    "overlay_path": (".png", ".jpg", ".jpeg"),
    "geojson_path": (".geojson", ".json"),
}
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


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


def _check_suffix(path: Path, key: str, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES[key]:
        raise ValueError(f"{what} {path} must end in {', '.join(OUTPUT_SUFFIXES[key])}")
    return suffix


def _write_mask(tmp: Path, final: Path, mask: np.ndarray, raster: Raster | None) -> None:
    from PIL import Image

    if _check_suffix(final, "mask_path", "mask output") in GEOTIFF_SUFFIXES:
        crs = getattr(raster, "crs", None)
        transform = getattr(raster, "transform", None)
        _write_mask_geotiff(tmp, mask.astype(bool, copy=False), crs, transform)
    else:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")


def save_mask(path: str | Path, mask: np.ndarray, raster: Raster | None = None) -> Path:
    """Write a bool mask ``(H, W)`` (0/255): GeoTIFF for .tif (with the raster's CRS), else PNG.

    Written atomically: an interrupted write leaves a previous file at ``path`` intact.
    """
    path = Path(path)
    _check_suffix(path, "mask_path", "mask output")
    with atomic_output(path) as tmp:
        _write_mask(tmp, path, mask, raster)
    return path


def save_overlay(
    path: str | Path, raster: Raster, mask: np.ndarray, max_side: int = OVERLAY_MAX_SIDE
) -> Path:
    """PNG quick look: the image with the mask tinted, downscaled to ``max_side`` if larger.

    Written atomically, like :func:`save_mask`.
    """
    path = Path(path)
    _check_suffix(path, "overlay_path", "overlay")
    with atomic_output(path) as tmp:
        _write_overlay(tmp, path, raster, mask, max_side)
    return path


def _write_overlay(
    tmp: Path, final: Path, raster: Raster, mask: np.ndarray, max_side: int = OVERLAY_MAX_SIDE
) -> None:
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
    fmt = _PIL_FORMATS[_check_suffix(final, "overlay_path", "overlay")]
    Image.fromarray(overlay_mask(rgb, mask)).save(tmp, format=fmt)


@dataclass
class PredictionFiles:
    """Paths written by :func:`write_prediction` (None when not requested)."""

    mask: Path | None = None
    overlay: Path | None = None
    geojson: Path | None = None
    probs: Path | None = None


def check_prediction_paths(
    *,
    mask_path: str | Path | None = None,
    overlay_path: str | Path | None = None,
    geojson_path: str | Path | None = None,
    probs_path: str | Path | None = None,
    inputs: Inputs = (),
    overwrite: bool = False,
    names: dict[str, str] | None = None,
) -> PredictionFiles:
    """Validate the output paths of :func:`write_prediction` before any work is done.

    Refuses an output that is one of ``inputs`` or a file they read (sidecars, VRT sources; also
    through symlinks, relative paths or hard links), a folder, an unsupported suffix, an unwritable location, two outputs on one file
    and, unless ``overwrite``, an existing file. ``names`` maps argument names to the names
    used in messages (e.g. ``{"mask_path": "--out"}``).

    Raises:
        ValueError: naming the output, the path and the fix.
    """
    names = {key: key for key in OUTPUT_SUFFIXES} | (names or {})
    given = {
        "mask_path": mask_path,
        "overlay_path": overlay_path,
        "geojson_path": geojson_path,
        "probs_path": probs_path,
    }
    checked = check_output_paths(
        {names[key]: value for key, value in given.items()},
        suffixes={names[key]: OUTPUT_SUFFIXES[key] for key in given},
        inputs=inputs,
        overwrite=overwrite,
    )
    return PredictionFiles(
        **{key[: -len("_path")]: checked.get(names[key]) for key in given},
    )


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
    overwrite: bool = True,
) -> PredictionFiles:
    """Write the requested outputs of one prediction, all or nothing.

    The paths are checked first (:func:`check_prediction_paths`; the raster's own file is never
    written over); each file is written to a temporary file in its folder and the final paths
    are replaced only once every file is complete, so a failure or an interrupt leaves any
    previous files intact.

    Args:
        raster: the input (its CRS and transform georeference GeoTIFF/GeoJSON outputs).
        probs_u8: uint8 probabilities ``(H, W)``.
        mask: bool ``(H, W)``.
        mask_path: ``.png`` or ``.tif``.
        overlay_path: PNG quick look.
        geojson_path: polygons in the raster's CRS (pixel coordinates when not georeferenced).
        probs_path: uint8 probabilities as ``.tif`` (georeferenced) or ``.png``.
        properties: added to every GeoJSON feature (e.g. the expression).
        overwrite: replace existing files (the default, as before); ``False`` refuses them.

    Raises:
        ValueError: a bad output path (nothing is written then).
        OutputWriteError: a write failed (disk full, ...); no final path was touched.
    """
    files = check_prediction_paths(
        mask_path=mask_path,
        overlay_path=overlay_path,
        geojson_path=geojson_path,
        probs_path=probs_path,
        inputs=[getattr(raster, "path", None)],
        overwrite=overwrite,
    )
    writers: list[tuple[Path | None, Callable[[Path, Path], object]]] = [
        (files.mask, lambda tmp, final: _write_mask(tmp, final, mask, raster)),
        (files.probs, lambda tmp, final: _write_probs(tmp, final, probs_u8, raster)),
        (files.overlay, lambda tmp, final: _write_overlay(tmp, final, raster, mask)),
        (
            files.geojson,
            lambda tmp, final: _write_prediction_geojson(tmp, final, raster, mask, properties),
        ),
    ]
    staged = StagedOutputs()
    try:
        for final, write in writers:
            if final is None:
                continue
            try:
                write(staged.temp(final), final)
            except OSError as err:
                raise OutputWriteError(
                    f"could not write {final}: {_reason(err)}; no output was replaced (a "
                    "previous file at that path is intact)"
                ) from err
        try:
            staged.commit()
        except OSError as err:
            raise OutputWriteError(f"could not move the outputs in place: {_reason(err)}") from err
    except BaseException:
        staged.abort()
        raise
    return files


def _reason(err: OSError) -> str:
    return " ".join(str(err).split()) or err.strerror or type(err).__name__


def _write_prediction_geojson(
    tmp: Path, final: Path, raster: Raster, mask: np.ndarray, properties: dict[str, Any] | None
) -> None:
    if not raster.is_georeferenced:
        log.warning("%s: the image is not georeferenced; polygons are in pixels", final)
    count = _write_geojson(tmp, mask, raster.transform, raster.crs, properties)
    log.info("%d polygon(s) for %s", count, final)


def _write_probs(tmp: Path, final: Path, probs_u8: np.ndarray, raster: Raster) -> None:
    from PIL import Image

    if _check_suffix(final, "probs_path", "probabilities output") in GEOTIFF_SUFFIXES:
        _write_mask_geotiff(tmp, probs_u8, raster.crs, raster.transform)
    else:
        Image.fromarray(probs_u8).save(tmp, format="PNG")
