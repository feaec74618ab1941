"""The report's plots: test metrics against the accurate ratio, training curves, leakage.

Every plot draws a method in the one colour :func:`method_colour` gives it, so a method reads the
same in every figure, and puts its legend outside the axes. Figures are built on
``matplotlib.figure.Figure`` (no pyplot state) by the ``*_figure`` functions, which tests inspect;
the ``plot_*`` functions save them as PNG. Lines drawn for a method carry the method as their
``gid``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wrel.studies.report import (
    METHOD_LABELS,
    group_records,
    leakage_curves,
    save_figure,
    summarize,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: One colour per method, used by every plot. Baselines: black, grey, orange; the paper recipe
#: and its bank variants: green, blue, red, purple, cyan; the ablations: brown, olive, pink,
#: navy, teal.
METHOD_COLOURS = {
    "full": "#000000",
    "only-accurate": "#7f7f7f",
    "naive": "#ff7f0e",
    "lrb-paper": "#2ca02c",
    "lrb": "#1f77b4",
    "lrb-words": "#d62728",
    "lrb-oa-teacher": "#9467bd",
    "retrieve": "#17becf",
    "naive-teacher": "#8c564b",
    "naive-long": "#bcbd22",
    "lrb-imagenet": "#e377c2",
    "lrb-fixed": "#393b79",
    "lrb-dropout": "#00a087",
}

#: Method families, one row of panels each in the training curves (in this order).
METHOD_FAMILIES = {
    "baselines": ("only-accurate", "naive", "full"),
    "LRB-WREL and its bank variants": (
        "lrb-paper",
        "lrb",
        "lrb-words",
        "lrb-oa-teacher",
        "retrieve",
    ),
    "ablations": ("naive-teacher", "naive-long", "lrb-imagenet", "lrb-fixed", "lrb-dropout"),
}

# Colours for methods missing from METHOD_COLOURS (picked by a stable hash of the name).
_SPARE_COLOURS = ("#17a768", "#a05195", "#665191", "#d45087", "#2f4b7c", "#003f5c", "#ffa600")


def method_colour(method: str) -> str:
    """The colour every plot draws ``method`` in (a hex string)."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return _SPARE_COLOURS[zlib.crc32(method.encode()) % len(_SPARE_COLOURS)]


def method_family(method: str) -> str:
    """The family (a :data:`METHOD_FAMILIES` key) of ``method``; unknown methods: ``"other"``."""
    return next((f for f, members in METHOD_FAMILIES.items() if method in members), "other")


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


# Figure titles sit left, clear of the legend at the upper right.
_TITLE: dict[str, Any] = {"fontsize": 10, "x": 0.01, "ha": "left"}


def _save(fig: Figure, out_png: str | Path) -> Path:
    """Write the PNG atomically through the one writer (a report replaces its own plots)."""
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_png)


def _legend_outside(fig: Figure, axes: Iterable[Axes], title: str | None = None) -> None:
    """One figure legend, right of the axes, with one entry per label (first handle kept)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            list(entries.values()),
            list(entries),
            loc="outside right upper",
            fontsize=8,
            title=title,
            title_fontsize=8,
        )


def _nudges(methods: Sequence[str], groups: dict[tuple[str, float], Any]) -> dict[Any, float]:
    """(method, ratio) -> sideways offset in percentage points: the methods present at one
    ratio spread evenly around it, so each point stays near its ratio."""
    out: dict[Any, float] = {}
    for ratio in {r for (_, r) in groups}:
        here = [m for m in methods if (m, ratio) in groups]
        for i, method in enumerate(here):
            out[(method, ratio)] = 0.4 * (i - (len(here) - 1) / 2)
    return out


def ratio_figure(records: Sequence[dict[str, Any]]) -> Figure:
    """Test mIoU and oIoU against the accurate ratio, one panel each: per method the mean over
    seeds with ± std bars and the seeds as dots, nudged sideways so methods at one ratio do not
    hide each other; Full as a dashed line with its ± std band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    methods = [m for m in METHOD_LABELS if m != "full"]
    for ax, metric in zip(axes, ("mIoU", "oIoU"), strict=True):
        groups = group_records(records, "test", metric)
        present = [m for m in methods if any(k[0] == m for k in groups)]
        if ("full", 1.0) in groups:
            s = summarize(groups[("full", 1.0)])
            colour = method_colour("full")
            ax.axhline(
                s.mean, color=colour, linestyle="--", label=f"{_label('full')} (100%)", gid="full"
            )
            ax.axhspan(s.mean - s.std, s.mean + s.std, color=colour, alpha=0.08)
        nudges = _nudges(present, groups)
        for method in present:
            pts = sorted((r, summarize(v)) for (m, r), v in groups.items() if m == method)
            xs = [100 * r + nudges[(method, r)] for r, _ in pts]
            colour = method_colour(method)
            bars = ax.errorbar(
                xs,
                [s.mean for _, s in pts],
                yerr=[s.std for _, s in pts],
                marker="o",
                ms=5,
                capsize=3,
                color=colour,
                label=_label(method),
            )
            bars.lines[0].set_gid(method)
            for x, (r, _) in zip(xs, pts, strict=True):
                vals = groups[(method, r)]
                ax.scatter([x] * len(vals), vals, s=9, alpha=0.45, color=colour)
        ax.set_xlabel("accurate expressions in train (%)")
        ax.set_ylabel(f"test {metric} (%)")
        ax.grid(alpha=0.3)
    _legend_outside(fig, axes)
    fig.suptitle(
        "WREL on the embedded synthetic benchmark\n"
        "dots: seeds; bars: ± std; methods nudged sideways at each ratio",
        **_TITLE,
    )
    return fig


def plot_ratio_curves(records: Sequence[dict[str, Any]], out_png: str | Path) -> Path:
    """Save :func:`ratio_figure` as a PNG."""
    return _save(ratio_figure(records), out_png)


def _loss_points(curve: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(step, loss)``, broken (a NaN point) between stages: bank initialisation has no model
    loss."""
    out: list[tuple[float, float]] = []
    stage = None
    for p in curve:
        if p.get("loss") is None:
            continue
        if out and p.get("stage") != stage:
            out.append((p["step"], math.nan))
        stage = p.get("stage")
        out.append((p["step"], p["loss"]))
    return out


def _val_points(rec: dict[str, Any]) -> list[tuple[float, float]]:
    return [(p["step"], p["val_mIoU"]) for p in rec["curve"] if p.get("val_mIoU") is not None]


def _draw_val(ax: Axes, rec: dict[str, Any], reference: bool = False) -> None:
    """One run's val mIoU curve; the plateau check's window thick (not for references, which
    are thin and dashed)."""
    val = _val_points(rec)
    if not val:
        return
    method = rec["method"]
    style: dict[str, Any] = (
        {"ls": "--", "lw": 1.0, "alpha": 0.7} if reference else {"marker": ".", "ms": 4}
    )
    ax.plot(
        *zip(*val, strict=True),
        color=method_colour(method),
        label=_label(method),
        gid=method,
        **style,
    )
    start = (rec.get("plateau") or {}).get("window_start_step")
    if reference or start is None:
        return
    inside = [(x, y) for x, y in val if x >= start]
    before = [(x, y) for x, y in val if x < start]
    if inside and before:
        ax.plot(
            *zip(before[-1], *inside, strict=True),
            color=method_colour(method),
            lw=3.5,
            alpha=0.45,
            gid=method,
        )


def _first_seed_runs(records: Sequence[dict[str, Any]]) -> dict[tuple[float, str], dict[str, Any]]:
    """(ratio, method) -> the record of the lowest seed that has a curve (Full at ratio 1.0)."""
    runs: dict[tuple[float, str], dict[str, Any]] = {}
    for rec in sorted(records, key=lambda r: (r["method"], r["accurate_ratio"], r["seed"])):
        ratio = 1.0 if rec["method"] == "full" else round(float(rec["accurate_ratio"]), 4)
        if rec.get("curve"):
            runs.setdefault((ratio, rec["method"]), rec)
    return runs


def training_panels(records: Sequence[dict[str, Any]]) -> list[tuple[float, str, list[str]]]:
    """The training curves' rows: ``(ratio, family, methods)`` for each accurate ratio and
    method family with a run (Full is drawn as a reference in every row, not as a row)."""
    runs = _first_seed_runs(records)
    panels = []
    for ratio in sorted({r for r, m in runs if m != "full"}):
        for family in [*METHOD_FAMILIES, "other"]:
            members = sorted(
                (m for r, m in runs if r == ratio and m != "full" and method_family(m) == family),
                key=lambda m: list(METHOD_COLOURS).index(m) if m in METHOD_COLOURS else 99,
            )
            if members:
                panels.append((ratio, family, members))
    return panels


def training_figure(records: Sequence[dict[str, Any]]) -> Figure:
    """Small multiples of the training curves: one row per (accurate ratio, method family), the
    training loss left and val mIoU right, one line per method (its first seed). Each val panel
    also shows, thin and dashed, Full and (outside the baselines' row) Only-Accurate and
    Naive-WREL at the same ratio, for reference. The thick stretch of a val curve is the
    plateau check's window."""
    from matplotlib.figure import Figure

    runs = _first_seed_runs(records)
    panels = training_panels(records) or [(math.nan, "no runs with curves", [])]
    fig = Figure(figsize=(13, 2.7 * len(panels) + 0.8), layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for (loss_ax, val_ax), (ratio, family, members) in zip(axes, panels, strict=True):
        refs = ["full"] if family == "baselines" else ["only-accurate", "naive", "full"]
        for method in refs:
            rec = runs.get((1.0 if method == "full" else ratio, method))
            if rec is not None:
                _draw_val(val_ax, rec, reference=True)
        for method in members:
            rec = runs[(ratio, method)]
            loss = _loss_points(rec["curve"])
            if loss:
                loss_ax.plot(
                    *zip(*loss, strict=True),
                    color=method_colour(method),
                    label=_label(method),
                    alpha=0.85,
                    lw=1.0,
                    gid=method,
                )
            _draw_val(val_ax, rec)
        loss_ax.set_title(f"{ratio:.0%} accurate: {family}, training loss", fontsize=9)
        val_ax.set_title(f"{ratio:.0%} accurate: {family}, val mIoU", fontsize=9)
        loss_ax.set_ylabel("training loss")
        if loss_ax.lines:
            loss_ax.set_yscale("log")
        val_ax.set_ylabel("val mIoU (%)")
        for ax in (loss_ax, val_ax):
            ax.set_xlabel("optimizer step (all stages)", fontsize=8)
            ax.grid(alpha=0.3)
    _legend_outside(fig, axes.ravel(), title="method (first seed)")
    fig.suptitle(
        "Training curves, first seed of each run\n"
        "dashed: references (Full; Only-Accurate and Naive-WREL at the row's ratio)\n"
        "thick: the plateau check's window (the last 20 % of steps)",
        **_TITLE,
    )
    return fig


def plot_training_curves(records: Sequence[dict[str, Any]], out_png: str | Path) -> Path:
    """Save :func:`training_figure` as a PNG."""
    return _save(training_figure(records), out_png)


#: How the leakage monitor's three scores are drawn: (label, colour, line style). They are the
#: scores, not methods, so they take colours of their own.
_LEAKAGE_STYLES = {
    "bank": ("class name + bank", "tab:red", "-"),
    "class_name": ("class name", "tab:gray", "--"),
    "expression": ("true expression", "tab:blue", "-"),
}


def leakage_figure(records: Sequence[dict[str, Any]]) -> Figure:
    """One panel per run with a bank: the leakage monitor's weak-sample mIoU against step,
    scored with class name + bank, class name alone and the true expression (colours name the
    score here, not the method). A bank curve far above the expression curve means the bank stores
    the masks. Raises ``ValueError`` when no record has leakage points."""
    from matplotlib.figure import Figure

    runs = [(r, leakage_curves(r)) for r in records]
    runs = [(r, c) for r, c in runs if c["bank"]]
    if not runs:
        raise ValueError("no run record holds leakage points (runs with a reference bank)")
    runs.sort(key=lambda rc: (rc[0]["method"], rc[0]["accurate_ratio"], rc[0]["seed"]))
    cols = min(3, len(runs))
    rows = -(-len(runs) // cols)
    fig = Figure(figsize=(4.2 * cols + 1.8, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (rec, curves) in zip(axes, runs, strict=False):
        for key, (label, colour, style) in _LEAKAGE_STYLES.items():
            if curves[key]:
                ax.plot(
                    *zip(*curves[key], strict=True), style, color=colour, marker=".", label=label
                )
        title = rec.get("name") or f"{rec['method']} {rec['accurate_ratio']:.0%}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step (all stages)", fontsize=8)
        ax.set_ylabel("weak train mIoU (%)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    _legend_outside(fig, axes[:1], title="prompt")
    fig.suptitle("Leakage monitor: fixed weak training samples scored three ways", **_TITLE)
    return fig


def plot_leakage(records: Sequence[dict[str, Any]], out_png: str | Path) -> Path:
    """Save :func:`leakage_figure` as a PNG."""
    return _save(leakage_figure(records), out_png)
