"""The terms of the mixed-training bound of ``docs/theory.md`` and their combination.

For a loss in [0, 1], ERM on the empirical mixed risk over ``n`` samples satisfies, with
probability at least ``1 - delta``::

    R(h_mix) - R(h*) <= 2 (1 - rho) Delta + 2 eps_n          (mixed training)
    R(h_acc) - R(h*) <= 2 eps_{rho n}                         (Only-Accurate)

so the mixed bound is the smaller one exactly when ``(1 - rho) Delta < eps_{rho n} - eps_n``.
Everything here is plain arithmetic on floats; estimators of ``Delta`` and ``eps`` live in
:mod:`wrel.theory.estimators`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "BoundTerms",
    "bound_table",
    "bound_terms",
    "finite_class_eps",
    "rademacher_eps",
]

EpsFunction = Callable[[float], float]


def _check_prob(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def _check_n(n: float) -> None:
    if not n > 0:
        raise ValueError(f"sample size n must be positive, got {n!r}")


def rademacher_eps(rademacher: float, n: float, delta: float) -> float:
    """Two-sided uniform deviation ``2 Rad_n + sqrt(log(2 / delta) / (2 n))`` (loss in [0, 1]).

    Args:
        rademacher: Rademacher complexity ``Rad_n`` of the loss class at sample size ``n``.
        n: number of samples.
        delta: failure probability.
    """
    _check_prob(delta, "delta")
    _check_n(n)
    if rademacher < 0:
        raise ValueError(f"a Rademacher complexity is non-negative, got {rademacher!r}")
    return 2.0 * rademacher + math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def finite_class_eps(num_hypotheses: int, n: float, delta: float) -> float:
    """Hoeffding + union bound ``sqrt(log(2 |H| / delta) / (2 n))`` for a finite class.

    With probability at least ``1 - delta`` every ``h`` of a class of ``num_hypotheses`` members
    has ``|R(h) - hat R(h)| <=`` this value, for a loss in [0, 1] and ``n`` independent samples.
    """
    _check_prob(delta, "delta")
    _check_n(n)
    if num_hypotheses < 1:
        raise ValueError(f"num_hypotheses must be at least 1, got {num_hypotheses!r}")
    return math.sqrt(math.log(2.0 * num_hypotheses / delta) / (2.0 * n))


@dataclass(frozen=True)
class BoundTerms:
    """Every term of the bound at one accurate ratio ``rho`` (risks as fractions of loss 1).

    Attributes:
        rho: share of accurate expressions in the training set.
        n: number of training samples.
        delta_hat: the estimate of ``Delta = sup_h |R(h) - R_w(h)|`` used.
        eps_n: uniform deviation at ``n`` samples.
        eps_rho_n: uniform deviation at ``rho * n`` samples (the Only-Accurate training set).
        bound_mix: ``2 (1 - rho) delta_hat + 2 eps_n``.
        bound_only_accurate: ``2 eps_rho_n``.
        delta_critical: largest ``Delta`` for which mixing has the smaller bound,
            ``(eps_rho_n - eps_n) / (1 - rho)`` (``inf`` at ``rho = 1``).
        measured_gap: the measured excess risk ``R(h_mix) - R(h*)`` (proxy), if given.
        holds: ``measured_gap <= bound_mix``, or None without a measurement.
    """

    rho: float
    n: float
    delta_hat: float
    eps_n: float
    eps_rho_n: float
    bound_mix: float
    bound_only_accurate: float
    delta_critical: float
    measured_gap: float | None = None
    holds: bool | None = None

    @property
    def mixing_preferred(self) -> bool:
        """True when the mixed bound is below Only-Accurate's."""
        return self.bound_mix < self.bound_only_accurate

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, including ``mixing_preferred``."""
        return {**asdict(self), "mixing_preferred": self.mixing_preferred}


def bound_terms(
    rho: float,
    n: float,
    delta_hat: float,
    eps: EpsFunction,
    measured_gap: float | None = None,
) -> BoundTerms:
    """Combine ``Delta`` and ``eps`` into the bound at one accurate ratio.

    Args:
        rho: accurate ratio in (0, 1].
        n: training-set size.
        delta_hat: estimate (or upper confidence limit) of ``Delta``, in [0, 1].
        eps: ``eps(m)``: uniform deviation at ``m`` samples, e.g. ``EpsFit.at`` or
            ``lambda m: finite_class_eps(k, m, 0.05)``.
        measured_gap: measured ``R(h_mix) - R(h*)`` to check against the bound.
    """
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must lie in (0, 1], got {rho!r}")
    _check_n(n)
    if not 0.0 <= delta_hat <= 1.0:
        raise ValueError(f"delta_hat must lie in [0, 1] for a loss in [0, 1], got {delta_hat!r}")
    eps_n, eps_rho_n = float(eps(n)), float(eps(rho * n))
    critical = (eps_rho_n - eps_n) / (1.0 - rho) if rho < 1.0 else math.inf
    bound_mix = 2.0 * (1.0 - rho) * delta_hat + 2.0 * eps_n
    return BoundTerms(
        rho=rho,
        n=n,
        delta_hat=delta_hat,
        eps_n=eps_n,
        eps_rho_n=eps_rho_n,
        bound_mix=bound_mix,
        bound_only_accurate=2.0 * eps_rho_n,
        delta_critical=critical,
        measured_gap=measured_gap,
        holds=None if measured_gap is None else bool(measured_gap <= bound_mix),
    )


def bound_table(
    rhos: Sequence[float],
    n: float,
    delta_hat: float | Sequence[float],
    eps: EpsFunction,
    measured_gaps: Sequence[float | None] | None = None,
) -> list[BoundTerms]:
    """:func:`bound_terms` for each ``rho`` (``delta_hat`` may be one value or one per ``rho``)."""
    deltas = [delta_hat] * len(rhos) if isinstance(delta_hat, int | float) else list(delta_hat)
    gaps = list(measured_gaps) if measured_gaps is not None else [None] * len(rhos)
    if len(deltas) != len(rhos) or len(gaps) != len(rhos):
        raise ValueError(
            f"got {len(rhos)} rhos, {len(deltas)} delta_hat values and {len(gaps)} measured gaps; "
            "give one per rho"
        )
    return [bound_terms(r, n, float(d), eps, g) for r, d, g in zip(rhos, deltas, gaps, strict=True)]
