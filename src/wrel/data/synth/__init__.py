"""The embedded synthetic benchmark: procedurally rendered aerial scenes with referring expressions.

It is the default data set, so that training, evaluation and every test run without a download,
and it makes the WREL problem real: in most samples the target's class occurs several times in
the image, so the class name alone does not say which instance is meant, while the accurate
expression (position, extreme, size, colour, relation or a combination) is verified to single
out the target. The data are written in the RRSIS-D refer layout (see ``docs/data.md``)::

    <root>/synthetic/refs(unc).p        pickled list of plain ref dicts (protocol 4)
    <root>/synthetic/instances.json     COCO-like images / annotations (RLE) / categories
    <root>/synthetic/attributes.json    {ref_id: {class_name, expression, attributes, num_same_class[, rough_position]}}
    <root>/synthetic/meta.json          the config and the generator version
    <root>/images/synthetic/JPEGImages/<image_id>.png

Output is byte-identical for a seed, whatever the number of worker processes.

Example:
    >>> from wrel.data.synth import SynthConfig, generate_benchmark
    >>> generate_benchmark("data", SynthConfig(num_train=20, num_val=4, num_test=4))
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from wrel.core.config_io import to_dict
from wrel.core.progress import Progress
from wrel.data.synth.categories import CATEGORY_SPECS, DEFAULT_CATEGORIES, RRSISD_CATEGORY_IDS
from wrel.data.synth.config import MAX_SYNTH_IMAGES, SynthConfig
from wrel.data.synth.generate import ImageRecord, build_image
from wrel.data.synth.geometry import Instance, singles_out
from wrel.data.synth.writer import DATASET_NAME, SPLITS, BenchmarkWriter

__all__ = [
    "CATEGORY_SPECS",
    "DATASET_NAME",
    "DEFAULT_CATEGORIES",
    "GENERATOR_VERSION",
    "RRSISD_CATEGORY_IDS",
    "Instance",
    "SynthConfig",
    "generate_benchmark",
    "singles_out",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the same config would render different files.
# 2.0: the rrsisd regime (1.0 renders as the ambiguous regime); 2.1: its v4 / v5 calibration
# (ambiguity, look-alikes, wider scale and colour; 2.0 renders with ambiguity=1,
# lookalike_prob=0, scale_jitter=1.4, colour_sd=12)
GENERATOR_VERSION = "2.1"


def _build(config: SynthConfig, task: tuple[int, int]) -> ImageRecord:
    return build_image(config, *task)


def _records(
    config: SynthConfig, tasks: list[tuple[int, int]], num_workers: int
) -> Iterator[ImageRecord]:
    if num_workers <= 1:
        yield from (_build(config, task) for task in tasks)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(num_workers) as pool:
        yield from pool.imap(partial(_build, config), tasks, chunksize=8)


def _prepare_output(root: Path, overwrite: bool) -> None:
    ann_dir, image_dir = root / DATASET_NAME, root / "images" / DATASET_NAME
    if ann_dir.exists() or image_dir.exists():
        if not overwrite:
            raise ValueError(
                f"{ann_dir} already exists; choose another root or pass overwrite=True "
                "(`wrel data synth --overwrite`)"
            )
        shutil.rmtree(ann_dir, ignore_errors=True)
        shutil.rmtree(image_dir, ignore_errors=True)


def _meta(config: SynthConfig, writer: BenchmarkWriter, counts: tuple[int, ...]) -> dict:
    """meta.json: what produced the files (no timestamps, so that the bytes are reproducible)."""
    refs = Counter(r["split"] for r in writer.refs)
    return {
        "generator": "wrel.data.synth",
        "version": GENERATOR_VERSION,
        "config": to_dict(config),
        "settings_hash": config.settings_hash(),
        "splits": {s: {"images": counts[i], "refs": refs[s]} for i, s in enumerate(SPLITS)},
    }


def _filled(
    config: SynthConfig, split_index: int, need: int, num_workers: int
) -> Iterator[ImageRecord]:
    """The records of one split in image-index order, those without a ref left out, until
    their refs number ``need`` (the last image's surplus refs dropped).

    Images are rendered in batches (the first of ``need`` images, then twice the shortfall), so
    the output depends on the config alone, not on the workers or the batches.
    """
    limit = min(4 * need + 64, MAX_SYNTH_IMAGES)  # a config that refers to almost nothing
    start, have, batch = 0, 0, need
    while have < need:
        if start >= limit:
            raise ValueError(
                f"{SPLITS[split_index]}: {start:,} images gave only {have:,} of {need:,} "
                "samples; these settings leave too few objects that an expression can refer "
                "to (or set fill_splits=false to keep the images asked for)"
            )
        tasks = [(split_index, i) for i in range(start, min(start + batch, limit))]
        for record in _records(config, tasks, num_workers):
            if not record.refs:
                continue
            record.refs = record.refs[: need - have]
            have += len(record.refs)
            yield record
            if have == need:
                return
        start += len(tasks)
        batch = max(16, 2 * (need - have))


def generate_benchmark(
    root: str | Path,
    config: SynthConfig | None = None,
    *,
    num_workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render the benchmark under ``root`` and return ``<root>/synthetic``.

    Args:
        root: data root (created if missing).
        config: what to render; defaults to ``SynthConfig()``.
        num_workers: processes rendering images; does not change the output.
        overwrite: replace an existing ``<root>/synthetic`` (and its images).
        progress: show progress (a bar on a terminal, a line every 30 s in a log).

    Raises:
        ValueError: the benchmark already exists and ``overwrite`` is false, or (with
            ``fill_splits``) the settings refer to too few objects to fill a split.
    """
    config = config or SynthConfig()
    config.validate()
    root = Path(root)
    _prepare_output(root, overwrite)
    counts: tuple[int, ...] = (config.num_train, config.num_val, config.num_test)
    writer = BenchmarkWriter(root, list(config.categories))
    if config.fill_splits:  # counts are samples
        images = [0, 0, 0]
        with Progress(sum(counts), "synth", unit="sample", enabled=progress) as bar:
            for split_index, need in enumerate(counts):
                for record in _filled(config, split_index, need, num_workers):
                    writer.add(SPLITS[split_index], record, config.image_size)
                    images[split_index] += 1
                    bar.update(len(record.refs))
        counts = tuple(images)
    else:  # counts are images
        tasks = [(s, i) for s, n in enumerate(counts) for i in range(n)]
        records = _records(config, tasks, num_workers)
        with Progress(len(tasks), "synth", unit="img", enabled=progress) as bar:
            for (split_index, _), record in zip(tasks, records, strict=True):
                writer.add(SPLITS[split_index], record, config.image_size)
                bar.update(1)
    out = writer.close(_meta(config, writer, counts))
    logger.info("wrote %d images, %d refs to %s", len(writer.images), len(writer.refs), out)
    return out
