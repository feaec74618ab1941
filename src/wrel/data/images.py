"""Robust pixel reading: images of any common mode to RGB uint8, masks from files or COCO.

Grayscale, palette, RGBA, CMYK and 16-bit (``I;16``) images are converted, not rejected
(16-bit is scaled to 8 bits); unreadable or truncated files raise ``ValueError`` naming the
file. Multi-band GeoTIFFs that Pillow cannot open are read with rasterio (first three bands).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["decode_segmentation", "read_mask_file", "read_rgb", "segmentation_area", "to_uint8"]

logger = logging.getLogger(__name__)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to uint8 (16-bit by 1/257, floats by their range)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        return np.clip(array.astype(np.float32) * (255.0 / top), 0, 255).round().astype(np.uint8)
    array = np.nan_to_num(array.astype(np.float32))
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        return (array * 255.0).round().astype(np.uint8)
    scale = 255.0 / (high - low) if high > low else 0.0
    return ((array - low) * scale).round().astype(np.uint8)


def _pil_to_rgb(img: Any) -> np.ndarray:
    if img.mode in ("RGB", "L", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1", "RGBX"):
        return np.asarray(img.convert("RGB"))
    array = to_uint8(np.asarray(img))  # I;16, I, F and friends: one band
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return np.ascontiguousarray(array[:, :, :3])


def _rasterio_rgb(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        bands = src.read(list(range(1, min(3, src.count) + 1)))  # (C, H, W)
    array = to_uint8(np.moveaxis(bands, 0, -1))
    if array.shape[2] < 3:
        array = np.repeat(array[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(array)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image or is truncated.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist; check the data root and file_name")
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_rgb(img)
    except UnidentifiedImageError as err:
        reason: Exception = err
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                return _rasterio_rgb(path)
            except Exception as rio_err:  # any reader failure is the same user error
                reason = rio_err
        raise ValueError(
            f"image {path} is not a readable image ({reason}); re-export it as PNG/JPEG/TIFF"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"image {path} is unreadable or truncated ({err}); re-download or re-export it"
        ) from err


def read_mask_file(path: str | Path) -> np.ndarray:
    """Read a mask image as ``(H, W)`` uint8 in {0, 1}.

    Masks stored as {0, 1} use nonzero as foreground; others (0/255, JPEG) use half their maximum.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask {path} does not exist; check the masks/ folder")
    try:
        with Image.open(path) as img:
            img.load()
            array = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"mask {path} is unreadable or truncated ({err}); re-export it") from err
    if array.ndim == 3:
        array = array[:, :, :3].max(axis=2)  # (H, W, C) -> (H, W); alpha is not foreground
    top = int(array.max(initial=0))
    return (array > (0 if top <= 1 else top // 2)).astype(np.uint8)


def _to_rle(segmentation: Any, height: int, width: int) -> Any:
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons, merged into one RLE
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            return mask_utils.frPyObjects(segmentation, height, width)
        counts = segmentation["counts"]
        counts = counts.encode("ascii") if isinstance(counts, str) else counts
        return {"size": list(segmentation.get("size", [height, width])), "counts": counts}
    raise ValueError(f"unsupported segmentation {type(segmentation).__name__}")


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode polygons or an RLE into a ``(H, W)`` uint8 mask in {0, 1}."""
    from pycocotools import mask as mask_utils

    rle = _to_rle(segmentation, height, width)
    if rle is None:
        return np.zeros((height, width), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8).reshape(height, width)


def segmentation_area(segmentation: Any, height: int, width: int) -> int:
    """Foreground pixel count of a segmentation, without decoding it."""
    from pycocotools import mask as mask_utils

    rle = _to_rle(segmentation, height, width)
    return 0 if rle is None else int(mask_utils.area(rle))
