"""Tests of ludl.physics.kinetics: TAC fits, model selection and TIA.

Expected values come from outside the code under test: docs/physics.md §1 (1 MBq decaying physically gives
230.150 MBq·h), closed-form integrals written out here, numerical quadrature of the true curve
(scipy.integrate.quad) and scipy.optimize.curve_fit for standard errors.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, optimize

from ludl.errors import FitError, InputError
from ludl.physics._fit_numpy import NumpyXp
from ludl.physics._tac_selection import select_by_aic
from ludl.physics.kinetics import fit_tac, fit_voxels, min_points, model_curve, tia_of, trapezoid_tia

LAMBDA_PHYS = math.log(2.0) / 159.528  # 177Lu, docs/physics.md §1 (ICRP 107: 6.647 d)
TIMES_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0])  # common clinical protocol (docs/synthetic-cohort.md)
LN2_1H = math.log(2.0)  # triexp default uptake rate, T½ = 1 h

# Curves of each parametric family with their closed-form TIA (∫₀^∞), written out independently of
# ludl.physics._tac_models.
FAMILY_CASES = {
    "mono": (lambda t: 3.0 * np.exp(-0.03 * t), 3.0 / 0.03),
    "biexp_uptake": (
        lambda t: 2.0 * (np.exp(-0.02 * t) - np.exp(-0.4 * t)),
        2.0 * (1 / 0.02 - 1 / 0.4),
    ),
    "biexp": (
        lambda t: 1.5 * np.exp(-0.01 * t) + 2.0 * np.exp(-0.15 * t),
        1.5 / 0.01 + 2.0 / 0.15,
    ),
    "triexp": (
        lambda t: 1.0 * (np.exp(-0.012 * t) - np.exp(-LN2_1H * t)) + 1.5 * (np.exp(-0.08 * t) - np.exp(-LN2_1H * t)),
        1.0 * (1 / 0.012 - 1 / LN2_1H) + 1.5 * (1 / 0.08 - 1 / LN2_1H),
    ),
}


def _noisy(curve, rng, n, cv=0.05, times=TIMES_H):
    clean = curve(times)
    return clean[:, None] * (1.0 + cv * rng.standard_normal((times.size, n)))


# ------------------------------------------------------------------------------------------------ TIA values


def test_physical_decay_from_one_mbq_gives_mean_life() -> None:
    fit = fit_tac(TIMES_H, np.exp(-LAMBDA_PHYS * TIMES_H), model="mono")
    assert fit.tia == pytest.approx(230.150, abs=1e-3)  # docs/physics.md §1
    assert fit.params["lambda1_per_h"] == pytest.approx(LAMBDA_PHYS, rel=1e-9)
    assert fit.t_eff_h == pytest.approx(159.528, rel=1e-9)


def test_mono_clamped_to_physical_decay_when_data_clear_slower() -> None:
    activity = 2.0 * np.exp(-0.5 * LAMBDA_PHYS * TIMES_H)  # "λ_bio < 0": slower than physical decay
    fit = fit_tac(TIMES_H, activity, model="mono")
    assert fit.params["lambda1_per_h"] == pytest.approx(LAMBDA_PHYS, rel=1e-12)
    # With λ pinned, the least-squares amplitude is Σy·e/Σe² and the TIA is that over λ_phys.
    basis = np.exp(-LAMBDA_PHYS * TIMES_H)
    a0 = float(activity @ basis / (basis @ basis))
    assert fit.tia == pytest.approx(a0 / LAMBDA_PHYS, rel=1e-9)


def test_biexp_uptake_clamped_when_data_clear_slower_than_physical() -> None:
    activity = 2.0 * (np.exp(-0.3 * LAMBDA_PHYS * TIMES_H) - np.exp(-0.3 * TIMES_H))
    fit = fit_tac(TIMES_H, activity, model="biexp_uptake")
    p = fit.params
    assert p["lambda1_per_h"] == pytest.approx(LAMBDA_PHYS, rel=1e-12)
    assert fit.tia == pytest.approx(p["a0"] * (1 / LAMBDA_PHYS - 1 / p["lambda2_per_h"]), rel=1e-12)


def test_biexp_uptake_recovers_truth_with_no_biological_clearance() -> None:
    # λ_bio = 0 exactly: the truth sits on the bound.
    curve = lambda t: 5.0 * (np.exp(-LAMBDA_PHYS * t) - np.exp(-0.2 * t))  # noqa: E731
    fit = fit_tac(TIMES_H, curve(TIMES_H), model="biexp_uptake")
    assert fit.tia == pytest.approx(5.0 * (1 / LAMBDA_PHYS - 1 / 0.2), rel=1e-6)


@pytest.mark.parametrize("model", list(FAMILY_CASES))
def test_every_parametric_model_recovers_its_family_noiseless(model: str) -> None:
    curve, truth = FAMILY_CASES[model]
    fit = fit_tac(TIMES_H, curve(TIMES_H), model=model)
    assert fit.model == model
    assert fit.tia == pytest.approx(truth, rel=1e-3)  # spec: < 0.5 %
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_trapezoid_dense_sampling_recovers_tia() -> None:
    curve, truth = FAMILY_CASES["biexp_uptake"]
    times = np.arange(0.25, 400.0, 0.25)
    fit = fit_tac(times, curve(times), model="trapezoid", tail="fitted")
    assert fit.tia == pytest.approx(truth, rel=5e-3)


def test_trapezoid_matches_hand_computation() -> None:
    t, y = [2.0, 6.0, 10.0], [4.0, 8.0, 2.0]
    body = 4 * (4 + 8) / 2 + 4 * (8 + 2) / 2
    assert fit_tac(t, y, "trapezoid").tia == pytest.approx(0.5 * 2 * 4 + body + 2 / LAMBDA_PHYS)
    assert fit_tac(t, y, "trapezoid", trapezoid_start="first").tia == pytest.approx(2 * 4 + body + 2 / LAMBDA_PHYS)
    lam = math.log(8 / 2) / 4
    fitted = fit_tac(t, y, "trapezoid", tail="fitted")
    assert fitted.tia == pytest.approx(0.5 * 2 * 4 + body + 2 / lam)
    assert fitted.params["lambda_tail_per_h"] == pytest.approx(lam)
    # A rising last segment cannot define a clearance: the fitted tail falls back to physical decay.
    assert fit_tac(t, [4.0, 2.0, 8.0], "trapezoid", tail="fitted").params["lambda_tail_per_h"] == pytest.approx(
        LAMBDA_PHYS
    )
    # Vectorised form agrees and keeps trailing shapes.
    stack = np.stack([np.array(y), 2 * np.array(y)], axis=1)
    np.testing.assert_allclose(trapezoid_tia(t, stack), [fit_tac(t, y, "trapezoid").tia * k for k in (1, 2)])


def test_trapezoid_predict_interpolates_and_decays() -> None:
    fit = fit_tac([2.0, 6.0], [4.0, 8.0], "trapezoid")
    np.testing.assert_allclose(fit.predict([0.0, 1.0, 2.0, 4.0, 6.0]), [0.0, 2.0, 4.0, 6.0, 8.0])
    assert fit.predict(6.0 + 159.528) == pytest.approx(4.0)


@pytest.mark.parametrize("model", list(FAMILY_CASES))
def test_noisy_fits_have_small_median_error(model: str) -> None:
    curve, truth = FAMILY_CASES[model]
    rng = np.random.default_rng(11)
    res = fit_voxels(TIMES_H, _noisy(curve, rng, 300), model=model)
    errors = res.tia / truth - 1.0
    # 5 % CV per sample: measured median |error| 2.0–2.4 %, median signed error ≤ 1.6 % (biexp).
    assert np.median(np.abs(errors)) < 0.04
    assert abs(np.median(errors)) < 0.02


def test_single_curve_noisy_fit_close_to_truth() -> None:
    curve, truth = FAMILY_CASES["biexp_uptake"]
    rng = np.random.default_rng(3)
    errors = [fit_tac(TIMES_H, _noisy(curve, rng, 1)[:, 0], "biexp_uptake").tia / truth - 1 for _ in range(20)]
    assert np.median(np.abs(errors)) < 0.04


def _gamma_variate(t: np.ndarray) -> np.ndarray:
    return 0.8 * t**1.2 * np.exp(-0.06 * t)


def _compartment(t: np.ndarray) -> np.ndarray:
    # Organ fed by a bi-exponential plasma curve Cp = 0.7e^{−2t} + 0.3e^{−0.1t} (not decay-corrected):
    # dA/dt = K1·Cp − (k2 + λ_phys)·A, A(0) = 0, solved in closed form per plasma term.
    k1, k = 5.0, 0.015 + LAMBDA_PHYS
    out = np.zeros_like(t, dtype=float)
    for amp, rate in ((0.7, 2.0 + LAMBDA_PHYS), (0.3, 0.1 + LAMBDA_PHYS)):
        out += k1 * amp * (np.exp(-k * t) - np.exp(-rate * t)) / (rate - k)
    return out


@pytest.mark.parametrize(
    ("curve", "model", "tolerance"),
    [
        (_gamma_variate, "biexp_uptake", 0.06),
        (_gamma_variate, "auto", 0.06),
        (_gamma_variate, "trapezoid", 0.03),
        (_compartment, "biexp_uptake", 0.03),
        (_compartment, "auto", 0.03),
        (_compartment, "trapezoid", 0.03),
    ],
)
def test_curves_outside_the_model_families(curve, model: str, tolerance: float) -> None:
    truth, _ = integrate.quad(curve, 0.0, np.inf, limit=400)
    fit = fit_tac(TIMES_H, curve(TIMES_H), model=model, tail="fitted")
    # Tolerances sit above the measured errors: gamma variate +4.6 % (parametric; the t^1.2 rise is not a
    # difference of exponentials) and +1.0 % (trapezoid); compartment curve +1.7 % and −0.1 %. A mono fit
    # would miss by +36 % and +28 %.
    assert fit.tia == pytest.approx(truth, rel=tolerance)


# ------------------------------------------------------------------------------------------------ selection


def test_auto_picks_the_generating_model_on_clean_data() -> None:
    assert fit_tac(TIMES_H, FAMILY_CASES["biexp_uptake"][0](TIMES_H)).model == "biexp_uptake"
    times6 = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
    fit = fit_tac(times6, FAMILY_CASES["biexp"][0](times6))
    assert fit.model == "biexp"
    assert set(fit.aic_by_model) == {"mono", "biexp_uptake", "biexp", "triexp"}


def test_auto_takes_the_simpler_model_on_ties() -> None:
    # A mono-exponential is matched exactly by every richer model: all AICs are within 2k, mono wins.
    fit = fit_tac(TIMES_H, FAMILY_CASES["mono"][0](TIMES_H))
    assert fit.model == "mono"
    assert fit.tia == pytest.approx(100.0, rel=1e-9)


def test_selection_rule_within_two_aic_units() -> None:
    xp = NumpyXp()
    models = ["mono", "biexp_uptake", "biexp", "triexp"]
    aic = {  # rows: mono 1.9 above best → mono; 2.1 above → best; equal-k tie → lower AIC
        "mono": np.array([1.9, 2.1, 10.0]),
        "biexp_uptake": np.array([5.0, 5.0, 10.0]),
        "biexp": np.array([0.0, 0.0, 1.0]),
        "triexp": np.array([3.0, 3.0, 0.5]),
    }
    choice = select_by_aic(xp, {m: {"aic": aic[m]} for m in models}, models)
    assert [models[i] for i in choice] == ["mono", "biexp", "triexp"]
    # The same rule on AICc; +inf (too few points for the model) never wins, unless all are +inf; NaN → −1.
    inf, nan = math.inf, math.nan
    aicc = {
        "mono": np.array([1.9, 2.1, inf, nan]),
        "biexp_uptake": np.array([0.0, 0.0, inf, nan]),
        "biexp": np.array([inf, inf, inf, nan]),
        "triexp": np.array([inf, inf, inf, nan]),
    }
    choice = select_by_aic(xp, {m: {"aicc": aicc[m]} for m in models}, models, criterion="aicc")
    assert list(choice) == [0, 1, 0, -1]


def test_number_of_points_restricts_models() -> None:
    curve = FAMILY_CASES["biexp_uptake"][0]
    t3 = np.array([4.0, 48.0, 168.0])
    with pytest.raises(FitError, match=r"needs at least 4 time points, got 3.*mono"):
        fit_tac(t3, curve(t3), model="biexp_uptake")
    fit = fit_tac(t3, curve(t3), model="auto")
    assert fit.model == "mono" and set(fit.aic_by_model) == {"mono"}
    t4 = TIMES_H[:4]
    assert set(fit_tac(t4, curve(t4)).aic_by_model) == {"mono", "biexp_uptake"}
    res = fit_voxels(t3, np.stack([curve(t3)] * 4, axis=1), model="auto")
    assert res.model_names == ("mono",) and np.all(res.model_map == 0)
    with pytest.raises(FitError, match="trapezoid"):
        fit_tac([4.0, 24.0], [1.0, 0.5])
    assert min_points("biexp_uptake") == 4 and min_points("triexp") == 5 and min_points("trapezoid") == 1


# ------------------------------------------------------------------------------------------------ statistics


def test_standard_errors_match_curve_fit() -> None:
    rng = np.random.default_rng(7)
    times = np.array([2.0, 4.0, 24.0, 48.0, 72.0, 96.0, 168.0])
    y = 2.0 * (np.exp(-0.02 * times) - np.exp(-0.3 * times)) * (1 + 0.05 * rng.standard_normal(times.size))
    fit = fit_tac(times, y, "biexp_uptake")
    p0 = [fit.params[k] for k in ("a0", "lambda1_per_h", "lambda2_per_h")]
    popt, pcov = optimize.curve_fit(lambda t, a, l1, l2: a * (np.exp(-l1 * t) - np.exp(-l2 * t)), times, y, p0=p0)
    np.testing.assert_allclose(p0, popt, rtol=1e-5)
    np.testing.assert_allclose(
        [fit.param_se[k] for k in ("a0", "lambda1_per_h", "lambda2_per_h")], np.sqrt(np.diag(pcov)), rtol=1e-3
    )
    resid = y - fit.predict(times)
    assert fit.rss == pytest.approx(float(resid @ resid), rel=1e-9)
    assert fit.r2 == pytest.approx(1 - fit.rss / float(((y - y.mean()) ** 2).sum()), rel=1e-12)
    assert fit.aic == pytest.approx(times.size * math.log(fit.rss / times.size) + 2 * 4, rel=1e-12)


def test_weights_downweight_an_outlier_and_are_scale_free() -> None:
    curve, truth = FAMILY_CASES["mono"]
    y = curve(TIMES_H)
    y[2] *= 1.5
    w = np.array([1.0, 1.0, 1e-8, 1.0, 1.0])
    assert fit_tac(TIMES_H, y, "mono", weights=w).tia == pytest.approx(truth, rel=1e-4)
    assert abs(fit_tac(TIMES_H, y, "mono").tia / truth - 1) > 0.05
    assert fit_tac(TIMES_H, y, "mono", weights=10 * w).tia == pytest.approx(
        fit_tac(TIMES_H, y, "mono", weights=w).tia, rel=1e-9
    )
    # Per-voxel weights in fit_voxels give the same answer as the same (T,) weights.
    stack = np.stack([y, 2 * y], axis=1)
    a = fit_voxels(TIMES_H, stack, "mono", weights=w)
    b = fit_voxels(TIMES_H, stack, "mono", weights=np.stack([w, w], axis=1))
    np.testing.assert_allclose(a.tia, b.tia, rtol=1e-9)


@pytest.mark.parametrize("model", ["mono", "biexp_uptake", "biexp", "triexp"])
def test_analytic_integrals_match_quadrature(model: str) -> None:
    params = {"a0": 2.0, "a1": 1.2, "a2": 0.7, "lambda1_per_h": 0.02, "lambda2_per_h": 0.3, "lambda3_per_h": 0.9}
    numeric, _ = integrate.quad(lambda t: float(model_curve(model, params, t)), 0.0, np.inf, limit=400)
    assert float(tia_of(model, params)) == pytest.approx(numeric, rel=1e-7)


# ------------------------------------------------------------------------------------------------ voxels


@pytest.mark.parametrize("model", ["mono", "biexp_uptake", "biexp", "triexp", "auto", "trapezoid"])
def test_voxel_fit_equals_per_curve_fit(model: str) -> None:
    rng = np.random.default_rng(5)
    l1, l2 = rng.uniform(0.005, 0.05, 12), rng.uniform(0.1, 1.0, 12)
    stack = (2 * (np.exp(-np.outer(TIMES_H, l1)) - np.exp(-np.outer(TIMES_H, l2)))) * (
        1 + 0.05 * rng.standard_normal((5, 12))
    )
    res = fit_voxels(TIMES_H, stack.reshape(5, 2, 3, 2), model=model, chunk_size=5)
    singles = [fit_tac(TIMES_H, stack[:, i], model) for i in range(12)]
    np.testing.assert_allclose(res.tia.reshape(-1), [f.tia for f in singles], rtol=1e-9)
    names = [res.model_names[i] for i in res.model_map.reshape(-1)]
    assert names == [f.model for f in singles]
    if model != "trapezoid":
        np.testing.assert_allclose(res.aic.reshape(-1), [f.aic for f in singles], rtol=1e-9)


def test_shapes_mask_and_zero_voxels() -> None:
    curve, truth = FAMILY_CASES["biexp_uptake"]
    stack = np.zeros((5, 2, 3, 4), dtype=np.float32)
    stack[:, 0, 1, 2] = curve(TIMES_H)
    stack[:, 1, 2, 3] = 2 * curve(TIMES_H)
    stack[:, 1, 0, 0] = np.nan  # outside the mask: ignored
    mask = np.ones((2, 3, 4), dtype=bool)
    mask[1, 0, 0] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fit_voxels(TIMES_H, stack, mask=mask)
    assert res.tia.shape == (2, 3, 4) and res.params["a0"].shape == (2, 3, 4)
    assert res.tia[0, 1, 2] == pytest.approx(truth, rel=1e-6)
    assert res.tia[1, 2, 3] == pytest.approx(2 * truth, rel=1e-6)
    zero = mask.copy()
    zero[0, 1, 2] = zero[1, 2, 3] = False
    assert np.all(res.tia[zero] == 0.0)
    assert res.tia[1, 0, 0] == 0.0 and np.isnan(res.aic[1, 0, 0]) and res.model_map[1, 0, 0] == -1
    flat = fit_voxels(TIMES_H, stack.reshape(5, -1)[:, mask.reshape(-1)])
    assert flat.tia.shape == (int(mask.sum()),)
    np.testing.assert_allclose(np.sort(flat.tia), np.sort(res.tia[mask]))


def test_auto_voxel_map_and_parameter_maps() -> None:
    mono, _ = FAMILY_CASES["mono"]
    uptake, _ = FAMILY_CASES["biexp_uptake"]
    stack = np.stack([mono(TIMES_H), uptake(TIMES_H)], axis=1)
    res = fit_voxels(TIMES_H, stack, model="auto")
    assert [res.model_names[i] for i in res.model_map] == ["mono", "biexp_uptake"]
    assert np.isnan(res.params["lambda2_per_h"][0]) and res.params["lambda2_per_h"][1] == pytest.approx(0.4)
    assert res.params["lambda1_per_h"][0] == pytest.approx(0.03)
    assert res.t_eff_h[1] == pytest.approx(math.log(2) / 0.02)
    subset = fit_voxels(TIMES_H, stack, model="auto", candidates=["mono"])
    assert subset.model_names == ("mono",)


def test_small_negative_noise_is_clipped_in_voxel_mode() -> None:
    curve, _ = FAMILY_CASES["mono"]
    stack = np.stack([curve(TIMES_H), np.array([0.01, -0.01, 0.0, 0.005, -0.02])], axis=1)
    res = fit_voxels(TIMES_H, stack, "mono")
    assert res.n_clipped == 2 and res.tia[1] >= 0
    with pytest.raises(InputError, match="negative_tol"):
        fit_voxels(TIMES_H, stack, "mono", negative_tol=1e-3)


def test_torch_backend_matches_numpy() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    for model in ["mono", "biexp_uptake", "biexp", "triexp"]:
        curve, _ = FAMILY_CASES[model]
        stack = _noisy(curve, rng, 200, cv=0.02 if model in ("biexp", "triexp") else 0.05)
        a = fit_voxels(TIMES_H, stack, model)
        b = fit_voxels(TIMES_H, stack, model, backend="torch", device="cpu")
        np.testing.assert_allclose(b.tia, a.tia, rtol=1e-3, err_msg=model)
    clean = np.stack([FAMILY_CASES[m][0](TIMES_H) for m in ("mono", "biexp_uptake")], axis=1)
    a = fit_voxels(TIMES_H, clean, "auto")
    b = fit_voxels(TIMES_H, clean, "auto", backend="torch", device="cpu")
    np.testing.assert_array_equal(a.model_map, b.model_map)
    np.testing.assert_allclose(b.tia, a.tia, rtol=1e-3)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("times", "match"),
    [
        ([4.0, 24.0, 24.0, 96.0, 168.0], "duplicate"),
        ([4.0, 48.0, 24.0, 96.0, 168.0], "increase"),
        ([-1.0, 24.0, 48.0, 96.0, 168.0], "negative"),
        ([4.0, np.nan, 48.0, 96.0, 168.0], "NaN"),
        ([[4.0, 24.0]], "1-D"),
    ],
)
def test_bad_times(times, match: str) -> None:
    with pytest.raises(InputError, match=match):
        fit_tac(times, np.ones(np.asarray(times).size))


@pytest.mark.parametrize(
    ("activity", "match"),
    [([1.0, np.nan, 1.0, 1.0, 1.0], "NaN"), ([1.0, np.inf, 1, 1, 1], "NaN"), ([1.0, -0.5, 1, 1, 1], "negative")],
)
def test_bad_activity(activity, match: str) -> None:
    with pytest.raises(InputError, match=match):
        fit_tac(TIMES_H, activity)


def test_other_bad_inputs() -> None:
    y = FAMILY_CASES["mono"][0](TIMES_H)
    with pytest.raises(InputError, match="unknown TAC model"):
        fit_tac(TIMES_H, y, model="quadexp")
    with pytest.raises(InputError, match="one value per time"):
        fit_tac(TIMES_H, y[:4])
    with pytest.raises(InputError, match="tail"):
        fit_tac(TIMES_H, y, tail="none")
    with pytest.raises(InputError, match="weights"):
        fit_tac(TIMES_H, y, weights=[1, 1, 0, 1, 1])
    with pytest.raises(InputError, match="expected"):
        fit_voxels(TIMES_H, np.ones((4, 3)))
    with pytest.raises(InputError, match="mask"):
        fit_voxels(TIMES_H, np.ones((5, 2, 2, 2)), mask=np.ones((2, 2), bool))
    with pytest.raises(InputError, match="NaN"):
        fit_voxels(TIMES_H, np.full((5, 3), np.nan))
    with pytest.raises(InputError, match="backend"):
        fit_voxels(TIMES_H, np.ones((5, 3)), backend="jax")
    with pytest.raises(InputError, match="uptake_rate_per_h"):
        fit_tac(TIMES_H, y, "triexp", uptake_rate_per_h=0.001)
    with pytest.raises(InputError, match="trapezoid_tia"):
        tia_of("trapezoid", {})
