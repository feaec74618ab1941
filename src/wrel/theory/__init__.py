"""The bound of ``docs/theory.md`` and its estimators (pure numpy).

- :mod:`wrel.theory.bound`: ``eps`` formulas and :class:`BoundTerms` (the bound at each rho).
- :mod:`wrel.theory.estimators`: ``Delta`` from paired per-sample losses, ``eps`` fits.
"""

from wrel.theory.bound import (
    BoundTerms,
    bound_table,
    bound_terms,
    finite_class_eps,
    rademacher_eps,
)
from wrel.theory.estimators import (
    DeltaEstimate,
    EpsFit,
    GapEstimate,
    LearningCurveFit,
    estimate_delta,
    fit_eps,
    fit_learning_curve,
    subsample_eps,
)

__all__ = [
    "BoundTerms",
    "DeltaEstimate",
    "EpsFit",
    "GapEstimate",
    "LearningCurveFit",
    "bound_table",
    "bound_terms",
    "estimate_delta",
    "finite_class_eps",
    "fit_eps",
    "fit_learning_curve",
    "rademacher_eps",
    "subsample_eps",
]
