"""`wrel bound predict`: the bound as a prediction for the cells not yet run.

For each cell (method, accurate ratio ``rho``, seed) of Naive-WREL and Only-Accurate with no
record, the prediction gives an interval for the test gap ``R(cell) - R(Full, same seed)``:

- Only-Accurate: ``[-2 eps_n - t, 2 eps_{rho n} + t]`` (theorem, ``rho = 1`` case, and
  ``R(h_full) - R(h*) <= 2 eps_n`` below); point ``a (1/sqrt(rho n) - 1/sqrt(n))``.
- Naive-WREL: ``[-2 eps_n - t, (1 - rho)(Gamma_mix - Gamma_ref) + 2 eps_n + t]``: the proof's
  first (signed) line; point ``(1 - rho)(Gamma_mix - Gamma_ref)``.

Proxies, each labelled in the file: ``eps_m = a / (2 sqrt m)`` from the learning curve of the
accurate-only runs at **other** ratios (the predicted ratio left out; at least ``min_sizes``
sizes); ``Gamma_ref`` = Full's chosen checkpoint on val (for ``h*``); ``Gamma_mix`` = the mean
over Naive-WREL runs at the same ratio (other seeds) or, with none, linear in ``rho`` between
the Naive-WREL ratios that exist and Full's ``Gamma`` at ``rho = 1``; ``t`` = 1.96 standard
errors of a paired test-set difference (sd of paired val differences / sqrt(test size)).

The call (docs/theory.md section 5): mixing beats discarding when the mixed bound is below
Only-Accurate's, ``(1 - rho)(Gamma_mix - Gamma_ref) + 2 eps_n < 2 eps_{rho n}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wrel.studies.bound_records import (
    REFERENCE,
    ChosenCheckpoint,
    accurate_only_fit,
    chosen_checkpoint,
    data_version,
    estimate_n_train,
    ratio,
)
from wrel.theory import subsample_eps

__all__ = ["EPS_SOURCES", "PREDICTED", "predict_cells", "record_files"]

PREDICTED = ("naive", "only-accurate")  # the two methods the criterion compares
Z = 1.96  # two-sided 95 % normal quantile for the test-set noise term


def record_files(folder: str | Path, names: Sequence[str]) -> list[dict[str, str]]:
    """``{"file", "sha256"}`` of each run record and trace of ``names`` under ``folder``."""
    out = []
    for name in sorted(names):
        for rel in (f"runs/{name}.json", f"traces/{name}.jsonl"):
            path = Path(folder) / rel
            if path.is_file():
                out.append({"file": rel, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return out


def _gammas(records: list[dict], traces: dict[str, list[dict]], method: str) -> dict:
    """``{name: ChosenCheckpoint}`` of the traced runs of ``method``."""
    return {
        r["name"]: chosen_checkpoint(r, traces[r["name"]])
        for r in records
        if r["method"] == method and r["name"] in traces
    }


def _gamma_mix(rho: float, naive: list[dict], cks: dict, gamma_ref: float) -> tuple[float, str]:
    """Naive-WREL's Gamma at ``rho``: same ratio other seeds, else interpolated in ``rho``."""
    same = [cks[r["name"]].gamma for r in naive if abs(ratio(r) - rho) < 1e-9 and r["name"] in cks]
    if same:
        return float(np.mean(same)), f"mean of {len(same)} Naive-WREL run(s) at this ratio"
    by_ratio: dict[float, list[float]] = {}
    for r in naive:
        if r["name"] in cks:
            by_ratio.setdefault(ratio(r), []).append(cks[r["name"]].gamma)
    if not by_ratio:
        return gamma_ref, "no traced Naive-WREL run: Full's Gamma (signed term 0, a guess)"
    xs = sorted(by_ratio) + [1.0]
    ys = [float(np.mean(by_ratio[x])) for x in xs[:-1]] + [gamma_ref]
    shown = ", ".join(f"{x:.0%}" for x in xs)
    return float(
        np.interp(rho, xs, ys)
    ), f"linear in rho through Naive-WREL ratios + Full ({shown})"


def _noise(records: list[dict], traces: dict, method: str, full_cks: dict) -> float:
    """``Z`` standard errors of a paired test-set difference (method vs Full), from val."""
    sds = []
    for rec in records:
        ref = full_cks.get(rec["seed"])
        if rec["method"] == method and rec["name"] in traces and ref is not None:
            ck = chosen_checkpoint(rec, traces[rec["name"]])
            sds.append(float(np.std(ck.loss - ref.loss, ddof=1)))
    if not sds:  # no traced run of the method: two independent Full-like losses
        sds = [float(np.sqrt(2) * np.std(ref.loss, ddof=1)) for ref in full_cks.values()]
    n_test = min(int(r["test"]["num_samples"]) for r in records)
    return Z * max(sds) / float(np.sqrt(n_test))


#: eps proxies ``predict`` can use, and what each is.
EPS_SOURCES = {
    "learning-curve": "a/(2 sqrt m) from the learning curve r_inf + a/sqrt(m) of the "
    "accurate-only runs' test risks (Only-Accurate at each ratio, Full), predicted ratio left out",
    "subsample": "c/sqrt(m) through the 95 % uniform deviation, over every traced checkpoint, of "
    "val risks sub-sampled at N_val/8, N_val/4, N_val/2 (finite class of visited checkpoints "
    "only: a lower proxy)",
}


def _eps(
    used: list[dict], traces: dict, n: int, rho: float, source: str, min_sizes: int
) -> tuple[Any, dict[str, Any]]:
    """The eps function at ``rho`` and what it was fitted on."""
    if source == "subsample":
        rows = [np.asarray(ln[key], dtype=np.float64) for r in used
                for ln in traces.get(r["name"], []) for key in ("loss", "loss_class_name")]  # fmt: skip
        n_val = len(rows[0]) if rows else 0
        sizes = sorted({max(1, n_val // k) for k in (8, 4, 2)}) if n_val else []
        if len(sizes) < min_sizes:
            raise ValueError(f"{n_val} traced val samples give too few sub-sample sizes")
        fit = subsample_eps(np.stack(rows), sizes)
        info = {"c": fit.c, "sizes": list(fit.sample_sizes), "deviations": list(fit.gaps),
                "residual_rms": fit.residual_rms, "hypotheses": len(rows)}  # fmt: skip
        return fit.at, info
    try:
        curve = accurate_only_fit(used, n, leave_out=rho)
    except ValueError as err:  # one size left once rho is left out: nothing to fit
        raise ValueError(
            f"eps at {rho:.0%} cannot be fitted with {rho:.0%} left out ({err}); run "
            f"Only-Accurate at another ratio, use --eps-source subsample, or leave {rho:g} "
            "out of --ratios"
        ) from None
    if curve.num_sizes < min_sizes:
        raise ValueError(
            f"eps at {rho:.0%} would be fitted on {curve.num_sizes} training-set sizes "
            f"({sorted(set(curve.sample_sizes))}) with {rho:.0%} left out; run Only-Accurate "
            f"at another ratio, use --eps-source subsample, or pass --min-sizes "
            f"{curve.num_sizes} (recorded in the file)"
        )
    info = {"a": curve.a, "r_inf": curve.r_inf, "residual_rms": curve.residual_rms,
            "sizes": sorted(set(curve.sample_sizes)), "left_out_ratio": rho}  # fmt: skip
    return curve.eps, info


def _split(records: list[dict], hold_out: Sequence[float]) -> tuple[list[dict], list[dict]]:
    held = [
        r
        for r in records
        if r["method"] != REFERENCE and any(abs(ratio(r) - h) < 1e-9 for h in hold_out)
    ]
    return [r for r in records if r not in held], held


@dataclass
class _Context:
    """What every predicted cell is computed from."""

    n: int
    seeds: list[int]
    full_cks: dict[int, ChosenCheckpoint]  # seed -> Full's chosen checkpoint
    gamma_ref_mean: float
    naive: list[dict[str, Any]]
    naive_cks: dict[str, ChosenCheckpoint]
    have: set[tuple[str, float, int]]  # (method, ratio, seed) with a record
    noise: dict[str, float]  # method -> test-noise term


def _context(
    used: list[dict], traces: dict, n_train: int | None, seeds: Sequence[int] | None
) -> _Context:
    full_cks = {r["seed"]: chosen_checkpoint(r, traces[r["name"]]) for r in used
                if r["method"] == REFERENCE and r["name"] in traces}  # fmt: skip
    if not full_cks:
        raise ValueError("no traced Full run among the records; Gamma(h*) needs one")
    return _Context(
        n=n_train or estimate_n_train(used),
        seeds=sorted({r["seed"] for r in used}) if seeds is None else list(seeds),
        full_cks=full_cks,
        gamma_ref_mean=float(np.mean([ck.gamma for ck in full_cks.values()])),
        naive=[r for r in used if r["method"] == "naive"],
        naive_cks=_gammas(used, traces, "naive"),
        have={(r["method"], round(ratio(r), 6), r["seed"]) for r in used},
        noise={m: _noise(used, traces, m, full_cks) for m in PREDICTED},
    )


def _seed_cells(
    ctx: _Context, rho: float, seed: int, eps: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The missing cells of one (ratio, seed) and the call there."""
    eps_n, eps_rho_n = eps(ctx.n), eps(rho * ctx.n)
    gamma_mix, source = _gamma_mix(rho, ctx.naive, ctx.naive_cks, ctx.gamma_ref_mean)
    ref_ck = ctx.full_cks.get(seed)
    gamma_ref = ref_ck.gamma if ref_ck is not None else ctx.gamma_ref_mean
    signed = (1.0 - rho) * (gamma_mix - gamma_ref)
    bounds = {"naive": signed + 2 * eps_n, "only-accurate": 2 * eps_rho_n}
    points = {"naive": signed, "only-accurate": 2 * (eps_rho_n - eps_n)}
    cells = []
    for method in [m for m in PREDICTED if (m, round(rho, 6), seed) not in ctx.have]:
        t = ctx.noise[method]
        cells.append({
            "method": method, "rho": rho, "seed": seed,
            "interval": [-2 * eps_n - t, bounds[method] + t], "point": points[method],
            "terms": {"eps_n": eps_n, "eps_rho_n": eps_rho_n, "test_noise": t,
                      "gamma_mix": gamma_mix if method == "naive" else None,
                      "gamma_mix_source": source if method == "naive" else None,
                      "gamma_ref": gamma_ref,
                      "gamma_ref_source": "Full of this seed" if ref_ck else
                      "mean of the Full runs (no Full of this seed)"},
        })  # fmt: skip
    call = {
        "rho": rho, "seed": seed, "bound_naive": bounds["naive"],
        "bound_only_accurate": bounds["only-accurate"],
        "mixing_preferred": bool(bounds["naive"] < bounds["only-accurate"]),
        "point_mixing_preferred": bool(points["naive"] < points["only-accurate"]),
    }  # fmt: skip
    return cells, call


def predict_cells(
    records: list[dict[str, Any]],
    traces: dict[str, list[dict[str, Any]]],
    *,
    records_dir: str | Path,
    ratios: Sequence[float] = (0.1, 0.3, 0.5),
    seeds: Sequence[int] | None = None,
    n_train: int | None = None,
    hold_out: Sequence[float] = (),
    min_sizes: int = 3,
    eps_source: str = "learning-curve",
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The prediction file's content for every (method, ratio, seed) cell without a record.

    Args:
        records: the bench records that exist; ``traces`` their traces.
        records_dir: where they were read (named in the file, with each file's sha256).
        ratios: accurate ratios of the grid (each below 1).
        seeds: seeds of the grid (default: every seed with a record).
        n_train: full training-set size (default: :func:`estimate_n_train`).
        hold_out: ratios whose records are ignored (a retrospective demonstration).
        min_sizes: distinct training-set sizes the eps fit needs, the predicted ratio excluded.
        eps_source: ``learning-curve`` or ``subsample`` (:data:`EPS_SOURCES`).
        code: ``{"commit", "dirty"}`` of the code that predicts.
    """
    if eps_source not in EPS_SOURCES:
        raise ValueError(f"eps source {eps_source!r} is not one of {sorted(EPS_SOURCES)}")
    version = data_version(records)
    used, held = _split(records, hold_out)
    ctx = _context(used, traces, n_train, seeds)
    cells, calls, fits = [], [], {}
    for rho in ratios:
        if not 0.0 < rho < 1.0:
            raise ValueError(f"--ratios must lie strictly between 0 and 1, got {rho}")
        if all((m, round(rho, 6), s) in ctx.have for m in PREDICTED for s in ctx.seeds):
            continue  # every cell at this ratio has run: nothing to predict
        eps, fits[f"{rho:g}"] = _eps(used, traces, ctx.n, rho, eps_source, min_sizes)
        for seed in ctx.seeds:
            seed_cells, call = _seed_cells(ctx, rho, seed, eps)
            cells += seed_cells
            calls += [call] if seed_cells else []
    n = ctx.n
    return {
        "kind": "wrel bound prediction",
        "retrospective": bool(held),
        "note": (
            f"RETROSPECTIVE DEMONSTRATION, not a prediction: {len(held)} records at ratios "
            f"{sorted(set(hold_out))} existed and were committed before this file; they were "
            "ignored here"
            if held
            else "prediction: commit this file before the runs it predicts"
        ),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code": code or {},
        "records_dir": str(records_dir),
        "data_version": version,
        "records": record_files(records_dir, [r["name"] for r in used]),
        "held_out": sorted(r["name"] for r in held),
        "n_train": n,
        "min_sizes": min_sizes,
        "gap": "R(cell) - R(Full of the same seed), R = 1 - test mIoU / 100",
        "eps_source": eps_source,
        "proxies": {
            "eps": EPS_SOURCES[eps_source],
            "gamma_ref": "Full's chosen val checkpoint (nearest traced) stands in for h*",
            "gamma_mix": "Naive-WREL's chosen val checkpoints, same ratio or interpolated",
            "test_noise": "1.96 sd(paired val loss difference) / sqrt(test size)",
        },
        "eps_fits": fits,
        "cells": cells,
        "calls": calls,
    }
