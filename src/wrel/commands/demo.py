"""``wrel demo``: the main job. Render the embedded benchmark, train LRB-WREL at 10 %, test."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from wrel.commands import add_set_argument
from wrel.core.bounded import load_json
from wrel.engine.state import find_resume_dir
from wrel.engine.trainer import train
from wrel.studies.profiles import get_profile
from wrel.studies.runner import RunSpec, build_run_config, ensure_benchmark_data


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel demo``."""
    p = subparsers.add_parser(
        "demo",
        help="render the synthetic benchmark, train LRB-WREL (paper recipe) at 10%% accurate, "
        "evaluate on test",
        description=(
            "The main job, end to end with no download: render the embedded synthetic benchmark "
            "(15,000 images, calibrated to RRSIS-D, if --data does not hold it yet), train "
            "LRB-WREL as its authors ran it (the paper recipe, `lrb-paper`, scaled to the CPU "
            "profile) with 10 % accurate expressions with the 'demo' benchmark profile (the "
            "'full' profile's data and model, a shorter schedule: teacher warm-up, bank "
            "initialisation and joint training with the EMA teacher: the teacher one "
            "epoch-equivalent, the bank initialisation 40 % and the joint stage 60 % of one, "
            "their epochs visiting a random share of the samples), choose the checkpoint on val "
            "and score it once on test with the real expressions. Progress goes to stderr "
            "(a bar on a terminal, a line every 30 s otherwise). A killed demo resumes where it "
            "stopped when run again; a finished one prints its metrics (use --fresh to "
            "retrain). Budget: 15 minutes on an idle 2-core CPU (measured figure in README)."
        ),
    )
    p.add_argument("--data", default="data", help="data root (default: data)")
    p.add_argument("--out", default="runs", help="parent of the run folder (default: runs)")
    p.add_argument("--accurate-ratio", type=float, default=0.1, help="default: 0.1")
    p.add_argument("--method", default="lrb-paper",
                   help="default: lrb-paper (the paper recipe; any wrel train --method works)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run first")
    add_set_argument(p, "experiment override, e.g. train.device=cuda")
    p.set_defaults(func=run)


def _print_metrics(result: dict, elapsed: float | None) -> None:
    test = result["test"]
    keys = ["oIoU", "mIoU", "Prec@0.5", "Prec@0.6", "Prec@0.7", "Prec@0.8", "Prec@0.9"]
    print("\n" + " | ".join(f"{k:>8}" for k in keys))
    print(" | ".join(f"{test[k]:8.2f}" for k in keys))
    best = result.get("best") or {}
    print(
        f"\ntest split: {test.get('num_samples')} samples, metrics in %, protocol: "
        f"{(test.get('protocol') or {}).get('description', result.get('protocol'))}"
    )
    print(f"best checkpoint (on val): stage {best.get('stage')}, step {best.get('step')}")
    print(f"run folder: {result['run_dir']} (model: checkpoints/best, log: metrics.jsonl)")
    if elapsed is not None:
        print(f"wall time: {elapsed / 60:.1f} min")


def run(args: argparse.Namespace) -> int:
    """Render if needed, train (or resume), print test metrics."""

    start = time.perf_counter()
    profile = get_profile("demo")  # the full profile's data and model, a shorter schedule
    ensure_benchmark_data(profile, args.data)
    spec = RunSpec(args.method, 1.0 if args.method == "full" else args.accurate_ratio, args.seed)
    cfg = build_run_config(profile, spec, args.data, args.out, args.assignments)
    cfg.name = f"demo-{spec.name}"
    # one run: no other run starts from its stage ends (the bench profiles keep them)
    cfg.train.keep_stage_checkpoints = False
    run_dir = Path(args.out) / cfg.name
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    final = run_dir / "final_metrics.json"
    if final.is_file():
        print(f"{run_dir} is finished; its metrics follow (--fresh retrains).")
        _print_metrics(load_json(final, "final metrics"), None)
        return 0
    resume = find_resume_dir(run_dir / "checkpoints" / "last") is not None
    print(
        f"training {spec.method} at {spec.accurate_ratio:.0%} accurate on {args.data} "
        f"(profile demo{', resuming' if resume else ''}); run folder {run_dir}"
    )
    result = train(cfg, resume=resume)
    if "test" not in result:
        return 0
    _print_metrics(result, time.perf_counter() - start)
    return 0
