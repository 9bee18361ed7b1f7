"""Time-integrated activity of one patient-cycle: region curve fits and the voxel TIA map (docs/physics.md §2).

``tia_mode="voxel"`` fits every voxel's curve (vectorised `fit_voxels`), once per distinct set of voxel times (bed
positions and field-of-view patterns); ``"region"`` fits each region's total curve (`fit_tac`) and spreads it as
TIA_voxel = TIA_region · A_voxel(t_ref) / A_region,fit(t_ref); unlabelled voxels form one more region, `REST_REGION`.
Models are restricted by the number of time points (`check_points` raises `FitError` naming the case before any fit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.registration import AlignedTimePoint
from ludl.dosimetry.timepoints import CycleData
from ludl.errors import FitError
from ludl.physics.kinetics import MODELS, TacFit, fit_tac, fit_voxels, min_points
from ludl.physics.units import MBQ_PER_BQ

__all__ = [
    "REST_REGION",
    "VOXEL_AUTO_CANDIDATES",
    "check_points",
    "region_fits",
    "region_tia_map",
    "voxel_tia_map",
]

# Voxel-wise "auto" compares only the models a single noisy voxel curve can support; region curves (summed over many
# voxels) are compared over every model the number of time points allows.
VOXEL_AUTO_CANDIDATES = ("mono", "biexp_uptake")
# The unlabelled voxels with activity, fitted as one more region.
REST_REGION = "_rest"


def check_points(data: CycleData, model: str) -> None:
    """A model that needs more time points than the case has: FitError naming the case and its rows."""
    n = len(data.timepoints)
    need = min_points("mono" if model == "auto" else model)
    if n < need:
        tps = ", ".join(f"{t.timepoint_h:g} h" for t in data.timepoints)
        ok = [m for m in MODELS if n >= min_points(m)]
        raise FitError(
            f"patient {data.patient_id} cycle {data.cycle} has {n} SPECT time point(s) ({tps}) in "
            f"{data.manifest.file}; model {model!r} needs at least {need}. With {n} point(s) use model="
            f"{' or '.join(repr(m) for m in ok) or 'none'} (or add time points)"
        )


def voxel_tia_map(
    aligned: Sequence[AlignedTimePoint], model: str, *, mask: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Voxel-wise TIA (MBq·h/mL) on the reference grid, one vectorised fit per distinct set of voxel times.

    Voxels outside a time point's field of view are fitted with the time points that cover them; where fewer remain
    than the model needs, the trapezoid with a physical tail is used (and noted).

    Returns:
        (TIA map, notes).
    """
    stack = np.stack([np.asarray(a.activity.array, dtype=np.float32) for a in aligned]) * np.float32(MBQ_PER_BQ)
    times = np.stack([a.time_h_map for a in aligned])  # (T, Z, Y, X), NaN outside that FOV
    use = np.any(stack > 0, axis=0) & np.any(np.isfinite(times), axis=0)
    if mask is not None:
        use &= mask
    tia = np.zeros(use.shape, dtype=np.float64)
    notes: list[str] = []
    flat = np.flatnonzero(use)
    if flat.size == 0:
        return tia, ["no voxel holds activity: the TIA map is empty"]
    keys = np.nan_to_num(times.reshape(times.shape[0], -1)[:, flat].T, nan=-1.0)
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    stack_flat = stack.reshape(stack.shape[0], -1)
    fell_back = 0
    for g, key in enumerate(groups):  # a loop over distinct time sets (beds × FOV patterns), never over voxels
        members = flat[inverse == g]
        present = key >= 0
        t = key[present]
        y = stack_flat[present][:, members]
        order = np.argsort(t)
        t, y = t[order], y[order]
        n = t.size
        chosen = model
        kwargs: dict[str, Any] = {}
        if model == "auto":
            kwargs["candidates"] = VOXEL_AUTO_CANDIDATES
            if n < min_points("mono"):
                chosen = "trapezoid"
        elif n < min_points(model):
            chosen = "trapezoid"
        if chosen == "trapezoid" and model != "trapezoid":
            fell_back += members.size
            kwargs = {}
        fit = fit_voxels(t, y, model=chosen, workers=None, **kwargs)
        tia.ravel()[members] = fit.tia
    if fell_back:
        notes.append(f"{fell_back} voxel(s) outside the field of view at some time points were integrated by trapezoid")
    return tia, notes


def _region_curve(
    aligned: Sequence[AlignedTimePoint], mask: npt.NDArray[np.bool_], voxel_ml: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Region activity (MBq) per time point and its activity-weighted mean acquisition time (h)."""
    activity, when = [], []
    for a in aligned:
        c = np.asarray(a.activity.array, dtype=np.float64)[mask] * MBQ_PER_BQ * voxel_ml
        t = a.time_h_map[mask]
        ok = np.isfinite(t)
        total = float(c[ok].sum())
        activity.append(total)
        if total > 0:
            when.append(float((c[ok] * t[ok]).sum() / total))
        elif ok.any():
            when.append(float(t[ok].mean()))
        else:
            when.append(float(np.nanmin(a.time_h_map)) if np.isfinite(a.time_h_map).any() else a.timepoint_h)
    return np.asarray(when), np.asarray(activity)


def region_fits(
    aligned: Sequence[AlignedTimePoint], regions: RegionSet, model: str, voxel_ml: float
) -> tuple[dict[str, TacFit | None], dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]], list[str]]:
    """Fit each region's total curve (MBq); unlabelled voxels with activity form the region ``_rest``."""
    fits: dict[str, TacFit | None] = {}
    curves: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
    notes: list[str] = []
    masks = {name: regions.mask(name) for name in regions.values}
    masks[REST_REGION] = regions.labels == 0
    for name, mask in masks.items():  # a loop over regions, each curve a vectorised sum
        t, a = _region_curve(aligned, mask, voxel_ml)
        curves[name] = (t, a)
        if not np.any(a > 0):
            fits[name] = None
            continue
        order = np.argsort(t)
        try:
            fits[name] = fit_tac(t[order], a[order], model=model)
        except FitError as err:
            fits[name] = None
            notes.append(f"region {name}: {err}")
    return fits, curves, notes


def region_tia_map(
    aligned: Sequence[AlignedTimePoint],
    regions: RegionSet,
    fits: Mapping[str, TacFit | None],
    curves: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    reference_index: int,
) -> npt.NDArray[np.float64]:
    """Region kinetics × voxel activity: TIA_voxel = TIA_region · A_voxel(t_ref) / A_region,fit(t_ref) (MBq·h/mL)."""
    ref = np.asarray(aligned[reference_index].activity.array, dtype=np.float64) * MBQ_PER_BQ  # MBq/mL
    tia = np.zeros(ref.shape, dtype=np.float64)
    for name, fit in fits.items():
        if fit is None:
            continue
        mask = (regions.labels == 0) if name == REST_REGION else regions.mask(name)
        t_ref = float(curves[name][0][reference_index])
        a_fit = float(fit.predict(t_ref))
        if a_fit > 0:
            tia[mask] = fit.tia * ref[mask] / a_fit
    return tia
