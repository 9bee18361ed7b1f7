"""Non-response prediction on the held-out fold: ROC AUC with patient-bootstrap CI, calibration, and baselines.

Beside the network's ``p_non_response`` (``predictions/patients.csv``) the table holds:

- a PET-only baseline: logistic regression on the pre-therapy PET inside the reference lesion labels of the prepared
  cases (SUVmean, SUVmax, log tumour volume), trained on the patients of every other fold of ``splits.json`` and
  applied to the held-out fold (cross-validated: no patient informs its own prediction);
- the cohort's reference probabilities (``truth/response.csv``): ``p_observable`` (what dosimetry could know),
  ``p_true`` (includes biology no image shows) where the cohort has them, else ``p_non_response``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.evaluation.csvfiles import num, read_rows
from ludl.evaluation.stats import CI_LEVEL, patient_draws
from ludl.io.prepared import PreparedCase, list_cases, read_case
from ludl.io.regions import is_lesion_name
from ludl.physics.units import ML_PER_MM3

__all__ = [
    "CALIBRATION_COLUMNS",
    "PET_FEATURES",
    "RESPONSE_COLUMNS",
    "auc_interval",
    "brier_score",
    "cohort_pet_features",
    "pet_lesion_features",
    "pet_only_probabilities",
    "read_labels",
    "read_probabilities",
    "reliability_bins",
    "replicate_aucs",
    "response_row",
]

PET_FEATURES: tuple[str, ...] = ("suv_mean", "suv_max", "log_tumour_volume_ml")
RESPONSE_COLUMNS: tuple[str, ...] = (
    "predictor",
    "n_patients",
    "n_non_responders",
    "auc",
    "auc_low",
    "auc_high",
    "brier",
)
CALIBRATION_COLUMNS: tuple[str, ...] = ("predictor", "bin", "p_low", "p_high", "n", "mean_predicted", "observed_rate")
_CALIBRATION_BINS = 5  # a held-out fold of a demo has ≈ 10 patients: more bins would hold one patient each


def _auc(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> float:
    from sklearn.metrics import roc_auc_score

    if np.unique(y).size < 2:
        return math.nan  # a resample with one class has no ROC curve
    return float(roc_auc_score(y, p))


def replicate_aucs(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, weights: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """ROC AUC of every bootstrap replicate (rows of integer `weights`), ties counted one half (Mann–Whitney).

    Equals `roc_auc_score` on the repeated sample without repeating it; NaN where a replicate has one class only.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    values, group = np.unique(p, return_inverse=True)
    one_hot = np.zeros((p.size, values.size))
    one_hot[np.arange(p.size), group] = 1.0
    neg_by_value = (w * (y == 0)) @ one_hot  # negatives' weight at each distinct probability
    below = np.cumsum(neg_by_value, axis=1) - neg_by_value
    wins = below[:, group] + 0.5 * neg_by_value[:, group]  # negatives a positive outranks (ties: one half)
    pos = w * (y == 1)
    n_pos, n_neg = pos.sum(axis=1), (w * (y == 0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), (pos * wins).sum(axis=1) / (n_pos * n_neg), np.nan)


def auc_interval(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, patients: Sequence[str], *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """ROC AUC (sklearn) and its 95 % patient-bootstrap interval (replicates with a single class are skipped)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if np.unique(y).size < 2:
        return math.nan, math.nan, math.nan
    unique, index = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    reps = replicate_aucs(y, p, patient_draws(unique.size, n_boot, seed)[:, index])
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        return _auc(y, p), math.nan, math.nan
    tail = 100.0 * (1.0 - CI_LEVEL) / 2.0
    low, high = np.percentile(reps, [tail, 100.0 - tail])
    return _auc(y, p), float(low), float(high)


def brier_score(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Mean squared difference of predicted probability and outcome (0 perfect, 0.25 a coin)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def reliability_bins(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, n_bins: int = _CALIBRATION_BINS
) -> list[dict[str, Any]]:
    """Equal-width probability bins: patients, mean predicted probability and observed non-response rate per bin."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        members = index == b
        n = int(members.sum())
        out.append(
            {
                "bin": b + 1,
                "p_low": float(edges[b]),
                "p_high": float(edges[b + 1]),
                "n": n,
                "mean_predicted": float(p[members].mean()) if n else math.nan,
                "observed_rate": float(y[members].mean()) if n else math.nan,
            }
        )
    return out


def response_row(
    name: str,
    labels: Mapping[str, int],
    probabilities: Mapping[str, float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """AUC (with CI) and Brier of one predictor over the patients that have both a label and a probability."""
    patients = sorted(p for p in labels if p in probabilities and math.isfinite(probabilities[p]))
    if not patients:
        return None
    y = np.array([labels[p] for p in patients], dtype=np.float64)
    prob = np.array([probabilities[p] for p in patients], dtype=np.float64)
    auc, low, high = auc_interval(y, prob, patients, n_boot=n_boot, seed=seed)
    return {
        "predictor": name,
        "n_patients": len(patients),
        "n_non_responders": int(y.sum()),
        "auc": auc,
        "auc_low": low,
        "auc_high": high,
        "brier": brier_score(y, prob),
    }


def _feature_timepoint(case: PreparedCase) -> Any:
    """The time point whose labels are the reference (the ground truth's grid), else the first one with PET."""
    ref = case.sidecar.get("reference_timepoint_h")
    with_pet = [t for t in case.timepoints if "pet" in t.channels and "labels" in t.channels]
    for tp in with_pet:
        if ref is not None and math.isclose(tp.timepoint_h, float(ref), abs_tol=1e-6):
            return tp
    return with_pet[0] if with_pet else None


def pet_lesion_features(case: PreparedCase) -> dict[str, float]:
    """SUVmean and SUVmax over all reference lesion voxels and the log total tumour volume (mL) of one case.

    A case without PET or lesions has zero SUV and volume (log1p keeps the volume finite).
    """
    tp = _feature_timepoint(case)
    values = [v for name, v in case.region_values.items() if is_lesion_name(name)]
    if tp is None or not values:
        return {"suv_mean": 0.0, "suv_max": 0.0, "log_tumour_volume_ml": 0.0}
    labels = tp.array("labels")
    mask = np.isin(labels, values)
    if not mask.any():
        return {"suv_mean": 0.0, "suv_max": 0.0, "log_tumour_volume_ml": 0.0}
    suv = np.asarray(tp.array("pet"), dtype=np.float64)[mask]
    voxel_ml = float(np.prod(tp.spacing_zyx_mm)) * ML_PER_MM3
    return {
        "suv_mean": float(suv.mean()),
        "suv_max": float(suv.max()),
        "log_tumour_volume_ml": float(np.log1p(mask.sum() * voxel_ml)),
    }


def cohort_pet_features(prepared_dir: str | Path, cycle: int = 1) -> dict[str, dict[str, float]]:
    """`pet_lesion_features` of every prepared case of this cycle, by patient."""
    root = Path(prepared_dir)
    cases_root = root / "cases" if (root / "cases").is_dir() else root
    out = {}
    for path in list_cases(cases_root):
        case = read_case(path)
        if case.cycle == cycle:
            out[case.patient_id] = pet_lesion_features(case)
    return out


def pet_only_probabilities(
    features: Mapping[str, Mapping[str, float]],
    labels: Mapping[str, int],
    train_patients: Sequence[str],
    test_patients: Sequence[str],
) -> dict[str, float]:
    """P(non-response) of the test patients from a logistic regression on the training patients' PET features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = [p for p in train_patients if p in features and p in labels]
    test = [p for p in test_patients if p in features]
    y = np.array([labels[p] for p in train])
    if not test or np.unique(y).size < 2:
        return {}  # a training split with one outcome class cannot fit a classifier
    x_train = np.array([[features[p][f] for f in PET_FEATURES] for p in train])
    x_test = np.array([[features[p][f] for f in PET_FEATURES] for p in test])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(x_train, y)
    return dict(zip(test, (float(v) for v in model.predict_proba(x_test)[:, 1]), strict=True))


def read_probabilities(path: str | Path, column: str, *, fold: int | None = None, cycle: int = 1) -> dict[str, float]:
    """patient → probability column of a CSV (``predictions/patients.csv`` or ``truth/response.csv``)."""
    rows = read_rows(path, ("patient_id", column))
    out = {}
    for row in rows:
        if fold is not None and "fold" in row and int(num(row["fold"])) != fold:
            continue
        if "cycle" in row and math.isfinite(num(row["cycle"])) and int(num(row["cycle"])) != cycle:
            continue
        out[str(row["patient_id"])] = num(row[column])
    return out


def read_labels(path: str | Path) -> dict[str, int]:
    """patient → non_response (0/1) of rows that have one."""
    out = {}
    for row in read_rows(path, ("patient_id", "non_response")):
        value = num(row["non_response"])
        if math.isfinite(value):
            if value not in (0.0, 1.0):
                raise InputError(f"{path}: non_response of {row['patient_id']} is {value}; must be 0, 1 or empty")
            out[str(row["patient_id"])] = int(value)
    return out
