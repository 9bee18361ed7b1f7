"""Time-activity-curve models: names, parameters, rate bounds, formulas and analytic 0→∞ integrals.

Private module (like the other ``_tac_*`` and ``_fit_*`` modules): users import these names from
`ludl.physics.kinetics`, the one public path (DESIGN "Public names"); the split into private modules may change.
The fitting core (`ludl.physics._fit_core`) and `ludl.physics.stp` use the rate bounds defined here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ludl.errors import InputError

__all__ = [
    "AIC_RSS_FLOOR",
    "BIEXP",
    "BIEXP_UPTAKE",
    "DEFAULT_UPTAKE_RATE_PER_H",
    "FREE_PARAMS",
    "LN2",
    "MAX_FIRST_SAMPLE_EFOLDS",
    "MAX_RATE_PER_H",
    "MAX_WASHOUT_EFOLDS",
    "MIN_RATE_RATIO",
    "MODELS",
    "MONO",
    "PARAMETRIC_MODELS",
    "TRAPEZOID",
    "TRIEXP",
    "check_model",
    "min_points",
    "model_curve",
    "n_params",
    "tia_of",
]

LN2 = math.log(2.0)

MONO, BIEXP_UPTAKE, BIEXP, TRIEXP, TRAPEZOID = "mono", "biexp_uptake", "biexp", "triexp", "trapezoid"
# Simplest first: AIC ties (within 2 units) go to the earlier entry.
PARAMETRIC_MODELS: tuple[str, ...] = (MONO, BIEXP_UPTAKE, BIEXP, TRIEXP)
MODELS: tuple[str, ...] = (*PARAMETRIC_MODELS, TRAPEZOID)

# λ1 is always the slowest (terminal) clearance, so maps of different models can share the name.
FREE_PARAMS: dict[str, tuple[str, ...]] = {
    MONO: ("a0", "lambda1_per_h"),
    BIEXP_UPTAKE: ("a0", "lambda1_per_h", "lambda2_per_h"),
    BIEXP: ("a1", "lambda1_per_h", "a2", "lambda2_per_h"),
    TRIEXP: ("a1", "lambda1_per_h", "a2", "lambda2_per_h"),
    TRAPEZOID: (),
}

# Fixed uptake rate of `triexp`: uptake half-time 1 h. docs/synthetic-cohort.md: organs reach their peak within 1–4 h,
# uptake time constant 0.5–2 h (an assumption there too). A free 5-parameter tri-exponential is not
# identifiable from 5 clinical points (docs/physics.md §2), hence the fixed rate.
DEFAULT_UPTAKE_RATE_PER_H = LN2 / 1.0
# Fastest rate fitted (T½ ≈ 4 min): with the first scan hours after injection, faster rates are
# indistinguishable from instantaneous ones and LM would otherwise drift along a flat valley.
MAX_RATE_PER_H = 10.0
# Washout components must keep ≥ e^{−2} of their amplitude at the first sample (λ ≤ 2/t1, T½ ≥ 1.4 h at
# t1 = 4 h): a faster one is seen in one sample only and its amplitude extrapolated to t = 0 is unbounded
# (a biexp fit to noise gave A2 ≈ 1e15, a TIA 1e13 times too large; a mono fit to [1, 0, 0, 0, 0] does the
# same). With a sample at t = 0 nothing is extrapolated and only MAX_RATE_PER_H applies.
MAX_WASHOUT_EFOLDS = 2.0
# A second rate (uptake, or fast washout) stays ≤ 10/t1: beyond that e^{−10} of the component is left at
# the first sample, the data cannot see the rate, float32 cannot resolve it (numpy and torch would settle
# on different points of a flat valley), and the TIA it leaves open is ≤ A0·t1/10 (0.2 % for physical
# decay at t1 = 4 h).
MAX_FIRST_SAMPLE_EFOLDS = 10.0
# Two rates of one model stay ≥ 5 % apart: λ2 → λ1 is the degenerate t·e^{−λt} limit where the
# amplitude diverges (the TIA stays finite, so fits that sit on this bound still integrate correctly).
MIN_RATE_RATIO = 1.05
# AIC uses max(RSS, floor·Σw·y²): below a residual RMS of ~3e-5 of the signal RMS fits are numerically
# indistinguishable (float32 torch reaches ~1e-6), and ln(0) must not decide a model choice.
AIC_RSS_FLOOR = 1e-9


def _exp(x: Any) -> Any:
    # torch tensors carry .exp(); numpy arrays, numpy scalars and floats go through np.exp.
    if hasattr(x, "exp") and not isinstance(x, np.ndarray | np.generic):
        return x.exp()
    return np.exp(x)


def _as_time(time_h: Any) -> Any:
    if hasattr(time_h, "exp") and not isinstance(time_h, np.ndarray | np.generic):
        return time_h
    return np.asarray(time_h, dtype=np.float64)


def model_curve(model: str, params: Mapping[str, Any], time_h: Any) -> Any:
    """Activity A(t) of a parametric model; params and time broadcast (numpy or torch).

    Args:
        model: one of `PARAMETRIC_MODELS`.
        params: the model's parameters as in `FREE_PARAMS` (plus ``lambda3_per_h`` for ``triexp``), in
            activity units and 1/h.
        time_h: time(s) after injection in h.
    """
    t = _as_time(time_h)
    p = params
    if model == MONO:
        return p["a0"] * _exp(-p["lambda1_per_h"] * t)
    if model == BIEXP_UPTAKE:
        return p["a0"] * (_exp(-p["lambda1_per_h"] * t) - _exp(-p["lambda2_per_h"] * t))
    if model == BIEXP:
        return p["a1"] * _exp(-p["lambda1_per_h"] * t) + p["a2"] * _exp(-p["lambda2_per_h"] * t)
    if model == TRIEXP:
        e3 = _exp(-p["lambda3_per_h"] * t)
        return p["a1"] * (_exp(-p["lambda1_per_h"] * t) - e3) + p["a2"] * (_exp(-p["lambda2_per_h"] * t) - e3)
    raise _not_parametric(model)


def tia_of(model: str, params: Mapping[str, Any]) -> Any:
    """Analytic ∫₀^∞ A(t) dt of a parametric model (activity unit × h); numpy or torch, any shape."""
    p = params
    if model == MONO:
        return p["a0"] / p["lambda1_per_h"]
    if model == BIEXP_UPTAKE:
        return p["a0"] * (1.0 / p["lambda1_per_h"] - 1.0 / p["lambda2_per_h"])
    if model == BIEXP:
        return p["a1"] / p["lambda1_per_h"] + p["a2"] / p["lambda2_per_h"]
    if model == TRIEXP:
        inv3 = 1.0 / p["lambda3_per_h"]
        return p["a1"] * (1.0 / p["lambda1_per_h"] - inv3) + p["a2"] * (1.0 / p["lambda2_per_h"] - inv3)
    raise _not_parametric(model)


def _not_parametric(model: str) -> InputError:
    extra = "; integrate samples with trapezoid_tia()" if model == TRAPEZOID else ""
    return InputError(f"{model!r} is not a parametric TAC model ({', '.join(PARAMETRIC_MODELS)}){extra}")


def check_model(model: str, *, allow_auto: bool = True) -> None:
    """Raise `InputError` unless `model` is a known TAC model name (or ``auto`` where allowed)."""
    names = (*MODELS, "auto") if allow_auto else MODELS
    if model not in names:
        raise InputError(f"unknown TAC model {model!r}; use one of {', '.join(names)}")


def n_params(model: str) -> int:
    """Number of fitted parameters of a model (0 for ``trapezoid``)."""
    check_model(model, allow_auto=False)
    return len(FREE_PARAMS[model])


def min_points(model: str, tail: str = "physical") -> int:
    """Fewest time points a model may be fitted to: fitted parameters + 1 (trapezoid: 1, or 2 with a fitted tail)."""
    if model == TRAPEZOID:
        return 2 if tail == "fitted" else 1
    return n_params(model) + 1
