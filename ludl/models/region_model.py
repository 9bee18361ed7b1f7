"""Region kinetics model: a region-level second stage that reads what the whole scan shows of the patient.

The network's τ head sees a 48³ patch and the scan time; per region its log error correlated 0.93–0.99 with
Hänscheid's and Madsen's on the 200-patient run — it learned one τ(t) per region class and nothing of the patient
(docs/training.md "What limits it"). One scan shows more than a patch: how much of the injection is still in the
field of view, how much the kidneys and the tumours hold, each region's own activity, volume and PET uptake. Those
are the inputs of the cohort's single-scan reference, and in the synthetic cohort every region shares a patient
factor of its effective half-life that the whole-body retention reads.

Per region class and scan time, a ridge regression of log(ground truth / calibrated network estimate) on
`FEATURE_NAMES` (standardised; one vote per patient) is fitted on the same patients the class factors are
(`ludl.models.calibration`), and kept only where leave-one-patient-out prediction beats the class factor on those
patients; elsewhere the factor stands. Every feature comes from the scan, its PET and the network's own
segmentation, never from the case's other time points, so ``infer.py`` computes the same numbers from one scan.
Unknown features (no PET, no lesion found) read as the fit's mean.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.models.calibration import (
    FACTOR_RANGE,
    cell_float,
    class_of,
    estimate,
    nearest_factor,
    nearest_time,
    scale_rows,
    usable_cells,
)

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_NAMES",
    "FeatureClasses",
    "RegionFactor",
    "calibrate_rows",
    "fit_region_model",
    "region_factor",
    "region_features",
    "scan_features",
]

FEATURE_NAMES: tuple[str, ...] = (
    "log_retained_fraction",  # activity in the field of view / injected: the patient's whole-body clearance
    "log_region_fraction",  # the region's activity / injected
    "log_volume_ml",
    "log_pet_suv",  # the region's mean PET SUV
    "log_lesion_uptake_vs_pet",  # the patient's lesions: concentration per injected MBq over their PET SUV
    "log_kidney_fraction",  # the segmented kidneys' activity / injected
    "log_tumour_fraction",  # the segmented lesions' activity / injected
)
FEATURE_COLUMNS: tuple[str, ...] = tuple(f"feature_{n}" for n in FEATURE_NAMES)
_SCAN_FEATURES = ("log_retained_fraction", "log_lesion_uptake_vs_pet", "log_kidney_fraction", "log_tumour_fraction")
_MIN_PATIENTS = 3  # leave-one-patient-out needs at least 2 left to fit on

# A region factor: (region class, scan time h, the region's feature columns) → factor on its corrected mean.
RegionFactor = Callable[[str, float, Mapping[str, float]], float]


@dataclass(frozen=True)
class FeatureClasses:
    """The segmentation class indices the scan features read: the kidneys and the lesion class."""

    kidneys: tuple[int, ...]
    lesion: int

    @classmethod
    def of(cls, table: Iterable[Any]) -> FeatureClasses:
        """From a class table of items with ``index``, ``name``, ``kind`` (`ludl.io.regions.SEGMENTATION_CLASSES`)."""
        items = list(table)
        kidneys = tuple(int(c.index) for c in items if str(c.name).startswith("kidney_"))
        return cls(kidneys, next(int(c.index) for c in items if c.kind == "lesion"))


def _log(value: float) -> float:
    return math.log(value) if value > 0 and math.isfinite(value) else math.nan


def scan_features(
    activity_mbq_per_ml: npt.NDArray[Any],
    suv: npt.NDArray[Any] | None,
    classes: npt.NDArray[Any],
    voxel_ml: float,
    injected_mbq: float,
    indices: FeatureClasses,
) -> dict[str, float]:
    """The patient-level features of one scan (z y x arrays on one grid; `classes` = the network's segmentation)."""
    activity = np.asarray(activity_mbq_per_ml, dtype=np.float64)
    lesion = np.asarray(classes) == indices.lesion
    kidneys = np.isin(classes, indices.kidneys)
    tumour_mbq = float(activity[lesion].sum()) * voxel_ml
    uptake_vs_pet = math.nan
    if suv is not None and lesion.any():
        pet = float(np.asarray(suv, dtype=np.float64)[lesion].mean())
        uptake_vs_pet = _log(tumour_mbq / (int(lesion.sum()) * voxel_ml) / injected_mbq) - _log(pet)
    return {
        "log_retained_fraction": _log(float(activity.sum()) * voxel_ml / injected_mbq),
        "log_lesion_uptake_vs_pet": uptake_vs_pet,
        "log_kidney_fraction": _log(float(activity[kidneys].sum()) * voxel_ml / injected_mbq),
        "log_tumour_fraction": _log(tumour_mbq / injected_mbq),
    }


def region_features(
    activity_mbq_per_ml: npt.NDArray[Any],
    suv: npt.NDArray[Any] | None,
    labels: npt.NDArray[Any],
    values: Mapping[str, int],
    voxel_ml: float,
    injected_mbq: float,
    scan: Mapping[str, float],
) -> dict[str, dict[str, float]]:
    """{region: {feature column: value}} of the regions `values` names in `labels`, with the scan's features."""
    flat = np.asarray(labels).reshape(-1).astype(np.int64)
    n = int(max([int(flat.max()) if flat.size else 0, *values.values()])) + 1
    activity = np.bincount(flat, np.asarray(activity_mbq_per_ml, dtype=np.float64).reshape(-1), n)
    counts = np.bincount(flat, minlength=n)
    pet = np.bincount(flat, np.asarray(suv, dtype=np.float64).reshape(-1), n) if suv is not None else None
    out = {}
    for name, value in values.items():
        if value <= 0 or counts[value] == 0:
            continue
        own = {
            "log_region_fraction": _log(float(activity[value]) * voxel_ml / injected_mbq),
            "log_volume_ml": _log(float(counts[value]) * voxel_ml),
            "log_pet_suv": _log(float(pet[value]) / float(counts[value])) if pet is not None else math.nan,
        }
        merged = {**{k: float(scan.get(k, math.nan)) for k in _SCAN_FEATURES}, **own}
        out[name] = {f"feature_{k}": merged[k] for k in FEATURE_NAMES}
    return out


def _matrix(rows: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float64]:
    return np.array([[cell_float(r.get(c)) for c in FEATURE_COLUMNS] for r in rows], dtype=np.float64)


def _ridge(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], alpha: float
) -> dict[str, Any]:
    """Weighted ridge on standardised features (NaN → the mean); the fit as plain lists."""
    w = weights / weights.sum()
    finite = np.isfinite(x)
    mean = np.array(
        [float(np.average(col[ok], weights=w[ok])) if ok.any() else 0.0 for col, ok in zip(x.T, finite.T, strict=True)]
    )
    z = np.where(finite, x - mean, 0.0)
    scale = np.sqrt((w[:, None] * z**2).sum(axis=0))
    scale = np.where(scale > 1e-9, scale, 1.0)
    z /= scale
    intercept = float(w @ y)
    coef = np.linalg.solve(z.T @ (w[:, None] * z) + alpha * np.eye(z.shape[1]), z.T @ (w * (y - intercept)))
    return {"intercept": intercept, "mean": mean.tolist(), "scale": scale.tolist(), "coef": coef.tolist()}


def _predict_log(fit: Mapping[str, Any], x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = np.where(np.isfinite(x), (x - np.asarray(fit["mean"])) / np.asarray(fit["scale"]), 0.0)
    return np.asarray(fit["intercept"] + z @ np.asarray(fit["coef"]), dtype=np.float64)


def _patient_weights(patients: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """One vote per patient: each row weighs 1 / its patient's number of rows."""
    _, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    return np.asarray(1.0 / counts[inverse], dtype=np.float64)


def _factor_log(y: npt.NDArray[np.float64], patients: npt.NDArray[Any]) -> float:
    """The class factor's rule (`ludl.models.calibration`): median over patients of each patient's median."""
    return float(np.median([np.median(y[patients == p]) for p in np.unique(patients)]))


def fit_region_model(
    rows: Iterable[Mapping[str, Any]], *, alpha: float = 0.3, min_volume_ml: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """{"features", "alpha", "min_volume_ml", "fits": {class: {scan time: ridge fit}}, "selection": {class: {scan
    time: leave-one-patient-out median |error| of "ridge" and "factor"}}}.

    Rows are uncalibrated region rows with `FEATURE_COLUMNS` (`ludl.training.predict`); regions of a class smaller
    than its `min_volume_ml` are left out of the fit, and keep the class factor when applied. A cell keeps its ridge
    fit only where its leave-one-patient-out median |error| is below that of the class factor refitted the same way.
    """
    fits: dict[str, dict[str, Any]] = defaultdict(dict)
    selection: dict[str, dict[str, Any]] = defaultdict(dict)
    for (cls, time_h), cell in sorted(usable_cells(rows, dict(min_volume_ml or {})).items()):
        patients = np.array([str(r.get("patient_id", "")) for r in cell])
        if len(set(patients.tolist())) < _MIN_PATIENTS:
            continue
        x = _matrix(cell)
        y = np.log([cell_float(r["gt_mean_dose_gy"]) / estimate(r) for r in cell])
        ridge_err, factor_err = [], []
        for p in np.unique(patients):
            out = patients == p
            fit = _ridge(x[~out], y[~out], _patient_weights(patients[~out]), alpha)
            ridge_err += np.abs(np.expm1(y[out] - _predict_log(fit, x[out]))).tolist()
            factor_err += np.abs(np.expm1(y[out] - _factor_log(y[~out], patients[~out]))).tolist()
        cv = {"ridge": float(np.median(ridge_err)), "factor": float(np.median(factor_err))}
        selection[cls][f"{time_h:g}"] = cv
        if cv["ridge"] < cv["factor"]:
            fits[cls][f"{time_h:g}"] = _ridge(x, y, _patient_weights(patients), alpha)
    return {
        "features": list(FEATURE_NAMES),
        "alpha": float(alpha),
        "min_volume_ml": dict(min_volume_ml or {}),
        "fits": dict(fits),
        "selection": dict(selection),
    }


def region_factor(
    model: Mapping[str, Any] | None,
    factors: Mapping[str, Mapping[str, float]],
    region_class: str,
    timepoint_h: float,
    features: Mapping[str, Any],
) -> float:
    """The factor on one region's corrected mean: the ridge fit of its class at the nearest fitted scan time where
    one was kept, else the class factor (`nearest_factor`, also for a region under the fit's minimum volume);
    clipped to the factor range. `features`: the region's feature columns, as floats or as CSV text."""
    fits = ((model or {}).get("fits") or {}).get(region_class) or {}
    min_volume_ml = float(((model or {}).get("min_volume_ml") or {}).get(region_class, 0.0))
    log_volume = cell_float(features.get("feature_log_volume_ml"))
    if min_volume_ml > 0 and not (math.isfinite(log_volume) and math.exp(log_volume) >= min_volume_ml * (1 - 1e-9)):
        fits = {}
    if not fits:
        return nearest_factor(factors, region_class, timepoint_h)
    nearest = nearest_time([*fits, *(factors.get(region_class) or {})], timepoint_h)
    if nearest not in fits:  # the class factor's scan time is nearer
        return nearest_factor(factors, region_class, timepoint_h)
    x = np.array([[cell_float(features.get(c)) for c in FEATURE_COLUMNS]], dtype=np.float64)
    return float(np.clip(math.exp(float(_predict_log(fits[nearest], x)[0])), *FACTOR_RANGE))


def calibrate_rows(
    rows: Sequence[Mapping[str, Any]], factors: Mapping[str, Mapping[str, float]], model: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """New rows whose corrected column is the network's estimate × `region_factor` (input left alone)."""

    return scale_rows(rows, lambda row: region_factor(model, factors, class_of(row), float(row["timepoint_h"]), row))
