"""The table in the paper's layout across benchmark folders, beside RRSIS-D's reported row.

One ``wrel bench`` result folder holds one benchmark regime (docs/results/cpu: the default
``rrsisd`` regime; docs/results/ambiguous: the ``ambiguous`` one). :func:`regimes_table` puts
their records side by side per accurate ratio, under the numbers the LRB-WREL paper reports on
RRSIS-D (:data:`PAPER_RRSISD`), so that a reader sees at once whether a regime's baselines
order as the paper's do. Pure: records in, markdown out; ``wrel table`` is the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wrel.studies.plateau import plateau_check
from wrel.studies.report import METHOD_LABELS, gap_share_by_seed, summarize
from wrel.studies.runner import record_version

__all__ = ["PAPER_RRSISD", "PAPER_LABEL", "TABLE_METHODS", "regimes_table", "version_lines"]

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
