"""Raster input: band selection, percentile stretch, windowed GeoTIFF reads (the data readers'
and the predictor's).

Readers return 8-bit RGB because the model sees 8-bit RGB in training. Multi-band or 16-bit
rasters are reduced to three bands (``bands``, 1-based as in GDAL) and stretched per band
between two percentiles estimated on a decimated read of the whole scene, so every tile of a
large scene gets the same stretch. :class:`GeoRaster` reads windows with ``rasterio`` so memory
stays bounded by the tile size; :class:`ArrayRaster` wraps an image already in memory.

Hostile or damaged inputs: a raster's declared size is checked against ``max_pixels`` right
after its header is read, before any pixel is; nodata pixels (a nodata value, an internal mask
or an alpha band, as GDAL reports them) are left out of the stretch estimate and read as black,
and :meth:`GeoRaster.valid_mask` tells the predictor where they are. The geodata writers
(mask GeoTIFF, GeoJSON) are in :mod:`wrel.inference.geo`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "Tile",
    "Stretch",
    "StretchMode",
    "select_bands",
    "compute_stretch",
    "apply_stretch",
    "to_rgb8",
    "ArrayRaster",
    "GeoRaster",
    "DEFAULT_MAX_PIXELS",
    "check_pixel_count",
    "NonFiniteImageError",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tile:
    """A pixel window of a raster (a tile of a scene): offsets and size."""

    row: int
    col: int
    height: int
    width: int


class NonFiniteImageError(ValueError):
    """An image whose selected bands hold no finite value (all NaN / infinite)."""


StretchMode = Literal["auto", "percentile", "none"]
# Decimated read used to estimate the stretch of a large raster: longest side in pixels.
STRETCH_SAMPLE_SIDE = 1024
# GDAL block cache while reading (MB). GDAL's default (5% of RAM) would dominate peak memory;
# this holds about one row of 800-pixel tiles of an 8000-pixel-wide 16-bit RGB scene.
GDAL_CACHE_MB = 128
DEFAULT_PERCENTILES = (2.0, 98.0)
# Largest raster (height x width) opened by default, checked on the declared size before any
# pixel is read. Prediction holds two full-size 8-bit arrays (probabilities and mask), so 1e9
# pixels (about 31600 x 31600) needs about 2 GB plus the model; ``None`` disables the check.
DEFAULT_MAX_PIXELS = 1_000_000_000

Stretch = tuple[np.ndarray, np.ndarray]  # per-band (low, high), float32 (3,)


def select_bands(count: int, bands: tuple[int, ...] | list[int] | None) -> tuple[int, int, int]:
    """Choose three 1-based band indices of a ``count``-band raster.

    Defaults: bands 1-3 when there are at least three (RGBA and RGB+NIR keep RGB), band 1
    repeated for one- and two-band rasters. One given band is repeated as grey.
    """
    if count <= 0:
        raise ValueError("the image has no bands")
    if not bands:
        return (1, 2, 3) if count >= 3 else (1, 1, 1)
    chosen = tuple(int(b) for b in bands)
    bad = [b for b in chosen if not 1 <= b <= count]
    if bad:
        raise ValueError(
            f"band index {bad} does not exist: the image has {count} band(s), numbered "
            f"1..{count}; pass e.g. --bands {','.join(str(i) for i in range(1, min(count, 3) + 1))}"
        )
    if len(chosen) == 1:
        return (chosen[0],) * 3
    if len(chosen) != 3:
        raise ValueError(f"give one band (grey) or three bands (R,G,B), got {list(chosen)}")
    return (chosen[0], chosen[1], chosen[2])


def check_pixel_count(
    height: int, width: int, max_pixels: int | None, name: str = "the image"
) -> None:
    """Raise ``ValueError`` when ``height x width`` exceeds ``max_pixels`` (``None``: no limit)."""
    if max_pixels is None:
        return
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    pixels = int(height) * int(width)
    if pixels > max_pixels:
        raise ValueError(
            f"{name} declares {width} x {height} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} pixels; raise it with --max-pixels (max_pixels=) if the machine has "
            "about 2 bytes of memory per pixel to spare, or cut the scene into parts "
            "(e.g. gdal_translate -srcwin)"
        )


def compute_stretch(
    sample: np.ndarray,
    mode: StretchMode = "auto",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    valid: np.ndarray | None = None,
) -> Stretch:
    """Per-band stretch limits from a (possibly decimated) sample ``(h, w, 3)``.

    ``auto`` keeps 8-bit data as is and stretches anything else between ``percentiles``;
    ``none`` maps the dtype's range (0..255 for 8-bit, 0..65535 for 16-bit, 0..1 for floats).
    ``valid`` (bool ``(h, w)``) leaves nodata pixels out of the percentiles.
    """
    if mode not in ("auto", "percentile", "none"):
        raise ValueError(f"stretch must be auto, percentile or none, got {mode!r}")
    if mode == "none" or (mode == "auto" and sample.dtype == np.uint8):
        integer = np.issubdtype(sample.dtype, np.integer)
        hi = float(np.iinfo(sample.dtype).max) if integer else 1.0
        return np.zeros(3, np.float32), np.full(3, hi, np.float32)
    flat = sample.reshape(-1, sample.shape[-1]).astype(np.float32)  # (h*w, 3)
    finite = np.isfinite(flat).all(axis=1)
    if valid is None and not finite.any():
        raise NonFiniteImageError(
            "the image holds no finite pixel value in the selected bands (all NaN or "
            "infinite): the model would see a blank image and predict nothing"
        )
    if valid is not None:
        finite &= valid.reshape(-1)
    flat = flat[finite] if finite.any() else np.zeros((1, flat.shape[1]), np.float32)
    lo, hi = np.percentile(flat, percentiles, axis=0).astype(np.float32)
    # a constant band: widen by at least one float32 step (``lo + 1e-6`` rounds back to ``lo``
    # above 16, and the stretch would divide by zero)
    hi = np.maximum(hi, lo + np.maximum(np.spacing(lo), np.float32(1e-6))).astype(np.float32)
    return lo, hi


def apply_stretch(array: np.ndarray, stretch: Stretch) -> np.ndarray:
    """Map ``(h, w, 3)`` values linearly so that ``low -> 0`` and ``high -> 255`` (clipped)."""
    lo, hi = stretch
    if array.dtype == np.uint8 and np.all(lo == 0) and np.all(hi == 255):
        return np.ascontiguousarray(array)
    scaled = array.astype(np.float32)  # one float buffer, updated in place
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    np.nan_to_num(scaled, copy=False)
    scaled += 0.5
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def to_rgb8(
    array: np.ndarray,
    bands: tuple[int, ...] | list[int] | None = None,
    stretch: StretchMode = "auto",
) -> np.ndarray:
    """Turn an image array ``(H, W)`` or ``(H, W, C)`` of any dtype into uint8 RGB ``(H, W, 3)``."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image array must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"the image is empty (shape {array.shape})")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    idx = [b - 1 for b in select_bands(array.shape[2], bands)]
    rgb = array[:, :, idx]  # (H, W, 3)
    return apply_stretch(rgb, compute_stretch(rgb, stretch))


class ArrayRaster:
    """An in-memory uint8 RGB image ``(H, W, 3)`` with the reader interface of GeoRaster."""

    crs: Any = None
    transform: Any = None
    is_georeferenced = False
    has_nodata = False

    def __init__(
        self, rgb: np.ndarray, *, path: str | Path | None = None, source_dtype: Any = None
    ) -> None:
        self.rgb = rgb
        self.height, self.width = int(rgb.shape[0]), int(rgb.shape[1])
        self.path = None if path is None else Path(path)  # the file it was decoded from
        # dtype of the pixels before the 8-bit mapping (uint16 for a 16-bit PNG), as GeoRaster
        self.dtype = np.dtype(rgb.dtype if source_dtype is None else source_dtype)

    def valid_mask(
        self, tile: Tile | None = None, out_shape: tuple[int, int] | None = None
    ) -> np.ndarray | None:
        """Always ``None``: in-memory images have no nodata."""
        return None

    def read_rgb(self, tile: Tile | None = None) -> np.ndarray:
        """uint8 ``(h, w, 3)`` of ``tile`` (the whole image when None)."""
        if tile is None:
            return self.rgb
        return self.rgb[tile.row : tile.row + tile.height, tile.col : tile.col + tile.width]

    def read_rgb_resized(self, height: int, width: int) -> np.ndarray:
        """The whole image resized (bilinear) to uint8 ``(height, width, 3)``."""
        from PIL import Image

        img = Image.fromarray(self.rgb).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(img)

    def close(self) -> None:
        """Nothing to release."""


class GeoRaster:
    """A raster file read window by window through rasterio (GeoTIFF, JPEG2000, ...).

    Args:
        path: raster file.
        bands: three 1-based band indices (or one, for grey); default as :func:`select_bands`.
        stretch: see :func:`compute_stretch`; estimated once on a decimated read.
        percentiles: low/high percentiles of the stretch.
        max_pixels: refuse rasters declaring more pixels (checked on the header, before any
            pixel is read); ``None`` for no limit.
        scaling: a :class:`wrel.data.image_reading.ImageScaling` (the training contract): its
            bands (unless ``bands`` is given) and value mapping replace ``stretch`` /
            ``percentiles``.

    Nodata (a nodata value, an internal mask or an alpha band of the selected bands) is left
    out of the stretch, read as black (0) by :meth:`read_rgb`, and located by
    :meth:`valid_mask`; ``has_nodata`` says whether the raster declares any.
    """

    def __init__(
        self,
        path: str | Path,
        bands: tuple[int, ...] | list[int] | None = None,
        stretch: StretchMode = "auto",
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        scaling: Any = None,
    ) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.path = Path(path)
        try:
            with warnings.catch_warnings():  # plain TIFFs are fine: outputs then use pixels
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except RasterioIOError as err:
            raise ValueError(
                f"cannot read {self.path} as a raster ({err}); is the file complete and a "
                "GeoTIFF or another GDAL-readable format?"
            ) from err
        self.scaling = scaling
        try:
            self._setup(bands, stretch, percentiles, max_pixels)
        except BaseException:
            self._ds.close()
            raise

    def _setup(
        self,
        bands: tuple[int, ...] | list[int] | None,
        stretch: StretchMode,
        percentiles: tuple[float, float],
        max_pixels: int | None,
    ) -> None:
        from rasterio.enums import MaskFlags

        ds = self._ds
        self.height, self.width = int(ds.height), int(ds.width)
        if self.height == 0 or self.width == 0:
            raise ValueError(f"{self.path} has zero size ({self.width} x {self.height})")
        check_pixel_count(self.height, self.width, max_pixels, str(self.path))
        if self.scaling is not None:  # wrel.data.image_reading.ImageScaling (the contract)
            self.bands = self.scaling.select_bands(ds.count, bands)
        else:
            self.bands = select_bands(ds.count, bands)
        self.crs = ds.crs
        self.transform = ds.transform
        self.is_georeferenced = ds.crs is not None
        self.dtype = np.dtype(ds.dtypes[self.bands[0] - 1])
        self.nodata = tuple(ds.nodatavals[b - 1] for b in self.bands)
        self.has_nodata = any(
            MaskFlags.all_valid not in ds.mask_flag_enums[b - 1] for b in self.bands
        )
        # Rasters up to STRETCH_SAMPLE_SIDE are sampled at their own size (every pixel, as the
        # training reader sees them); larger ones on a decimated read.
        scale = max(1.0, max(self.height, self.width) / STRETCH_SAMPLE_SIDE)
        shape = (max(1, round(self.height / scale)), max(1, round(self.width / scale)))
        # With nodata, nearest sampling keeps nodata values out of valid neighbours.
        sample = self._read(shape, nearest=self.has_nodata)
        valid = self.valid_mask(out_shape=shape)
        if self.scaling is not None:
            self.stretch = self.scaling.limits(sample, valid)
        else:
            self.stretch = compute_stretch(sample, stretch, percentiles, valid=valid)

    def _read(
        self, out_shape: tuple[int, int] | None = None, window: Any = None, nearest: bool = False
    ) -> np.ndarray:
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioIOError

        kwargs: dict[str, Any] = {"window": window}
        if out_shape is not None:
            resampling = Resampling.nearest if nearest else Resampling.bilinear
            kwargs.update(out_shape=(3, *out_shape), resampling=resampling)
        import rasterio

        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                data = self._ds.read(list(self.bands), **kwargs)  # (3, h, w)
        except RasterioIOError as err:
            raise ValueError(f"{self.path} is corrupt or truncated: {err}") from err
        return np.moveaxis(data, 0, -1)  # (h, w, 3)

    def valid_mask(
        self, tile: Tile | None = None, out_shape: tuple[int, int] | None = None
    ) -> np.ndarray | None:
        """bool ``(h, w)``, False on nodata pixels of ``tile`` (or of the whole raster resampled
        to ``out_shape``); ``None`` when the raster declares no nodata (every pixel is valid).

        A pixel is nodata when any selected band is nodata there.
        """
        if not self.has_nodata:
            return None
        import rasterio
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        window = None if tile is None else Window(tile.col, tile.row, tile.width, tile.height)
        kwargs: dict[str, Any] = {"window": window}
        bands = sorted(set(self.bands))
        if out_shape is not None:
            kwargs["out_shape"] = (len(bands), *out_shape)
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                masks = self._ds.read_masks(bands, **kwargs)  # (n, h, w) uint8, 0 = nodata
        except RasterioIOError as err:
            raise ValueError(f"{self.path} is corrupt or truncated: {err}") from err
        return masks.min(axis=0) > 0

    def _blank_nodata(self, rgb: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        if valid is not None:
            rgb[~valid] = 0
        return rgb

    def read_rgb(self, tile: Tile | None = None) -> np.ndarray:
        """Stretched uint8 ``(h, w, 3)`` of ``tile`` (the whole raster when None); nodata is 0."""
        from rasterio.windows import Window

        window = None if tile is None else Window(tile.col, tile.row, tile.width, tile.height)
        rgb = apply_stretch(self._read(window=window), self.stretch)
        return self._blank_nodata(rgb, self.valid_mask(tile))

    def read_rgb_resized(self, height: int, width: int) -> np.ndarray:
        """The whole raster resampled to uint8 ``(height, width, 3)`` (memory ~ output size)."""
        rgb = apply_stretch(self._read(out_shape=(height, width)), self.stretch)
        return self._blank_nodata(rgb, self.valid_mask(out_shape=(height, width)))

    def close(self) -> None:
        """Close the dataset."""
        self._ds.close()
