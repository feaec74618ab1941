"""Estimators of Delta and eps, and the arithmetic of the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wrel.evaluation.per_sample import losses_from_counts, paired_losses
from wrel.theory import (
    bound_table,
    bound_terms,
    estimate_delta,
    finite_class_eps,
    fit_eps,
    rademacher_eps,
)


def test_losses_from_counts() -> None:
    loss = losses_from_counts([2, 0, 0], [4, 3, 0])
    assert loss.tolist() == [0.5, 1.0, 1.0]
    assert losses_from_counts([0], [0], empty_score=1.0).tolist() == [0.0]


def test_paired_losses_aligns_by_id_and_rejects_mismatch() -> None:
    acc = [(7, "car", 3, 4), (2, "ship", 1, 2)]
    weak = [(2, "ship", 0, 2), (7, "car", 1, 4)]
    la, lw, ids = paired_losses(acc, weak)
    assert ids.tolist() == [2, 7]
    assert la.tolist() == [0.5, 0.25] and lw.tolist() == [1.0, 0.75]
    with pytest.raises(ValueError, match="different samples"):
        paired_losses(acc, weak[:1])
    with pytest.raises(ValueError, match="sample ids"):
        paired_losses([(None, None, 1, 1)], [(None, None, 1, 1)])


def _paired(rng: np.random.Generator, k: int, n: int, gaps: list[float]):
    base = rng.uniform(0.2, 0.6, size=(k, n))
    weak = np.clip(base + np.asarray(gaps)[:, None] + rng.normal(0, 0.05, (k, n)), 0, 1)
    return base, weak


@pytest.mark.parametrize("method", ["bootstrap", "hoeffding"])
def test_estimate_delta_max_gap_and_interval(method: str) -> None:
    rng = np.random.default_rng(0)
    la, lw = _paired(rng, 3, 400, [0.05, 0.2, 0.1])
    est = estimate_delta(la, lw, method=method, num_bootstrap=500, rng=1)
    gaps = np.abs(la.mean(1) - lw.mean(1))
    assert est.argmax == 1 and est.delta_hat == pytest.approx(gaps.max())
    assert est.lower <= est.delta_hat <= est.upper
    assert est.lower <= 0.2 <= est.upper  # covers the true largest gap
    for g, true in zip(est.gaps, gaps, strict=True):
        assert g.ci_low <= g.gap <= g.ci_high and g.gap == pytest.approx(true)
    if method == "hoeffding":
        half = math.sqrt(2 * math.log(2 * 3 / 0.05) / 400)
        assert est.upper == pytest.approx(est.delta_hat + half)


def test_bootstrap_is_seeded_and_narrower_than_hoeffding() -> None:
    rng = np.random.default_rng(3)
    la, lw = _paired(rng, 2, 300, [0.1, 0.0])
    a = estimate_delta(la, lw, num_bootstrap=300, rng=5)
    b = estimate_delta(la, lw, num_bootstrap=300, rng=5)
    h = estimate_delta(la, lw, method="hoeffding")
    assert a == b
    assert a.upper - a.lower < h.upper - h.lower
    assert a.gaps[1].ci_low == 0.0  # an interval straddling zero gives |D| >= 0


def test_estimate_delta_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimate_delta(np.array([1.5]), np.array([0.0]))
    with pytest.raises(ValueError, match="shape|both"):
        estimate_delta(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="method"):
        estimate_delta(np.zeros(3), np.zeros(3), method="t")


def test_fit_eps_recovers_constant() -> None:
    sizes = [100, 400, 1600]
    fit = fit_eps(sizes, [0.7 / math.sqrt(n) for n in sizes])
    assert fit.c == pytest.approx(0.7)
    assert fit.at(2500) == pytest.approx(0.014)
    assert fit.residual_rms == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        fit_eps([0, 10], [0.1, 0.1])


def test_eps_formulas() -> None:
    assert finite_class_eps(1, 2, 2 / math.e) == pytest.approx(0.5)
    assert rademacher_eps(0.1, 8, 2 / math.e**4) == pytest.approx(0.2 + 0.5)
    with pytest.raises(ValueError, match="delta"):
        finite_class_eps(3, 10, 1.5)


def test_bound_terms_and_critical_delta() -> None:
    fit = fit_eps([1000], [1.0 / math.sqrt(1000)])  # eps(n) = 1 / sqrt(n)
    t = bound_terms(0.25, 400, 0.05, fit.at, measured_gap=0.01)
    assert t.eps_n == pytest.approx(0.05) and t.eps_rho_n == pytest.approx(0.1)
    assert t.bound_mix == pytest.approx(2 * 0.75 * 0.05 + 0.1)
    assert t.bound_only_accurate == pytest.approx(0.2)
    assert t.delta_critical == pytest.approx((0.1 - 0.05) / 0.75)
    assert t.mixing_preferred and t.holds is True
    worse = bound_terms(0.25, 400, 0.2, fit.at, measured_gap=0.5)
    assert not worse.mixing_preferred and worse.holds is False
    assert bound_terms(1.0, 400, 0.3, fit.at).bound_mix == pytest.approx(0.1)
    assert set(t.to_dict()) >= {"rho", "bound_mix", "holds", "mixing_preferred"}


def test_bound_table_per_rho() -> None:
    rows = bound_table([0.1, 0.5], 1000, [0.1, 0.05], lambda m: 1 / math.sqrt(m), [0.02, None])
    assert [r.rho for r in rows] == [0.1, 0.5]
    assert rows[0].holds is True and rows[1].holds is None
    with pytest.raises(ValueError, match="one per rho"):
        bound_table([0.1, 0.5], 1000, [0.1], lambda m: 0.1)
