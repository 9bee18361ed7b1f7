"""Region-mean calibration: the factor undoes a known systematic bias; sparse classes and NaNs are left alone."""

from __future__ import annotations

import math

import pytest

from ludl.models.calibration import apply_calibration, fit_calibration, nearest_factor


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
