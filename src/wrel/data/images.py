"""Robust pixel reading: images of any common mode to RGB uint8, masks from files or COCO.

Grayscale, palette, RGBA, CMYK and 16-bit (``I;16``) images are converted, not rejected
(16-bit is scaled to 8 bits); unreadable or truncated files raise ``ValueError`` naming the
file. Multi-band GeoTIFFs that Pillow cannot open are read with rasterio (first three bands).

Limits (hostile input never reaches Pillow's decoder or pycocotools unchecked):

- an image or mask file, or an annotated image size, may hold at most
  :data:`MAX_IMAGE_PIXELS` (8192 x 8192) pixels; larger files (decompression bombs included)
  raise ``ValueError`` naming the file before any pixel is decoded;
- a segmentation is validated by :func:`validate_segmentation` before pycocotools sees it:
  polygon coordinates finite and inside the image (up to :data:`POLYGON_TOLERANCE` pixels
  outside, which are clipped), a bounded outline length, RLE ``size`` equal to the image size,
  RLE counts non-negative and summing to ``height * width``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "MAX_DECODE_BYTES",
    "MAX_IMAGE_PIXELS",
    "check_decode_budget",
    "decode_cost",
    "ImageTooLargeError",
    "POLYGON_PERIMETER_FACTOR",
    "POLYGON_TOLERANCE",
    "check_image_size",
    "decode_segmentation",
    "read_mask_file",
    "read_rgb",
    "segmentation_area",
    "to_uint8",
    "validate_segmentation",
]

logger = logging.getLogger(__name__)

#: Most pixels of a training image or mask (8192 x 8192), in files and in annotations. Below
#: Pillow's own decompression-bomb warning (89.5 M pixels), so that check never fires first.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Polygon vertices up to this many pixels outside the image are clipped onto its border;
#: farther ones are errors.
POLYGON_TOLERANCE = 4.0
#: Longest outline of one annotation's polygons (sum of max(|dx|, |dy|) over all edges) as a
#: multiple of ``height + width``; bounds pycocotools' rasterisation memory (it walks every
#: outline pixel 5 times). A convex outline is at most 2 x (height + width).
POLYGON_PERIMETER_FACTOR = 64
# Compressed COCO RLE: 6 characters of 5 bits hold any count of an image within the cap (the
# C decoder's arithmetic overflows on longer groups).
_RLE_MAX_GROUP = 6
_RLE_LOW, _RLE_HIGH = 48, 48 + 63


#: Most bytes one training image may cost to decode whole and map to 8-bit RGB (see
#: :func:`decode_cost`): 8-bit RGB up to the pixel cap fits, a 16-bit image of 8192 x 8192
#: does not (about 4 GB with the stretch's float buffers); tile such images.
MAX_DECODE_BYTES = 2 * 1024**3
# Peak bytes per pixel of the float32 buffers that map non-8-bit values to 8 bits (the band
# copy as float, its finite subset, the percentile's working copy, the scaled result).
_STRETCH_BYTES_PER_PIXEL = 48
_EIGHT_BIT = frozenset({"1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBa", "RGBX",
                        "CMYK", "YCbCr", "LAB", "HSV", "uint8", "int8", "bool"})  # fmt: skip
_CONVERTED = frozenset({"1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})  # decoded via RGB(A)


class ImageTooLargeError(ValueError):
    """An image or mask file over :data:`MAX_IMAGE_PIXELS` (decompression bombs included)."""


def _mode_bytes(mode: str, bands: int) -> tuple[int, int]:
    """``(bytes per pixel of one band, bands)`` of a Pillow mode or a numpy dtype name."""
    from PIL import ImageMode

    try:
        info = ImageMode.getmode(mode)
        return np.dtype(info.typestr).itemsize, len(info.bands)
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return np.dtype(mode).itemsize, bands
    except TypeError:
        return 8, max(bands, 4)  # unknown: assume the widest


def decode_cost(width: int, height: int, mode: str, bands: int = 1) -> int:
    """Estimated peak bytes of decoding a ``width x height`` image whole and mapping it to
    8-bit RGB (the decoded pixels, their array copy, the RGB result and, for data that is not
    8-bit, the stretch's float32 buffers). Computed from the header alone.

    Args:
        mode: a Pillow mode (``RGB``, ``I;16``, ``F``, ...) or a numpy dtype name (``uint16``)
            of a raster with ``bands`` bands.
    """
    itemsize, count = _mode_bytes(mode, bands)
    decoded = itemsize * count
    per_pixel = 2 * decoded + 3  # the decoder's buffer, its numpy copy, the RGB result
    if mode in _CONVERTED:
        per_pixel += 8  # converted to RGB(A) first
    if mode not in _EIGHT_BIT:
        per_pixel += 3 * itemsize + _STRETCH_BYTES_PER_PIXEL
    return int(width) * int(height) * per_pixel


def check_decode_budget(
    name: str, width: int, height: int, mode: str, budget: int | None, advice: str, bands: int = 1
) -> None:
    """Refuse, from the header, an image whose whole decode (:func:`decode_cost`) exceeds
    ``budget`` bytes (``None``: no budget).

    Raises:
        ImageTooLargeError: naming the image, its size, mode, the cost and ``advice``.
    """
    if budget is None:
        return
    cost = decode_cost(width, height, mode, bands)
    if cost > budget:
        raise ImageTooLargeError(
            f"{name} is {width} x {height} pixels of mode {mode}: decoding it whole needs about "
            f"{cost / 2**20:,.0f} MiB, over the budget of {budget / 2**20:,.0f} MiB; {advice}"
        )


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
        if src.width * src.height > MAX_IMAGE_PIXELS:
            raise ImageTooLargeError(
                f"image {path} is {src.width} x {src.height} pixels, over the cap of "
                f"{MAX_IMAGE_PIXELS:,} (8192 x 8192); tile it into smaller training images"
            )
        bands = src.read(list(range(1, min(3, src.count) + 1)))  # (C, H, W)
    array = to_uint8(np.moveaxis(bands, 0, -1))
    if array.shape[2] < 3:
        array = np.repeat(array[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(array)


def check_image_size(height: Any, width: Any) -> tuple[int, int]:
    """``(height, width)`` as ints after checking they are positive ints within the pixel cap.

    Raises:
        ValueError: not ints (bools and floats included), not positive, or more than
            :data:`MAX_IMAGE_PIXELS` pixels.
    """
    for key, value in (("height", height), ("width", width)):
        if type(value) is not int:
            raise ValueError(f"{key} must be an int, got {value!r} ({type(value).__name__})")
        if value < 1:
            raise ValueError(f"{key} must be positive, got {value}")
    if height * width > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image size {height} x {width} exceeds the cap of {MAX_IMAGE_PIXELS:,} pixels "
            "(8192 x 8192); tile the image into smaller training images"
        )
    return height, width


def _open_checked(path: Path, what: str) -> Any:
    """Pillow image of ``path`` with its header read and its pixel count checked."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageTooLargeError(
                f"{what} {path} is a decompression bomb or far too large ({err}); training "
                f"images may hold at most {MAX_IMAGE_PIXELS:,} pixels (8192 x 8192)"
            ) from err
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise ImageTooLargeError(
            f"{what} {path} is {width} x {height} pixels, over the cap of {MAX_IMAGE_PIXELS:,} "
            "(8192 x 8192); tile it into smaller training images"
        )
    try:
        check_decode_budget(
            f"{what} {path}", width, height, img.mode, MAX_DECODE_BYTES,
            "tile it into smaller training images or convert it to 8 bits",
        )  # fmt: skip
    except ImageTooLargeError:
        img.close()
        raise
    return img


def decode_checked(
    path: str | Path,
    decode: Callable[[Image.Image], np.ndarray],
    fallback: Callable[[Path], np.ndarray] | None = None,
) -> np.ndarray:
    """Open ``path`` under the pixel cap, load it and ``decode`` it; one set of clear errors.

    ``fallback`` reads files Pillow does not identify (for example TIFFs for rasterio).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image, is truncated, or has more than
            :data:`MAX_IMAGE_PIXELS` pixels (decompression bombs included).
    """
    from PIL import UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist; check the data root and file_name")
    try:
        with _open_checked(path, "image") as img:
            img.load()
            return decode(img)
    except ImageTooLargeError:
        raise
    except UnidentifiedImageError as err:
        reason: Exception = err
        if fallback is not None:
            try:
                return fallback(path)
            except ImageTooLargeError:
                raise
            except Exception as other:  # any reader failure is the same user error
                reason = other
        raise ValueError(
            f"image {path} is not a readable image ({reason}); re-export it as PNG/JPEG/TIFF"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"image {path} is unreadable or truncated ({err}); re-download or re-export it"
        ) from err


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB (TIFFs Pillow cannot read go to rasterio).

    Raises: as :func:`decode_checked`.
    """
    tiff = Path(path).suffix.lower() in (".tif", ".tiff")
    return decode_checked(path, _pil_to_rgb, _rasterio_rgb if tiff else None)


def read_mask_file(path: str | Path) -> np.ndarray:
    """Read a mask image as ``(H, W)`` uint8 in {0, 1}.

    Masks stored as {0, 1} use nonzero as foreground; others (0/255, JPEG) use half their maximum.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable, truncated, or more than :data:`MAX_IMAGE_PIXELS` pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask {path} does not exist; check the masks/ folder")
    try:
        with _open_checked(path, "mask") as img:
            img.load()
            array = np.asarray(img)
    except ImageTooLargeError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"mask {path} is unreadable or truncated ({err}); re-export it") from err
    if array.ndim == 3:
        array = array[:, :, :3].max(axis=2)  # (H, W, C) -> (H, W); alpha is not foreground
    top = int(array.max(initial=0))
    return (array > (0 if top <= 1 else top // 2)).astype(np.uint8)


def _polygon(poly: Any, index: int, height: int, width: int) -> tuple[Any, float]:
    """A checked (and if need be clipped) polygon and its rasterisation cost in pixels."""
    if not isinstance(poly, list | tuple):
        raise ValueError(
            f"polygon {index} must be a list of numbers [x0, y0, x1, y1, ...], got "
            f"{type(poly).__name__}"
        )
    for position, value in enumerate(poly):
        if type(value) is not int and type(value) is not float:
            raise ValueError(
                f"polygon {index} holds {value!r} ({type(value).__name__}) at position "
                f"{position}; coordinates must be numbers"
            )
    if len(poly) % 2:
        raise ValueError(f"polygon {index} has an odd number of coordinates ({len(poly)})")
    try:
        coords = np.asarray(poly, dtype=np.float64)  # (2K,) = x0, y0, x1, y1, ...
    except OverflowError as err:
        raise ValueError(f"polygon {index} holds an integer too large for a coordinate") from err
    finite = np.isfinite(coords)
    if not finite.all():
        position = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"polygon {index} holds the non-finite coordinate {poly[position]!r} at position "
            f"{position}; coordinates must be finite numbers"
        )
    xy = coords.reshape(-1, 2)  # (K, 2)
    limits = np.array([width, height], dtype=np.float64)
    outside = (xy < -POLYGON_TOLERANCE) | (xy > limits + POLYGON_TOLERANCE)  # (K, 2)
    if outside.any():
        vertex, axis = (int(v) for v in np.argwhere(outside)[0])
        raise ValueError(
            f"polygon {index}, vertex {vertex}: {'xy'[axis]} = {float(xy[vertex, axis])!r} is "
            f"outside "
            f"the image ({width} wide, {height} high; up to {POLYGON_TOLERANCE:g} px outside "
            "is clipped)"
        )
    if ((xy < 0) | (xy > limits)).any():
        poly = np.clip(xy, 0.0, limits).reshape(-1).tolist()
    edges = np.abs(np.diff(xy, axis=0, append=xy[:1]))  # (K, 2), closing edge included
    return poly, float(edges.max(axis=1, initial=0.0).sum()) + len(xy)


def _rle_string_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string, checked as the C decoder would read them."""
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    bad = (chars < _RLE_LOW) | (chars > _RLE_HIGH)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"RLE counts string holds {chr(raw[position])!r} at position {position}; "
            "compressed counts use the characters '0' to 'o'"
        )
    code = chars - _RLE_LOW
    more = (code & 0x20) != 0
    if more[-1]:
        raise ValueError("RLE counts string is truncated (its last character continues a run)")
    ends = np.flatnonzero(~more)  # last character of each run
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _RLE_MAX_GROUP:
        raise ValueError(
            f"RLE counts string holds a run of {int(lengths.max())} characters; no run of an "
            f"image within {MAX_IMAGE_PIXELS:,} pixels needs more than {_RLE_MAX_GROUP}"
        )
    shift = 5 * (np.arange(code.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((code & 0x1F) << shift, starts)
    negative = (code[ends] & 0x10) != 0
    values = np.where(negative, values | np.left_shift(np.int64(-1), 5 * lengths), values)
    # Runs after the second are stored as differences to the run two places back.
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


def _check_runs(runs: np.ndarray, height: int, width: int) -> None:
    if runs.size and runs.min() < 0:
        position = int(np.flatnonzero(runs < 0)[0])
        raise ValueError(
            f"RLE count {int(runs[position])} at position {position} is negative; run "
            "lengths are pixel counts"
        )
    total = int(runs.sum(dtype=np.int64)) if runs.size else 0
    if runs.size and int(runs.max()) > height * width or total != height * width:
        raise ValueError(
            f"RLE counts sum to {total} pixels but the image has {height} x {width} = "
            f"{height * width}; the RLE does not belong to this image size"
        )


def _rle(segmentation: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    size = segmentation.get("size", [height, width])
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or any(type(v) is not int for v in size)
        or tuple(size) != (height, width)
    ):
        raise ValueError(
            f"RLE size {size!r} differs from the image's [height, width] = [{height}, {width}]"
        )
    counts = segmentation["counts"]
    if isinstance(counts, list | tuple):  # uncompressed
        for position, value in enumerate(counts):
            if type(value) is not int:
                raise ValueError(
                    f"RLE count {value!r} ({type(value).__name__}) at position {position} is "
                    "not an int"
                )
        if len(counts) > height * width + 1:
            raise ValueError(
                f"RLE has {len(counts)} counts, more than the image's {height * width} pixels"
            )
        try:
            runs = np.asarray(counts, dtype=np.int64)
        except OverflowError as err:
            raise ValueError("RLE holds a count too large for any image") from err
        _check_runs(runs, height, width)
        return {"size": [height, width], "counts": list(counts)}
    if isinstance(counts, str | bytes):
        _check_runs(_rle_string_counts(counts), height, width)
        return {"size": [height, width], "counts": counts}
    raise ValueError(
        f"RLE counts must be a list of ints or a compressed string, got {type(counts).__name__}"
    )


def validate_segmentation(segmentation: Any, height: int, width: int) -> Any:
    """Check a COCO segmentation against its image size; return it ready for pycocotools.

    Polygons (a list of ``[x0, y0, x1, y1, ...]``): every coordinate a finite number within
    the image, up to :data:`POLYGON_TOLERANCE` pixels outside (clipped onto the border);
    polygons with fewer than 3 vertices are dropped (as pycocotools would); an odd number of
    coordinates is an error; the total outline, in pixels, is at most
    :data:`POLYGON_PERIMETER_FACTOR` x (height + width). RLE (``{"size", "counts"}``): ``size``
    equals ``[height, width]`` (filled in when absent); counts (a list of ints or a compressed
    string) are non-negative and sum to exactly ``height * width``.

    Args:
        segmentation: polygons or an RLE dict, as read from ``instances.json``.
        height: the image height, a positive int.
        width: the image width, a positive int.

    Returns:
        The segmentation, with clipped polygons and the RLE size filled in.

    Raises:
        ValueError: naming the bad value (the caller adds the file and annotation id).
    """
    height, width = check_image_size(height, width)
    if isinstance(segmentation, list):
        out, cost = [], 0.0
        for index, poly in enumerate(segmentation):
            checked, poly_cost = _polygon(poly, index, height, width)
            if len(checked) >= 6:
                out.append(checked)
                cost += poly_cost
        limit = POLYGON_PERIMETER_FACTOR * (height + width)
        if cost > limit:
            raise ValueError(
                f"the polygons' outline is {cost:,.0f} px long, over the limit of {limit:,} px "
                f"({POLYGON_PERIMETER_FACTOR} x (height + width)); simplify the polygons"
            )
        return out
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return _rle(segmentation, height, width)
    raise ValueError(
        "segmentation must be a list of polygons or an RLE dict with 'counts', got "
        f"{type(segmentation).__name__}"
    )


def _to_rle(segmentation: Any, height: int, width: int) -> Any:
    from pycocotools import mask as mask_utils

    segmentation = validate_segmentation(segmentation, height, width)
    if isinstance(segmentation, list):  # polygons, merged into one RLE
        if not segmentation:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    return {"size": [height, width], "counts": counts}


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode polygons or an RLE into a ``(H, W)`` uint8 mask in {0, 1}.

    Raises:
        ValueError: the segmentation fails :func:`validate_segmentation`.
    """
    from pycocotools import mask as mask_utils

    rle = _to_rle(segmentation, height, width)
    if rle is None:
        return np.zeros((height, width), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8).reshape(height, width)


def segmentation_area(segmentation: Any, height: int, width: int) -> int:
    """Foreground pixel count of a segmentation, without decoding it (validated first)."""
    from pycocotools import mask as mask_utils

    rle = _to_rle(segmentation, height, width)
    return 0 if rle is None else int(mask_utils.area(rle))
