"""Region-table pieces checked against closed forms: the effective half-life implied by a TIA and one scan."""

from __future__ import annotations

import math

import pytest

from ludl.inference.regions import effective_half_life_h


@pytest.mark.parametrize(("half_life_h", "time_h"), [(60.0, 24.0), (30.0, 4.0), (150.0, 96.0), (40.0, 20.0)])
def test_effective_half_life_of_a_mono_exponential(half_life_h: float, time_h: float) -> None:
    lam = math.log(2.0) / half_life_h
    # A(s) = A0 e^(−λs): ∫₀^∞ A = A0/λ and A(t) = A0 e^(−λt), so τ = TIA / A(t) = e^(λt)/λ
    tau_h = math.exp(lam * time_h) / lam
    if lam < 1.0 / time_h:  # the slow-clearance root is the one reported
        assert effective_half_life_h(tau_h, time_h) == pytest.approx(half_life_h, rel=1e-6)


def test_no_mono_exponential_below_e_times_t() -> None:
    assert math.isnan(effective_half_life_h(2.0 * 24.0, 24.0))  # τ < e·t: no curve from injection fits
