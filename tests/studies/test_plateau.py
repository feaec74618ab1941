"""The plateau check on run curves."""

from __future__ import annotations

import pytest

from wrel.studies.plateau import plateau_check, plateau_table


def _curve(values: list[float], step: int = 100, stage: str = "full") -> list[dict]:
    return [{"step": (i + 1) * step, "stage": stage, "val_mIoU": v} for i, v in enumerate(values)]


def test_flat_end_is_a_plateau() -> None:
    p = plateau_check(_curve([10, 30, 45, 50, 52, 52.5, 52.8, 53.0, 53.2, 53.3]))
    # window: steps > 1000 - 0.2 * 1000 = 800; base = val at step 800 (53.0); best after 53.3
    assert p["reached"] is True and p["gain"] == pytest.approx(0.3)
    assert p["window_start_step"] == pytest.approx(800)


def test_still_climbing_is_not() -> None:
    p = plateau_check(_curve([10, 20, 30, 40, 50, 60, 70, 80, 90, 95]))
    assert p["reached"] is False and p["gain"] == pytest.approx(15.0)


def test_falling_curve_counts_as_flat() -> None:
    assert plateau_check(_curve([10, 40, 50, 49, 47, 45, 44, 43, 42, 41]))["reached"] is True


def test_checks_the_final_stage_from_its_own_start() -> None:
    teacher = _curve([5, 10, 20], stage="teacher")  # steps 100..300, still climbing
    joint = [
        {"step": 300 + s, "stage": "joint", "val_mIoU": v}
        for s, v in [(100, 30), (200, 40), (300, 41), (400, 41.2), (500, 41.5)]
    ]
    p = plateau_check(teacher + joint)
    # joint spans 300..800; window starts at 800 - 0.2 * 500 = 700: base 41.2, best 41.5
    assert p["stage"] == "joint" and p["reached"] is True
    assert p["gain"] == pytest.approx(0.3)


def test_unknown_without_points_in_the_window() -> None:
    assert plateau_check([])["reached"] is None
    assert plateau_check(_curve([30]))["reached"] is None
    with pytest.raises(ValueError):
        plateau_check(_curve([1, 2]), window=1.5)


def test_table_names_each_run() -> None:
    recs = [
        {"name": "full-s0", "curve": _curve([10, 50, 55, 55.2, 55.3])},
        {"name": "naive-r10-s0", "curve": _curve([10, 20, 30, 40, 50])},
    ]
    table = plateau_table(recs)
    assert "| full-s0 | full | 5 | +0.10 | reached |" in table
    assert "| naive-r10-s0 | full | 5 | +10.00 | NOT reached |" in table


def test_plateau_window_starts_from_the_best_of_three_evaluations() -> None:
    """A window opening at a one-evaluation dip does not count the recovery as a gain."""
    dip = _curve([10, 30, 45, 50, 52, 53, 53.2, 51.0, 53.3, 53.4])
    smoothed = plateau_check(dip)
    assert smoothed["reached"] is True and smoothed["smooth"] == 3
    # the same curve judged from the last evaluation alone: the dip reads as a 2.4-point gain
    plain = plateau_check(dip, smooth=1)
    assert plain["reached"] is False and plain["gain"] > 1.0
    with pytest.raises(ValueError, match="smooth"):
        plateau_check(dip, smooth=0)
