"""How much of what the class name leaves out a pool of retrieved expressions can say at all.

``retrieve`` (wrel.methods.retrieval) gives each weak training sample one of ``K`` accurate
training expressions of its category, drawn at random, or its bare class name. Whatever the
teacher's choice, the sample can only read words that one of its candidates holds. This script
measures that ceiling from the data alone (no model, no training, no val or test sample): for
each weak training sample, per kind of attribute its true expression names and the class name
leaves out (position, size, colour, relation; ``attributes.json`` of the embedded benchmark):

- ``chance``: the share of its candidates that name the kind (a random pick; the ``chance`` of
  ``wrel bank decode``);
- ``coverage``: whether **some** candidate names it, the best a perfect chooser could do;
- for ``any``, a candidate that names at least one of the sample's kinds; for ``every``, one
  candidate that names all of them (what a text needs to say everything the expression said).

Candidates are drawn as the retrieve stage draws them (``ExpressionBank.for_samples``: per
category without replacement), for each ``K`` of ``--candidates`` and for the whole category
pool (``all``), at each ratio and seed of the weak split::

    python research/pool_coverage.py --data data --ratios 0.1,0.3,0.5 --seeds 0,1,2 \\
        --json docs/results/ambiguous/pool_coverage.json --md docs/results/ambiguous/pool_coverage.md

Read against the decode of finished ``retrieve`` runs (``chosen`` there): the distance from
``chosen`` to ``coverage`` is the teacher's, the distance from ``coverage`` to 100 % is the
pool's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from wrel.data.dataset import load_samples
from wrel.methods.retrieval import ExpressionBank
from wrel.studies.bank_decode import KINDS, attribute_words, named_kinds

ROWS = (*KINDS, "any", "every")


def _comma(kind: type, what: str) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {what}, got {text!r}"
            ) from None

    return parse


def pool_hits(
    pool: list[str], kinds: list[dict[str, set[str]]], candidates: list[list[int]]
) -> dict[str, dict[str, float | int | None]]:
    """Per attribute kind (and ``any``, ``every``): samples, chance and coverage.

    ``kinds[i]`` maps each kind sample ``i`` leaves out to the words that name it;
    ``candidates[i]`` are pool indices (its candidates). A sample counts for a kind when it
    has that kind and at least one candidate; ``any`` and ``every`` count samples with at
    least one kind.
    """
    sums = {row: [0, 0.0, 0] for row in ROWS}  # samples, chance, covered
    for target, cands in zip(kinds, candidates, strict=True):
        if not target or not cands:
            continue
        named = [named_kinds(pool[j], target) for j in cands]  # per candidate: kind -> bool
        for kind in target:
            hits = [n[kind] for n in named]
            sums[kind][0] += 1
            sums[kind][1] += sum(hits) / len(hits)
            sums[kind][2] += any(hits)
        some = [any(n.values()) for n in named]
        every = [all(n.values()) for n in named]
        for row, hits in (("any", some), ("every", every)):
            sums[row][0] += 1
            sums[row][1] += sum(hits) / len(hits)
            sums[row][2] += any(hits)
    return {
        row: {
            "samples": n,
            "chance": chance / n if n else None,
            "coverage": covered / n if n else None,
        }
        for row, (n, chance, covered) in sums.items()
    }


def coverage_for(
    data: Path, ratio: float, seed: int, ks: list[int], attributes: dict[str, Any]
) -> dict[str, Any]:
    """Coverage per ``K`` (and ``all``) for one weak split of the train split."""
    train = load_samples(data, "train", accurate_ratio=ratio, seed=seed, check_files=False)
    weak = sorted(s.sample_id for s in train if s.quality == "weak")
    names = {s.sample_id: s.text for s in train}  # a weak sample's text is its class name
    kinds = [attribute_words((attributes.get(str(i)) or {}).get("attributes") or {}, names[i])
             for i in weak]  # fmt: skip
    accurate = sorted((s for s in train if s.quality == "accurate"), key=lambda s: s.sample_id)
    by_category: dict[str, list[int]] = {}
    for j, s in enumerate(accurate):
        by_category.setdefault(s.category, []).append(j)
    category = {s.sample_id: s.category for s in train}
    out: dict[str, Any] = {
        "ratio": ratio,
        "seed": seed,
        "weak": len(weak),
        "pool": len(accurate),
        "pool_per_category": {c: len(v) for c, v in sorted(by_category.items())},
    }
    for k in ks:
        bank = ExpressionBank.for_samples(train, weak, k, seed)  # the retrieve stage's draw
        rows = bank.row_index(torch.tensor(weak))
        cands = [[j for j in row if j >= 0] for row in bank.candidates[rows].tolist()]
        out[str(k)] = pool_hits(bank.pool, kinds, cands)
    whole = [by_category.get(category[i], []) for i in weak]
    out["all"] = pool_hits([s.text for s in accurate], kinds, whole)
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def markdown(report: dict[str, Any]) -> str:
    """Per ratio, per K: coverage (chance) of each kind, mean over the seeds."""
    lines = [
        "# Retrieval pool coverage",
        "",
        "Written by `python research/pool_coverage.py` (data only: no model, no val or test "
        "sample). Per weak training sample: whether some of its candidates names what its class "
        "name left out (**coverage**, the best a perfect chooser could do), and in brackets the "
        "share of candidates that do (**chance**, a random pick). `every`: one candidate names "
        f"all the sample's kinds. Mean over seeds {report['seeds']}.",
        "",
    ]
    for ratio, runs in report["ratios"].items():
        keys = [str(k) for k in report["candidates"]] + ["all"]
        pool = sum(r["pool"] for r in runs) / len(runs)
        lines += [
            f"## {float(ratio):.0%} accurate ({pool:.0f} pool expressions, "
            f"{sum(r['weak'] for r in runs) / len(runs):.0f} weak samples)",
            "",
            "| kind | samples | " + " | ".join(f"K = {k}" for k in keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for row in ROWS:
            n = sum(r[keys[0]][row]["samples"] for r in runs) / len(runs)
            cells = []
            for k in keys:
                cov = [r[k][row]["coverage"] for r in runs if r[k][row]["coverage"] is not None]
                ch = [r[k][row]["chance"] for r in runs if r[k][row]["chance"] is not None]
                cells.append(
                    f"{_pct(sum(cov) / len(cov))} ({_pct(sum(ch) / len(ch))})" if cov else "n/a"
                )
            lines.append(f"| {row} | {n:.0f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="the benchmark's root")
    parser.add_argument("--ratios", type=_comma(float, "numbers"), default=[0.1, 0.3, 0.5])
    parser.add_argument("--seeds", type=_comma(int, "integers"), default=[0, 1, 2])
    parser.add_argument(
        "--candidates", type=_comma(int, "integers"), default=[16, 64], help="K values"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--md", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    if not args.ratios or not args.seeds or not args.candidates:
        parser.error("--ratios, --seeds and --candidates each need at least one value")
    if any(not 0 < r < 1 for r in args.ratios) or any(k < 1 for k in args.candidates):
        parser.error("ratios must lie in (0, 1) and candidates be >= 1")
    attr_file = args.data / "synthetic" / "attributes.json"
    if not attr_file.is_file():
        parser.error(f"{attr_file} not found: --data must be the embedded benchmark's root")
    attributes = json.loads(attr_file.read_text())
    start = time.perf_counter()
    report: dict[str, Any] = {
        "data": str(args.data),
        "seeds": args.seeds,
        "candidates": args.candidates,
        "ratios": {
            str(ratio): [
                coverage_for(args.data, ratio, seed, args.candidates, attributes)
                for seed in args.seeds
            ]
            for ratio in args.ratios
        },
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.md:
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
