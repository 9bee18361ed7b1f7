"""How far to trust a single-scan region mean: split-conformal 90 % intervals learned on the VALIDATION fold.

A region mean's error is mostly multiplicative and its size depends on the region (a 5 mL lesion is harder than a
liver; the image-based red marrow is harder still) and the scan time (a 4 h scan says little about retention). The
half-width of the interval is the split-conformal quantile of the validation fold's relative errors
|ground truth / estimate − 1| of the *calibrated* region means (Vovk et al. 2005; Lei et al., JASA 2018): with n
exchangeable validation regions, the ⌈(n + 1)·0.9⌉-th smallest error bounds a new region's error with probability
≥ 90 %. The held-out fold, never used to fit it, then measures the coverage actually reached (`held_out_coverage`),
which the artifact records and every report states.

Where it comes from, most specific first, each needing at least `MIN_REGIONS` validation regions: the region's
interval class (`interval_class`: its region class — ``kidneys``, ``liver``, ``red_marrow`` … — with lesions split at
`SMALL_LESION_ML`, below which partial volume dominates the error) at that scan time; the
class over all scan times; its kind group (``lesion`` / ``organ``) at that scan time; the group over all scan times.
None at all: no half-width (NaN), and inference says the interval is the member spread only. Validation regions
of one patient share that patient's errors, so a fold of few patients covers less than 90 % on new patients; the
measured held-out coverage says by how much.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ludl.models.calibration import CALIBRATED_COLUMN, RAW_COLUMN, SMALL_LESION_ML

__all__ = [
    "COVERAGE",
    "MIN_REGIONS",
    "POOLED",
    "SMALL_LESION_ML",
    "Z_90",
    "fit_uncertainty",
    "held_out_coverage",
    "interval_class",
    "kind_group",
    "nearest_half_width",
]

COVERAGE = 0.90  # the interval the region table states
Z_90 = 1.6449  # two-sided 90 % interval of a normal: ± 1.645 SD (half-width = Z_90 × SD)
MIN_REGIONS = 9  # the smallest n whose conformal 90 % rank ⌈(n + 1)·0.9⌉ is ≤ n
POOLED = "all"  # the scan-time key of a group's pooled half-width


def kind_group(kind: str) -> str:
    """``lesion`` for lesions, ``organ`` for every other scored region (the interval's two groups)."""
    return "lesion" if kind == "lesion" else "organ"


def interval_class(region_class: str | None, kind: str, volume_ml: float) -> str:
    """The class a region's interval is learned for: its region class, lesions under `SMALL_LESION_ML` apart."""
    if kind == "lesion":
        return "lesions_under_4ml" if volume_ml < SMALL_LESION_ML else "lesions"
    return str(region_class or "")


def _row_class(row: Mapping[str, Any]) -> str:
    return interval_class(
        str(row.get("region_class") or ""), str(row.get("kind", "")), float(row.get("volume_ml", math.nan))
    )


def _relative_error(row: Mapping[str, Any]) -> float:
    """|ground truth / calibrated estimate − 1| of a prediction row (NaN where either is missing or not positive)."""
    gt = float(row.get("gt_mean_dose_gy", math.nan))
    est = float(row.get(CALIBRATED_COLUMN, math.nan))
    est = est if math.isfinite(est) else float(row.get(RAW_COLUMN, math.nan))
    if not (math.isfinite(gt) and math.isfinite(est) and gt > 0 and est > 0):
        return math.nan
    return abs(gt / est - 1.0)


def _conformal_quantile(errors: list[float], coverage: float = COVERAGE) -> float:
    """The ⌈(n + 1)·coverage⌉-th smallest error (NaN when n is too small for that rank)."""
    rank = math.ceil((len(errors) + 1) * coverage)
    return float(np.sort(errors)[rank - 1]) if rank <= len(errors) else math.nan


def _fit_level(errors: Mapping[tuple[str, float], list[float]]) -> dict[str, dict[str, float]]:
    """{key: {scan time (text) or ``all``: half-width}} over the keys' scan times with enough regions."""
    widths: dict[str, dict[str, float]] = defaultdict(dict)
    for key in sorted({k for k, _ in errors}):
        pooled = [e for (k, _), values in errors.items() if k == key for e in values]
        if len(pooled) >= MIN_REGIONS:
            widths[key][POOLED] = _conformal_quantile(pooled)
        for (k, time_h), values in sorted(errors.items()):
            if k == key and len(values) >= MIN_REGIONS:
                widths[key][f"{time_h:g}"] = _conformal_quantile(values)
    return {k: w for k, w in widths.items() if w}


def fit_uncertainty(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{region class or kind group: {scan time h (text) or ``all``: relative half-width of the 90 % interval}} from
    calibrated validation rows (`predict_split` rows after `apply_calibration`)."""
    by_class: dict[tuple[str, float], list[float]] = defaultdict(list)
    by_group: dict[tuple[str, float], list[float]] = defaultdict(list)
    for row in rows:
        error = _relative_error(row)
        if math.isfinite(error):
            time_h = float(row["timepoint_h"])
            by_group[(kind_group(str(row.get("kind", ""))), time_h)].append(error)
            if _row_class(row):
                by_class[(_row_class(row), time_h)].append(error)
    return {**_fit_level(by_class), **_fit_level(by_group)}


def nearest_half_width(
    widths: Mapping[str, Mapping[str, float]], region_class: str | None, group: str, timepoint_h: float
) -> float:
    """The relative half-width for a region of `region_class` (kind `group`) at scan `timepoint_h`: the most
    specific level fitted (class at the nearest fitted scan time on a log scale, class pooled, group at the nearest
    time, group pooled); NaN where none was."""
    for key in (region_class, group):
        by_key = widths.get(key or "") or {}
        times = [t for t in by_key if t != POOLED]
        if times and timepoint_h > 0:
            nearest = min(times, key=lambda t: abs(math.log(float(t) / timepoint_h)))
            return float(by_key[nearest])
        if POOLED in by_key:
            return float(by_key[POOLED])
    return math.nan


def held_out_coverage(rows: Iterable[Mapping[str, Any]], widths: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Share of held-out regions whose ground truth lies in estimate × (1 ± half-width), overall and per group
    (``held_out/coverage_90*`` metrics, with the region counts); {} without half-widths."""
    if not widths:
        return {}
    hits: dict[str, list[bool]] = {"all": [], "lesion": [], "organ": []}
    for row in rows:
        group = kind_group(str(row.get("kind", "")))
        width = nearest_half_width(widths, _row_class(row), group, float(row["timepoint_h"]))
        gt = float(row.get("gt_mean_dose_gy", math.nan))
        est = float(row.get(CALIBRATED_COLUMN, math.nan))
        est = est if math.isfinite(est) else float(row.get(RAW_COLUMN, math.nan))
        if not (math.isfinite(width) and math.isfinite(gt) and math.isfinite(est) and gt > 0 and est > 0):
            continue
        inside = est * (1.0 - width) <= gt <= est * (1.0 + width)
        hits["all"].append(inside)
        hits[group].append(inside)
    out: dict[str, float] = {}
    for key, values in hits.items():
        suffix = "" if key == "all" else f"_{key}"
        if values:
            out[f"held_out/coverage_90{suffix}"] = float(np.mean(values))
        out[f"held_out/n_intervals{suffix}"] = float(len(values))
    return out
