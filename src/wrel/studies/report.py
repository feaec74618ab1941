"""Aggregate benchmark run records into the result table and gap figures.

A run record is the JSON object the runner writes for one (method, accurate ratio, seed):
``{"method", "accurate_ratio", "seed", "wall_time_s", "val": {...}, "test": {...},
"curve": [{"step", "epoch", "stage", "loss", "val_mIoU", ...}], "config": {...}}`` where
``val``/``test`` hold the evaluator's metrics (percentages). Everything here is pure: records in,
numbers and markdown out. The plots are in :mod:`wrel.studies.plots`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wrel.core.outfiles import write_file

#: Methods that train on the weak samples, compared with Naive-WREL in the paired table.
WREL_METHODS = (
    "naive",
    "lrb",
    "lrb-paper",
    "lrb-words",
    "naive-teacher",
    "naive-long",
    "lrb-imagenet",
    "lrb-fixed",
    "lrb-dropout",
    "lrb-oa-teacher",
    "retrieve",
)

#: Bench methods the paper does not have: its table holds Only-Accurate, Naive-WREL, LRB-WREL
#: (our ``lrb-paper``) and Full. Their labels carry ``BEYOND_PAPER`` (docs/variants.md).
BEYOND_PAPER_METHODS = frozenset(WREL_METHODS) - {"naive", "lrb-paper"}
BEYOND_PAPER = "[beyond the paper]"

# Display order and labels of the methods in tables and plots.
_LABELS = {
    "only-accurate": "Only-Accurate",
    "naive": "Naive-WREL",
    "lrb": "LRB-WREL",
    "lrb-paper": "LRB-WREL (paper recipe)",
    "lrb-words": "LRB-WREL (word bank)",
    "naive-teacher": "Naive from the teacher",
    "naive-long": "Naive, LRB's steps",
    "lrb-imagenet": "LRB, ImageNet student",
    "lrb-fixed": "LRB, bank fixed in stage 3",
    "lrb-dropout": "LRB, prompt dropout",
    "lrb-oa-teacher": "LRB-WREL (Only-Accurate teacher)",
    "retrieve": "Retrieved expressions",
    "full": "Full",
}
METHOD_LABELS = {
    method: f"{label} {BEYOND_PAPER}" if method in BEYOND_PAPER_METHODS else label
    for method, label in _LABELS.items()
}


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of one metric over seeds."""

    mean: float
    std: float
    num_seeds: int

    def format(self, digits: int = 2) -> str:
        if self.num_seeds > 1:
            return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}"


def summarize(values: Sequence[float]) -> Summary:
    """Mean and (n-1) standard deviation; std is 0 for a single value."""
    if not values:
        raise ValueError("cannot summarise an empty list of values")
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Summary(mean, math.sqrt(var), n)


def group_records(
    records: Iterable[dict[str, Any]], split: str = "test", metric: str = "mIoU"
) -> dict[tuple[str, float], list[float]]:
    """Metric values grouped by (method, accurate ratio); Full is keyed at ratio 1.0."""
    groups: dict[tuple[str, float], list[float]] = defaultdict(list)
    for rec in records:
        ratio = 1.0 if rec["method"] == "full" else float(rec["accurate_ratio"])
        groups[(rec["method"], round(ratio, 4))].append(float(rec[split][metric]))
    return dict(groups)


def gap_closed(
    records: Sequence[dict[str, Any]], ratio: float, method: str = "lrb", metric: str = "mIoU"
) -> float | None:
    """Share of the Only-Accurate -> Full gap (mean over seeds) that ``method`` closes at ``ratio``.

    Returns ``None`` when one of the three means is missing or the gap is not positive.
    """
    groups = group_records(records, "test", metric)
    key = round(ratio, 4)
    try:
        low = summarize(groups[("only-accurate", key)]).mean
        mid = summarize(groups[(method, key)]).mean
        high = summarize(next(v for (m, _), v in groups.items() if m == "full")).mean
    except (KeyError, StopIteration):
        return None
    if high - low <= 0:
        return None
    return (mid - low) / (high - low)


def markdown_table(records: Sequence[dict[str, Any]], split: str = "test") -> str:
    """Markdown table: one row per accurate ratio, one column per method, oIoU / mIoU cells."""
    oiou = group_records(records, split, "oIoU")
    miou = group_records(records, split, "mIoU")
    methods = [m for m in METHOD_LABELS if any(k[0] == m for k in miou)]
    ratios = sorted({r for (m, r) in miou if m != "full"})
    header = "| accurate | " + " | ".join(METHOD_LABELS[m] for m in methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 1)]

    def cell(method: str, ratio: float) -> str:
        key = (method, 1.0 if method == "full" else ratio)
        if key not in miou:
            return ""
        o, m = summarize(oiou[key]), summarize(miou[key])
        return f"{o.format()} / {m.format()} (n={m.num_seeds})"

    for ratio in ratios:
        cells = [cell(m, ratio) if m != "full" else "" for m in methods]
        lines.append(f"| {ratio:.0%} | " + " | ".join(cells) + " |")
    if "full" in methods:
        cells = [cell("full", 1.0) if m == "full" else "" for m in methods]
        lines.append("| 100% (Full) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_figure(fig: Any, out_png: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG atomically (:func:`wrel.core.outfiles.write_file`).

    A report is rewritten from its records, so an existing file is replaced: commands check
    their report paths (and ``--overwrite``) before they start.
    """
    return write_file(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), overwrite=True)


def leakage_curves(record: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """``(step, mIoU)`` of the leakage monitor's three scores in one run record's curve
    (``"bank"``, ``"class_name"``, ``"expression"``; empty lists for a run without a bank)."""
    out: dict[str, list[tuple[int, float]]] = {"bank": [], "class_name": [], "expression": []}
    for point in record.get("curve") or []:
        leak = point.get("leakage")
        if not leak:
            continue
        for key in out:
            value = leak.get(f"mIoU_{key}")
            if value is not None:
                out[key].append((int(point["step"]), float(value)))
    return out


def wall_time_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table of mean wall time (minutes) per method and ratio, and LRB / Naive."""
    times: dict[tuple[str, float], list[float]] = defaultdict(list)
    for rec in records:
        t = rec.get("wall_time_s")
        if t is None or math.isnan(t):  # resumed runs have no honest wall time
            continue
        ratio = 1.0 if rec["method"] == "full" else float(rec["accurate_ratio"])
        times[(rec["method"], round(ratio, 4))].append(float(t))
    if not times:
        return "(no wall times recorded)"
    ratios = sorted({r for (_, r) in times})
    methods = [m for m in METHOD_LABELS if any(k[0] == m for k in times)]
    lines = [
        "| accurate | " + " | ".join(METHOD_LABELS[m] for m in methods) + " | LRB / Naive |",
        "|" + "---|" * (len(methods) + 2),
    ]
    for ratio in ratios:
        cells = []
        for m in methods:
            vals = times.get((m, ratio))
            cells.append(f"{sum(vals) / len(vals) / 60:.1f} min" if vals else "")
        naive = times.get(("naive", ratio))
        factors = []
        for m in methods:  # every LRB-WREL run against Naive-WREL at the same ratio
            lrb = times.get((m, ratio)) if m.startswith("lrb") else None
            if lrb and naive and sum(naive) > 0:
                ratio_lrb = (sum(lrb) / len(lrb)) / (sum(naive) / len(naive))
                name = "" if m == "lrb" else f"{m.removeprefix('lrb-')} "
                factors.append(f"{name}{ratio_lrb:.2f}x")
        factor = ", ".join(factors)
        label = "100% (Full)" if ratio == 1.0 else f"{ratio:.0%}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {factor} |")
    return "\n".join(lines)


def gap_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per ratio: the share of the Only-Accurate -> Full mIoU gap each WREL method
    closes (mean over seeds)."""
    ratios = sorted({float(r["accurate_ratio"]) for r in records if r["method"] != "full"})
    out = []
    for ratio in ratios:
        parts = []
        for method in WREL_METHODS:
            share = gap_closed(records, ratio, method)
            if share is not None:
                parts.append(f"{METHOD_LABELS[method]} {100 * share:.0f}%")
        if parts:
            out.append(f"- {ratio:.0%} accurate: " + ", ".join(parts))
    return out


#: Methods with another bank (a reference bank or an expression bank) or teacher than the paper
#: recipe: the table's "best bank variant" is chosen among these on val (the ablations are not
#: candidates).
BANK_VARIANTS = ("lrb", "lrb-words", "lrb-oa-teacher", "retrieve")


def _variant_scores(
    records: Sequence[dict[str, Any]], metric: str = "mIoU"
) -> dict[float, tuple[str, str]]:
    """Per accurate ratio: the bank variant chosen on val and the line that explains the choice
    (see :func:`variant_choice`)."""
    vals: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    for rec in records:
        if rec["method"] in (*BANK_VARIANTS, "lrb-paper") and (rec.get("val") or {}).get(metric):
            key = (rec["method"], round(float(rec["accurate_ratio"]), 4))
            vals[key][int(rec.get("seed", 0))] = float(rec["val"][metric])
    out: dict[float, tuple[str, str]] = {}
    for ratio in sorted({r for (_, r) in vals}):
        listed_methods = [m for m in ("lrb-paper", *BANK_VARIANTS) if (m, ratio) in vals]
        means = {m: summarize(list(vals[(m, ratio)].values())) for m in listed_methods}
        variants = [m for m in BANK_VARIANTS if m in means]
        if not variants:
            continue
        common = set.intersection(*(set(vals[(m, ratio)]) for m in listed_methods))
        uneven = any(set(vals[(m, ratio)]) != common for m in listed_methods)
        on_common = {
            m: summarize([vals[(m, ratio)][seed] for seed in sorted(common)])
            for m in (listed_methods if common else ())
        }
        paper = vals.get(("lrb-paper", ratio), {})
        paired = {m: sorted(set(vals[(m, ratio)]) & set(paper)) for m in variants}
        if paper and all(paired.values()):
            # each candidate minus the paper recipe on the same seeds: variants that ran
            # different seeds are compared through the recipe every seed has
            scores = {
                m: summarize([vals[(m, ratio)][seed] - paper[seed] for seed in paired[m]])
                for m in variants
            }
        else:
            # the candidates are compared on the seeds they all ran (the paper recipe is listed
            # beside them, not a candidate, so its seeds do not narrow the choice)
            shared = set.intersection(*(set(vals[(m, ratio)]) for m in variants))
            scores = {
                m: summarize([vals[(m, ratio)][seed] for seed in sorted(shared)])
                if shared
                else means[m]
                for m in variants
            }
            paired = {}
        best = max(variants, key=lambda m: scores[m].mean)
        listed = ", ".join(
            f"{METHOD_LABELS[m]} {means[m].format()} (n={means[m].num_seeds})" for m in means
        )
        if common and uneven and not paired:
            same = ", ".join(f"{METHOD_LABELS[m]} {on_common[m].format()}" for m in on_common)
            listed += f"; on the seeds all of them ran ({sorted(common)}): {same}"
        if paired:
            diffs = ", ".join(
                f"{METHOD_LABELS[m]} {scores[m].mean:+.2f} (seeds {paired[m]})" for m in variants
            )
            listed += f"; minus the paper recipe on the same seeds: {diffs}"
        line = f"- {ratio:.0%} accurate: val {metric} {listed}; chosen: {METHOD_LABELS[best]}"
        out[ratio] = (best, line)
    return out


def variant_choice(records: Sequence[dict[str, Any]], metric: str = "mIoU") -> list[str]:
    """One line per accurate ratio: each bank variant's val ``metric`` (mean over its seeds)
    beside the paper recipe's, and the variant chosen, the one highest on val. Test plays no
    part in the choice.

    Seeds differ in difficulty (the weak split and the initialisation change with the seed), so
    a variant is scored by its val minus the paper recipe's on the same seeds (mean over the
    seeds both ran), which compares variants that ran different seeds. Where the paper recipe
    shares no seed with some variant, the variants are compared on the seeds every variant ran
    (on every seed when none is common), and the line also gives the means over the seeds all
    listed methods ran."""
    return [line for _, line in _variant_scores(records, metric).values()]


def chosen_variants(records: Sequence[dict[str, Any]], metric: str = "mIoU") -> dict[float, str]:
    """Accurate ratio -> the bank variant chosen on val there (:func:`variant_choice`)."""
    return {ratio: best for ratio, (best, _) in _variant_scores(records, metric).items()}


def gap_share_by_seed(
    records: Sequence[dict[str, Any]],
    ratio: float,
    method: str,
    metric: str = "mIoU",
    split: str = "test",
) -> Summary | None:
    """The share of the Only-Accurate -> Full ``split`` ``metric`` gap that ``method`` closes at
    ``ratio``, computed per seed (the seed's own Only-Accurate and Full runs) and summarised
    over the seeds that have all three; ``None`` when no seed has them (or no positive gap)."""
    by: dict[tuple[str, float, int], float] = {}
    for rec in records:
        if metric not in (rec.get(split) or {}):
            continue  # a record without that split's metric has no share to give
        r = 1.0 if rec["method"] == "full" else round(float(rec["accurate_ratio"]), 4)
        by[(rec["method"], r, int(rec.get("seed", 0)))] = float(rec[split][metric])
    key = round(ratio, 4)
    shares = []
    for (m, r, seed), value in sorted(by.items()):
        if m != method or r != key:
            continue
        low, high = by.get(("only-accurate", key, seed)), by.get(("full", 1.0, seed))
        if low is None or high is None or high - low <= 0:
            continue
        shares.append(100.0 * (value - low) / (high - low))
    return summarize(shares) if shares else None


#: Columns of the headline table: the baselines, the paper recipe, the variant chosen on val.
HEADLINE = ("only-accurate", "naive", "lrb-paper", "variant", "full")


def headline_table(records: Sequence[dict[str, Any]], metric: str = "mIoU") -> str:
    """Markdown table in the layout of the paper's: per accurate ratio, Only-Accurate,
    Naive-WREL, LRB-WREL (paper recipe), the bank variant chosen on val at that ratio (named in
    its cell) and Full. Cells: test ``metric`` mean ± std (n) and, for the WREL methods, the
    share of the Only-Accurate -> Full gap closed, per seed, mean ± std over the seeds that
    have Only-Accurate and Full."""
    groups = group_records(records, "test", metric)
    chosen = chosen_variants(records)
    ratios = sorted({r for (m, r) in groups if m != "full"})
    full = next((summarize(v) for (m, _), v in groups.items() if m == "full"), None)
    head = (
        "| accurate | Only-Accurate | Naive-WREL | LRB-WREL (paper recipe) | "
        "best bank variant (chosen on val) | Full |"
    )
    lines = [head, "|---|---|---|---|---|---|"]

    def cell(method: str, ratio: float) -> str:
        values = groups.get((method, ratio))
        if not values:
            return ""
        m = summarize(values)
        text = f"{m.format()} (n={m.num_seeds})"
        share = gap_share_by_seed(records, ratio, method, metric)
        if method != "only-accurate" and share is not None:
            text += f"; gap {share.format(0)} % (n={share.num_seeds})"
        return text

    for ratio in ratios:
        variant = chosen.get(ratio)
        cells = [
            cell(m, ratio)
            if m != "variant"
            else (f"{METHOD_LABELS[variant]}: {cell(variant, ratio)}" if variant else "")
            for m in HEADLINE[:-1]
        ]
        full_cell = f"{full.format()} (n={full.num_seeds})" if full else ""
        lines.append(f"| {ratio:.0%} | " + " | ".join(cells) + f" | {full_cell} |")
    return "\n".join(lines)


#: One-sided 95 % quantiles of Student's t for 1-10 degrees of freedom (then the normal's).
_T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812)

#: The one rule for "above" used by every comparison the report and the docs make.
ABOVE_RULE = (
    "A method is *above* another when their differences paired by seed (same weak split, same "
    "initialisation) have a positive mean whose one-sided 95 % paired t interval excludes 0 "
    "(mean - t(0.95, n-1) x std / sqrt(n) > 0); *below* in the mirror case; *not separated* "
    "otherwise. One seed gives no call."
)


def paired_verdict(diffs: Sequence[float]) -> str:
    """The :data:`ABOVE_RULE` verdict for differences paired by seed."""
    n = len(diffs)
    if n < 2:
        return "one seed: no call"
    d = summarize(diffs)
    t = _T95[n - 2] if n - 2 < len(_T95) else 1.645
    half = t * d.std / math.sqrt(n)
    if d.mean - half > 0:
        return "above"
    if d.mean + half < 0:
        return "below"
    return "not separated"


def paired_table(
    records: Sequence[dict[str, Any]], baseline: str = "naive", metric: str = "mIoU"
) -> str:
    """Markdown table of each WREL method minus ``baseline`` on test ``metric``, paired by seed.

    Only seeds run for both methods at a ratio count. The verdict is :data:`ABOVE_RULE`'s.
    """
    by: dict[tuple[str, float, int], float] = {}
    for rec in records:
        if rec["method"] == "full":
            continue
        key = (rec["method"], round(float(rec["accurate_ratio"]), 4), int(rec["seed"]))
        by[key] = float(rec["test"][metric])
    rows = []
    ratios = sorted({r for (_, r, _) in by})
    for ratio in ratios:
        base = {s: v for (m, r, s), v in by.items() if m == baseline and r == ratio}
        spread = summarize(list(base.values())).std if len(base) > 1 else None
        for method in WREL_METHODS:
            if method == baseline:
                continue
            diffs = [
                v - base[s]
                for (m, r, s), v in by.items()
                if m == method and r == ratio and s in base
            ]
            if not diffs:
                continue
            d = summarize(diffs)
            verdict = paired_verdict(diffs)
            std = f"{spread:.2f}" if spread is not None else "n/a"
            rows.append(
                f"| {ratio:.0%} | {METHOD_LABELS.get(method, method)} | {d.format()} | "
                f"{d.num_seeds} | {std} | {verdict} |"
            )
    if not rows:
        return f"(no method paired with {METHOD_LABELS.get(baseline, baseline)} by seed yet)"
    head = (
        f"| accurate | method | minus {METHOD_LABELS.get(baseline, baseline)} (test {metric}) | "
        f"seeds | {METHOD_LABELS.get(baseline, baseline)} seed std | verdict |"
    )
    return "\n".join([head, "|---|---|---|---|---|---|", *rows])
