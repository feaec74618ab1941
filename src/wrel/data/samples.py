"""A :class:`Sample`: one referred object with the text the model sees, as every reader returns.

Accurate samples carry their expression; weak ones the class name (no field of a weak sample
holds its original expression). The readers are :mod:`wrel.data.refer_samples` (refer layout)
and :mod:`wrel.data.refsegrs`; :func:`wrel.data.dataset.load_samples` picks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wrel.data.images import decode_segmentation, read_mask_file

__all__ = ["Sample", "class_name_view", "mark_weak"]


@dataclass(frozen=True)
class Sample:
    """One image / text / mask triplet.

    Attributes:
        sample_id: stable id (the ref id); indexes the reference bank.
        image_path: the image file.
        split: ``train``, ``val``, ``test`` (or the file's own split name).
        category: class name.
        text: what the model sees; the class name for weak samples.
        quality: ``"accurate"`` or ``"weak"``.
        segmentation: COCO polygons or RLE of the target (refer layout), else None.
        image_height: image height the segmentation refers to.
        image_width: image width the segmentation refers to.
        mask_path: a mask image file (RefSegRS layout), else None.
    """

    sample_id: int
    image_path: Path
    split: str
    category: str
    text: str
    quality: Literal["accurate", "weak"]
    segmentation: Any = None
    image_height: int = 0
    image_width: int = 0
    mask_path: Path | None = None

    @property
    def is_weak(self) -> bool:
        """Whether the text is only the class name."""
        return self.quality == "weak"

    def read_mask(self) -> np.ndarray:
        """The target mask ``(h, w)`` uint8 in {0, 1} at the image's own size."""
        if self.mask_path is not None:
            return read_mask_file(self.mask_path)
        try:
            return decode_segmentation(self.segmentation, self.image_height, self.image_width)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"sample {self.sample_id} ({self.image_path}): cannot decode its segmentation "
                f"({err}); fix the annotation in instances.json"
            ) from err


def class_name_view(samples: Sequence[Sample]) -> list[Sample]:
    """The same samples with the class name, verbatim, as their only text (a weak view)."""
    return [replace(s, text=s.category, quality="weak") for s in samples]


def mark_weak(samples: Sequence[Sample], weak_ids: set[int]) -> list[Sample]:
    """The samples with those in ``weak_ids`` turned weak: the class name is their only text."""
    if not weak_ids:
        return list(samples)
    return [
        replace(s, text=s.category, quality="weak") if s.sample_id in weak_ids else s
        for s in samples
    ]
