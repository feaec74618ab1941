"""Geodata output: the predicted mask as a GeoTIFF over the input raster, and as GeoJSON polygons.

Writers go through :mod:`wrel.core.outfiles`: a temporary file in the same folder replaced
atomically, so an interrupted write never leaves a truncated output.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from wrel.core.outfiles import atomic_output

__all__ = ["write_mask_geotiff", "mask_to_geojson", "write_geojson"]

log = logging.getLogger(__name__)


def write_mask_geotiff(
    path: str | Path, mask: np.ndarray, crs: Any = None, transform: Any = None
) -> Path:
    """Write ``mask`` uint8/bool ``(H, W)`` as a one-band tiled, compressed GeoTIFF.

    bool masks are written as 0/255. The CRS and transform are the input raster's, so the
    mask overlays it in a GIS. The file is written atomically (:func:`wrel.core.outfiles.atomic_output`).
    """
    path = Path(path)
    with atomic_output(path) as tmp:
        _write_mask_geotiff(tmp, mask, crs, transform)
    return path


def _write_mask_geotiff(path: Path, mask: np.ndarray, crs: Any, transform: Any) -> None:
    """Write the GeoTIFF straight to ``path`` (a temporary file of an atomic write)."""
    import rasterio

    height, width = mask.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": "uint8",
        "compress": "deflate",
    }
    if height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with rasterio.open(path, "w", **profile) as dst:
        step = 1024  # write in row strips: no second full-size copy for the dtype cast
        for r0 in range(0, height, step):
            strip = mask[r0 : r0 + step]
            strip = (
                strip.astype(np.uint8) * 255 if strip.dtype == np.bool_ else strip.astype(np.uint8)
            )
            dst.write(strip, 1, window=((r0, r0 + strip.shape[0]), (0, width)))


def _crs_member(crs: Any) -> dict[str, Any] | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def mask_to_geojson(
    mask: np.ndarray, transform: Any = None, crs: Any = None, simplify: float = 0.0
) -> dict[str, Any]:
    """Polygons of the ``True`` pixels of ``mask`` ``(H, W)`` as a GeoJSON FeatureCollection.

    Coordinates are in the raster's CRS (through ``transform``), or in pixels (x = column,
    y = row) when the input is not georeferenced. A ``crs`` member names the CRS (the pre-RFC
    7946 convention that GDAL/QGIS read); RFC 7946 readers assume WGS84 without it.

    Args:
        mask: bool or uint8 ``(H, W)``.
        transform: affine pixel -> CRS transform; identity when None.
        crs: rasterio CRS or None.
        simplify: Douglas-Peucker tolerance in CRS units (0 keeps pixel edges).
    """
    from rasterio.features import shapes
    from shapely.geometry import mapping, shape

    valid = mask if mask.dtype == np.bool_ else mask > 0
    binary = valid.view(np.uint8)  # no copy: bool and uint8 share the layout
    kwargs: dict[str, Any] = {"mask": valid, "connectivity": 8}
    if transform is not None:
        kwargs["transform"] = transform
    features: list[dict[str, Any]] = []
    for geom, _value in shapes(binary, **kwargs):
        poly = shape(geom)
        if simplify > 0:
            poly = poly.simplify(simplify, preserve_topology=True)
        if poly.is_empty:
            continue
        features.append(
            {
                "type": "Feature",
                "properties": {"id": len(features), "area": float(poly.area)},
                "geometry": mapping(poly),
            }
        )
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    member = _crs_member(crs)
    if member is not None:
        collection["crs"] = member
    return collection


def write_geojson(
    path: str | Path,
    mask: np.ndarray,
    transform: Any = None,
    crs: Any = None,
    properties: dict[str, Any] | None = None,
) -> Path:
    """Write :func:`mask_to_geojson` to ``path`` (atomically); ``properties`` are added to every
    feature."""
    path = Path(path)
    with atomic_output(path) as tmp:
        count = _write_geojson(tmp, mask, transform, crs, properties)
    log.info("wrote %d polygon(s) to %s", count, path)
    return path


def _write_geojson(
    path: Path,
    mask: np.ndarray,
    transform: Any,
    crs: Any,
    properties: dict[str, Any] | None,
) -> int:
    """Write the GeoJSON straight to ``path`` (a temporary file of an atomic write); returns the
    number of polygons."""
    collection = mask_to_geojson(mask, transform, crs)
    for feature in collection["features"]:
        feature["properties"].update(properties or {})
    path.write_text(json.dumps(collection), encoding="utf-8")
    return len(collection["features"])
