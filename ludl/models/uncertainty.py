"""How far to trust a single-scan region mean: split-conformal 90 % intervals learned on the VALIDATION fold.

A region mean's error is mostly multiplicative and its size depends on the region kind (a 5 mL lesion is harder
than a liver) and the scan time (a 4 h scan says little about retention). For each kind group (``lesion`` /
``organ``) and scan time, the half-width of the interval is the split-conformal quantile of the validation fold's
relative errors |ground truth / estimate − 1| of the *calibrated* region means (Vovk et al. 2005; Lei et al., JASA
2018): with n exchangeable validation regions, the ⌈(n + 1)·0.9⌉-th smallest error bounds a new region's error
with probability ≥ 90 %. The held-out fold, never used to fit it, then measures the coverage actually reached
(`held_out_coverage`), which the artifact records and every report states.

Too few validation regions at one scan time (fewer than `MIN_REGIONS`): that group's regions at every scan time
are pooled — wider at late times, never narrower than the data allow. None at all: no half-width (NaN), and
inference says that the interval is the member spread only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ludl.models.calibration import CALIBRATED_COLUMN, RAW_COLUMN

__all__ = [
    "COVERAGE",
    "MIN_REGIONS",
    "POOLED",
    "Z_90",
    "fit_uncertainty",
    "held_out_coverage",
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


def fit_uncertainty(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{kind group: {scan time h (text) or ``all``: relative half-width of the 90 % interval}} from calibrated
    validation rows (`predict_split` rows after `apply_calibration`)."""
    by_time: dict[tuple[str, float], list[float]] = defaultdict(list)
    for row in rows:
        error = _relative_error(row)
        if math.isfinite(error):
            by_time[(kind_group(str(row.get("kind", ""))), float(row["timepoint_h"]))].append(error)
    widths: dict[str, dict[str, float]] = defaultdict(dict)
    for group in sorted({g for g, _ in by_time}):
        pooled = [e for (g, _), errors in by_time.items() if g == group for e in errors]
        widths[group][POOLED] = _conformal_quantile(pooled)
        for (g, time_h), errors in sorted(by_time.items()):
            if g == group and len(errors) >= MIN_REGIONS:
                widths[group][f"{time_h:g}"] = _conformal_quantile(errors)
    return {g: {k: v for k, v in w.items() if math.isfinite(v)} for g, w in widths.items()}


def nearest_half_width(widths: Mapping[str, Mapping[str, float]], group: str, timepoint_h: float) -> float:
    """The relative half-width of `group` at the fitted scan time nearest to `timepoint_h` (log scale), the
    group's pooled value where no time was fitted on its own, NaN where the group has none."""
    by_group = widths.get(group) or {}
    times = [t for t in by_group if t != POOLED]
    if times and timepoint_h > 0:
        nearest = min(times, key=lambda t: abs(math.log(float(t) / timepoint_h)))
        return float(by_group[nearest])
    return float(by_group.get(POOLED, math.nan))


def held_out_coverage(rows: Iterable[Mapping[str, Any]], widths: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Share of held-out regions whose ground truth lies in estimate × (1 ± half-width), overall and per group
    (``held_out/coverage_90*`` metrics, with the region counts); {} without half-widths."""
    if not widths:
        return {}
    hits: dict[str, list[bool]] = {"all": [], "lesion": [], "organ": []}
    for row in rows:
        group = kind_group(str(row.get("kind", "")))
        width = nearest_half_width(widths, group, float(row["timepoint_h"]))
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
