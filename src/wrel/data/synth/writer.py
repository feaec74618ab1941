"""Write rendered images in the refer layout (refs(unc).p, instances.json, attributes.json)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from wrel.data.synth.categories import RRSISD_CATEGORY_IDS
from wrel.data.synth.generate import ImageRecord

__all__ = ["BenchmarkWriter", "DATASET_NAME", "SPLITS"]

DATASET_NAME = "synthetic"
SPLITS = ("train", "val", "test")
_PICKLE_PROTOCOL = 4


def _dump_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=True) + "\n")


class BenchmarkWriter:
    """Collects images in a fixed order and writes the data set; ids follow that order.

    Args:
        root: data root; files go to ``<root>/synthetic`` and ``<root>/images/synthetic``.
        categories: class names of the benchmark (written with their RRSIS-D ids).
    """

    def __init__(self, root: Path, categories: list[str]) -> None:
        self.ann_dir = root / DATASET_NAME
        self.image_dir = root / "images" / DATASET_NAME / "JPEGImages"
        self.ann_dir.mkdir(parents=True, exist_ok=True)
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.categories = categories
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.refs: list[dict[str, Any]] = []
        self.attributes: dict[str, dict[str, Any]] = {}

    def add(self, split: str, record: ImageRecord, size: int) -> None:
        """Write the PNG of ``record`` and keep its instances and refs (in call order)."""
        image_id = len(self.images)
        file_name = f"{image_id:06d}.png"
        (self.image_dir / file_name).write_bytes(record.png)
        self.images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        ann_ids = []
        for inst in record.instances:
            ann_ids.append(len(self.annotations))
            self.annotations.append({
                "id": ann_ids[-1],
                "image_id": image_id,
                "categories_id": RRSISD_CATEGORY_IDS[inst["category"]],
                "segmentation": inst["rle"],
                "bbox": inst["bbox"],
                "area": inst["area"],
                "iscrowd": 0,
                "colour": inst["colour"],
            })  # fmt: skip
            if "relative_size" in inst:  # rrsisd regime: what "tiny" / "huge" are said against
                self.annotations[-1]["relative_size"] = inst["relative_size"]
            if "style" in inst:  # styles > 1: which look of its class (wrel.data.synth.styles)
                self.annotations[-1]["style"] = inst["style"]
        for ref in record.refs:
            self._add_ref(split, image_id, file_name, ann_ids[ref["target"]], record, ref)

    def _add_ref(
        self,
        split: str,
        image_id: int,
        file_name: str,
        ann_id: int,
        record: ImageRecord,
        ref: dict[str, Any],
    ) -> None:
        ref_id = len(self.refs)
        text = ref["expression"]
        category = record.instances[ref["target"]]["category"]
        self.refs.append({
            "image_id": image_id,
            "split": split,
            "sentences": [{"tokens": text.split(), "raw": text, "sent_id": ref_id, "sent": text}],
            "file_name": file_name,
            "category_id": RRSISD_CATEGORY_IDS[category],
            "ann_id": ann_id,
            "sent_ids": [ref_id],
            "ref_id": ref_id,
        })  # fmt: skip
        self.attributes[str(ref_id)] = {
            "class_name": category,
            "expression": text,
            "attributes": ref["attributes"],
            "num_same_class": ref["num_same_class"],
            # an extra grid cell named with SynthConfig.extra_position_margin < 0.05
            **({"rough_position": True} if ref.get("rough_position") else {}),
        }

    def close(self, meta: dict[str, Any]) -> Path:
        """Write refs(unc).p, instances.json, attributes.json and meta.json; returns the folder."""
        with open(self.ann_dir / "refs(unc).p", "wb") as f:
            pickle.dump(self.refs, f, protocol=_PICKLE_PROTOCOL)
        names = sorted(self.categories, key=RRSISD_CATEGORY_IDS.__getitem__)
        categories = [{"id": RRSISD_CATEGORY_IDS[n], "name": n} for n in names]
        instances = {
            "images": self.images,
            "annotations": self.annotations,
            "categories": categories,
        }
        _dump_json(self.ann_dir / "instances.json", instances)
        _dump_json(self.ann_dir / "attributes.json", self.attributes)
        (self.ann_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return self.ann_dir
