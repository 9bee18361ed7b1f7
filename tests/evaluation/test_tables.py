"""Comparison tables on synthetic CSVs with known errors: statistics, held-out filter, paired differences, reference."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from ludl.errors import InputError
from ludl.evaluation.stats import bootstrap_error_statistics, error_statistics, relative_error_pct
from ludl.evaluation.tables import comparison_tables
from tests.evaluation.fakes import REGIONS, TIMES_H, write_fake_run


def _row(table: list[dict], **match: object) -> dict:
    rows = [r for r in table if all(r[k] == v for k, v in match.items())]
    assert len(rows) == 1, (match, len(rows))
    return rows[0]


def test_a_constant_ten_percent_error_gives_bias_ten_and_no_share_above_ten() -> None:
    errors = relative_error_pct(np.full(20, 1.1) * 3.7, np.full(20, 3.7))
    s = error_statistics(errors)
    assert s["bias_pct"] == pytest.approx(10.0)
    assert s["median_abs_error_pct"] == pytest.approx(10.0)
    assert s["p90_abs_error_pct"] == pytest.approx(10.0)
    assert s["share_over_10_pct"] == 0.0
    assert s["share_over_20_pct"] == 0.0


def test_relative_error_is_nan_for_non_positive_or_missing_reference() -> None:
    e = relative_error_pct([1.0, 1.0, np.nan], [0.0, -1.0, 1.0])
    assert np.isnan(e).all()


def test_bootstrap_interval_contains_the_population_values() -> None:
    """Errors N(5 %, 10 %) of 60 patients × 4 regions: the CIs cover the population median and median |error|."""
    rng = np.random.default_rng(11)
    errors = rng.normal(5.0, 10.0, size=240)
    patients = [f"P{i // 4}" for i in range(240)]
    # Median of |X|, X ~ N(5, 10): m with P(|X| < m) = 1/2.
    true_median_abs = optimize.brentq(lambda m: stats.norm.cdf(m, 5, 10) - stats.norm.cdf(-m, 5, 10) - 0.5, 0, 50)
    ci = bootstrap_error_statistics(errors, patients, seed=3)
    assert ci["bias_pct"].contains(5.0)
    assert ci["median_abs_error_pct"].contains(true_median_abs)
    assert ci["share_over_20_pct"].contains(100 * (stats.norm.sf(20, 5, 10) + stats.norm.cdf(-20, 5, 10)))
    assert ci["bias_pct"].low < ci["bias_pct"].value < ci["bias_pct"].high


def test_same_seed_gives_the_same_intervals() -> None:
    rng = np.random.default_rng(0)
    e, p = rng.normal(size=50), [f"P{i % 7}" for i in range(50)]
    assert bootstrap_error_statistics(e, p, seed=5) == bootstrap_error_statistics(e, p, seed=5)


def _constant(value: float):
    return lambda p, r, t: value


def test_known_methods_against_ground_truth_and_truth(tmp_path: Path) -> None:
    """Network +10 %, Hänscheid −30 %, the ground truth itself +5 % off the truth."""
    run, prepared, cohort = write_fake_run(
        tmp_path,
        8,
        network=_constant(0.10),
        stp={"haenscheid": _constant(-0.30), "madsen": _constant(0.10)},
        gt_vs_truth=_constant(0.05),
    )
    t = comparison_tables(run / "predictions" / "regions.csv", prepared / "stp_regions.csv", 0, cohort_dir=cohort)
    net = _row(t.comparison, method="network", against="ground_truth", timepoint_h=24.0, region_class="kidneys")
    assert net["bias_pct"] == pytest.approx(10.0)
    assert net["median_abs_error_pct"] == pytest.approx(10.0)
    assert net["share_over_10_pct"] == 0.0 and net["share_over_20_pct"] == 0.0
    assert net["median_abs_error_pct_low"] == pytest.approx(10.0) and net["median_abs_error_pct_high"] == pytest.approx(
        10.0
    )
    # Held-out fold 0 holds every other patient: 4 patients × 2 kidneys.
    assert net["n_patients"] == 4 and net["n_regions"] == 8
    # Against the truth: 1.10 × 1.05 − 1.
    net_truth = _row(t.comparison, method="network", against="truth", timepoint_h=24.0, region_class="kidneys")
    assert net_truth["bias_pct"] == pytest.approx(15.5)
    # The uncorrected network mean (× 0.7 in the fake) is reported apart.
    raw = _row(
        t.comparison, method="network_uncorrected", against="ground_truth", timepoint_h=24.0, region_class="liver"
    )
    assert raw["bias_pct"] == pytest.approx(100 * (1.1 * 0.7 - 1))
    hz = _row(t.comparison, method="haenscheid", against="ground_truth", timepoint_h=48.0, region_class="lesions")
    assert hz["bias_pct"] == pytest.approx(-30.0) and hz["share_over_20_pct"] == 100.0
    # Lesions < 4 mL are not scored: 2 lesions ≥ 4 mL per patient.
    assert hz["n_regions"] == 4 * sum(1 for r in REGIONS if r[2] == "lesions" and r[3] >= 4)
    multi = _row(t.comparison, method="multi_tp", against="truth", region_class="spleen")
    assert math.isnan(multi["timepoint_h"]) and multi["bias_pct"] == pytest.approx(5.0)
    assert not [r for r in t.comparison if r["method"] == "multi_tp" and r["against"] == "ground_truth"]
    # Paired: |10| − |−30| = −20 points, the network better; identical errors (Madsen) differ by exactly 0.
    diff = _row(t.paired, method="haenscheid", against="ground_truth", timepoint_h=24.0, region_class="kidneys")
    assert diff["difference_pct"] == pytest.approx(-20.0) and diff["network_better"]
    same = _row(t.paired, method="madsen", against="truth", timepoint_h=96.0, region_class="liver")
    assert same["difference_pct"] == pytest.approx(0.0)
    assert same["difference_low_pct"] <= 0.0 <= same["difference_high_pct"] and not same["network_better"]
    assert {r["timepoint_h"] for r in t.comparison if r["method"] == "network"} == set(TIMES_H)


def test_paired_difference_of_identical_noisy_methods_is_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    noise = rng.normal(0.0, 0.2, size=(10, len(REGIONS), len(TIMES_H)))
    same = lambda p, r, t: float(noise[p, r, t])  # noqa: E731
    run, prepared, cohort = write_fake_run(tmp_path, 10, network=same, stp={"prior": same})
    t = comparison_tables(run / "predictions" / "regions.csv", prepared / "stp_regions.csv", 1, cohort_dir=cohort)
    for row in t.paired:
        assert row["difference_pct"] == pytest.approx(0.0, abs=1e-9)
        assert row["difference_low_pct"] <= 1e-9 and row["difference_high_pct"] >= -1e-9


def test_reference_ratio_from_region_rows_and_from_the_cohort_summary(tmp_path: Path) -> None:
    run, _, cohort = write_fake_run(tmp_path, 6, network=_constant(0.10), stp={})
    truth = cohort / "truth"
    with (truth / "single_scan_bound.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["region_class", "timepoint_h", "median_abs_error_pct"])
        w.writerow(["kidneys", 24, 4.0])
    t = comparison_tables(run / "predictions" / "regions.csv", None, 0, cohort_dir=cohort)
    row = _row(t.reference, timepoint_h=24.0, region_class="kidneys")
    assert row["ratio"] == pytest.approx(10.0 / 4.0) and "bound" in t.reference_source
    # A per-region reference (noisy variant 20 % high, noise-free 5 %): preferred over the summary, noisy first.
    with (truth / "single_scan_reference.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "cycle", "region", "kind", "region_class", "scan_h", "volume_ml", "dose_true_gy",
                    "dose_ref_noise_free_gy", "dose_ref_noisy_gy"])  # fmt: skip
        for p in [f"P{i:02d}" for i in range(1, 7)]:
            for region, kind, cls, volume, dose in REGIONS:
                for time_h in TIMES_H:
                    w.writerow([p, 1, region, kind, cls, time_h, volume, dose, dose * 1.05, dose * 1.2])
    t = comparison_tables(run / "predictions" / "regions.csv", None, 0, cohort_dir=cohort)
    row = _row(t.reference, timepoint_h=48.0, region_class="lesions")
    assert row["ratio"] == pytest.approx(0.5) and row["ratio_low"] == pytest.approx(0.5)
    assert "dose_ref_noisy_gy" in t.reference_source
    ref = _row(t.comparison, method="reference", against="truth", timepoint_h=4.0, region_class="liver")
    assert ref["bias_pct"] == pytest.approx(20.0) and ref["n_patients"] == 3  # held-out patients only
    lesions = _row(t.comparison, method="reference", against="truth", timepoint_h=4.0, region_class="lesions")
    assert lesions["n_regions"] == 3 * 2  # the 1.5 mL lesion is not scored, as for the network


def test_missing_columns_name_the_file_and_the_job(tmp_path: Path) -> None:
    bad = tmp_path / "regions.csv"
    bad.write_text("patient_id,cycle\nP1,1\n")
    with pytest.raises(InputError, match=r"regions\.csv.*missing column.*train\.py"):
        comparison_tables(bad, None, 0)


def test_replicate_percentiles_equal_numpy_on_the_repeated_sample() -> None:
    from ludl.evaluation.stats import patient_draws, replicate_percentiles

    rng = np.random.default_rng(0)
    for n in (1, 2, 37):
        values = np.round(rng.normal(size=n), 1)  # ties on purpose
        draws = patient_draws(n, 100, seed=n)
        for q in (0.0, 2.5, 50.0, 90.0, 100.0):
            expected = [np.percentile(np.repeat(values, w), q) for w in draws]
            np.testing.assert_allclose(replicate_percentiles(values, draws, q), expected, rtol=0, atol=1e-12)
