"""Reading an upload: its header before any pixel (:func:`probe_image`), then its pixels.

Uploads are read exactly as ``wrel predict`` reads files: TIFF/GeoTIFF through
:class:`wrel.data.rasters.GeoRaster` (from memory, ``/vsimem``), other pictures through Pillow,
both with the checkpoint's recorded image scaling (:attr:`Predictor.scaling`), so 8/16-bit and
1-N band images reach the model as the same tensor as through ``Predictor.predict(path)``.
:func:`decode_cost` estimates one request's memory from the header, so an image over the
budget is refused (413) before it is decoded. Nothing is written to disk.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wrel.data.rasters import GeoRaster
from wrel.web.limits import RequestRejected, ServerLimits, mb

__all__ = [
    "ACCEPTED_FORMATS",
    "OVERLAY_MAX_SIDE",
    "UPLOAD_FORMATS",
    "decode_cost",
    "is_tiff",
    "open_upload",
    "png_b64",
    "probe_image",
    "rendering",
    "upload_message",
]

#: Pillow formats the demo opens; TIFF/GeoTIFF goes through rasterio (as in ``wrel predict``).
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF")
UPLOAD_FORMATS = "PNG, JPEG, TIFF/GeoTIFF, BMP, WebP or GIF"
#: First bytes of a classic or Big TIFF, little or big endian.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
DATA_URL = b"data:image/png;base64,"
OVERLAY_MAX_SIDE = 2048  # overlays of bigger images are decimated to at most this side
#: Peak memory of one request (decode, model, overlay, rendering, probabilities and answer)
#: measured with a stand-in model on noise (the worst case for PNG): 2048 x 2048 RGB 8-bit
#: 255 MB, 16-bit grey PNG 243 MB; 4096 x 4096 RGB 8-bit 347 MB, 16-bit grey PNG 687 MB,
#: 16-bit GeoTIFF 241 MB. The estimate: bytes per decoded pixel plus bytes per pixel of the
#: overlay and rendering (at most OVERLAY_MAX_SIDE**2 of them).
BYTES_PER_PIXEL_8BIT = 22
BYTES_PER_PIXEL_HIGH_DEPTH = 52
BYTES_PER_OVERLAY_PIXEL = 44
UNSUPPORTED = f"the upload is not a supported image ({UPLOAD_FORMATS})"


def decode_cost(width: int, height: int, mode: str, block_bytes: int = 0) -> int:
    """Estimated peak bytes of one request on a ``width x height`` image.

    ``mode`` is a Pillow mode (``RGB``, ``I;16``, ...) or, for TIFF, a numpy dtype name
    (``uint8``, ``uint16``, ``float32``); ``block_bytes`` is the largest block GDAL decodes at
    once (a TIFF strip or tile, all bands of a pixel-interleaved file).
    """
    high_depth = mode in ("I", "F") or mode.startswith("I;") or mode not in _EIGHT_BIT_MODES
    per_pixel = BYTES_PER_PIXEL_HIGH_DEPTH if high_depth else BYTES_PER_PIXEL_8BIT
    step = -(-max(width, height) // OVERLAY_MAX_SIDE)
    overlay_pixels = -(-width // step) * -(-height // step)
    return width * height * per_pixel + overlay_pixels * BYTES_PER_OVERLAY_PIXEL + block_bytes


# Pillow modes and numpy dtypes of 8-bit data (the cheaper per-pixel budget).
_EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
     "HSV", "uint8", "int8", "bool"}
)  # fmt: skip


def is_tiff(data: bytes) -> bool:
    """Whether ``data`` starts like a TIFF / BigTIFF file (read through rasterio)."""
    return bytes(data[:4]) in TIFF_MAGIC


@contextlib.contextmanager
def _memory_raster(data: bytes) -> Iterator[str]:
    """A GDAL ``/vsimem`` path holding ``data`` while the block runs (nothing touches disk)."""
    from rasterio.io import MemoryFile

    with MemoryFile(data, ext=".tif") as memfile:
        yield memfile.name


def _tiff_header(data: bytes) -> tuple[int, int, str, int]:
    """``(width, height, label, block_bytes)`` of a TIFF upload, read by rasterio (GTiff
    driver only) from its header: no pixel is decoded."""
    import warnings

    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.enums import Interleaving
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings(), _memory_raster(data) as name:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(name, driver="GTiff") as ds:
                width, height, count = int(ds.width), int(ds.height), int(ds.count)
                dtype = np.dtype(ds.dtypes[0]) if count else np.dtype(np.uint8)
                blocks = ds.block_shapes or [(height, width)]
                pixel_interleaved = ds.interleaving == Interleaving.pixel
    except (RasterioError, CPLE_BaseError, OSError, ValueError) as err:
        reason = str(err).split(": ", 1)[-1] if ": " in str(err) else str(err)
        raise RequestRejected(
            415, f"cannot read the TIFF header ({reason}); is the file complete?"
        ) from err
    if count == 0:
        raise RequestRejected(415, "the TIFF upload has no band")
    block_rows, block_cols = (int(v) for v in blocks[0])
    block_bytes = block_rows * block_cols * dtype.itemsize * (count if pixel_interleaved else 1)
    label = f"{count}-band {dtype.name}"
    return width, height, label, block_bytes


def _picture_header(data: bytes) -> tuple[int, int, str]:
    """``(width, height, Pillow mode)`` of a PNG/JPEG/... upload from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
            return img.size[0], img.size[1], img.mode
    except Image.DecompressionBombError as err:
        raise RequestRejected(413, f"the image is too large to decode safely: {err}") from err
    except UnidentifiedImageError as err:
        raise RequestRejected(415, UNSUPPORTED) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestRejected(415, f"cannot read the image header: {err}") from err


def probe_image(data: bytes, limits: ServerLimits) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding a pixel.

    TIFF/GeoTIFF headers are read by rasterio (as ``wrel predict`` reads them), other formats
    by Pillow's lazy open.

    Raises:
        RequestRejected: 415 for a non-image or unreadable header; 413 above ``max_side``, the
            pixel cap or the decode memory budget.
    """
    block_bytes = 0
    if is_tiff(data):
        width, height, mode, block_bytes = _tiff_header(data)
        cost_mode = mode.split(" ", 1)[1]  # the dtype
    else:
        width, height, mode = _picture_header(data)
        cost_mode = mode
    if width <= 0 or height <= 0:
        raise RequestRejected(415, f"the upload is an empty image ({width} x {height})")
    side = limits.max_side
    if max(width, height) > side or width * height > limits.max_pixels:
        raise RequestRejected(
            413,
            f"the image is {width} x {height} pixels; the demo accepts up to {side} per side "
            f"and {limits.max_pixels:,} pixels: downscale it or use `wrel predict` "
            "for large scenes",
        )
    cost = decode_cost(width, height, cost_mode, block_bytes)
    if cost > limits.max_decode_bytes:
        raise RequestRejected(
            413,
            f"decoding this {width} x {height} {mode} image needs about {mb(cost)}, over the "
            f"demo's {mb(limits.max_decode_bytes)} budget: downscale it, convert it to 8 bits "
            "or use `wrel predict`",
        )
    return width, height


def png_b64(array: np.ndarray) -> bytes:
    """``array`` (``(H, W)`` or ``(H, W, 3)`` uint8) as base64 PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getbuffer())


def rendering(raster: Any, step: int) -> np.ndarray:
    """The 8-bit RGB the model is fed (the checkpoint's scaling), every ``step``-th pixel."""
    height, width = -(-raster.height // step), -(-raster.width // step)
    if step == 1:
        return raster.read_rgb()
    if isinstance(getattr(raster, "rgb", None), np.ndarray):  # in memory: plain decimation
        return raster.rgb[::step, ::step]
    return raster.read_rgb_resized(height, width)  # GeoTIFF: a decimated read


def _decode_upload(data: bytes) -> Any:
    """A PNG/JPEG/... upload as a loaded PIL image (its header was checked by probe_image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        img.load()
    except UnidentifiedImageError as err:
        raise ValueError(UNSUPPORTED) from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"the upload is too large to decode safely: {err}") from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode the upload: {err}; is the file complete?") from err
    return img


def upload_message(err: BaseException, vsimem_name: Any) -> str:
    """An error's text with the in-memory file name replaced by "the upload"."""
    message = str(err)
    if vsimem_name:
        message = message.replace(str(vsimem_name), "the upload")
    return message


@contextlib.contextmanager
def open_upload(predictor: Any, source: bytes | Path, limits: ServerLimits) -> Iterator[Any]:
    """The image as the predictor's raster, read as ``wrel predict`` reads a file.

    TIFF bytes go through :class:`wrel.data.rasters.GeoRaster` on a ``/vsimem`` copy, other bytes
    through Pillow, example files through :meth:`Predictor.open`; the checkpoint's image
    scaling applies to all of them.

    Raises:
        RequestRejected: 415 for an image that cannot be read (corrupt, unknown band, ...).
    """
    name = None
    with contextlib.ExitStack() as stack:
        try:
            if isinstance(source, Path):
                raster = predictor.open(source)
            elif is_tiff(source):
                name = stack.enter_context(_memory_raster(source))
                scaling = getattr(predictor, "scaling", None)
                raster = GeoRaster(name, scaling=scaling, max_pixels=limits.max_pixels)
            else:
                with _decode_upload(source) as img:
                    raster = predictor.open(img)
        except (ValueError, OSError) as err:
            message = upload_message(err, name)
            bands = getattr(getattr(predictor, "scaling", None), "bands", None)
            if bands and "band index" in message:  # the CLI's --bands hint does not apply
                message = (
                    f"{message.split('; pass', 1)[0]}; this model reads bands {list(bands)} "
                    "(the image scaling it was trained with): upload an image that has them"
                )
            raise RequestRejected(415, message) from err
        stack.callback(raster.close)
        yield raster
