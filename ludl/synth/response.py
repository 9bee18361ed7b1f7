"""Mechanistic response of a synthetic patient to two cycles, with the true probability of non-response.

Model (COHORT.md "Response"): every lesion's living tumour volume is killed at each cycle by the surviving
fraction of the linear-quadratic model, S = exp(−α · BED) with BED = D (1 + G D / (α/β)) for the lesion's
protracted dose (Dale; `ludl.physics.radiobiology.bed_gy`), α drawn per patient (radiosensitivity spread)
and per lesion; survivors regrow exponentially between cycles. PSA is the sum over lesions of living volume
× a lesion-specific secretion, measured with log-normal noise. The label is failing PSA50 at 12 weeks after
two cycles: non-response when measured PSA(12 w) / measured PSA(0) > 0.5.

True probability. The prediction is made after cycle 1, so the patient's state then (lesions, cycle-1
doses, radiosensitivity, growth, secretion, measured baseline PSA) is fixed, and what is still unknown is
drawn by Monte Carlo with a per-patient fixed stream: the cycle-2 kinetics (`kinetics.perturb_rates`, the
same law that draws the realised cycle 2) and activity, a change of regrowth rate and of radiosensitivity
between the cycles, and the week-12 PSA noise (integrated analytically: each draw contributes Φ(·)). The
realised label is one more draw of exactly that process, so the probability is calibrated by construction;
the achievable AUC is the AUC of these probabilities against the labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from ludl.errors import InputError
from ludl.physics.radiobiology import bed_gy
from ludl.synth.kinetics import (
    PatientKinetics,
    closed_form_tia_h,
    perturb_rates,
    sample_next_cycle_kinetics,
)
from ludl.synth.priors import CohortPriors

__all__ = [
    "CycleOneState",
    "FutureDraw",
    "PatientResponse",
    "draw_cycle_one",
    "draw_future",
    "non_response_probability",
    "simulate_response",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class PatientResponse:
    """Response of one patient to two cycles; arrays are per lesion in the kinetics' lesion-row order.

    Attributes:
        alpha_per_gy: the patient's radiosensitivity α (1/Gy) at cycle 1.
        lesion_alpha_per_gy: α of each lesion at cycle 1.
        growth_per_week: regrowth rate of each lesion's living volume (1/week) after cycle 1.
        secretion: PSA secreted per mL of living tumour (ng/mL per mL).
        dose_gy: lesion mean absorbed dose per cycle, shape (2, n_lesions).
        bed_gy: lesion BED per cycle, shape (2, n_lesions).
        living_ml: living volume at baseline, just before cycle 2 and at the label week, shape (3, n_lesions).
        psa_true: true PSA at baseline and at the label week (ng/mL).
        psa_baseline, psa_week12: measured PSA (ng/mL).
        non_response: failing PSA50 at the label week (the label).
        p_non_response: the true probability of non-response given the state after cycle 1.
        cycle2: the realised cycle-2 kinetics (same lesions).
    """

    alpha_per_gy: float
    lesion_alpha_per_gy: FloatArray
    growth_per_week: FloatArray
    secretion: FloatArray
    dose_gy: FloatArray
    bed_gy: FloatArray
    living_ml: FloatArray
    psa_true: tuple[float, float]
    psa_baseline: float
    psa_week12: float
    non_response: bool
    p_non_response: float
    cycle2: PatientKinetics

    @property
    def psa_change(self) -> float:
        """Measured relative PSA change at the label week (−0.5 = a 50 % decline)."""
        return self.psa_week12 / self.psa_baseline - 1.0


def _lesion_washout_t_eff_h(release_per_h: FloatArray, leak_per_h: FloatArray, lam: float) -> FloatArray:
    # The lesion's own washout half-life sets the dose-rate protraction in G (uptake phase neglected).
    out: FloatArray = math.log(2.0) / (lam + release_per_h + leak_per_h)
    return out


@dataclass(frozen=True, eq=False)
class CycleOneState:
    """What is fixed after cycle 1 (the generator's truth, not what a method sees)."""

    rows: npt.NDArray[np.intp]
    peripheral: npt.NDArray[np.intp]
    volume_ml: FloatArray
    s_lesion: FloatArray
    alpha_patient: float
    alpha: FloatArray
    growth: FloatArray
    secretion: FloatArray
    noise0: float
    dose1: FloatArray
    bed1: FloatArray
    survive1: FloatArray
    weeks1: float
    weeks2: float


@dataclass(frozen=True, eq=False)
class FutureDraw:
    """One draw of what happens after cycle 1: cycle-2 kinetics, doses, living tumour at weeks 6 and 12."""

    cycle2: PatientKinetics
    dose2: FloatArray
    bed2: FloatArray
    living6: FloatArray
    living12: FloatArray
    noise12: float


def draw_cycle_one(rng: np.random.Generator, kinetics: PatientKinetics, priors: CohortPriors) -> CycleOneState:
    """Draw the patient's tumour biology and compute the state after cycle 1 (doses, BED, surviving fraction)."""
    rp, tp = priors.response, priors.treatment
    if not (rp.psa_noise_sigma_log > 0 and rp.n_draws >= 1):
        raise InputError("response priors need psa_noise_sigma_log > 0 and n_draws ≥ 1")
    rows = kinetics.lesion_rows
    n = rows.size
    if n == 0:
        raise InputError("simulate_response needs a patient with at least one lesion (PSA comes from tumour)")
    weeks1 = tp.cycle_interval_weeks
    weeks2 = rp.label_week - weeks1
    if weeks2 <= 0:
        raise InputError(f"label_week ({rp.label_week}) must come after cycle 2 (week {weeks1})")
    peripheral = rows - 1  # lesion rows → indices among the peripheral compartments (blood is row 0)
    alpha_p = rp.alpha_per_gy_median * math.exp(rp.alpha_patient_sigma_log * rng.standard_normal())
    alpha = alpha_p * np.exp(rp.alpha_lesion_sigma_log * rng.standard_normal(n))
    doubling = rp.doubling_time_weeks_median * math.exp(rp.doubling_time_patient_sigma_log * rng.standard_normal())
    growth = math.log(2.0) / doubling * np.exp(rp.growth_lesion_sigma_log * rng.standard_normal(n))
    secretion = rp.psa_per_ml_median * np.exp(rp.psa_secretion_sigma_log * rng.standard_normal(n))
    noise0 = rp.psa_noise_sigma_log * float(rng.standard_normal())
    dose1 = kinetics.mean_dose_gy()[rows]
    r = kinetics.rates
    t1 = _lesion_washout_t_eff_h(r.release_per_h[peripheral], r.leak_per_h[peripheral], kinetics.decay_constant_per_h)
    bed1 = bed_gy(dose1, t1, rp.alpha_beta_gy, rp.t_repair_h)
    return CycleOneState(
        rows=rows,
        peripheral=peripheral,
        volume_ml=kinetics.volumes_ml[rows],
        s_lesion=kinetics.s_value_gy_per_mbq_h()[rows],
        alpha_patient=alpha_p,
        alpha=alpha,
        growth=growth,
        secretion=secretion,
        noise0=noise0,
        dose1=dose1,
        bed1=bed1,
        survive1=np.exp(-alpha * bed1),
        weeks1=weeks1,
        weeks2=weeks2,
    )


def draw_future(
    rng: np.random.Generator, kinetics: PatientKinetics, priors: CohortPriors, c1: CycleOneState
) -> FutureDraw:
    """One draw of the unknown-at-cycle-1 process (the law `non_response_probability` integrates over)."""
    rp = priors.response
    cycle2 = sample_next_cycle_kinetics(rng, kinetics, priors)
    growth_change = math.exp(rp.growth_change_sigma_log * rng.standard_normal())
    alpha_change = math.exp(rp.alpha_change_sigma_log * rng.standard_normal())
    noise12 = rp.psa_noise_sigma_log * float(rng.standard_normal())
    dose2 = cycle2.mean_dose_gy()[c1.rows]
    r, lam = cycle2.rates, cycle2.decay_constant_per_h
    t2 = _lesion_washout_t_eff_h(r.release_per_h[c1.peripheral], r.leak_per_h[c1.peripheral], lam)
    bed2 = bed_gy(dose2, t2, rp.alpha_beta_gy, rp.t_repair_h)
    living6 = c1.volume_ml * c1.survive1 * np.exp(c1.growth * c1.weeks1)
    living12 = living6 * np.exp(-c1.alpha * alpha_change * bed2) * np.exp(c1.growth * growth_change * c1.weeks2)
    return FutureDraw(cycle2=cycle2, dose2=dose2, bed2=bed2, living6=living6, living12=living12, noise12=noise12)


def non_response_probability(
    rng: np.random.Generator, kinetics: PatientKinetics, priors: CohortPriors, c1: CycleOneState
) -> float:
    """P(non-response | state after cycle 1), Monte Carlo over the same unknowns as `draw_future`."""
    rp, tp = priors.response, priors.treatment
    m = rp.n_draws
    lam = kinetics.decay_constant_per_h
    rates = perturb_rates(rng, kinetics.rates, priors.structure, size=m)
    tol = tp.activity_tolerance
    injected = tp.activity_mbq * rng.uniform(1.0 - tol, 1.0 + tol, m)
    growth_change = np.exp(rp.growth_change_sigma_log * rng.standard_normal(m))
    alpha_change = np.exp(rp.alpha_change_sigma_log * rng.standard_normal(m))
    _, tia_per_mbq_h = closed_form_tia_h(rates, lam)
    dose2 = injected[:, None] * tia_per_mbq_h[:, c1.peripheral] * c1.s_lesion
    t2 = _lesion_washout_t_eff_h(rates.release_per_h[:, c1.peripheral], rates.leak_per_h[:, c1.peripheral], lam)
    bed2 = bed_gy(dose2, t2, rp.alpha_beta_gy, rp.t_repair_h)
    living12 = (
        c1.volume_ml
        * c1.survive1
        * np.exp(c1.growth * c1.weeks1)
        * np.exp(-c1.alpha * alpha_change[:, None] * bed2)
        * np.exp(c1.growth * growth_change[:, None] * c1.weeks2)
    )
    log_ratio = np.log(np.sum(c1.secretion * living12, axis=-1) / np.sum(c1.secretion * c1.volume_ml))
    # P(measured ratio > threshold | draw) = P(noise12 > log thr − log ratio + noise0): the week-12 noise
    # is integrated exactly, the rest by Monte Carlo.
    z = (log_ratio - c1.noise0 - math.log(rp.response_threshold)) / rp.psa_noise_sigma_log
    return float(np.mean(ndtr(z)))


def simulate_response(rng: np.random.Generator, kinetics: PatientKinetics, priors: CohortPriors) -> PatientResponse:
    """Draw one patient's response to two cycles and compute its true probability of non-response.

    Args:
        rng: the patient's generator (after its kinetics were drawn).
        kinetics: the patient's cycle-1 kinetics (at least one lesion).
        priors: population priors (`response`, `structure`, `treatment`).
    """
    c1 = draw_cycle_one(rng, kinetics, priors)
    future = draw_future(rng, kinetics, priors, c1)
    # The probability's Monte Carlo has a stream of its own, seeded from the patient's.
    p = non_response_probability(np.random.default_rng(rng.integers(0, 2**63)), kinetics, priors, c1)
    psa0 = float(np.sum(c1.secretion * c1.volume_ml))
    psa12 = float(np.sum(c1.secretion * future.living12))
    measured0 = psa0 * math.exp(c1.noise0)
    measured12 = psa12 * math.exp(future.noise12)
    return PatientResponse(
        alpha_per_gy=c1.alpha_patient,
        lesion_alpha_per_gy=c1.alpha,
        growth_per_week=c1.growth,
        secretion=c1.secretion,
        dose_gy=np.vstack([c1.dose1, future.dose2]),
        bed_gy=np.vstack([c1.bed1, future.bed2]),
        living_ml=np.vstack([c1.volume_ml, future.living6, future.living12]),
        psa_true=(psa0, psa12),
        psa_baseline=measured0,
        psa_week12=measured12,
        non_response=bool(measured12 / measured0 > priors.response.response_threshold),
        p_non_response=p,
        cycle2=future.cycle2,
    )
