"""The bound on a toy problem where every term is exact.

Points ``x`` are uniform on {0, ..., 19}; ``P(y = 1 | x)`` is 0.1 below 11 and 0.9 from 11 on.
The accurate input is ``x``; the weak input ``4 * floor(x / 4)`` loses the low bits (as a class
name loses "which one"). Hypotheses are the 21 thresholds ``h_t(v) = 1[v >= t]``; the loss is 0-1.
"""

from __future__ import annotations

import numpy as np
import pytest

from wrel.theory import bound_terms, finite_class_eps, rademacher_eps

NUM_X = 20
THRESHOLDS = np.arange(NUM_X + 1)  # (H,)
ETA = np.where(np.arange(NUM_X) >= 11, 0.9, 0.1)  # P(y=1 | x)


def weak_view(x: np.ndarray) -> np.ndarray:
    return 4 * (x // 4)


def exact_risk(view: np.ndarray) -> np.ndarray:
    """Exact risk of every threshold when the input is ``view[x]``; ``(H,)``."""
    fires = view[None, :] >= THRESHOLDS[:, None]  # (H, X)
    return np.where(fires, 1.0 - ETA, ETA).mean(axis=1)


R = exact_risk(np.arange(NUM_X))  # accurate risk of each h
R_W = exact_risk(weak_view(np.arange(NUM_X)))  # class-name ("weak") risk of each h
DELTA = float(np.abs(R - R_W).max())


def draw(rng: np.random.Generator, shape: tuple[int, ...], rho: float, fixed: bool = False):
    """Samples and their per-hypothesis losses ``(..., H, n)`` and accurate flags ``(..., n)``."""
    x = rng.integers(0, NUM_X, size=shape)
    y = rng.random(shape) < ETA[x]
    if fixed:  # exactly round(rho n) accurate, positions chosen at random
        accurate = rng.permuted(np.arange(shape[-1]) < round(rho * shape[-1]), axis=-1)
        accurate = np.broadcast_to(accurate, shape)
    else:  # each sample accurate with probability rho, independently
        accurate = rng.random(shape) < rho
    view = np.where(accurate, x, weak_view(x))
    losses = (view[..., None, :] >= THRESHOLDS[:, None]) != y[..., None, :]
    return losses.astype(np.float64), accurate


def test_exact_terms_are_sensible() -> None:
    assert R.min() >= 0 and R.max() <= 1 and R_W.min() >= 0 and R_W.max() <= 1
    assert int(np.argmin(R)) == 11 and R.min() == pytest.approx(0.1)
    assert 0 < DELTA < 0.5  # the weak view loses information, but not everything


@pytest.mark.parametrize("rho", [0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_holds_exactly_and_is_not_vacuous(rho: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    losses, accurate = draw(rng, (2000,), rho)
    r_rho = rho * R + (1 - rho) * R_W  # exact mixed risk (independent weak assignment)
    emp = losses.mean(axis=1)  # empirical mixed risk of every h
    eps_n = float(np.abs(r_rho - emp).max())  # exact sup deviation on this sample
    h_mix, h_star = int(np.argmin(emp)), int(np.argmin(R))
    # Every step of the proof's chain, then the bound.
    assert R[h_mix] <= r_rho[h_mix] + (1 - rho) * DELTA + 1e-12
    assert r_rho[h_mix] <= emp[h_mix] + eps_n + 1e-12
    assert emp[h_mix] <= emp[h_star]
    assert emp[h_star] <= r_rho[h_star] + eps_n + 1e-12
    assert r_rho[h_star] <= R[h_star] + (1 - rho) * DELTA + 1e-12
    terms = bound_terms(rho, 2000, DELTA, lambda m: eps_n, measured_gap=R[h_mix] - R[h_star])
    assert terms.holds is True
    assert terms.bound_mix == pytest.approx(2 * (1 - rho) * DELTA + 2 * eps_n)
    assert terms.bound_mix < 1.0  # not vacuous


@pytest.mark.parametrize("seed", [0, 1])
def test_only_accurate_bound_holds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rho = 0.1
    losses, accurate = draw(rng, (2000,), rho)
    acc_losses = losses[:, accurate]  # only the accurate samples: views are x
    emp = acc_losses.mean(axis=1)
    eps_rho_n = float(np.abs(R - emp).max())
    h_acc = int(np.argmin(emp))
    assert R[h_acc] - R.min() <= 2 * eps_rho_n + 1e-12


@pytest.mark.parametrize("fixed", [False, True])
def test_finite_class_eps_holds_in_most_draws(fixed: bool) -> None:
    """Monte Carlo: sup_h |R_rho - hat R_rho| <= eps in >= 1 - delta of the draws."""
    rng = np.random.default_rng(123)
    num_draws, n, rho, delta = 400, 100, 0.3, 0.1
    losses, accurate = draw(rng, (num_draws, n), rho, fixed=fixed)
    rho_eff = round(rho * n) / n if fixed else rho
    r_rho = rho_eff * R + (1 - rho_eff) * R_W  # (H,)
    sup_dev = np.abs(losses.mean(axis=-1) - r_rho).max(axis=-1)  # (draws,)
    eps = finite_class_eps(len(THRESHOLDS), n, delta)
    coverage = float((sup_dev <= eps).mean())
    assert coverage >= 1 - delta
    assert eps < 0.5  # a bound that says something at n = 100
    # Massart: Rad_n <= sqrt(2 log |H| / n), so the Rademacher form holds as well.
    eps_rad = rademacher_eps(np.sqrt(2 * np.log(len(THRESHOLDS)) / n), n, delta)
    assert float((sup_dev <= eps_rad).mean()) >= 1 - delta
