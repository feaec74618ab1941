"""``wrel bank decode RUN``: read a run's reference bank as words and score them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wrel.core.bounded import load_json
from wrel.core.outfiles import check_output_paths, write_file
from wrel.core.paths import require_folder
from wrel.core.readfiles import folder_files
from wrel.studies.bank_decode import (
    decode_bank,
    decode_expressions,
    expression_summary_table,
    summary_table,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel bank`` and its ``decode`` subcommand."""
    p = subparsers.add_parser(
        "bank",
        help="inspect a trained reference bank (decode its prompts into words)",
        description="Inspect the reference bank of an LRB-WREL run.",
    )
    sub = p.add_subparsers(dest="bank_command", metavar="SUBCOMMAND")
    d = sub.add_parser(
        "decode",
        help="nearest words of every prompt slot, scored against the benchmark's attributes",
        description=(
            "Load RUN/bank.safetensors and the word-embedding table of RUN/checkpoints/best; "
            "for every weak training sample (bank row) find the k nearest whole-word tokens "
            "(cosine; special, [unused], ## subword and non-alphabetic tokens are skipped) of "
            "each prompt slot; a bank with its own vocabulary (vocab bank, nearest projection) "
            "is decoded within it. For a vocabulary-anchored bank the top-k words of each slot's "
            "mixture are listed too. On the embedded benchmark (<data>/synthetic/"
            "attributes.json) the words are scored against what the class name left out: "
            "position words (3x3 cell or extreme), size words, colour words and, for a "
            "relation, the other class's name; a sample counts as recovered for a kind when "
            "any of its P x k words names it. The chance baseline is the exact expected "
            "rate of k distinct random words per slot from the same vocabulary. Prints the first "
            "samples' words and a summary table; writes everything to a JSON report. A run of "
            "the retrieve method has an expression bank instead (no bank.safetensors): its "
            "chosen expressions are listed and scored the same way, against a random candidate "
            "of the same sample (read from RUN/expression_bank, or RUN/checkpoints/last "
            "while the run trains)."
        ),
        epilog=(
            "example: wrel bank decode runs/lrb --k 5 --show 5   "
            "(report: runs/lrb/bank_decode.json)"
        ),
    )
    d.add_argument("run", help="run folder (holds bank.safetensors and checkpoints/best)")
    d.add_argument("--k", type=int, default=5, help="nearest words per prompt slot (1-100)")
    d.add_argument(
        "--data",
        help="data root holding synthetic/attributes.json (default: the run's data.root)",
    )
    d.add_argument("--model", help="model folder for the word table (default: RUN's best)")
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    d.add_argument(
        "--show",
        type=int,
        default=10,
        help="samples whose words are printed (default 10; -1: all; the JSON has every one)",
    )
    d.add_argument(
        "--out",
        help="JSON report path (default: RUN/bank_decode.json; an existing file needs --overwrite)",
    )
    d.add_argument(
        "--summary",
        help="also write a small JSON here: the report without its per-sample entries, plus "
        "the --show samples under samples_shown (the full report of a 10,000-row bank is tens "
        "of MB)",
    )
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out / --summary file (never a file of the run or model)",
    )
    d.set_defaults(func=run_decode)
    p.set_defaults(func=lambda args: _no_subcommand(p))


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


#: Files of a run folder that decoding, resuming or evaluating reads: never written over.
RUN_FILES = (
    "config.json",
    "bank.safetensors",
    "expressions.json",
    "metrics.jsonl",
    "final_metrics.json",
    "paths.json",
    "risk_trace.jsonl",
)


def _protected(args: argparse.Namespace) -> dict[Path, str]:
    """The run's and the model's files, which no report may replace."""
    run = Path(args.run)
    files = [run / name for name in RUN_FILES]
    files += folder_files(run / "checkpoints") + folder_files(args.model)
    return {f: f"a file of the run or model the report reads ({f})" for f in files}


def _check_reports(args: argparse.Namespace, out: Path) -> None:
    """Refuse bad --out / --summary paths before anything is loaded."""
    check_output_paths(
        {"--out": out, "--summary": args.summary},
        inputs=_protected(args),
        overwrite=args.overwrite,
    )


def _write_reports(
    report: dict[str, Any], shown: list[dict[str, Any]], out: Path, args: argparse.Namespace
) -> None:
    """The full JSON report, and with ``--summary`` the report without its per-sample entries
    plus the samples shown (checked again, then written atomically)."""
    protected = _protected(args)
    text = json.dumps(report, indent=1) + "\n"
    write_file(out, text, name="--out", overwrite=args.overwrite, inputs=protected)
    print(f"written: {out}")
    if args.summary:
        summary = {k: v for k, v in report.items() if k != "samples"}
        summary["samples_shown"] = shown
        text = json.dumps(summary, indent=1) + "\n"
        write_file(args.summary, text, name="--summary", overwrite=args.overwrite, inputs=protected)
        print(f"written: {args.summary}")


def _has_retrieve_stage(run: Path) -> bool:
    try:
        config = load_json(run / "config.json", "run config")
    except (OSError, ValueError):
        return False
    return any(
        isinstance(s, dict) and s.get("kind") == "retrieve" for s in config.get("stages", [])
    )


def _decode_expressions(args: argparse.Namespace, out: Path) -> int:
    """``wrel bank decode`` on a retrieve run: its chosen expressions, scored."""
    report = decode_expressions(args.run, data_root=args.data)
    shown = report["samples"] if args.show == -1 else report["samples"][: args.show]
    for entry in shown:
        print(
            f"sample {entry['sample_id']} ({entry.get('class_name')}: "
            f"{entry.get('expression')!r}) -> {entry.get('chosen')!r}"
        )
    print(
        f"\n{report['rows']} weak samples, {report['candidates']} candidates each; "
        f"{100 * (report['kept_class_name'] or 0):.1f} % kept the bare class name"
    )
    print(expression_summary_table(report))
    _write_reports(report, shown, out, args)
    return 0


def run_decode(args: argparse.Namespace) -> int:
    """Decode, print, write the report."""

    if args.show < -1:
        raise ValueError(f"--show must be -1 (all) or >= 0, got {args.show}")
    require_folder(args.run, "run folder")  # before its report paths are named in errors
    out = Path(args.out) if args.out else Path(args.run) / "bank_decode.json"
    _check_reports(args, out)
    run = Path(args.run)
    if not (run / "bank.safetensors").is_file() and _has_retrieve_stage(run):
        return _decode_expressions(args, out)
    report = decode_bank(
        args.run,
        k=args.k,
        data_root=args.data,
        model_dir=args.model,
        device=args.device,
    )
    shown = report["samples"] if args.show == -1 else report["samples"][: args.show]
    for entry in shown:
        head = f"sample {entry['sample_id']}"
        if entry.get("class_name"):
            head += f" ({entry['class_name']}: {entry.get('expression')!r})"
        print(head)
        for p, words in enumerate(entry["nearest"]):
            mix = ""
            if "mixture" in entry:
                mix = "   mixture: " + ", ".join(f"{w} {x:.2f}" for w, x in entry["mixture"][p])
            print(f"  slot {p:2d}: {', '.join(words)}{mix}")
    print(
        f"\n{report['num_rows']} rows x {report['num_prompts']} slots, k={report['k']}, "
        f"{report['vocabulary_size']} whole-word tokens of the {report['vocabulary']} "
        f"vocabulary ({report['parametrization']} bank)"
    )
    print(summary_table(report))
    _write_reports(report, shown, out, args)
    return 0
