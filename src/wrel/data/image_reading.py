"""The image-reading contract shared by training, evaluation and ``wrel predict``.

Every image reaches the model as 8-bit RGB ``(H, W, 3)`` built by one function from the raw
pixels, whatever the file (PNG, JPEG, TIFF/GeoTIFF), bit depth (8, 16 bit, float) or band count
(1 to N). :class:`ImageScaling` says how:

- ``bands``: 1-based band numbers, three (R, G, B) or one (grey, replicated to three); ``None``
  takes bands 1-3, or band 1 replicated for 1- and 2-band images (RGBA and RGB+NIR keep RGB).
- ``method``, how values are mapped to 0-255 per band (``low -> 0``, ``high -> 255``, clipped):

  ===========================  ==========================================================
  ``auto`` (default)           8-bit data as it is (bit-identical to a plain RGB decode);
                               other data as ``per_image_percentile``
  ``per_image_percentile``     each image's own ``percentiles`` (default 2 and 98) per band
  ``fixed_range``              ``value_range = [low, high]`` for every band and image
  ``dataset_stats``            per-band ``band_low`` / ``band_high`` measured on the data
                               set (``wrel data stats`` prints them)
  ``dtype_range``              the dtype's full range (0-255, 0-65535; floats 0-1)
  ===========================  ==========================================================

The trainer records the spec in the exported model's metadata (``image_scaling``) and
:class:`wrel.inference.Predictor` applies the same one, so a model sees the same values at
prediction time as in training. GeoTIFFs are read through :class:`wrel.data.rasters.GeoRaster` on both
paths (nodata pixels are left out of percentiles and read as 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wrel.data.images import (
    MAX_DECODE_BYTES,
    MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    _open_checked,
    check_decode_budget,
    decode_checked,
)
from wrel.data.rasters import (
    GeoRaster,
    NonFiniteImageError,
    apply_stretch,
    compute_stretch,
    select_bands,
)

__all__ = [
    "GEO_SUFFIXES",
    "IMAGE_SCALING_KEY",
    "METHODS",
    "ImageScaling",
    "decode_array",
    "read_image",
    "read_raw",
    "scale_to_rgb8",
]

ScalingMethod = Literal[
    "auto", "per_image_percentile", "fixed_range", "dataset_stats", "dtype_range"
]
METHODS: tuple[str, ...] = (
    "auto",
    "per_image_percentile",
    "fixed_range",
    "dataset_stats",
    "dtype_range",
)
#: Checkpoint metadata key holding :meth:`ImageScaling.to_dict`.
IMAGE_SCALING_KEY = "image_scaling"
#: Suffixes read through rasterio (:class:`wrel.data.rasters.GeoRaster`) on every path.
GEO_SUFFIXES = (".tif", ".tiff")
# Pillow modes decoded to RGB exactly as before the contract (8-bit data, `auto`, default bands).
_EIGHT_BIT_MODES = ("RGB", "L", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1", "RGBX")


@dataclass(frozen=True)
class ImageScaling:
    """Which bands and how pixel values become the model's 8-bit RGB (module docstring)."""

    method: ScalingMethod = "auto"
    bands: tuple[int, ...] | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    value_range: tuple[float, float] | None = None
    band_low: tuple[float, ...] | None = None
    band_high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid image scaling (data.image_scaling): " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with the spec (empty when it is valid)."""
        out: list[str] = []
        if self.method not in METHODS:
            out.append(f"method={self.method!r} is not one of {list(METHODS)}")
        if self.bands is not None and (
            len(self.bands) not in (1, 3) or any(type(b) is not int or b < 1 for b in self.bands)
        ):
            out.append(f"bands={self.bands!r} must be one or three 1-based band numbers")
        lo, hi = (float(v) for v in self.percentiles)
        if not (0.0 <= lo < hi <= 100.0):
            out.append(f"percentiles={self.percentiles!r} must satisfy 0 <= low < high <= 100")
        if self.method == "fixed_range":
            if self.value_range is None or len(self.value_range) != 2:
                out.append("fixed_range needs value_range=[low, high], e.g. [0, 4095]")
            elif not _finite_pair_ok(self.value_range):
                out.append(f"value_range={self.value_range!r} must be finite with low < high")
        if self.method == "dataset_stats":
            lows, highs = self.band_low, self.band_high
            if lows is None or highs is None:
                out.append(
                    "dataset_stats needs band_low and band_high (one value per band, or one for "
                    "all); `wrel data stats --data DIR` prints them"
                )
            elif len(lows) != len(highs) or len(lows) not in (1, 3):
                out.append(
                    f"band_low {list(lows)} and band_high {list(highs)} must both hold 1 or 3 "
                    "values"
                )
            elif not all(_finite_pair_ok((a, b)) for a, b in zip(lows, highs, strict=True)):
                out.append(
                    f"band_low {list(lows)} must be finite and below band_high {list(highs)}"
                )
        return out

    # -- (de)serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "image_scaling") -> ImageScaling:
        """Rebuild a spec from :meth:`to_dict` (e.g. checkpoint metadata); errors name ``where``."""
        if isinstance(data, ImageScaling):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("bands",) and value is not None:
                value = tuple(int(v) for v in value)
            elif (
                key in ("percentiles", "value_range", "band_low", "band_high") and value is not None
            ):
                value = tuple(float(v) for v in value)
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err

    def describe(self) -> str:
        """One line for logs."""
        bands = "default bands" if self.bands is None else f"bands {list(self.bands)}"
        detail = {
            "per_image_percentile": f" {self.percentiles[0]:g}-{self.percentiles[1]:g}%",
            "auto": f" (8-bit as is, else {self.percentiles[0]:g}-{self.percentiles[1]:g}%)",
            "fixed_range": f" {list(self.value_range or ())}",
            "dataset_stats": f" low {list(self.band_low or ())} high {list(self.band_high or ())}",
        }.get(self.method, "")
        return f"{self.method}{detail}, {bands}"

    # -- the mapping ----------------------------------------------------------------------------

    def select_bands(self, count: int, bands: Any = None) -> tuple[int, int, int]:
        """Three 1-based band numbers of a ``count``-band image (``bands`` overrides)."""

        return select_bands(count, bands if bands else self.bands)

    def limits(
        self, rgb: np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-band ``(low, high)`` float32 ``(3,)`` for the selected bands ``rgb (h, w, 3)``.

        ``valid`` (bool ``(h, w)``) leaves nodata pixels out of percentiles.
        """

        if self.method == "auto":
            return compute_stretch(rgb, "auto", self.percentiles, valid=valid)
        if self.method == "per_image_percentile":
            return compute_stretch(rgb, "percentile", self.percentiles, valid=valid)
        if self.method == "dtype_range":
            return compute_stretch(rgb, "none")
        if self.method == "fixed_range":
            low, high = self.value_range or (0.0, 1.0)
            return np.full(3, low, np.float32), np.full(3, high, np.float32)
        lows, highs = self.band_low or (0.0,), self.band_high or (1.0,)
        return (
            np.resize(np.asarray(lows, np.float32), 3),
            np.resize(np.asarray(highs, np.float32), 3),
        )


def _finite_pair_ok(pair: Any) -> bool:
    low, high = (float(v) for v in pair)
    return math.isfinite(low) and math.isfinite(high) and low < high


def scale_to_rgb8(
    array: np.ndarray, scaling: ImageScaling | None = None, bands: Any = None
) -> np.ndarray:
    """Raw pixels ``(H, W)`` / ``(H, W, C)`` of any dtype -> uint8 RGB ``(H, W, 3)``.

    The one mapping of the contract: bands chosen by ``scaling`` (``bands`` overrides), values
    scaled by its method. 8-bit RGB under ``auto`` is returned unchanged.
    """

    scaling = scaling or ImageScaling()
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image array must be (H, W) or (H, W, C), got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"the image is empty (shape {array.shape})")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    idx = [b - 1 for b in scaling.select_bands(array.shape[2], bands)]
    rgb = array[:, :, idx]  # (H, W, 3)
    if rgb.dtype.kind in "fc" and not np.isfinite(rgb).any():
        raise NonFiniteImageError(
            "the image holds no finite pixel value in the selected bands (all NaN or "
            "infinite): the model would see a blank image and predict nothing"
        )
    return apply_stretch(rgb, scaling.limits(rgb))


def decode_array(img: Any) -> np.ndarray:
    """Pixel values of an opened PIL image, ``(H, W)`` or ``(H, W, C)``, keeping 16-bit depth."""
    if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    return np.asarray(img)


def read_raw(path: str | Path) -> np.ndarray:
    """Raw pixel values of a picture file (Pillow), checked against the training pixel cap.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable, truncated or over :data:`wrel.data.images.MAX_IMAGE_PIXELS`.
    """

    return decode_checked(path, decode_array)


def _read_geotiff(path: Path, scaling: ImageScaling) -> np.ndarray:

    try:
        raster = GeoRaster(path, scaling=scaling, max_pixels=MAX_IMAGE_PIXELS)
    except ValueError as err:
        if "over the limit" in str(err):
            raise ImageTooLargeError(
                f"image {path} is over the cap of {MAX_IMAGE_PIXELS:,} pixels (8192 x 8192); "
                "tile it into smaller training images"
            ) from err
        raise ValueError(f"image {path} is not a readable image ({err}); re-export it") from err
    try:
        check_decode_budget(
            f"image {path}", raster.width, raster.height, raster.dtype.name, MAX_DECODE_BYTES,
            "tile it into smaller training images or convert it to 8 bits", bands=3,
        )  # fmt: skip
        return raster.read_rgb()
    finally:
        raster.close()


def read_image(path: str | Path, scaling: ImageScaling | None = None) -> np.ndarray:
    """Read a training or evaluation image as the model's uint8 RGB ``(H, W, 3)``.

    TIFF/GeoTIFF files go through :class:`wrel.data.rasters.GeoRaster` (as in ``wrel predict``);
    other files through Pillow and :func:`scale_to_rgb8`. With ``auto`` and default bands,
    8-bit images are decoded exactly as ``Image.convert("RGB")`` does.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable, truncated, too large, or an unknown band.
    """

    scaling = scaling or ImageScaling()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist; check the data root and file_name")
    if path.suffix.lower() in GEO_SUFFIXES:
        return _read_geotiff(path, scaling)
    try:
        with _open_checked(path, "image") as img:
            img.load()
            if scaling.method == "auto" and scaling.bands is None and img.mode in _EIGHT_BIT_MODES:
                return np.asarray(img.convert("RGB"))
            array = decode_array(img)
    except ImageTooLargeError:
        raise
    except (OSError, SyntaxError) as err:
        raise ValueError(
            f"image {path} is unreadable or truncated ({err}); re-download or re-export it"
        ) from err
    try:
        return scale_to_rgb8(array, scaling)
    except ValueError as err:
        raise ValueError(f"image {path}: {err}") from err
