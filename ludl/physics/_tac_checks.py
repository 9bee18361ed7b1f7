"""Input checks shared by the TAC fits: times, activities, weights, model and option names, fit settings.

Private module: `ludl.physics.kinetics` is the public entry point; these checks raise the `InputError` /
`FitError` messages its functions document.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ludl.errors import FitError, InputError
from ludl.physics._fit_bounds import CoreSettings
from ludl.physics._tac_models import MAX_RATE_PER_H, MIN_RATE_RATIO, MODELS, PARAMETRIC_MODELS, check_model, min_points
from ludl.physics.nuclides import get_nuclide

__all__ = ["check_choice", "check_times", "check_values", "check_weights", "core_settings", "resolve_models"]


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise `InputError` unless the option `name` has one of the allowed values."""
    if value not in choices:
        raise InputError(f"{name}={value!r} is not known; use one of {', '.join(choices)}")


def check_times(times_h: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Sample times as a float array: 1-D, finite, ≥ 0 and strictly increasing (h after injection)."""
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


def check_weights(weights: npt.ArrayLike | None, shape: tuple[int, ...], what: str) -> npt.NDArray[np.float64] | None:
    """Least-squares weights as floats ((T,) or the data's `shape`), finite and > 0; None stays None."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != shape and w.shape != shape[:1]:
        raise InputError(f"weights have shape {w.shape}; expected {shape[:1]} (one per time point) or {what} {shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise InputError("weights must be finite and > 0; drop a time point instead of giving it weight 0")
    return w


def resolve_models(model: str, n: int, tail: str) -> list[str]:
    """The models to fit for `model` at n points, or a FitError that says what would work."""
    check_model(model)
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


def core_settings(nuclide: str, uptake_rate_per_h: float, max_iter: int) -> CoreSettings:
    """Fitting-core settings for a nuclide (λ_phys is the slowest clearance), with the options checked."""
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


def check_values(y: npt.NDArray[np.float64], name: str) -> None:
    """Raise `InputError` for NaN/inf or negative activities."""
    if not np.all(np.isfinite(y)):
        raise InputError(f"{name} contains {int(np.sum(~np.isfinite(y)))} NaN/inf value(s); mask or repair them")
    if np.any(y < 0):
        raise InputError(f"{name} contains negative values (min {float(y.min()):.4g}); activities must be ≥ 0")
