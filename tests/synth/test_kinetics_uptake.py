"""Lesion uptake phase (`LesionPrior.uptake_peak_h_range`): tree kinetics exact, mass conserved, peaks as configured."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from ludl.errors import InputError
from ludl.synth.kinetics import (
    CompartmentRates,
    PatientKinetics,
    closed_form_tia_h,
    sample_next_cycle_kinetics,
    uptake_rate_for_peak_per_h,
)
from ludl.synth.kinetics.rates import DELIVERY_PREFIX
from ludl.synth.priors import CohortPriors, default_priors, replace_priors
from tests.synth.populations import draw_patient

# docs/physics.md §1 (ICRP 107): 177Lu half-life 159.528 h.
LAMBDA_PER_H = math.log(2.0) / 159.528
RANGE_H = (12.0, 48.0)
N_PATIENTS = 60


def _priors(**lesions: object) -> CohortPriors:
    return replace_priors(default_priors(), {"lesions": {"uptake_peak_h_range": RANGE_H, **lesions}})


@pytest.fixture(scope="module")
def population() -> list[PatientKinetics]:
    priors = _priors()
    return [k for k in (draw_patient(priors, 31, i) for i in range(N_PATIENTS)) if k.lesion_rows.size]


def _chain(a_d: float, b_d: float, k: float, b_l: float, k_u: float) -> PatientKinetics:
    """Blood ⇄ pool ⇄ lesion, plus a rest-of-body compartment the pool is counted in."""
    rates = CompartmentRates(
        names=("rest_of_body", "lesion_001", f"{DELIVERY_PREFIX}001"),
        uptake_per_h=np.array([0.2, k, a_d]),
        release_per_h=np.array([0.3, b_l, b_d]),
        leak_per_h=np.zeros(3),
        renal_per_h=np.asarray(k_u),
        parent=(-1, 2, -1),
    )
    return PatientKinetics.from_rates(
        rates,
        kinds=["blood", "background", "lesion", "organ", "excreta", "excreta"],
        volumes_ml=np.array([np.nan, np.nan, 10.0, np.nan, np.nan, np.nan]),
        lesion_sites=("bone",),
        injected_mbq=1000.0,
        void_times_h=np.zeros(0),
        void_residual_fraction=np.zeros(0),
    )


def test_chain_curves_match_a_numerical_ode_solution() -> None:
    a_d, b_d, k, b_l, k_u = 0.4, 0.05, 0.04, 0.01, 1.2
    kin = _chain(a_d, b_d, k, b_l, k_u)
    lam = LAMBDA_PER_H

    def rhs(_t: float, x: np.ndarray) -> list[float]:
        blood, rest, lesion, pool = x
        return [
            -(k_u + 0.2 + a_d + lam) * blood + 0.3 * rest + b_d * pool,
            0.2 * blood - (0.3 + lam) * rest,
            k * pool - (b_l + lam) * lesion,
            a_d * blood + b_l * lesion - (b_d + k + lam) * pool,
        ]

    t = np.array([0.5, 4.0, 24.0, 48.0, 168.0])
    sol = integrate.solve_ivp(rhs, (0.0, 168.0), [1000.0, 0.0, 0.0, 0.0], t_eval=t, rtol=1e-10, atol=1e-10)
    a = kin.activity_mbq(t)
    np.testing.assert_allclose(a[kin.index("lesion_001")], sol.y[2], rtol=1e-6)
    # The pool has no row of its own: it is counted in rest of body.
    np.testing.assert_allclose(a[kin.index("rest_of_body")], sol.y[1] + sol.y[3], rtol=1e-6)
    assert not any(r.startswith(DELIVERY_PREFIX) for r in kin.regions)


def test_chain_tia_closed_form_matches_quadrature() -> None:
    kin = _chain(0.4, 0.05, 0.04, 0.01, 1.2)
    grid = np.concatenate([np.linspace(0.0, 10.0, 4001), np.geomspace(10.0, 6000.0, 8000)[1:]])
    curve = kin.activity_mbq(grid)[kin.index("lesion_001")]
    quad = integrate.trapezoid(curve, grid)
    assert kin.tia_mbq_h("lesion_001") == pytest.approx(quad, rel=1e-4)
    x_b, x_p = closed_form_tia_h(kin.rates, LAMBDA_PER_H)
    assert 1000.0 * x_p[1] == pytest.approx(kin.tia_mbq_h("lesion_001"), rel=1e-9)
    assert 1000.0 * float(x_b) == pytest.approx(kin.tia_mbq_h("blood"), rel=1e-9)


def test_tree_closed_form_equals_the_mammillary_one_for_a_star() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.01, 1.0, (5, 4)), rng.uniform(0.001, 0.5, (5, 4))
    leak = np.zeros((5, 4))
    leak[:, 0] = 0.02
    star = CompartmentRates(("a", "b", "c", "d"), a, b, leak, rng.uniform(0.5, 2.0, 5))
    tree = CompartmentRates(star.names, a, b, leak, star.renal_per_h, parent=(-1, -1, -1, -1))
    for x, y in zip(closed_form_tia_h(star, LAMBDA_PER_H), closed_form_tia_h(tree, LAMBDA_PER_H), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12)


def test_activity_is_conserved_with_the_uptake_phase(population: list[PatientKinetics]) -> None:
    t = np.array([0.0, 0.2, 3.0, 24.0, 72.0, 400.0, 2000.0])
    for kin in population[:15]:
        np.testing.assert_allclose(kin.activity_mbq(t).sum(axis=0), kin.total_mbq(t), rtol=1e-9)
        assert kin.regions.count("rest_of_body") == 1
        assert len(kin.regions) == len(kin.kinds)
        # Exact TIA of every lesion against the closed form of the tree (what the response's Monte Carlo uses).
        _, x_p = closed_form_tia_h(kin.rates, kin.decay_constant_per_h)
        rows = kin.lesion_rows
        np.testing.assert_allclose(kin.injected_mbq * x_p[rows - 1], kin.tia_mbq_h()[rows], rtol=1e-8)


def test_drawn_peak_times_follow_the_configured_range(population: list[PatientKinetics]) -> None:
    lo, hi = RANGE_H
    drawn = np.concatenate([k.latent["lesion_uptake_peak_target_h"] for k in population])
    # Log-normal with 5–95 % interval (lo, hi): the median is √(lo·hi), and 5 % fall on either side of the range.
    assert np.median(drawn) == pytest.approx(math.sqrt(lo * hi), rel=0.1)
    se = math.sqrt(0.05 * 0.95 / drawn.size)
    assert abs(np.mean(drawn < lo) - 0.05) < 4 * se + 0.02
    assert abs(np.mean(drawn > hi) - 0.05) < 4 * se + 0.02
    realised = np.concatenate([k.time_to_peak_h()[k.lesion_rows] for k in population])
    # The realised peaks (exact curves) land near the range: median within 25 %, the upper end within 25 %.
    assert np.median(realised) == pytest.approx(math.sqrt(lo * hi), rel=0.25)
    assert np.percentile(realised, 95) == pytest.approx(hi, rel=0.25)
    # Some lesions are still rising at 24 h; without the phase almost none is (peaks ≈ 6–18 h).
    assert 0.3 < np.mean(realised > 24.0) < 0.8
    default = [draw_patient(default_priors(), 31, i) for i in range(20)]
    base = np.concatenate([k.time_to_peak_h()[k.lesion_rows] for k in default])
    assert np.mean(base > 24.0) < 0.05


def test_patient_share_of_the_peak_time_variance() -> None:
    priors = _priors(uptake_peak_patient_variance_fraction=0.8)
    z = []
    for i in range(200):
        kin = draw_patient(priors, 5, i)
        if kin.lesion_rows.size >= 2:
            z.append(np.log(kin.latent["lesion_uptake_peak_target_h"]))
    # σ² of the log peak time from the 5–95 % range; 80 % of it shared by a patient's lesions, 20 % their own.
    sigma2 = (math.log(RANGE_H[1] / RANGE_H[0]) / (2 * norm.ppf(0.95))) ** 2
    within = np.mean([np.var(v, ddof=1) for v in z])
    assert within == pytest.approx(0.2 * sigma2, rel=0.25)
    between = np.var([np.mean(v) for v in z], ddof=1) - np.mean([0.2 * sigma2 / v.size for v in z])
    assert between == pytest.approx(0.8 * sigma2, rel=0.3)


def test_lesion_doses_stay_near_the_calibration(population: list[PatientKinetics]) -> None:
    on = np.concatenate([k.dose_gy_per_gbq()[k.lesion_rows] for k in population])
    off = np.concatenate(
        [k.dose_gy_per_gbq()[k.lesion_rows] for k in (draw_patient(default_priors(), 31, i) for i in range(N_PATIENTS))]
    )
    # The pools cost blood a little activity (decay before transfer): the median moves by < 15 %.
    assert np.median(on) == pytest.approx(np.median(off), rel=0.15)


def test_next_cycle_keeps_the_tree(population: list[PatientKinetics]) -> None:
    kin = population[0]
    nxt = sample_next_cycle_kinetics(np.random.default_rng(1), kin, _priors())
    assert nxt.rates.parent == kin.rates.parent
    assert nxt.regions == kin.regions
    t = np.array([1.0, 48.0])
    np.testing.assert_allclose(nxt.activity_mbq(t).sum(axis=0), nxt.total_mbq(t), rtol=1e-9)


def test_uptake_rate_for_peak_is_the_two_exponential_peak() -> None:
    b = np.array([0.01, 0.02, 0.005])
    t = np.array([10.0, 30.0, 60.0])
    k = uptake_rate_for_peak_per_h(t, b)
    grid = np.linspace(0.0, 400.0, 400001)
    for ki, bi, ti in zip(k, b, t, strict=True):
        curve = np.exp(-bi * grid) - np.exp(-ki * grid)
        assert grid[np.argmax(curve)] == pytest.approx(ti, abs=0.01)


@pytest.mark.parametrize(
    "override",
    [
        {"uptake_peak_patient_variance_fraction": 1.5},
        {"uptake_delivery_fraction": 1.0},
        {"uptake_delivery_fraction": 0.0},
    ],
)
def test_invalid_settings_are_rejected(override: dict[str, float]) -> None:
    with pytest.raises(InputError):
        draw_patient(_priors(**override), 0, 0)


def test_a_yaml_list_range_reads_as_the_tuple() -> None:
    from_yaml = replace_priors(default_priors(), {"lesions": {"uptake_peak_h_range": [12.0, 48.0]}})
    assert from_yaml.lesions.uptake_peak_h_range == RANGE_H
    a, b = draw_patient(from_yaml, 2, 3), draw_patient(_priors(), 2, 3)
    np.testing.assert_array_equal(a.tia_mbq_h(), b.tia_mbq_h())


def test_a_parent_cycle_is_rejected() -> None:
    rates = CompartmentRates(("a", "b"), np.ones(2), np.ones(2), np.zeros(2), np.asarray(1.0), parent=(1, 0))
    with pytest.raises(InputError):
        closed_form_tia_h(rates, LAMBDA_PER_H)
