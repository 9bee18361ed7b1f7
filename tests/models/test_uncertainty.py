"""Split-conformal region intervals: coverage on fresh draws of a known error distribution, pooling, nearest time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ludl.models.uncertainty import (
    MIN_REGIONS,
    POOLED,
    fit_uncertainty,
    held_out_coverage,
    interval_class,
    nearest_half_width,
)


def _rows(
    rng: np.random.Generator, n: int, kind: str, time_h: float, sigma_log: float, volume_ml: float = 10.0
) -> list[dict[str, object]]:
    """Regions whose ground truth = estimate × a log-normal error of known spread."""
    est = rng.uniform(1.0, 30.0, n)
    gt = est * np.exp(sigma_log * rng.standard_normal(n))
    return [
        {
            "kind": kind,
            "timepoint_h": time_h,
            "volume_ml": volume_ml,
            "gt_mean_dose_gy": g,
            "net_mean_dose_corrected_gy": e,
        }
        for g, e in zip(gt, est, strict=True)
    ]


def test_conformal_interval_covers_ninety_percent_of_fresh_regions() -> None:
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(40):  # many small validation folds: the guarantee is on average over them, ≥ 90 %
        widths = fit_uncertainty(_rows(rng, 30, "lesion", 24.0, 0.25))
        shares.append(held_out_coverage(_rows(rng, 200, "lesion", 24.0, 0.25), widths)["held_out/coverage_90"])
    # Conformal: E[coverage] ∈ [0.90, 0.90 + 1/(n+1)] for n = 30 exchangeable regions.
    assert 0.89 <= float(np.mean(shares)) <= 0.90 + 1 / 31 + 0.01


def test_half_width_matches_the_known_error_quantile() -> None:
    rng = np.random.default_rng(1)
    widths = fit_uncertainty(_rows(rng, 20_000, "organ", 48.0, 0.1))
    z = np.exp(0.1 * rng.standard_normal(1_000_000))
    expected = float(np.quantile(np.abs(z - 1.0), 0.9))  # |gt/est − 1| with gt/est log-normal
    assert widths["organ"]["48"] == pytest.approx(expected, rel=0.02)


def test_scan_times_with_few_regions_fall_back_to_the_pooled_group() -> None:
    rng = np.random.default_rng(2)
    rows = _rows(rng, 40, "lesion", 24.0, 0.3) + _rows(rng, MIN_REGIONS - 1, "lesion", 96.0, 0.05)
    widths = fit_uncertainty(rows)
    assert "24" in widths["lesion"] and "96" not in widths["lesion"] and POOLED in widths["lesion"]
    assert nearest_half_width(widths, None, "lesion", 100.0) == widths["lesion"]["24"]  # nearest fitted time
    assert nearest_half_width({"lesion": {POOLED: 0.2}}, None, "lesion", 4.0) == 0.2
    assert math.isnan(nearest_half_width(widths, None, "organ", 24.0))


def test_a_region_class_with_enough_regions_gets_its_own_width() -> None:
    rng = np.random.default_rng(3)
    kidneys = [{**r, "region_class": "kidneys"} for r in _rows(rng, 12, "organ", 24.0, 0.05)]
    marrow = [{**r, "region_class": "red_marrow"} for t in (4.0, 24.0) for r in _rows(rng, 5, "organ", t, 1.0)]
    liver = [{**r, "region_class": "liver"} for r in _rows(rng, 4, "organ", 24.0, 0.05)]
    widths = fit_uncertainty(kidneys + marrow + liver)
    assert "24" in widths["kidneys"] and list(widths["red_marrow"]) == [POOLED] and "liver" not in widths
    kidney, marrow_width = (nearest_half_width(widths, c, "organ", 24.0) for c in ("kidneys", "red_marrow"))
    assert kidney < 0.2 < marrow_width
    # A class with too few regions borrows its group's width, which the noisy marrow widens.
    assert nearest_half_width(widths, "liver", "organ", 24.0) == widths["organ"]["24"]


def test_held_out_coverage_counts_per_group_and_skips_missing_truth() -> None:
    widths = {"lesion": {"24": 0.2}, "organ": {"24": 0.1}}
    rows = [
        {"kind": "lesion", "timepoint_h": 24.0, "gt_mean_dose_gy": 11.9, "net_mean_dose_corrected_gy": 10.0},
        {"kind": "lesion", "timepoint_h": 24.0, "gt_mean_dose_gy": 12.1, "net_mean_dose_corrected_gy": 10.0},
        {"kind": "organ", "timepoint_h": 24.0, "gt_mean_dose_gy": 4.5, "net_mean_dose_corrected_gy": 5.0},
        {"kind": "organ", "timepoint_h": 24.0, "gt_mean_dose_gy": math.nan, "net_mean_dose_corrected_gy": 5.0},
    ]
    out = held_out_coverage(rows, widths)
    assert out["held_out/coverage_90_lesion"] == 0.5
    assert out["held_out/coverage_90_organ"] == 1.0
    assert out["held_out/n_intervals"] == 3
    assert held_out_coverage(rows, {}) == {}


def test_small_lesions_get_their_own_wider_interval() -> None:
    rng = np.random.default_rng(4)
    rows = _rows(rng, 200, "lesion", 24.0, 0.1, volume_ml=20.0) + _rows(rng, 200, "lesion", 24.0, 0.5, volume_ml=1.5)
    widths = fit_uncertainty(rows)
    assert interval_class("lesions", "lesion", 1.5) == "lesions_under_4ml"
    assert widths["lesions_under_4ml"]["24"] > 3 * widths["lesions"]["24"]
    fresh = _rows(rng, 2000, "lesion", 24.0, 0.5, volume_ml=1.5) + _rows(rng, 2000, "lesion", 24.0, 0.1, volume_ml=20.0)
    assert held_out_coverage(fresh, widths)["held_out/coverage_90"] == pytest.approx(0.9, abs=0.03)
