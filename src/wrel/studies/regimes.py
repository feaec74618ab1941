"""The table in the paper's layout across benchmark folders, beside RRSIS-D's reported row.

One ``wrel bench`` result folder holds one benchmark regime (docs/results/cpu: the default
``rrsisd`` regime at its version v9b, cpu-v9a, cpu-v8b and cpu-v7 its earlier versions;
docs/results/ambiguous: the ``ambiguous`` one). :func:`regimes_table` puts
their records side by side per accurate ratio, under the numbers the LRB-WREL paper reports on
RRSIS-D (:data:`PAPER_RRSISD`), so that a reader sees at once whether a regime's baselines
order as the paper's do. Pure: records in, markdown out; ``wrel table`` is the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wrel.studies.plateau import plateau_check
from wrel.studies.report import (
    METHOD_LABELS,
    Summary,
    gap_share_by_seed,
    paired_verdict,
    summarize,
)
from wrel.studies.runner import record_version

__all__ = [
    "PAPER_RRSISD",
    "PAPER_LABEL",
    "SHAPE_TARGETS",
    "TABLE_METHODS",
    "ShapeCheck",
    "regimes_table",
    "shape_checks",
    "shape_table",
    "version_lines",
]

#: Test (oIoU, mIoU) in % reported by the LRB-WREL paper on RRSIS-D (RMSIN, its Table of
#: results): per accurate ratio, Only-Accurate, Naive-WREL and LRB-WREL; Full at ratio 1.0.
PAPER_RRSISD: dict[float, dict[str, tuple[float, float]]] = {
    0.1: {"only-accurate": (63.03, 41.15), "naive": (71.48, 54.63), "lrb-paper": (71.70, 56.32)},
    0.3: {"only-accurate": (72.34, 54.07), "naive": (74.28, 58.19), "lrb-paper": (74.32, 58.79)},
    0.5: {"only-accurate": (73.51, 56.18), "naive": (76.50, 61.42), "lrb-paper": (76.57, 62.08)},
    1.0: {"full": (77.79, 64.20)},
}
PAPER_LABEL = "RRSIS-D, in the paper (RMSIN)"

#: The columns below the ratio: the paper's three methods and retrieved expressions (beyond it).
TABLE_METHODS = ("only-accurate", "naive", "lrb-paper", "retrieve")

_METRICS = {"mIoU": 1, "oIoU": 0}  # index into a PAPER_RRSISD pair
#: ``metric`` -> the metrics a cell shows and the one its gap share is computed on ("both": the
#: paper's oIoU / mIoU cells, the gap on mIoU).
_SHOWN = {
    "mIoU": (("mIoU",), "mIoU"),
    "oIoU": (("oIoU",), "oIoU"),
    "both": (("oIoU", "mIoU"), "mIoU"),
}


def _ratio(record: dict[str, Any]) -> float:
    return 1.0 if record["method"] == "full" else round(float(record["accurate_ratio"]), 4)


def _short_of_plateau(record: dict[str, Any]) -> bool:
    """True when the run's curve fails the one plateau rule (recomputed, as the reports do)."""
    curve = record.get("curve")
    if not curve:
        return (record.get("plateau") or {}).get("reached") is False
    stage = (record.get("plateau") or {}).get("stage")
    return plateau_check(curve, stage=stage).get("reached") is False


def _paper_cell(ratio: float, method: str, metric: str) -> str:
    row = PAPER_RRSISD.get(ratio, {})
    if method not in row:
        return ""
    shown, gap_metric = _SHOWN[metric]
    text = " / ".join(f"{row[method][_METRICS[m]]:.2f}" for m in shown)
    low = row.get("only-accurate")
    if method != "only-accurate" and low is not None:
        value = row[method][_METRICS[gap_metric]]
        full = PAPER_RRSISD[1.0]["full"][_METRICS[gap_metric]]
        base = low[_METRICS[gap_metric]]
        text += f"; gap {100 * (value - base) / (full - base):.0f} %"
    return text


def _cell(
    records: Sequence[dict[str, Any]], ratio: float, method: str, metric: str
) -> tuple[str, bool]:
    """``mean ± std (n=k)[; gap share]`` of one folder's cell, and whether a run of it stopped
    short of its plateau."""
    runs = [r for r in records if r["method"] == method and _ratio(r) == ratio]
    if not runs:
        return "", False
    shown, gap_metric = _SHOWN[metric]
    values = [summarize([float(r["test"][m]) for r in runs]) for m in shown]
    text = " / ".join(v.format() for v in values) + f" (n={values[0].num_seeds})"
    if method not in ("only-accurate", "full"):
        share = gap_share_by_seed(records, ratio, method, gap_metric)
        if share is not None:
            text += f"; gap {share.format(0)} %"
    short = any(_short_of_plateau(r) for r in runs)
    return (text + " †" if short else text), short


def regimes_table(
    folders: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    *,
    metric: str = "mIoU",
    paper: bool = True,
    methods: Sequence[str] = TABLE_METHODS,
) -> str:
    """Markdown table: per accurate ratio, one row for RRSIS-D as the paper reports it
    (``paper``) and one per ``(label, records)`` folder that ran that ratio; then the Full rows.

    Cells: test ``metric`` (``mIoU``, ``oIoU``, or ``both``: the paper's oIoU / mIoU) mean ±
    std over seeds (n) and, for the weakly supervised methods, the share of the Only-Accurate
    -> Full gap closed (on mIoU for ``both``), computed per seed against that seed's
    own Only-Accurate and Full runs (:func:`wrel.studies.report.gap_share_by_seed`; the
    paper's from its means). A dagger marks a cell with a run short of its plateau.

    Raises:
        ValueError: an unknown metric, no folder, or a folder without records.
    """
    if metric not in _SHOWN:
        raise ValueError(f"metric {metric!r} must be one of {sorted(_SHOWN)}")
    if not folders:
        raise ValueError("give at least one bench folder")
    for label, records in folders:
        if not records:
            raise ValueError(f"{label}: no run records (runs/*.json)")
    ratios = sorted(
        {_ratio(r) for _, records in folders for r in records if r["method"] != "full"}
        | ({r for r in PAPER_RRSISD if r < 1.0} if paper else set())
    )
    head = "| accurate | benchmark | " + " | ".join(METHOD_LABELS[m] for m in methods) + " |"
    lines = [head, "|" + "---|" * (len(methods) + 2)]
    short_cells = []
    for ratio in ratios:
        if paper and ratio in PAPER_RRSISD:
            cells = [_paper_cell(ratio, m, metric) for m in methods]
            lines.append(f"| {ratio:.0%} | {PAPER_LABEL} | " + " | ".join(cells) + " |")
        for label, records in folders:
            if not any(_ratio(r) == ratio for r in records):
                continue
            cells = []
            for m in methods:
                text, short = _cell(records, ratio, m, metric)
                cells.append(text)
                if short:
                    short_cells.append(f"{label}: {METHOD_LABELS[m]} at {ratio:.0%}")
            lines.append(f"| {ratio:.0%} | {label} | " + " | ".join(cells) + " |")
    blanks = " | ".join("" for _ in methods[1:])
    if paper:
        full = _paper_cell(1.0, "full", metric)
        lines.append(f"| 100% (Full) | {PAPER_LABEL} | {full} | {blanks} |")
    for label, records in folders:
        text, short = _cell(records, 1.0, "full", metric)
        if text:
            lines.append(f"| 100% (Full) | {label} | {text} | {blanks} |")
            if short:
                short_cells.append(f"{label}: Full")
    if short_cells:
        lines += ["", "† a run of the cell stopped short of its plateau: " + "; ".join(short_cells)]
    return "\n".join(lines)


def version_lines(folders: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[str]:
    """Per folder, the code and data versions its records name, with their run counts."""
    out = []
    for label, records in folders:
        counts: dict[str, int] = {}
        for rec in records:
            version = record_version(rec)
            counts[version] = counts.get(version, 0) + 1
        parts = ", ".join(f"{v} ({n} runs)" for v, n in sorted(counts.items()))
        out.append(f"- {label}: {parts}")
    return out


#: The shape of RRSIS-D's baselines that a regime is checked against at 10 % accurate:
#: Naive-WREL's share of the Only-Accurate -> Full gap (the paper: 58 %), Only-Accurate / Full
#: (0.64) and Full (64.20), from :data:`PAPER_RRSISD`'s test mIoU; each a band around the
#: paper's value wide enough for a different network and data.
SHAPE_TARGETS: dict[str, tuple[float, float]] = {
    "share": (40.0, 75.0),
    "oa_over_full": (0.55, 0.75),
    "full": (60.0, 78.0),
}
SHAPE_RATIO = 0.1  # the accurate ratio the bands hold at


@dataclass(frozen=True)
class ShapeCheck:
    """One check of a regime's baselines: what, its target, and per split the measured text and
    whether it passed (``None``: nothing to check yet)."""

    name: str
    target: str
    results: dict[str, tuple[str, bool | None]]

    @property
    def failed(self) -> bool:
        return any(ok is False for _, ok in self.results.values())


def _values(records: Sequence[dict[str, Any]], split: str, metric: str) -> dict[tuple, float]:
    """``(method, ratio, seed) -> split metric``; Full keyed at ratio 1.0."""
    return {
        (r["method"], _ratio(r), int(r.get("seed", 0))): float(r[split][metric])
        for r in records
        if split in r and metric in r[split]
    }


def _above(diffs: list[float]) -> tuple[str, bool | None]:
    """The paired-by-seed comparison of one check: the report's rule from two seeds; with one
    seed, the sign, said to be the sign only."""
    if not diffs:
        return "not run", None
    d = summarize(diffs)
    if len(diffs) == 1:
        return f"{d.mean:+.2f} (one seed: sign only)", d.mean > 0
    verdict = paired_verdict(diffs)
    return f"{d.mean:+.2f} ± {d.std:.2f} (n={d.num_seeds}): {verdict}", verdict == "above"


def _band(
    s: Summary | None, band: tuple[float, float], fmt: str, unit: str = ""
) -> tuple[str, bool | None]:
    """Mean (± std, n) of per-seed values and whether the mean lies inside ``band``."""
    if s is None:
        return "not run", None
    text = f"{s.mean:{fmt}}" + (
        f" ± {s.std:{fmt}}{unit} (n={s.num_seeds})" if s.num_seeds > 1 else unit
    )
    return text, band[0] <= s.mean <= band[1]


def _paper_shape() -> tuple[float, float, float]:
    """RRSIS-D's share (%), Only-Accurate / Full and Full at :data:`SHAPE_RATIO`, test mIoU."""
    oa, naive = (PAPER_RRSISD[SHAPE_RATIO][m][1] for m in ("only-accurate", "naive"))
    full = PAPER_RRSISD[1.0]["full"][1]
    return 100.0 * (naive - oa) / (full - oa), oa / full, full


def shape_checks(
    records: Sequence[dict[str, Any]], *, splits: Sequence[str] = ("val", "test")
) -> list[ShapeCheck]:
    """Check a regime's baselines against RRSIS-D's shape, on each split's mIoU (the metric the
    bands are set on).

    At every accurate ratio with Only-Accurate and Naive-WREL runs: Naive-WREL above
    Only-Accurate. At :data:`SHAPE_RATIO`: Full above Naive-WREL, and Naive-WREL's gap share,
    Only-Accurate / Full and Full inside :data:`SHAPE_TARGETS`' bands. Comparisons are paired
    by seed under the report's rule ("above" needs two seeds; one seed is checked by its sign
    and says so); shares and ratios are per seed, their mean checked. Last, every run at its
    plateau. The LRB-WREL variants are never checked: their differences are the finding.
    """
    checks: list[ShapeCheck] = []
    by = {split: _values(records, split, "mIoU") for split in splits}

    def per_split(fn) -> dict[str, tuple[str, bool | None]]:
        return {split: fn(by[split]) for split in splits}

    def paired(upper: tuple[str, float], lower: tuple[str, float]):
        def fn(v: dict[tuple, float]) -> tuple[str, bool | None]:
            seeds = sorted(s for (m, r, s) in v if (m, r) == upper and (*lower, s) in v)
            return _above([v[(*upper, s)] - v[(*lower, s)] for s in seeds])

        return fn

    ratios = sorted({_ratio(r) for r in records if r["method"] == "naive"})
    for ratio in ratios:
        checks.append(ShapeCheck(
            f"{ratio:.0%}: Naive-WREL above Only-Accurate", "above",
            per_split(paired(("naive", ratio), ("only-accurate", ratio))),
        ))  # fmt: skip
    r0 = SHAPE_RATIO

    def share(split: str) -> tuple[str, bool | None]:
        summary = gap_share_by_seed(records, r0, "naive", "mIoU", split)
        return _band(summary, SHAPE_TARGETS["share"], ".1f", " %")

    def oa_full(v: dict[tuple, float]) -> tuple[str, bool | None]:
        seeds = [s for (m, r, s) in v if (m, r) == ("only-accurate", r0) and ("full", 1.0, s) in v]
        ratios = [v[("only-accurate", r0, s)] / v[("full", 1.0, s)] for s in seeds]
        return _band(summarize(ratios) if ratios else None, SHAPE_TARGETS["oa_over_full"], ".3f")

    def full(v: dict[tuple, float]) -> tuple[str, bool | None]:
        values = [x for (m, _, _), x in v.items() if m == "full"]
        return _band(summarize(values) if values else None, SHAPE_TARGETS["full"], ".2f")

    lo, hi = SHAPE_TARGETS["share"]
    p_share, p_ratio, p_full = _paper_shape()
    checks += [
        ShapeCheck(f"{r0:.0%}: Full above Naive-WREL", "above",
                   per_split(paired(("full", 1.0), ("naive", r0)))),
        ShapeCheck(f"{r0:.0%}: Naive-WREL's share of the Only-Accurate -> Full gap",
                   f"{lo:.0f}-{hi:.0f} % (paper {p_share:.0f} %)",
                   {split: share(split) for split in splits}),
        ShapeCheck(f"{r0:.0%}: Only-Accurate / Full",
                   "{:.2f}-{:.2f} (paper {:.2f})".format(*SHAPE_TARGETS["oa_over_full"], p_ratio),
                   per_split(oa_full)),
        ShapeCheck("Full", "{:.0f}-{:.0f} (paper {:.2f})".format(*SHAPE_TARGETS["full"], p_full),
                   per_split(full)),
    ]  # fmt: skip
    baselines = [r for r in records if r["method"] in ("only-accurate", "naive", "full")]
    short = sorted(r["name"] for r in baselines if _short_of_plateau(r))
    text = f"{len(baselines) - len(short)} of {len(baselines)}" + (
        f" (short: {', '.join(short)})" if short else ""
    )
    plateau = (text, not short) if baselines else ("not run", None)
    checks.append(
        ShapeCheck("baseline runs at their plateau", "all", dict.fromkeys(splits, plateau))
    )
    return checks


def shape_table(checks: Sequence[ShapeCheck], splits: Sequence[str] = ("val", "test")) -> str:
    """Markdown: one row per check, per split the measured text and pass / FAIL / no call."""
    mark = {True: "pass", False: "**FAIL**", None: "no call"}
    lines = [
        "| check | target | " + " | ".join(splits) + " |",
        "|---|---|" + "---|" * len(splits),
    ]
    for c in checks:
        cells = [f"{c.results[s][0]}: {mark[c.results[s][1]]}" for s in splits]
        lines.append(f"| {c.name} | {c.target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
