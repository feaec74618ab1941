"""Loading samples, the torch ``Dataset`` and its collate function.

A :class:`~wrel.data.samples.Sample` is one referred object with the text the model sees: the expression for
accurate samples, the class name for weak ones (no field of a weak sample holds its original
expression). :func:`load_samples` reads the refer layout (``wrel.data.refer``) or the RefSegRS /
RISBench layout (``wrel.data.refsegrs``) and applies a WREL weak split to the train split.

Example:
    >>> samples = load_samples("data", "train", accurate_ratio=0.1, seed=0)
    >>> batch = collate_samples([RefSegDataset(samples, image_size=(64, 64))[0]])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wrel.core.paths import require_folder
from wrel.data.image_reading import ImageScaling, read_image
from wrel.data.preprocessing import DEFAULT_IMAGE_SIZE
from wrel.data.refer_samples import refer_samples
from wrel.data.refsegrs import load_refsegrs_samples
from wrel.data.samples import Sample, class_name_view, mark_weak
from wrel.data.splits import WeakSplit
from wrel.data.transforms import (
    CUTOUT_KINDS,
    apply_cutout,
    apply_squares,
    check_cutout,
    check_squares,
    hflip_sample,
    normalize_image,
    random_cutout_box,
    random_squares,
    resize_mask,
    resize_rgb,
)

__all__ = ["RefSegDataset", "Sample", "class_name_view", "collate_samples", "load_samples"]

logger = logging.getLogger(__name__)


def _dataset_name(root: Path, name: str | None) -> str:
    if name is not None:
        return name
    found = sorted(p.parent.name for p in root.glob("*/refs(unc).p"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"no {root}/*/refs(unc).p and no {root}/output_phrase_<split>.txt; point --data at "
            "a refer-format or RefSegRS root (or render the embedded benchmark into a new "
            "folder: wrel data synth --out NEW_DIR)"
        )
    raise ValueError(f"{root} holds several data sets {found}; pass name= (--name) to pick one")


def load_samples(
    root: str | Path,
    split: str,
    *,
    name: str | None = None,
    accurate_ratio: float | None = None,
    seed: int = 0,
    split_file: str | Path | None = None,
    check_files: bool = True,
    allow_outside_root: bool = False,
) -> list[Sample]:
    """Samples of one split, with the WREL weak split applied to ``train``.

    One sample per ref (its first sentence when a ref has several, as RRSIS-D has one); the
    quality of refs read plainly is "accurate" unless the file marks them weak (``raw`` is the
    class name while ``sent`` differs, the published WREL format).

    Args:
        root: data root (refer layout, or a RefSegRS / RISBench folder).
        split: split name (``train``, ``val``, ``test``).
        name: refer data set folder; auto-detected when ``root`` holds exactly one.
        accurate_ratio: share rho of train expressions kept accurate; None keeps the texts
            as in the file. Ignored for splits other than ``train``.
        seed: seed of the weak split.
        split_file: a published refs pickle (a weak split) to use as-is instead of the
            data set's own ``refs(unc).p``.
        check_files: check that every image exists and every mask is non-empty.
        allow_outside_root: let image file names of the refer layout be absolute or hold
            ``..`` (refused by default; for data you trust).

    Raises:
        FileNotFoundError: the root, a refs/instances file or an image is missing.
        ValueError: unknown split, duplicate ids, dangling refs, empty masks, bad options.
    """
    root = Path(root)
    require_folder(root, "data root", "check --data")
    weak = WeakSplit.resolve(accurate_ratio, split_file, seed).for_split(split)
    if (root / f"output_phrase_{split}.txt").is_file() and name is None:
        if weak.kind == "file":
            raise ValueError("split_file applies to the refer layout, not to RefSegRS folders")
        samples = load_refsegrs_samples(root, split, check_files=check_files)
        # strata: the category names, numbered in sorted order (the layout has no ids)
        ids = {c: i for i, c in enumerate(sorted({s.category for s in samples}))}
        return mark_weak(samples, weak.weak_ids((s.sample_id, ids[s.category]) for s in samples))

    return refer_samples(root, _dataset_name(root, name), split, weak, check_files=check_files,
                         allow_outside_root=allow_outside_root)  # fmt: skip


class RefSegDataset(Dataset[dict[str, Any]]):
    """Images, masks and texts of ``samples`` at the model's input size.

    Args:
        samples: from :func:`load_samples`.
        image_size: model input ``(H, W)``; any size, not only square.
        hflip_prob: probability of a horizontal flip; "left" and "right" in the text are
            swapped with it. 0 (the WREL recipe) disables it.
        cutout_prob: share of items whose network input gets one random box blanked to 0
            after normalisation (the ImageNet mean colour); the mask is not changed, so the
            referred object keeps its full label under the box. 0 (default) disables it.
        cutout_scale: range of the box's height and width as fractions of the input's.
        cutout: ``box`` (the above) or ``squares``: the samples whose id is in ``cutout_ids``
            get black squares on their raw image at every visit (``cutout_count`` of them, side
            ``cutout_side`` of the shorter raw side; wrel.data.transforms), and ``cutout_prob``
            is not read here (it sized the subset).
        seed: seed of the flips and cut-outs; they depend on ``(seed, epoch, index)`` only, so
            they are the same in every worker process (call :meth:`set_epoch` to vary them per
            epoch; the trainer does). Flips and cut-outs draw from separate streams.
        scaling: how image files become 8-bit RGB (bands, value mapping): the contract shared
            with ``wrel predict`` (:mod:`wrel.data.image_reading`); default ``auto`` (8-bit
            images as they are, other data per-image 2-98 % percentiles).

    Items are dicts: ``image`` float32 ``(3, H, W)`` ImageNet-normalised, ``mask`` int64
    ``(H, W)`` in {0, 1} (nearest resize), ``text``, ``sample_id``, ``quality``, ``category``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: tuple[int, int] = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE),
        hflip_prob: float = 0.0,
        seed: int = 0,
        cutout_prob: float = 0.0,
        cutout_scale: tuple[float, float] = (0.1, 0.3),
        scaling: ImageScaling | None = None,
        *,
        cutout: str = "box",
        cutout_ids: frozenset[int] = frozenset(),
        cutout_count: tuple[int, int] = (20, 60),
        cutout_side: float = 0.04,
    ) -> None:
        if cutout not in CUTOUT_KINDS:
            raise ValueError(f"cutout must be one of {list(CUTOUT_KINDS)}, got {cutout!r}")
        self.cutout = cutout
        self.cutout_ids = frozenset(cutout_ids)
        self.cutout_count = check_squares(cutout_count, cutout_side)
        self.cutout_side = float(cutout_side)
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
        self.cutout_scale = check_cutout(cutout_prob, cutout_scale)
        self.cutout_prob = float(cutout_prob)
        height, width = (int(v) for v in image_size)
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be two positive ints (H, W), got {image_size!r}")
        self.samples = list(samples)
        self.image_size = (height, width)
        self.hflip_prob = float(hflip_prob)
        self.seed = int(seed)
        self.epoch = 0
        self.scaling = scaling or ImageScaling()

    def set_epoch(self, epoch: int) -> None:
        """Vary the random flips and cut-outs with the epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = read_image(sample.image_path, self.scaling)  # (h, w, 3) uint8
        mask = sample.read_mask()
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"sample {sample.sample_id}: mask size {mask.shape} differs from image "
                f"{sample.image_path} size {image.shape[:2]}; fix height/width or the mask file"
            )
        if not mask.any():
            raise ValueError(
                f"sample {sample.sample_id} ({sample.image_path}) has an empty mask; fix or "
                "remove it"
            )
        text = sample.text
        if self.hflip_prob > 0.0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < self.hflip_prob:
                image, mask, text = hflip_sample(image, mask, text)
        if self.cutout == "squares" and sample.sample_id in self.cutout_ids:
            rng = np.random.default_rng([self.seed, self.epoch, index, 2])  # own stream
            squares = random_squares(rng, image.shape[:2], self.cutout_count, self.cutout_side)
            image = apply_squares(image, squares)
        image = resize_rgb(image, self.image_size)
        mask = resize_mask(mask, self.image_size)
        tensor = normalize_image(image)  # (3, H, W)
        if self.cutout == "box" and self.cutout_prob > 0.0:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])  # own stream
            if rng.random() < self.cutout_prob:
                apply_cutout(tensor, random_cutout_box(rng, self.image_size, self.cutout_scale))
        return {
            "image": tensor,  # (3, H, W)
            "mask": torch.from_numpy(mask.astype(np.int64)),  # (H, W)
            "text": text,
            "sample_id": sample.sample_id,
            "quality": sample.quality,
            "category": sample.category,
        }


def collate_samples(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: ``image (B, 3, H, W)``, ``mask (B, H, W)``, ``sample_id (B,)``
    int64, ``is_weak (B,)`` bool, and lists ``text``, ``quality``, ``category``."""
    if not items:
        raise ValueError("collate_samples got an empty batch")
    quality = [item["quality"] for item in items]
    return {
        "image": torch.stack([item["image"] for item in items]),
        "mask": torch.stack([item["mask"] for item in items]),
        "text": [item["text"] for item in items],
        "sample_id": torch.tensor([int(item["sample_id"]) for item in items], dtype=torch.int64),
        "is_weak": torch.tensor([q == "weak" for q in quality], dtype=torch.bool),
        "quality": quality,
        "category": [item["category"] for item in items],
    }
