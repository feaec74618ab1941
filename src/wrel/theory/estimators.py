"""Estimators for the terms of the bound: ``Delta`` from paired per-sample losses, ``eps`` fits.

Inputs are per-sample losses in [0, 1], typically ``1 - IoU`` from
:func:`wrel.evaluation.per_sample.paired_losses` over ``Evaluator.per_sample()`` records of the same checkpoint scored twice on data that has
both expression kinds (the embedded benchmark): once with the accurate expressions, once with
the class names. Everything is numpy; randomness comes in as a seed or ``np.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DeltaEstimate",
    "EpsFit",
    "GapEstimate",
    "LearningCurveFit",
    "estimate_delta",
    "fit_eps",
    "fit_learning_curve",
    "subsample_eps",
]


@dataclass(frozen=True)
class GapEstimate:
    """``|R - R_w|`` of one hypothesis with a confidence interval.

    Attributes:
        risk: empirical accurate risk ``hat R``.
        risk_weak: empirical class-name risk ``hat R_w``.
        gap: ``|hat R - hat R_w|``.
        ci_low: lower confidence limit of ``|R - R_w|``.
        ci_high: upper confidence limit of ``|R - R_w|``.
    """

    risk: float
    risk_weak: float
    gap: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class DeltaEstimate:
    """``max_k |R_k - R_w,k|`` over the hypotheses (checkpoints) given.

    Attributes:
        delta_hat: the largest empirical gap.
        lower: simultaneous lower confidence limit of the largest true gap.
        upper: simultaneous upper confidence limit of the largest true gap.
        argmax: index of the hypothesis with the largest empirical gap.
        gaps: one :class:`GapEstimate` per hypothesis.
        method: ``"bootstrap"`` or ``"hoeffding"``.
        confidence: joint coverage of the intervals (Bonferroni over hypotheses).
        num_samples: samples per hypothesis.
    """

    delta_hat: float
    lower: float
    upper: float
    argmax: int
    gaps: list[GapEstimate]
    method: str
    confidence: float
    num_samples: int


def _abs_interval(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval for ``|D|`` from an interval ``[lo, hi]`` for ``D``."""
    straddles = (lo <= 0) & (hi >= 0)
    low = np.where(straddles, 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    return low, np.maximum(np.abs(lo), np.abs(hi))


def _check_losses(loss_accurate: np.ndarray, loss_weak: np.ndarray) -> tuple[np.ndarray, ...]:
    la = np.atleast_2d(np.asarray(loss_accurate, dtype=np.float64))
    lw = np.atleast_2d(np.asarray(loss_weak, dtype=np.float64))
    if la.shape != lw.shape or la.ndim != 2 or la.shape[1] == 0:
        raise ValueError(
            f"loss arrays must both be (K, N) with N > 0 (or (N,)), got {la.shape} and {lw.shape}"
        )
    if la.min() < 0 or la.max() > 1 or lw.min() < 0 or lw.max() > 1:
        raise ValueError("per-sample losses must lie in [0, 1] (use 1 - IoU)")
    return la, lw


def estimate_delta(
    loss_accurate: np.ndarray,
    loss_weak: np.ndarray,
    *,
    method: str = "bootstrap",
    confidence: float = 0.95,
    num_bootstrap: int = 2000,
    rng: np.random.Generator | int | None = 0,
) -> DeltaEstimate:
    """Estimate ``Delta`` as the largest paired gap ``|R_k - R_w,k|`` over K hypotheses.

    Args:
        loss_accurate: per-sample losses with accurate expressions, ``(K, N)`` or ``(N,)``.
        loss_weak: the same samples' losses with class-name expressions, same shape. For the
            bank version of the bound (docs/theory.md section 6) pass the losses of the weak
            *training* samples with their class name + bank prompts, and as ``loss_accurate``
            their losses with the hidden accurate expressions.
        method: ``"bootstrap"`` (paired percentile bootstrap, resampling samples jointly for
            every hypothesis) or ``"hoeffding"`` (distribution-free: a paired difference lies
            in [-1, 1], half-width ``sqrt(2 log(2 K / alpha) / N)``).
        confidence: joint coverage ``1 - alpha``; each hypothesis gets ``alpha / K``.
        num_bootstrap: bootstrap replicates.
        rng: seed or generator for the bootstrap.

    Returns:
        The :class:`DeltaEstimate`.
    """
    _check_prob_open(confidence)
    la, lw = _check_losses(loss_accurate, loss_weak)
    num_hyp, n = la.shape
    diff = la - lw  # (K, N)
    mean = diff.mean(axis=1)  # (K,)
    alpha = (1.0 - confidence) / num_hyp
    if method == "hoeffding":
        half = math.sqrt(2.0 * math.log(2.0 / alpha) / n)
        lo, hi = mean - half, mean + half
    elif method == "bootstrap":
        gen = np.random.default_rng(rng)
        weights = gen.multinomial(n, np.full(n, 1.0 / n), size=num_bootstrap)  # (B, N)
        boot = diff @ weights.T / n  # (K, B) resampled mean differences
        lo = np.quantile(boot, alpha / 2.0, axis=1)
        hi = np.quantile(boot, 1.0 - alpha / 2.0, axis=1)
    else:
        raise ValueError(f"method {method!r} is not 'bootstrap' or 'hoeffding'")
    low, high = _abs_interval(lo, hi)
    low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
    gaps = [
        GapEstimate(float(a), float(w), float(abs(m)), float(lo_), float(hi_))
        for a, w, m, lo_, hi_ in zip(la.mean(1), lw.mean(1), mean, low, high, strict=True)
    ]
    k = int(np.argmax(np.abs(mean)))
    return DeltaEstimate(
        delta_hat=float(abs(mean[k])),
        lower=float(low.max()),
        upper=float(high.max()),
        argmax=k,
        gaps=gaps,
        method=method,
        confidence=confidence,
        num_samples=n,
    )


def _check_prob_open(value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class EpsFit:
    """Least-squares fit ``eps(n) = c / sqrt(n)`` to measured generalisation gaps.

    Attributes:
        c: the fitted constant.
        sample_sizes: the training-set sizes measured.
        gaps: the measured ``|val risk - train risk|`` at each size.
    """

    c: float
    sample_sizes: tuple[float, ...]
    gaps: tuple[float, ...]

    def at(self, n: float) -> float:
        """The fitted ``eps`` at ``n`` samples."""
        if not n > 0:
            raise ValueError(f"sample size must be positive, got {n!r}")
        return self.c / math.sqrt(n)

    @property
    def residual_rms(self) -> float:
        """Root-mean-square residual of the fit (in loss units)."""
        pred = np.array([self.at(n) for n in self.sample_sizes])
        return float(np.sqrt(np.mean((np.asarray(self.gaps) - pred) ** 2)))


def fit_eps(sample_sizes: Sequence[float], gaps: Sequence[float]) -> EpsFit:
    """Fit ``c / sqrt(n)`` through measured gaps (no intercept): ``c = sum g x / sum x^2``.

    Args:
        sample_sizes: training-set sizes ``n_j`` (positive).
        gaps: ``|R_val - R_train|`` of the model trained on ``n_j`` samples (losses in [0, 1]).

    Note:
        This is an empirical proxy: the gap at the trained model is at most the uniform
        deviation ``sup_h |R - hat R|``, so the fit can under-estimate ``eps_n``.
    """
    x = np.asarray(sample_sizes, dtype=np.float64)
    g = np.abs(np.asarray(gaps, dtype=np.float64))
    if x.shape != g.shape or x.size == 0 or (x <= 0).any():
        raise ValueError(
            f"need one gap per positive sample size, got sizes {list(x)} and gaps {list(g)}"
        )
    inv = 1.0 / np.sqrt(x)
    c = float(np.dot(g, inv) / np.dot(inv, inv))
    return EpsFit(c=c, sample_sizes=tuple(x.tolist()), gaps=tuple(g.tolist()))


@dataclass(frozen=True)
class LearningCurveFit:
    """Least-squares fit ``R(m) = r_inf + a / sqrt(m)`` of test risks against training-set size.

    The eps proxy of ``wrel bound`` when train risks are not recorded: ERM on ``m`` accurate
    samples has excess risk at most ``2 eps_m`` (docs/theory.md section 4), so a measured
    learning curve ``a / sqrt(m)`` is matched by ``eps_m = a / (2 sqrt(m))``, the smallest
    ``c / sqrt(m)`` rate that the curve does not contradict. It is a proxy (a lower estimate of
    the class-wide uniform deviation), not a guarantee.

    Attributes:
        r_inf: the fitted risk at infinite data.
        a: the fitted slope (clipped at 0: risk does not grow with data).
        sample_sizes: the sizes fitted (one entry per run).
        risks: the risks fitted.
    """

    r_inf: float
    a: float
    sample_sizes: tuple[float, ...]
    risks: tuple[float, ...]

    def risk(self, m: float) -> float:
        """The fitted risk at ``m`` samples."""
        if not m > 0:
            raise ValueError(f"sample size must be positive, got {m!r}")
        return self.r_inf + self.a / math.sqrt(m)

    def eps(self, m: float) -> float:
        """The eps proxy ``a / (2 sqrt(m))``."""
        if not m > 0:
            raise ValueError(f"sample size must be positive, got {m!r}")
        return self.a / (2.0 * math.sqrt(m))

    @property
    def num_sizes(self) -> int:
        """How many distinct training-set sizes the fit saw."""
        return len(set(self.sample_sizes))

    @property
    def residual_rms(self) -> float:
        """Root-mean-square residual of the fit (in loss units)."""
        pred = np.array([self.risk(m) for m in self.sample_sizes])
        return float(np.sqrt(np.mean((np.asarray(self.risks) - pred) ** 2)))


def fit_learning_curve(sample_sizes: Sequence[float], risks: Sequence[float]) -> LearningCurveFit:
    """Fit ``r_inf + a / sqrt(m)`` by least squares (``a >= 0``).

    Args:
        sample_sizes: training-set size of each run (positive; sizes may repeat over seeds).
        risks: each run's test risk ``1 - mIoU / 100`` (in [0, 1]).
    """
    x = np.asarray(sample_sizes, dtype=np.float64)
    r = np.asarray(risks, dtype=np.float64)
    if x.shape != r.shape or x.ndim != 1 or (x <= 0).any():
        raise ValueError(f"need one risk per positive size, got {list(x)} and {list(r)}")
    if len(set(x.tolist())) < 2:
        raise ValueError(
            "a learning curve needs runs at two or more training-set sizes, got "
            f"{sorted({float(v) for v in x.tolist()})}"
        )
    inv = 1.0 / np.sqrt(x)
    design = np.stack([np.ones_like(inv), inv], axis=1)
    (r_inf, a), *_ = np.linalg.lstsq(design, r, rcond=None)
    if a < 0:  # a flat or rising curve: the best non-negative slope is 0
        r_inf, a = float(r.mean()), 0.0
    return LearningCurveFit(
        r_inf=float(r_inf), a=float(a), sample_sizes=tuple(x.tolist()), risks=tuple(r.tolist())
    )


def subsample_eps(
    losses: np.ndarray,
    sizes: Sequence[int],
    *,
    delta: float = 0.05,
    num_draws: int = 200,
    rng: np.random.Generator | int | None = 0,
) -> EpsFit:
    """``eps_m`` of a *finite* class from sub-sampled held-out losses, fitted as ``c / sqrt(m)``.

    For each size ``m``, draw ``m`` of the ``N`` samples with replacement ``num_draws`` times;
    the ``1 - delta`` quantile over draws of ``max_k |mean_draw(loss_k) - mean(loss_k)|`` is the
    uniform deviation at ``m`` samples over the ``K`` hypotheses given (e.g. every checkpoint
    the runs visited, scored on val). A proxy: it covers only those ``K`` hypotheses, not the
    class training selects from, so it can be far below the ``eps_n`` of docs/theory.md.

    Args:
        losses: ``(K, N)`` per-sample losses in [0, 1].
        sizes: sub-sample sizes (at least one; each positive).
        delta: failure probability.
        num_draws: draws per size.
        rng: seed or generator.
    """
    values = np.atleast_2d(np.asarray(losses, dtype=np.float64))
    if values.ndim != 2 or values.shape[1] == 0 or not sizes or min(sizes) < 1:
        raise ValueError(f"need (K, N) losses and positive sizes, got {values.shape}, {sizes}")
    gen = np.random.default_rng(rng)
    full = values.mean(axis=1)
    gaps = []
    for m in sizes:
        n = values.shape[1]
        counts = gen.multinomial(int(m), np.full(n, 1.0 / n), size=num_draws)  # (draws, N)
        draws = values @ counts.T / float(m)  # (K, draws) sub-sample means
        worst = np.abs(draws - full[:, None]).max(axis=0)
        gaps.append(float(np.quantile(worst, 1.0 - delta)))
    return fit_eps([float(m) for m in sizes], gaps)
