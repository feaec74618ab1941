"""Where the Only-Accurate -> Full gap lies: val IoU per kind of attribute an expression names.

Reads the per-sample val traces the bench writes (``RECORDS/traces/<run>.jsonl``: one line per
traced checkpoint, each val sample's ``1 - IoU`` with its expression and with its bare class
name) and the generator's ``attributes.json``. It groups the val samples by what their
expression names (position, size, colour, relation to another object; a sample can name
several) and by whether the class name alone is ambiguous (two or more objects of the class in
the image), and reports per method, mean over the seeds present:

- val mIoU with the expression, per group;
- the share of the Only-Accurate -> Full gap it closes per group (the seeds' means);
- the reading gain: mIoU with the expression minus with the class name (how much of the
  group's words the model uses).

Per run it takes the traced checkpoint with the lowest mean val loss (the traces hold epoch
ends, so this is the val choice among them, not always the run's chosen checkpoint). It reads
val only; no test sample and no training::

    python research/attribute_gap.py docs/results/ambiguous --data data --ratio 0.1 \\
        --json docs/results/ambiguous/attribute_gap.json --md docs/results/ambiguous/attribute_gap.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from wrel.studies.report import METHOD_LABELS  # the report's method order

#: attributes.json keys -> the kind of attribute they name ("size": a superlative that singles
#: the target out, "scale": the size word the ``rrsisd`` regime adds, true of the target against
#: its class; both name a size, as ``wrel.data.expression_mix`` counts them)
KIND_OF = {
    "position": "position",
    "extreme": "position",
    "size": "size",
    "scale": "size",
    "colour": "colour",
    "next_to": "relation",
}
GROUPS = ("all", "ambiguous", "unique", "position", "size", "colour", "relation")


def sample_groups(attributes: dict[str, Any]) -> dict[int, set[str]]:
    """Sample id -> the groups it belongs to."""
    out: dict[int, set[str]] = {}
    for key, entry in attributes.items():
        groups = {"all"}
        groups.add("ambiguous" if int(entry.get("num_same_class", 1)) >= 2 else "unique")
        groups |= {KIND_OF[k] for k in entry.get("attributes") or {} if k in KIND_OF}
        out[int(key)] = groups
    return out


def best_trace(path: Path) -> dict[str, Any] | None:
    """The traced checkpoint with the lowest mean val loss (ties: the later one)."""
    best = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if best is None or entry["risk"] <= best["risk"]:
            best = entry
    return best


def group_miou(trace: dict[str, Any], groups: dict[int, set[str]]) -> dict[str, dict[str, Any]]:
    """Per group: samples, mIoU with the expression and with the class name (percent)."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for sid, loss, loss_cn in zip(
        trace["sample_ids"], trace["loss"], trace["loss_class_name"], strict=True
    ):
        for group in groups.get(int(sid), ()):
            acc = sums[group]
            acc[0] += 1
            acc[1] += 1.0 - float(loss)
            acc[2] += 1.0 - float(loss_cn)
    return {
        g: {"samples": int(n), "expression": 100 * e / n, "class_name": 100 * c / n}
        for g, (n, e, c) in sums.items()
        if n
    }


def collect(
    records_dir: Path,
    groups: dict[int, set[str]],
    ratio: float,
    seeds: set[int] | None = None,
) -> dict[str, dict[int, dict[str, dict[str, Any]]]]:
    """method -> seed -> group -> figures, for the runs at ``ratio`` (and Full), of ``seeds``
    (all when None)."""
    out: dict[str, dict[int, dict[str, dict[str, Any]]]] = defaultdict(dict)
    for record_path in sorted((records_dir / "runs").glob("*.json")):
        record = json.loads(record_path.read_text(encoding="utf-8"))
        method = record["method"]
        if method != "full" and abs(float(record["accurate_ratio"]) - ratio) > 1e-6:
            continue
        if seeds is not None and int(record["seed"]) not in seeds:
            continue
        trace_path = records_dir / "traces" / f"{record_path.stem}.jsonl"
        if not trace_path.is_file():
            continue
        trace = best_trace(trace_path)
        if trace is not None:
            out[method][int(record["seed"])] = group_miou(trace, groups)
    return out


def summary(
    data: dict[str, dict[int, dict[str, dict[str, Any]]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """method -> group -> mean over seeds of mIoU with the expression, the reading gain and
    the share of the Only-Accurate -> Full gap (of the seed means)."""
    means: dict[str, dict[str, dict[str, Any]]] = {}
    for method, seeds in data.items():
        means[method] = {}
        for group in GROUPS:
            rows = [s[group] for s in seeds.values() if group in s]
            if not rows:
                continue
            expr = sum(r["expression"] for r in rows) / len(rows)
            name = sum(r["class_name"] for r in rows) / len(rows)
            means[method][group] = {
                "seeds": sorted(seeds),
                "samples": rows[0]["samples"],
                "mIoU": expr,
                "reading_gain": expr - name,
            }
    low, high = means.get("only-accurate", {}), means.get("full", {})
    for method in means:
        for group, cell in means[method].items():
            if group in low and group in high and high[group]["mIoU"] > low[group]["mIoU"]:
                cell["gap_share"] = (cell["mIoU"] - low[group]["mIoU"]) / (
                    high[group]["mIoU"] - low[group]["mIoU"]
                )
    return means


def markdown(means: dict[str, dict[str, dict[str, Any]]], ratio: float) -> str:
    methods = [m for m in METHOD_LABELS if m in means] + sorted(set(means) - set(METHOD_LABELS))
    counts = next(iter(means.values()))
    head = " | ".join(f"{g} ({counts[g]['samples']})" for g in GROUPS if g in counts)
    lines = [
        f"# Val mIoU by what the expression names ({ratio:.0%} accurate; Full at 100 %)",
        "",
        "Cells: val mIoU with the expression / share of the Only-Accurate -> Full gap closed "
        "in that group / reading gain (mIoU with the expression minus with the class name); "
        "mean over the seeds listed. Written by `research/attribute_gap.py` from the val "
        "traces; the traced checkpoint with the lowest val loss per run.",
        "",
        f"| method (seeds) | {head} |",
        "|---" * (1 + sum(g in counts for g in GROUPS)) + "|",
    ]
    for method in methods:
        cells = []
        for group in GROUPS:
            if group not in counts:
                continue
            cell = means[method].get(group)
            if cell is None:
                cells.append("")
                continue
            share = cell.get("gap_share")
            share_text = f"{100 * share:.0f} %" if share is not None else "-"
            cells.append(f"{cell['mIoU']:.1f} / {share_text} / {cell['reading_gain']:+.1f}")
        seeds = ",".join(str(s) for s in next(iter(means[method].values()))["seeds"])
        lines.append(f"| {method} ({seeds}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="bench output folder (runs/, traces/)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="data root")
    parser.add_argument("--name", default="synthetic", help="data set folder under --data")
    parser.add_argument("--ratio", type=float, default=0.1, help="accurate ratio of the runs")
    parser.add_argument(
        "--seeds", help="comma list: only these seeds (compare methods on the same seeds)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--md", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    attributes_path = args.data / args.name / "attributes.json"
    if not attributes_path.is_file():
        parser.error(f"{attributes_path} not found: the generator's attributes (wrel data synth)")
    if not (args.records / "runs").is_dir():
        parser.error(f"{args.records}/runs not found: a wrel bench output folder")
    groups = sample_groups(json.loads(attributes_path.read_text(encoding="utf-8")))
    try:
        seeds = {int(x) for x in args.seeds.split(",")} if args.seeds else None
    except ValueError:
        parser.error(f"--seeds must be a comma list of integers, got {args.seeds!r}")
    means = summary(collect(args.records, groups, args.ratio, seeds))
    if not means:
        parser.error(f"no run at ratio {args.ratio} with a trace under {args.records}")
    text = markdown(means, args.ratio)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(means, indent=1, sort_keys=True) + "\n")
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
