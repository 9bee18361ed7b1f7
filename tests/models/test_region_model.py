"""The region kinetics model (`ludl.models.region_model`): features measured by hand, a known log-linear bias found
and removed, a bias that features do not explain left to the class factor, and the fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.calibration import fit_calibration
from ludl.models.region_model import (
    FEATURE_COLUMNS,
    FeatureClasses,
    calibrate_rows,
    fit_region_model,
    region_factor,
    region_features,
    scan_features,
)

_INDEX = {c.name: c.index for c in SEGMENTATION_CLASSES}
_CLASSES = FeatureClasses.of(SEGMENTATION_CLASSES)


def test_features_of_a_hand_built_scan() -> None:
    # 10 × 10 × 10 voxels of 8 mm³ (0.008 mL); 1 MBq/mL everywhere, 5 in a 2 × 2 × 2 "lesion", 3 in the kidneys
    activity = np.ones((10, 10, 10))
    classes = np.zeros((10, 10, 10), dtype=np.int64)
    labels = np.zeros((10, 10, 10), dtype=np.int32)
    activity[:2, :2, :2], classes[:2, :2, :2], labels[:2, :2, :2] = 5.0, _INDEX["lesion"], 7
    activity[5:, 5:, 5:], classes[5:, 5:, 5:], labels[5:, 5:, 5:] = 3.0, _INDEX["kidney_left"], 1
    suv = np.full((10, 10, 10), 2.0)
    suv[:2, :2, :2] = 10.0
    voxel_ml, injected_mbq = 0.008, 100.0
    total_mbq = (1000 - 8 - 125 + 8 * 5 + 125 * 3) * voxel_ml
    assert _CLASSES == FeatureClasses((_INDEX["kidney_left"], _INDEX["kidney_right"]), _INDEX["lesion"])
    scan = scan_features(activity, suv, classes, voxel_ml, injected_mbq, _CLASSES)
    assert scan["log_retained_fraction"] == pytest.approx(math.log(total_mbq / injected_mbq))
    assert scan["log_kidney_fraction"] == pytest.approx(math.log(125 * 3 * voxel_ml / injected_mbq))
    assert scan["log_tumour_fraction"] == pytest.approx(math.log(8 * 5 * voxel_ml / injected_mbq))
    assert scan["log_lesion_uptake_vs_pet"] == pytest.approx(math.log(5.0 / injected_mbq) - math.log(10.0))
    features = region_features(
        activity, suv, labels, {"lesion_001": 7, "kidney_left": 1, "absent": 9}, voxel_ml, injected_mbq, scan
    )
    assert set(features) == {"lesion_001", "kidney_left"}  # a region with no voxel has no features
    lesion = features["lesion_001"]
    assert set(lesion) == set(FEATURE_COLUMNS)
    assert lesion["feature_log_volume_ml"] == pytest.approx(math.log(8 * voxel_ml))
    assert lesion["feature_log_region_fraction"] == pytest.approx(math.log(8 * 5 * voxel_ml / injected_mbq))
    assert lesion["feature_log_pet_suv"] == pytest.approx(math.log(10.0))
    assert features["kidney_left"]["feature_log_retained_fraction"] == scan["log_retained_fraction"]
    # no PET, no lesion found: those features are unknown, not zero
    blind = scan_features(activity, None, np.zeros_like(classes), voxel_ml, injected_mbq, _CLASSES)
    assert math.isnan(blind["log_lesion_uptake_vs_pet"]) and math.isnan(blind["log_tumour_fraction"])


def _rows(ratio_of, n_patients: int = 10, per_patient: int = 3, seed: int = 0) -> list[dict[str, object]]:
    """Kidney rows at 24 h whose ground truth / estimate = ratio_of(retained fraction, patient index)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        retained = float(rng.uniform(0.2, 0.6))
        for r in range(per_patient):
            features = {c: float(rng.normal()) for c in FEATURE_COLUMNS}  # noise the fit must not lean on
            features["feature_log_retained_fraction"] = math.log(retained)
            features["feature_log_volume_ml"] = math.log(150.0)
            estimate = 2.0 + r
            rows.append(
                {
                    "patient_id": f"P{p:02d}",
                    "timepoint_h": 24.0,
                    "region_class": "kidneys",
                    "kind": "organ",
                    "volume_ml": 150.0,
                    "net_mean_dose_corrected_gy": estimate,
                    "gt_mean_dose_gy": estimate * ratio_of(retained, p),
                    **features,
                }
            )
    return rows


def test_a_bias_that_follows_the_retained_fraction_is_learned_and_removed() -> None:
    # the network reads patients who keep more activity low: truth / estimate = 1.3 · (retained / 0.4)^0.8
    def ratio(retained: float, _: int) -> float:
        return 1.3 * (retained / 0.4) ** 0.8

    fit_rows, test_rows = _rows(ratio, seed=0), _rows(ratio, n_patients=6, seed=1)
    model = fit_region_model(fit_rows, alpha=0.01)
    cv = model["selection"]["kidneys"]["24"]
    assert cv["ridge"] < 0.02 < cv["factor"]  # leave-one-patient-out: the ridge explains it, one factor cannot
    assert "24" in model["fits"]["kidneys"]
    factors = fit_calibration(fit_rows)
    calibrated = calibrate_rows(test_rows, factors, model)
    errors = [abs(r["net_mean_dose_corrected_gy"] / r["gt_mean_dose_gy"] - 1) for r in calibrated]  # type: ignore[operator]
    factor_only = calibrate_rows(test_rows, factors, None)
    errors_factor = [abs(r["net_mean_dose_corrected_gy"] / r["gt_mean_dose_gy"] - 1) for r in factor_only]  # type: ignore[operator]
    assert max(errors) < 0.03 < float(np.median(errors_factor))


def test_a_bias_no_feature_explains_stays_with_the_class_factor() -> None:
    rows = _rows(lambda _r, _p: 1.25)  # the same factor for everyone: nothing for the features to add
    model = fit_region_model(rows, alpha=0.3)
    assert "kidneys" not in model["fits"]
    factors = fit_calibration(rows)
    features = {c: 5.0 for c in FEATURE_COLUMNS}
    assert region_factor(model, factors, "kidneys", 24.0, features) == pytest.approx(1.25)


def test_fallbacks_unknown_features_small_lesions_and_rows_read_from_csv() -> None:
    fit = {"intercept": math.log(1.5), "mean": [0.0] * 7, "scale": [1.0] * 7, "coef": [0.2] * 7}
    model = {"fits": {"lesions": {"24": fit}}, "min_volume_ml": {"lesions": 4.0}}
    factors = {"lesions": {"24": 1.1, "48": 1.2}}
    large = {c: math.nan for c in FEATURE_COLUMNS} | {"feature_log_volume_ml": math.log(10.0)}
    # every unknown feature reads as the fit's mean: the intercept; the volume's own term is 0.2 · log 10
    assert region_factor(model, factors, "lesions", 23.0, large) == pytest.approx(1.5 * math.exp(0.2 * math.log(10)))
    small = dict(large, feature_log_volume_ml=math.log(2.0))
    assert region_factor(model, factors, "lesions", 24.0, small) == 1.1  # under the fit's 4 mL: the class factor
    assert region_factor(model, factors, "lesions", 48.0, large) == 1.2  # no fit at 48 h: the class factor
    assert region_factor(model, factors, "liver", 24.0, large) == 1.0  # nothing fitted for the class
    # huge features cannot push a factor out of the range a bias can have
    assert region_factor(model, factors, "lesions", 24.0, dict(large, feature_log_region_fraction=1e3)) == 4.0
    csv_row = {"timepoint_h": "24", "region_class": "lesions", "net_mean_dose_corrected_gy": "2.0"}
    csv_row |= {c: "" for c in FEATURE_COLUMNS} | {"feature_log_volume_ml": repr(math.log(10.0))}
    (out,) = calibrate_rows([csv_row], factors, model)
    assert out["net_mean_dose_corrected_gy"] == pytest.approx(2.0 * 1.5 * math.exp(0.2 * math.log(10)))
