"""Decay data against ICRP-107 numbers quoted in docs/physics.md §1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ludl.errors import InputError
from ludl.physics.nuclides import J_PER_MEV, decay_correct, decay_factor, get_nuclide


def test_lu177_half_life_and_mean_life() -> None:
    lu = get_nuclide("Lu-177")
    assert lu.half_life_h == pytest.approx(159.528, rel=1e-6)  # 6.647 d
    assert lu.decay_constant_per_h == pytest.approx(4.34499e-3, rel=1e-5)
    # 1 MBq decaying physically from t = 0 gives 230.150 MBq·h (docs/physics.md §1).
    assert lu.mean_life_h == pytest.approx(230.150, abs=1e-3)


def test_lu177_energies_per_decay() -> None:
    lu = get_nuclide("177Lu")
    assert lu.beta_mean_mev * 1e3 == pytest.approx(133.27, abs=0.01)
    assert lu.conversion_auger_mev * 1e3 == pytest.approx(13.52 + 1.13, abs=0.01)
    assert lu.electron_energy_mev * 1e3 == pytest.approx(147.92, abs=0.01)
    assert lu.photon_energy_mev * 1e3 == pytest.approx(35.10, abs=0.01)
    # 0.023700 mGy·g/(MBq·s) = 2.37e-8 J/(MBq·s) (docs/physics.md §1).
    assert lu.electron_energy_j_per_mbq_s == pytest.approx(2.36999e-8, rel=1e-4)


def test_lu177_imaging_lines_and_beta_spectrum() -> None:
    lu = get_nuclide("lu177")
    lines = lu.photon_lines_above(0.1, min_yield=0.01)
    np.testing.assert_allclose(lines[:, 0], [0.112950, 0.208366], rtol=1e-5)
    np.testing.assert_allclose(lines[:, 1], [0.0640, 0.110], rtol=1e-3)
    energy, density = lu.beta_spectrum_mev[:, 0], lu.beta_spectrum_mev[:, 1]
    assert energy.max() == pytest.approx(0.498, abs=0.001)  # main-branch end point
    assert np.trapezoid(density, energy) == pytest.approx(1.0, abs=2e-3)  # one β⁻ per decay
    assert np.trapezoid(density * energy, energy) * 1e3 == pytest.approx(133.27, rel=3e-3)


def test_another_single_step_nuclide_is_a_data_entry() -> None:
    tb = get_nuclide("Tb-161")
    assert tb.half_life_h == pytest.approx(6.906 * 24, rel=1e-6)
    # 161Tb's appeal is its many conversion/Auger electrons: more than 177Lu's 14.6 keV.
    assert tb.conversion_auger_mev > 0.03
    assert tb.progeny == ()


def test_decay_helpers() -> None:
    lu = get_nuclide("Lu-177")
    assert decay_factor(lu.half_life_h, lu.half_life_h) == pytest.approx(0.5)
    assert lu.decay_factor(2 * lu.half_life_h) == pytest.approx(0.25)
    back = decay_correct(100.0, from_time_h=48.0, to_time_h=0.0, half_life_h=lu.half_life_h)
    assert back == pytest.approx(100.0 * math.exp(lu.decay_constant_per_h * 48.0))
    assert J_PER_MEV == pytest.approx(1.602176634e-13)


@pytest.mark.parametrize("name", ["Xx-999", "not a nuclide", "Lu-999"])
def test_unknown_nuclide_is_refused(name: str) -> None:
    with pytest.raises(InputError):
        get_nuclide(name)


def test_bad_half_life_is_refused() -> None:
    with pytest.raises(InputError, match="half-life"):
        decay_factor(1.0, 0.0)


def test_emission_kinds_tell_what_the_physics_must_cover() -> None:
    # ICRP 107: 177Lu is a pure β⁻ emitter with conversion electrons and photons; 225Ac decays by α.
    lu = get_nuclide("Lu-177")
    assert {"beta-", "IE", "auger", "gamma", "X"} <= lu.emission_kinds
    assert not {"alpha", "beta+"} & lu.emission_kinds
    assert "alpha" in get_nuclide("Ac-225").emission_kinds
