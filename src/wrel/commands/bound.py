"""``wrel bound``: the mixed-training bound of docs/theory.md, measured on `wrel bench` runs."""

from __future__ import annotations

import argparse

from wrel.studies.bound import (
    bound_markdown,
    check_bound_paths,
    load_traces,
    measure_bound,
    write_bound,
)
from wrel.studies.runner import load_records


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel bound``."""
    p = subparsers.add_parser(
        "bound",
        help="check R(h_mix) - R(h*) <= 2(1-rho)Delta + 2eps_n on benchmark runs",
        description=(
            "For each accurate ratio of a `wrel bench` result folder, print the measured test "
            "gap between Naive-WREL (and LRB-WREL) and Full, the bound's terms (Delta estimated "
            "on val over every checkpoint the runs visited, from the traces `wrel bench` keeps "
            "under <runs>/traces; a run without one contributes its best checkpoint; eps_n "
            "fitted from the train/val gaps of "
            "Only-Accurate and Full), the bound and whether the gap lies under it; plus the "
            "effective Delta with the reference bank on the weak training samples of each "
            "LRB-WREL run. Writes bound.json, bound.md and bound.png next to the records. "
            "See docs/theory.md."
        ),
        epilog="example: wrel bound --runs docs/results/cpu --data data",
    )
    p.add_argument("--runs", required=True, help="a wrel bench --out folder (holds runs/*.json)")
    p.add_argument("--data", default="data", help="the data root the runs trained on")
    p.add_argument("--seed", type=int, help="which seed's runs (default: the first with Full)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--out", help="output folder (default: --runs)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing bound.json/.md/.png files"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write the files."""

    out = args.out or args.runs
    check_bound_paths(out, args.overwrite)  # before minutes of measuring
    records = load_records(args.runs)
    if not records:
        raise FileNotFoundError(f"no run records under {args.runs}/runs; run `wrel bench` first")
    traces = load_traces(args.runs, [r["name"] for r in records])
    result = measure_bound(records, args.data, traces=traces, seed=args.seed, device=args.device)
    print(bound_markdown(result))
    paths = write_bound(result, out, overwrite=args.overwrite)
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
