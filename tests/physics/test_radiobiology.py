"""BED/EQD2, the Lea–Catcheside G factor, DVH and region statistics against hand or numerical results."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from ludl.errors import InputError
from ludl.physics.radiobiology import (
    bed_gy,
    cumulative_bed_gy,
    d_x,
    dvh,
    eqd2_gy,
    g_factor,
    region_stats,
    v_x,
    whole_body_tumour_dose,
)

LN2 = math.log(2.0)


def _g_numeric(t_eff_h: float, t_repair_h: float, uptake_half_life_h: float | None) -> float:
    """G = (2/D²) ∫₀^∞ R(t) ∫₀^t R(w) e^{−μ(t−w)} dw dt by direct numerical quadrature."""
    lam, mu = LN2 / t_eff_h, LN2 / t_repair_h
    if uptake_half_life_h is None:

        def rate(t: float) -> float:
            return math.exp(-lam * t)

    else:
        lam_u = LN2 / uptake_half_life_h

        def rate(t: float) -> float:
            return math.exp(-lam * t) - math.exp(-lam_u * t)

    t_max = 40.0 * max(t_eff_h, uptake_half_life_h or 0.0, t_repair_h)
    dose, _ = integrate.quad(rate, 0.0, t_max, limit=200)
    inner, _ = integrate.dblquad(
        lambda w, t: rate(t) * rate(w) * math.exp(-mu * (t - w)), 0.0, t_max, 0.0, lambda t: t, epsabs=1e-12
    )
    return 2.0 * inner / dose**2


@pytest.mark.parametrize(
    ("t_eff_h", "t_repair_h", "uptake_h"),
    [
        (40.0, 2.8, None),
        (50.0, 2.8, 1.0),  # kidney-like: fast uptake, slow clearance
        (30.0, 1.5, 5.0),
        (5.0, 2.8, 40.0),  # "uptake" slower than clearance: same curve shape with the rates swapped
        (10.0, 3.0, 10.0 * (1 + 1e-7)),  # nearly equal rates: R ∝ t·e^{−λt}
    ],
)
def test_g_factor_matches_lea_catcheside_double_integral(
    t_eff_h: float, t_repair_h: float, uptake_h: float | None
) -> None:
    if uptake_h is not None and abs(uptake_h / t_eff_h - 1) < 1e-6:
        # The numerical reference for equal rates: R(t) = t·e^{−λt}, which the ± split must reproduce.
        lam, mu = LN2 / t_eff_h, LN2 / t_repair_h

        def rate(t: float) -> float:
            return t * math.exp(-lam * t)

        t_max = 60.0 * t_eff_h
        dose, _ = integrate.quad(rate, 0.0, t_max, limit=200)
        inner, _ = integrate.dblquad(
            lambda w, t: rate(t) * rate(w) * math.exp(-mu * (t - w)), 0.0, t_max, 0.0, lambda t: t, epsabs=1e-12
        )
        expected = 2.0 * inner / dose**2
    else:
        expected = _g_numeric(t_eff_h, t_repair_h, uptake_h)
    assert float(g_factor(t_eff_h, t_repair_h, uptake_h)) == pytest.approx(expected, rel=1e-5)


def test_g_factor_closed_form_and_limits() -> None:
    # Instant uptake: G = λ/(λ+μ) = T_rep/(T_rep + T_eff) = 2.8/42.8 for a 40 h kidney clearance.
    assert float(g_factor(40.0, 2.8)) == pytest.approx(2.8 / 42.8, rel=1e-12)
    # Vanishing uptake half-life tends to instant uptake.
    assert float(g_factor(40.0, 2.8, 1e-6)) == pytest.approx(2.8 / 42.8, rel=1e-6)
    # Vectorised over arrays.
    np.testing.assert_allclose(g_factor(np.array([10.0, 40.0]), 2.8), [2.8 / 12.8, 2.8 / 42.8], rtol=1e-12)


def test_bed_hand_value_and_repair_limits() -> None:
    # 20 Gy, T_eff 40 h, α/β 2.6 Gy, T_rep 2.8 h: BED = 20·(1 + 20·(2.8/42.8)/2.6) = 30.0647 Gy.
    assert float(bed_gy(20.0, 40.0)) == pytest.approx(20.0 * (1 + 20.0 * (2.8 / 42.8) / 2.6), rel=1e-12)
    assert float(bed_gy(20.0, 40.0)) == pytest.approx(30.0647, abs=1e-3)
    # Very slow repair (G → 1): BED → D(1 + D/(α/β)); very fast repair (G → 0): BED → D.
    assert float(bed_gy(20.0, 40.0, t_repair_h=math.inf)) == pytest.approx(20.0 * (1 + 20.0 / 2.6), rel=1e-12)
    assert float(bed_gy(20.0, 40.0, t_repair_h=1e-9)) == pytest.approx(20.0, rel=1e-9)
    # Uptake phase protracts the dose: lower BED than instant uptake at the same clearance.
    assert float(bed_gy(20.0, 40.0, uptake_half_life_h=2.0)) < float(bed_gy(20.0, 40.0))
    np.testing.assert_allclose(bed_gy(np.array([0.0, 1.0]), 40.0)[0], 0.0)


def test_eqd2_and_cumulative_bed() -> None:
    # n fractions of 2 Gy have BED = 2n(1 + 2/(α/β)), so their EQD2 is 2n Gy, for any α/β.
    for alpha_beta in (2.6, 3.0, 10.0):
        bed_10x2 = 20.0 * (1.0 + 2.0 / alpha_beta)
        assert float(eqd2_gy(bed_10x2, alpha_beta)) == pytest.approx(20.0, rel=1e-12)
    assert float(eqd2_gy(46.0)) == pytest.approx(46.0 * 2.6 / 4.6, rel=1e-12)  # kidney default α/β
    assert float(cumulative_bed_gy([10.0, 12.5, 7.5])) == pytest.approx(30.0)
    np.testing.assert_allclose(cumulative_bed_gy(np.array([[1.0, 2.0], [3.0, 4.0]])), [4.0, 6.0])
    with pytest.raises(InputError):
        cumulative_bed_gy(np.zeros((0, 2)))


def test_bed_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        bed_gy(-1.0, 40.0)
    with pytest.raises(InputError):
        bed_gy(float("nan"), 40.0)
    with pytest.raises(InputError):
        bed_gy(10.0, 0.0)
    with pytest.raises(InputError):
        bed_gy(10.0, 40.0, alpha_beta_gy=0.0)
    with pytest.raises(InputError):
        bed_gy(10.0, 40.0, t_repair_h=-2.8)
    with pytest.raises(InputError):
        bed_gy(10.0, 40.0, uptake_half_life_h=float("nan"))
    with pytest.raises(InputError):
        eqd2_gy(10.0, alpha_beta_gy=-3.0)


# ---------------------------------------------------------------- DVH and statistics


@pytest.fixture()
def ramp() -> tuple[np.ndarray, np.ndarray]:
    """Doses 0, 1, …, 99 Gy inside a mask, shuffled into a 3-D grid; 1000 Gy outside the mask."""
    rng = np.random.default_rng(7)
    dose = np.full((6, 5, 5), 1000.0)
    mask = np.zeros(dose.shape, dtype=bool)
    idx = rng.permutation(dose.size)[:100]
    dose.flat[idx] = rng.permutation(100).astype(float)
    mask.flat[idx] = True
    return dose, mask


def test_d_x_on_a_ramp(ramp: tuple[np.ndarray, np.ndarray]) -> None:
    dose, mask = ramp
    # The hottest 2 % (2 voxels: 99 and 98 Gy) all get ≥ 98 Gy; half get ≥ 50 Gy; 98 % get ≥ 2 Gy.
    np.testing.assert_allclose(d_x(dose, mask, [2.0, 50.0, 98.0]), [98.0, 50.0, 2.0])
    np.testing.assert_allclose(d_x(dose, mask, [0.0, 100.0, 7.0, 0.5]), [99.0, 0.0, 93.0, 99.0])


def test_v_x_and_dvh_on_a_ramp(ramp: tuple[np.ndarray, np.ndarray]) -> None:
    dose, mask = ramp
    np.testing.assert_allclose(v_x(dose, mask, [-1.0, 0.0, 50.0, 49.5, 99.0, 99.5]), [1, 1, 0.5, 0.5, 0.01, 0])
    axis, frac = dvh(dose, mask, bins=100)
    np.testing.assert_allclose(axis, np.arange(100.0))
    np.testing.assert_allclose(frac, 1.0 - np.arange(100.0) / 100.0)
    axis2, frac2 = dvh(dose, mask, bins=[0.0, 25.0, 200.0])
    np.testing.assert_allclose(frac2, [1.0, 0.75, 0.0])
    assert axis2[-1] == 200.0


def test_d_x_and_v_x_are_consistent() -> None:
    rng = np.random.default_rng(3)
    dose = rng.gamma(2.0, 5.0, (9, 8, 7))
    mask = rng.random(dose.shape) < 0.4
    xs = np.array([1.0, 2.0, 10.0, 33.3, 50.0, 98.0, 100.0])
    dx = d_x(dose, mask, xs)
    assert np.all(v_x(dose, mask, dx) >= xs / 100.0 - 1e-12)
    assert np.all(np.diff(dx) <= 0)


def test_region_stats_on_a_ramp(ramp: tuple[np.ndarray, np.ndarray]) -> None:
    dose, mask = ramp
    stats = region_stats(dose, mask, voxel_volume_ml=0.110592)
    assert stats.mean_gy == pytest.approx(49.5)
    assert stats.median_gy == pytest.approx(49.5)
    assert (stats.min_gy, stats.max_gy) == (0.0, 99.0)
    assert (stats.d2_gy, stats.d50_gy, stats.d98_gy) == (98.0, 50.0, 2.0)
    assert stats.volume_ml == pytest.approx(100 * 0.110592)
    assert stats.as_dict()["n_voxels"] == 100
    # 0/1 integer masks are accepted like booleans
    assert region_stats(dose, mask.astype(np.uint8), 1.0).mean_gy == pytest.approx(49.5)


def test_whole_body_tumour_dose_by_hand_and_from_voxels() -> None:
    assert whole_body_tumour_dose([10.0, 20.0], [1.0, 3.0]) == pytest.approx((10 + 60) / 4)
    # Equals the mean dose over the union of the lesions (equal voxel volumes).
    rng = np.random.default_rng(11)
    dose = rng.gamma(2.0, 10.0, (8, 8, 8))
    a = np.zeros(dose.shape, dtype=bool)
    b = np.zeros(dose.shape, dtype=bool)
    a[:3, :3, :3] = True
    b[5:, 4:, 2:7] = True
    sa, sb = region_stats(dose, a, 0.5), region_stats(dose, b, 0.5)
    wbtd = whole_body_tumour_dose([sa.mean_gy, sb.mean_gy], [sa.volume_ml, sb.volume_ml])
    assert wbtd == pytest.approx(float(dose[a | b].mean()), rel=1e-12)


def test_statistics_reject_bad_input(ramp: tuple[np.ndarray, np.ndarray]) -> None:
    dose, mask = ramp
    with pytest.raises(InputError, match="empty"):
        d_x(dose, np.zeros_like(mask), 50.0)
    with pytest.raises(InputError, match="shape"):
        v_x(dose, mask[:-1], 10.0)
    with pytest.raises(InputError, match="0/1"):
        region_stats(dose, mask.astype(int) * 2, 1.0)  # a label map, not a mask
    bad = dose.copy()
    bad[mask] = np.nan
    with pytest.raises(InputError):
        dvh(bad, mask)
    with pytest.raises(InputError):
        d_x(dose, mask, 101.0)
    with pytest.raises(InputError):
        dvh(dose, mask, bins=1)
    with pytest.raises(InputError):
        dvh(dose, mask, bins=[5.0, 1.0])
    with pytest.raises(InputError):
        region_stats(dose, mask, 0.0)
    with pytest.raises(InputError):
        whole_body_tumour_dose([10.0], [1.0, 2.0])
    with pytest.raises(InputError):
        whole_body_tumour_dose([], [])
    with pytest.raises(InputError):
        whole_body_tumour_dose([10.0, 5.0], [0.0, 0.0])
