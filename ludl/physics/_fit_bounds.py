"""Settings and the box of the variables the Levenberg–Marquardt core iterates on (log rates, z transform).

Private module: `ludl.physics.kinetics` is the public entry point; `ludl.physics._fit_core` is the one user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ludl.physics._fit_numpy import Array
from ludl.physics._tac_models import (
    BIEXP_UPTAKE,
    DEFAULT_UPTAKE_RATE_PER_H,
    MAX_FIRST_SAMPLE_EFOLDS,
    MAX_RATE_PER_H,
    MAX_WASHOUT_EFOLDS,
    MIN_RATE_RATIO,
    MONO,
    TRIEXP,
)

__all__ = ["Bounds", "CoreSettings", "rate_bounds"]


@dataclass(frozen=True)
class CoreSettings:
    """Bounds and iteration limits of the fitting core (rates in 1/h)."""

    lambda_phys_per_h: float
    uptake_rate_per_h: float = DEFAULT_UPTAKE_RATE_PER_H
    max_rate_per_h: float = MAX_RATE_PER_H
    n_grid: int = 16
    max_iter: int = 50


@dataclass
class Bounds:
    """Box for the LM variables: v1 = ln λ1; v2 = ln λ2 (mono: unused) or z(λ2) for a second rate.

    z(x), x = λ2·t_ref: e^{1−x} for x ≥ 1 (∝ e^{−λ2 t_ref}, near-linear in the model where only the
    first samples see the rate) and 1 − ln x for x ≤ 1 (log-like, where late samples see it); C¹ at
    x = 1. As ln λ2 a fast rate's gradient vanishes like e^{−λ2 t} and LM stalls on that plateau; as
    e^{−λ2 t_ref} a slow rate enters as p^{t/t_ref} and LM crawls. z is decreasing in λ2.
    """

    lo1: float
    hi1: float
    log_ratio: float
    fast: bool  # v2 is z(λ2) (models with two rates), not ln λ2
    t_ref: float
    lo2: float  # fast form: floor of z (the fastest rate)
    hi2: float  # ceiling of ln λ2

    def bounds2(self, xp: Any, v1: Array) -> tuple[Any, Any]:
        """Bounds of v2 given v1: λ2 at least MIN_RATE_RATIO above λ1 and below its ceiling."""
        if self.fast:
            x = xp.exp(v1 + self.log_ratio) * self.t_ref
            return self.lo2, xp.where(x >= 1.0, xp.exp(1.0 - x), 1.0 - xp.log(x))
        return v1 + self.log_ratio, self.hi2

    def edges(self, xp: Any, v1: Array) -> tuple[Any, Any, Any, float]:
        """`bounds2` at v1 and the bounds' slopes d(bound)/dv1: the directions along the edges.

        Fast form: the upper bound is the λ2 = MIN_RATE_RATIO·λ1 edge, the lower one fixed; log form: the
        reverse. Computed together because they share their exponentials.
        """
        if not self.fast:
            return v1 + self.log_ratio, self.hi2, 0.0, 1.0
        x = xp.exp(v1 + self.log_ratio) * self.t_ref
        big = x >= 1.0
        e = xp.exp(1.0 - x)
        return self.lo2, xp.where(big, e, 1.0 - xp.log(x)), xp.where(big, -e * x, -1.0), 0.0

    def project(self, xp: Any, v1: Array, v2: Array) -> tuple[Array, Array]:
        v1 = xp.clip(v1, self.lo1, self.hi1)
        lo, hi = self.bounds2(xp, v1)
        return v1, xp.clip(v2, lo, hi)

    def lambda2(self, xp: Any, v2: Array) -> Array:
        if not self.fast:
            return xp.exp(v2)
        # Both branches are finite everywhere (z > 0), so where() needs no masking.
        return xp.where(v2 <= 1.0, 1.0 - xp.log(v2), xp.exp(1.0 - v2)) / self.t_ref

    def v2_of(self, lambda2: np.ndarray) -> np.ndarray:
        if not self.fast:
            return np.log(lambda2)
        x = lambda2 * self.t_ref
        return np.where(x >= 1.0, np.exp(1.0 - np.maximum(x, 1.0)), 1.0 - np.log(np.minimum(x, 1.0)))

    def d_exp2(self, xp: Any, lam2: Array, v2: Array, t: Array, e2: Array) -> Array:
        """∂e^{−λ2 t}/∂v2 from e2 = e^{−λ2 t} (no extra exponentials over (T, N)); λ2, v2 per curve (N,)."""
        if not self.fast:
            return -(lam2 * t) * e2
        # Fast branch (z ≤ 1): (t/t_ref)·e^{−λ2 (t − t_ref) − 1}, e^{λ2 t_ref − 1} ≤ e^9 since λ2·t_ref ≤ 10;
        # log branch: λ2 t e^{−λ2 t}. Both are t·(a factor per curve)·e2.
        per_curve = xp.where(v2 <= 1.0, xp.exp(lam2 * self.t_ref - 1.0) / self.t_ref, lam2)
        return (t * per_curve) * e2


def rate_bounds(model: str, s: CoreSettings, t_ref: float, t_first: float) -> Bounds:
    """The box of `model`'s LM variables; t_ref: first sample > 0 (h), t_first: first sample (h)."""
    log_ratio = math.log(MIN_RATE_RATIO)
    lo1 = math.log(s.lambda_phys_per_h)
    floor_top = lo1 + 3.0 * log_ratio  # keeps the box non-empty even for a very late first sample
    wash_top = math.log(s.max_rate_per_h)
    if t_first > 0:
        wash_top = min(wash_top, math.log(MAX_WASHOUT_EFOLDS / t_first))
    wash_top = max(wash_top, floor_top)
    if model == MONO:
        return Bounds(lo1, wash_top, log_ratio, False, t_ref, wash_top + log_ratio, wash_top + log_ratio)
    if model == BIEXP_UPTAKE:
        top = math.log(s.max_rate_per_h)
    elif model == TRIEXP:
        # Washouts slower than the fixed uptake, so both amplitude terms stay non-negative curves.
        top = min(math.log(s.uptake_rate_per_h) - log_ratio, wash_top)
    else:
        top = wash_top
    top = max(min(top, math.log(MAX_FIRST_SAMPLE_EFOLDS / t_ref)), floor_top)
    x_top = math.exp(top) * t_ref  # z at the fastest rate
    z_floor = math.exp(1.0 - x_top) if x_top >= 1.0 else 1.0 - math.log(x_top)
    return Bounds(lo1, min(top - log_ratio, wash_top), log_ratio, True, t_ref, z_floor, top)
