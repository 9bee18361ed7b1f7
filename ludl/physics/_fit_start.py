"""Starting rates for the TAC fitting core: an exhaustive grid (matrix products) or, for the mono-exponential, a
closed-form log-linear rate refined by Newton steps; and the closed-form two-amplitude NNLS both the grid and the core
use.

Private module: `ludl.physics.kinetics` is the public entry point; `ludl.physics._fit_core` the one user. Backend
generic (`NumpyXp`, `TorchXp`); curves in columns (T, N) except where a function says rows (N, T).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ludl.physics._fit_bounds import Bounds, CoreSettings
from ludl.physics._fit_numpy import Array
from ludl.physics._tac_models import BIEXP_UPTAKE, MONO, TRIEXP

__all__ = ["grid_start", "mono_start", "nnls2"]

# Newton steps refining the mono start before LM confirms convergence (quadratic: 1e-2 → 1e-4 → 1e-8 → 1e-16).
_MONO_NEWTON_STEPS = 3


def nnls2(xp: Any, m11: Array, m12: Array, m22: Array, b1: Array, b2: Array) -> tuple[Array, ...]:
    """Closed-form non-negative least squares for two basis functions (Gram m, projections b).

    Returns c1, c2, the masks (both active, only 1, only 2) and the safe det, m11, m22 used.
    """
    # Basis functions that underflowed to zero (very fast rates) get a zero amplitude, not 0/0.
    ok1, ok2 = m11 > 0, m22 > 0
    m11, m22 = xp.where(ok1, m11, 1.0), xp.where(ok2, m22, 1.0)
    det = m11 * m22 - m12 * m12
    ok = ok1 & ok2 & (det > 1e-9 * m11 * m22)
    det = xp.where(ok, det, 1.0)
    c1u = (m22 * b1 - m12 * b2) / det
    c2u = (m11 * b2 - m12 * b1) / det
    both = ok & (c1u > 0) & (c2u > 0)
    # Otherwise the optimum lies on a face: one amplitude zero, the other its 1-D fit (the better one).
    p1 = xp.where(ok1, xp.maximum(b1, 0.0), 0.0)
    p2 = xp.where(ok2, xp.maximum(b2, 0.0), 0.0)
    first = p1 * p1 / m11 >= p2 * p2 / m22
    c1 = xp.where(both, c1u, xp.where(first, p1 / m11, 0.0))
    c2 = xp.where(both, c2u, xp.where(first, 0.0, p2 / m22))
    return c1, c2, both, (~both) & (c1 > 0), (~both) & (c2 > 0), det, m11, m22


def grid_start(
    xp: Any, model: str, t: Array, y: Array, w: Array | None, s: CoreSettings, b: Bounds
) -> tuple[Array, Array]:
    """Best starting log-rates per voxel from an exhaustive grid (scores are matrix products)."""
    t_np = xp.to_numpy(t).astype(np.float64)
    e3_np = np.exp(-s.uptake_rate_per_h * t_np) if model == TRIEXP else None
    if model == MONO:
        rates = np.exp(np.linspace(b.lo1, b.hi1, 4 * s.n_grid))
        i_idx = np.arange(rates.size)
        j_idx = i_idx
    else:
        rates = np.exp(np.linspace(b.lo1, b.hi2, s.n_grid))
        i_idx, j_idx = np.nonzero(np.log(rates)[None, :] - np.log(rates)[:, None] >= b.log_ratio - 1e-12)
    basis = np.exp(-rates[:, None] * t_np[None, :])  # (R, T)
    if e3_np is not None:
        basis = basis - e3_np
    yw = y if w is None else y * w

    def gram(a: np.ndarray, c: np.ndarray, rows: slice) -> Array:
        # Σ_t w a c per grid point: (P,) without weights or with (T,) weights, (n, P) with per-voxel ones.
        if w is None:
            return xp.asarray((a * c).sum(axis=1))
        if len(w.shape) == 1:
            return xp.asarray((a * c) @ xp.to_numpy(w).astype(np.float64))
        return w[rows] @ xp.asarray((a * c).T)

    if model in (MONO, BIEXP_UPTAKE):
        g = basis[i_idx] - basis[j_idx] if model == BIEXP_UPTAKE else basis
        shared = w is None or len(w.shape) == 1
        # With one Gram value per grid point, the signed squared projection num·|num|/(g·g) is largest where
        # num/√(g·g) is (both orders agree for either sign): one matrix product on unit-norm basis functions.
        norm = np.sqrt(np.maximum(xp.to_numpy(gram(g, g, slice(0))).astype(np.float64), 1e-300)) if shared else None
        g_unit = xp.asarray((g / norm[:, None]).T) if norm is not None else None
        g_t = xp.asarray(g.T)

        def score(rows: slice) -> Array:
            if g_unit is not None:
                return yw[rows] @ g_unit
            num = yw[rows] @ g_t
            return num * xp.abs(num) / gram(g, g, rows)  # signed squared projection: negative = zero amplitude

    else:
        g1, g2 = basis[i_idx], basis[j_idx]
        g1_t, g2_t = xp.asarray(g1.T), xp.asarray(g2.T)

        def score(rows: slice) -> Array:
            b1, b2 = yw[rows] @ g1_t, yw[rows] @ g2_t
            c1, c2 = nnls2(xp, gram(g1, g1, rows), gram(g1, g2, rows), gram(g2, g2, rows), b1, b2)[:2]
            return c1 * b1 + c2 * b2  # = projected norm² at the NNLS optimum

    n = y.shape[0]
    block = xp.grid_rows or max(n, 1)
    # Scores of a block of rows stay in cache until their argmax (the whole (N, P) table would not).
    best = xp.full_int(n, 0)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        best[rows] = xp.argmax(score(rows))
    v1 = xp.take(xp.asarray(np.log(rates[i_idx])), best)
    if model == MONO:
        return b.project(xp, v1, v1 + b.log_ratio)
    return b.project(xp, v1, xp.take(xp.asarray(b.v2_of(rates[j_idx])), best))


def _loglinear_rate(xp: Any, t: Array, ys: Array, w: Array | None, use: Array | None) -> tuple[Array, Array, Array]:
    """Closed-form decay rate of ln y = ln c − λ t by least squares weighted w·y² (points with y > 0 and `use`).

    Weighting the log residuals by y² makes them approximate the residuals of y itself (δ ln y ≈ δy / y), so the
    rate is close to the non-linear least-squares one and a step or two of LM finishes it. Returns (λ, ln c, ok):
    ok is False where fewer than two usable points (or no spread in time) leave the line undetermined.
    """
    positive = ys > 0
    weight = xp.where(positive, ys * ys, 0.0)
    if w is not None:
        weight = weight * w
    if use is not None:
        weight = xp.where(use, weight, 0.0)
    log_y = xp.log(xp.where(positive, ys, 1.0))
    s0, st, stt = xp.colsum(weight), xp.colsum(weight * t), xp.colsum(weight * t * t)
    sl, stl = xp.colsum(weight * log_y), xp.colsum(weight * t * log_y)
    det = s0 * stt - st * st
    ok = det > 1e-12 * xp.maximum(s0 * stt, 1e-300)
    safe = xp.where(ok, det, 1.0)
    rate = xp.where(ok, -(s0 * stl - st * sl) / safe, 0.0)
    log_c = xp.where(ok, (sl * stt - st * stl) / safe, 0.0)
    return rate, log_c, ok


def _mono_newton(xp: Any, t: Array, ys: Array, sw: Array | None, b: Bounds, v1: Array, steps: int) -> Array:
    """Newton steps on v = ln λ for the mono-exponential's projected fit: maximise F(v) = (g·y)² / (g·g), g = e^{−λt}.

    The amplitude is eliminated (variable projection), so F is a function of one variable with closed-form first
    and second derivatives; from the log-linear start Newton converges quadratically, where LM with Kaufman's
    Jacobian gains only a constant factor per step on noisy curves. A step that does not raise F is halved once,
    then dropped; the rate stays inside its bounds.
    """
    y = ys if sw is None else ys * sw

    def derivatives(v: Array) -> tuple[Array, Array, Array]:
        lam_t = xp.exp(v) * t
        g = xp.exp(-lam_t)
        if sw is not None:
            g = g * sw
        g1 = -lam_t * g  # ∂g/∂v
        g2 = (lam_t * lam_t - lam_t) * g  # ∂²g/∂v²
        a, a1, a2 = xp.colsum(g * y), xp.colsum(g1 * y), xp.colsum(g2 * y)
        bb, b1 = xp.colsum(g * g), 2.0 * xp.colsum(g * g1)
        b2 = 2.0 * xp.colsum(g1 * g1 + g * g2)
        bb = xp.where(bb > 0, bb, 1.0)
        f = xp.where(a > 0, a * a / bb, 0.0)
        # F = a²/b: F' = (2 a a' b − a² b') / b²; F'' by the quotient rule on that numerator.
        num = 2.0 * a * a1 * bb - a * a * b1
        num1 = 2.0 * (a1 * a1 + a * a2) * bb - a * a * b2
        f1 = num / (bb * bb)
        f2 = (num1 * bb - 2.0 * num * b1) / (bb * bb * bb)
        return f, f1, f2

    for _ in range(steps):
        f, f1, f2 = derivatives(v1)
        # A maximum needs F'' < 0; elsewhere (far from it) move uphill by a bounded gradient step.
        step = xp.where(f2 < 0, -f1 / xp.where(f2 < 0, f2, -1.0), xp.where(f1 > 0, 0.5, -0.5))
        step = xp.clip(step, -1.0, 1.0)
        for scale in (1.0, 0.5):
            trial = xp.clip(v1 + scale * step, b.lo1, b.hi1)
            better = derivatives(trial)[0] >= f
            v1 = xp.where(better, trial, v1)
            step = xp.where(better, 0.0, step)
    return v1


def mono_start(xp: Any, t: Array, ys: Array, w: Array | None, sw: Array | None, b: Bounds) -> tuple[Array, Array]:
    """The mono-exponential's rate without a grid: the log-linear fit of all points, refined by Newton steps."""
    rate, _, ok = _loglinear_rate(xp, t, ys, w, None)
    v1 = xp.log(xp.clip(xp.where(ok, rate, 0.0), math.exp(b.lo1), math.exp(b.hi1)))
    v1 = _mono_newton(xp, t, ys, sw, b, v1, _MONO_NEWTON_STEPS)
    return b.project(xp, v1, v1 + b.log_ratio)
