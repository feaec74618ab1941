"""The report's plots: small multiples, one colour per method everywhere, legends outside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")
from matplotlib.colors import to_hex  # noqa: E402

from wrel.studies.plots import (  # noqa: E402
    METHOD_COLOURS,
    leakage_figure,
    method_colour,
    method_family,
    plot_leakage,
    plot_ratio_curves,
    plot_training_curves,
    ratio_figure,
    training_figure,
    training_panels,
)
from wrel.studies.report import METHOD_LABELS  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _record(method: str, ratio: float, seed: int, score: float) -> dict[str, Any]:
    """A run record with a two-stage curve, val points and (for banks) leakage points."""
    curve: list[dict[str, Any]] = []
    for step in range(10, 210, 10):
        point: dict[str, Any] = {"step": step, "stage": "a" if step < 100 else "b"}
        point["loss"] = 1.0 / step
        if step % 50 == 0:
            point["val_mIoU"] = score * step / 200
        if method.startswith("lrb") and step % 50 == 0:
            point["leakage"] = {"mIoU_bank": 50.0, "mIoU_class_name": 30.0, "mIoU_expression": 40.0}
        curve.append(point)
    metrics = {"mIoU": score + seed, "oIoU": score + seed + 1}
    return {
        "name": f"{method}-r{int(ratio * 100)}-s{seed}",
        "method": method,
        "accurate_ratio": ratio,
        "seed": seed,
        "test": metrics,
        "val": metrics,
        "curve": curve,
        "plateau": {"window_start_step": 160},
    }


@pytest.fixture
def records() -> list[dict[str, Any]]:
    runs = [("only-accurate", 0.1), ("naive", 0.1), ("lrb-paper", 0.1), ("retrieve", 0.1)]
    runs += [("lrb-fixed", 0.1), ("naive-long", 0.1), ("only-accurate", 0.3), ("naive", 0.3)]
    runs += [("lrb-paper", 0.3), ("full", 0.1)]
    out = [_record(m, r, s, 40.0 + i) for i, (m, r) in enumerate(runs) for s in (0, 1)]
    return out


def _method_colours(fig: Any) -> dict[str, set[str]]:
    """method -> the colours of every line drawn for it (lines carry the method as gid)."""
    seen: dict[str, set[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                seen.setdefault(line.get_gid(), set()).add(to_hex(line.get_color()))
    return seen


def test_training_curves_one_row_per_ratio_and_family(records: list[dict[str, Any]]) -> None:
    panels = [(ratio, family) for ratio, family, _ in training_panels(records)]
    assert panels == [
        (0.1, "baselines"),
        (0.1, "LRB-WREL and its bank variants"),
        (0.1, "ablations"),
        (0.3, "baselines"),
        (0.3, "LRB-WREL and its bank variants"),
    ]
    fig = training_figure(records)
    assert len(fig.axes) == 2 * len(panels)  # loss and val per (ratio, family)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[4] == "10% accurate: ablations, training loss"
    ablations = fig.axes[4]  # only that row's methods, not the other families'
    assert {line.get_gid() for line in ablations.get_lines()} == {"lrb-fixed", "naive-long"}
    # the val panel of a non-baseline row carries the references: Full, Only-Accurate, Naive
    val = {line.get_gid() for line in fig.axes[3].get_lines()}
    assert {"full", "only-accurate", "naive", "lrb-paper", "retrieve"} <= val


def test_a_method_has_one_colour_in_every_plot(records: list[dict[str, Any]]) -> None:
    per_plot = [_method_colours(ratio_figure(records)), _method_colours(training_figure(records))]
    for seen in per_plot:
        assert seen, "no line carries its method"
        for method, colours in seen.items():
            assert colours == {method_colour(method)}, method
    common = set(per_plot[0]) & set(per_plot[1])
    assert {"only-accurate", "naive", "lrb-paper", "full"} <= common


def test_colour_map_covers_every_method_with_distinct_colours() -> None:
    assert set(METHOD_COLOURS) == set(METHOD_LABELS)
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    assert method_colour("not-a-method") == method_colour("not-a-method")  # stable fallback
    assert method_family("lrb-dropout") == "ablations"
    assert method_family("not-a-method") == "other"


def test_legends_sit_outside_the_axes(records: list[dict[str, Any]]) -> None:
    for fig in (ratio_figure(records), training_figure(records), leakage_figure(records)):
        assert all(ax.get_legend() is None for ax in fig.axes)
        assert len(fig.legends) == 1
        fig.draw_without_rendering()  # lay out, then the legend must not overlap any axes with data
        box = fig.legends[0].get_window_extent()
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.get_window_extent()), ax.get_title()


def test_plots_write_png_files(records: list[dict[str, Any]], tmp_path: Path) -> None:
    for plot, name in (
        (plot_ratio_curves, "ratio.png"),
        (plot_training_curves, "curves.png"),
        (plot_leakage, "leakage.png"),
    ):
        out = plot(records, tmp_path / "sub" / name)
        assert out.read_bytes()[:8] == PNG
    leakage = leakage_figure(records)  # one panel per run with a bank
    assert sum(ax.get_visible() for ax in leakage.axes) == 6
