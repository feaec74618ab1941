"""The preprocessing record: what turns an image into the network input, owned here once.

Training resizes every image to ``image_size`` and normalises it with ``mean`` / ``std``
(:mod:`wrel.data.transforms`) after reading it to 8-bit RGB with ``scaling``
(:mod:`wrel.data.image_reading`). The trainer writes this record into the exported model's
metadata (:meth:`Preprocessing.to_metadata`); ``wrel predict``, ``wrel serve`` and ``wrel eval``
read it back with :meth:`Preprocessing.from_metadata`, so prediction sees images as training
did.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wrel.data.image_reading import IMAGE_SCALING_KEY, ImageScaling
from wrel.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "IMAGE_MEAN_KEY",
    "IMAGE_SIZE_KEY",
    "IMAGE_STD_KEY",
    "Preprocessing",
    "MAX_INPUT_SIDE",
    "check_normalisation",
    "checkpoint_metadata",
    "image_size_from_metadata",
    "scaling_from_metadata",
]

log = logging.getLogger(__name__)

#: Square network input side used when nothing else says (the experiment's default).
DEFAULT_IMAGE_SIZE = 64
#: Largest network input side accepted from checkpoint metadata (one 4096 x 4096 input is
#: already 200 MB of activations per channel of 4 bytes); larger values are refused on load,
#: before anything is allocated.
MAX_INPUT_SIDE = 4096

# Checkpoint metadata keys (written by the trainer, read by the predictor and `wrel eval`).
IMAGE_SIZE_KEY = "image_size"  # [H, W] (or an int) of the training input
IMAGE_MEAN_KEY = "image_mean"  # per-channel mean, 0..1 scale (ImageNet when absent)
IMAGE_STD_KEY = "image_std"  # per-channel std, 0..1 scale (ImageNet when absent)


def checkpoint_metadata(metadata: Any) -> dict[str, Any]:
    """The metadata dict of a model folder, from ``load_model``'s second value or from a whole
    ``config.json`` (``{"model": ..., "metadata": ...}``); ``{}`` for anything else."""
    if not isinstance(metadata, dict):
        return {}
    inner = metadata.get("metadata", metadata)
    return inner if isinstance(inner, dict) else {}


def _experiment_data(meta: dict[str, Any]) -> dict[str, Any]:
    return (meta.get("experiment") or {}).get("data") or {}


@dataclass(frozen=True)
class Preprocessing:
    """Network input size ``(H, W)``, normalisation and image scaling of a trained model.

    ``scaling`` is ``None`` for checkpoints written before the image-reading contract.
    """

    image_size: tuple[int, int] = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scaling: ImageScaling | None = None

    @classmethod
    def from_metadata(cls, metadata: Any) -> Preprocessing:
        """The record in checkpoint metadata (see :func:`checkpoint_metadata`).

        The input size is ``image_size``, else the saved experiment's ``data.image_size``, else
        :data:`DEFAULT_IMAGE_SIZE` with a warning.

        Raises:
            ValueError: the recorded image scaling is malformed (names the key).
        """
        meta = checkpoint_metadata(metadata)
        mean = _triple(meta.get(IMAGE_MEAN_KEY, IMAGENET_MEAN), IMAGE_MEAN_KEY)
        std = _triple(meta.get(IMAGE_STD_KEY, IMAGENET_STD), IMAGE_STD_KEY)
        check_normalisation(mean, std, "checkpoint metadata")
        return cls(
            image_size=image_size_from_metadata(meta),
            mean=mean,
            std=std,
            scaling=scaling_from_metadata(meta),
        )

    def to_metadata(self) -> dict[str, Any]:
        """The metadata entries of this record (the inverse of :meth:`from_metadata`)."""
        out: dict[str, Any] = {
            IMAGE_SIZE_KEY: list(self.image_size),
            IMAGE_MEAN_KEY: list(self.mean),
            IMAGE_STD_KEY: list(self.std),
        }
        if self.scaling is not None:
            out[IMAGE_SCALING_KEY] = self.scaling.to_dict()
        return out


def _triple(values: Any, key: str = "value") -> tuple[float, float, float]:
    if (
        not isinstance(values, list | tuple)
        or len(values) != 3
        or any(type(v) not in (int, float) for v in values)
    ):
        raise ValueError(f"{key} must be a list of 3 numbers (R, G, B), got {values!r}")
    a, b, c = (float(v) for v in values)
    return a, b, c


def check_normalisation(mean: Sequence[float], std: Sequence[float], where: str) -> None:
    """Refuse a normalisation that makes every input NaN, infinite or constant.

    ``mean`` and ``std`` (0..1 scale, one per channel) must be finite, ``std`` > 0: a std of 0
    divides by zero and the model then predicts an empty mask for every image.

    Raises:
        ValueError: naming ``where`` and the key.
    """
    for key, values in ((IMAGE_MEAN_KEY, mean), (IMAGE_STD_KEY, std)):
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"{where}: {key} = {list(values)} holds NaN or infinity")
    if not all(float(v) > 0 for v in std):
        raise ValueError(
            f"{where}: {IMAGE_STD_KEY} = {list(std)} must be > 0 for every channel (a std of 0 "
            "makes every prediction empty); use the training data's std, e.g. ImageNet's "
            f"{list(IMAGENET_STD)}"
        )


def image_size_from_metadata(metadata: Any) -> tuple[int, int]:
    """Model input ``(H, W)`` of :meth:`Preprocessing.from_metadata`."""
    meta = checkpoint_metadata(metadata)
    size = meta.get(IMAGE_SIZE_KEY)
    if size is None:
        size = _experiment_data(meta).get("image_size")
    if size is None:
        log.warning("checkpoint metadata has no %r; using %d", IMAGE_SIZE_KEY, DEFAULT_IMAGE_SIZE)
        size = DEFAULT_IMAGE_SIZE
    if type(size) is int:
        size = [size, size]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or any(type(v) is not int or not 1 <= v <= MAX_INPUT_SIDE for v in size)
    ):
        raise ValueError(
            f"checkpoint metadata: {IMAGE_SIZE_KEY} = {size!r} must be an int or [height, "
            f"width] of ints in [1, {MAX_INPUT_SIDE}] (the training input size)"
        )
    return size[0], size[1]


def scaling_from_metadata(metadata: Any) -> ImageScaling | None:
    """The training image scaling (``image_scaling``, else the experiment's
    ``data.image_scaling``); ``None`` for checkpoints written before the contract.

    Raises:
        ValueError: the recorded spec is malformed (names the key).
    """
    meta = checkpoint_metadata(metadata)
    spec = meta.get(IMAGE_SCALING_KEY)
    if spec is None:
        spec = _experiment_data(meta).get("image_scaling")
    if spec is None:
        return None
    return ImageScaling.from_dict(spec, where=f"checkpoint metadata {IMAGE_SCALING_KEY!r}")
