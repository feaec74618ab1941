"""Did a run reach its plateau? The val curve over the last share of its steps.

A run has reached its plateau when, over its last ``window`` share of optimizer steps (20 % by
default), its val mIoU gains less than ``min_gain`` points: the best val mIoU inside the window
minus the smoothed val mIoU at the window's start, the best of the last ``smooth`` (3)
evaluations at or before it, so that a window opening at a one-evaluation dip does not count the
recovery from the dip as a gain. A curve still climbing at its end fails; a curve that overfits
(falls) passes, and its best checkpoint is the one chosen on val anyway. The report applies this
one rule to every record's curve, whatever verdict the record was written with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["plateau_check", "plateau_table", "PLATEAU_WINDOW", "PLATEAU_MIN_GAIN"]

PLATEAU_WINDOW = 0.2  # share of the final stage's steps
PLATEAU_MIN_GAIN = 1.0  # val mIoU points
PLATEAU_SMOOTH = 3  # evaluations whose best is the window's starting level


def plateau_check(
    curve: Sequence[dict[str, Any]],
    *,
    window: float = PLATEAU_WINDOW,
    min_gain: float = PLATEAU_MIN_GAIN,
    stage: str | None = None,
    smooth: int = PLATEAU_SMOOTH,
) -> dict[str, Any]:
    """Plateau verdict from a run record's ``curve`` (points with ``step``, ``stage`` and,
    for evaluations, ``val_mIoU``).

    Args:
        curve: the run's points in step order.
        window: share of the stage's steps at its end that are checked.
        min_gain: largest val mIoU gain (points) inside the window that still counts as flat.
        stage: the stage whose curve is checked (default: the stage of the last evaluation,
            the one the best checkpoint is chosen from).
        smooth: the window's starting level is the best of this many evaluations at or before
            its start (1: the last one alone).

    Returns:
        ``{"reached": bool | None, "gain": float | None, "window_start_step", "last_step",
        "num_points", "stage", "reason"}``; ``reached`` is None when the curve cannot tell
        (fewer than two evaluations, or none inside the window).
    """
    if not 0.0 < window < 1.0:
        raise ValueError(f"window must be in (0, 1), got {window}")
    evals = [p for p in curve if p.get("val_mIoU") is not None]
    verdict: dict[str, Any] = {"reached": None, "gain": None, "window": window,
                               "min_gain": min_gain, "stage": stage}  # fmt: skip
    if not evals:
        return {**verdict, "reason": "no val evaluations"}
    stage = stage or evals[-1].get("stage")
    evals = [p for p in evals if p.get("stage") == stage]
    steps = [int(p["step"]) for p in curve if p.get("stage") == stage and "step" in p]
    first, last = min(steps), max(steps)
    # the stage spans from the last step of the stage before it
    start_of_stage = _stage_start(curve, stage, first)
    cut = last - window * (last - start_of_stage)
    before = [p for p in evals if p["step"] <= cut]
    inside = [p for p in evals if p["step"] > cut]
    verdict.update(stage=stage, window_start_step=round(cut, 1), last_step=last,
                   num_points=len(evals))  # fmt: skip
    if not before or not inside:
        return {**verdict, "reason": "no evaluation before and inside the window"}
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    start = before[-smooth:]
    base = max(float(p["val_mIoU"]) for p in start)
    gain = max(float(p["val_mIoU"]) for p in inside) - base
    return {
        **verdict,
        "reached": gain < min_gain,
        "gain": round(gain, 3),
        "smooth": smooth,
        "reason": f"val mIoU {base:.2f} (best of the {len(start)} evaluations up to step "
        f"{before[-1]['step']}) -> best {base + gain:.2f} in the last {window:.0%} of the "
        "stage's steps",
    }


def plateau_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table: each run's plateau verdict (from its record's ``plateau`` or curve)."""
    lines = [
        f"| run | stage | val points | gain in the last {PLATEAU_WINDOW:.0%} (mIoU points) | "
        "plateau |",
        "|---|---|---|---|---|",
    ]
    for rec in records:
        p = rec.get("plateau") or plateau_check(rec.get("curve") or [])
        gain = "n/a" if p.get("gain") is None else f"{p['gain']:+.2f}"
        verdict = {True: "reached", False: "NOT reached", None: "unknown"}[p.get("reached")]
        lines.append(
            f"| {rec['name']} | {p.get('stage')} | {p.get('num_points', 0)} | {gain} | {verdict} |"
        )
    return "\n".join(lines)


def _stage_start(curve: Sequence[dict[str, Any]], stage: str | None, first: int) -> int:
    """The last step of the stage before ``stage`` (0 for the first stage)."""
    earlier = [int(p["step"]) for p in curve if p.get("stage") != stage and p["step"] < first]
    return max(earlier) if earlier else 0
