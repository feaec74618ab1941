"""``Predictor``: a trained model applied to images of any size, in the spirit of SamPredictor.

Small images are resized to the model's input size (a stretch, as in training) and batched.
Large scenes are either tiled with overlap and stitched (``mode="tile"``: objects keep their
size in pixels, good for "all ships" style queries and small objects) or seen whole after a
downscale (``mode="whole"``: keeps the global layout that expressions such as "the ship at the
top left" refer to). Probabilities are kept as ``uint8`` (``round(255 p)``) at full resolution
so an 8000 x 8000 scene costs 64 MB; tile work is bounded by ``tile_size`` and ``batch_size``.
Rasters larger than ``config.max_pixels`` are refused before any pixel is read or any array
allocated, and nodata pixels of a GeoTIFF always get probability 0 (never foreground).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from wrel.core.bounded import load_json
from wrel.data.image_reading import IMAGE_SCALING_KEY, ImageScaling
from wrel.data.preprocessing import (
    DEFAULT_IMAGE_SIZE,
    IMAGE_MEAN_KEY,
    IMAGE_SIZE_KEY,
    IMAGE_STD_KEY,
    Preprocessing,
    check_normalisation,
    image_size_from_metadata,
    scaling_from_metadata,
)
from wrel.data.rasters import DEFAULT_MAX_PIXELS, StretchMode, check_pixel_count
from wrel.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wrel.engine.checkpoint import load_model
from wrel.inference.inputs import ImageInput, Raster, open_image
from wrel.inference.tiling import RowStitcher, Tile, tile_grid

__all__ = [
    "IMAGE_SIZE_KEY",
    "IMAGE_MEAN_KEY",
    "IMAGE_STD_KEY",
    "IMAGE_SCALING_KEY",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MAX_PIXELS",
    "PredictorConfig",
    "Predictor",
    "image_size_from_metadata",
    "scaling_from_metadata",
    "read_checkpoint_scaling",
]

log = logging.getLogger(__name__)

Mode = Literal["auto", "whole", "tile"]


@dataclass
class PredictorConfig:
    """How images are fed to the model."""

    # auto: whole-image pass up to `max_whole_side`, tiles above; whole / tile force one.
    mode: Mode = "auto"
    # Scene pixels per tile, resized to the model input. 800 = the RRSIS-D image size the
    # reference models were trained on; use your training images' native size.
    tile_size: int = 800
    overlap: int = 160  # pixels shared by neighbouring tiles (blended with a linear ramp)
    max_whole_side: int = 1600  # auto mode tiles images whose longer side exceeds this
    batch_size: int = 8  # images or tiles per forward pass
    threshold: float = 0.5  # foreground probability threshold for masks
    # Longest side of the image read for the whole-scene pass of large rasters (decimated).
    whole_read_side: int = 2048
    # Refuse images of more pixels (height x width), checked on a file's header before any
    # pixel is read: the output needs ~2 bytes per pixel. None disables the check.
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        _validate(self)


def read_checkpoint_scaling(path: str | Path) -> ImageScaling | None:
    """:func:`scaling_from_metadata` of a model folder's ``config.json``, read without loading
    the weights (``wrel predict`` opens the image before the model). ``None`` when the file is
    missing or unreadable: loading the model then reports the problem."""
    config = Path(path) / "config.json"
    try:
        data = load_json(config, "checkpoint config")
    except (OSError, ValueError):
        return None
    return scaling_from_metadata(data if isinstance(data, dict) else {})


class NonFiniteOutputError(ValueError):
    """The model's scores are NaN or infinite (broken weights, input or normalisation)."""


class Predictor:
    """Segment the object an expression refers to.

    Args:
        model: a ``RefSegModel`` (``tokenize`` + forward returning ``.logits (B, 2, H, W)``).
        image_size: model input ``(H, W)``.
        mean: per-channel normalisation mean (0..1 scale).
        std: per-channel normalisation std.
        device: where the model runs.
        config: tiling and batching; defaults to :class:`PredictorConfig`.
        scaling: how image files and arrays become 8-bit RGB, as in training
            (:class:`~wrel.data.image_reading.ImageScaling`, from the checkpoint); ``None``
            (checkpoints older than the contract): the ``auto`` stretch, with a warning for
            inputs that are not 8-bit.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        image_size: tuple[int, int] = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str | torch.device = "cpu",
        config: PredictorConfig | None = None,
        scaling: ImageScaling | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.scaling = scaling
        self._warned_legacy = False
        self.model = model.to(self.device).eval()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.config = config or PredictorConfig()
        _validate(self.config)
        check_normalisation(mean, std, "Predictor")  # a std of 0 would empty every mask
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        config: PredictorConfig | None = None,
    ) -> Predictor:
        """Load a model folder written by ``save_model`` (strict, no pickle)."""

        model, metadata = load_model(path, device=device)
        pre = Preprocessing.from_metadata(metadata)
        return cls(
            model,
            image_size=pre.image_size,
            mean=pre.mean,
            std=pre.std,
            device=device,
            config=config,
            scaling=pre.scaling,
        )

    def open(
        self,
        image: ImageInput,
        bands: Sequence[int] | None = None,
        stretch: StretchMode | None = None,
    ) -> Raster:
        """Open ``image`` with the training scaling (:meth:`predict` does this for you).

        ``stretch`` (``auto`` / ``percentile`` / ``none``) replaces the checkpoint's scaling,
        with a warning that the model was trained on other values; ``bands`` replaces only its
        band choice.
        """
        raster, _ = _as_raster(image, bands, stretch, self.config.max_pixels, self.scaling)
        return raster

    # -- text -----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask ``(1, L)`` of one expression; warns when truncated."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the expression is empty; describe the object, e.g. 'the red car'")
        text = " ".join(text.split())
        input_ids, attention_mask = self.model.tokenize([text])  # type: ignore[operator]
        max_len = int(input_ids.shape[1])
        tokenizer = getattr(self.model, "tokenizer", None) or getattr(
            getattr(self.model, "text_encoder", None), "tokenizer", None
        )
        if tokenizer is not None and callable(tokenizer):
            used = len(tokenizer(text)["input_ids"])
            if used > max_len:
                log.warning(
                    "expression has %d tokens, over the model's limit of %d: it was truncated "
                    "to its first words (%r)",
                    used,
                    max_len,
                    text,
                )
        elif int(attention_mask.sum()) >= max_len:
            log.warning("expression fills all %d token slots and may be truncated", max_len)
        return input_ids.to(self.device), attention_mask.to(self.device)

    # -- forward --------------------------------------------------------------------------------

    @torch.inference_mode()
    def _forward(self, images: torch.Tensor, tokens: tuple[torch.Tensor, torch.Tensor]) -> Any:
        """Foreground probabilities ``(B, H, W)`` of uint8 RGB ``(B, 3, h, w)`` and one text.

        ``tokens`` may hold one row (repeated for the batch) or ``B`` rows.
        """
        x = images.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, self.image_size, mode="bilinear", antialias=True)
        x = (x / 255.0 - self._mean) / self._std  # (B, 3, H, W) ImageNet-normalised
        ids, attn = tokens
        if ids.shape[0] == 1 and x.shape[0] > 1:
            ids, attn = ids.expand(x.shape[0], -1), attn.expand(x.shape[0], -1)
        logits = self.model(x, input_ids=ids, attention_mask=attn).logits  # (B, 2, H, W)
        if not bool(torch.isfinite(logits).all()):
            # NaN / inf would become an all-empty mask with exit 0: a silent wrong result
            raise NonFiniteOutputError(
                "the model produced NaN or infinite scores for this image "
                f"(non-finite input: {not bool(torch.isfinite(x).all())}); the weights, the "
                "input or the checkpoint's image_mean / image_std are broken. Use another "
                "checkpoint or check the input image"
            )
        return logits.float().softmax(dim=1)[:, 1]  # (B, H, W)

    def _probs_at(self, rgb: torch.Tensor, tokens: Any, size: tuple[int, int]) -> torch.Tensor:
        """Probabilities of a batch ``(B, 3, h, w)`` resized to ``size`` -> ``(B, *size)``."""
        probs = self._forward(rgb, tokens)
        if tuple(probs.shape[-2:]) != size:
            probs = F.interpolate(probs[:, None], size, mode="bilinear")[:, 0]
        return probs.cpu()

    # -- public API -----------------------------------------------------------------------------

    def predict(
        self,
        image: ImageInput | Raster,
        text: str,
        *,
        return_probs: bool = False,
        mode: Mode | None = None,
        bands: Sequence[int] | None = None,
        stretch: StretchMode | None = None,
    ) -> np.ndarray:
        """Mask of the object ``text`` refers to, at the image's original size.

        Args:
            image: file path, PIL image, array ``(H, W[, C])`` (8/16-bit, 1/3/4+ bands) or an
                opened raster.
            text: the referring expression.
            return_probs: return float32 probabilities ``(H, W)`` instead of the mask.
            mode: ``whole``, ``tile`` or ``auto``; overrides ``config.mode``.
            bands: three 1-based bands (or one) of multi-band inputs (default: the
                checkpoint's ``image_scaling.bands``).
            stretch: ``None`` (default): the checkpoint's image scaling, as in training;
                ``auto`` / ``percentile`` / ``none`` override it (see
                :func:`wrel.data.rasters.compute_stretch`) with a warning.

        Returns:
            bool mask ``(H, W)``, or float32 probabilities ``(H, W)`` when ``return_probs``.
        """
        raster, owned = _as_raster(image, bands, stretch, self.config.max_pixels, self.scaling)
        try:
            probs = self.predict_raster(raster, text, mode)
        finally:
            if owned:
                raster.close()
        return probs.astype(np.float32) / 255.0 if return_probs else self.to_mask(probs)

    def predict_batch(
        self,
        images: Sequence[ImageInput | Raster],
        texts: Sequence[str],
        *,
        return_probs: bool = False,
    ) -> list[np.ndarray]:
        """:meth:`predict` for many image/expression pairs, images of whole size batched."""
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images but {len(texts)} expressions")
        opened: list[tuple[Raster, bool]] = []
        try:
            for image in images:
                opened.append(_as_raster(image, None, None, self.config.max_pixels, self.scaling))
            results = self._predict_rasters([r for r, _ in opened], texts)
        finally:
            for raster, owned in opened:
                if owned:
                    raster.close()
        if return_probs:
            return [p.astype(np.float32) / 255.0 for p in results]
        return [self.to_mask(p) for p in results]

    def _predict_rasters(self, rasters: list[Raster], texts: Sequence[str]) -> list[np.ndarray]:
        """uint8 probabilities of each raster; whole-image passes share batched forwards."""
        for raster in rasters:
            self._check_size(raster)
            self._warn_legacy(raster)
        out: list[np.ndarray | None] = [None] * len(rasters)
        small = [i for i, r in enumerate(rasters) if self._choose_mode(r) == "whole"]
        for i in set(range(len(rasters))) - set(small):
            out[i] = self.predict_raster(rasters[i], texts[i])
        for start in range(0, len(small), self.config.batch_size):
            chunk = small[start : start + self.config.batch_size]
            tokens = [self.tokenize(texts[i]) for i in chunk]
            ids = torch.cat([t[0] for t in tokens])  # (B, L)
            attn = torch.cat([t[1] for t in tokens])  # (B, L)
            batch = torch.stack([self._model_input(rasters[i]) for i in chunk])  # (B, 3, H, W)
            probs = self._forward(batch, (ids, attn)).cpu()  # (B, H, W)
            for i, p in zip(chunk, probs, strict=True):
                out[i] = _zero_nodata(
                    rasters[i], _upsample_u8(p, rasters[i].height, rasters[i].width)
                )
        return [p for p in out if p is not None]

    def to_mask(self, probs_u8: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """bool mask of uint8 probabilities ``(H, W)`` at ``threshold`` (default
        ``config.threshold``): ``probs_u8 >= max(1, round(255 * threshold))``, Python's
        round (half to even)."""
        t = self.config.threshold if threshold is None else threshold
        if not 0.0 < t < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {t}")
        return probs_u8 >= max(1, round(t * 255))

    def predict_raster(self, raster: Raster, text: str, mode: Mode | None = None) -> np.ndarray:
        """uint8 probabilities ``(H, W)`` (``round(255 p)``) of a whole raster.

        Nodata pixels (:meth:`~wrel.data.rasters.GeoRaster.valid_mask`) get probability 0.

        Args:
            raster: an opened image (:func:`~wrel.inference.inputs.open_image`).
            text: the referring expression.
            mode: overrides ``config.mode``.

        Raises:
            ValueError: the raster has more than ``config.max_pixels`` pixels, or a bad text.
        """
        self._check_size(raster)
        self._warn_legacy(raster)
        tokens = self.tokenize(text)
        if self._choose_mode(raster, mode) == "whole":
            probs = self._predict_whole(raster, tokens)
        else:
            probs = self._predict_tiled(raster, tokens)
        return _zero_nodata(raster, probs)

    def _warn_legacy(self, raster: Raster) -> None:
        """Warn once when a checkpoint without ``image_scaling`` meets data that is not 8-bit."""
        dtype = getattr(raster, "dtype", None)
        if self.scaling is not None or self._warned_legacy or dtype is None:
            return
        if np.dtype(dtype) != np.uint8:
            self._warned_legacy = True
            log.warning(
                "this checkpoint records no image_scaling (trained before the image-reading "
                "contract): the %s input is percentile-stretched (2-98%%) as before, but that "
                "training read 16-bit images divided by 257, so the model may see other pixel "
                "values than in training; retrain to record data.image_scaling",
                np.dtype(dtype).name,
            )

    def _check_size(self, raster: Raster) -> None:
        """Refuse rasters over ``config.max_pixels`` before the full-size output is allocated."""
        name = str(getattr(raster, "path", None) or "the image")
        check_pixel_count(raster.height, raster.width, self.config.max_pixels, name)

    def _choose_mode(self, raster: Raster, mode: Mode | None = None) -> str:
        mode = mode or self.config.mode
        if mode not in ("auto", "whole", "tile"):
            raise ValueError(f"mode must be auto, whole or tile, got {mode!r}")
        if mode != "auto":
            return mode
        return "tile" if max(raster.height, raster.width) > self.config.max_whole_side else "whole"

    def _model_input(self, raster: Raster) -> torch.Tensor:
        """The whole raster as uint8 ``(3, H, W)`` at the model input size.

        Large rasters are first read decimated to ``config.whole_read_side`` (bounded memory).
        """
        side = max(raster.height, raster.width)
        scale = min(1.0, self.config.whole_read_side / side)
        h, w = max(1, round(raster.height * scale)), max(1, round(raster.width * scale))
        rgb = raster.read_rgb_resized(h, w) if scale < 1 else raster.read_rgb()
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # (1, 3, h, w)
        x = F.interpolate(x.float(), self.image_size, mode="bilinear", antialias=True)
        return x[0].round().clamp(0, 255).to(torch.uint8)  # (3, H, W)

    def _predict_whole(self, raster: Raster, tokens: Any) -> np.ndarray:
        probs = self._forward(self._model_input(raster)[None], tokens)[0].cpu()  # (H, W)
        return _upsample_u8(probs, raster.height, raster.width)

    def _predict_tiled(self, raster: Raster, tokens: Any) -> np.ndarray:
        from tqdm.auto import tqdm

        cfg = self.config
        grid = tile_grid(raster.height, raster.width, cfg.tile_size, cfg.overlap)
        overlap = min(cfg.overlap, cfg.tile_size - 1)
        stitcher = RowStitcher(raster.height, raster.width, overlap)
        out = np.empty((raster.height, raster.width), dtype=np.uint8)
        bar = tqdm(total=sum(len(r) for r in grid), desc="tiles", unit="tile", leave=False)
        for index, row in enumerate(grid):
            for start in range(0, len(row), cfg.batch_size):
                tiles = row[start : start + cfg.batch_size]
                rgb = np.stack([raster.read_rgb(t) for t in tiles])  # (B, th, tw, 3)
                batch = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # (B, 3, th, tw)
                probs = self._probs_at(batch, tokens, (tiles[0].height, tiles[0].width))
                for tile, p in zip(tiles, probs.numpy(), strict=True):
                    stitcher.add(tile, p)
                bar.update(len(tiles))
            nxt = grid[index + 1][0].row if index + 1 < len(grid) else raster.height
            for r0, block in stitcher.finish_row(nxt):
                out[r0 : r0 + block.shape[0]] = block
        for r0, block in stitcher.close():
            out[r0 : r0 + block.shape[0]] = block
        bar.close()
        return out


#: Upper bounds of the predictor's sizes: a tile or batch past them would allocate gigabytes
#: per forward pass; max_pixels past MAX_PIXELS_LIMIT (200 GB of output) is a typo.
MAX_TILE_SIZE = 8192
MAX_BATCH_SIZE = 1024
MAX_SIDE = 65536
MAX_PIXELS_LIMIT = 100_000_000_000


def _validate(cfg: PredictorConfig) -> None:
    if cfg.mode not in ("auto", "whole", "tile"):
        raise ValueError(f"mode must be auto, whole or tile, got {cfg.mode!r}")
    if not 16 <= cfg.tile_size <= MAX_TILE_SIZE:
        raise ValueError(f"tile_size must be in [16, {MAX_TILE_SIZE}] pixels, got {cfg.tile_size}")
    if not 0 <= cfg.overlap < cfg.tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={cfg.tile_size}), got {cfg.overlap}")
    if not 1 <= cfg.batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be in [1, {MAX_BATCH_SIZE}], got {cfg.batch_size}")
    for key in ("max_whole_side", "whole_read_side"):
        if not 1 <= getattr(cfg, key) <= MAX_SIDE:
            raise ValueError(f"{key} must be in [1, {MAX_SIDE}] pixels, got {getattr(cfg, key)}")
    if not 0.0 < cfg.threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {cfg.threshold}")
    if cfg.max_pixels is not None and not 1 <= cfg.max_pixels <= MAX_PIXELS_LIMIT:
        raise ValueError(
            f"max_pixels must be in [1, {MAX_PIXELS_LIMIT:.0e}] (or None for no limit), got "
            f"{cfg.max_pixels}"
        )


def _as_raster(
    image: Any,
    bands: Sequence[int] | None,
    stretch: StretchMode | None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    scaling: ImageScaling | None = None,
) -> tuple[Raster, bool]:
    """``(raster, owned)``: owned readers were opened here and must be closed by the caller.

    ``stretch=None`` applies ``scaling`` (the checkpoint's; the ``auto`` stretch without one);
    an explicit ``stretch`` overrides it with a warning.
    """
    if hasattr(image, "read_rgb") and hasattr(image, "read_rgb_resized"):
        return image, False
    if stretch is not None and scaling is not None:
        log.warning(
            "stretch=%r overrides the checkpoint's training image scaling (%s): the model may "
            "see other pixel values than in training",
            stretch,
            scaling.describe(),
        )
        scaling = None
    band_list = list(bands) if bands else None
    opened = open_image(image, band_list, stretch or "auto", max_pixels=max_pixels, scaling=scaling)
    return opened, True


# Rows of the nodata mask read at once: about 16 M pixels, whatever the scene width.
_NODATA_STRIP_PIXELS = 16_000_000


def _zero_nodata(raster: Raster, probs: np.ndarray) -> np.ndarray:
    """Set ``probs`` (uint8 ``(H, W)``) to 0 on the raster's nodata pixels, in row strips."""
    valid_mask = getattr(raster, "valid_mask", None)
    if not getattr(raster, "has_nodata", False) or valid_mask is None:
        return probs
    if not probs.flags.writeable:  # e.g. an array viewing a PIL image's buffer
        probs = probs.copy()
    height, width = probs.shape
    rows = max(1, _NODATA_STRIP_PIXELS // max(1, width))
    for r0 in range(0, height, rows):
        strip = probs[r0 : r0 + rows]
        valid = valid_mask(Tile(r0, 0, strip.shape[0], width))
        if valid is not None:
            strip[~valid] = 0
    return probs


def _upsample_u8(probs: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Probabilities ``(h, w)`` -> uint8 ``(height, width)``; PIL keeps large outputs uint8."""
    from PIL import Image

    small = (probs.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    if small.shape == (height, width):
        return small
    if height * width <= 4_000_000:  # float path is more precise and cheap for small images
        up = F.interpolate(probs[None, None].float(), (height, width), mode="bilinear")[0, 0]
        return (up.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img)
