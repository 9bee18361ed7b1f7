"""Region-mean calibration of the single-scan path, learned on the validation and training patients (never the held-out
ones; which ones: the train config's ``calibration.fit_on``).

The single-scan partial-volume correction (a GTM on the predicted TIA, `RegionScoring.correct`) cannot see what the
multi-time-point pipeline's correction saw (its activity recovery over five scans), and on the demo cohort it
under-corrects lesions by ≈ 10 % at every scan time. One factor per region class and scan time — the median of
ground truth / network over those patients' regions, one vote per patient — removes that systematic part; what
remains is each region's own scatter. The training patients vote too because the bias is structural (τ, the
single-scan GTM) and a median over 4 validation patients alone carried ±10 % of patient sampling; on the demo's
held-out fold their factors came closer to the held-out patients' own (docs/training.md "Region calibration"). It is
the cheapest form of "a region-mean term trained against the pipeline's corrected region doses": the correction uses
no multi-time-point information of the case it is applied to, and the factors travel in the model artifact so
inference applies the same ones.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATED_COLUMN",
    "FACTOR_RANGE",
    "FIT_MIN_VOLUME_ML",
    "RAW_COLUMN",
    "SMALL_LESION_ML",
    "apply_calibration",
    "cell_float",
    "class_of",
    "estimate",
    "fit_calibration",
    "nearest_factor",
    "nearest_time",
    "scale_rows",
    "usable_cells",
]

CALIBRATED_COLUMN = "net_mean_dose_corrected_gy"  # the column the factors scale (and that evaluation scores)
RAW_COLUMN = "net_mean_dose_gy"  # its stand-in where no single-scan correction ran (NaN corrected column)
_MIN_REGIONS = 3  # fewer validation regions of a class at a scan time: no factor (1.0), a median of 1–2 is noise
FACTOR_RANGE = (0.25, 4.0)  # a factor outside it means a broken prediction, not a bias to calibrate away
# Lesions smaller than this are dominated by partial volume at SPECT resolution (≈ 10 mm FWHM): their errors are
# several times those of larger lesions (demo held-out fold: P90 0.58–0.76 below 4 mL, 0.34–0.36 above). One home
# for the size the comparison scores (evaluation's LESION_MIN_VOLUME_ML), the interval classes split at
# (`ludl.models.uncertainty`) and the lesion factor is fitted on.
SMALL_LESION_ML = 4.0
# The lesion factor is fitted on the lesions the comparison scores: smaller ones read lower, so with them in, the
# factor over-corrected the scored lesions (docs/training.md).
FIT_MIN_VOLUME_ML: Mapping[str, float] = {"lesions": SMALL_LESION_ML}


def class_of(row: Mapping[str, Any]) -> str:
    """The region class of a region row (its kind where it has none)."""
    return str(row.get("region_class") or row.get("kind") or "")


def estimate(row: Mapping[str, Any]) -> float:
    """The network's corrected region mean, the uncorrected one where no correction ran (NaN for an empty cell)."""
    value = cell_float(row.get(CALIBRATED_COLUMN))
    return value if math.isfinite(value) else cell_float(row.get(RAW_COLUMN))


def cell_float(value: Any) -> float:
    """A row's cell as a float: NaN for a missing or empty one (rows read back from CSV hold '' for NaN)."""
    return math.nan if value is None or value == "" else float(value)


def usable_cells(
    rows: Iterable[Mapping[str, Any]], min_volume_ml: Mapping[str, float]
) -> dict[tuple[str, float], list[Mapping[str, Any]]]:
    """(class, scan time) → the rows a fit may use: a class, a finite positive ground truth and estimate, and at
    least the class's `min_volume_ml` (rows without a volume stay in)."""
    cells: dict[tuple[str, float], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        cls, gt, est = class_of(row), cell_float(row.get("gt_mean_dose_gy")), estimate(row)
        volume = cell_float(row.get("volume_ml"))
        if cls in min_volume_ml and math.isfinite(volume) and volume < min_volume_ml[cls]:
            continue
        if cls and math.isfinite(gt) and math.isfinite(est) and gt > 0 and est > 0:
            cells[(cls, float(row["timepoint_h"]))].append(row)
    return dict(cells)


def _ratios(
    rows: Iterable[Mapping[str, Any]], min_volume_ml: Mapping[str, float]
) -> dict[tuple[str, float], list[tuple[str, float]]]:
    """(class, scan time) → [(patient, ground truth / network)] of the usable rows."""
    return {
        key: [(str(r.get("patient_id", "")), cell_float(r["gt_mean_dose_gy"]) / estimate(r)) for r in cell]
        for key, cell in usable_cells(rows, min_volume_ml).items()
    }


def fit_calibration(
    rows: Iterable[Mapping[str, Any]],
    *,
    min_volume_ml: Mapping[str, float] | None = FIT_MIN_VOLUME_ML,
    by_patient: bool = True,
    shrink: bool = False,
) -> dict[str, dict[str, float]]:
    """{region class: {scan time h (as text): factor}} = median(gt_mean_dose_gy / network) per class and time.

    Rows are `predict_split` region rows of the validation fold; rows without a finite positive ground truth or
    estimate are left out, and a (class, time) with fewer than 3 regions gets no factor. `min_volume_ml`
    ({class: mL}; default lesions ≥ 4 mL, `FIT_MIN_VOLUME_ML`; None or {} keeps every region) leaves smaller
    regions of a class out of the fit (rows without ``volume_ml`` stay in);
    `by_patient` (default, as the train config's) takes the median over patients of each patient's median, so that a
    patient with many lesions does not set the factor alone (lesions of one patient share its kinetics); False: the
    median of all regions pooled. `shrink` pulls the log factor m
    toward 0 by max(0, 1 − se²/m²), se² the between-patient variance of the log per-patient medians over their
    number (positive-part James–Stein): a bias no larger than its own standard error is not applied, one many
    standard errors away is kept; it needs at least 2 patients (else no factor).
    """
    factors: dict[str, dict[str, float]] = defaultdict(dict)
    for (cls, time_h), pairs in sorted(_ratios(rows, dict(min_volume_ml or {})).items()):
        if len(pairs) < _MIN_REGIONS:
            continue
        per_patient: dict[str, list[float]] = defaultdict(list)
        for patient, ratio in pairs:
            per_patient[patient].append(ratio)
        patient_medians = [float(np.median(v)) for v in per_patient.values()]
        factor = float(np.median(patient_medians if by_patient else [ratio for _, ratio in pairs]))
        if shrink:
            if len(patient_medians) < 2:
                continue
            log_factor = math.log(factor)
            se2 = float(np.var(np.log(patient_medians), ddof=1)) / len(patient_medians)
            factor = math.exp(log_factor * max(0.0, 1.0 - se2 / log_factor**2)) if log_factor != 0.0 else 1.0
        factors[cls][f"{time_h:g}"] = float(np.clip(factor, *FACTOR_RANGE))
    return dict(factors)


def nearest_factor(factors: Mapping[str, Mapping[str, float]], region_class: str, timepoint_h: float) -> float:
    """The factor of a class at the fitted scan time nearest to `timepoint_h` (1.0 for an unknown class)."""
    by_time = factors.get(region_class) or {}
    return float(by_time[nearest_time(by_time, timepoint_h)]) if by_time else 1.0


def nearest_time(times: Iterable[str], timepoint_h: float) -> str:
    """Of fitted scan times (h, as text), the one nearest to `timepoint_h` in log time (the first for t ≤ 0)."""
    return min(times, key=lambda t: abs(math.log(float(t) / timepoint_h)) if timepoint_h > 0 else 0.0)


def apply_calibration(
    rows: Sequence[Mapping[str, Any]], factors: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """New rows whose corrected column is the network's estimate × its class-and-time factor (input left alone)."""
    return scale_rows(rows, lambda row: nearest_factor(factors, class_of(row), float(row["timepoint_h"])))


def scale_rows(
    rows: Sequence[Mapping[str, Any]], factor_of: Callable[[Mapping[str, Any]], float]
) -> list[dict[str, Any]]:
    """New rows whose corrected column is the network's estimate × ``factor_of(row)`` (input left alone; rows
    without an estimate are copied as they are)."""
    out = []
    for row in rows:
        new = dict(row)
        value = estimate(row)
        if math.isfinite(value):
            new[CALIBRATED_COLUMN] = value * factor_of(row)
        out.append(new)
    return out
