"""Time-activity curves → time-integrated activity (TIA): model fits, model selection, analytic integrals.

PHYSICS.md §2. Activities are *not* decay-corrected (what a calibrated SPECT shows at scan time); every
clearance rate is bounded below by the physical decay constant of the nuclide, so a fit that would
clear slower than physical decay is clamped to it.

Models (names are public): ``mono`` A0·e^{−λ1 t}; ``biexp_uptake`` A0·(e^{−λ1 t} − e^{−λ2 t}), λ2 > λ1;
``biexp`` A1·e^{−λ1 t} + A2·e^{−λ2 t}; ``triexp`` A1·e^{−λ1 t} + A2·e^{−λ2 t} − (A1 + A2)·e^{−λ3 t} with
the uptake rate λ3 fixed (`uptake_rate_per_h`); ``trapezoid`` piecewise linear through the samples with
an explicit tail; ``auto`` picks among the parametric models the number of points allows, by AIC.
λ1 is always the slowest rate. Unweighted least squares unless `weights` are given.

Example:
    >>> fit = fit_tac([4, 24, 48, 96, 168], [2.1, 3.0, 2.6, 1.7, 0.8], model="biexp_uptake")
    >>> fit.tia, fit.params["lambda1_per_h"]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import FitError, InputError
from ludl.physics._tac_models import (
    AIC_RSS_FLOOR,
    DEFAULT_UPTAKE_RATE_PER_H,
    FREE_PARAMS,
    MAX_RATE_PER_H,
    MIN_RATE_RATIO,
    MODELS,
    PARAMETRIC_MODELS,
    CoreSettings,
    NumpyXp,
    fit_core,
    model_curve,
    tia_of,
)
from ludl.physics.nuclides import get_nuclide

__all__ = [
    "DEFAULT_UPTAKE_RATE_PER_H",
    "MODELS",
    "PARAMETRIC_MODELS",
    "TacFit",
    "VoxelFit",
    "fit_tac",
    "fit_voxels",
    "min_points",
    "model_curve",
    "n_params",
    "tia_of",
    "trapezoid_tia",
]

LN2 = math.log(2.0)
TAILS = ("physical", "fitted")
TRAPEZOID_STARTS = ("zero", "first")
PARAM_NAMES = ("a0", "a1", "a2", "lambda1_per_h", "lambda2_per_h", "lambda3_per_h", "lambda_tail_per_h")
# Default share of the stack's largest |value| below zero that fit_voxels clips to 0 (reconstruction and
# resampling noise around empty voxels); anything more negative is an error.
NEGATIVE_TOL = 0.01


def n_params(model: str) -> int:
    """Number of fitted parameters of a model (0 for ``trapezoid``)."""
    _check_model(model, allow_auto=False)
    return len(FREE_PARAMS[model])


def min_points(model: str, tail: str = "physical") -> int:
    """Fewest time points a model may be fitted to: fitted parameters + 1 (trapezoid: 1, or 2 with a fitted tail)."""
    if model == "trapezoid":
        return 2 if tail == "fitted" else 1
    return n_params(model) + 1


@dataclass(frozen=True, eq=False)
class TacFit:
    """One fitted time-activity curve.

    Attributes:
        tia: ∫₀^∞ A(t) dt in activity unit × h.
        model: the model used (``auto`` resolved to the chosen one).
        params: parameter name → value (amplitudes in activity units, rates in 1/h); ``triexp`` also
            holds its fixed ``lambda3_per_h``, ``trapezoid`` its ``lambda_tail_per_h``.
        param_se: standard errors of the fitted parameters, sqrt(diag((JᵀJ)⁻¹)·RSS/(n − p)) (NaN where
            JᵀJ is singular, e.g. an amplitude fitted to 0).
        aic: n·ln(RSS/n) + 2(p + 1) (NaN for ``trapezoid``); rss: weighted residual sum of squares.
        r2: coefficient of determination (weighted); n_points: number of samples.
        t_eff_h: effective half-life ln2/λ of the clearance term carrying most of the TIA.
        aic_by_model: AIC of every model ``auto`` compared (just this model otherwise).
    """

    tia: float
    model: str
    params: dict[str, float]
    param_se: dict[str, float]
    aic: float
    r2: float
    rss: float
    n_points: int
    t_eff_h: float
    times_h: npt.NDArray[np.float64]
    activity: npt.NDArray[np.float64]
    aic_by_model: dict[str, float] = field(default_factory=dict)
    trapezoid_start: str = "zero"

    def predict(self, time_h: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Fitted activity at `time_h` (h after injection)."""
        t = np.asarray(time_h, dtype=np.float64)
        if self.model != "trapezoid":
            return np.asarray(model_curve(self.model, self.params, t), dtype=np.float64)
        return _trapezoid_curve(self.times_h, self.activity, t, self.params["lambda_tail_per_h"], self.trapezoid_start)


@dataclass(frozen=True, eq=False)
class VoxelFit:
    """Voxel-wise fit of a stack of frames; every map has the shape of one frame.

    Attributes:
        tia: TIA per voxel (activity unit × h), 0 outside the mask.
        model: the requested model; model_map: index into `model_names` per voxel (−1 outside the mask).
        params: name → map (NaN outside the mask and where the voxel's model lacks the parameter).
        aic, r2, rss, t_eff_h: maps as in `TacFit` (NaN outside the mask).
        n_clipped: small negative samples set to 0 before fitting (see `fit_voxels`).
    """

    tia: npt.NDArray[np.float64]
    model: str
    model_names: tuple[str, ...]
    model_map: npt.NDArray[np.int8]
    params: dict[str, npt.NDArray[np.float64]]
    aic: npt.NDArray[np.float64]
    r2: npt.NDArray[np.float64]
    rss: npt.NDArray[np.float64]
    t_eff_h: npt.NDArray[np.float64]
    mask: npt.NDArray[np.bool_]
    n_clipped: int = 0


# ---------------------------------------------------------------------------------------------- validation


def _check_model(model: str, *, allow_auto: bool = True) -> None:
    names = (*MODELS, "auto") if allow_auto else MODELS
    if model not in names:
        raise InputError(f"unknown TAC model {model!r}; use one of {', '.join(names)}")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not known; use one of {', '.join(choices)}")


def _check_times(times_h: npt.ArrayLike) -> npt.NDArray[np.float64]:
    try:
        t = np.asarray(times_h, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"times_h must be numbers in hours, got {times_h!r}") from exc
    if t.ndim != 1 or t.size == 0:
        raise InputError(f"times_h must be a non-empty 1-D sequence of hours, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise InputError(f"times_h contains NaN or inf: {t.tolist()}; give finite hours after injection")
    if np.any(t < 0):
        raise InputError(f"times_h contains negative times {t[t < 0].tolist()}; give hours after injection (≥ 0)")
    steps = np.diff(t)
    if np.any(steps == 0):
        raise InputError(f"times_h has duplicate time points {t[1:][steps == 0].tolist()} h; merge or drop them")
    if np.any(steps < 0):
        raise InputError(f"times_h must increase, got {t.tolist()}; sort times and activities together")
    return t


def _check_weights(weights: npt.ArrayLike | None, shape: tuple[int, ...], what: str) -> npt.NDArray[np.float64] | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != shape and w.shape != shape[:1]:
        raise InputError(f"weights have shape {w.shape}; expected {shape[:1]} (one per time point) or {what} {shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise InputError("weights must be finite and > 0; drop a time point instead of giving it weight 0")
    return w


def _resolve_models(model: str, n: int, tail: str) -> list[str]:
    """The models to fit for `model` at n points, or a FitError that says what would work."""
    _check_model(model)
    if model == "auto":
        allowed = [m for m in PARAMETRIC_MODELS if n >= min_points(m)]
        if not allowed:
            raise FitError(
                f"model 'auto' needs at least {min_points('mono')} time points (for 'mono'), got {n}; "
                f"with {n} point(s) use model='trapezoid'"
            )
        return allowed
    need = min_points(model, tail)
    if n < need:
        ok = [m for m in MODELS if n >= min_points(m, tail)]
        raise FitError(
            f"model {model!r} needs at least {need} time points, got {n}; "
            f"models that work with {n} point(s): {', '.join(ok) or 'none'}"
        )
    return [model]


def _settings(nuclide: str, uptake_rate_per_h: float, max_iter: int) -> CoreSettings:
    lam_p = get_nuclide(nuclide).decay_constant_per_h
    if not uptake_rate_per_h > lam_p * MIN_RATE_RATIO**3:
        raise InputError(
            f"uptake_rate_per_h={uptake_rate_per_h} must exceed the physical decay constant {lam_p:.4g}/h "
            "clearly (it is the fixed uptake rate of 'triexp'); the default is ln2/1 h"
        )
    if not uptake_rate_per_h <= MAX_RATE_PER_H:
        raise InputError(f"uptake_rate_per_h={uptake_rate_per_h} exceeds the fastest fitted rate {MAX_RATE_PER_H}/h")
    if max_iter < 0:
        raise InputError(f"max_iter must be ≥ 0, got {max_iter}")
    return CoreSettings(lambda_phys_per_h=lam_p, uptake_rate_per_h=uptake_rate_per_h, max_iter=max_iter)


# ---------------------------------------------------------------------------------------------- trapezoid


def _trapezoid(
    t: npt.NDArray[np.float64], y: npt.NDArray[np.float64], lam_p: float, tail: str, start: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """TIA and tail rate of the trapezoid method for y (T, N)."""
    head = t[0] * y[0] * (0.5 if start == "zero" else 1.0)
    body = (np.diff(t)[:, None] * (y[1:] + y[:-1]) * 0.5).sum(axis=0) if t.size > 1 else np.zeros(y.shape[1:])
    lam = np.full(y.shape[1:], lam_p)
    if tail == "fitted" and t.size > 1:
        prev, last = y[-2], y[-1]
        good = (prev > 0) & (last > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.log(np.where(good, prev, 1.0) / np.where(good, last, 1.0)) / (t[-1] - t[-2])
        # A rising or vanishing last segment cannot define a clearance: physical decay instead.
        lam = np.maximum(np.where(good, slope, lam_p), lam_p)
    return head + body + y[-1] / lam, lam


def _trapezoid_curve(
    t: npt.NDArray[np.float64], y: npt.NDArray[np.float64], at_h: npt.NDArray[np.float64], lam: float, start: str
) -> npt.NDArray[np.float64]:
    knots_t = np.concatenate([[0.0], t]) if t[0] > 0 else t
    knots_y = np.concatenate([[0.0 if start == "zero" else y[0]], y]) if t[0] > 0 else y
    inside = np.interp(at_h, knots_t, knots_y)
    return np.where(at_h > t[-1], y[-1] * np.exp(-lam * (at_h - t[-1])), inside)


def trapezoid_tia(
    times_h: npt.ArrayLike,
    activity: npt.ArrayLike,
    *,
    nuclide: str = "Lu-177",
    tail: str = "physical",
    start: str = "zero",
) -> npt.NDArray[np.float64]:
    """TIA by the trapezoid rule through the samples plus an analytic tail; vectorised over trailing axes.

    Args:
        times_h: (T,) sample times in h.
        activity: (T, ...) activities (not decay-corrected).
        tail: ``"physical"``: A(t_last)/λ_phys; ``"fitted"``: A(t_last)/λ with λ from the last segment,
            clamped ≥ λ_phys.
        start: ``"zero"``: the curve rises linearly from (0, 0); ``"first"``: constant A(t1) before t1.
    """
    t = _check_times(times_h)
    _check_choice("tail", tail, TAILS)
    _check_choice("start", start, TRAPEZOID_STARTS)
    y = np.asarray(activity, dtype=np.float64)
    if y.shape[:1] != t.shape:
        raise InputError(f"activity has shape {y.shape}; its first axis must match the {t.size} time points")
    _check_values(y, "activity")
    tia, _ = _trapezoid(t, y.reshape(t.size, -1), get_nuclide(nuclide).decay_constant_per_h, tail, start)
    return tia.reshape(y.shape[1:])


def _check_values(y: npt.NDArray[np.float64], name: str) -> None:
    if not np.all(np.isfinite(y)):
        raise InputError(f"{name} contains {int(np.sum(~np.isfinite(y)))} NaN/inf value(s); mask or repair them")
    if np.any(y < 0):
        raise InputError(f"{name} contains negative values (min {float(y.min()):.4g}); activities must be ≥ 0")


# ---------------------------------------------------------------------------------------------- fitting


def _fit_models(
    xp: Any, models: Sequence[str], t: Any, y: Any, w: Any, settings: CoreSettings
) -> dict[str, dict[str, Any]]:
    """Fit every model to all rows of y (N, T); per model: params, tia, rss, aic, r2, t_eff (backend arrays)."""
    n = y.shape[1]
    wy = y if w is None else y * w
    sum_w = float(n) if w is None else xp.rowsum(w)  # scalar for (T,) weights, (N,) for per-voxel ones
    mean = xp.rowsum(wy) / sum_w
    resid = y - mean[:, None]
    ss_tot = xp.rowsum(resid * resid) if w is None else xp.rowsum(w * resid * resid)
    floor = AIC_RSS_FLOOR * xp.rowsum(wy * y) + xp.tiny
    out: dict[str, dict[str, Any]] = {}
    for model in models:
        r = fit_core(xp, model, t, y, w, settings)
        if model in ("mono", "biexp_uptake"):
            params = {"a0": r["c1"], "lambda1_per_h": r["lambda1"]}
            if model == "biexp_uptake":
                params["lambda2_per_h"] = r["lambda2"]
            t_eff = LN2 / r["lambda1"]
        else:
            params = {"a1": r["c1"], "lambda1_per_h": r["lambda1"], "a2": r["c2"], "lambda2_per_h": r["lambda2"]}
            share1, share2 = r["c1"] / r["lambda1"], r["c2"] / r["lambda2"]
            if model == "triexp":
                params["lambda3_per_h"] = r["lambda1"] * 0.0 + settings.uptake_rate_per_h
            t_eff = LN2 / xp.where(share1 >= share2, r["lambda1"], r["lambda2"])
        k = len(FREE_PARAMS[model]) + 1
        aic = n * xp.log(xp.maximum(r["rss"], floor) / n) + 2.0 * k
        r2 = xp.where(ss_tot > 0, 1.0 - r["rss"] / xp.where(ss_tot > 0, ss_tot, 1.0), math.nan)
        out[model] = {"params": params, "tia": tia_of(model, params), "rss": r["rss"], "aic": aic, "r2": r2}
        out[model]["t_eff_h"] = t_eff
    return out


def _select(xp: Any, fits: Mapping[str, Mapping[str, Any]], models: Sequence[str]) -> Any:
    """Index into `models` per row: the fewest parameters among models within 2 AIC units of the best."""
    best_aic = fits[models[0]]["aic"]
    for m in models[1:]:
        best_aic = xp.where(fits[m]["aic"] < best_aic, fits[m]["aic"], best_aic)
    n = best_aic.shape[0]
    choice = xp.full_int(n, -1)
    for k in sorted({len(FREE_PARAMS[m]) for m in models}):
        # Within one complexity class the lowest AIC wins; a simpler class wins whenever it is within 2.
        group = [i for i, m in enumerate(models) if len(FREE_PARAMS[m]) == k]
        g_best = fits[models[group[0]]]["aic"]
        g_idx = xp.full_int(n, group[0])
        for i in group[1:]:
            better = fits[models[i]]["aic"] < g_best
            g_idx = xp.where(better, i, g_idx)
            g_best = xp.where(better, fits[models[i]]["aic"], g_best)
        choice = xp.where((choice < 0) & (g_best <= best_aic + 2.0), g_idx, choice)
    return choice


def _combine(xp: Any, fits: Mapping[str, Mapping[str, Any]], models: Sequence[str], choice: Any) -> dict[str, Any]:
    """Per-row results of the chosen model; parameters a chosen model lacks are NaN."""
    nan = fits[models[0]]["rss"] * math.nan
    out: dict[str, Any] = {key: nan for key in ("tia", "rss", "aic", "r2", "t_eff_h")}
    params: dict[str, Any] = {}
    for i, m in enumerate(models):
        sel = choice == i
        for key in out:
            out[key] = xp.where(sel, fits[m][key], out[key])
        for name, value in fits[m]["params"].items():
            params[name] = xp.where(sel, value, params.get(name, nan))
    out["params"] = params
    return out


def _param_se(
    model: str, params: Mapping[str, float], t: npt.NDArray[np.float64], w: npt.NDArray[np.float64] | None, rss: float
) -> dict[str, float]:
    """Standard errors sqrt(diag((JᵀJ)⁻¹)·RSS/(n − p)) from the analytic Jacobian at the optimum."""
    p = params
    e1 = np.exp(-p["lambda1_per_h"] * t)
    if model == "mono":
        cols = [e1, -p["a0"] * t * e1]
    elif model == "biexp_uptake":
        e2 = np.exp(-p["lambda2_per_h"] * t)
        cols = [e1 - e2, -p["a0"] * t * e1, p["a0"] * t * e2]
    else:
        e2 = np.exp(-p["lambda2_per_h"] * t)
        e3 = np.exp(-p["lambda3_per_h"] * t) if model == "triexp" else 0.0 * t
        cols = [e1 - e3, -p["a1"] * t * e1, e2 - e3, -p["a2"] * t * e2]
    jac = np.stack(cols, axis=1)
    if w is not None:
        jac = jac * np.sqrt(w)[:, None]
    names = FREE_PARAMS[model]
    dof = t.size - len(names)
    try:
        cov = np.linalg.inv(jac.T @ jac) * (rss / dof)
        diag = np.diag(cov)
        if not np.all(np.isfinite(diag)) or np.any(diag < 0):
            raise np.linalg.LinAlgError
        se = np.sqrt(diag)
    except np.linalg.LinAlgError:
        se = np.full(len(names), math.nan)
    return {name: float(v) for name, v in zip(names, se, strict=True)}


def fit_tac(
    times_h: npt.ArrayLike,
    activity: npt.ArrayLike,
    model: str = "auto",
    *,
    nuclide: str = "Lu-177",
    weights: npt.ArrayLike | None = None,
    tail: str = "physical",
    trapezoid_start: str = "zero",
    uptake_rate_per_h: float = DEFAULT_UPTAKE_RATE_PER_H,
    max_iter: int = 50,
) -> TacFit:
    """Fit one time-activity curve and integrate it from 0 to ∞.

    Args:
        times_h: (T,) sample times in h after injection, increasing, ≥ 0.
        activity: (T,) activities (MBq, or a concentration), not decay-corrected, ≥ 0.
        model: ``mono``, ``biexp_uptake``, ``biexp``, ``triexp``, ``trapezoid`` or ``auto`` (lowest AIC
            among the parametric models the number of points allows; within 2 units the simpler wins).
        nuclide: sets λ_phys, the slowest clearance allowed.
        weights: (T,) least-squares weights (e.g. 1/σ²); unweighted by default.
        tail: ``trapezoid`` only: ``"physical"`` or ``"fitted"`` (parametric models integrate analytically).
        trapezoid_start: ``trapezoid`` only: ``"zero"`` (through (0, 0)) or ``"first"`` (through (0, A(t1))).
        uptake_rate_per_h: the fixed uptake rate λ3 of ``triexp`` (1/h).
        max_iter: Levenberg–Marquardt iterations at most.
    """
    t = _check_times(times_h)
    y = np.asarray(activity, dtype=np.float64)
    if y.shape != t.shape:
        raise InputError(f"activity has shape {y.shape} but there are {t.size} time points; give one value per time")
    _check_values(y, "activity")
    _check_choice("tail", tail, TAILS)
    _check_choice("trapezoid_start", trapezoid_start, TRAPEZOID_STARTS)
    w = _check_weights(weights, t.shape, "activity")
    models = _resolve_models(model, t.size, tail)
    settings = _settings(nuclide, uptake_rate_per_h, max_iter)
    if models == ["trapezoid"]:
        tia, lam = _trapezoid(t, y[:, None], settings.lambda_phys_per_h, tail, trapezoid_start)
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        return TacFit(
            tia=float(tia[0]),
            model="trapezoid",
            params={"lambda_tail_per_h": float(lam[0])},
            param_se={},
            aic=math.nan,
            r2=1.0 if ss_tot > 0 else math.nan,
            rss=0.0,
            n_points=t.size,
            t_eff_h=LN2 / float(lam[0]),
            times_h=t,
            activity=y,
            trapezoid_start=trapezoid_start,
        )
    xp = NumpyXp()
    fits = _fit_models(xp, models, t, y[None, :], w, settings)
    chosen = models[int(_select(xp, fits, models)[0])]
    best = fits[chosen]
    params = {name: float(v[0]) for name, v in best["params"].items()}
    rss = float(best["rss"][0])
    return TacFit(
        tia=float(best["tia"][0]),
        model=chosen,
        params=params,
        param_se=_param_se(chosen, params, t, w, rss),
        aic=float(best["aic"][0]),
        r2=float(best["r2"][0]),
        rss=rss,
        n_points=t.size,
        t_eff_h=float(best["t_eff_h"][0]),
        times_h=t,
        activity=y,
        aic_by_model={m: float(fits[m]["aic"][0]) for m in models},
    )


def _default_chunk(backend: str, device: str) -> int:
    if backend == "numpy":
        return 32768  # measured fastest on 2 cores (16k: 1.5×, 8k: 1.8× slower)
    return 1 << 21 if device.startswith("cuda") else 65536


def fit_voxels(
    times_h: npt.ArrayLike,
    activity_stack: npt.ArrayLike,
    model: str = "biexp_uptake",
    *,
    mask: npt.ArrayLike | None = None,
    nuclide: str = "Lu-177",
    weights: npt.ArrayLike | None = None,
    backend: str = "numpy",
    device: str | None = None,
    max_iter: int = 50,
    chunk_size: int | None = None,
    workers: int | None = None,
    tail: str = "physical",
    trapezoid_start: str = "zero",
    uptake_rate_per_h: float = DEFAULT_UPTAKE_RATE_PER_H,
    candidates: Sequence[str] | None = None,
    negative_tol: float = NEGATIVE_TOL,
) -> VoxelFit:
    """Fit every voxel's time-activity curve at once (vectorised; no loop over voxels).

    Args:
        times_h: (T,) sample times in h.
        activity_stack: (T, Z, Y, X) or (T, N) activities, not decay-corrected.
        model: as in `fit_tac`; ``auto`` returns a per-voxel `VoxelFit.model_map`.
        mask: boolean map of one frame's shape; voxels outside get TIA 0 and NaN elsewhere, and may hold
            NaN. Default: every voxel.
        weights: (T,) or the stack's shape; least-squares weights.
        backend: ``"numpy"`` (threads over chunks) or ``"torch"`` (same algorithm; float32).
        device: torch device; default ``"cuda"`` when available, else ``"cpu"``.
        max_iter: Levenberg–Marquardt iterations at most (a chunk stops once all its voxels converged).
        chunk_size: voxels per block (memory ∝ chunk_size × grid size).
        workers: numpy threads (default: CPU count, at most 8).
        candidates: for ``auto``, the models to compare (default: all the points allow).
        negative_tol: samples in [−negative_tol·max|A|, 0) (max over the masked stack) are set to 0
            (reconstruction noise around empty voxels); more negative samples raise `InputError`.
    """
    t = _check_times(times_h)
    stack = np.asarray(activity_stack)
    if stack.ndim < 2 or stack.shape[0] != t.size:
        raise InputError(
            f"activity_stack has shape {stack.shape}; expected (T, Z, Y, X) or (T, N) with T = {t.size} time points"
        )
    if not np.issubdtype(stack.dtype, np.number) or np.iscomplexobj(stack):
        raise InputError(f"activity_stack must hold real numbers, got dtype {stack.dtype}")
    _check_choice("tail", tail, TAILS)
    _check_choice("trapezoid_start", trapezoid_start, TRAPEZOID_STARTS)
    _check_choice("backend", backend, ("numpy", "torch"))
    frame = stack.shape[1:]
    if mask is None:
        mask_arr = np.ones(frame, dtype=bool)
    else:
        mask_arr = np.asarray(mask)
        if mask_arr.shape != frame:
            raise InputError(f"mask has shape {mask_arr.shape}; it must match one frame {frame}")
        mask_arr = mask_arr.astype(bool)
    models = _resolve_models(model, t.size, tail)
    if model == "auto" and candidates is not None:
        for m in candidates:
            _check_model(m, allow_auto=False)
        models = [m for m in models if m in set(candidates)]
        if not models:
            raise FitError(f"none of candidates {list(candidates)} can be fitted to {t.size} time points")
    settings = _settings(nuclide, uptake_rate_per_h, max_iter)

    flat_mask = mask_arr.reshape(-1)
    y = np.ascontiguousarray(stack.reshape(t.size, -1)[:, flat_mask].T, dtype=np.float64)  # (N, T)
    bad = ~np.isfinite(y)
    if bad.any():
        raise InputError(
            f"activity_stack holds {int(bad.sum())} NaN/inf value(s) inside the mask; repair them or mask those voxels"
        )
    n_clipped = 0
    if y.size and y.min() < 0:
        limit = negative_tol * float(np.abs(y).max())
        if y.min() < -limit:
            raise InputError(
                f"activity_stack has negative values down to {float(y.min()):.4g} inside the mask, beyond "
                f"negative_tol·max|A| = {limit:.4g}; check the reconstruction/units, clip them, or raise negative_tol"
            )
        neg = y < 0
        n_clipped = int(neg.sum())
        y[neg] = 0.0
    w_full = _check_weights(weights, stack.shape, "activity_stack")
    w: npt.NDArray[np.float64] | None
    if w_full is None or w_full.ndim == 1:
        w = w_full
    else:
        w = np.ascontiguousarray(w_full.reshape(t.size, -1)[:, flat_mask].T)

    names = tuple(models)
    n_vox = y.shape[0]
    maps = {key: np.full(n_vox, math.nan) for key in ("tia", "rss", "aic", "r2", "t_eff_h")}
    params: dict[str, npt.NDArray[np.float64]] = {}
    choice = np.zeros(n_vox, dtype=np.int8)

    if models == ["trapezoid"]:
        tia, lam = _trapezoid(t, y.T, settings.lambda_phys_per_h, tail, trapezoid_start)
        maps["tia"], maps["t_eff_h"], maps["rss"] = tia, LN2 / lam, np.zeros(n_vox)
        maps["r2"] = np.where(y.max(axis=1) > y.min(axis=1), 1.0, math.nan)
        params["lambda_tail_per_h"] = lam
    else:
        run_block = _block_runner(backend, device, models, t, settings)
        dev = "cpu" if backend == "numpy" else _torch_device(device)
        size = chunk_size or _default_chunk(backend, dev)
        if size < 1:
            raise InputError(f"chunk_size must be ≥ 1, got {size}")
        starts = list(range(0, n_vox, size))

        def work(start: int) -> None:
            sl = slice(start, min(start + size, n_vox))
            block = run_block(y[sl], None if w is None else (w if w.ndim == 1 else w[sl]))
            for key in maps:
                maps[key][sl] = block[key]
            choice[sl] = block["choice"]
            for name, value in block["params"].items():
                params.setdefault(name, np.full(n_vox, math.nan))[sl] = value

        n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        if backend == "numpy" and n_workers > 1 and len(starts) > 1:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                list(pool.map(work, starts))
        else:
            for start in starts:
                work(start)

    def to_frame(values: npt.NDArray[Any], fill: float | int, dtype: Any = np.float64) -> npt.NDArray[Any]:
        full = np.full(flat_mask.size, fill, dtype=dtype)
        full[flat_mask] = values
        return full.reshape(frame)

    return VoxelFit(
        tia=to_frame(maps["tia"], 0.0),
        model=model,
        model_names=names,
        model_map=to_frame(choice, -1, np.int8),
        params={name: to_frame(v, math.nan) for name, v in params.items()},
        aic=to_frame(maps["aic"], math.nan),
        r2=to_frame(maps["r2"], math.nan),
        rss=to_frame(maps["rss"], math.nan),
        t_eff_h=to_frame(maps["t_eff_h"], math.nan),
        mask=mask_arr,
        n_clipped=n_clipped,
    )


def _torch_device(device: str | None) -> str:
    from ludl.physics._fit_torch import resolve_device

    return resolve_device(device)


def _block_runner(
    backend: str, device: str | None, models: Sequence[str], t: npt.NDArray[np.float64], settings: CoreSettings
) -> Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64] | None], dict[str, Any]]:
    """A function fitting one block of voxels (n, T) and returning numpy results."""
    if backend == "numpy":
        xp: Any = NumpyXp()
    else:
        from ludl.physics._fit_torch import TorchXp

        xp = TorchXp(_torch_device(device))
    t_x = xp.asarray(t)

    def run(y: npt.NDArray[np.float64], w: npt.NDArray[np.float64] | None) -> dict[str, Any]:
        y_x = xp.asarray(y)
        w_x = None if w is None else xp.asarray(w)
        fits = _fit_models(xp, models, t_x, y_x, w_x, settings)
        choice = _select(xp, fits, models)
        res = _combine(xp, fits, models, choice)
        out: dict[str, Any] = {key: xp.to_numpy(res[key]).astype(np.float64) for key in res if key != "params"}
        out["params"] = {k: xp.to_numpy(v).astype(np.float64) for k, v in res["params"].items()}
        out["choice"] = xp.to_numpy(choice).astype(np.int8)
        # All-zero curves integrate to exactly 0 whatever rates the fit settled on.
        out["tia"] = np.where(np.any(y > 0, axis=1), out["tia"], 0.0)
        return out

    return run
