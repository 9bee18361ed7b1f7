"""The trapezoid method: TIA from the samples joined by straight lines, plus an analytic exponential tail.

Private module: `ludl.physics.kinetics` is the public entry point (`trapezoid_tia`, model ``trapezoid`` of
`fit_tac` and `fit_voxels`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.physics._tac_checks import check_choice, check_times, check_values
from ludl.physics.nuclides import get_nuclide

__all__ = ["TAILS", "TRAPEZOID_STARTS", "trapezoid_arrays", "trapezoid_curve", "trapezoid_tia"]

TAILS = ("physical", "fitted")
TRAPEZOID_STARTS = ("zero", "first")


def trapezoid_arrays(
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


def trapezoid_curve(
    t: npt.NDArray[np.float64], y: npt.NDArray[np.float64], at_h: npt.NDArray[np.float64], lam: float, start: str
) -> npt.NDArray[np.float64]:
    """The trapezoid curve at `at_h`: linear between the samples (and from t = 0), exponential after the last."""
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
    t = check_times(times_h)
    check_choice("tail", tail, TAILS)
    check_choice("start", start, TRAPEZOID_STARTS)
    y = np.asarray(activity, dtype=np.float64)
    if y.shape[:1] != t.shape:
        raise InputError(f"activity has shape {y.shape}; its first axis must match the {t.size} time points")
    check_values(y, "activity")
    tia, _ = trapezoid_arrays(t, y.reshape(t.size, -1), get_nuclide(nuclide).decay_constant_per_h, tail, start)
    return tia.reshape(y.shape[1:])
