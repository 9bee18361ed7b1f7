"""Mechanistic response of a synthetic patient to two cycles, and its two probabilities of non-response.

Model (docs/synthetic-cohort.md "Response"): every lesion's living tumour volume is killed at each cycle by the
surviving
fraction of the linear-quadratic model, S = exp(−K) with the kill exponent K = α · BED_ref^(1−s) · BED^s:
BED = D (1 + G D / (α/β)) is the lesion's protracted BED (Dale; `ludl.physics.radiobiology.bed_gy`), s the
`dose_response_strength` (1: plain LQ; 0: the kill ignores the dose), α drawn per patient and per lesion and
scaled by the lesion's PET expression factor to the power `pet_radiosensitivity_exponent` (PSMA-low lesions
respond less beyond their lower dose). Survivors regrow exponentially between cycles. PSA is the sum over
lesions of living volume × a lesion-specific secretion, measured with log-normal noise. The label is failing
PSA50 at 12 weeks after two cycles: non-response when measured PSA(12 w) / measured PSA(0) > 0.5.

Lesion dose. The dose that drives the label is the truth map's mean dose in the lesion (density-corrected
voxel kernel, cross-dose included). It exists before any image is drawn (and without images) as the kinetics'
sphere self-dose × `ResponsePrior.truth_dose_factor` of the lesion's site: ρ_k/ρ of the site's lesion density
and the cross-dose, measured against the truth maps (`benchmarks/response_auc.py --dose-agreement`).

Two probabilities, both predicted after cycle 1 and calibrated by construction (the realised label is one
more draw of the same process):

- ``p_true``: given the patient's whole state after cycle 1, hidden biology included (radiosensitivity,
  regrowth, secretion, baseline PSA noise); Monte Carlo over the cycle-2 kinetics (`kinetics.perturb_rates`)
  and activity, the changes of regrowth and radiosensitivity between cycles, and the week-12 PSA noise
  (integrated analytically). Its AUC is the *full achievable AUC*.
- ``p_observable``: given only what perfect cycle-one dosimetry, PET and the measured baseline PSA reveal
  (cycle-1 kinetics and lesion doses, volumes, PET factors, measured PSA); the hidden biology is drawn from
  its prior and weighted by the likelihood of the measured baseline PSA (importance sampling), then the
  future as for ``p_true``. Its AUC is the *dosimetry-oracle AUC*, the ceiling of any image-based method.
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
from ludl.synth.priors import CohortPriors, ResponsePrior
from ludl.synth.tables import num_text

__all__ = [
    "RESPONSE_COLUMNS",
    "CycleOneState",
    "FutureDraw",
    "PatientResponse",
    "draw_cycle_one",
    "draw_future",
    "kill_exponent",
    "lesion_dose_gy",
    "non_response_probability",
    "observable_non_response_probability",
    "simulate_response",
]

FloatArray = npt.NDArray[np.float64]

# Columns of `truth/response.csv` (`PatientResponse.cells` gives a row).
RESPONSE_COLUMNS: tuple[str, ...] = ("patient_id", "p_true", "p_observable")


@dataclass(frozen=True, eq=False)
class PatientResponse:
    """Response of one patient to two cycles; arrays are per lesion in the kinetics' lesion-row order.

    Attributes:
        alpha_per_gy: the patient's radiosensitivity α (1/Gy) at cycle 1.
        lesion_alpha_per_gy: α of each lesion at cycle 1 (PET link included).
        growth_per_week: regrowth rate of each lesion's living volume (1/week) after cycle 1.
        secretion: PSA secreted per mL of living tumour (ng/mL per mL).
        dose_gy: lesion mean absorbed dose per cycle (truth-map definition), shape (2, n_lesions).
        bed_gy: lesion BED per cycle, shape (2, n_lesions).
        living_ml: living volume at baseline, just before cycle 2 and at the label week, shape (3, n_lesions).
        psa_true: true PSA at baseline and at the label week (ng/mL).
        psa_baseline, psa_week12: measured PSA (ng/mL).
        non_response: failing PSA50 at the label week (the label).
        p_true: probability of non-response given the whole state after cycle 1 (hidden biology included).
        p_observable: probability of non-response given cycle-1 dosimetry, PET and measured baseline PSA.
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
    p_true: float
    p_observable: float
    cycle2: PatientKinetics

    @property
    def p_non_response(self) -> float:
        """The true probability (`p_true`), under its former name."""
        return self.p_true

    @property
    def psa_change(self) -> float:
        """Measured relative PSA change at the label week (−0.5 = a 50 % decline)."""
        return self.psa_week12 / self.psa_baseline - 1.0

    def cells(self, patient_id: str) -> list[str]:
        """This patient's row of `truth/response.csv` (`RESPONSE_COLUMNS`)."""
        return [patient_id, num_text(self.p_true), num_text(self.p_observable)]


def lesion_dose_gy(kinetics: PatientKinetics, priors: CohortPriors) -> FloatArray:
    """Each lesion's truth-map mean dose (Gy): sphere self-dose × the site's `truth_dose_factor`."""
    return kinetics.mean_dose_gy()[kinetics.lesion_rows] * _truth_factor(kinetics, priors.response)


def _truth_factor(kinetics: PatientKinetics, rp: ResponsePrior) -> FloatArray:
    try:
        return np.array([rp.truth_dose_factor[s] for s in kinetics.lesion_sites], dtype=np.float64)
    except KeyError as exc:
        raise InputError(
            f"ResponsePrior.truth_dose_factor has no lesion site {exc.args[0]!r}; "
            f"give one for every site (known: {sorted(rp.truth_dose_factor)})"
        ) from None


def kill_exponent(alpha_per_gy: npt.ArrayLike, bed: npt.ArrayLike, rp: ResponsePrior) -> FloatArray:
    """K = α · BED_ref^(1−s) · BED^s (s = `dose_response_strength`): surviving fraction exp(−K)."""
    s = rp.dose_response_strength
    b = np.maximum(np.asarray(bed, dtype=np.float64), 1e-12)
    out: FloatArray = np.asarray(alpha_per_gy) * rp.reference_bed_gy * (b / rp.reference_bed_gy) ** s
    return out


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
    pet_factor: FloatArray
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


def _check(kinetics: PatientKinetics, priors: CohortPriors, pet_factor: FloatArray) -> tuple[float, float]:
    """Validate the inputs; returns the weeks before and after cycle 2."""
    rp, tp = priors.response, priors.treatment
    if not (rp.psa_noise_sigma_log > 0 and rp.n_draws >= 1 and rp.n_observable_draws >= 1):
        raise InputError("response priors need psa_noise_sigma_log > 0, n_draws ≥ 1 and n_observable_draws ≥ 1")
    if not (rp.dose_response_strength >= 0 and rp.reference_bed_gy > 0):
        raise InputError("response priors need dose_response_strength ≥ 0 and reference_bed_gy > 0")
    n = kinetics.lesion_rows.size
    if n == 0:
        raise InputError("simulate_response needs a patient with at least one lesion (PSA comes from tumour)")
    if pet_factor.shape != (n,) or not np.all(pet_factor > 0):
        raise InputError(f"pet_factor must hold one positive factor per lesion ({n}), got shape {pet_factor.shape}")
    weeks1 = tp.cycle_interval_weeks
    weeks2 = rp.label_week - weeks1
    if weeks2 <= 0:
        raise InputError(f"label_week ({rp.label_week}) must come after cycle 2 (week {weeks1})")
    return weeks1, weeks2


def draw_cycle_one(
    rng: np.random.Generator,
    kinetics: PatientKinetics,
    priors: CohortPriors,
    pet_factor: npt.ArrayLike | None = None,
) -> CycleOneState:
    """Draw the patient's tumour biology and compute the state after cycle 1 (doses, BED, surviving fraction).

    `pet_factor`: each lesion's PET expression factor (`kinetics.sample_pet_lesion_factor`); None = 1 (no link).
    """
    rp = priors.response
    rows = kinetics.lesion_rows
    n = rows.size
    pet = np.ones(n) if pet_factor is None else np.asarray(pet_factor, dtype=np.float64)
    weeks1, weeks2 = _check(kinetics, priors, pet)
    peripheral = rows - 1  # lesion rows → indices among the peripheral compartments (blood is row 0)
    alpha_p = rp.alpha_per_gy_median * math.exp(rp.alpha_patient_sigma_log * rng.standard_normal())
    alpha = alpha_p * np.exp(rp.alpha_lesion_sigma_log * rng.standard_normal(n)) * pet**rp.pet_radiosensitivity_exponent
    doubling = rp.doubling_time_weeks_median * math.exp(rp.doubling_time_patient_sigma_log * rng.standard_normal())
    growth = math.log(2.0) / doubling * np.exp(rp.growth_lesion_sigma_log * rng.standard_normal(n))
    secretion = rp.psa_per_ml_median * np.exp(rp.psa_secretion_sigma_log * rng.standard_normal(n))
    noise0 = rp.psa_noise_sigma_log * float(rng.standard_normal())
    s_lesion = kinetics.s_value_gy_per_mbq_h()[rows] * _truth_factor(kinetics, rp)
    dose1 = lesion_dose_gy(kinetics, priors)
    r = kinetics.rates
    t1 = _lesion_washout_t_eff_h(r.release_per_h[peripheral], r.leak_per_h[peripheral], kinetics.decay_constant_per_h)
    bed1 = bed_gy(dose1, t1, rp.alpha_beta_gy, rp.t_repair_h)
    return CycleOneState(
        rows=rows,
        peripheral=peripheral,
        volume_ml=kinetics.volumes_ml[rows],
        s_lesion=s_lesion,
        pet_factor=pet,
        alpha_patient=alpha_p,
        alpha=alpha,
        growth=growth,
        secretion=secretion,
        noise0=noise0,
        dose1=dose1,
        bed1=bed1,
        survive1=np.exp(-kill_exponent(alpha, bed1, rp)),
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
    dose2 = cycle2.mean_dose_gy()[c1.rows] * (c1.s_lesion / kinetics.s_value_gy_per_mbq_h()[c1.rows])
    r, lam = cycle2.rates, cycle2.decay_constant_per_h
    t2 = _lesion_washout_t_eff_h(r.release_per_h[c1.peripheral], r.leak_per_h[c1.peripheral], lam)
    bed2 = bed_gy(dose2, t2, rp.alpha_beta_gy, rp.t_repair_h)
    living6 = c1.volume_ml * c1.survive1 * np.exp(c1.growth * c1.weeks1)
    kill2 = kill_exponent(c1.alpha * alpha_change, bed2, rp)
    living12 = living6 * np.exp(-kill2) * np.exp(c1.growth * growth_change * c1.weeks2)
    return FutureDraw(cycle2=cycle2, dose2=dose2, bed2=bed2, living6=living6, living12=living12, noise12=noise12)


@dataclass(frozen=True, eq=False)
class _FutureDraws:
    """`m` draws of the cycle-2 BED and of the between-cycle changes (what `draw_future` draws one of)."""

    bed2: FloatArray  # (m, n_lesions)
    growth_change: FloatArray  # (m,)
    alpha_change: FloatArray  # (m,)


def _future_draws(
    rng: np.random.Generator, kinetics: PatientKinetics, priors: CohortPriors, c1: CycleOneState, m: int
) -> _FutureDraws:
    rp, tp = priors.response, priors.treatment
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
    return _FutureDraws(bed2=bed2, growth_change=growth_change, alpha_change=alpha_change)


def _log_psa_ratio(ratio: FloatArray) -> FloatArray:
    # A very strong kill can underflow the living tumour to 0: its log is then a huge negative number rather than
    # −inf (no warning), and the probability of failing PSA50 is 0 either way.
    out: FloatArray = np.log(np.maximum(ratio, np.finfo(np.float64).tiny))
    return out


def _p_fail_given_draw(log_ratio: FloatArray, noise0: npt.ArrayLike, rp: ResponsePrior) -> FloatArray:
    # P(measured ratio > threshold | draw) = P(noise12 > log thr − log ratio + noise0): the week-12 noise
    # is integrated exactly, the rest by Monte Carlo.
    z = (log_ratio - np.asarray(noise0) - math.log(rp.response_threshold)) / rp.psa_noise_sigma_log
    out: FloatArray = ndtr(z)
    return out


def non_response_probability(
    rng: np.random.Generator, kinetics: PatientKinetics, priors: CohortPriors, c1: CycleOneState
) -> float:
    """``p_true``: P(non-response | whole state after cycle 1), Monte Carlo over what `draw_future` draws."""
    rp = priors.response
    f = _future_draws(rng, kinetics, priors, c1, rp.n_draws)
    living12 = (
        c1.volume_ml
        * c1.survive1
        * np.exp(c1.growth * c1.weeks1)
        * np.exp(-kill_exponent(c1.alpha * f.alpha_change[:, None], f.bed2, rp))
        * np.exp(c1.growth * f.growth_change[:, None] * c1.weeks2)
    )
    log_ratio = _log_psa_ratio(np.sum(c1.secretion * living12, axis=-1) / np.sum(c1.secretion * c1.volume_ml))
    return float(np.mean(_p_fail_given_draw(log_ratio, c1.noise0, rp)))


def observable_non_response_probability(
    rng: np.random.Generator,
    kinetics: PatientKinetics,
    priors: CohortPriors,
    c1: CycleOneState,
    psa_baseline: float,
) -> float:
    """``p_observable``: P(non-response | cycle-1 kinetics and doses, volumes, PET, measured baseline PSA).

    Hidden biology (α, regrowth, secretion) is drawn afresh from its prior, once per future draw; each draw is
    weighted by the likelihood of the measured baseline PSA (its noise0 is then log measured − log true PSA).
    """
    rp = priors.response
    m, n = rp.n_observable_draws, c1.rows.size
    alpha_p = rp.alpha_per_gy_median * np.exp(rp.alpha_patient_sigma_log * rng.standard_normal((m, 1)))
    alpha = alpha_p * np.exp(rp.alpha_lesion_sigma_log * rng.standard_normal((m, n)))
    alpha = alpha * c1.pet_factor**rp.pet_radiosensitivity_exponent
    doubling = rp.doubling_time_weeks_median * np.exp(rp.doubling_time_patient_sigma_log * rng.standard_normal((m, 1)))
    growth = math.log(2.0) / doubling * np.exp(rp.growth_lesion_sigma_log * rng.standard_normal((m, n)))
    secretion = rp.psa_per_ml_median * np.exp(rp.psa_secretion_sigma_log * rng.standard_normal((m, n)))
    f = _future_draws(rng, kinetics, priors, c1, m)
    psa0 = np.sum(secretion * c1.volume_ml, axis=-1)
    noise0 = math.log(psa_baseline) - np.log(psa0)
    log_w = -0.5 * (noise0 / rp.psa_noise_sigma_log) ** 2
    w = np.exp(log_w - log_w.max())
    living12 = (
        c1.volume_ml
        * np.exp(-kill_exponent(alpha, c1.bed1, rp))
        * np.exp(growth * c1.weeks1)
        * np.exp(-kill_exponent(alpha * f.alpha_change[:, None], f.bed2, rp))
        * np.exp(growth * f.growth_change[:, None] * c1.weeks2)
    )
    log_ratio = _log_psa_ratio(np.sum(secretion * living12, axis=-1) / psa0)
    return float(np.sum(w * _p_fail_given_draw(log_ratio, noise0, rp)) / np.sum(w))


def simulate_response(
    rng: np.random.Generator,
    kinetics: PatientKinetics,
    priors: CohortPriors,
    pet_factor: npt.ArrayLike | None = None,
) -> PatientResponse:
    """Draw one patient's response to two cycles and compute its two probabilities of non-response.

    Args:
        rng: the patient's generator (after its kinetics and PET factors were drawn).
        kinetics: the patient's cycle-1 kinetics (at least one lesion).
        priors: population priors (`response`, `structure`, `treatment`).
        pet_factor: each lesion's PET expression factor (`sample_pet_lesion_factor`); None = 1 (no PET link).
    """
    c1 = draw_cycle_one(rng, kinetics, priors, pet_factor)
    future = draw_future(rng, kinetics, priors, c1)
    # The probabilities' Monte Carlo has streams of its own, seeded from the patient's.
    seed = int(rng.integers(0, 2**63))
    p_true = non_response_probability(np.random.default_rng(seed), kinetics, priors, c1)
    psa0 = float(np.sum(c1.secretion * c1.volume_ml))
    psa12 = float(np.sum(c1.secretion * future.living12))
    measured0 = psa0 * math.exp(c1.noise0)
    measured12 = psa12 * math.exp(future.noise12)
    p_obs = observable_non_response_probability(np.random.default_rng([seed, 1]), kinetics, priors, c1, measured0)
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
        p_true=p_true,
        p_observable=p_obs,
        cycle2=future.cycle2,
    )
