"""Inference on real imagery: :class:`Predictor`, image readers and output writers.

>>> predictor = Predictor.from_checkpoint("runs/demo/checkpoints/best")  # doctest: +SKIP
>>> mask = predictor.predict("scene.tif", "the ship at the top left")  # doctest: +SKIP
"""

from wrel.inference.inputs import open_image
from wrel.inference.outputs import overlay_mask, save_mask, save_overlay, write_prediction
from wrel.inference.predictor import (
    DEFAULT_IMAGE_SIZE,
    IMAGE_MEAN_KEY,
    IMAGE_SIZE_KEY,
    IMAGE_STD_KEY,
    Predictor,
    PredictorConfig,
    image_size_from_metadata,
)

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "IMAGE_MEAN_KEY",
    "IMAGE_SIZE_KEY",
    "IMAGE_STD_KEY",
    "Predictor",
    "PredictorConfig",
    "image_size_from_metadata",
    "open_image",
    "overlay_mask",
    "save_mask",
    "save_overlay",
    "write_prediction",
]
