"""Region-mean calibration of the single-scan path, learned on the VALIDATION patients (never the held-out ones).

The single-scan partial-volume correction (a GTM on the predicted TIA, `RegionScoring.correct`) cannot see what the
multi-time-point pipeline's correction saw (its activity recovery over five scans), and on the demo cohort it
under-corrects lesions by ≈ 10 % at every scan time. One factor per region class and scan time — the median of
ground truth / network over the validation fold's regions — removes that systematic part; what remains is each
region's own scatter. It is the cheapest form of "a region-mean term trained against the pipeline's corrected
region doses": the correction uses no multi-time-point information of the case it is applied to, and the factors
travel in the model artifact so inference applies the same ones.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["CALIBRATED_COLUMN", "RAW_COLUMN", "apply_calibration", "fit_calibration", "nearest_factor"]

CALIBRATED_COLUMN = "net_mean_dose_corrected_gy"  # the column the factors scale (and that evaluation scores)
RAW_COLUMN = "net_mean_dose_gy"  # its stand-in where no single-scan correction ran (NaN corrected column)
_MIN_REGIONS = 3  # fewer validation regions of a class at a scan time: no factor (1.0), a median of 1–2 is noise
_FACTOR_RANGE = (0.25, 4.0)  # a factor outside it means a broken prediction, not a bias to calibrate away


def _class_of(row: Mapping[str, Any]) -> str:
    return str(row.get("region_class") or row.get("kind") or "")


def _estimate(row: Mapping[str, Any]) -> float:
    """The network's corrected region mean, the uncorrected one where no correction ran."""
    value = float(row.get(CALIBRATED_COLUMN, math.nan))
    return value if math.isfinite(value) else float(row.get(RAW_COLUMN, math.nan))


def fit_calibration(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{region class: {scan time h (as text): factor}} = median(gt_mean_dose_gy / network) per class and time.

    Rows are `predict_split` region rows of the validation fold; rows without a finite positive ground truth or
    estimate are left out, and a (class, time) with fewer than 3 regions gets no factor.
    """
    ratios: dict[tuple[str, float], list[float]] = defaultdict(list)
    for row in rows:
        gt, est = float(row.get("gt_mean_dose_gy", math.nan)), _estimate(row)
        cls = _class_of(row)
        if cls and math.isfinite(gt) and math.isfinite(est) and gt > 0 and est > 0:
            ratios[(cls, float(row["timepoint_h"]))].append(gt / est)
    factors: dict[str, dict[str, float]] = defaultdict(dict)
    for (cls, time_h), values in sorted(ratios.items()):
        if len(values) >= _MIN_REGIONS:
            factors[cls][f"{time_h:g}"] = float(np.clip(np.median(values), *_FACTOR_RANGE))
    return dict(factors)


def nearest_factor(factors: Mapping[str, Mapping[str, float]], region_class: str, timepoint_h: float) -> float:
    """The factor of a class at the fitted scan time nearest to `timepoint_h` (1.0 for an unknown class)."""
    by_time = factors.get(region_class) or {}
    if not by_time:
        return 1.0
    nearest = min(by_time, key=lambda t: abs(math.log(float(t) / timepoint_h)) if timepoint_h > 0 else 0.0)
    return float(by_time[nearest])


def apply_calibration(
    rows: Sequence[Mapping[str, Any]], factors: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """New rows whose corrected column is the network's estimate × its class-and-time factor (input left alone)."""
    out = []
    for row in rows:
        new = dict(row)
        value = _estimate(row)
        if math.isfinite(value):
            new[CALIBRATED_COLUMN] = value * nearest_factor(factors, _class_of(row), float(row["timepoint_h"]))
        out.append(new)
    return out
