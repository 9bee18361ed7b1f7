"""Tests of ludl.physics.stp: single-time-point TIA formulas and the prior-informed estimator.

Expected values: analytic mono-exponential truths (TIA = A0/λ), the published Hänscheid ratio
x·2^{1−x} (max +6.1 % at x = 1/ln2 ≈ 1.44, −10 % at x = 0.764 and 2.437: docs/physics.md §3), and Monte-Carlo
ensembles drawn with numpy's generator, independent of the estimator's quadrature.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ludl.errors import InputError
from ludl.physics.kinetics import fit_tac
from ludl.physics.stp import PriorInformedEstimator, RegionPrior, haenscheid_tia, madsen_tia

LN2 = math.log(2.0)
LAMBDA_PHYS = LN2 / 159.528  # 177Lu (docs/physics.md §1)
INJ_MBQ = 7400.0
# A kidney-like class: uptake fraction 1 %, T_eff 40 h, uptake half-time 1.5 h (docs/synthetic-cohort.md ranges).
MEAN = np.array([math.log(0.01), math.log(LN2 / 40.0), math.log(LN2 / 1.5)])
BROAD = np.diag([0.4, 0.35, 0.3]) ** 2


def _mono_truth(t_eff_h: float, time_h: np.ndarray) -> tuple[np.ndarray, float]:
    lam = LN2 / t_eff_h
    return 100.0 * np.exp(-lam * time_h), 100.0 / lam


def _draw(rng: np.random.Generator, mean, cov, n: int, loading=None, z=None):
    """Curves drawn from the prior's generative model (with numpy, not the estimator's Sobol points)."""
    theta = mean + rng.standard_normal((n, 3)) @ np.linalg.cholesky(cov).T
    if loading is not None:
        theta = theta + np.outer(z, loading)
    f = np.exp(theta[:, 0])
    lam_eff = np.maximum(np.exp(theta[:, 1]), LAMBDA_PHYS)
    lam_u = np.maximum(np.exp(theta[:, 2]), 1.05 * lam_eff)

    def activity(t):
        return INJ_MBQ * f * (np.exp(-lam_eff * t) - np.exp(-lam_u * t))

    return activity, INJ_MBQ * f * (1 / lam_eff - 1 / lam_u), (f, lam_eff, lam_u)


# ------------------------------------------------------------------------------------------------ formulas


def test_haenscheid_exact_at_one_and_two_effective_half_lives() -> None:
    for t_eff in (20.0, 40.0, 90.0):
        times = np.array([t_eff, 2 * t_eff])
        activity, truth = _mono_truth(t_eff, times)
        np.testing.assert_allclose(haenscheid_tia(activity, times), truth, rtol=1e-12)


def test_haenscheid_ratio_matches_published_shape() -> None:
    x = np.linspace(0.3, 3.0, 27001)  # x = t / T_eff
    activity, truth = _mono_truth(40.0, x * 40.0)
    ratio = haenscheid_tia(activity, x * 40.0) / truth
    np.testing.assert_allclose(ratio, x * 2 ** (1 - x), rtol=1e-12)
    assert ratio.max() == pytest.approx(1.061, abs=1e-3)  # +6.1 %
    assert x[ratio.argmax()] == pytest.approx(1.44, abs=0.01)
    assert np.all(ratio[(x >= 0.765) & (x <= 2.436)] > 0.9)  # above −10 % on [0.764, 2.437]
    assert ratio[np.searchsorted(x, 0.5)] < 0.75 and ratio[np.searchsorted(x, 3.0)] < 0.8


def test_madsen_exact_with_the_right_effective_half_life() -> None:
    times = np.array([4.0, 24.0, 96.0])
    activity, truth = _mono_truth(35.0, times)
    np.testing.assert_allclose(madsen_tia(activity, times, 35.0), truth, rtol=1e-12)
    # A population T_eff that is too long: ratio (λ/λ_w)·e^{−(λ−λ_w)t}, above 1 early, falling with t.
    lam, lam_w = LN2 / 35.0, LN2 / 50.0
    wrong = madsen_tia(activity, times, 50.0) / truth
    np.testing.assert_allclose(wrong, lam / lam_w * np.exp(-(lam - lam_w) * times), rtol=1e-12)
    assert wrong[0] > 1 > wrong[-1]


def test_formulas_accept_torch() -> None:
    torch = pytest.importorskip("torch")
    a, t = torch.tensor([10.0, 20.0], dtype=torch.float64), torch.tensor([24.0, 48.0], dtype=torch.float64)
    h = haenscheid_tia(a, t)
    assert isinstance(h, torch.Tensor)
    np.testing.assert_allclose(h.numpy(), haenscheid_tia(a.numpy(), t.numpy()))
    m = madsen_tia(a, t, 40.0)
    assert isinstance(m, torch.Tensor)
    np.testing.assert_allclose(m.numpy(), madsen_tia(a.numpy(), t.numpy(), 40.0), rtol=1e-12)


def test_formula_inputs_are_checked() -> None:
    with pytest.raises(InputError, match="time_h"):
        haenscheid_tia(1.0, 0.0)
    with pytest.raises(InputError, match="t_eff_h"):
        madsen_tia(1.0, 24.0, -5.0)
    with pytest.raises(InputError, match="activity"):
        haenscheid_tia([1.0, np.nan], 24.0)


# ------------------------------------------------------------------------------------------------ prior


def test_tight_prior_around_truth_recovers_truth() -> None:
    prior = RegionPrior(MEAN, np.eye(3) * 1e-6, noise_cv=0.1)
    activity, truth, _ = _draw(np.random.default_rng(0), MEAN, np.eye(3) * 1e-12, 1)
    est = PriorInformedEstimator({"kidney": prior})
    for t in (4.0, 24.0, 168.0):
        assert est.tia(activity(t), t, "kidney", INJ_MBQ)[0] == pytest.approx(truth[0], rel=0.005)


def test_no_information_gives_the_prior_predictive_mean() -> None:
    # With a huge measurement CV the scan says nothing: the estimate is E_prior[TIA] (Monte Carlo here).
    prior = RegionPrior(MEAN, BROAD, noise_cv=1e100)
    _, truth, _ = _draw(np.random.default_rng(1), MEAN, BROAD, 400_000)
    est = PriorInformedEstimator({"k": prior}, n_samples=16384)
    assert est.tia([5.0], 24.0, "k", INJ_MBQ)[0] == pytest.approx(truth.mean(), rel=0.01)


def test_estimate_moves_from_the_prior_mean_towards_the_truth() -> None:
    # Only T_eff uncertain (2.3 prior SDs faster than the class): one scan pins λ_eff up to noise, so the
    # posterior lies between the prior-only estimate and the truth, closer to the truth.
    cov = np.diag([1e-6, 0.35**2, 1e-6])
    fast = MEAN + np.array([0.0, 0.8, 0.0])
    activity, truth, _ = _draw(np.random.default_rng(2), fast, np.eye(3) * 1e-12, 1)
    prior_only = PriorInformedEstimator({"k": RegionPrior(MEAN, cov, noise_cv=1e100)}).tia([1.0], 48.0, "k", INJ_MBQ)
    value = PriorInformedEstimator({"k": RegionPrior(MEAN, cov, noise_cv=0.2)}).tia(activity(48.0), 48.0, "k", INJ_MBQ)
    assert truth[0] < value[0] < prior_only[0]
    assert abs(value[0] - truth[0]) < 0.5 * abs(prior_only[0] - truth[0])


def test_broad_prior_beats_haenscheid_on_an_ensemble_from_the_prior() -> None:
    rng = np.random.default_rng(42)
    activity, truth, _ = _draw(rng, MEAN, BROAD, 400)
    est = PriorInformedEstimator({"k": RegionPrior(MEAN, BROAD, noise_cv=0.1)})
    for t in (24.0, 96.0):
        measured = activity(t) * np.exp(0.1 * rng.standard_normal(truth.size))
        post = est.posterior(measured, t, "k", INJ_MBQ, patient_ids=range(truth.size))
        mse_prior = np.mean((post.mean - truth) ** 2)
        mse_haenscheid = np.mean((haenscheid_tia(measured, t) - truth) ** 2)
        assert mse_prior < 0.8 * mse_haenscheid
        # The reported SD is calibrated: about 95 % of truths within ±2 SD.
        assert 0.88 < np.mean(np.abs(post.mean - truth) < 2 * post.sd) < 0.99


def test_shared_patient_factor_pools_evidence_across_regions() -> None:
    rng = np.random.default_rng(9)
    loading = np.array([0.0, 0.4, 0.0])  # a patient factor on T_eff shared by all regions
    region_cov = np.diag([0.3, 0.1, 0.3]) ** 2
    shared = RegionPrior(MEAN, region_cov, noise_cv=0.1, patient_loading=loading)
    independent = RegionPrior(MEAN, region_cov + np.outer(loading, loading), noise_cv=0.1)
    errors = {"shared": [], "independent": []}
    for patient in range(30):
        z = rng.standard_normal()
        activity, truth, _ = _draw(rng, MEAN, region_cov, 8, loading, np.full(8, z))
        measured = activity(24.0) * np.exp(0.1 * rng.standard_normal(8))
        for name, prior in (("shared", shared), ("independent", independent)):
            tia = PriorInformedEstimator({"lesion": prior}).tia(measured, 24.0, "lesion", INJ_MBQ, [patient] * 8)
            errors[name].extend(np.abs(tia / truth - 1))
    # Measured: 16.4 % vs 21.7 % mean |error|.
    assert np.mean(errors["shared"]) < 0.85 * np.mean(errors["independent"])


def test_region_prior_from_fits_recovers_population_moments() -> None:
    rng = np.random.default_rng(4)
    cov = np.diag([0.3, 0.25, 0.2]) ** 2
    _, _, (f, lam_eff, lam_u) = _draw(rng, MEAN, cov, 400)
    fits = [
        {"a0": INJ_MBQ * fi, "lambda1_per_h": le, "lambda2_per_h": lu}
        for fi, le, lu in zip(f, lam_eff, lam_u, strict=True)
    ]
    prior = RegionPrior.from_fits(fits, INJ_MBQ, noise_cv=0.1)
    # Sampling error of a mean over 400 draws is σ/20 ≈ 0.015; of a variance ≈ 7 %.
    np.testing.assert_allclose(prior.mean, MEAN, atol=0.05)
    np.testing.assert_allclose(np.diag(prior.cov), np.diag(cov), rtol=0.2)
    assert prior.n_fits == 400 and np.all(prior.patient_loading == 0)


def test_region_prior_from_tac_fits_estimates_noise() -> None:
    rng = np.random.default_rng(6)
    times = np.array([4.0, 24.0, 48.0, 96.0, 168.0])
    activity, _, _ = _draw(rng, MEAN, np.diag([0.3, 0.25, 0.2]) ** 2, 30)
    curves = activity(times[:, None]) * np.exp(0.1 * rng.standard_normal((5, 30)))
    fits = [fit_tac(times, curves[:, i], "biexp_uptake") for i in range(30)]
    prior = RegionPrior.from_fits(fits, INJ_MBQ)
    # RSS/(n − 3) with 2 degrees of freedom per curve: a rough but unbiased-in-variance CV estimate.
    assert 0.03 < prior.noise_cv < 0.2
    assert abs(prior.mean[1] - MEAN[1]) < 0.2


def test_region_prior_from_fits_splits_patient_variance() -> None:
    rng = np.random.default_rng(8)
    loading = np.array([0.0, 0.5, 0.0])
    within = np.diag([0.2, 0.15, 0.2]) ** 2
    fits, pids = [], []
    for p in range(150):
        _, _, (f, le, lu) = _draw(rng, MEAN, within, 6, loading, np.full(6, rng.standard_normal()))
        fits += [{"a0": INJ_MBQ * a, "lambda1_per_h": b, "lambda2_per_h": c} for a, b, c in zip(f, le, lu, strict=True)]
        pids += [p] * 6
    prior = RegionPrior.from_fits(fits, INJ_MBQ, noise_cv=0.1, patient_ids=pids)
    assert prior.patient_loading[1] == pytest.approx(0.5, abs=0.08)
    assert np.sqrt(prior.cov[1, 1]) == pytest.approx(0.15, abs=0.03)


def test_prior_inputs_are_checked() -> None:
    prior = RegionPrior(MEAN, BROAD)
    est = PriorInformedEstimator({"kidney": prior})
    with pytest.raises(InputError, match="no RegionPrior"):
        est.tia([1.0], 24.0, "liver", INJ_MBQ)
    with pytest.raises(InputError, match="> 0"):
        est.tia([0.0], 24.0, "kidney", INJ_MBQ)
    with pytest.raises(InputError, match="time_h"):
        est.tia([1.0, 2.0], [24.0, 48.0, 96.0], "kidney", INJ_MBQ)
    with pytest.raises(InputError, match="positive semi-definite"):
        RegionPrior(MEAN, -np.eye(3))
    with pytest.raises(InputError, match="mean"):
        RegionPrior(np.zeros(2), np.eye(3))
    with pytest.raises(InputError, match="biexp_uptake"):
        RegionPrior.from_fits([fit_tac([4, 24, 48], [3, 2, 1], "mono")] * 3, INJ_MBQ)
    with pytest.raises(InputError, match="noise_cv"):
        RegionPrior.from_fits([{"a0": 1.0, "lambda1_per_h": 0.01, "lambda2_per_h": 0.5}] * 3, INJ_MBQ)


def test_posterior_median_matches_the_conjugate_log_normal_case() -> None:
    # Only the uptake fraction f is uncertain (log f ~ N(μ, s²)) and the noise is log-normal, so log f | y is normal
    # with the precision-weighted mean m: the posterior median TIA is exp(m)·(1/λ − 1/λ_u)·injected, exactly.
    s, cv = 0.5, 0.3
    cov = np.diag([s**2, 1e-12, 1e-12])
    prior = RegionPrior(MEAN, cov, noise_cv=cv)
    est = PriorInformedEstimator({"k": prior}, n_samples=16384)
    lam, lam_u = math.exp(MEAN[1]), math.exp(MEAN[2])
    t = 96.0
    shape = math.exp(-lam * t) - math.exp(-lam_u * t)
    measured = INJ_MBQ * 0.02 * shape  # twice the population's uptake fraction
    sigma2 = math.log1p(cv**2)
    m = (MEAN[0] / s**2 + math.log(measured / (INJ_MBQ * shape)) / sigma2) / (1 / s**2 + 1 / sigma2)
    expected = math.exp(m) * (1 / lam - 1 / lam_u) * INJ_MBQ
    post = est.posterior([measured], t, "k", INJ_MBQ)
    assert post.median[0] == pytest.approx(expected, rel=0.01)
    # The log-normal posterior's mean lies above its median by exp(v/2), v the posterior variance of log f.
    v = 1 / (1 / s**2 + 1 / sigma2)
    assert post.mean[0] / post.median[0] == pytest.approx(math.exp(v / 2), rel=0.01)


def test_posterior_median_of_a_late_scan_matches_importance_sampling_with_numpy_draws() -> None:
    # A lesion-like prior (uptake log-SD 2, clearance log-SD 0.6) and one scan at 168 h: TIA = A(t)·e^{λt}/λ is
    # convex in λ, so the posterior has a long upper tail and its median lies well below its mean.
    cov = np.diag([2.0**2, 0.6**2, 0.3**2])
    cv, t, measured = 0.1, 168.0, 5.0
    post = PriorInformedEstimator({"k": RegionPrior(MEAN, cov, noise_cv=cv)}).posterior([measured], t, "k", INJ_MBQ)
    activity, tia, _ = _draw(np.random.default_rng(7), MEAN, cov, 2_000_000)
    log_w = -0.5 * (math.log(measured) - np.log(activity(t))) ** 2 / math.log1p(cv**2)
    w = np.exp(log_w - log_w.max())
    order = np.argsort(tia)
    cum = np.cumsum(w[order]) / w.sum()
    mc_median = float(tia[order][np.searchsorted(cum, 0.5)])
    assert post.median[0] == pytest.approx(mc_median, rel=0.03)
    assert post.median[0] < 0.8 * post.mean[0]
