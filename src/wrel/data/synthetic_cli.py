"""``wrel data synth`` and ``wrel data stats``: registered by ``wrel.commands.data``.

Heavy imports (numpy, PIL, pycocotools) stay inside the run functions so ``wrel --help`` is fast.
"""

from __future__ import annotations

import argparse
import json

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
            "image_size, num_train, num_val, num_test (images), refs_per_image, min_instances, "
            "max_instances, max_per_class, single_prob, categories, blur_sigma, noise_std, seed."
        ),
        epilog="example: wrel data synth --out data --set image_size=256 --set num_train=2000",
    )
    synth.add_argument("--out", default="data", help="data root to write (default: data)")
    synth.add_argument("--config", action="append", default=[], metavar="YAML",
                       help="YAML file of SynthConfig overrides (repeatable)")  # fmt: skip
    synth.add_argument("--set", dest="assignments", action="append", default=[],
                       metavar="KEY=VALUE", help="override one config key, e.g. seed=3")  # fmt: skip
    synth.add_argument("--workers", type=int, default=1,
                       help="rendering processes; the output does not depend on it")  # fmt: skip
    synth.add_argument("--overwrite", action="store_true", help="replace an existing benchmark")
    synth.add_argument("--preview", metavar="PNG",
                       help="also write a preview grid (image, target outline, expression)")  # fmt: skip
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(func=run_synth)

    stats = data_subparsers.add_parser(
        "stats",
        help="statistics of the synthetic benchmark",
        description=(
            "Print the statistics of DATA/synthetic: images and refs per split, instances per "
            "image, the share of refs whose class name is ambiguous (the class occurs two or "
            "more times in the image), expression length and the share of each expression kind."
        ),
    )
    stats.add_argument("--data", default="data", help="data root (default: data)")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=run_stats)


def run_synth(args: argparse.Namespace) -> int:
    """Generate the benchmark from parsed ``wrel data synth`` arguments."""
    from wrel.config import apply_overrides
    from wrel.data.synthetic import SynthConfig, generate_benchmark

    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: use 1 or more processes")
    config = apply_overrides(SynthConfig, yaml_files=args.config, assignments=args.assignments)
    out = generate_benchmark(
        args.out, config, num_workers=args.workers, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {out}")
    if args.preview:
        from wrel.data.preview import render_preview

        print(f"wrote {render_preview(args.out, args.preview)}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Print the statistics of ``--data`` as text or JSON."""
    from wrel.data.synth.stats import benchmark_stats, format_stats

    stats = benchmark_stats(args.data)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
