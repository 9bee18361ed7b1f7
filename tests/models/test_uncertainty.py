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
    nearest_half_width,
)


def _rows(rng: np.random.Generator, n: int, kind: str, time_h: float, sigma_log: float) -> list[dict[str, object]]:
    """Regions whose ground truth = estimate × a log-normal error of known spread."""
    est = rng.uniform(1.0, 30.0, n)
    gt = est * np.exp(sigma_log * rng.standard_normal(n))
    return [
        {"kind": kind, "timepoint_h": time_h, "gt_mean_dose_gy": g, "net_mean_dose_corrected_gy": e}
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
    assert nearest_half_width(widths, "lesion", 100.0) == widths["lesion"]["24"]  # nearest fitted time
    assert nearest_half_width({"lesion": {POOLED: 0.2}}, "lesion", 4.0) == 0.2
    assert math.isnan(nearest_half_width(widths, "organ", 24.0))


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
