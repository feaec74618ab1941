"""A tiny seeded refer-format data set written with ``write_refer`` (shared by the data tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from wrel.data.refer import (
    ReferAnnotation,
    ReferCategory,
    ReferData,
    ReferImage,
    ReferRef,
    ReferSentence,
    image_dir,
    write_refer,
)

CATEGORIES = {1: "vehicle", 2: "ship", 3: "storagetank"}
SIZE = 32


def rle_of(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def make_refer(root: Path, num_images: int = 6, seed: int = 0, name: str = "tiny") -> ReferData:
    """Images with two boxes each; ref i targets box i % 2; even images use polygons, odd RLE."""
    rng = np.random.default_rng(seed)
    folder = image_dir(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    images, anns, refs = {}, {}, []
    splits = ["train", "train", "train", "train", "val", "test"]
    for i in range(num_images):
        pixels = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
        images[i] = ReferImage(i, f"{i:03d}.png", SIZE, SIZE)
        for k, (x0, y0) in enumerate(((2, 3), (18, 16))):
            ann_id = 10 * i + k
            if i % 2 == 0:
                seg = [[x0, y0, x0 + 10, y0, x0 + 10, y0 + 8, x0, y0 + 8]]
            else:
                box = np.zeros((SIZE, SIZE), np.uint8)
                box[y0 : y0 + 8, x0 : x0 + 10] = 1
                seg = rle_of(box)
            anns[ann_id] = ReferAnnotation(ann_id, i, 1 + (i + k) % 3, seg)
        ann_id = 10 * i + i % 2
        side = "left" if i % 2 == 0 else "right"
        text = f"the {CATEGORIES[anns[ann_id].category_id]} on the {side}"
        refs.append(
            ReferRef(
                ref_id=100 + i, image_id=i, ann_id=ann_id, category_id=anns[ann_id].category_id,
                split=splits[i % len(splits)], file_name=f"{i:03d}.png",
                sentences=(ReferSentence(1000 + i, text, tuple(text.split())),),
            )
        )  # fmt: skip
    categories = {c: ReferCategory(c, n) for c, n in CATEGORIES.items()}
    data = ReferData(refs, images, anns, categories)
    write_refer(root, name, data)
    return data
