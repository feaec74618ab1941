"""``wrel data synth`` and ``wrel data stats``: registered by ``wrel.commands.data``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from wrel.core.bounded import check_range
from wrel.core.config_io import apply_overrides
from wrel.core.outfiles import check_output_paths
from wrel.data.preprocessing import MAX_INPUT_SIDE
from wrel.data.preview import preview_protected_folders, render_preview
from wrel.data.stats import dataset_stats, format_dataset_stats
from wrel.data.synth import SynthConfig, generate_benchmark
from wrel.data.synth.config import REGIMES
from wrel.data.synth.stats import benchmark_stats, format_stats

__all__ = ["add_subcommands", "run_stats", "run_synth"]


def add_subcommands(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth`` and ``stats`` to the subparsers of the ``wrel data`` group."""
    synth = data_subparsers.add_parser(
        "synth",
        help="render the embedded synthetic benchmark (no download needed)",
        description=(
            "Render procedurally generated aerial scenes with exact instance masks and verified "
            "referring expressions in the RRSIS-D refer layout under OUT/synthetic and "
            "OUT/images/synthetic. The output is byte-identical for a seed. Config keys: "
            "image_size, num_train, num_val, num_test (samples per split; images with "
            "fill_splits=false), fill_splits, refs_per_image, object_scale, "
            "min_object_pixels, min_instances, max_instances, max_per_class, single_prob, "
            "categories, blur_sigma, noise_std, seed, regime, max_context, scale_jitter, "
            "colour_sd, ambiguity, lookalike_prob, styles, style_tail (docs/data.md lists "
            "them all). The default regime, rrsisd, is calibrated to RRSIS-D (its 20 classes at "
            "its train frequencies, DIOR-like instance density, its expression mix, one ref per "
            "image, ~12k train refs); --regime ambiguous renders the earlier benchmark, where "
            "most class names match several objects (docs/data.md)."
        ),
        epilog="example: wrel data synth --out data --set image_size=256 --set num_train=2000",
    )
    synth.add_argument("--out", default="data", help="data root to write (default: data)")
    synth.add_argument("--regime", choices=sorted(REGIMES), default="rrsisd",
                       help="named settings to start from (default: rrsisd); --config and "
                       "--set apply on top")  # fmt: skip
    synth.add_argument("--config", action="append", default=[], metavar="YAML",
                       help="YAML file of SynthConfig overrides (repeatable)")  # fmt: skip
    synth.add_argument("--set", dest="assignments", action="append", default=[],
                       metavar="KEY=VALUE", help="override one config key, e.g. seed=3")  # fmt: skip
    synth.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                       help="rendering processes; the output does not depend on it")  # fmt: skip
    synth.add_argument("--overwrite", action="store_true",
                       help="replace an existing benchmark and an existing --preview file")  # fmt: skip
    synth.add_argument("--preview", metavar="PNG",
                       help="also write a preview grid (image, target outline, expression); "
                       "outside the benchmark's folders")  # fmt: skip
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(func=run_synth)

    stats = data_subparsers.add_parser(
        "stats",
        help="statistics of any refer-format or RefSegRS data set (or the synthetic benchmark)",
        description=(
            "Statistics of a data set. Any refer-format (DATA/<name>/refs(unc).p) or RefSegRS "
            "folder: samples per split and category, target area in pixels (percentiles; also "
            "at --input-size), expression length, the accurate / weak counts of --split-file, "
            "the share of targets whose class occurs two or more times in the image (when the "
            "annotations cover more than the targets), and pixel values of the train images "
            "(dtype, per-band percentiles) with the data.image_scaling settings built from "
            "them. The embedded synthetic benchmark (DATA/synthetic, written by wrel data "
            "synth) gets its own statistics: images and refs per split, instances per image, "
            "ambiguous class names, expression kinds, target areas at the network input."
        ),
        epilog="examples: wrel data stats --data data | wrel data stats --data /data/rrsisd "
        "--name rrsisd --split-file 'refs(unc)-90-all.p' --input-size 480",
    )
    stats.add_argument("--data", default="data", help="data root (default: data)")
    stats.add_argument("--name", help="refer data set folder under --data (auto when one)")
    stats.add_argument("--split-file", help="weak-split refs file: count accurate / weak refs")
    stats.add_argument("--input-size", type=int, default=None, metavar="PX",
                       help="network input side the target areas are measured at "
                       "(synthetic default: the rendered image size)")  # fmt: skip
    stats.add_argument("--pixel-images", type=int, default=64, metavar="N",
                       help="train images read for pixel statistics (default 64; 0: none)")  # fmt: skip
    stats.add_argument("--bands", help="1-based bands for the pixel statistics, e.g. 4,3,2 or 1")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=run_stats)


def run_synth(args: argparse.Namespace) -> int:
    """Generate the benchmark from parsed ``wrel data synth`` arguments."""

    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: use 1 or more processes")
    check_range("--workers", args.workers, 1, 256)
    config = apply_overrides(
        SynthConfig, SynthConfig.for_regime(args.regime), yaml_files=args.config,
        assignments=args.assignments,
    )  # fmt: skip
    check_output_paths(  # before minutes of rendering
        {"--preview": args.preview},
        suffixes={"--preview": (".png",)},
        overwrite=args.overwrite,
        folders=preview_protected_folders(args.out),
    )
    out = generate_benchmark(
        args.out, config, num_workers=args.workers, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {out}")
    if args.preview:
        written = render_preview(args.out, args.preview, overwrite=args.overwrite, name="--preview")
        print(f"wrote {written}")
    return 0


def _is_synthetic(root: Path, name: str | None) -> bool:
    """Whether ``root`` (with ``--name``) is the embedded benchmark written by wrel data synth."""
    if name not in (None, "synthetic") or not (root / "synthetic" / "meta.json").is_file():
        return False
    others = [p.parent.name for p in root.glob("*/refs(unc).p") if p.parent.name != "synthetic"]
    return name == "synthetic" or not others


def run_stats(args: argparse.Namespace) -> int:
    """Print the statistics of ``--data`` as text or JSON.

    The embedded benchmark gets :mod:`wrel.data.synth.stats` (unless --split-file asks for the
    generic counts); any other folder :mod:`wrel.data.stats`.
    """
    root = Path(args.data)
    name = getattr(args, "name", None)
    split_file = getattr(args, "split_file", None)
    check_range("--input-size", args.input_size, 8, MAX_INPUT_SIDE)
    if _is_synthetic(root, name) and not split_file:
        stats = benchmark_stats(args.data, input_size=args.input_size)
        print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
        return 0

    bands_text = getattr(args, "bands", None)
    try:
        bands = [int(b) for b in bands_text.split(",") if b.strip()] if bands_text else None
    except ValueError:
        raise ValueError(
            f"--bands expects 1-based band numbers such as 4,3,2, got {bands_text!r}"
        ) from None
    pixel_images = getattr(args, "pixel_images", 64)
    if pixel_images < 0:
        raise ValueError(f"--pixel-images must be 0 or more, got {pixel_images}")
    check_range("--pixel-images", pixel_images, 0, 100_000)
    stats = dataset_stats(
        root,
        name=name,
        split_file=split_file,
        input_size=args.input_size,
        pixel_images=pixel_images,
        bands=bands,
    )
    print(json.dumps(stats, indent=2) if args.json else format_dataset_stats(stats))
    return 0
