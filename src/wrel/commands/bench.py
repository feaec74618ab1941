"""``wrel bench``: the WREL result table on the embedded benchmark (or any refer-format data)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from wrel.commands import add_set_argument
from wrel.data.splits import split_file_info
from wrel.engine.experiment import METHOD_PRESETS
from wrel.engine.shared_prefix import find_shared_prefix
from wrel.engine.state import find_resume_dir
from wrel.studies.profiles import PROFILES, get_profile
from wrel.studies.runner import (
    build_run_config,
    check_report_paths,
    ensure_benchmark_data,
    load_records,
    plan_runs,
    record_differences,
    run_benchmark,
    stale_records,
    write_report,
)

log = logging.getLogger(__name__)


def _comma_list(cast: type, what: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list:
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None

    return parse


def _stage_epochs(text: str) -> dict[str, int]:
    """``teacher-warmup=3,joint=6`` -> ``{"teacher-warmup": 3, "joint": 6}`` (known stages)."""

    known = {s["name"] for preset in METHOD_PRESETS.values() for s in preset["stages"]}
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in known or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"expected STAGE=EPOCHS (a positive integer) with STAGE one of {sorted(known)}, "
                f"got {item!r}"
            )
        out[name] = int(value)
    return out


def _status(spec, done, profile, args, runs_dir: Path) -> str:  # type: ignore[no-untyped-def]
    """What ``wrel bench`` would do with one run: keep, refuse as stale, resume or train (from
    the kept stages of a run already under ``runs_dir``, when one shares them)."""
    cfg = build_run_config(
        profile, spec, args.data or profile.data_dir, runs_dir, args.assignments,
        args.split_file,
    )  # fmt: skip
    if spec.name in done:
        diffs = record_differences(done[spec.name], cfg)
        return f"stale ({'; '.join(diffs[:3])})" if diffs else "done"
    if find_resume_dir(runs_dir / spec.name / "checkpoints" / "last") is not None:
        return f"to resume ({runs_dir / spec.name})"
    if (runs_dir / spec.name / "final_metrics.json").is_file():
        return f"finished, to record from {runs_dir / spec.name / 'final_metrics.json'}"
    if (shared := find_shared_prefix(cfg, runs_dir)) is not None:
        donor, count = shared
        return f"to train after the first {count} stage(s) of {donor.name} (shared prefix)"
    return "to train"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel bench``."""

    profiles = "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values())
    p = subparsers.add_parser(
        "bench",
        help="run the methods x accurate ratios x seeds table (resumable)",
        description=(
            "Train and test Only-Accurate, Naive-WREL and LRB-WREL at each accurate ratio, plus "
            "Full, for each seed; model selection on val, test scored once per run. Writes one "
            "JSON record per run, results.json, results.md (mean ± std over seeds, share of the "
            "Only-Accurate -> Full gap closed, wall times) and plots to --out. Re-running skips "
            "finished runs and resumes a killed one. Without --data the profile's synthetic "
            f"benchmark is rendered (once) into its data folder. Profiles: {profiles}."
        ),
        epilog=(
            "examples: wrel bench --profile quick | wrel bench --profile full --out "
            "docs/results/full | wrel bench --data /data/rrsisd --split-file "
            "refs(unc)-90-all.p --methods naive,lrb --set data.image_size=480"
        ),
    )
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="settings")
    p.add_argument(
        "--data",
        help="refer-format data root (default: the profile's synthetic benchmark, rendered "
        "if missing)",
    )
    p.add_argument(
        "--split-file",
        help="weak-split refs file (published, or from `wrel data split`): every method but "
        "Full trains on it, at the file's own accurate ratio (not with --ratios)",
    )
    p.add_argument("--methods", type=lambda t: t.split(","), help="comma list (default: all)")
    p.add_argument(
        "--ratios", type=_comma_list(float, "numbers"), help="comma list of accurate ratios"
    )
    p.add_argument("--seeds", type=_comma_list(int, "integers"), help="comma list of seeds")
    p.add_argument(
        "--epochs",
        type=_stage_epochs,
        default={},
        help="replace the profile's epochs of some stages, e.g. teacher-warmup=3 (stages on the "
        "accurate share still run epochs / ratio of them)",
    )
    p.add_argument("--out", help="records, tables and plots (default: docs/results/<profile>)")
    p.add_argument("--runs-dir", help="run folders (default: runs/bench-<profile>)")
    add_set_argument(p, "experiment override for every run, e.g. train.device=cuda")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs with what would happen to each (done, stale, to resume, to train) "
        "and exit",
    )
    p.add_argument("--report-only", action="store_true", help="rewrite the report and exit")
    p.add_argument("--allow-mixed-versions", action="store_true",
                   help="let a table cell hold runs of different code commits or benchmark "
                   "settings (refused by default); the report lists every such cell")  # fmt: skip
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace report files (results.md, ...) in an --out folder that holds no run "
        "records; a folder with records is wrel bench's own and its reports are rewritten",
    )
    p.add_argument("--no-progress", action="store_true", help="hide per-run progress bars")
    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="a finished record made with other settings than the profile now gives (changed "
        "epochs, say) is an error by default; with this flag it is moved aside (into "
        "<out>/runs/stale/, with its run folder renamed) and the run trains again",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan, render data if needed, run what is not finished, report."""

    profile = get_profile(args.profile)
    if args.epochs:
        profile = profile.with_epochs(args.epochs)
    out = args.out or f"docs/results/{profile.name}"
    if not args.dry_run:  # before any run: hours of training must not end in a refusal
        check_report_paths(out, overwrite=args.overwrite)
    if args.report_only:
        for name, diffs in stale_records(profile, out, args.data or profile.data_dir).items():
            print(
                f"warning: {name} was made with other settings than profile {profile.name} now "
                f"gives it ({'; '.join(diffs[:3])}); its numbers are in the report"
            )
        paths = write_report(
            out, title=f"wrel bench, profile {profile.name}",
            allow_mixed_versions=args.allow_mixed_versions,
        )  # fmt: skip
        print("\n".join(f"{k}: {v}" for k, v in paths.items()))
        return 0
    ratios = args.ratios or list(profile.ratios)
    if args.split_file:
        if args.ratios:
            raise ValueError(
                "pass either --split-file or --ratios, not both: a split file fixes which "
                "expressions are weak, so its ratio is read from the file"
            )
        info = split_file_info(args.split_file)
        print(info.describe() + "; Full runs on the data set's own refs (all accurate)")
        ratios = [round(info.accurate_ratio, 4)]  # names and records carry the file's ratio
    specs = plan_runs(args.methods or list(profile.methods), ratios, args.seeds or profile.seeds)
    if args.dry_run:
        runs_dir = Path(args.runs_dir or f"runs/bench-{profile.name}")
        done = {r["name"]: r for r in load_records(out)}
        for spec in specs:
            print(f"{spec.name:<28} {_status(spec, done, profile, args, runs_dir)}")
        return 0
    data_root = args.data or ensure_benchmark_data(profile, profile.data_dir)
    run_benchmark(
        profile,
        specs,
        data_root=data_root,
        out_dir=out,
        runs_dir=args.runs_dir or f"runs/bench-{profile.name}",
        extra_sets=args.assignments,
        split_file=args.split_file,
        progress=not args.no_progress,
        rerun_stale=args.rerun_stale,
        allow_mixed_versions=args.allow_mixed_versions,
    )
    print(f"report: {out}/results.md")
    return 0
