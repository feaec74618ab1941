"""`wrel bound --records`: the bound of docs/theory.md from committed bench records alone.

Nothing is re-evaluated: every number comes from ``<dir>/runs/*.json`` (test and val metrics,
the chosen checkpoint, the training curve) and ``<dir>/traces/*.jsonl`` (per-sample val losses
``1 - IoU`` with the accurate expression and with the class name, at the evaluations traced).

- ``Delta`` (class-wide, as before): the largest ``|R - R_w|`` on val over every traced
  checkpoint of the seed's runs, with a joint bootstrap interval: a *lower* estimate of the
  supremum over the class (only visited checkpoints are seen).
- ``Gamma(h) = R(h) - R_w(h)`` (signed) at the two hypotheses the proof needs: the run's chosen
  checkpoint (``h_mix``) and Full's chosen checkpoint (the proxy of ``h*``). Where the chosen
  checkpoint was a mid-epoch evaluation that older traces did not keep, the traced evaluation
  nearest to it stands in, and the output says so (``exact: false``).
- ``eps_m``: the learning-curve proxy ``a / (2 sqrt m)`` fitted through the test risks of the
  runs trained on accurate expressions only (Only-Accurate at each ratio and Full, every seed;
  :func:`wrel.theory.fit_learning_curve`). Records keep no train risks, so the earlier
  ``|R_val - R_train|`` proxy is not available here (``wrel bound --runs`` still computes it
  from run folders).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wrel.theory import LearningCurveFit, estimate_delta, fit_learning_curve

__all__ = [
    "ChosenCheckpoint",
    "accurate_only_fit",
    "data_version",
    "bound_from_records",
    "chosen_checkpoint",
    "estimate_n_train",
    "records_bound_markdown",
    "test_risk",
]

REFERENCE = "full"  # the method whose chosen checkpoint stands in for h*
#: Methods that train by ERM on the class-name mixed risk: the theorem's h_mix. Other mixed
#: methods (a bank, a teacher's pseudo-labels) are shown for reference only.
COVERED = ("naive", "naive-long")
ACCURATE_ONLY = ("only-accurate", "full")  # trained on accurate expressions only
NOT_MIXED = (*ACCURATE_ONLY, "bank-only")


def data_version(records: list[dict[str, Any]]) -> str | None:
    """The one data version (benchmark settings hash) the records name, None if none does.

    Raises:
        ValueError: when the records name several (e.g. two regimes in one folder).
    """
    hashes = {str(h) for r in records if (h := (r.get("data") or {}).get("settings_hash"))}
    if len(hashes) > 1:
        raise ValueError(
            f"the records name {len(hashes)} data versions ({', '.join(sorted(hashes))}); "
            "give a folder with one benchmark regime's records"
        )
    return next(iter(hashes), None)


def test_risk(rec: dict[str, Any]) -> float:
    """A run's test risk ``1 - mIoU / 100``."""
    return 1.0 - float(rec["test"]["mIoU"]) / 100.0


def ratio(rec: dict[str, Any]) -> float:
    """A run's accurate ratio (1 for Full)."""
    return 1.0 if rec["method"] == REFERENCE else float(rec["accurate_ratio"])


@dataclass(frozen=True)
class ChosenCheckpoint:
    """The per-sample val losses of a run's chosen checkpoint (or the nearest traced one)."""

    run: str
    step: int  # the traced evaluation used
    chosen_step: int  # the evaluation the run chose (record["best"])
    loss: np.ndarray  # (N,) 1 - IoU with the accurate expression
    loss_class_name: np.ndarray  # (N,) with the class name
    sample_ids: np.ndarray

    @property
    def exact(self) -> bool:
        """True when the trace holds the chosen checkpoint itself."""
        return self.step == self.chosen_step

    @property
    def gamma(self) -> float:
        """Signed ``Gamma = R - R_w`` on val (negative: the class name costs risk)."""
        return float(self.loss.mean() - self.loss_class_name.mean())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-sample arrays)."""
        return {
            "run": self.run,
            "gamma": self.gamma,
            "step": self.step,
            "chosen_step": self.chosen_step,
            "exact": self.exact,
        }


def chosen_checkpoint(rec: dict[str, Any], lines: list[dict[str, Any]]) -> ChosenCheckpoint:
    """The trace line of the run's chosen checkpoint, or the traced one nearest to it."""
    best = rec.get("best") or {}
    step = int(best.get("step", -1))
    same_stage = [ln for ln in lines if ln.get("stage") == best.get("stage")] or lines
    if not same_stage:
        raise ValueError(f"the trace of {rec['name']} is empty; rerun it with a trace")
    # nearest step; on a tie the later evaluation
    line = min(same_stage, key=lambda ln: (abs(int(ln["step"]) - step), -int(ln["step"])))
    return ChosenCheckpoint(
        run=rec["name"],
        step=int(line["step"]),
        chosen_step=step,
        loss=np.asarray(line["loss"], dtype=np.float64),
        loss_class_name=np.asarray(line["loss_class_name"], dtype=np.float64),
        sample_ids=np.asarray(line["sample_ids"], dtype=np.int64),
    )


def estimate_n_train(records: list[dict[str, Any]]) -> int:
    """The full training-set size ``n``: a Full run's steps per epoch times its batch size.

    Exact up to one batch (``drop_last``); pass ``--n-train`` to give the exact size.
    """
    for rec in records:
        if rec["method"] != REFERENCE:
            continue
        curve = [c for c in rec.get("curve", []) if "loss" in c]
        if not curve:
            continue
        first = [c["step"] for c in curve if c["epoch"] == 0 and c["stage"] == curve[0]["stage"]]
        return int(max(first)) * int(rec["config"]["train"]["batch_size"])
    raise ValueError("no Full record with a training curve; pass --n-train with the train size")


def accurate_only_fit(
    records: list[dict[str, Any]], n_train: int, *, leave_out: float | None = None
) -> LearningCurveFit:
    """:func:`fit_learning_curve` through the accurate-only runs, ``m = rho n`` (every seed).

    Args:
        records: bench records.
        n_train: the full training-set size.
        leave_out: an accurate ratio whose runs are left out (out-of-sample fits).
    """
    pts = [
        (ratio(r) * n_train, test_risk(r))
        for r in records
        if r["method"] in ACCURATE_ONLY and (leave_out is None or abs(ratio(r) - leave_out) > 1e-9)
    ]
    if not pts:
        raise ValueError("no Only-Accurate or Full record to fit eps from; run them first")
    sizes, risks = zip(*pts, strict=True)
    return fit_learning_curve(sizes, risks)


def _delta(
    runs: list[dict[str, Any]], traces: dict[str, list[dict[str, Any]]], confidence: float
) -> dict[str, Any]:
    """Class-wide Delta proxy: the largest val gap over every traced checkpoint."""
    acc, weak, labels, ids = [], [], [], None
    for rec in runs:
        for line in traces.get(rec["name"], []):
            line_ids = np.asarray(line["sample_ids"], dtype=np.int64)
            if ids is not None and not np.array_equal(ids, line_ids):
                raise ValueError(f"the trace of {rec['name']} covers other val samples")
            ids = line_ids
            acc.append(np.asarray(line["loss"], dtype=np.float64))
            weak.append(np.asarray(line["loss_class_name"], dtype=np.float64))
            labels.append(f"{rec['name']}@{line['stage']}:{line['step']}")
    if not acc:
        raise ValueError("no run of this seed has a trace; run `wrel bench` with a trace")
    est = estimate_delta(np.stack(acc), np.stack(weak), confidence=confidence)
    return {
        "estimate": est.delta_hat,
        "ci": [est.lower, est.upper],
        "confidence": confidence,
        "argmax": labels[est.argmax],
        "checkpoints": len(labels),
        "num_samples": est.num_samples,
        "what": "max over traced val checkpoints of |R - R_w| (lower estimate of sup over H)",
    }


def _difference_ci(
    ck: ChosenCheckpoint, ref: ChosenCheckpoint, confidence: float, draws: int = 2000
) -> list[float]:
    """Paired percentile bootstrap interval (over val samples) of ``Gamma_mix - Gamma_ref``."""
    if not np.array_equal(ck.sample_ids, ref.sample_ids):
        raise ValueError(f"the traces of {ck.run} and {ref.run} cover other val samples")
    diff = (ck.loss - ck.loss_class_name) - (ref.loss - ref.loss_class_name)
    n = diff.size
    counts = np.random.default_rng(0).multinomial(n, np.full(n, 1.0 / n), size=draws)
    boot = counts @ diff / n
    alpha = 1.0 - confidence
    return [float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))]


def _versions(rho: float, measured: float, d_max: float, d_pair: float, signed: float,
              eps_n: float) -> dict[str, Any]:  # fmt: skip
    """The three bounds (class-wide Delta, two-hypothesis Delta, signed first line)."""
    eps_term = 2.0 * eps_n
    # measured = signed term + remainder, the remainder being R_rho(h_mix) - R_rho(h*) (an
    # identity, section 4) that the bound replaces by 2 eps_n: so the slack splits exactly into
    # (Delta term - signed term) + (2 eps_n - remainder)
    exact_term = (1.0 - rho) * signed
    remainder = measured - exact_term
    out = {}
    for key, delta_term in (
        ("max_checkpoints", 2.0 * (1.0 - rho) * d_max),
        ("two_hypotheses", 2.0 * (1.0 - rho) * d_pair),
        ("signed", (1.0 - rho) * signed),
    ):
        bound = delta_term + eps_term
        out[key] = {
            "bound": bound,
            "delta_term": delta_term,
            "eps_term": eps_term,
            "delta_share": delta_term / bound if bound > 0 else float("nan"),
            "eps_share": eps_term / bound if bound > 0 else float("nan"),
            "slack": bound - measured,
            "slack_from_delta": delta_term - exact_term,
            "slack_from_eps": eps_term - remainder,
            "holds": bool(measured <= bound),
        }
    return out


def bound_from_records(
    records: list[dict[str, Any]],
    traces: dict[str, list[dict[str, Any]]],
    *,
    seed: int | None = None,
    n_train: int | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every term of the bound for one seed's runs, from records and traces only.

    Returns:
        A JSON-able dict: ``delta``, ``eps``, ``reference``, ``rows`` (one per traced mixed
        run), ``only_accurate`` (one per Only-Accurate run), ``untraced`` (mixed runs left
        out: no trace).
    """
    seeds = sorted({r["seed"] for r in records if r["method"] == REFERENCE})
    if not seeds:
        raise ValueError("the records hold no Full run; run `wrel bench` with the full method")
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ValueError(f"no Full run for seed {seed}; seeds with one: {seeds}")
    runs = [r for r in records if r["seed"] == seed]
    version = data_version(records)
    n = n_train or estimate_n_train(records)
    fit = accurate_only_fit(records, n)
    ref = next(r for r in runs if r["method"] == REFERENCE)
    if ref["name"] not in traces:
        raise ValueError(f"{ref['name']} has no trace; Gamma(h*) needs Full's val trace")
    ref_ck = chosen_checkpoint(ref, traces[ref["name"]])
    delta = _delta(runs, traces, confidence)
    eps_n = fit.eps(n)
    rows, oa_rows, untraced = [], [], []
    for rec in sorted(runs, key=lambda r: (ratio(r), r["method"])):
        rho, measured = ratio(rec), test_risk(rec) - test_risk(ref)
        if rec["method"] == "only-accurate":
            bound = 2.0 * fit.eps(rho * n)
            oa_rows.append({"run": rec["name"], "rho": rho, "measured_gap": measured,
                            "bound": bound, "holds": bool(measured <= bound)})  # fmt: skip
            continue
        if rec["method"] in NOT_MIXED:
            continue
        if rec["name"] not in traces:
            untraced.append(rec["name"])
            continue
        ck = chosen_checkpoint(rec, traces[rec["name"]])
        rows.append(_mixed_row(rec, ck, ref_ck, measured, delta["estimate"], eps_n, confidence))
    return {
        "source": "records only (no run folders, nothing re-evaluated)",
        "seed": seed,
        "data_version": version,
        "n_train": n,
        "loss": "1 - IoU per sample (risk = 1 - mIoU/100); measured gaps on test vs Full",
        "delta": delta,
        "reference": ref_ck.to_dict(),
        "eps": {
            "proxy": "learning curve a/(2 sqrt m) of accurate-only test risks (in-sample here)",
            "a": fit.a,
            "r_inf": fit.r_inf,
            "sizes": sorted(set(fit.sample_sizes)),
            "residual_rms": fit.residual_rms,
            "eps_n": eps_n,
        },
        "rows": rows,
        "only_accurate": oa_rows,
        "untraced": untraced,
    }


def _mixed_row(
    rec: dict[str, Any],
    ck: ChosenCheckpoint,
    ref_ck: ChosenCheckpoint,
    measured: float,
    delta_max: float,
    eps_n: float,
    confidence: float,
) -> dict[str, Any]:
    """One mixed run's Gammas and its three bounds."""
    rho = ratio(rec)
    d_pair = max(abs(ck.gamma), abs(ref_ck.gamma))
    signed = ck.gamma - ref_ck.gamma
    return {
        "run": rec["name"], "method": rec["method"], "rho": rho, "measured_gap": measured,
        "gamma_mix": ck.to_dict(), "delta_pair": d_pair, "gamma_difference": signed,
        "gamma_difference_ci": _difference_ci(ck, ref_ck, confidence),
        "covered_by_theorem": rec["method"] in COVERED,
        "eps_n": eps_n,
        "bounds": _versions(rho, measured, delta_max, d_pair, signed, eps_n),
    }  # fmt: skip


def records_bound_markdown(result: dict[str, Any]) -> str:
    """The records-only result as markdown: the three bounds, each term's share."""
    d, e, ref = result["delta"], result["eps"], result["reference"]
    sizes = ", ".join(f"{s:.0f}" for s in e["sizes"])
    near = "" if ref["exact"] else f" nearest traced to chosen step {ref['chosen_step']}"
    lines = [
        f"Seed {result['seed']}, n = {result['n_train']} training samples; {result['source']}; "
        f"loss: {result['loss']}.",
        "",
        f"- Delta, class-wide proxy (val, max over {d['checkpoints']} traced checkpoints; at "
        f"{d['argmax']}): {d['estimate']:.3f} ({100 * d['confidence']:.0f}% CI "
        f"{d['ci'][0]:.3f}-{d['ci'][1]:.3f})",
        f"- Gamma(h*) proxy (Full's chosen checkpoint, val, step {ref['step']}"
        f"{near}): "
        f"{ref['gamma']:.3f}",
        f"- eps proxy: {e['proxy']}; a = {e['a']:.3f}, sizes {sizes}, fit residual "
        f"{e['residual_rms']:.3f}; eps_n = {e['eps_n']:.3f}",
        "",
        "Three versions of the Delta term (docs/theory.md section 4): `max` = 2(1-rho) Delta "
        "over all checkpoints (class-wide proxy); `pair` = 2(1-rho) max(|Gamma(h_mix)|, "
        "|Gamma(h*)|), the two hypotheses the proof uses; `signed` = (1-rho)(Gamma(h_mix) - "
        "Gamma(h*)), the proof's first line. Shares are term / bound. The slack (bound - "
        "measured) splits exactly into a part from the Delta term (Delta term - signed term) "
        "and a part from eps (2 eps_n - (measured - signed term)): the measured gap is the "
        "signed term plus R_rho(h_mix) - R_rho(h*), which the bound replaces by 2 eps_n.",
        "",
        "| rho | run | measured gap | Gamma(h_mix) | version | Delta term (share) | "
        "2 eps_n (share) | bound | slack (from Delta + from eps) | holds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        g = r["gamma_mix"]
        gamma = f"{g['gamma']:.3f}" + ("" if g["exact"] else "*")
        run = r["run"] + ("" if r["covered_by_theorem"] else " †")
        lo, hi = r["gamma_difference_ci"]
        for key, label in (("max_checkpoints", "max"), ("two_hypotheses", "pair"),
                           ("signed", "signed")):  # fmt: skip
            b = r["bounds"][key]
            if key == "signed":
                label = (
                    f"signed (CI of the term {(1 - r['rho']) * lo:.3f}-{(1 - r['rho']) * hi:.3f})"
                )
            lines.append(
                f"| {r['rho']:.0%} | {run} | {r['measured_gap']:.3f} | {gamma} | {label} | "
                f"{b['delta_term']:.3f} ({b['delta_share']:.0%}) | {b['eps_term']:.3f} "
                f"({b['eps_share']:.0%}) | {b['bound']:.3f} | {b['slack']:.3f} "
                f"({b['slack_from_delta']:.3f} + {b['slack_from_eps']:.3f}) | "
                f"{'yes' if b['holds'] else 'NO'} |"
            )
    lines += [
        "",
        "\\* the chosen checkpoint was not traced (mid-epoch); the nearest traced evaluation "
        "stands in.",
        "",
        "† not ERM on the class-name mixed risk (a reference bank or a teacher's pseudo-labels): "
        "outside the theorem's assumptions (section 6 covers a bank with its own Delta_b, which "
        "the records do not hold); shown for reference.",
        "",
        *(
            [f"Mixed runs without a trace, left out: {', '.join(result['untraced'])}.", ""]
            if result.get("untraced")
            else []
        ),
        "Only-Accurate: measured gap to Full against its bound 2 eps_{rho n} (same eps proxy):",
        "",
        "| rho | run | measured gap | bound | holds |",
        "|---|---|---|---|---|",
    ]
    for r in result["only_accurate"]:
        lines.append(
            f"| {r['rho']:.0%} | {r['run']} | {r['measured_gap']:.3f} | {r['bound']:.3f} | "
            f"{'yes' if r['holds'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"
