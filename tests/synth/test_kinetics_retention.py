"""Lesion retention: the patient-level share of the lesion T_eff variance (`t_eff_patient_variance_fraction`)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from ludl.errors import InputError
from ludl.synth.kinetics import PatientKinetics
from ludl.synth.priors import CohortPriors, default_priors, replace_priors
from tests.synth.populations import draw_patient


def _with_fraction(fraction: float | None) -> CohortPriors:
    return replace_priors(default_priors(), {"lesions": {"t_eff_patient_variance_fraction": fraction}})


def _lesion_z(kin: PatientKinetics) -> npt.NDArray[np.float64]:
    # The latent lesion T_eff z-scores, in lesion-row order (row 0 is blood, the latent arrays start at row 1).
    return np.asarray(kin.latent["t_eff_z"], dtype=np.float64)[kin.lesion_rows - 1]


def _within_and_between_variance(priors: CohortPriors, n: int) -> tuple[float, float]:
    """Mean within-patient variance of the lesion z-scores, and the patient-level variance (unweighted)."""
    z = [_lesion_z(draw_patient(priors, 17, i)) for i in range(n)]
    z = [v for v in z if v.size >= 2]
    within = float(np.mean([np.var(v, ddof=1) for v in z]))
    # var(patient mean) = f + (1 − f)/n_i: take the lesion part's share of each mean away.
    between = float(np.var([v.mean() for v in z], ddof=1) - np.mean([within / v.size for v in z]))
    return within, between


@pytest.mark.parametrize("fraction", [None, 0.9])
def test_lesion_t_eff_z_splits_into_patient_and_lesion_parts(fraction: float | None) -> None:
    # By construction the lesion z-score is √f · patient part + √(1 − f) · lesion part, both standard normal:
    # within-patient variance 1 − f, patient-level variance f (f = the structure's shared fraction when None).
    # 400 patients: the patient-level estimate has a standard error ≈ f √(2/400) ≤ 0.07.
    priors = _with_fraction(fraction)
    f = priors.structure.shared_variance_fraction if fraction is None else fraction
    within, between = _within_and_between_variance(priors, 400)
    assert within == pytest.approx(1.0 - f, abs=0.05)
    assert between == pytest.approx(f, abs=0.15)


def test_patient_level_retention_keeps_the_pooled_lesion_t_eff() -> None:
    # Moving variance from the lesion to the patient level leaves the pooled lesion T_eff distribution: median
    # ≈ 70 h (docs/synthetic-cohort.md) and the log spread within 15 % of the default's.
    def pooled(priors: CohortPriors) -> npt.NDArray[np.float64]:
        kin = [draw_patient(priors, 23, i) for i in range(150)]
        return np.log(np.concatenate([k.t_eff_h()[k.lesion_rows] for k in kin]))

    base, shared = pooled(default_priors()), pooled(_with_fraction(0.9))
    assert np.exp(np.median(shared)) == pytest.approx(70.0, rel=0.2)
    assert np.std(shared) == pytest.approx(np.std(base), rel=0.15)


def test_fraction_equal_to_the_shared_one_draws_nothing_more() -> None:
    # No tumour factor is drawn when it has no weight: the default cohorts keep their generator streams.
    s_sh = default_priors().structure.shared_variance_fraction
    a, b = draw_patient(default_priors(), 5, 3), draw_patient(_with_fraction(s_sh), 5, 3)
    np.testing.assert_array_equal(a.rates.release_per_h, b.rates.release_per_h)
    np.testing.assert_array_equal(a.void_times_h, b.void_times_h)


@pytest.mark.parametrize("fraction", [0.1, 1.2])
def test_fraction_outside_its_range_is_rejected(fraction: float) -> None:
    with pytest.raises(InputError, match="t_eff_patient_variance_fraction"):
        draw_patient(_with_fraction(fraction), 1, 0)
