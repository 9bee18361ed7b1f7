"""Segmentation quality of the held-out fold: Dice per class and lesion detection (docs/architecture.md "Evaluation").

Reads ``predictions/segmentation.csv`` (``patient_id, cycle, timepoint_h, class, dice`` and, on lesion rows or on
rows of their own, ``lesions_reference, lesions_detected, false_positives``). Every interval resamples patients.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.evaluation.csvfiles import num, read_rows
from ludl.evaluation.stats import bootstrap_interval, paired_bootstrap_interval

__all__ = ["DETECTION_COLUMNS", "DICE_COLUMNS", "detection_summary", "dice_summary", "segmentation_tables"]

DICE_COLUMNS: tuple[str, ...] = (
    "class",
    "n_scans",
    "n_patients",
    "mean_dice",
    "mean_dice_low",
    "mean_dice_high",
    "median_dice",
    "p10_dice",
)
DETECTION_COLUMNS: tuple[str, ...] = (
    "timepoint_h",
    "n_scans",
    "n_patients",
    "lesions_reference",
    "lesions_detected",
    "sensitivity_pct",
    "sensitivity_low_pct",
    "sensitivity_high_pct",
    "false_positives_per_scan",
    "false_positives_low",
    "false_positives_high",
)
_PRODUCER = "predictions/segmentation.csv (written by `python train.py` / the predict step)"


def dice_summary(rows: Sequence[dict[str, str]], *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Mean Dice (with patient-bootstrap CI), median and 10th percentile per class over every held-out scan."""
    by_class: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for row in rows:
        dice = num(row.get("dice"))
        if math.isfinite(dice) and row.get("class"):
            by_class[str(row["class"])].append((str(row["patient_id"]), dice))
    out = []
    for cls, values in by_class.items():
        patients = [p for p, _ in values]
        dice_values = np.array([d for _, d in values])
        mean = bootstrap_interval(dice_values, patients, lambda v: float(np.mean(v)), n_boot=n_boot, seed=seed)
        out.append(
            {
                "class": cls,
                "n_scans": int(dice_values.size),
                "n_patients": len(set(patients)),
                "mean_dice": mean.value,
                "mean_dice_low": mean.low,
                "mean_dice_high": mean.high,
                "median_dice": float(np.median(dice_values)),
                "p10_dice": float(np.percentile(dice_values, 10)),
            }
        )
    return out


def _ratio_of_sums(found: np.ndarray, total: np.ndarray) -> float:
    return float(100.0 * found.sum() / total.sum()) if total.sum() > 0 else math.nan


def detection_summary(rows: Sequence[dict[str, str]], *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Lesion sensitivity (pooled over lesions) and false positives per scan, per scan time and over all scans."""
    scans: dict[tuple[str, str, float], tuple[float, float, float]] = {}
    for row in rows:
        n_lesions = num(row.get("lesions_reference"))
        if not math.isfinite(n_lesions):
            continue
        key = (str(row["patient_id"]), str(row.get("cycle", "")), num(row.get("timepoint_h")))
        scans[key] = (n_lesions, num(row.get("lesions_detected")), num(row.get("false_positives")))
    times = sorted({k[2] for k in scans if math.isfinite(k[2])})
    out = []
    for time_h in [*times, math.nan]:
        keys = [k for k in scans if math.isnan(time_h) or k[2] == time_h]
        if not keys:
            continue
        patients = [k[0] for k in keys]
        n_ref = np.array([scans[k][0] for k in keys])
        found = np.nan_to_num(np.array([scans[k][1] for k in keys]))
        fp = np.nan_to_num(np.array([scans[k][2] for k in keys]))
        sens = paired_bootstrap_interval(
            found,
            n_ref,
            patients,
            lambda v: float(v.sum()),
            n_boot=n_boot,
            seed=seed,
            combine=lambda f, r: 100.0 * f / r if r > 0 else math.nan,
        )
        fps = bootstrap_interval(fp, patients, lambda v: float(np.mean(v)), n_boot=n_boot, seed=seed)
        out.append(
            {
                "timepoint_h": time_h,
                "n_scans": len(keys),
                "n_patients": len(set(patients)),
                "lesions_reference": int(n_ref.sum()),
                "lesions_detected": int(found.sum()),
                "sensitivity_pct": _ratio_of_sums(found, n_ref),
                "sensitivity_low_pct": sens.low,
                "sensitivity_high_pct": sens.high,
                "false_positives_per_scan": fps.value,
                "false_positives_low": fps.low,
                "false_positives_high": fps.high,
            }
        )
    return out


def segmentation_tables(
    path: str | Path, fold_patients: Sequence[str] | None = None, *, n_boot: int = 1000, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Dice summary, detection summary) of ``predictions/segmentation.csv``, restricted to `fold_patients` if given."""
    rows = read_rows(path, ("patient_id", "class", "dice"), producer=_PRODUCER)
    if fold_patients is not None:
        keep = set(fold_patients)
        rows = [r for r in rows if r["patient_id"] in keep]
    return dice_summary(rows, n_boot=n_boot, seed=seed), detection_summary(rows, n_boot=n_boot, seed=seed)
