"""Build :class:`~wrel.data.samples.Sample` lists from a refer-format data set, with checks.

Every problem is reported with the file it comes from and how to fix it: an unknown split, a
ref whose annotation, image or category is missing, a ref whose annotation belongs to another
image, an image file_name that leaves the image folder, a missing image file, an empty mask.
"""

from __future__ import annotations

import logging
from pathlib import Path

from wrel.data.images import segmentation_area
from wrel.data.refer import (
    INSTANCES_FILE,
    REFS_FILE,
    ReferData,
    ReferRef,
    image_dir,
    image_file,
    read_refer,
)
from wrel.data.samples import Sample, mark_weak
from wrel.data.splits import WeakSplit

__all__ = ["refer_samples"]

logger = logging.getLogger(__name__)
_MAX_LISTED = 5


def _check_split(data: ReferData, split: str, refs_path: Path) -> list[ReferRef]:
    refs = [r for r in data.refs if r.split == split]
    if not refs:
        available = sorted({r.split for r in data.refs})
        raise ValueError(
            f"unknown split {split!r}: {refs_path} has no refs in it; available splits: {available}"
        )
    return refs


def _sample(
    ref: ReferRef, data: ReferData, images: Path, where: tuple[Path, Path],
    allow_outside_root: bool,
) -> Sample:  # fmt: skip
    refs_path, instances_path = where
    ann = data.annotations.get(ref.ann_id)
    if ann is None:
        raise ValueError(
            f"{refs_path}: ref {ref.ref_id} points at annotation {ref.ann_id}, which is not in "
            f"{instances_path}; use the instances.json that belongs to these refs"
        )
    image = data.images.get(ref.image_id)
    if image is None:
        raise ValueError(
            f"{refs_path}: ref {ref.ref_id} points at image {ref.image_id}, which is not in "
            f"{instances_path}; use the instances.json that belongs to these refs"
        )
    if ann.image_id != ref.image_id:
        raise ValueError(
            f"{refs_path}: ref {ref.ref_id} is on image {ref.image_id} but its annotation "
            f"{ref.ann_id} belongs to image {ann.image_id} in {instances_path}; fix the ref"
        )
    category = data.categories.get(ref.category_id)
    if category is None:
        raise ValueError(
            f"{refs_path}: ref {ref.ref_id} has category_id {ref.category_id}, which is not in "
            f"the categories of {instances_path}; add it there"
        )
    try:
        path = image_file(images, image.file_name, allow_outside_root=allow_outside_root)
    except ValueError as err:
        raise ValueError(
            f"{instances_path}: image {image.image_id} (ref {ref.ref_id}): {err}"
        ) from err
    weak = ref.quality == "weak"  # marked in the file; a drawn split is applied by mark_weak
    return Sample(
        sample_id=ref.ref_id,
        image_path=path,
        split=ref.split,
        category=category.name,
        text=category.name if weak else ref.sentences[0].raw,
        quality="weak" if weak else "accurate",
        segmentation=ann.segmentation,
        image_height=image.height,
        image_width=image.width,
    )


def _check_files(samples: list[Sample], instances_path: Path) -> None:
    missing = sorted({str(s.image_path) for s in samples if not s.image_path.is_file()})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image file(s) missing, e.g. {missing[:_MAX_LISTED]}; put the "
            "images under <root>/images/<name>/JPEGImages/ (file_name as in instances.json)"
        )
    for s in samples:
        try:
            area = segmentation_area(s.segmentation, s.image_height, s.image_width)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{instances_path}: the segmentation of ref {s.sample_id} ({s.image_path.name}) "
                f"cannot be decoded ({err}); fix or remove the annotation"
            ) from err
        if area == 0:
            raise ValueError(
                f"{instances_path}: ref {s.sample_id} ({s.image_path.name}) has an empty mask; "
                "fix its segmentation or remove the ref from refs(unc).p"
            )


def refer_samples(
    root: Path,
    name: str,
    split: str,
    weak: WeakSplit,
    *,
    check_files: bool = True,
    allow_outside_root: bool = False,
) -> list[Sample]:
    """Samples of ``split`` of ``<root>/<name>`` (see :func:`wrel.data.dataset.load_samples`).

    ``allow_outside_root`` lets an image ``file_name`` be absolute or hold ``..`` (refused by
    default: see :func:`wrel.data.refer.image_file`).
    """
    split_file = weak.file
    refs_path = split_file if split_file is not None else root / name / REFS_FILE
    instances_path = root / name / INSTANCES_FILE
    data = read_refer(root, name, refs_file=split_file)
    refs = _check_split(data, split, refs_path)
    if weak.kind == "ratio" and any(r.quality == "weak" for r in refs):
        raise ValueError(
            f"{refs_path} already holds a weak split; load it with accurate_ratio=None or "
            "build the split from the original refs(unc).p"
        )
    images = image_dir(root, name)
    where = (refs_path, instances_path)
    samples = [_sample(r, data, images, where, allow_outside_root) for r in refs]
    samples = mark_weak(samples, weak.weak_ids((r.ref_id, r.category_id) for r in refs))
    if check_files:
        _check_files(samples, instances_path)
    num_weak = sum(s.is_weak for s in samples)
    if split_file is not None and samples:
        logger.info(
            "%s/%s from split file %s: %d samples, %d accurate, %d weak (accurate ratio %.4f, "
            "from the file)",
            name, split, split_file, len(samples), len(samples) - num_weak, num_weak,
            (len(samples) - num_weak) / len(samples),
        )  # fmt: skip
    else:
        logger.info("%s/%s: %d samples (%d weak)", name, split, len(samples), num_weak)
    return samples
