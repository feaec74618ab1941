"""Open what a user hands the predictor (a path, a PIL image or an array) as a raster reader.

GDAL formats (GeoTIFF, JPEG2000, ...) are read lazily in windows through :class:`~wrel.geo.GeoRaster`;
ordinary picture formats are decoded by Pillow into an :class:`~wrel.geo.ArrayRaster`. Every
reader yields 8-bit RGB (see :mod:`wrel.geo` for band selection and the percentile stretch).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from wrel.geo import ArrayRaster, GeoRaster, StretchMode, to_rgb8

__all__ = [
    "ImageInput",
    "Raster",
    "RASTER_SUFFIXES",
    "PICTURE_SUFFIXES",
    "open_image",
    "decode_picture",
]

ImageInput: TypeAlias = "str | Path | np.ndarray | Any"  # Any: a PIL.Image.Image
Raster: TypeAlias = ArrayRaster | GeoRaster

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def _pil_to_array(img: Any) -> np.ndarray:
    """Pixel values of a PIL image as ``(H, W)`` or ``(H, W, C)`` keeping 16-bit depth."""
    if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    return np.asarray(img)


def decode_picture(
    data: bytes | str | Path,
    bands: tuple[int, ...] | list[int] | None = None,
    stretch: StretchMode = "auto",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode a PNG/JPEG/... file or its bytes to uint8 RGB ``(H, W, 3)``.

    Raises:
        ValueError: not an image, corrupt, empty or larger than ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    name = "the upload" if isinstance(data, bytes) else str(data)
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width == 0 or height == 0:
                raise ValueError(f"{name} is an empty image ({width} x {height})")
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(
                    f"{name} is {width} x {height} pixels, over the limit of {max_pixels} "
                    "pixels; downscale it or use `wrel predict` for large scenes"
                )
            img.load()
            array = _pil_to_array(img)
    except UnidentifiedImageError as err:
        raise ValueError(
            f"{name} is not a supported image (PNG, JPEG, TIFF, BMP, WebP, GIF)"
        ) from err
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot decode {name}: {err}; is the file complete?") from err
    return to_rgb8(array, bands, stretch)


def open_image(
    image: ImageInput,
    bands: tuple[int, ...] | list[int] | None = None,
    stretch: StretchMode = "auto",
) -> Raster:
    """A reader for ``image``: a file path, a ``PIL.Image`` or an array ``(H, W[, C])``.

    Arrays may be uint8, uint16 or float with 1, 3, 4 or more bands (``bands`` selects three,
    1-based); 8-bit RGB arrays are used as they are.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unsupported format, corrupt or empty image, unknown band.
    """
    if isinstance(image, np.ndarray):
        return ArrayRaster(to_rgb8(image, bands, stretch))
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        if path.stat().st_size == 0:
            raise ValueError(f"image {path} is an empty file (0 bytes)")
        suffix = path.suffix.lower()
        if suffix in RASTER_SUFFIXES:
            return GeoRaster(path, bands=bands, stretch=stretch)
        if suffix in PICTURE_SUFFIXES:
            return ArrayRaster(decode_picture(path, bands, stretch))
        raise ValueError(
            f"unsupported image format {suffix or '(no suffix)'!r} for {path}; use one of "
            f"{', '.join(RASTER_SUFFIXES + PICTURE_SUFFIXES)}"
        )
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        if 0 in image.size:
            raise ValueError(f"the image is empty ({image.size[0]} x {image.size[1]})")
        return ArrayRaster(to_rgb8(_pil_to_array(image), bands, stretch))
    raise ValueError(
        f"cannot use a {type(image).__name__} as an image; pass a file path, a PIL image or a "
        "numpy array (H, W[, C])"
    )
