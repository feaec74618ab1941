"""``wrel data``: data set tools (``split`` here; ``synth`` and ``stats`` in :mod:`wrel.commands.data_synth`)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from wrel.commands import data_synth
from wrel.core.outfiles import check_output_paths, write_file
from wrel.data import splits
from wrel.data.refer import INSTANCES_FILE, REFS_FILE, load_refs, read_refer, refs_bytes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel data`` and its subcommands."""
    parser = subparsers.add_parser(
        "data",
        help="build weak splits, render the synthetic benchmark, data statistics",
        description="Data set tools. Run `wrel data COMMAND --help` for each command.",
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    data_subparsers = parser.add_subparsers(dest="data_command", metavar="COMMAND")
    _add_split(data_subparsers)
    data_synth.add_subcommands(data_subparsers)  # synth, stats


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_split(data_subparsers: argparse._SubParsersAction) -> None:
    p = data_subparsers.add_parser(
        "split",
        help="build a WREL weak split (or import a published one) and print its counts",
        description=textwrap.fill(
            "Build the WREL view of a refer-format data set: in the train split, a share "
            "1 - ACCURATE_RATIO of the expressions (stratified per category) is replaced by the "
            "class name, as in the published RRSIS-D splits. Writes a refs pickle of plain "
            "types (use it with load_samples(split_file=...) / data.split_file) and prints "
            "per-category accurate / weak counts. With --published, imports a published "
            "split file as-is and reports its counts."
        ),
        epilog=(
            "examples: wrel data split --data data --accurate-ratio 0.1 --seed 0 "
            "--out splits/refs-10.p\n"
            "          wrel data split --published 'refs(unc)-90-all.p'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="refer-format data root (holds <name>/refs(unc).p)")
    p.add_argument("--name", help="data set folder under --data (auto when there is one)")
    p.add_argument("--accurate-ratio", type=float, help="share of train expressions kept, 0-1")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--out", help="split file to write (a refs pickle); never a data set's own file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--published", help="import this published split file and report it")
    p.set_defaults(func=run_split)


def _category_names(root: Path, name: str) -> dict[int, str]:

    if not (root / name / INSTANCES_FILE).is_file():
        raise FileNotFoundError(
            f"{root / name / INSTANCES_FILE} does not exist; class names for weak texts come "
            "from its categories"
        )
    return read_refer(root, name).category_names


def _resolve_name(root: Path, name: str | None) -> str:
    if name:
        return name
    found = sorted(p.parent.name for p in root.glob("*/refs(unc).p"))
    if len(found) != 1:
        raise ValueError(f"{root} holds data sets {found}; pass --name to pick one")
    return found[0]


def _data_set_files(root: Path) -> dict[Path, str]:
    """The annotation files of every data set under ``root``: never written over."""
    names = (REFS_FILE, INSTANCES_FILE, "attributes.json", "meta.json")  # what loaders read
    files = [f for name in names for f in root.glob(f"*/{name}")]
    return {f: f"a file of the data set {f.parent} ({f.name})" for f in sorted(files)}


def run_split(args: argparse.Namespace) -> int:
    """Build or import a weak split and print per-category accurate / weak counts."""

    if args.published:
        refs, weak = splits.import_split(args.published)
        names = splits.category_names_from_weak_refs(refs)
        if args.data:
            root = Path(args.data)
            names = {**names, **_category_names(root, _resolve_name(root, args.name))}
        print(f"published split {args.published}: {len(weak)} weak train refs")
        print(splits.format_counts(splits.split_counts(refs, weak, names)))
        return 0
    if not args.data or args.accurate_ratio is None or not args.out:
        raise ValueError(
            "wrel data split needs --data, --accurate-ratio and --out (or --published)"
        )
    root = Path(args.data)
    name = _resolve_name(root, args.name)
    protected = _data_set_files(root)  # checked before any work, and again when writing
    check_output_paths({"--out": args.out}, inputs=protected, overwrite=args.overwrite)
    refs = load_refs(root / name / REFS_FILE)
    names = _category_names(root, name)
    built = splits.build_weak_split(refs, names, args.accurate_ratio, args.seed)
    weak = splits.weak_ids_of(built, names)
    out = write_file(
        args.out, refs_bytes(built), name="--out", overwrite=args.overwrite, inputs=protected
    )
    print(f"wrote {out}: accurate ratio {args.accurate_ratio}, seed {args.seed}")
    print(splits.format_counts(splits.split_counts(built, weak, names)))
    return 0
