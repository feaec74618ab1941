"""Statistics of any refer-format or RefSegRS data set (``wrel data stats`` outside the
embedded benchmark, whose own statistics live in :mod:`wrel.data.synth.stats`).

What is counted, per split: samples (refs), images, samples per category, target area in
pixels (masks decoded through the validated decoders of :mod:`wrel.data.images`) with
percentiles, the area at a network input size, expression length in words; with a split file,
its accurate / weak counts; where the annotation file annotates more than the referred objects
(taken as every instance of an image annotated), the share of targets whose class occurs two or
more times in their image (the class name, the weak text, is then ambiguous); and pixel value
statistics of the images (dtype, per-band percentiles) with the ``data.image_scaling`` settings
that reproduce them (``dataset_stats``).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from wrel.core.paths import require_folder
from wrel.data.dataset import _dataset_name
from wrel.data.expression_mix import expression_mix
from wrel.data.image_reading import GEO_SUFFIXES, ImageScaling, read_raw
from wrel.data.images import check_image_size, segmentation_area
from wrel.data.refer import image_dir, read_refer
from wrel.data.refsegrs import load_refsegrs_samples
from wrel.data.splits import import_split, split_counts, split_file_info

__all__ = ["dataset_stats", "format_dataset_stats", "pixel_stats"]

logger = logging.getLogger(__name__)

_AREA_PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 99)
#: Targets covering fewer input pixels than this are about one cell of a stride-4 decoder map.
LEGIBLE_PIXELS = 64
_PIXEL_SIDE = 256  # pixel statistics read each image decimated to at most this side


def _summary(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "mean": round(float(values.mean()), 2),
        "min": float(values.min()),
        "max": float(values.max()),
        "percentiles": {
            f"p{q}": round(float(np.percentile(values, q)), 1) for q in _AREA_PERCENTILES
        },
    }


def _words(text: str) -> int:
    return len(text.split())


def _split_block(
    areas: np.ndarray,
    input_areas: np.ndarray | None,
    lengths: np.ndarray,
    categories: list[str],
    num_images: int,
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "samples": len(categories),
        "images": num_images,
        "per_category": dict(sorted(Counter(categories).items())),
        "target_area_pixels": _summary(areas),
        "expression_words": _summary(lengths),
    }
    if input_areas is not None and input_areas.size:
        block["target_area_at_input"] = {
            **_summary(input_areas),
            "legible_share": round(float((input_areas >= LEGIBLE_PIXELS).mean()), 4),
            "legible_pixels": LEGIBLE_PIXELS,
        }
    return block


def _refer_stats(
    root: Path, name: str, split_file: str | None, input_size: int | None
) -> tuple[dict[str, Any], list[Path]]:

    data = read_refer(root, name)
    refs = data.refs
    ann_image = np.array([a.image_id for a in data.annotations.values()], dtype=np.int64)
    ann_cat = np.array([a.category_id for a in data.annotations.values()], dtype=np.int64)
    same_class = Counter(zip(ann_image.tolist(), ann_cat.tolist(), strict=True))
    referred = {r.ann_id for r in refs}
    # Annotations that no ref points at mean the file annotates more than the targets: the
    # ambiguity count is then taken to cover every instance (RRSIS-D annotates targets only).
    complete = len(set(data.annotations) - referred) > 0
    splits: dict[str, Any] = {}
    train_images: list[Path] = []
    folder = image_dir(root, name)
    for split in _split_order({r.split for r in refs}):
        chosen = [r for r in refs if r.split == split]
        areas, input_areas, lengths, cats, ambiguous = [], [], [], [], 0
        for ref in chosen:
            image = data.images.get(ref.image_id)
            ann = data.annotations.get(ref.ann_id)
            if image is None or ann is None:
                raise ValueError(
                    f"{root / name}: ref {ref.ref_id} points at a missing image or annotation; "
                    "`wrel data stats` counts consistent data only (see the error of wrel train)"
                )
            try:
                area = segmentation_area(ann.segmentation, image.height, image.width)
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"{root / name}/instances.json: annotation {ann.ann_id} (ref {ref.ref_id}) "
                    f"cannot be decoded: {err}"
                ) from err
            areas.append(area)
            if input_size:
                input_areas.append(area * input_size * input_size / (image.height * image.width))
            lengths.append(_words(ref.sentences[0].raw) if ref.quality == "accurate" else 0)
            category = data.categories.get(ref.category_id)
            cats.append(category.name if category else f"category {ref.category_id}")
            ambiguous += same_class[(ref.image_id, ref.category_id)] >= 2
        images = {r.image_id for r in chosen}
        lengths_arr = np.asarray([n for n in lengths if n > 0], dtype=np.float64)
        block = _split_block(
            np.asarray(areas, dtype=np.float64),
            np.asarray(input_areas, dtype=np.float64) if input_size else None,
            lengths_arr,
            cats,
            len(images),
        )
        block["ambiguous_class_name_share"] = (
            round(ambiguous / len(chosen), 4) if complete and chosen else None
        )
        texts = [r.sentences[0].raw for r in chosen if r.quality == "accurate"]
        if texts:  # what the accurate expressions name (wrel.data.expression_mix's rules)
            mix = expression_mix(texts)
            block["expression_mix"] = {
                k: round(mix[k], 4) for k in ("position", "relation", "colour", "size", "none")
            }
        splits[split] = block
        if split == "train":
            train_images = sorted({folder / data.images[i].file_name for i in images})
    out: dict[str, Any] = {
        "layout": "refer",
        "root": str(root),
        "name": name,
        "images": len(data.images),
        "annotations": len(data.annotations),
        "categories": len(data.categories),
        "refs": len(refs),
        "splits": splits,
        "ambiguity": (
            "counted: instances.json annotates objects no ref points at, taken as every "
            "instance of each image"
            if complete
            else "not countable: instances.json annotates the referred objects only"
        ),
    }
    if split_file:
        out["split_file"] = _split_file_block(split_file, data.categories)
    return out, train_images


def _split_file_block(split_file: str, categories: dict[int, Any]) -> dict[str, Any]:

    info = split_file_info(split_file)
    refs, weak = import_split(split_file)
    names = {cid: c.name for cid, c in categories.items()}
    per_category = split_counts(refs, weak, names)
    return {
        "path": str(split_file),
        "train_refs": info.num_refs,
        "accurate": info.num_accurate,
        "weak": info.num_weak,
        "accurate_ratio": round(info.accurate_ratio, 6),
        "per_category": {k: {"accurate": a, "weak": w} for k, (a, w) in per_category.items()},
    }


def _split_order(splits: set[str]) -> list[str]:
    known = [s for s in ("train", "val", "test") if s in splits]
    return known + sorted(splits - set(known))


def _refsegrs_stats(root: Path, input_size: int | None) -> tuple[dict[str, Any], list[Path]]:

    splits: dict[str, Any] = {}
    train_images: list[Path] = []
    found = {p.stem.removeprefix("output_phrase_") for p in root.glob("output_phrase_*.txt")}
    for split in _split_order(found):
        samples = load_refsegrs_samples(root, split)
        areas, input_areas = [], []
        for s in samples:
            mask = s.read_mask()  # read_mask_file: validated, pixel cap checked
            areas.append(int(mask.sum(dtype=np.int64)))
            if input_size:
                input_areas.append(areas[-1] * input_size * input_size / mask.size)
        splits[split] = _split_block(
            np.asarray(areas, dtype=np.float64),
            np.asarray(input_areas, dtype=np.float64) if input_size else None,
            np.asarray([_words(s.text) for s in samples], dtype=np.float64),
            [s.category for s in samples],
            len({s.image_path for s in samples}),
        )
        splits[split]["ambiguous_class_name_share"] = None
        if split == "train":
            train_images = sorted({s.image_path for s in samples})
    out = {
        "layout": "refsegrs",
        "root": str(root),
        "splits": splits,
        "ambiguity": "not countable: the RefSegRS layout has one mask per phrase, no instances",
    }
    return out, train_images


def _raw_pixels(path: Path, bands: Any) -> np.ndarray:
    """Selected bands ``(n, 3)`` of one image, decimated to at most ``_PIXEL_SIDE`` a side."""

    scaling = ImageScaling(bands=tuple(bands) if bands else None)
    if path.suffix.lower() in GEO_SUFFIXES:
        import rasterio

        with rasterio.open(path) as src:
            check_image_size(int(src.height), int(src.width))
            chosen = scaling.select_bands(src.count)
            step = max(1, -(-max(src.height, src.width) // _PIXEL_SIDE))
            shape = (3, -(-src.height // step), -(-src.width // step))
            data = src.read(list(chosen), out_shape=shape, masked=True)  # (3, h, w), nearest
        if np.ma.is_masked(data):  # nodata pixels: left out, as the readers do
            data = data.astype(np.float64).filled(np.nan)
        array = np.moveaxis(np.asarray(data), 0, -1)
    else:
        raw = read_raw(path)
        raw = raw[:, :, None] if raw.ndim == 2 else raw
        chosen = scaling.select_bands(raw.shape[2])
        step = max(1, -(-max(raw.shape[:2]) // _PIXEL_SIDE))
        array = raw[::step, ::step][:, :, [b - 1 for b in chosen]]
    return array.reshape(-1, 3)


def pixel_stats(
    images: list[Path],
    max_images: int = 64,
    bands: Any = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> dict[str, Any]:
    """Pixel values of up to ``max_images`` images (evenly spaced), per selected band.

    Returns dtypes, per-band low / high percentiles, mean, std, min, max, and the
    ``data.image_scaling`` settings of the ``dataset_stats`` method built from them.
    """
    if not images or max_images <= 0:
        return {}
    picks = np.unique(np.linspace(0, len(images) - 1, min(max_images, len(images))).round())
    parts: list[np.ndarray] = []
    dtypes: Counter[str] = Counter()
    for index in picks.astype(int):
        pixels = _raw_pixels(images[index], bands)
        dtypes[str(pixels.dtype)] += 1
        parts.append(pixels.astype(np.float64))
    values = np.concatenate(parts)  # (N, 3)
    finite = np.isfinite(values).all(axis=1)  # NaN / inf / nodata pixels are left out
    skipped = int(values.shape[0] - finite.sum())
    if not finite.any():
        raise ValueError(
            f"every sampled pixel of the {len(picks)} train images read is NaN, infinite or "
            "nodata: no band range can be measured; check the images (e.g. "
            f"{images[int(picks[0])]}) and their nodata value"
        )
    values = values[finite]
    lo, hi = np.percentile(values, percentiles, axis=0)
    band_names = list(bands) if bands else "default (1-3, or 1 replicated)"
    out: dict[str, Any] = {
        "images_read": int(len(picks)),
        "dtypes": dict(dtypes),
        "bands": band_names,
        "percentiles": list(percentiles),
        "band_low": [round(float(v), 3) for v in lo],
        "band_high": [round(float(v), 3) for v in hi],
        "mean": [round(float(v), 3) for v in values.mean(axis=0)],
        "std": [round(float(v), 3) for v in values.std(axis=0)],
        "min": [float(v) for v in values.min(axis=0)],
        "max": [float(v) for v in values.max(axis=0)],
        "median": [float(v) for v in np.median(values, axis=0)],
        "nonfinite_skipped": skipped,
    }
    low = ",".join(f"{v:g}" for v in out["band_low"])
    high = ",".join(f"{v:g}" for v in out["band_high"])
    out["image_scaling_sets"] = [
        "data.image_scaling.method=dataset_stats",
        f"data.image_scaling.band_low=[{low}]",
        f"data.image_scaling.band_high=[{high}]",
    ]
    if any(a >= b for a, b in zip(out["band_low"], out["band_high"], strict=True)):
        out["image_scaling_sets"] = []  # a constant band: dataset_stats would be refused
        out["note"] = "a band is constant over the sampled pixels: no dataset_stats range fits"
    if "uint16" in dtypes:
        top = max(out["max"])
        median = max(out["median"])
        out["note"] = (
            f"16-bit data: median {median:g}, max {top:g} of 65535; dtype_range (and the /257 "
            f"of wrel before image_scaling) would feed the model a median of "
            f"{median / 257:.0f}/255 (near black); auto, per_image_percentile or dataset_stats "
            "use the values' real range"
        )
    if skipped:
        out["note"] = (
            f"{skipped:,} NaN, infinite or nodata pixels of {skipped + len(values):,} sampled were "
            "left out of these statistics. " + str(out.get("note", ""))
        ).strip()
    return out


def dataset_stats(
    root: str | Path,
    *,
    name: str | None = None,
    split_file: str | None = None,
    input_size: int | None = None,
    pixel_images: int = 64,
    bands: Any = None,
) -> dict[str, Any]:
    """Statistics of a refer-format (``<root>/<name>/refs(unc).p``) or RefSegRS folder.

    Args:
        root: data root.
        name: refer data set folder (auto when the root holds one).
        split_file: a weak-split refs file to count (accurate / weak per category).
        input_size: network input side; target areas are also given at it.
        pixel_images: train images read for pixel statistics (0: none).
        bands: 1-based bands for the pixel statistics (default: the reader's default).

    Raises:
        FileNotFoundError: the root holds neither layout.
        ValueError: invalid files (the loaders' validation errors).
    """

    root = require_folder(
        root,
        "data root",
        f"check --data (or render the embedded benchmark into it: wrel data synth --out {root})",
    )
    if input_size is not None and input_size < 1:
        raise ValueError(f"--input-size must be a positive number of pixels, got {input_size}")
    if name is None and any(root.glob("output_phrase_*.txt")):
        if split_file:
            raise ValueError("--split-file applies to the refer layout, not to RefSegRS folders")
        out, train_images = _refsegrs_stats(root, input_size)
    else:
        out, train_images = _refer_stats(root, _dataset_name(root, name), split_file, input_size)
    out["input_size"] = input_size
    existing = [p for p in train_images if p.is_file()]
    if len(existing) < len(train_images):
        out["missing_train_images"] = len(train_images) - len(existing)
    out["pixels"] = pixel_stats(existing, pixel_images, bands)
    return out


def _area_line(block: dict[str, Any]) -> str:
    pct = block.get("percentiles") or {}
    text = ", ".join(f"{k} {v:g}" for k, v in pct.items())
    return f"{text} (mean {block.get('mean', 0):g}, max {block.get('max', 0):g})"


def format_dataset_stats(stats: dict[str, Any]) -> str:
    """Human-readable report of :func:`dataset_stats`."""
    where = stats["root"] + (f" ({stats['name']})" if stats.get("name") else "")
    lines = [f"{stats['layout']} data set {where}"]
    if stats["layout"] == "refer":
        lines.append(
            f"images {stats['images']}, annotations {stats['annotations']}, refs "
            f"{stats['refs']}, categories {stats['categories']}"
        )
    for split, block in stats["splits"].items():
        lines.append(f"\n[{split}] {block['samples']} samples on {block['images']} images")
        cats = ", ".join(f"{k} {v}" for k, v in block["per_category"].items())
        lines.append(f"  per category: {cats}")
        if block["target_area_pixels"].get("count"):
            lines.append(f"  target area (pixels): {_area_line(block['target_area_pixels'])}")
        at = block.get("target_area_at_input")
        if at:
            lines.append(
                f"  target area at {stats['input_size']} px input: {_area_line(at)}; "
                f"{at['legible_share']:.1%} cover >= {at['legible_pixels']} px"
            )
        words = block["expression_words"]
        if words.get("count"):
            pct = words["percentiles"]
            lines.append(
                f"  expression length (words): mean {words['mean']:g}, median {pct['p50']:g}, "
                f"p10-p90 {pct['p10']:g}-{pct['p90']:g}, max {words['max']:g}"
            )
        mix = block.get("expression_mix")
        if mix:
            lines.append(
                "  expressions naming a position / relation / colour / size: "
                f"{mix['position']:.1%} / {mix['relation']:.1%} / {mix['colour']:.1%} / "
                f"{mix['size']:.1%}"
            )
        share = block.get("ambiguous_class_name_share")
        if share is not None:
            lines.append(f"  ambiguous class name (class >= 2 times in the image): {share:.1%}")
    lines.append(f"\nambiguity: {stats['ambiguity']}")
    if stats.get("split_file"):
        sf = stats["split_file"]
        lines.append(
            f"split file {sf['path']}: {sf['train_refs']} train refs, {sf['accurate']} accurate, "
            f"{sf['weak']} weak (accurate ratio {sf['accurate_ratio']:.4f})"
        )
        for cat, counts in sf["per_category"].items():
            lines.append(f"  {cat}: {counts['accurate']} accurate, {counts['weak']} weak")
    if stats.get("missing_train_images"):
        lines.append(f"missing train image files: {stats['missing_train_images']}")
    px = stats.get("pixels") or {}
    if px:
        lines.append(
            f"pixels ({px['images_read']} train images, dtypes {px['dtypes']}, bands "
            f"{px['bands']}): p{px['percentiles'][0]:g} {px['band_low']}, "
            f"p{px['percentiles'][1]:g} {px['band_high']}, median {px['median']}, "
            f"min {px['min']}, max {px['max']}"
        )
        if px.get("note"):
            lines.append(f"  {px['note']}")
        if px["image_scaling_sets"]:
            lines.append("  to train with these limits: " + " ".join(
                f"--set {s}" for s in px["image_scaling_sets"]
            ))  # fmt: skip
    return "\n".join(lines)
