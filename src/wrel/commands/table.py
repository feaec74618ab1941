"""``wrel table DIR [DIR ...]``: the result table in the paper's layout across bench folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from wrel.core.outfiles import check_output_paths, write_file
from wrel.core.paths import require_folder
from wrel.studies.regimes import (
    PAPER_LABEL,
    SHAPE_TARGETS,
    regimes_table,
    shape_checks,
    shape_table,
    version_lines,
)
from wrel.studies.runner import load_records, mixed_cells

_EPILOG = """example (the README's table):
  wrel table docs/results/cpu docs/results/ambiguous \\
      --labels "embedded, rrsisd regime, v9b" "embedded, ambiguous regime" --out table.md
  (earlier versions of the rrsisd regime: docs/results/cpu-v9a, docs/results/cpu-v8b,
  docs/results/cpu-v7)

  wrel table docs/results/cpu --check   # do its baselines have RRSIS-D's shape?

exit status: 0; 1 with --check when a check fails on a split (val or test)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel table``."""
    p = subparsers.add_parser(
        "table",
        help="the result table in the paper's layout, several bench folders side by side",
        description=(
            "Read the run records (runs/*.json) of one or more `wrel bench --out` folders, one "
            "benchmark regime each, and print one table in the paper's layout: per accurate "
            "ratio, a row for RRSIS-D as the LRB-WREL paper reports it (RMSIN) and a row per "
            "folder, with Only-Accurate, Naive-WREL, LRB-WREL (paper recipe) and retrieved "
            "expressions; then Full. Cells: test mIoU (or oIoU) mean ± std over the seeds "
            "present (n) and the share of the Only-Accurate -> Full gap closed, per seed. A "
            "dagger marks a cell with a run short of its plateau. Below the table: the code "
            "and data versions each folder's records name. Nothing is trained or scored."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folders", nargs="+", metavar="DIR", help="wrel bench --out folders")
    p.add_argument(
        "--labels", nargs="+", metavar="LABEL", help="one row label per folder (default: its name)"
    )
    p.add_argument(
        "--metric",
        default="mIoU",
        choices=("mIoU", "oIoU", "both"),
        help="test metric; both: oIoU / mIoU as the paper's table, the gap share on mIoU",
    )
    p.add_argument("--no-paper", action="store_true", help=f"leave out the row {PAPER_LABEL!r}")
    share, ratio, full = (SHAPE_TARGETS[k] for k in ("share", "oa_over_full", "full"))
    p.add_argument(
        "--check",
        action="store_true",
        help=(
            "also check each folder's baselines against RRSIS-D's shape, on val and test mIoU: "
            "Naive-WREL above Only-Accurate at every ratio; at 10 %%, Full above Naive-WREL, "
            f"Naive-WREL closing {share[0]:.0f}-{share[1]:.0f} %% of the Only-Accurate -> Full "
            f"gap, Only-Accurate / Full {ratio[0]}-{ratio[1]}, Full {full[0]:.0f}-{full[1]:.0f}; "
            "every baseline run at its plateau. Paired by seed; from two seeds by the report's "
            "rule for 'above', one seed by its sign (and says so). LRB-WREL is never checked"
        ),
    )
    p.add_argument("--out", help="also write the table (markdown) here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--allow-mixed-versions",
        action="store_true",
        help="accept a folder whose cells mix code or data versions (the table then lists them)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    labels = args.labels or [Path(f).name or str(f) for f in args.folders]
    if len(labels) != len(args.folders):
        raise ValueError(f"--labels gives {len(labels)} labels for {len(args.folders)} folders")
    if args.out:
        check_output_paths({"--out": args.out}, suffixes={"--out": (".md",)},
                           overwrite=args.overwrite)  # fmt: skip
    folders, mixed_notes = [], []
    for label, folder in zip(labels, args.folders, strict=True):
        path = require_folder(folder, "bench folder", "give a wrel bench --out folder")
        records = load_records(path)
        if not records:
            raise ValueError(f"bench folder {path} holds no run records (runs/*.json)")
        mixed = mixed_cells(records)
        if mixed and not args.allow_mixed_versions:
            cell, versions = next(iter(mixed.items()))
            raise ValueError(
                f"{len(mixed)} cell(s) of {path} mix code or data versions (e.g. {cell}: "
                f"{'; '.join(versions)}); pass --allow-mixed-versions to list them under the table"
            )
        mixed_notes += [f"- {label}, {cell}: {'; '.join(v)}" for cell, v in mixed.items()]
        folders.append((label, records))
    text = [
        f"Test {'oIoU / mIoU' if args.metric == 'both' else args.metric} (%), checkpoint chosen on val, test scored once; mean ± std over "
        "the seeds present (n); gap: the share of the Only-Accurate -> Full gap closed.",
        "",
        regimes_table(folders, metric=args.metric, paper=not args.no_paper),
        "",
        "Versions (code commit / generator settings hash) the records name:",
        "",
        *version_lines(folders),
    ]
    if mixed_notes:
        text += ["", "Cells that mix versions (--allow-mixed-versions):", "", *mixed_notes]
    failed = []
    if args.check:
        for label, records in folders:
            checks = shape_checks(records)
            failed += [f"{label}: {c.name}" for c in checks if c.failed]
            text += ["", f"Baselines of {label} against RRSIS-D's shape:", "", shape_table(checks)]
    text.append("")
    markdown = "\n".join(text)
    print(markdown, end="")
    if args.out:
        write_file(args.out, markdown, name="--out", overwrite=args.overwrite, suffixes=(".md",))
        print(f"written: {args.out}")
    if failed:
        print(f"{len(failed)} check(s) failed: " + "; ".join(failed))
        return 1
    return 0
