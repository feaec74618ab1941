"""Open what a user hands the predictor (a path, a PIL image or an array) as a raster reader.

GDAL formats (GeoTIFF, JPEG2000, ...) are read lazily in windows through :class:`~wrel.data.rasters.GeoRaster`;
ordinary picture formats are decoded by Pillow into an :class:`~wrel.data.rasters.ArrayRaster`. Every
reader yields 8-bit RGB (see :mod:`wrel.data.rasters` for band selection and the percentile stretch).
With ``scaling`` (a :class:`~wrel.data.image_reading.ImageScaling`, what the checkpoint records)
the bands and value mapping are exactly those of training (:mod:`wrel.data.image_reading`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from wrel.data.image_reading import ImageScaling, decode_array, scale_to_rgb8
from wrel.data.images import check_decode_budget
from wrel.data.rasters import DEFAULT_MAX_PIXELS, ArrayRaster, GeoRaster, StretchMode, to_rgb8

__all__ = [
    "ImageInput",
    "Raster",
    "RASTER_SUFFIXES",
    "PICTURE_SUFFIXES",
    "open_image",
    "decode_picture",
    "picture_budget",
]

ImageInput: TypeAlias = "str | Path | np.ndarray | Any"  # Any: a PIL.Image.Image
Raster: TypeAlias = ArrayRaster | GeoRaster

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


_pil_to_array = decode_array  # one decoder for training and prediction
#: Memory per pixel that ``max_pixels`` promises (the predictor's probabilities and mask).
BYTES_PER_PIXEL = 2
_PICTURE_ADVICE = (
    "picture formats are decoded whole; convert it to a tiled GeoTIFF, which is read window by "
    "window (gdal_translate -co TILED=YES in.png out.tif), or raise --max-pixels if the machine "
    "has the memory"
)


def _to_rgb8(
    array: np.ndarray,
    bands: tuple[int, ...] | list[int] | None,
    stretch: StretchMode,
    scaling: ImageScaling | None,
) -> np.ndarray:
    if scaling is not None:
        return scale_to_rgb8(array, scaling, bands)
    return to_rgb8(array, bands, stretch)


def decode_picture(
    data: bytes | str | Path,
    bands: tuple[int, ...] | list[int] | None = None,
    stretch: StretchMode = "auto",
    max_pixels: int | None = None,
    scaling: ImageScaling | None = None,
) -> np.ndarray:
    """Decode a PNG/JPEG/... file or its bytes to uint8 RGB ``(H, W, 3)``.

    ``scaling`` (the training contract) replaces ``stretch``; ``bands`` overrides its bands.

    Raises:
        ValueError: not an image, corrupt, empty or larger than ``max_pixels``.
    """
    return _to_rgb8(_decode_raw(data, max_pixels), bands, stretch, scaling)


def picture_budget(max_pixels: int | None) -> int | None:
    """Decode budget in bytes of a picture decoded whole under ``max_pixels``: the memory
    ``max_pixels`` admits for a raster read in windows (about 2 bytes per pixel)."""
    return None if max_pixels is None else BYTES_PER_PIXEL * max_pixels


def _decode_raw(data: bytes | str | Path, max_pixels: int | None) -> np.ndarray:
    """Raw pixel values ``(H, W[, C])`` of a picture file or its bytes (checked).

    Picture formats cannot be read in windows: besides ``max_pixels``, the whole decode's
    cost (:func:`wrel.data.images.decode_cost`, from the header) must fit
    :func:`picture_budget`, so a small file of many 16-bit pixels is refused before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    name = "the upload" if isinstance(data, bytes) else str(data)
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():  # the pixel cap and decode budget below decide
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
        with img:
            width, height = img.size
            if width == 0 or height == 0:
                raise ValueError(f"{name} is an empty image ({width} x {height})")
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(
                    f"{name} is {width} x {height} pixels, over the limit of {max_pixels:,} "
                    "pixels; downscale it, or for large scenes use a tiled GeoTIFF with "
                    "`wrel predict` (its limit is --max-pixels)"
                )
            check_decode_budget(
                name, width, height, img.mode, picture_budget(max_pixels), _PICTURE_ADVICE
            )
            img.load()
            array = _pil_to_array(img)
    except UnidentifiedImageError as err:
        raise ValueError(
            f"{name} is not a supported image (PNG, JPEG, TIFF, BMP, WebP, GIF)"
        ) from err
    except Image.DecompressionBombError as err:
        raise ValueError(
            f"{name} is too large to decode in memory ({err}); convert it to a tiled GeoTIFF "
            "(gdal_translate -co TILED=YES in.png out.tif), which is read window by window"
        ) from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode {name}: {err}; is the file complete?") from err
    return array


def open_image(
    image: ImageInput,
    bands: tuple[int, ...] | list[int] | None = None,
    stretch: StretchMode = "auto",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    scaling: ImageScaling | None = None,
) -> Raster:
    """A reader for ``image``: a file path, a ``PIL.Image`` or an array ``(H, W[, C])``.

    Arrays may be uint8, uint16 or float with 1, 3, 4 or more bands (``bands`` selects three,
    1-based); 8-bit RGB arrays are used as they are. Files declaring more than ``max_pixels``
    pixels are refused from their header, before any pixel is read (``None``: no limit;
    in-memory images are not checked). GeoTIFF nodata is honoured (see
    :class:`~wrel.data.rasters.GeoRaster`). ``scaling`` (a checkpoint's
    :class:`~wrel.data.image_reading.ImageScaling`) replaces ``stretch`` so the model sees the
    values it was trained on; ``bands`` then overrides only its band choice.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unsupported format, corrupt, empty or too large image, unknown band.
    """
    if isinstance(image, np.ndarray):
        return ArrayRaster(_to_rgb8(image, bands, stretch, scaling), source_dtype=image.dtype)
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        if path.stat().st_size == 0:
            raise ValueError(f"image {path} is an empty file (0 bytes)")
        suffix = path.suffix.lower()
        if suffix in RASTER_SUFFIXES:
            return GeoRaster(
                path, bands=bands, stretch=stretch, max_pixels=max_pixels, scaling=scaling
            )
        if suffix in PICTURE_SUFFIXES:
            raw = _decode_raw(path, max_pixels)
            rgb = _to_rgb8(raw, bands, stretch, scaling)
            return ArrayRaster(rgb, path=path, source_dtype=raw.dtype)
        raise ValueError(
            f"unsupported image format {suffix or '(no suffix)'!r} for {path}; use one of "
            f"{', '.join(RASTER_SUFFIXES + PICTURE_SUFFIXES)}"
        )
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        if 0 in image.size:
            raise ValueError(f"the image is empty ({image.size[0]} x {image.size[1]})")
        raw = _pil_to_array(image)
        return ArrayRaster(_to_rgb8(raw, bands, stretch, scaling), source_dtype=raw.dtype)
    raise ValueError(
        f"cannot use a {type(image).__name__} as an image; pass a file path, a PIL image or a "
        "numpy array (H, W[, C])"
    )
