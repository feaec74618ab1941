"""Statistics of a written synthetic benchmark (``wrel data stats``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from wrel.core.bounded import data_file_limit, load_json
from wrel.data.refer import load_refs
from wrel.data.synth.writer import DATASET_NAME

__all__ = ["benchmark_stats", "format_stats", "read_benchmark"]


def read_benchmark(root: str | Path) -> dict[str, Any]:
    """Load the annotation files of ``<root>/synthetic`` (refs, instances, attributes, meta).

    Raises:
        FileNotFoundError: a file is missing, with the command that creates it.
    """
    ann_dir = Path(root) / DATASET_NAME
    names = {"refs": "refs(unc).p", "instances": "instances.json",
             "attributes": "attributes.json", "meta": "meta.json"}  # fmt: skip
    for name in names.values():
        if not (ann_dir / name).is_file():
            raise FileNotFoundError(
                f"{ann_dir / name} does not exist; create the benchmark with "
                f"`wrel data synth --out {root}`"
            )
    out: dict[str, Any] = {"refs": load_refs(ann_dir / names["refs"])}
    for key in ("instances", "attributes", "meta"):
        out[key] = load_json(ann_dir / names[key], "annotation file", max_bytes=data_file_limit())
    _check_links(out, ann_dir)
    return out


_ATTRIBUTE_KEYS = ("expression", "class_name", "num_same_class", "attributes")


def _check_links(data: dict[str, Any], ann_dir: Path) -> None:
    """Every ref's annotation and attributes exist (a ValueError naming the file and key)."""
    instances, attributes = data["instances"], data["attributes"]
    if not isinstance(instances, dict) or not isinstance(attributes, dict):
        raise ValueError(f"{ann_dir}: instances.json and attributes.json must hold JSON objects")
    anns = instances.get("annotations")
    if not isinstance(anns, list) or not all(
        isinstance(a, dict) and {"id", "area", "image_id"} <= a.keys() for a in anns
    ):
        raise ValueError(
            f"{ann_dir / 'instances.json'}: 'annotations' must be a list of objects with "
            "'id', 'area' and 'image_id'"
        )
    ann_ids = {a["id"] for a in anns}
    for r in data["refs"]:
        if r["ann_id"] not in ann_ids:
            raise ValueError(
                f"{ann_dir / 'refs(unc).p'}: ref {r['ref_id']} has ann_id {r['ann_id']}, which "
                f"{ann_dir / 'instances.json'} does not hold; re-render with wrel data synth"
            )
        entry = attributes.get(str(r["ref_id"]))
        if not isinstance(entry, dict) or not all(k in entry for k in _ATTRIBUTE_KEYS):
            raise ValueError(
                f"{ann_dir / 'attributes.json'}: ref {r['ref_id']} has no entry with "
                f"{', '.join(_ATTRIBUTE_KEYS)}; re-render with wrel data synth"
            )


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 3), "median": float(np.median(arr)),
            "min": float(arr.min()), "max": float(arr.max())}  # fmt: skip


def _kind(attributes: dict[str, Any]) -> str:
    if not attributes:
        return "class name only"
    return next(iter(attributes)) if len(attributes) == 1 else "combination"


#: A target is legible at the network input when it covers at least this many input pixels
#: (about one 4x4 cell of a stride-4 decoder map in each direction).
LEGIBLE_PIXELS = 64


def target_areas(data: dict[str, Any]) -> np.ndarray:
    """Pixel area of every ref's target at the rendered size, in ref order, float64."""
    area = {a["id"]: float(a["area"]) for a in data["instances"]["annotations"]}
    return np.asarray([area[r["ann_id"]] for r in data["refs"]], dtype=np.float64)


def area_summary(areas: np.ndarray, scale: float = 1.0) -> dict[str, Any]:
    """Percentiles of ``areas * scale`` and the share at or above :data:`LEGIBLE_PIXELS`."""
    scaled = np.asarray(areas, dtype=np.float64) * scale
    if scaled.size == 0:
        return {"percentiles": {}, "legible_share": 0.0, "legible_pixels": LEGIBLE_PIXELS}
    qs = (1, 5, 10, 25, 50, 75, 90, 99)
    return {
        "percentiles": {f"p{q}": round(float(np.percentile(scaled, q)), 1) for q in qs},
        "legible_share": round(float((scaled >= LEGIBLE_PIXELS).mean()), 4),
        "legible_pixels": LEGIBLE_PIXELS,
    }


def benchmark_stats(root: str | Path, input_size: int | None = None) -> dict[str, Any]:
    """Statistics of the benchmark under ``root``.

    ``input_size``: the network input side the targets are measured at (default: the rendered
    image size); areas scale with its square.

    Returns:
        A JSON-able dict: image / ref counts per split, instances per image, the share of refs
        whose class occurs two or more times in the image (``ambiguous_share``: the class name
        alone does not say which instance is meant), expression length in words, and the share
        of each expression kind and category, refs per image, and the target-area distribution
        at the input size (``target_area``) with the share covering >= 64 input pixels.
    """
    data = read_benchmark(root)
    rendered = data["meta"].get("config", {}).get("image_size")
    size = input_size or rendered
    scale = (size / rendered) ** 2 if size and rendered else 1.0
    refs, attrs = data["refs"], data["attributes"]
    per_image = Counter(a["image_id"] for a in data["instances"]["annotations"])
    instance_counts = [per_image.get(im["id"], 0) for im in data["instances"]["images"]]
    entries = [attrs[str(r["ref_id"])] for r in refs]
    ambiguous = [e["num_same_class"] >= 2 for e in entries]
    lengths = [len(e["expression"].split()) for e in entries]
    splits = Counter(r["split"] for r in refs)
    images = {s: len({r["image_id"] for r in refs if r["split"] == s}) for s in splits}
    num = max(1, len(refs))
    return {
        "num_images": len(instance_counts),
        "num_refs": len(refs),
        "splits": {s: {"images": images[s], "refs": splits[s]} for s in sorted(splits)},
        "image_size": rendered,
        "input_size": size,
        "refs_per_image": _summary([float(v) for v in Counter(r["image_id"] for r in refs).values()]),
        "target_area": area_summary(target_areas(data), scale),
        "instances_per_image": _summary([float(c) for c in instance_counts]),
        "ambiguous_share": round(sum(ambiguous) / num, 4),
        "single_instance_share": round(1 - sum(ambiguous) / num, 4) if refs else 0.0,
        "same_class_instances_per_ref": _summary([float(e["num_same_class"]) for e in entries]),
        "expression_words": _summary([float(n) for n in lengths]),
        "expression_kinds": {k: round(v / num, 4) for k, v in sorted(Counter(_kind(e["attributes"]) for e in entries).items())},
        "categories": dict(sorted(Counter(e["class_name"] for e in entries).items())),
    }  # fmt: skip


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable text of :func:`benchmark_stats`."""
    inst, words = stats["instances_per_image"], stats["expression_words"]
    lines = [
        f"images: {stats['num_images']}  refs (samples): {stats['num_refs']}  "
        f"image size: {stats['image_size']}",
        "splits: " + ", ".join(f"{s} {v['images']} images / {v['refs']} refs" for s, v in stats["splits"].items()),
        f"refs per image: mean {stats['refs_per_image']['mean']:.2f} (max {stats['refs_per_image']['max']:.0f})",
        f"target area at {stats['input_size']} px input (pixels): " + ", ".join(f"{k} {v:g}" for k, v in stats["target_area"]["percentiles"].items()),
        f"targets covering >= {stats['target_area']['legible_pixels']} input pixels: {stats['target_area']['legible_share']:.1%}",
        f"instances per image: mean {inst['mean']:.2f} (min {inst['min']:.0f}, max {inst['max']:.0f})",
        f"ambiguous class names (target class occurs >= 2 times): {stats['ambiguous_share']:.1%}",
        f"single-instance targets: {stats['single_instance_share']:.1%}",
        f"expression length (words): mean {words['mean']:.2f}, median {words['median']:.0f}, "
        f"min {words['min']:.0f}, max {words['max']:.0f}",
        "expression kinds: " + ", ".join(f"{k} {v:.1%}" for k, v in stats["expression_kinds"].items()),
        "refs per category: " + ", ".join(f"{k} {v}" for k, v in stats["categories"].items()),
    ]  # fmt: skip
    return "\n".join(lines)
