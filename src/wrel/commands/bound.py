"""``wrel bound``: the mixed-training bound of docs/theory.md, measured on `wrel bench` runs.

- ``wrel bound --records DIR``: from committed records and traces alone (seconds).
- ``wrel bound --runs DIR --data data``: from run folders (re-scores train sets; slow).
- ``wrel bound predict``: a prediction file for the cells not yet run.
- ``wrel bound check``: scores a prediction file against records that arrived later.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wrel.core.outfiles import StagedOutputs, check_output_paths
from wrel.studies.bound import (
    bound_markdown,
    check_bound_paths,
    load_traces,
    measure_bound,
    write_bound,
)
from wrel.studies.bound_check import changed_inputs, check_markdown, check_prediction
from wrel.studies.bound_predict import EPS_SOURCES, predict_cells
from wrel.studies.bound_records import bound_from_records, records_bound_markdown
from wrel.studies.runner import code_version, load_records

_EPILOG = """examples:
  wrel bound --records docs/results/ambiguous --out /tmp/bound
  wrel bound predict --records docs/results/rrsisd --eps-source subsample \\
      --out docs/results/rrsisd/bound-prediction-subsample.json
  (commit the prediction, run the cells it predicts, commit their records, then)
  wrel bound check --prediction docs/results/rrsisd/bound-prediction-subsample.json \\
      --records docs/results/rrsisd --out docs/results/rrsisd/bound-check-subsample.md"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel bound`` and its ``predict`` / ``check`` actions."""
    p = subparsers.add_parser(
        "bound",
        help="check R(h_mix) - R(h*) <= 2(1-rho)Delta + 2eps_n on benchmark runs; predict, check",
        description=(
            "With --records: every term of the bound from a bench folder's committed records "
            "and traces alone (Delta over traced val checkpoints, Gamma at the chosen "
            "checkpoints, eps from the accurate-only learning curve); writes bound.json and "
            "bound.md to --out. With --runs/--data: the earlier estimator that re-scores the "
            "runs' train sets from run folders (slow; adds the bank's effective Delta). "
            "`predict` and `check` turn the bound into a prediction scored later. "
            "See docs/theory.md."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--records", help="a bench folder with runs/*.json and traces/*.jsonl")
    source.add_argument("--runs", help="a wrel bench --out folder whose run folders still exist")
    p.add_argument("--data", default="data", help="with --runs: the data root the runs used")
    p.add_argument("--seed", type=int, help="which seed's runs (default: the first with Full)")
    p.add_argument("--n-train", type=int, help="full train size (default: from Full's curve)")
    p.add_argument("--device", default="cpu", help="with --runs: cpu, cuda, cuda:N")
    p.add_argument("--out", help="output folder (default: --records or --runs)")
    p.add_argument("--overwrite", action="store_true", help="replace existing bound.json/md")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", metavar="{predict,check}")
    _add_predict(actions)
    _add_check(actions)


def _add_predict(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "predict",
        help="write a prediction file for the cells not yet run",
        description=(
            "For every (method, ratio, seed) cell of Naive-WREL and Only-Accurate not in "
            "--records: an interval for its test gap to Full (theorem with proxies), a point "
            "estimate, and the criterion's call (mixing beats discarding?). eps is fitted on the "
            "accurate-only runs with the predicted ratio left out. The file names the commit "
            "and every record file (sha256) used. Commit it before the runs it predicts."
        ),
    )
    p.add_argument("--records", required=True, help="the bench folder of the runs that exist")
    p.add_argument("--out", required=True, help="the prediction file to write (.json)")
    p.add_argument("--ratios", default="0.1,0.3,0.5", help="ratios of the grid (comma list)")
    p.add_argument("--seeds", help="seeds of the grid (default: every seed with a record)")
    p.add_argument("--n-train", type=int, help="full train size (default: from Full's curve)")
    p.add_argument("--min-sizes", type=int, default=3, help="train sizes eps must be fitted on")
    p.add_argument(
        "--eps-source",
        choices=sorted(EPS_SOURCES),
        default="learning-curve",
        help="the eps proxy (docs/theory.md section 9)",
    )
    p.add_argument(
        "--hold-out",
        type=float,
        action="append",
        default=[],
        help="ignore the records at this ratio (a retrospective demonstration, labelled so)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run_predict)


def _add_check(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "check",
        help="score a prediction file against the records that arrived",
        description=(
            "For every predicted cell with a record now: inside or outside the interval, the "
            "error of the point estimate, and whether the mixing call was right. Writes a "
            "markdown report (a miss is reported as a miss)."
        ),
    )
    p.add_argument("--prediction", required=True, help="a file written by `wrel bound predict`")
    p.add_argument("--records", required=True, help="the bench folder with the new records")
    p.add_argument("--out", help="markdown report (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run_check)


def _load(folder: str) -> tuple[list, dict]:
    records = load_records(folder)
    if not records:
        raise FileNotFoundError(f"no run records under {folder}/runs; run `wrel bench` first")
    return records, load_traces(folder, [r["name"] for r in records])


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write the files."""
    if args.records is None and args.runs is None:
        raise ValueError("give --records DIR (committed records) or --runs DIR (run folders)")
    if args.runs is not None:
        check_bound_paths(args.out or args.runs, args.overwrite)  # before minutes of measuring
        records, traces = _load(args.runs)
        result = measure_bound(records, args.data, traces=traces, seed=args.seed,
                               device=args.device)  # fmt: skip
        print(bound_markdown(result))
        paths = write_bound(result, args.out or args.runs, overwrite=args.overwrite)
        print("written: " + ", ".join(str(p) for p in paths.values()))
        return 0
    out = Path(args.out or args.records)
    targets = check_output_paths(
        {"bound.json": out / "bound.json", "bound.md": out / "bound.md"},
        overwrite=args.overwrite,
    )
    records, traces = _load(args.records)
    result = bound_from_records(records, traces, seed=args.seed, n_train=args.n_train)
    text = records_bound_markdown(result)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    with StagedOutputs() as staged:
        staged.temp(targets["bound.json"]).write_text(json.dumps(result, indent=1) + "\n")
        staged.temp(targets["bound.md"]).write_text(
            "# The bound on the benchmark records\n\n" + text
        )
    print("written: " + ", ".join(str(p) for p in targets.values()))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Write the prediction file."""
    target = check_output_paths(
        {"--out": args.out}, suffixes={"--out": (".json",)}, overwrite=args.overwrite
    )["--out"]
    records, traces = _load(args.records)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    prediction = predict_cells(
        records,
        traces,
        records_dir=args.records,
        ratios=[float(r) for r in args.ratios.split(",")],
        seeds=seeds,
        n_train=args.n_train,
        hold_out=args.hold_out,
        min_sizes=args.min_sizes,
        eps_source=args.eps_source,
        code=code_version(),
    )
    with StagedOutputs() as staged:
        staged.temp(target).write_text(json.dumps(prediction, indent=1) + "\n")
    print(f"{len(prediction['cells'])} cells, {len(prediction['calls'])} calls -> {target}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Score the prediction file; print and write the report."""
    targets = check_output_paths(
        {"--out": args.out}, suffixes={"--out": (".md",)}, overwrite=args.overwrite
    )
    path = Path(args.prediction)
    if not path.is_file():
        raise FileNotFoundError(f"--prediction {path} does not exist; write it with predict")
    prediction = json.loads(path.read_text())
    records, _ = _load(args.records)
    result = check_prediction(prediction, records)
    changed = changed_inputs(prediction, args.records)
    text = check_markdown(
        result, prediction_file=str(path), records_dir=args.records, changed=changed
    )
    print(text)
    if "--out" in targets:
        with StagedOutputs() as staged:
            staged.temp(targets["--out"]).write_text(text)
        print(f"written: {targets['--out']}")
    return 0
