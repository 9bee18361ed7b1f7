"""Non-response AUC/calibration, the PET-only baseline and the segmentation summaries on known inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ludl.evaluation.response import (
    auc_interval,
    brier_score,
    pet_lesion_features,
    pet_only_probabilities,
    reliability_bins,
    response_row,
)
from ludl.evaluation.segmentation import segmentation_tables
from tests.evaluation.fakes import patients, write_fake_response, write_fake_run


def test_perfect_predictor_has_auc_one_and_its_reverse_zero() -> None:
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1] * 3)
    ids = [f"P{i}" for i in range(y.size)]
    auc, low, high = auc_interval(y, y * 0.8 + 0.1, ids)
    assert (auc, low, high) == (1.0, 1.0, 1.0)
    assert auc_interval(y, 1 - y, ids)[0] == 0.0


def test_uninformative_predictor_has_auc_one_half_inside_its_interval() -> None:
    y = np.array([0, 1] * 20)
    auc, low, high = auc_interval(y, np.full(y.size, 0.3), [f"P{i}" for i in range(y.size)])
    assert auc == 0.5 and low <= 0.5 <= high
    # Each probability given to one responder and one non-responder: AUC exactly 1/2, and an interval around it.
    y = np.array([0, 1] * 200)
    auc, low, high = auc_interval(y, np.arange(400) // 2 / 400, [f"P{i}" for i in range(400)], seed=1)
    assert auc == pytest.approx(0.5) and low < 0.5 < high


def test_brier_and_reliability_of_known_probabilities() -> None:
    y = np.array([0, 0, 1, 1])
    assert brier_score(y, y) == 0.0
    assert brier_score(y, np.full(4, 0.5)) == 0.25
    bins = reliability_bins([0, 1, 1, 0], [0.1, 0.9, 0.95, 0.15], n_bins=5)
    assert [b["n"] for b in bins] == [2, 0, 0, 0, 2]
    assert bins[0]["observed_rate"] == 0.0 and bins[4]["observed_rate"] == 1.0
    assert bins[4]["mean_predicted"] == pytest.approx(0.925)


def test_response_row_uses_only_patients_with_label_and_probability() -> None:
    row = response_row("x", {"A": 1, "B": 0, "C": 1}, {"A": 0.9, "B": 0.2, "D": 0.5})
    assert row is not None and row["n_patients"] == 2 and row["auc"] == 1.0


@dataclass
class _Timepoint:
    arrays: dict[str, np.ndarray]
    timepoint_h: float = 24.0
    spacing_zyx_mm: tuple[float, float, float] = (2.0, 5.0, 10.0)  # 0.1 mL voxels

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    def array(self, channel: str) -> np.ndarray:
        return self.arrays[channel]


@dataclass
class _Case:
    timepoints: tuple[_Timepoint, ...]
    region_values: dict[str, int]
    sidecar: dict[str, Any] = field(default_factory=lambda: {"reference_timepoint_h": 24.0})


def test_pet_lesion_features_are_the_suv_inside_the_lesion_labels() -> None:
    labels = np.zeros((4, 4, 4), dtype=np.int32)
    labels[0, 0, :2] = 3  # lesion_001: 2 voxels
    labels[1, 1, :3] = 4  # lesion_002: 3 voxels
    labels[2, 2, 2] = 1  # liver
    pet = np.zeros((4, 4, 4), dtype=np.float32)
    pet[0, 0, :2] = (4.0, 6.0)
    pet[1, 1, :3] = (10.0, 10.0, 20.0)
    pet[2, 2, 2] = 50.0  # organ uptake must not count
    case = _Case((_Timepoint({"pet": pet, "labels": labels}),), {"liver": 1, "lesion_001": 3, "lesion_002": 4})
    f = pet_lesion_features(case)  # type: ignore[arg-type]
    assert f["suv_mean"] == pytest.approx(50.0 / 5)
    assert f["suv_max"] == 20.0
    assert f["log_tumour_volume_ml"] == pytest.approx(np.log1p(0.5))


def test_pet_only_baseline_separates_separable_patients() -> None:
    features = {f"P{i}": {"suv_mean": 5.0 + 10 * (i % 2), "suv_max": 8.0 + 12 * (i % 2),
                          "log_tumour_volume_ml": 2.0} for i in range(20)}  # fmt: skip
    labels = {p: int(v["suv_mean"] < 10) for p, v in features.items()}  # low PSMA expression: non-response
    train, test = [f"P{i}" for i in range(14)], [f"P{i}" for i in range(14, 20)]
    probs = pet_only_probabilities(features, labels, train, test)
    assert set(probs) == set(test)
    assert all((probs[p] > 0.5) == bool(labels[p]) for p in test)


def test_segmentation_summaries_of_known_rows(tmp_path: Path) -> None:
    run, prepared, cohort = write_fake_run(tmp_path, 4, network=lambda p, r, t: 0.0, stp={})
    write_fake_response(run, cohort, prepared, 4)
    dice, detection = segmentation_tables(run / "predictions" / "segmentation.csv", patients(4)[:2])
    by_class = {r["class"]: r for r in dice}
    assert by_class["liver"]["mean_dice"] == pytest.approx(0.92) and by_class["liver"]["n_patients"] == 2
    overall = detection[-1]
    assert np.isnan(overall["timepoint_h"])
    assert overall["sensitivity_pct"] == pytest.approx(75.0)  # 3 of 4 reference lesions per scan
    assert overall["false_positives_per_scan"] == pytest.approx(1.0)
    assert overall["lesions_reference"] == 4 * 2 * 5  # 4 lesions × 2 patients × 5 scans


def test_replicate_aucs_equal_sklearn_on_the_repeated_sample() -> None:
    from sklearn.metrics import roc_auc_score

    from ludl.evaluation.response import replicate_aucs
    from ludl.evaluation.stats import patient_draws

    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 30)
    p = np.round(rng.random(30), 1)  # ties on purpose
    w = patient_draws(30, 50, seed=2)
    got = replicate_aucs(y, p, w)
    for b in range(50):
        yy, pp = np.repeat(y, w[b]), np.repeat(p, w[b])
        if np.unique(yy).size == 2:
            assert got[b] == pytest.approx(roc_auc_score(yy, pp))
