"""Region-mean calibration: the factor undoes a known systematic bias; sparse classes and NaNs are left alone."""

from __future__ import annotations

import math

import pytest

from ludl.evaluation.tables import LESION_MIN_VOLUME_ML
from ludl.models.calibration import FIT_MIN_VOLUME_ML, apply_calibration, fit_calibration, nearest_factor
from ludl.models.uncertainty import SMALL_LESION_ML


def _row(cls: str, time_h: float, gt: float, net: float, corrected: float = math.nan) -> dict[str, object]:
    return {
        "region_class": cls,
        "timepoint_h": time_h,
        "gt_mean_dose_gy": gt,
        "net_mean_dose_gy": net,
        "net_mean_dose_corrected_gy": corrected,
    }


def test_a_known_bias_is_undone_per_class_and_scan_time() -> None:
    # lesions read 20 % low at 24 h and 25 % high at 48 h (corrected column), kidneys only 2 regions (no factor)
    rows = [_row("lesions", 24.0, g, 0.0, 0.8 * g) for g in (10.0, 20.0, 30.0, 40.0)]
    rows += [_row("lesions", 48.0, g, 0.0, 1.25 * g) for g in (12.0, 25.0, 31.0)]
    rows += [_row("kidneys", 24.0, g, 0.0, 0.5 * g) for g in (3.0, 4.0)]
    factors = fit_calibration(rows)
    assert factors["lesions"] == pytest.approx({"24": 1.25, "48": 0.8})
    assert "kidneys" not in factors
    calibrated = apply_calibration(rows, factors)
    for before, after in zip(rows, calibrated, strict=True):
        if before["region_class"] == "lesions":
            assert after["net_mean_dose_corrected_gy"] == pytest.approx(before["gt_mean_dose_gy"])
        else:
            assert after["net_mean_dose_corrected_gy"] == before["net_mean_dose_corrected_gy"]
    assert rows[0]["net_mean_dose_corrected_gy"] == 8.0  # the input rows are left alone


def test_uncorrected_stand_in_nearest_time_and_bounds() -> None:
    # no single-scan correction ran (NaN): the uncorrected mean is calibrated and lands in the corrected column
    rows = [_row("liver", 24.0, 2.0, 1.0), _row("liver", 24.0, 4.0, 2.0), _row("liver", 24.0, 3.0, 1.5)]
    factors = fit_calibration(rows)
    assert factors == {"liver": {"24": 2.0}}
    assert apply_calibration(rows, factors)[0]["net_mean_dose_corrected_gy"] == pytest.approx(2.0)
    # a 30 h scan takes the 24 h factor; a class never fitted keeps 1
    assert nearest_factor({"liver": {"24": 2.0, "96": 1.1}}, "liver", 30.0) == 2.0
    assert nearest_factor({"liver": {"24": 2.0, "96": 1.1}}, "liver", 70.0) == 1.1
    assert nearest_factor(factors, "spleen", 24.0) == 1.0
    # a broken prediction (network 100 × low) is clipped, not calibrated away
    wild = fit_calibration([_row("spleen", 4.0, 1.0, 0.01) for _ in range(3)])
    assert wild["spleen"]["4"] == 4.0


def _lesion(patient: str, time_h: float, gt: float, corrected: float, volume_ml: float) -> dict[str, object]:
    return {**_row("lesions", time_h, gt, 0.0, corrected), "patient_id": patient, "volume_ml": volume_ml}


def test_small_regions_left_out_of_the_fit_by_volume() -> None:
    # lesions ≥ 4 mL read 20 % low, smaller ones 50 % low: the lesions ≥ 4 mL factor is 1.25, not the pooled median
    rows = [_lesion("P1", 24.0, 10.0, 8.0, v) for v in (5.0, 8.0, 20.0)]
    rows += [_lesion("P1", 24.0, 10.0, 5.0, v) for v in (0.5, 1.0, 2.0, 3.0)]
    assert fit_calibration(rows, min_volume_ml=None)["lesions"]["24"] == pytest.approx(2.0)  # 4 × 2.0, 3 × 1.25
    assert fit_calibration(rows, min_volume_ml={"lesions": 4.0})["lesions"]["24"] == pytest.approx(1.25)
    # the default fits the lesions the comparison scores, those of the evaluation's size threshold and above
    assert FIT_MIN_VOLUME_ML == {"lesions": LESION_MIN_VOLUME_ML} == {"lesions": SMALL_LESION_ML}
    assert fit_calibration(rows)["lesions"]["24"] == pytest.approx(1.25)
    # rows without a volume stay in; other classes are not filtered
    kidneys = [_row("kidneys", 24.0, g, 0.0, 0.5 * g) for g in (3.0, 4.0, 5.0)]
    assert fit_calibration(kidneys, min_volume_ml={"lesions": 4.0}) == {"kidneys": {"24": pytest.approx(2.0)}}


def test_by_patient_one_vote_per_patient() -> None:
    # P1 has 5 lesions reading 50 % low, P2 and P3 one lesion each reading exactly: pooled median 2.0, by patient 1.0
    rows = [_lesion("P1", 48.0, 10.0, 5.0, 10.0) for _ in range(5)]
    rows += [_lesion("P2", 48.0, 10.0, 10.0, 10.0), _lesion("P3", 48.0, 12.0, 12.0, 10.0)]
    assert fit_calibration(rows, by_patient=False)["lesions"]["48"] == pytest.approx(2.0)
    assert fit_calibration(rows, by_patient=True)["lesions"]["48"] == pytest.approx(1.0)
    assert fit_calibration(rows)["lesions"]["48"] == pytest.approx(1.0)  # the default votes by patient, as the job


def test_shrink_keeps_a_clear_bias_and_drops_one_within_its_error() -> None:
    # 4 patients all reading 50 % low (± 2 %): the factor ≈ 2 survives shrinkage (se ≪ log 2)
    clear = [_lesion(p, 4.0, 10.0, 5.0 * s, 10.0) for p, s in (("A", 0.98), ("B", 1.0), ("C", 1.02), ("D", 1.0))]
    assert fit_calibration(clear, by_patient=True, shrink=True)["lesions"]["4"] == pytest.approx(2.0, rel=0.01)
    # per-patient ratios 0.5, 2, 1.1, 0.9: median ≈ 1.0 with a huge spread → shrunk to 1 exactly
    noisy = [_lesion(p, 24.0, 10.0, 10.0 / r, 10.0) for p, r in (("A", 0.5), ("B", 2.0), ("C", 1.1), ("D", 0.9))]
    assert fit_calibration(noisy, by_patient=True, shrink=True)["lesions"]["24"] == pytest.approx(1.0)
    # one patient: no spread to judge the factor by → no factor
    assert fit_calibration(clear[:1] * 3, by_patient=True, shrink=True) == {}
