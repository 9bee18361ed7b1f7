"""The vectorised TAC fitting core: variable projection with a projected Levenberg–Marquardt on the rates.

Private module: `ludl.physics.kinetics` is the public entry point (`fit_tac`, `fit_voxels`). The core is written
once against a tiny array namespace (`NumpyXp` in `_fit_numpy`, `TorchXp` in `_fit_torch`) so both backends run
the same algorithm.

Algorithm: variable projection (Golub & Pereyra 1973, SIAM J Numer Anal 10:413) with Kaufman's
Jacobian (Kaufman 1975, BIT 15:49). Every model is linear in its amplitudes once its (at most two) free
rates are fixed, so the amplitudes are solved in closed form (non-negative, 1×1 or 2×2) and a projected
Levenberg–Marquardt runs on the rates only (see `Bounds` for the variables), with closed-form 2×2
normal equations. Starting rates come from an exhaustive coarse grid whose scores are matrix products;
two-amplitude fits stuck with one amplitude at 0 get one grid re-scan of the missing rate. Nothing loops
over voxels; converged voxels drop out of the iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ludl.physics._fit_bounds import Bounds, CoreSettings, rate_bounds
from ludl.physics._fit_numpy import Array
from ludl.physics._tac_models import BIEXP, BIEXP_UPTAKE, MIN_RATE_RATIO, MONO, TRIEXP

__all__ = ["fit_core"]


@dataclass
class _State:
    """Per-voxel LM state: variables (v1, v2), amplitudes, RSS and the normal equations at that point."""

    v1: Array
    v2: Array
    c1: Array
    c2: Array
    rss: Array
    h11: Array
    h12: Array
    h22: Array
    q1: Array
    q2: Array

    def merge(self, xp: Any, take_new: Array, new: _State, fields: tuple[str, ...]) -> _State:
        """`new` where take_new, else self; fields not in `fields` are zero in both and kept."""
        return _State(
            *(
                xp.where(take_new, getattr(new, f), getattr(self, f)) if f in fields else getattr(self, f)
                for f in _STATE_FIELDS
            )
        )


_STATE_FIELDS = ("v1", "v2", "c1", "c2", "rss", "h11", "h12", "h22", "q1", "q2")
# The fields a model's evaluation can make non-zero (one amplitude: no c2; mono: no second rate either).
_LIVE_FIELDS = {
    MONO: ("v1", "v2", "c1", "rss", "h11", "q1"),
    BIEXP_UPTAKE: ("v1", "v2", "c1", "rss", "h11", "h12", "h22", "q1", "q2"),
}


def _evaluate(
    xp: Any, model: str, t: Array, y: Array, sw: Array | None, e3: Array | None, b: Bounds, v1: Array, v2: Array
) -> _State:
    """Amplitudes, RSS and Kaufman's reduced normal equations at (v1, v2); y is (T, N) (curves in columns), weighted."""
    neg_lt1 = -xp.exp(v1) * t  # −λ1 t
    e1 = xp.exp(neg_lt1)
    d1 = neg_lt1 * e1  # ∂e^{−λ1 t}/∂ln λ1
    if model == MONO:
        return _one_amplitude(xp, y, sw, v1, v2, e1, d1, None)
    lam2 = b.lambda2(xp, v2)
    e2 = xp.exp(-lam2 * t)
    d2 = b.d_exp2(xp, lam2, v2, t, e2)
    if model == BIEXP_UPTAKE:
        # g = e1 − e2, so ∂g/∂v2 = −d2: `_one_amplitude` takes d2 and flips the signs of its results.
        return _one_amplitude(xp, y, sw, v1, v2, e1 - e2, d1, d2)
    # Two amplitudes: biexp (g_k = e_k) or triexp (g_k = e_k − e3, uptake rate fixed).
    g1, g2 = (e1, e2) if e3 is None else (e1 - e3, e2 - e3)
    return _two_amplitudes(xp, y, sw, v1, v2, g1, g2, d1, d2)


def _one_amplitude(
    xp: Any, y: Array, sw: Array | None, v1: Array, v2: Array, g: Array, d1: Array, neg_dg2: Array | None
) -> _State:
    """`_evaluate` for one basis function g (mono; biexp_uptake with ∂g/∂v2 = −neg_dg2), unweighted g and d."""
    zero = xp.zeros(y.shape[1])
    if sw is not None:
        g = g * sw
        d1 = d1 * sw
        neg_dg2 = None if neg_dg2 is None else neg_dg2 * sw
    gg = xp.colsum(g * g)
    gg_ok = gg > 0
    gg = xp.where(gg_ok, gg, 1.0)
    c = xp.where(gg_ok, xp.maximum(xp.colsum(g * y), 0.0) / gg, 0.0)
    r = y - c * g
    # Kaufman: J_k = −(I − P_g)(c ∂g/∂v_k).
    neg_c = -c
    j1 = neg_c * (d1 - g * (xp.colsum(g * d1) / gg))
    h11, q1 = xp.colsum(j1 * j1), xp.colsum(j1 * r)
    if neg_dg2 is None:
        return _State(v1, v2, c, zero, xp.colsum(r * r), h11, zero, zero, q1, zero)
    # −J2, exactly (negation is exact): its products with J1 and r change sign, its square does not.
    neg_j2 = neg_c * (neg_dg2 - g * (xp.colsum(g * neg_dg2) / gg))
    h12, q2 = -xp.colsum(j1 * neg_j2), -xp.colsum(neg_j2 * r)
    return _State(v1, v2, c, zero, xp.colsum(r * r), h11, h12, xp.colsum(neg_j2 * neg_j2), q1, q2)


def _two_amplitudes(
    xp: Any, y: Array, sw: Array | None, v1: Array, v2: Array, g1: Array, g2: Array, d1: Array, d2: Array
) -> _State:
    """`_evaluate` for two basis functions g1, g2 with ∂g_k/∂v_k = d_k (biexp, triexp), unweighted g and d."""
    if sw is not None:
        g1, g2, d1, d2 = g1 * sw, g2 * sw, d1 * sw, d2 * sw
    m11, m12, m22 = xp.colsum(g1 * g1), xp.colsum(g1 * g2), xp.colsum(g2 * g2)
    b1, b2 = xp.colsum(g1 * y), xp.colsum(g2 * y)
    c1, c2, both, only1, only2, det, m11, m22 = _nnls2(xp, m11, m12, m22, b1, b2)
    r = y - c1 * g1 - c2 * g2
    js = []
    for c, d in ((c1, d1), (c2, d2)):
        v = c * d
        p1, p2 = xp.colsum(g1 * v), xp.colsum(g2 * v)
        # Coefficients of the projection of v onto the span of the active basis functions.
        a1 = xp.where(both, (m22 * p1 - m12 * p2) / det, xp.where(only1, p1 / m11, 0.0))
        a2 = xp.where(both, (m11 * p2 - m12 * p1) / det, xp.where(only2, p2 / m22, 0.0))
        js.append(-(v - a1 * g1 - a2 * g2))
    j1, j2 = js
    return _State(
        v1,
        v2,
        c1,
        c2,
        xp.colsum(r * r),
        xp.colsum(j1 * j1),
        xp.colsum(j1 * j2),
        xp.colsum(j2 * j2),
        xp.colsum(j1 * r),
        xp.colsum(j2 * r),
    )


def _nnls2(xp: Any, m11: Array, m12: Array, m22: Array, b1: Array, b2: Array) -> tuple[Array, ...]:
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


def _grid_start(
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
            c1, c2 = _nnls2(xp, gram(g1, g1, rows), gram(g1, g2, rows), gram(g2, g2, rows), b1, b2)[:2]
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


def _mono_start(xp: Any, t: Array, ys: Array, w: Array | None, sw: Array | None, b: Bounds) -> tuple[Array, Array]:
    """The mono-exponential's rate without a grid: the log-linear fit of all points, refined by Newton steps."""
    rate, _, ok = _loglinear_rate(xp, t, ys, w, None)
    v1 = xp.log(xp.clip(xp.where(ok, rate, 0.0), math.exp(b.lo1), math.exp(b.hi1)))
    v1 = _mono_newton(xp, t, ys, sw, b, v1, _MONO_NEWTON_STEPS)
    return b.project(xp, v1, v1 + b.log_ratio)


def fit_core(
    xp: Any, model: str, time_h: Array, y: Array, weights: Array | None, settings: CoreSettings
) -> dict[str, Array]:
    """Least-squares fit of one parametric model to every row of y (N, T); all arrays are backend arrays.

    Returns amplitudes ``c1``, ``c2`` (activity units), rates ``lambda1``, ``lambda2`` (1/h), the
    weighted ``rss`` and ``n_iter``. ``c2``/``lambda2`` are unused by ``mono``; for ``biexp_uptake`` the
    amplitude is ``c1`` and ``lambda2`` the uptake rate.
    """
    t_np = xp.to_numpy(time_h).astype(np.float64)
    positive = t_np[t_np > 0]
    b = rate_bounds(model, settings, float(positive[0]) if positive.size else 1.0, float(t_np[0]))
    # The iterations work on curves in columns (T, N): every elementwise operation and every sum over the time
    # points then runs along long contiguous rows of N voxels, where numpy broadcasting over a short last axis of
    # T = 4–6 samples costs it ~8× more (measured on 32 k voxels: 40 µs against 310 µs per product).
    t = time_h[:, None]
    # Per-voxel scaling to max |y| = 1 keeps float32 safe and makes the tolerances unit-free.
    scale = xp.rowmax(xp.abs(y))
    scale = xp.where(scale > 0, scale, 1.0)
    ys = xp.transpose(y) / scale
    w = _columns(xp, weights)
    sw = None if w is None else w**0.5
    e3 = xp.exp(-settings.uptake_rate_per_h * t) if model == TRIEXP else None
    if model == MONO:
        # One rate: a closed-form start plus Newton replaces the grid (and most LM steps).
        v1, v2 = _mono_start(xp, t, ys, w, sw, b)
    else:
        v1, v2 = _grid_start(xp, model, time_h, ys.T, weights, settings, b)
    final, n_iter = _run_lm(xp, model, t, ys, sw, e3, b, v1, v2, settings.max_iter)
    if model in (BIEXP, TRIEXP) and settings.max_iter > 0:
        # One amplitude 0 leaves its rate without gradient, so LM cannot bring the component back:
        # scan that rate on the grid (the other fixed) and restart LM where it helps.
        jump, j1, j2 = _escape_faces(xp, model, t_np, ys.T, weights, b, settings, final)
        if xp.count(jump) > 0:
            idx = xp.nonzero(jump)
            again, more = _run_lm(
                xp, model, t, ys[:, idx], _voxels(sw, idx), e3, b, j1[idx], j2[idx], settings.max_iter
            )
            better = again["rss"] < final["rss"][idx]
            for f in _RESULT_FIELDS:
                final[f][idx] = xp.where(better, again[f], final[f][idx])
            n_iter += more
    v1, v2, c1, c2, rss = (final[f] for f in _RESULT_FIELDS)
    return {
        "c1": c1 * scale,
        "c2": c2 * scale,
        "lambda1": xp.exp(v1),
        "lambda2": xp.exp(v1 + b.log_ratio) if model == MONO else b.lambda2(xp, v2),
        "rss": rss * scale * scale,
        "n_iter": n_iter,
    }


def _columns(xp: Any, weights: Array | None) -> Array | None:
    """Weights in the core's column layout: (T,) → (T, 1); per voxel (N, T) → (T, N)."""
    if weights is None:
        return None
    return weights[:, None] if len(weights.shape) == 1 else xp.transpose(weights)


def _voxels(w: Array | None, idx: Array) -> Array | None:
    """The columns `idx` of column-layout weights; shared (T, 1) weights stay as they are."""
    return w[:, idx] if w is not None and w.shape[1] > 1 else w


def _run_lm(
    xp: Any,
    model: str,
    t: Array,
    ys: Array,
    sw: Array | None,
    e3: Array | None,
    b: Bounds,
    v1: Array,
    v2: Array,
    max_iter: int,
) -> tuple[dict[str, Array], int]:
    """Projected Levenberg–Marquardt from (v1, v2) on every column of the max-scaled ys (T, N)."""
    ys_w = ys if sw is None else ys * sw
    state = _evaluate(xp, model, t, ys_w, sw, e3, b, v1, v2)
    final = {f: getattr(state, f) for f in _RESULT_FIELDS}
    idx = None  # rows of the block the state holds (None: all)
    mu = xp.full(ys.shape[1], 1e-3)
    tols = (
        max(1e-12, 100.0 * xp.eps * xp.eps),  # rss of the max-scaled curve
        max(1e-10, 10.0 * xp.eps),  # relative: float32 rss is only known to ~eps
        max(1e-9, 10.0 * xp.eps),  # step
    )
    n_iter = 0
    frozen = xp.full(ys.shape[1], 0.0) > 0
    last_gain = xp.full(ys.shape[1], 0.0)
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        # Converged rows stay frozen, so a curve's result does not depend on the rest of its block.
        state, mu, done, last_gain = _lm_step(xp, model, t, ys_w, sw, e3, b, state, mu, tols, frozen, last_gain)
        frozen = done
        n_left = xp.count(~done)
        if n_left == 0:
            break
        if n_left < _COMPACT_SHARE * done.shape[0] and done.shape[0] > 64:
            # Stragglers only: store every row, then iterate on the unconverged ones (converged rows
            # stay frozen rather than wander).
            _store(final, state, idx)
            keep = xp.nonzero(~done)
            idx = keep if idx is None else idx[keep]
            state = _State(*(getattr(state, f)[keep] for f in _STATE_FIELDS))
            mu, ys_w, frozen, last_gain = mu[keep], ys_w[:, keep], frozen[keep], last_gain[keep]
            sw = _voxels(sw, keep)
    _store(final, state, idx)
    return final, n_iter


def _escape_faces(
    xp: Any,
    model: str,
    t_np: np.ndarray,
    ys: Array,
    w: Array | None,
    b: Bounds,
    s: CoreSettings,
    final: dict[str, Array],
) -> tuple[Array, Array, Array]:
    """For two-amplitude fits with one amplitude 0: the best grid rate for the missing component.

    Returns the rows to restart and their new (v1, v2).
    """
    rates = np.exp(np.linspace(b.lo1, b.hi2, s.n_grid))
    basis = np.exp(-rates[:, None] * t_np[None, :])
    e3 = np.exp(-s.uptake_rate_per_h * t_np) if model == TRIEXP else 0.0 * t_np
    basis = basis - e3
    h_t = xp.asarray(basis.T)  # (T, R)
    h2 = xp.asarray((basis * basis).T)
    e3_x = xp.asarray(e3)
    ww = ys * 0.0 + 1.0 if w is None else ys * 0.0 + w  # (N, T) weights
    yw = ww * ys
    v1, v2, c1, c2, rss = (final[f] for f in _RESULT_FIELDS)
    lam1, lam2 = xp.exp(v1), b.lambda2(xp, v2)
    current = xp.rowsum(yw * ys) - rss  # projected norm² of the current fit
    b_all, m22_all = yw @ h_t, ww @ h2  # (N, R)
    rates_x = xp.asarray(rates)
    out = []
    for fixed_lam, need_low in ((lam1, False), (lam2, True)):
        g = xp.exp(-fixed_lam[:, None] * xp.asarray(t_np)) - e3_x
        m11, bf = xp.rowsum(ww * g * g), xp.rowsum(yw * g)
        m12 = (ww * g) @ h_t
        cf, cg = _nnls2(xp, m11[:, None] + 0.0 * m12, m12, m22_all, bf[:, None] + 0.0 * m12, b_all)[:2]
        score = cf * bf[:, None] + cg * b_all
        # The scanned rate must respect the ordering λ1·ratio ≤ λ2 against the fixed one.
        if need_low:
            valid = rates_x[None, :] * MIN_RATE_RATIO <= fixed_lam[:, None] * (1.0 - 1e-9)
        else:
            valid = rates_x[None, :] >= fixed_lam[:, None] * MIN_RATE_RATIO * (1.0 + 1e-9)
        score = xp.where(valid, score, -1.0)
        best = xp.argmax(score)
        out.append((xp.rowmax(score), best))
    (score2, best2), (score1, best1) = out
    gain_tol = 1e-6 * current + 1e-12
    jump2 = (c2 <= 0) & (c1 > 0) & (score2 > current + gain_tol)
    jump1 = (c1 <= 0) & (c2 > 0) & (score1 > current + gain_tol) & ~jump2
    new1 = xp.where(jump1, xp.take(xp.asarray(np.log(rates)), best1), v1)
    new2 = xp.where(jump2, xp.take(xp.asarray(b.v2_of(rates)), best2), v2)
    return jump1 | jump2, new1, new2


_RESULT_FIELDS = ("v1", "v2", "c1", "c2", "rss")
# LM iterates on the unconverged rows only once fewer than this share is left (copying the state costs a fraction
# of a step; measured on 605 k curves: 0.9 is 4 % faster than 0.8, 0.95 no faster than 0.8).
_COMPACT_SHARE = 0.9
# Newton steps refining the mono start before LM confirms convergence (quadratic: 1e-2 → 1e-4 → 1e-8 → 1e-16).
_MONO_NEWTON_STEPS = 3


def _store(final: dict[str, Array], state: _State, idx: Array | None) -> None:
    """Write the rows `state` holds (all rows, or block rows `idx`) into the block results."""
    for f in _RESULT_FIELDS:
        if idx is None:
            final[f] = getattr(state, f)
        else:
            final[f][idx] = getattr(state, f)


def _lm_step(
    xp: Any,
    model: str,
    t: Array,
    y: Array,
    sw: Array | None,
    e3: Array | None,
    b: Bounds,
    state: _State,
    mu: Array,
    tols: tuple[float, float, float],
    frozen: Array,
    last_gain: Array,
) -> tuple[_State, Array, Array, Array]:
    """One projected Levenberg–Marquardt step on the rows not `frozen`; returns state, damping, done mask and the
    RSS gain of accepted steps (`last_gain`: that of the previous step)."""
    damp = 1.0 + mu
    a = state.h11 * damp
    d = state.h22 * damp
    a_pos = a > 0
    one1 = xp.where(a_pos, -state.q1 / xp.where(a_pos, a, 1.0), 0.0)
    if model == MONO:
        n1, n2 = b.project(xp, state.v1 + one1, state.v2 + one1)
    else:
        det = a * d - state.h12 * state.h12
        ok = det > 1e-12 * a * d
        det = xp.where(ok, det, 1.0)
        one2 = xp.where(d > 0, -state.q2 / xp.where(d > 0, d, 1.0), 0.0)
        # A singular system (one amplitude 0, so its rate has no gradient) still moves the other rate.
        dv1 = xp.where(ok, -(d * state.q1 - state.h12 * state.q2) / det, one1)
        dv2 = xp.where(ok, -(a * state.q2 - state.h12 * state.q1) / det, xp.where(a_pos, 0.0, one2))
        # Active set: a variable on a bound that the step pushes against stays on it. λ1 alone on a bound:
        # 1-D step in v2. v2 on its (possibly λ1-dependent) bound: 1-D Newton step along that edge,
        # direction (1, κ), κ = d(bound)/dv1 (the joint step assumed both move freely).
        lo2, hi2, hi_slope, lo_slope = b.edges(xp, state.v1)
        slack = 1e-9 * (1.0 + xp.abs(state.v2))
        stuck1 = ((state.v1 <= b.lo1) & (dv1 < 0)) | ((state.v1 >= b.hi1) & (dv1 > 0))
        at_lo2 = (state.v2 <= lo2 + slack) & (dv2 < 0)
        at_hi2 = (state.v2 >= hi2 - slack) & (dv2 > 0)
        kappa = xp.where(at_hi2, hi_slope, xp.where(at_lo2, lo_slope, 0.0) if lo_slope != 0.0 else 0.0)
        curv = (state.h11 + 2.0 * kappa * state.h12 + kappa * kappa * state.h22) * damp
        along = xp.where(curv > 0, -(state.q1 + kappa * state.q2) / xp.where(curv > 0, curv, 1.0), 0.0)
        stuck2 = at_lo2 | at_hi2
        dv1, dv2 = (
            xp.where(stuck2, xp.where(stuck1, 0.0, along), dv1),
            xp.where(stuck2, xp.where(stuck1, 0.0, kappa * along), xp.where(stuck1, one2, dv2)),
        )
        n1, n2 = b.project(xp, state.v1 + dv1, state.v2 + dv2)
    cand = _evaluate(xp, model, t, y, sw, e3, b, n1, n2)
    accept = (cand.rss < state.rss) & ~frozen
    gain = xp.where(frozen, 0.0, state.rss - cand.rss)
    moved = xp.maximum(xp.abs(n1 - state.v1), xp.abs(n2 - state.v2))
    new = state.merge(xp, accept, cand, _LIVE_FIELDS.get(model, _STATE_FIELDS))
    mu = xp.where(accept, xp.maximum(mu * 0.3, 1e-12), xp.where(frozen, mu, xp.minimum(mu * 10.0, 1e16)))
    tol_abs, tol_rel, tol_step = tols
    # Converged: the projected step vanishes, the RSS change (either sign: float32 rounding makes tiny
    # steps look like failures) is negligible, or LM keeps failing at large damping.
    tol = tol_abs + tol_rel * new.rss
    # Near the optimum the gains fall geometrically (Kaufman's Jacobian drops a term, so LM converges linearly
    # on noisy curves): when the next gain, predicted from the last two, is already below the tolerance, the
    # step after this one could not change the result beyond it either.
    took = xp.where(accept, gain, 0.0)
    shrinking = (took > 0) & (last_gain > took)
    predicted = xp.where(shrinking, took * took / xp.where(last_gain > 0, last_gain, 1.0), tol + 1.0)
    done = frozen | (moved < tol_step) | (xp.abs(gain) <= tol) | (~accept & (mu > 1e4)) | (predicted <= tol)
    return new, mu, done, xp.where(accept, took, last_gain)
