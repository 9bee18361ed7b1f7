"""Time-activity curves → time-integrated activity (TIA): model fits, model selection, analytic integrals.

docs/physics.md §2. Activities are *not* decay-corrected (what a calibrated SPECT shows at scan time); every
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

This module is the public entry point; the work is done in private modules (their split may change):
`_tac_models` (model names, bounds, curves, integrals), `_fit_core` with `_fit_bounds`, `_fit_numpy` and
`_fit_torch` (the vectorised variable-projection Levenberg–Marquardt fit), `_tac_selection` (several models and
the AIC choice), `_tac_trapezoid` (trapezoid method), `_tac_checks` (input checks) and `_voxel_fit`
(`fit_voxels`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.physics._fit_bounds import CoreSettings
from ludl.physics._fit_numpy import NumpyXp
from ludl.physics._tac_checks import (
    check_choice,
    check_times,
    check_values,
    check_weights,
    core_settings,
    resolve_models,
)
from ludl.physics._tac_models import (
    DEFAULT_UPTAKE_RATE_PER_H,
    FREE_PARAMS,
    LN2,
    MODELS,
    PARAMETRIC_MODELS,
    TRAPEZOID,
    min_points,
    model_curve,
    n_params,
    tia_of,
)
from ludl.physics._tac_selection import fit_models, select_by_aic
from ludl.physics._tac_trapezoid import TAILS, TRAPEZOID_STARTS, trapezoid_arrays, trapezoid_curve, trapezoid_tia
from ludl.physics._voxel_fit import NEGATIVE_TOL, VoxelFit, fit_voxels

__all__ = [
    "DEFAULT_UPTAKE_RATE_PER_H",
    "MODELS",
    "NEGATIVE_TOL",
    "PARAMETRIC_MODELS",
    "TAILS",
    "TRAPEZOID_STARTS",
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

PARAM_NAMES = ("a0", "a1", "a2", "lambda1_per_h", "lambda2_per_h", "lambda3_per_h", "lambda_tail_per_h")


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
        if self.model != TRAPEZOID:
            return np.asarray(model_curve(self.model, self.params, t), dtype=np.float64)
        return trapezoid_curve(self.times_h, self.activity, t, self.params["lambda_tail_per_h"], self.trapezoid_start)


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
    t = check_times(times_h)
    y = np.asarray(activity, dtype=np.float64)
    if y.shape != t.shape:
        raise InputError(f"activity has shape {y.shape} but there are {t.size} time points; give one value per time")
    check_values(y, "activity")
    check_choice("tail", tail, TAILS)
    check_choice("trapezoid_start", trapezoid_start, TRAPEZOID_STARTS)
    w = check_weights(weights, t.shape, "activity")
    models = resolve_models(model, t.size, tail)
    settings = core_settings(nuclide, uptake_rate_per_h, max_iter)
    if models == [TRAPEZOID]:
        return _trapezoid_fit(t, y, settings, tail, trapezoid_start)
    xp = NumpyXp()
    fits = fit_models(xp, models, t, y[None, :], w, settings)
    chosen = models[int(select_by_aic(xp, fits, models)[0])]
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


def _trapezoid_fit(
    t: npt.NDArray[np.float64], y: npt.NDArray[np.float64], settings: CoreSettings, tail: str, start: str
) -> TacFit:
    """`fit_tac` with model ``trapezoid``: the curve through the samples, no fitted parameters."""
    tia, lam = trapezoid_arrays(t, y[:, None], settings.lambda_phys_per_h, tail, start)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return TacFit(
        tia=float(tia[0]),
        model=TRAPEZOID,
        params={"lambda_tail_per_h": float(lam[0])},
        param_se={},
        aic=math.nan,
        r2=1.0 if ss_tot > 0 else math.nan,
        rss=0.0,
        n_points=t.size,
        t_eff_h=LN2 / float(lam[0]),
        times_h=t,
        activity=y,
        trapezoid_start=start,
    )
