"""Response model of the synthetic cohort: LQ mechanics, the two calibrated probabilities, the documented targets."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ludl.errors import InputError
from ludl.synth.kinetics import PatientKinetics, patient_rng, sample_lesions, sample_patient_kinetics
from ludl.synth.priors import SOFT_TISSUE_DENSITY_G_PER_ML, default_priors
from ludl.synth.response import (
    RESPONSE_COLUMNS,
    PatientResponse,
    draw_cycle_one,
    draw_future,
    non_response_probability,
    simulate_response,
)
from ludl.synth.writer import reported_deadtime_factor
from tests.synth.conftest import RESPONSE_N, ResponsePopulation
from tests.synth.populations import draw_patient, draw_patient_with_response

T_HALF_H = 159.528  # docs/physics.md §1


@dataclass
class Cohort:
    kin: list[PatientKinetics]
    pet: list[npt.NDArray[np.float64]]
    resp: list[PatientResponse]
    label: npt.NDArray[np.bool_]
    p: npt.NDArray[np.float64]
    p_obs: npt.NDArray[np.float64]


def _cohort(pop: ResponsePopulation) -> Cohort:
    resp = pop.resp
    return Cohort(
        kin=pop.kin,
        pet=pop.pet,
        resp=resp,
        label=np.array([r.non_response for r in resp]),
        p=np.array([r.p_true for r in resp]),
        p_obs=np.array([r.p_observable for r in resp]),
    )


@pytest.fixture(scope="module")
def cohort(response_population: ResponsePopulation) -> Cohort:
    return _cohort(response_population)


def _features(c: Cohort, dose: bool, psa: bool) -> npt.NDArray[np.float64]:
    """Patient features: PET (count, PSMA-TV, TL-PSMA, expression summaries), baseline PSA, lesion doses."""
    rows = []
    for pet, r in zip(c.pet, c.resp, strict=True):
        v = r.living_ml[0]
        w = v / v.sum()
        f = [math.log(v.size), math.log(v.sum()), math.log(v @ pet), w @ np.log(pet), np.log(pet).min()]
        if psa:
            f.append(math.log(r.psa_baseline))
        if dose:
            d = r.dose_gy[0]
            f += [w @ np.log(d), math.log(w @ d), np.log(d).min(), math.log(w @ np.exp(-d / 20.0) + 1e-12)]
        rows.append(f)
    return np.asarray(rows)


def _cv_auc(x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    out: npt.NDArray[np.float64] = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    return out


def _paired_diff_ci(y: npt.NDArray[np.bool_], a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[float, float]:
    """95 % bootstrap interval of AUC(a) − AUC(b) on the same resampled patients."""
    rng = np.random.default_rng(0)
    a, b = np.asarray(a), np.asarray(b)
    d = []
    for _ in range(300):
        i = rng.integers(0, y.size, y.size)
        d.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def test_non_response_rate_in_range(cohort: Cohort) -> None:
    # docs/synthetic-cohort.md / issue 4: 35–55 % (PSA50 response 46 % VISION, 57 % LuPSMA, 66 % TheraP), up to the
    # sampling error of the population (3 binomial SE: ±0.075 at 400 patients; 3,000 patients give 0.506).
    se = math.sqrt(0.25 / cohort.label.size)
    assert 0.35 - 3 * se <= cohort.label.mean() <= 0.55 + 3 * se


def test_full_achievable_auc_in_range_and_above_the_oracle(cohort: Cohort) -> None:
    # p_true knows the hidden biology: above the dosimetry oracle, below 1 (the future is still random).
    auc_true = roc_auc_score(cohort.label, cohort.p)
    assert 0.85 <= auc_true <= 0.95
    assert auc_true > roc_auc_score(cohort.label, cohort.p_obs) + 0.05


def test_dosimetry_oracle_auc_near_target_and_above_pet_only(cohort: Cohort) -> None:
    # docs/synthetic-cohort.md: perfect cycle-one dosimetry + PET + baseline PSA ≈ 0.80; PET-only features ≈ 0.70.
    auc_obs = roc_auc_score(cohort.label, cohort.p_obs)
    pet_only = _cv_auc(_features(cohort, dose=False, psa=False), cohort.label)
    assert 0.75 <= auc_obs <= 0.86
    assert 0.63 <= roc_auc_score(cohort.label, pet_only) <= 0.76
    # The dose must show: the oracle beats PET-only by ≥ 0.05 (issue 10), beyond the bootstrap interval.
    lo, _ = _paired_diff_ci(cohort.label, cohort.p_obs, pet_only)
    assert auc_obs - roc_auc_score(cohort.label, pet_only) >= 0.05 and lo > 0.0


def test_at_strength_zero_the_dose_adds_nothing_over_pet(response_population_s0: ResponsePopulation) -> None:
    c = _cohort(response_population_s0)
    with_dose = _cv_auc(_features(c, dose=True, psa=True), c.label)
    without = _cv_auc(_features(c, dose=False, psa=True), c.label)
    _, hi = _paired_diff_ci(c.label, with_dose, without)
    # "Adds nothing": no gain beyond noise. A feature that carries nothing can cost a little AUC in cross-validation
    # (its fitted weight is noise), so only the gain is bounded, not the loss.
    assert hi < 0.02
    assert roc_auc_score(c.label, with_dose) - roc_auc_score(c.label, without) < 0.02


def test_p_observable_is_a_calibrated_probability(cohort: Cohort) -> None:
    # Both probabilities average to the non-response rate (each is the label's law given less or more).
    for p in (cohort.p, cohort.p_obs):
        assert 0.0 <= p.min() and p.max() <= 1.0
        se = math.sqrt(float(np.sum(p * (1 - p)))) / RESPONSE_N
        assert abs(cohort.label.mean() - p.mean()) < 3.5 * se + 0.01
    # Marginalising hidden biology pulls probabilities towards the middle: fewer near-certain ones.
    assert np.std(cohort.p_obs) < np.std(cohort.p)
    # Binned: the label frequency follows p_observable (Hosmer–Lemeshow-like, 5 bins, ±4 binomial SE).
    edges = np.quantile(cohort.p_obs, np.linspace(0, 1, 6))
    for lo, hi in itertools.pairwise(edges):
        m = (cohort.p_obs >= lo) & (cohort.p_obs <= hi)
        pm = cohort.p_obs[m].mean()
        assert abs(cohort.label[m].mean() - pm) < 4 * math.sqrt(pm * (1 - pm) / m.sum()) + 0.02


def test_response_rows_hold_both_probabilities(cohort: Cohort) -> None:
    r = cohort.resp[0]
    assert RESPONSE_COLUMNS == ("patient_id", "p_true", "p_observable")
    cells = r.cells("SYN0001")
    assert cells[0] == "SYN0001" and float(cells[1]) == pytest.approx(r.p_true, rel=1e-9)
    assert float(cells[2]) == pytest.approx(r.p_observable, rel=1e-9) and r.p_non_response == r.p_true


def test_label_frequency_of_one_patient_matches_its_probability() -> None:
    # Re-draw only the future (after cycle 1) many times: the frequency of failing PSA50 is the probability.
    priors = default_priors()
    checked = 0
    for i in range(40):
        rng = patient_rng(17, i)
        les = sample_lesions(rng, priors)
        kin = sample_patient_kinetics(rng, priors, les.n, les.volumes_ml, les.sites)
        c1 = draw_cycle_one(rng, kin, priors)
        p = non_response_probability(np.random.default_rng(1), kin, priors, c1)
        if not 0.2 < p < 0.8:
            continue
        n = 400
        fails = 0
        for j in range(n):
            f = draw_future(np.random.default_rng(1000 + j), kin, priors, c1)
            ratio = np.sum(c1.secretion * f.living12) * math.exp(f.noise12)
            fails += int(ratio / (np.sum(c1.secretion * c1.volume_ml) * math.exp(c1.noise0)) > 0.5)
        # Binomial SE of the frequency plus Monte Carlo SE of p (400 draws).
        se = math.sqrt(p * (1 - p) / n + p * (1 - p) / priors.response.n_draws)
        assert abs(fails / n - p) < 4 * se
        checked += 1
        if checked == 2:
            break
    assert checked == 2


def test_dose_response_is_negative_and_moderate(cohort: Cohort) -> None:
    mean_dose = [float(np.mean(r.dose_gy[0])) for r in cohort.resp]
    change = [r.psa_change for r in cohort.resp]
    rho, _ = stats.spearmanr(mean_dose, change)
    # docs/synthetic-cohort.md: Spearman ρ ≈ −0.3 between patient mean lesion dose and PSA change.
    assert -0.55 <= rho <= -0.15
    # Dose alone predicts non-response far from perfectly (published PET/dose AUCs ≈ 0.7–0.8).
    assert 0.55 <= roc_auc_score(cohort.label, -np.array(mean_dose)) <= 0.85


def test_lq_kill_and_regrowth_mechanics(cohort: Cohort) -> None:
    priors = default_priors()
    rp = priors.response
    kin, r = cohort.kin[0], cohort.resp[0]
    rows = kin.lesion_rows
    # BED with the Lea–Catcheside factor for a mono-exponential dose rate: G = λ/(λ+μ) (Dale 1985).
    lam = math.log(2) / T_HALF_H + kin.rates.release_per_h[rows - 1] + kin.rates.leak_per_h[rows - 1]
    mu = math.log(2) / rp.t_repair_h
    # The label's dose is the truth map's: sphere self-dose × the site's truth factor (density, cross-dose).
    factor = np.array([rp.truth_dose_factor[site] for site in kin.lesion_sites])
    d = kin.mean_dose_gy()[rows] * factor
    bed = d * (1 + lam / (lam + mu) * d / rp.alpha_beta_gy)
    np.testing.assert_allclose(r.bed_gy[0], bed, rtol=1e-9)
    expected6 = r.living_ml[0] * np.exp(-r.lesion_alpha_per_gy * bed) * np.exp(r.growth_per_week * 6.0)
    np.testing.assert_allclose(r.living_ml[1], expected6, rtol=1e-9)
    # PSA is secretion-weighted living volume; measurement noise ≈ priors' σ.
    assert r.psa_true[0] == pytest.approx(float(np.sum(r.secretion * r.living_ml[0])))
    assert r.psa_true[1] == pytest.approx(float(np.sum(r.secretion * r.living_ml[2])))
    noise = [math.log(x.psa_baseline / x.psa_true[0]) for x in cohort.resp]
    assert np.std(noise) == pytest.approx(rp.psa_noise_sigma_log, rel=0.25)
    assert r.non_response == (r.psa_week12 / r.psa_baseline > 0.5)


def test_more_activity_lowers_the_probability_of_non_response() -> None:
    priors = default_priors()
    lower = []
    for i in range(6):
        p = []
        for activity in (5000.0, 10000.0):
            kin = draw_patient(priors, 8, i, injected_mbq=activity)
            p.append(simulate_response(patient_rng(900, i), kin, priors).p_non_response)
        lower.append(p[1] <= p[0])
    assert all(lower)


def test_cycle_two_keeps_lesion_identities(cohort: Cohort) -> None:
    for kin, r in zip(cohort.kin[:20], cohort.resp[:20], strict=True):
        assert r.cycle2.regions == kin.regions and r.cycle2.cycle == 2
        np.testing.assert_array_equal(r.cycle2.volumes_ml, kin.volumes_ml)
        assert r.dose_gy.shape == (2, kin.lesion_rows.size)
    ratio = np.concatenate([np.log(r.dose_gy[1] / r.dose_gy[0]) for r in cohort.resp])
    assert 0.05 < np.std(ratio) < 0.4  # modest change between cycles


def test_reproducible_and_seed_dependent() -> None:
    priors = default_priors()
    _, a = draw_patient_with_response(priors, 3, 2)
    _, b = draw_patient_with_response(priors, 3, 2)
    _, c = draw_patient_with_response(priors, 4, 2)
    assert a.p_non_response == b.p_non_response and a.psa_week12 == b.psa_week12
    np.testing.assert_array_equal(a.dose_gy, b.dose_gy)
    assert a.psa_week12 != c.psa_week12


def test_patient_without_lesions_is_rejected() -> None:
    priors = default_priors()
    kin = sample_patient_kinetics(patient_rng(1, 1), priors, 0, [])
    with pytest.raises(InputError, match="lesion"):
        simulate_response(patient_rng(1, 2), kin, priors)


def test_lesion_dose_matches_the_truth_map_mean_dose() -> None:
    # One lesion dose everywhere: the truth map's mean dose in each lesion (density-corrected kernel,
    # cross-dose) against `lesion_dose_gy` without maps, on one demo patient. Stated tolerance: median
    # within 5 %, every lesion within 30 % (bone lesions' own density varies; soft tissue within 3 %).
    from ludl.io.regions import lesion_name
    from ludl.synth.activity import build_activity_model
    from ludl.synth.config import make_config
    from ludl.synth.patient import STREAM_ANATOMY, make_patient_anatomy, sub_rng
    from ludl.synth.response import lesion_dose_gy
    from ludl.synth.truth import tia_map_mbq_h_per_ml, true_dose_gy

    config = make_config("demo", 1, 12, images=True)
    priors = config.priors
    rng = patient_rng(12, 1)
    les = sample_lesions(rng, priors)
    anatomy, les = make_patient_anatomy(config, sub_rng(12, 1, STREAM_ANATOMY), les)
    kin = sample_patient_kinetics(
        rng, priors, les.n, les.volumes_ml, les.sites, organ_volumes_ml=anatomy.organ_volumes_ml
    )
    a = anatomy.anatomy
    model = build_activity_model(kin, a.labels, a.label_values, a.uptake_weight, a.clearance_shift_per_h)
    dose = np.asarray(true_dose_gy(tia_map_mbq_h_per_ml(model), a.density_g_per_ml).array, dtype=np.float64)
    rho = np.asarray(a.density_g_per_ml.array, dtype=np.float64)
    labels = np.asarray(a.labels.array)
    predicted = lesion_dose_gy(kin, priors)
    ratio, soft = [], []
    for j, site in enumerate(kin.lesion_sites):
        mask = labels == a.label_values[lesion_name(j + 1)]
        ratio.append(dose[mask].mean() / predicted[j])
        if site != "bone":
            soft.append(ratio[-1])
        # Self-dose on the map follows ρ_k/ρ of the lesion (docs/physics.md §4): check the physics, not the factor.
        expected = kin.mean_dose_gy()[kin.lesion_rows[j]] * SOFT_TISSUE_DENSITY_G_PER_ML / rho[mask].mean()
        assert dose[mask].mean() == pytest.approx(expected, rel=0.06)
    ratio_a = np.asarray(ratio)
    assert len(ratio) >= 5
    assert abs(np.median(ratio_a) - 1.0) < 0.05
    assert np.all(np.abs(np.log(ratio_a)) < 0.3)
    assert all(abs(r - 1.0) < 0.03 for r in soft)


def test_deadtime_factor_is_no_longer_an_activity_meter(cohort: Cohort) -> None:
    # Five scans' dead-time factors (1 + 1.5e-5 per MBq in the body): exact, they predicted the hidden
    # patient factor with r ≈ 0.6 (issue 10). Recorded with model error and rounded to 2 decimals they
    # must tell much less: r of the best linear read-out of the five values, exact vs recorded.
    times_h = (4.0, 24.0, 48.0, 96.0, 168.0)
    exact, recorded, hidden = [], [], []
    rng = np.random.default_rng(5)
    for kin in cohort.kin[:300]:
        body = np.array([k != "excreta" for k in kin.kinds])  # what the camera sees: not the excreta
        total_mbq = kin.activity_mbq(np.array(times_h))[body].sum(axis=0)
        f = 1.0 + 1.5e-5 * total_mbq
        exact.append(np.log(f - 1.0))
        rec = np.array([reported_deadtime_factor(float(x), rng) for x in f])
        recorded.append(rec)
        hidden.append(kin.latent["t_eff_patient_z"])
        assert np.all(rec >= 1.0) and np.all(np.round(rec, 2) == rec)
        assert np.all(np.abs(rec - f) <= 0.005 + 0.2 * (f - 1.0))  # a measurement of the truth, not noise

    def r_linear(x: npt.NDArray[np.float64]) -> float:
        design = np.column_stack([np.ones(len(hidden)), x])
        fit = design @ np.linalg.lstsq(design, np.asarray(hidden), rcond=None)[0]
        return float(np.corrcoef(fit, hidden)[0, 1])

    r_exact, r_recorded = r_linear(np.asarray(exact)), r_linear(np.asarray(recorded))
    assert r_exact > 0.3  # the exact meter leaks (the reason for the change)
    assert r_recorded < 0.75 * r_exact and r_recorded < 0.45  # measured: exact 0.64, recorded 0.37
