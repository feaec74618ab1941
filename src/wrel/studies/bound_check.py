"""`wrel bound check`: score a prediction file against the records that arrived later."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from wrel.studies.bound_records import REFERENCE, data_version, ratio, test_risk

__all__ = ["changed_inputs", "check_markdown", "check_prediction"]


def _index(records: list[dict[str, Any]]) -> dict[tuple[str, float, int], dict[str, Any]]:
    return {(r["method"], round(ratio(r), 6), int(r["seed"])): r for r in records}


def changed_inputs(prediction: dict[str, Any], folder: str | Path) -> list[str]:
    """The prediction's input files that are missing under ``folder`` or changed since."""
    changed = []
    for entry in prediction.get("records", []):
        path = Path(folder) / entry["file"]
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            changed.append(entry["file"])
    return changed


def check_prediction(prediction: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each predicted cell and call scored against ``records`` (those without one: pending).

    Returns:
        ``{"cells": [...], "calls": [...], "summary": {...}}``; a cell's ``status`` is
        ``scored``, ``pending`` (no record yet) or ``no Full`` (its seed has no Full run).
    """
    if prediction.get("kind") != "wrel bound prediction":
        raise ValueError("--prediction is not a file written by `wrel bound predict`")
    version = data_version(records)
    if prediction.get("data_version") and version and version != prediction["data_version"]:
        raise ValueError(
            f"the prediction is for data version {prediction['data_version']}, the records are "
            f"{version}; check it against the records of the regime it predicts"
        )
    index = _index(records)
    inputs = {f["file"] for f in prediction.get("records", [])}
    cells = []
    for cell in prediction["cells"]:
        key = (cell["method"], round(cell["rho"], 6), int(cell["seed"]))
        rec, full = index.get(key), index.get((REFERENCE, 1.0, int(cell["seed"])))
        row = {**cell, "status": "pending"}
        if rec is not None and full is None:
            row["status"] = "no Full"
        elif rec is not None and full is not None:
            measured = test_risk(rec) - test_risk(full)
            low, high = cell["interval"]
            row.update(
                status="scored",
                run=rec["name"],
                measured=measured,
                inside=bool(low <= measured <= high),
                error=measured - cell["point"],
                was_input=f"runs/{rec['name']}.json" in inputs,
            )
        cells.append(row)
    calls = []
    for call in prediction["calls"]:
        rho, seed = round(call["rho"], 6), int(call["seed"])
        naive, oa = index.get(("naive", rho, seed)), index.get(("only-accurate", rho, seed))
        row = {**call, "status": "pending"}
        if naive is not None and oa is not None:
            better = bool(naive["test"]["mIoU"] > oa["test"]["mIoU"])
            row.update(
                status="scored",
                measured_mixing_better=better,
                right=better == call["mixing_preferred"],
                point_right=better == call["point_mixing_preferred"],
                miou_naive=float(naive["test"]["mIoU"]),
                miou_only_accurate=float(oa["test"]["mIoU"]),
            )
        calls.append(row)
    scored = [c for c in cells if c["status"] == "scored"]
    scored_calls = [c for c in calls if c["status"] == "scored"]
    return {
        "retrospective": bool(prediction.get("retrospective")),
        "note": prediction.get("note", ""),
        "predicted_with": {
            k: prediction.get(k) for k in ("code", "created_utc", "eps_source", "min_sizes")
        },
        "cells": cells,
        "calls": calls,
        "summary": {
            "cells_scored": len(scored),
            "cells_inside": sum(c["inside"] for c in scored),
            "cells_pending": sum(c["status"] == "pending" for c in cells),
            "calls_scored": len(scored_calls),
            "calls_right": sum(c["right"] for c in scored_calls),
            "scored_records_that_were_inputs": sum(c["was_input"] for c in scored),
        },
    }


def check_markdown(
    result: dict[str, Any],
    *,
    prediction_file: str,
    records_dir: str,
    changed: list[str] | None = None,
) -> str:
    """The check as a markdown report (``changed``: input files changed since the prediction)."""
    s = result["summary"]
    lines = [
        "# Check of a bound prediction",
        "",
        f"Prediction `{prediction_file}` against the records in `{records_dir}`. Gap = "
        "R(cell) - R(Full, same seed) on test, R = 1 - mIoU/100.",
        "",
        f"**{result['note']}.**"
        if result["retrospective"]
        else f"The file's note: {result['note']}.",
        "",
        "Predicted with: " + ", ".join(f"{k} {v}" for k, v in result["predicted_with"].items()),
        "",
        f"- cells scored: {s['cells_scored']} ({s['cells_inside']} inside their interval, "
        f"{s['cells_scored'] - s['cells_inside']} outside); pending: {s['cells_pending']}",
        f"- mixing calls scored: {s['calls_scored']} ({s['calls_right']} right, "
        f"{s['calls_scored'] - s['calls_right']} wrong)",
    ]
    if changed:
        lines.append(
            f"- WARNING: {len(changed)} input files of the prediction are missing or changed "
            f"since it was made: {', '.join(changed)}"
        )
    if s["scored_records_that_were_inputs"]:
        lines.append(
            f"- WARNING: {s['scored_records_that_were_inputs']} scored records were inputs "
            "of the prediction; those scores are not out of sample"
        )
    lines += [
        "",
        "| method | rho | seed | interval | point | measured | inside | error (measured - point) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result["cells"]:
        low, high = c["interval"]
        head = f"| {c['method']} | {c['rho']:.0%} | {c['seed']} | [{low:.3f}, {high:.3f}] | "
        if c["status"] != "scored":
            lines.append(head + f"{c['point']:.3f} | {c['status']} | | |")
            continue
        lines.append(
            head + f"{c['point']:.3f} | {c['measured']:.3f} | "
            f"{'inside' if c['inside'] else 'OUTSIDE (miss)'} | {c['error']:+.3f} |"
        )
    lines += [
        "",
        "Mixing call (criterion of docs/theory.md section 5: mixed bound below Only-Accurate's; "
        "measured: Naive-WREL test mIoU above Only-Accurate's):",
        "",
        "| rho | seed | bound Naive | bound Only-Accurate | call | measured | right | "
        "point call right |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result["calls"]:
        call = "mix" if c["mixing_preferred"] else "discard"
        head = (
            f"| {c['rho']:.0%} | {c['seed']} | {c['bound_naive']:.3f} | "
            f"{c['bound_only_accurate']:.3f} | {call} | "
        )
        if c["status"] != "scored":
            lines.append(head + "pending | | |")
            continue
        measured = "mix" if c["measured_mixing_better"] else "discard"
        lines.append(
            head + f"{measured} ({c['miou_naive']:.2f} vs {c['miou_only_accurate']:.2f}) | "
            f"{'right' if c['right'] else 'WRONG'} | {'right' if c['point_right'] else 'WRONG'} |"
        )
    return "\n".join(lines) + "\n"
