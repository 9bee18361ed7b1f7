"""STP baselines on a cohort: Hänscheid, Madsen and the prior-informed estimator against analytic kinetics.

Expected values come from closed forms (docs/physics.md §3: Hänscheid's ratio x·2^{1−x}, Madsen's exactness with the
true T_eff), from medians computed by hand, and from the literature's qualitative pattern (Hänscheid poor for lesions at
24 h, good near T_eff), never from the code's own output.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ludl.dosimetry.baselines import (
    METHODS,
    STP_COLUMNS,
    STP_FILE,
    clearance_t_eff_h,
    fit_population_priors,
    madsen_t_eff_h,
    run_stp_baselines,
    stp_cohort_table,
    stp_dose_map,
    stp_region_table,
)
from ludl.dosimetry.regions import expand_regions
from ludl.dosimetry.registration import AlignedTimePoint
from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.io.prepared_sidecar import StpCase
from ludl.io.splits import make_splits
from ludl.physics.stp import PriorInformedEstimator

LN2 = math.log(2.0)
TIMES_H = (4.0, 24.0, 48.0, 96.0, 168.0)
INJECTED_MBQ = 7400.0
PVC_FACTOR = 1.25  # corrected / observed, of the ground truth and of every single scan
DOSE_PER_TIA = 2e-3  # Gy per MBq·h (uncorrected), arbitrary but fixed


def _single_scan(factor: float = PVC_FACTOR, times_h: tuple[float, ...] = TIMES_H) -> dict[str, float]:
    """The ``ss<t>h_…`` values `stp_case` stores: each scan's own GTM factor and dose per uncorrected TIA."""
    out = {}
    for t in times_h:
        out[f"ss{t:g}h_pvc_factor"] = factor
        out[f"ss{t:g}h_dose_gy_per_mbq_h"] = DOSE_PER_TIA * factor
        out[f"ss{t:g}h_dose_uncorrected_gy_per_mbq_h"] = DOSE_PER_TIA
    return out


def _region_row(pid: str, name: str, kind: str, cls: str, a0: float, l1: float, l2: float) -> dict[str, Any]:
    tia = a0 * (1.0 / l1 - 1.0 / l2)  # ∫ a0 (e^{−λ1 t} − e^{−λ2 t}) dt, docs/physics.md §2
    return {
        "patient_id": pid,
        "cycle": 1,
        "injected_mbq": INJECTED_MBQ,
        "region": name,
        "kind": kind,
        "region_class": cls,
        "scored": True,
        "volume_ml": 100.0,
        "tia_uncorrected_mbq_h": tia,
        "tia_mbq_h": tia * PVC_FACTOR,
        "mean_dose_uncorrected_gy": tia * DOSE_PER_TIA,
        "mean_dose_gy": tia * DOSE_PER_TIA * PVC_FACTOR,
        "t_eff_h": LN2 / l1,
        "t_eff_clearance_h": LN2 / l1,  # the curves are exact: clearance_t_eff_h gives this where λ2 ≫ λ1
        "a0": a0,
        "lambda1_per_h": l1,
        "lambda2_per_h": l2,
        "fit_cv": 0.05,
        **_single_scan(),
    }


def _case(
    pid: str, regions: list[tuple[str, str, str, float, float, float]], noise: npt.NDArray[np.float64] | None = None
) -> StpCase:
    """A case whose region curves are exact biexp_uptake samples (times with (1 + noise))."""
    t = np.asarray(TIMES_H)
    rows, curves = [], {}
    for i, (name, kind, cls, a0, l1, l2) in enumerate(regions):
        rows.append(_region_row(pid, name, kind, cls, a0, l1, l2))
        a = a0 * (np.exp(-l1 * t) - np.exp(-l2 * t))
        curves[name] = (t.copy(), a * (1.0 + (noise[i] if noise is not None else 0.0)))
    return StpCase(pid, 1, INJECTED_MBQ, TIMES_H, tuple(rows), curves, {})


def _mono(pid: str, t_eff_h: float, name: str = "kidney_left") -> StpCase:
    # λ_u = 1e9/h: uptake over at once, the curve is mono-exponential at every scan time.
    return _case(pid, [(name, "organ", "kidneys", 500.0, LN2 / t_eff_h, 1e9)])


def test_haenscheid_is_exact_at_t_eff_and_follows_x_2_pow_1_minus_x() -> None:
    case = _mono("P1", 48.0)
    for t_h, x in ((48.0, 1.0), (96.0, 2.0), (24.0, 0.5), (168.0, 3.5)):
        (row,) = stp_region_table(case, t_h, "haenscheid")
        ratio = x * 2.0 ** (1.0 - x)  # docs/physics.md §3
        assert row["tia_mbq_h"] / row["gt_tia_mbq_h"] == pytest.approx(ratio, rel=1e-6)
        assert row["mean_dose_gy"] / row["gt_mean_dose_gy"] == pytest.approx(ratio, rel=1e-6)
    (row,) = stp_region_table(case, 48.0, "haenscheid")
    assert row["tia_mbq_h"] == pytest.approx(500.0 * 48.0 / LN2 * PVC_FACTOR, rel=1e-6)


def test_madsen_is_exact_with_the_right_t_eff_only() -> None:
    case = _mono("P1", 30.0)
    for t_h in TIMES_H:
        (row,) = stp_region_table(case, t_h, "madsen", t_eff_h={"kidneys": 30.0})
        assert row["tia_mbq_h"] == pytest.approx(row["gt_tia_mbq_h"], rel=1e-6)
        assert row["t_eff_used_h"] == 30.0
    (row,) = stp_region_table(case, 96.0, "madsen", t_eff_h={"kidneys": 60.0})
    lam, lam_pop = LN2 / 30.0, LN2 / 60.0
    expected = math.exp((lam_pop - lam) * 96.0) * lam / lam_pop  # A0 e^{−λt}·e^{λ't}/λ' over A0/λ
    assert row["tia_mbq_h"] / row["gt_tia_mbq_h"] == pytest.approx(expected, rel=1e-6)


def test_partial_volume_and_dose_come_from_the_scan_itself() -> None:
    case = _mono("P1", 48.0)
    row = dict(case.regions[0])
    # The 24 h scan alone says 1.6 (its own GTM) and 3e-3 Gy per MBq·h; the ground truth's 1.25 must not be used.
    row.update({"ss24h_pvc_factor": 1.6, "ss24h_dose_gy_per_mbq_h": 3e-3, "ss24h_dose_uncorrected_gy_per_mbq_h": 1e-3})
    case = StpCase(case.patient_id, 1, INJECTED_MBQ, TIMES_H, (row,), case.curves, {})
    (out,) = stp_region_table(case, 24.0, "haenscheid")
    a24 = 500.0 * math.exp(-LN2 / 48.0 * 24.0)
    tia = a24 * 2.0 * 24.0 / LN2  # docs/physics.md §3
    assert out["tia_uncorrected_mbq_h"] == pytest.approx(tia, rel=1e-9)
    assert out["tia_mbq_h"] == pytest.approx(1.6 * tia, rel=1e-9)
    assert out["mean_dose_gy"] == pytest.approx(3e-3 * tia, rel=1e-9)
    assert out["mean_dose_uncorrected_gy"] == pytest.approx(1e-3 * tia, rel=1e-9)
    assert out["pvc_factor"] == 1.6
    # A case without single-scan values (an old sidecar) has no corrected dose rather than a borrowed one.
    bare = {k: v for k, v in row.items() if not k.startswith("ss")}
    (old,) = stp_region_table(StpCase("P1", 1, INJECTED_MBQ, TIMES_H, (bare,), case.curves, {}), 24.0, "haenscheid")
    assert math.isnan(old["mean_dose_gy"]) and old["tia_uncorrected_mbq_h"] == pytest.approx(tia, rel=1e-9)


def test_madsen_t_eff_is_the_training_median_per_class() -> None:
    cases = [_mono(f"P{i}", t) for i, t in enumerate((20.0, 30.0, 50.0))]
    cases.append(_mono("TEST", 500.0))
    assert madsen_t_eff_h(cases, ["P0", "P1", "P2"])["kidneys"] == pytest.approx(30.0)
    assert madsen_t_eff_h(cases, ["P0", "P1", "P2", "TEST"])["kidneys"] == pytest.approx(40.0)
    rows = [r for c in cases for r in c.regions]
    assert madsen_t_eff_h(rows, ["P0", "P2"])["kidneys"] == pytest.approx(35.0)
    with pytest.raises(InputError, match="train_patients"):
        madsen_t_eff_h(cases, [])


def _population(n_patients: int, seed: int) -> list[StpCase]:
    """Patients with two kidneys, a liver and two lesions; log-normal kinetics, 5 % measurement noise."""
    rng = np.random.default_rng(seed)
    cases = []
    for p in range(n_patients):
        shared = rng.normal(0.0, 0.15)  # patient factor on λ_eff shared by the patient's regions
        regions = []
        for name, kind, cls, f, t_eff, t_up, sd in (
            ("kidney_left", "organ", "kidneys", 0.015, 35.0, 1.5, 0.2),
            ("kidney_right", "organ", "kidneys", 0.015, 35.0, 1.5, 0.2),
            ("liver", "organ", "liver", 0.03, 45.0, 1.0, 0.2),
            ("lesion_001", "lesion", "lesions", 0.004, 80.0, 8.0, 0.3),
            ("lesion_002", "lesion", "lesions", 0.004, 80.0, 8.0, 0.3),
        ):
            a0 = INJECTED_MBQ * f * math.exp(rng.normal(0.0, 0.3))
            l1 = max(LN2 / t_eff * math.exp(rng.normal(0.0, sd) + shared), LN2 / (24 * 6.647))
            l2 = LN2 / t_up * math.exp(rng.normal(0.0, 0.2))
            regions.append((name, kind, cls, a0, l1, l2))
        cases.append(_case(f"P{p:02d}", regions, noise=rng.normal(0.0, 0.05, size=(5, len(TIMES_H)))))
    return cases


def test_priors_use_only_training_patients() -> None:
    cases = _population(8, seed=3)
    train = [c.patient_id for c in cases[:6]]
    priors = fit_population_priors(cases, train)
    assert set(priors) == {"kidneys", "liver", "lesions"}
    assert priors["kidneys"].n_fits == 12 and priors["liver"].n_fits == 6
    # Kidneys (2 per patient) get a shared patient factor; the liver (1 per patient) cannot.
    assert np.any(priors["kidneys"].patient_loading != 0)
    assert np.all(priors["liver"].patient_loading == 0)
    assert priors["liver"].mean[1] == pytest.approx(
        np.mean([math.log(r["lambda1_per_h"]) for c in cases[:6] for r in c.regions if r["region"] == "liver"])
    )
    extreme = [r | {"lambda1_per_h": 0.5, "lambda2_per_h": 5.0} for r in cases[7].regions]
    tampered = [*cases[:7], StpCase("P07", 1, INJECTED_MBQ, TIMES_H, tuple(extreme), cases[7].curves, {})]
    again = fit_population_priors(tampered, train)
    for cls, prior in priors.items():
        np.testing.assert_array_equal(again[cls].mean, prior.mean)
        np.testing.assert_array_equal(again[cls].cov, prior.cov)
    leaked = fit_population_priors(tampered, [*train, "P07"])
    assert leaked["lesions"].mean[1] > priors["lesions"].mean[1] + 0.1  # the check above could fail


def test_population_values_ignore_unscored_regions() -> None:
    cases = _population(8, seed=3)
    train = [c.patient_id for c in cases]
    priors, t_eff = fit_population_priors(cases, train), madsen_t_eff_h(cases, train)
    # A lesion partly outside the field of view: its curve is no kinetics (fast fake clearance, poor fit).
    cut = {"region": "lesion_003", "scored": False, "lambda1_per_h": 0.06, "lambda2_per_h": 0.6, "fit_cv": 0.7}
    cut["t_eff_clearance_h"] = LN2 / 0.06
    first = cases[0]
    row = first.regions[3] | cut
    tampered = [StpCase(first.patient_id, 1, INJECTED_MBQ, TIMES_H, (*first.regions, row), first.curves, {})]
    tampered += cases[1:]
    again = fit_population_priors(tampered, train)
    np.testing.assert_array_equal(again["lesions"].mean, priors["lesions"].mean)
    assert again["lesions"].noise_cv == priors["lesions"].noise_cv
    assert madsen_t_eff_h(tampered, train) == t_eff
    scored = [StpCase(c.patient_id, 1, INJECTED_MBQ, TIMES_H, tuple(r | {"scored": True} for r in c.regions),
                      c.curves, {}) for c in tampered]  # fmt: skip
    assert fit_population_priors(scored, train)["lesions"].mean[1] > priors["lesions"].mean[1]  # it would count


def test_cohort_table_reproduces_the_literature_pattern() -> None:
    cases = _population(16, seed=7)
    splits = make_splits([c.patient_id for c in cases], n_folds=4, seed=0)
    rows: list[dict[str, Any]] = []
    for k in range(splits.n_folds):
        train = splits.train(k)
        estimator = PriorInformedEstimator(fit_population_priors(cases, train), n_samples=2048)
        t_eff = madsen_t_eff_h(cases, train)
        for case in (c for c in cases if c.patient_id in splits.test(k)):
            for t_h in TIMES_H:
                for method in METHODS:
                    rows += stp_region_table(case, t_h, method, t_eff_h=t_eff, estimator=estimator, fold=k)
    assert len(rows) == 16 * 5 * len(METHODS) * len(TIMES_H)  # one row per region × method × time point
    assert set(rows[0]) == set(STP_COLUMNS)

    def abs_err(method: str, cls: str, t_h: float) -> float:
        e = [r["mean_dose_gy"] / r["gt_mean_dose_gy"] - 1 for r in rows if (r["method"], r["region_class"],
             r["timepoint_h"]) == (method, cls, t_h)]  # fmt: skip
        assert len(e) in (16, 32)
        return float(np.mean(np.abs(e)))

    # Lesions (T_eff ≈ 80 h): x = 0.3 at 24 h gives Hänscheid ≈ −50 %, x = 1.2 at 96 h within a few %.
    assert abs_err("haenscheid", "lesions", 24.0) > 0.3
    assert abs_err("haenscheid", "lesions", 96.0) < 0.25
    assert abs_err("haenscheid", "lesions", 24.0) > 2.0 * abs_err("haenscheid", "lesions", 96.0)
    assert abs_err("prior", "lesions", 24.0) < 0.6 * abs_err("haenscheid", "lesions", 24.0)
    # Kidneys (T_eff ≈ 35 h) at 48 h: x ≈ 1.4, Hänscheid's near-exact zone.
    assert abs_err("haenscheid", "kidneys", 48.0) < 0.12
    assert abs_err("madsen", "kidneys", 48.0) < 0.2


def _same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN, arrays element-wise."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b) and type(a) is type(b)


def test_stp_case_round_trips_through_json() -> None:
    (case,) = _population(1, seed=11)
    rows = [dict(r) for r in case.regions]
    rows[0]["fit_cv"] = math.nan  # a failed fit's entries are NaN
    rows[1].update(a0=math.nan, lambda1_per_h=math.nan, lambda2_per_h=math.nan)
    curves = dict(case.curves)
    curves["_rest"] = (np.array([4.0, 24.0, math.nan, 96.0, 168.0]), np.zeros(5))
    truth = {"kidney_left": (1234.5, 6.75), "liver": (math.nan, 2.5)}
    case = StpCase(case.patient_id, 2, 7123.25, TIMES_H, tuple(rows), curves, truth)
    text = json.dumps(case.to_dict(), allow_nan=False)  # what the sidecar writer requires
    back = StpCase.from_dict(json.loads(text))
    for field in ("patient_id", "cycle", "injected_mbq", "timepoints_h", "regions", "curves", "truth"):
        assert _same(getattr(back, field), getattr(case, field)), field
    assert back.to_dict() == json.loads(text)
    with pytest.raises(InputError, match="stp_case"):
        StpCase.from_dict({"patient_id": "P1", "cycle": 1})


def test_cohort_table_is_every_fold_with_its_own_population() -> None:
    cases = _population(6, seed=5)
    splits = make_splits([c.patient_id for c in cases], n_folds=3, seed=1)
    maps = {("P00", 1): {("haenscheid", 24.0): {"kidney_left": 1.5}}}
    by_key = {(c.patient_id, c.cycle): c for c in cases}
    rows = stp_cohort_table(by_key, splits, timepoints_h=(24.0, 72.0, 96.0), map_mean_dose_gy=maps)
    expected: list[dict[str, Any]] = []
    for case in cases:  # by hand: the fold's training patients only, every method at the times the case has
        k = splits.fold_of(case.patient_id)
        estimator = PriorInformedEstimator(fit_population_priors(cases, splits.train(k)))
        t_eff = madsen_t_eff_h(cases, splits.train(k))
        for t_h in (24.0, 96.0):
            for method in METHODS:
                expected += stp_region_table(case, t_h, method, t_eff_h=t_eff, estimator=estimator, fold=k)
    assert len(rows) == len(expected) == 6 * 5 * 2 * len(METHODS)
    for got, want in zip(rows, expected, strict=True):
        filled = got.pop("map_mean_dose_gy")
        want.pop("map_mean_dose_gy")
        assert _same(got, want)
        hit = (got["patient_id"], got["method"], got["timepoint_h"], got["region"]) == (
            "P00", "haenscheid", 24.0, "kidney_left"
        )  # fmt: skip
        assert filled == 1.5 if hit else math.isnan(filled)
    with pytest.raises(InputError, match="2 folds"):
        stp_cohort_table(by_key, make_splits([c.patient_id for c in cases], n_folds=1))
    with pytest.raises(InputError, match="no fold"):
        stp_cohort_table(by_key, make_splits([c.patient_id for c in cases[:5]], n_folds=2))


def test_bad_requests_are_refused() -> None:
    case = _mono("P1", 48.0)
    with pytest.raises(InputError, match="method"):
        stp_region_table(case, 48.0, "guess")
    with pytest.raises(InputError, match="72"):
        stp_region_table(case, 72.0, "haenscheid")
    with pytest.raises(InputError, match="t_eff_h"):
        stp_region_table(case, 48.0, "madsen")
    with pytest.raises(InputError, match="estimator"):
        stp_region_table(case, 48.0, "prior")


def test_voxel_tia_map_conserves_the_region_formula() -> None:
    shape = (6, 6, 6)
    labels = np.zeros(shape, dtype=np.int32)
    labels[1:3, 1:3, 1:3] = 1
    labels[3:5, 3:5, 3:5] = 2
    conc_bq_per_ml = np.where(labels > 0, 2e5, 1e4)
    spacing = (4.0, 4.0, 4.0)
    activity = Volume(conc_bq_per_ml.astype(np.float32), spacing, (0.0, 0.0, 0.0), np.eye(3), unit="Bq/mL")
    when = np.full(shape, 24.0)
    tp = AlignedTimePoint(24.0, activity, when, np.ones(shape, dtype=bool), 0.0, 0.0)
    regions = expand_regions(labels, {"kidney_left": 1, "liver": 2})
    density = np.ones(shape)
    t_eff = {"kidneys": 30.0, "liver": 60.0, "other": 10.0}
    tia, dose = stp_dose_map(tp, regions, density, spacing, "madsen", t_eff_h=t_eff, dose_method="ldm")
    ml = 0.064
    for name, t_e in (("kidney_left", 30.0), ("liver", 60.0)):
        a_mbq = 0.2 * ml * 8
        lam = LN2 / t_e
        assert tia[regions.mask(name)].sum() * ml == pytest.approx(a_mbq * math.exp(lam * 24.0) / lam, rel=1e-5)
    tia_h, _ = stp_dose_map(tp, regions, density, spacing, "haenscheid", dose_method="ldm")
    assert tia_h.sum() * ml == pytest.approx(float(conc_bq_per_ml.sum()) * 1e-6 * ml * 48.0 / LN2, rel=1e-5)
    assert np.all(dose[labels > 0] > 0) and np.all(np.isfinite(dose))


@pytest.mark.slow
def test_run_on_a_tiny_synthetic_cohort(tmp_path: Path) -> None:
    from ludl.synth.cohort import run_synth

    cohort = tmp_path / "cohort"
    run_synth("tiny", 3, 5, cohort, workers=1)
    splits = make_splits(["SYN0001", "SYN0002", "SYN0003"], n_folds=3, seed=0)
    out = tmp_path / "stp"
    rows = run_stp_baselines(cohort, None, splits, out, timepoints_h=(24.0, 96.0))
    with (out / STP_FILE).open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) > 0
    assert tuple(table[0]) == STP_COLUMNS
    per_case: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for r in table:
        assert int(r["fold"]) == splits.fold_of(r["patient_id"])
        assert float(r["gt_mean_dose_gy"]) > 0 and float(r["true_mean_dose_gy"]) > 0
        per_case.setdefault((r["patient_id"], r["region"]), set()).add((r["method"], r["timepoint_h"]))
    for key, combos in per_case.items():
        assert len(combos) == len(METHODS) * 2, key  # each region: every method at each time point, once
    assert sum(len(c) for c in per_case.values()) == len(table)
    maps = sorted(p.name for p in (out / "maps").rglob("*.nii.gz"))
    assert len(maps) == 3 * 2 * 2 and "haenscheid_24h_dose_gy.nii.gz" in maps
    # Hänscheid's voxel map and region formula share A(t)·τ: their kidney doses agree within the kernel's spill.
    kid = [r for r in table if r["method"] == "haenscheid" and r["region"] == "kidney_left"]
    for r in kid:
        assert float(r["map_mean_dose_gy"]) == pytest.approx(float(r["mean_dose_uncorrected_gy"]), rel=0.1)
        # The single-scan correction raises a kidney (partial volume only loses counts from a cold surrounding).
        assert float(r["mean_dose_gy"]) > float(r["mean_dose_uncorrected_gy"]) > 0


def test_clearance_t_eff_ignores_the_uptake_and_needs_two_points_after_the_peak() -> None:
    t = np.asarray(TIMES_H)
    lam, lam_uptake = LN2 / 40.0, LN2 / 2.0
    rising = 100.0 * (np.exp(-lam * t) - np.exp(-lam_uptake * t))
    assert clearance_t_eff_h(t, rising) == pytest.approx(40.0, rel=1e-3)
    # Two clearance phases: the fitted half-life lies between them, unlike the dominant-term T_eff (the fast one).
    two_phase = 80.0 * np.exp(-LN2 / 8.0 * t) + 20.0 * np.exp(-LN2 / 80.0 * t)
    assert 8.0 < clearance_t_eff_h(t, two_phase) < 80.0
    late_peak = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert math.isnan(clearance_t_eff_h(t, late_peak))
