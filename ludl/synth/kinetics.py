"""Whole-body compartment kinetics of 177Lu-PSMA for one synthetic patient-cycle, normalised to the injection.

Model (COHORT.md "Whole-body activity balance"): a mammillary system around the blood pool. Every peripheral
compartment j (interstitial fluid, kidneys, salivary and lacrimal glands, liver, spleen, bowel, red marrow,
rest of body, one per lesion) takes activity up from blood at rate a_j and returns it at rate b_j; blood
loses activity to the bladder at the renal rate k_u, the bowel to the faeces at rate l. The bladder is voided
at random times. All activity decays physically, so A(t) = e^{−λt} · (biological amounts), and activity in
the body plus what was excreted equals the injected activity decayed (by construction, to rounding).

Exact solution: the biological rate matrix K of a mammillary system with reversible exchanges satisfies
detailed balance, so D^{−1/2} K D^{1/2} is symmetric (D = diag(1, a_j/b_j)); its eigen-decomposition gives the
amounts as sums of exponentials, vectorised over any time grid, and the integrals in closed form. The bladder
between voids holds the urine made since the last void (plus the residual), which follows from the cumulative
renal outflow, itself a closed-form integral of the blood curve.

Region uptake rates are set so that a reference patient (all factors 1, reference tumour volume) receives
exactly the median organ dose per GBq of the priors and the median lesion dose; every patient then draws
T_eff = median × shared patient factor × region factor, uptake = median × region factor (× organ or lesion
volume), and the doses emerge, tumour sink included: more tumour uptake leaves less blood activity for the
organs. Only the self-dose of each region is counted (TIA × sphere S value of its volume).

Effective half-life of a region (`PatientKinetics.t_eff_h`): ln2 × (TIA after the peak) / (peak activity),
the half-life of the mono-exponential that starts at the peak with the same post-peak integral. It equals the
washout half-life for a mono-exponential washout and, unlike a two-point terminal slope, does not depend on
the scan times; recirculation of released activity lengthens it slightly. Capped at the physical half-life.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.physics.dose import MGY_PER_MBQ_S_TO_GY_PER_MBQ_H
from ludl.physics.kernels import sphere_s_value_mgy_per_mbq_s
from ludl.physics.nuclides import get_nuclide
from ludl.synth.priors import SOFT_TISSUE_DENSITY_G_PER_ML, CohortPriors, KineticStructurePrior

__all__ = [
    "TUMOUR_CLASS",
    "CompartmentRates",
    "Lesions",
    "PatientKinetics",
    "ReferenceModel",
    "closed_form_tia_h",
    "lesion_name",
    "patient_rng",
    "perturb_rates",
    "reference_model",
    "reference_rates",
    "release_rate_per_h",
    "sample_lesions",
    "sample_next_cycle_kinetics",
    "sample_patient_kinetics",
    "sample_pet_lesion_factor",
    "sample_voids",
]

FloatArray = npt.NDArray[np.float64]

NUCLIDE = "Lu-177"
LN2 = math.log(2.0)

BLOOD = "blood"
INTERSTITIAL = "interstitial"
BOWEL = "bowel"
REST = "rest_of_body"
BLADDER = "bladder"
EXCRETED_URINE = "excreted_urine"
EXCRETED_FECES = "excreted_feces"


def lesion_name(i: int) -> str:
    """Region name of the i-th lesion (0-based): ``lesion_001`` … (DESIGN.md)."""
    return f"lesion_{i + 1:03d}"


def patient_rng(seed: int, patient_index: int) -> np.random.Generator:
    """Random generator of one patient: depends on (seed, index) only, never on the cohort size.

    Same stream as child `patient_index` of ``np.random.SeedSequence(seed).spawn(n)`` for any n > index.
    """
    if patient_index < 0 or seed < 0:
        raise InputError(f"seed and patient_index must be ≥ 0, got seed={seed}, patient_index={patient_index}")
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(patient_index,)))


def _eigh(matrix: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Symmetric eigen-decomposition on one BLAS thread.

    These matrices are small (≤ ~170): threading gains nothing, and on a loaded 2-core machine OpenBLAS's
    threads made `eigh` 30–150× slower (measured 16 ms vs 0.2 ms at n = 40).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        w, v = np.linalg.eigh(matrix)
    return w, v


def _decay_constant_per_h() -> float:
    return get_nuclide(NUCLIDE).decay_constant_per_h


def _sphere_s_gy_per_mbq_h(volume_ml: npt.ArrayLike) -> FloatArray:
    s: FloatArray = np.asarray(sphere_s_value_mgy_per_mbq_s(volume_ml), dtype=np.float64)
    return s * MGY_PER_MBQ_S_TO_GY_PER_MBQ_H


# --------------------------------------------------------------------------------------------- lesions


@dataclass(frozen=True, eq=False)
class Lesions:
    """A patient's metastases, in random order (the order carries no meaning)."""

    volumes_ml: FloatArray
    sites: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of lesions."""
        return len(self.sites)


def sample_lesions(rng: np.random.Generator, priors: CohortPriors) -> Lesions:
    """Draw lesion count, sites and volumes from `priors.lesions` (COHORT.md "Lesions")."""
    lp = priors.lesions
    n = int(np.clip(np.rint(lp.count_median * math.exp(lp.count_sigma_log * rng.standard_normal())), 1, lp.max_lesions))
    sites = tuple(lp.site_probability)
    present = [s for s in sites if rng.random() < lp.site_probability[s]]
    if not present:
        # Every patient has disease somewhere; without bone (the commonest site) nodes are the next.
        present = ["lymph_node"] if "lymph_node" in sites else [sites[0]]
    w = np.array([lp.site_weight[s] for s in present], dtype=np.float64)
    w /= w.sum()
    if n >= len(present):
        counts = 1 + rng.multinomial(n - len(present), w)
    else:
        chosen = rng.choice(len(present), size=n, replace=False, p=w)
        counts = np.bincount(chosen, minlength=len(present))
    site_list = [s for s, c in zip(present, counts, strict=True) for _ in range(int(c))]
    scale = lp.volume_patient_median_ml * math.exp(lp.volume_patient_sigma_log * rng.standard_normal())
    vol = scale * np.exp(lp.volume_lesion_sigma_log * rng.standard_normal(n))
    vol = np.clip(vol, lp.volume_min_ml, lp.volume_max_ml)
    order = rng.permutation(n)
    return Lesions(volumes_ml=vol[order], sites=tuple(site_list[i] for i in order))


# --------------------------------------------------------------------------------------------- rates


@dataclass(frozen=True, eq=False)
class CompartmentRates:
    """Rate constants (1/h) of the compartment model; arrays may carry leading batch dimensions.

    Attributes:
        names: peripheral compartments (blood is the hub, not listed).
        uptake_per_h: blood → compartment, shape (..., n).
        release_per_h: compartment → blood, shape (..., n), > 0.
        leak_per_h: compartment → faeces, shape (..., n) (bowel only).
        renal_per_h: blood → bladder, shape (...).
    """

    names: tuple[str, ...]
    uptake_per_h: FloatArray
    release_per_h: FloatArray
    leak_per_h: FloatArray
    renal_per_h: FloatArray

    def washout_t_eff_h(self, decay_constant_per_h: float) -> FloatArray:
        """Effective half-life of each compartment's own washout, ln2 / (λ + release + leak), in h."""
        t: FloatArray = LN2 / (decay_constant_per_h + self.release_per_h + self.leak_per_h)
        return t


def closed_form_tia_h(rates: CompartmentRates, decay_constant_per_h: float) -> tuple[FloatArray, FloatArray]:
    """TIA per injected MBq (h) of blood and of every peripheral compartment, in closed form.

    For a mammillary system with decay λ: x_j = a_j x_b / (λ + b_j + l_j) and
    x_b = 1 / (λ + k_u + Σ_j a_j (λ + l_j) / (λ + b_j + l_j)). Vectorised over leading batch dimensions.

    Returns:
        (blood TIA shape (...), peripheral TIAs shape (..., n)).
    """
    lam = decay_constant_per_h
    a, b, leak = rates.uptake_per_h, rates.release_per_h, rates.leak_per_h
    denom = lam + b + leak
    x_b: FloatArray = 1.0 / (lam + rates.renal_per_h + np.sum(a * (lam + leak) / denom, axis=-1))
    x_p: FloatArray = a * x_b[..., None] / denom
    return x_b, x_p


@dataclass(frozen=True)
class ReferenceModel:
    """Rate constants of the reference patient (all factors 1), calibrated to the priors' median doses and T_eff."""

    organ_uptake: dict[str, float]
    organ_release: dict[str, float]
    organ_volume_ml: dict[str, float]
    lesion_uptake_per_ml: float
    lesion_release: float
    rest: tuple[float, float]
    bowel: tuple[float, float, float]
    interstitial: tuple[float, float]
    renal: float
    washout_t_eff_h: dict[str, float]


def release_rate_per_h(t_eff_h: float | FloatArray, lam: float, floor: float) -> Any:
    """Biological release rate (1/h) that gives a compartment the effective half-life `t_eff_h`, at least `floor`."""
    return np.maximum(LN2 / np.asarray(t_eff_h) - lam, floor)


def reference_rates(priors: CohortPriors) -> dict[str, Any]:
    """Rate constants of the reference patient (every factor 1), as a plain dict (for reports and tests)."""
    ref = reference_model(priors)
    return {
        "organ_uptake_per_h": dict(ref.organ_uptake),
        "organ_release_per_h": dict(ref.organ_release),
        "lesion_uptake_per_h_per_ml": ref.lesion_uptake_per_ml,
        "lesion_release_per_h": ref.lesion_release,
        "rest_uptake_release_per_h": ref.rest,
        "bowel_uptake_release_leak_per_h": ref.bowel,
        "interstitial_uptake_release_per_h": ref.interstitial,
        "renal_per_h": ref.renal,
        "washout_t_eff_h": dict(ref.washout_t_eff_h),
    }


TUMOUR_CLASS = "_tumour"
_CALIBRATION_ITERATIONS = 12
_reference_cache: dict[str, ReferenceModel] = {}


def reference_model(priors: CohortPriors) -> ReferenceModel:
    """Reference-patient rates: median organ doses and median region T_eff of the priors, exactly.

    Uptake: c_j = a_j x_b is the decay-weighted activity delivered to j per injected MBq; a target TIA fixes
    c_j (TIA_j = c_j / (λ + b_j + l_j)), x_b follows from the blood balance and a_j = c_j / x_b (closed form).
    Washout: released activity comes back through blood and is partly taken up again, which flattens the
    peaks and lengthens the post-peak T_eff beyond the compartment's own washout; the washouts are therefore
    iterated (b ← shorter by target/realised) until the reference patient's realised T_eff are the medians.
    """
    key = repr(priors)
    if key not in _reference_cache:
        if len(_reference_cache) > 32:
            _reference_cache.clear()
        _reference_cache[key] = _calibrate_reference(priors)
    return _reference_cache[key]


def _calibrate_reference(priors: CohortPriors) -> ReferenceModel:
    lp = priors.lesions
    target = {r: o.t_eff_h for o in priors.organs for r in o.regions}
    target[TUMOUR_CLASS] = lp.t_eff_h
    washout = dict(target)
    ref = _reference_for_washout(priors, washout)
    for _ in range(_CALIBRATION_ITERATIONS):
        realised = _reference_t_eff(priors, ref)
        washout = {r: washout[r] * target[r] / realised[r] for r in washout}
        ref = _reference_for_washout(priors, washout)
    return ref


def _reference_t_eff(priors: CohortPriors, ref: ReferenceModel) -> dict[str, float]:
    """Post-peak T_eff of the reference patient (one tumour compartment of the reference tumour volume)."""
    organs = list(ref.organ_uptake)
    names = (INTERSTITIAL, *organs, BOWEL, REST, TUMOUR_CLASS)
    releases = [ref.organ_release[r] for r in organs]
    rates = CompartmentRates(
        names=names,
        uptake_per_h=np.array(
            [
                ref.interstitial[0],
                *(ref.organ_uptake[r] for r in organs),
                ref.bowel[0],
                ref.rest[0],
                ref.lesion_uptake_per_ml * priors.lesions.reference_tumour_volume_ml,
            ]
        ),
        release_per_h=np.array([ref.interstitial[1], *releases, ref.bowel[1], ref.rest[1], ref.lesion_release]),
        leak_per_h=np.array([0.0] * (len(organs) + 1) + [ref.bowel[2], 0.0, 0.0]),
        renal_per_h=np.asarray(ref.renal),
    )
    n = len(names) + 4
    kin = PatientKinetics.from_rates(
        rates,
        kinds=["background"] * n,
        volumes_ml=np.full(n, np.nan),
        lesion_sites=(),
        injected_mbq=1.0,
        void_times_h=np.zeros(0),
        void_residual_fraction=np.zeros(0),
    )
    return {r: float(kin.t_eff_h(r)) for r in (*organs, TUMOUR_CLASS)}


def _reference_for_washout(priors: CohortPriors, washout_t_eff_h: dict[str, float]) -> ReferenceModel:
    lam = _decay_constant_per_h()
    floor = priors.structure.min_release_per_h
    cp, lp = priors.compartments, priors.lesions
    c: dict[str, float] = {}
    w: dict[str, float] = {}
    release: dict[str, float] = {}
    volume: dict[str, float] = {}
    for o in priors.organs:
        v_ml = o.mass_g / SOFT_TISSUE_DENSITY_G_PER_ML
        s = float(_sphere_s_gy_per_mbq_h(v_ml))
        tia_h = o.dose_gy_per_gbq / 1000.0 / s
        for r in o.regions:
            b = float(release_rate_per_h(washout_t_eff_h[r], lam, floor))
            c[r], w[r], release[r], volume[r] = tia_h * (lam + b), lam / (lam + b), b, v_ml
    s_les = float(_sphere_s_gy_per_mbq_h(lp.reference_lesion_volume_ml))
    b_les = float(release_rate_per_h(washout_t_eff_h[TUMOUR_CLASS], lam, floor))
    c_les_per_ml = lp.dose_gy_per_gbq / 1000.0 / (s_les * lp.reference_lesion_volume_ml) * (lam + b_les)
    c[TUMOUR_CLASS], w[TUMOUR_CLASS] = c_les_per_ml * lp.reference_tumour_volume_ml, lam / (lam + b_les)
    b_rest = float(release_rate_per_h(cp.rest_t_eff_h, lam, floor))
    c["_rest"], w["_rest"] = cp.rest_share, lam / (lam + b_rest)
    out_bowel = float(release_rate_per_h(cp.bowel_t_eff_h, lam, floor))
    l_bowel, b_bowel = cp.bowel_fecal_fraction * out_bowel, (1.0 - cp.bowel_fecal_fraction) * out_bowel
    c["_bowel"], w["_bowel"] = cp.bowel_share, (lam + l_bowel) / (lam + b_bowel + l_bowel)
    cw = sum(c[k] * w[k] for k in c)
    if not cw < 0.9:
        raise InputError(
            f"the priors send {cw:.2f} of the injected activity's blood clearance to tissue (≥ 0.9): lower organ "
            "doses, rest_share or reference_tumour_volume_ml"
        )
    k_u = cp.renal_rate_per_h
    mu_fast = -LN2 / cp.blood_distribution_half_life_h
    ratio = cp.interstitial_to_blood_ratio
    a_e = b_e = 0.0
    x_b = (1.0 - cw) / (lam + k_u)
    for _ in range(50):
        # Blood ⇄ interstitial rates so that the fast eigenvalue of the 2×2 blood/interstitial system, with
        # blood's other outflows, is the distribution half-life (Kabasakal 2017); fixed point in x_b.
        k_out = k_u + sum(c.values()) / x_b
        den = (1.0 + ratio) * mu_fast + k_out
        if not (mu_fast + k_out < 0 and den < 0):
            raise InputError(
                f"blood clearance {k_out:.2f}/h is too fast for a distribution half-life of "
                f"{cp.blood_distribution_half_life_h} h: lower renal_rate_per_h or organ uptake"
            )
        b_e = -mu_fast * (mu_fast + k_out) / den
        a_e = ratio * b_e
        x_b = (1.0 - cw) / (lam + k_u + a_e * lam / (lam + b_e))
    return ReferenceModel(
        organ_uptake={r: c[r] / x_b for r in release},
        organ_release=release,
        organ_volume_ml=volume,
        lesion_uptake_per_ml=c_les_per_ml / x_b * lp.uptake_calibration,
        lesion_release=b_les,
        rest=(c["_rest"] / x_b, b_rest),
        bowel=(c["_bowel"] / x_b, b_bowel, l_bowel),
        interstitial=(a_e, b_e),
        renal=k_u,
        washout_t_eff_h=dict(washout_t_eff_h),
    )


def perturb_rates(
    rng: np.random.Generator,
    rates: CompartmentRates,
    structure: KineticStructurePrior,
    size: int | None = None,
) -> CompartmentRates:
    """Next-cycle rates: the same compartments (stable lesion identities) with modest log-normal changes.

    Uptake and washout T_eff of every compartment but the interstitial fluid change by a patient-shared and
    a compartment-specific factor, the renal rate by its own factor (`structure.cycle_*`). With `size`, draws
    `size` independent next cycles at once (leading axis), as the response model's Monte Carlo needs.
    """
    lam = _decay_constant_per_h()
    shape: tuple[int, ...] = () if size is None else (size,)
    n = len(rates.names)
    s, q = structure.cycle_shared_variance_fraction, 1.0 - structure.cycle_shared_variance_fraction
    z_u, z_t, z_r = rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape)
    e_u, e_t = rng.standard_normal((*shape, n)), rng.standard_normal((*shape, n))
    moving = np.array([name != INTERSTITIAL for name in rates.names], dtype=np.float64)
    log_u = structure.cycle_uptake_sigma_log * (math.sqrt(s) * z_u[..., None] + math.sqrt(q) * e_u) * moving
    log_t = structure.cycle_t_eff_sigma_log * (math.sqrt(s) * z_t[..., None] + math.sqrt(q) * e_t) * moving
    out = rates.release_per_h + rates.leak_per_h
    t_eff = LN2 / (lam + out) * np.exp(log_t)
    new_out = np.where(moving > 0, np.maximum(LN2 / t_eff - lam, structure.min_release_per_h), out)
    share = rates.release_per_h / out
    return CompartmentRates(
        names=rates.names,
        uptake_per_h=rates.uptake_per_h * np.exp(log_u),
        release_per_h=new_out * share,
        leak_per_h=new_out * (1.0 - share),
        renal_per_h=rates.renal_per_h * np.exp(structure.cycle_renal_sigma_log * z_r),
    )


def sample_voids(rng: np.random.Generator, priors: CohortPriors) -> tuple[FloatArray, FloatArray]:
    """Random voiding times (h) up to the horizon and post-void residual fractions."""
    vp = priors.voiding
    first = rng.uniform(*vp.first_void_h)
    n_max = math.ceil(vp.horizon_h / (vp.interval_median_h * math.exp(-3.0 * vp.interval_sigma_log))) + 1
    intervals = vp.interval_median_h * np.exp(vp.interval_sigma_log * rng.standard_normal(n_max))
    times = first + np.concatenate([[0.0], np.cumsum(intervals)])
    times = times[times <= vp.horizon_h]
    residual = rng.uniform(0.0, vp.residual_fraction_max, times.size)
    return times, residual


# --------------------------------------------------------------------------------------------- patient


def _expm1_over(mu: FloatArray, t: FloatArray) -> FloatArray:
    """(e^{μt} − 1)/μ for every (μ, t) pair, shape (n_mu, n_t), exact at μ → 0 (limit t)."""
    mt = np.multiply.outer(mu, t)
    small = np.abs(mu) < 1e-300
    safe = np.where(small, 1.0, mu)
    out: FloatArray = np.where(small[:, None], np.broadcast_to(t, mt.shape), np.expm1(mt) / safe[:, None])
    return out


@dataclass(frozen=True, eq=False)
class PatientKinetics:
    """Exact activity curves of one patient-cycle, for every region, per injected activity.

    Rows (`regions`): ``blood``, ``interstitial``, the organs in prior order (DESIGN.md names, ``red_marrow``
    last), ``bowel``, ``rest_of_body``, ``lesion_001`` …, then ``bladder``, ``excreted_urine`` (voided) and
    ``excreted_feces``.
    The rows sum to injected × e^{−λt} at every time.

    Attributes:
        regions: row names.
        kinds: per row: ``organ``, ``marrow``, ``lesion``, ``blood``, ``background`` or ``excreta``.
        volumes_ml: per row; NaN where no self-dose is computed (blood, interstitial, bowel, rest, excreta).
        lesion_sites: site of each lesion row, in row order.
        injected_mbq: administered activity of the cycle (MBq).
        rates: rate constants of the model.
        void_times_h, voided_mbq: voiding times and the activity voided at each (at that time).
        latent: the generator's hidden draws (patient factor …): truth only, never an input of a method.
        cycle: treatment cycle (1-based).
    """

    regions: tuple[str, ...]
    kinds: tuple[str, ...]
    volumes_ml: FloatArray
    lesion_sites: tuple[str, ...]
    injected_mbq: float
    rates: CompartmentRates
    void_times_h: FloatArray
    voided_mbq: FloatArray
    latent: Mapping[str, Any]
    cycle: int
    decay_constant_per_h: float
    _modes_per_h: FloatArray = field(repr=False)
    _coef: FloatArray = field(repr=False)

    # ---- construction
    @classmethod
    def from_rates(
        cls,
        rates: CompartmentRates,
        *,
        kinds: Sequence[str],
        volumes_ml: npt.ArrayLike,
        lesion_sites: Sequence[str],
        injected_mbq: float,
        void_times_h: npt.ArrayLike,
        void_residual_fraction: npt.ArrayLike,
        latent: Mapping[str, Any] | None = None,
        cycle: int = 1,
    ) -> PatientKinetics:
        """Solve the model for given rates (one patient-cycle, no batch dimensions) and voiding schedule."""
        a = np.asarray(rates.uptake_per_h, dtype=np.float64)
        b = np.asarray(rates.release_per_h, dtype=np.float64)
        leak = np.asarray(rates.leak_per_h, dtype=np.float64)
        k_u = float(np.asarray(rates.renal_per_h))
        n = len(rates.names)
        if a.shape != (n,) or b.shape != (n,) or leak.shape != (n,):
            raise InputError(f"rates must be 1-D of length {n} (one per compartment), got {a.shape}, {b.shape}")
        if not (np.all(a > 0) and np.all(b > 0) and np.all(leak >= 0) and k_u > 0):
            raise InputError("uptake, release and renal rates must be > 0 and leaks ≥ 0 (detailed balance needs b > 0)")
        if not (math.isfinite(injected_mbq) and injected_mbq > 0):
            raise InputError(f"injected_mbq must be positive, got {injected_mbq}")
        lam = _decay_constant_per_h()
        # Symmetrised rate matrix (blood first): S = D^{-1/2} K D^{1/2}, D = diag(1, a/b).
        sym = np.zeros((n + 1, n + 1))
        sym[0, 0] = -(k_u + a.sum())
        sym[np.arange(1, n + 1), np.arange(1, n + 1)] = -(b + leak)
        off = np.sqrt(a * b)
        sym[0, 1:] = off
        sym[1:, 0] = off
        modes, q = _eigh(sym)
        d_half = np.concatenate([[1.0], np.sqrt(a / b)])
        # x(t) = D^{1/2} Q e^{Λt} Q^T D^{-1/2} e_blood, and D^{-1/2} e_blood = e_blood.
        coef = d_half[:, None] * q * q[0][None, :]
        times = np.asarray(void_times_h, dtype=np.float64)
        residual = np.asarray(void_residual_fraction, dtype=np.float64)
        if times.ndim != 1 or residual.shape != times.shape or np.any(np.diff(times) <= 0) or np.any(times < 0):
            raise InputError("void_times_h must be increasing, ≥ 0, with one residual fraction per void")
        if np.any((residual < 0) | (residual >= 1)):
            raise InputError("void_residual_fraction must be in [0, 1)")
        # Urine made up to each void (biological, per injected MBq): k_u ∫ blood.
        made = k_u * (coef[0] @ _expm1_over(modes, times)) if times.size else np.zeros(0)
        voided_bio = np.empty_like(made)
        gone = 0.0  # biological amount voided so far
        for i, (m, r) in enumerate(zip(made, residual, strict=True)):
            voided_bio[i] = (1.0 - r) * (m - gone)
            gone += voided_bio[i]
        names = (BLOOD, *rates.names, BLADDER, EXCRETED_URINE, EXCRETED_FECES)
        if len(kinds) != len(names) or np.shape(volumes_ml) != (len(names),):
            raise InputError(f"kinds and volumes_ml need one entry per region ({len(names)})")
        return cls(
            regions=names,
            kinds=tuple(kinds),
            volumes_ml=np.asarray(volumes_ml, dtype=np.float64),
            lesion_sites=tuple(lesion_sites),
            injected_mbq=float(injected_mbq),
            rates=CompartmentRates(rates.names, a, b, leak, np.asarray(k_u)),
            void_times_h=times,
            voided_mbq=injected_mbq * voided_bio * np.exp(-lam * times),
            latent=dict(latent or {}),
            cycle=cycle,
            decay_constant_per_h=lam,
            _modes_per_h=modes,
            _coef=coef,
        )

    # ---- lookups
    def blood_exponentials(self) -> tuple[FloatArray, FloatArray]:
        """Blood activity per injected activity as Σ w_i e^{ν_i t}: the exponents ν (1/h, physical decay included, all
        negative) and the weights w — the input function the single-scan oracle convolves with."""
        return self._modes_per_h - self.decay_constant_per_h, self._coef[0]

    def index(self, region: str) -> int:
        """Row of `region`."""
        try:
            return self.regions.index(region)
        except ValueError:
            raise InputError(f"no region {region!r}; known: {', '.join(self.regions)}") from None

    @property
    def lesion_regions(self) -> tuple[str, ...]:
        """Names of the lesion rows."""
        return tuple(r for r, k in zip(self.regions, self.kinds, strict=True) if k == "lesion")

    @property
    def lesion_rows(self) -> npt.NDArray[np.intp]:
        """Row indices of the lesions."""
        return np.flatnonzero(np.array(self.kinds) == "lesion")

    @property
    def n_transient(self) -> int:
        """Blood plus peripheral compartments (the rows before the bladder)."""
        return len(self.rates.names) + 1

    def _select(self, values: FloatArray, region: str | None) -> Any:
        return values if region is None else float(values[self.index(region)])

    # ---- curves
    def activity_mbq(self, time_h: npt.ArrayLike) -> FloatArray:
        """Activity (MBq, not decay-corrected) of every region at the given times; shape (n_regions, n_times).

        Args:
            time_h: times after injection in h (scalar or 1-D, ≥ 0); any grid, e.g. fine curves for images.
        """
        t = np.atleast_1d(np.asarray(time_h, dtype=np.float64))
        if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(t < 0):
            raise InputError("time_h must be a scalar or 1-D array of finite times ≥ 0 h")
        lam, inj, mu, coef = self.decay_constant_per_h, self.injected_mbq, self._modes_per_h, self._coef
        decay = np.exp(-lam * t)
        transient = inj * coef @ np.exp(np.multiply.outer(mu, t)) * decay
        phi = _expm1_over(mu, t)
        urine_made = inj * decay * float(self.rates.renal_per_h) * (coef[0] @ phi)
        feces = inj * decay * ((self.rates.leak_per_h @ coef[1:]) @ phi)
        # Voided so far, decayed to t: cumulative sum of voids in decay-corrected units.
        idx = np.searchsorted(self.void_times_h, t, side="right")
        cum = np.concatenate([[0.0], np.cumsum(self.voided_mbq * np.exp(lam * self.void_times_h))])
        voided = cum[idx] * decay
        out: FloatArray = np.vstack([transient, urine_made - voided, voided, feces])
        return out

    def total_mbq(self, time_h: npt.ArrayLike) -> FloatArray:
        """Injected activity decayed to each time (MBq): what all rows must add up to."""
        t = np.atleast_1d(np.asarray(time_h, dtype=np.float64))
        out: FloatArray = self.injected_mbq * np.exp(-self.decay_constant_per_h * t)
        return out

    def urinary_output_fraction(self, time_h: npt.ArrayLike) -> FloatArray:
        """Fraction of the (decayed) activity that has left the body as urine, bladder content included."""
        a = self.activity_mbq(time_h)
        i = self.index(BLADDER)
        out: FloatArray = (a[i] + a[i + 1]) / self.total_mbq(time_h)
        return out

    def excreted_fraction(self, time_h: npt.ArrayLike) -> FloatArray:
        """Fraction of the (decayed) activity voided or in faeces by each time (bladder content not counted)."""
        a = self.activity_mbq(time_h)
        i = self.index(EXCRETED_URINE)
        out: FloatArray = (a[i] + a[i + 1]) / self.total_mbq(time_h)
        return out

    # ---- integrals
    @cached_property
    def _tia_all(self) -> FloatArray:
        lam, inj, mu, coef = self.decay_constant_per_h, self.injected_mbq, self._modes_per_h, self._coef
        transient = inj * coef @ (1.0 / (lam - mu))
        urine_made = float(self.rates.renal_per_h) * transient[0] / lam
        voided = float(np.sum(self.voided_mbq)) / lam
        feces = float(self.rates.leak_per_h @ transient[1:]) / lam
        out: FloatArray = np.concatenate([transient, [urine_made - voided, voided, feces]])
        return out

    def tia_mbq_h(self, region: str | None = None) -> Any:
        """Time-integrated activity ∫₀^∞ A dt (MBq·h), exact from the eigen-decomposition; all rows if None."""
        return self._select(self._tia_all, region)

    @cached_property
    def _peaks(self) -> tuple[FloatArray, FloatArray]:
        lam, inj, coef = self.decay_constant_per_h, self.injected_mbq, self._coef
        nu = self._modes_per_h - lam
        grid = np.concatenate([[0.0], np.geomspace(0.01, 5000.0, 600)])
        curves = coef @ np.exp(np.multiply.outer(nu, grid))
        k = np.argmax(curves, axis=1)
        lo, hi = grid[np.maximum(k - 1, 0)], grid[np.minimum(k + 1, grid.size - 1)]
        t = grid[k]
        inner = k > 0
        for _ in range(40):
            # Newton on A'(t) = 0 inside the bracket of the grid maximum.
            e = np.exp(t[:, None] * nu[None, :])
            d1 = np.sum(coef * nu * e, axis=1)
            d2 = np.sum(coef * nu**2 * e, axis=1)
            step = np.where(d2 < 0, -d1 / np.where(d2 < 0, d2, -1.0), 0.0)
            t = np.where(inner, np.clip(t + step, lo, hi), t)
        e = np.exp(t[:, None] * nu[None, :])
        peak = inj * np.sum(coef * e, axis=1)
        post = inj * np.sum(-coef * e / nu, axis=1)
        t_eff = np.minimum(LN2 * post / peak, LN2 / lam)
        return t, t_eff

    def time_to_peak_h(self, region: str | None = None) -> Any:
        """Time of maximum activity (h) of blood and the peripheral compartments (NaN for excreta rows)."""
        out = np.full(len(self.regions), np.nan)
        out[: self.n_transient] = self._peaks[0]
        return self._select(out, region)

    def t_eff_h(self, region: str | None = None) -> Any:
        """Effective half-life (h): ln2 × post-peak TIA / peak activity, capped at T½ (NaN for excreta rows)."""
        out = np.full(len(self.regions), np.nan)
        out[: self.n_transient] = self._peaks[1]
        return self._select(out, region)

    # ---- dose (self-dose only, for the images=false path)
    @cached_property
    def _s_gy_per_mbq_h(self) -> FloatArray:
        v = self.volumes_ml
        out = np.full(v.shape, np.nan)
        ok = np.isfinite(v)
        out[ok] = _sphere_s_gy_per_mbq_h(v[ok])
        return out

    def s_value_gy_per_mbq_h(self, region: str | None = None) -> Any:
        """Self-dose S value of each region's volume (unit-density sphere), Gy/(MBq·h); NaN where no volume."""
        return self._select(self._s_gy_per_mbq_h, region)

    def mean_dose_gy(self, region: str | None = None) -> Any:
        """Mean absorbed self-dose (Gy) = TIA × sphere S value of the region volume (NaN where no volume)."""
        return self._select(self._tia_all * self._s_gy_per_mbq_h, region)

    def dose_gy_per_gbq(self, region: str | None = None) -> Any:
        """Mean absorbed self-dose per injected GBq (Gy/GBq)."""
        return self._select(self._tia_all * self._s_gy_per_mbq_h * 1000.0 / self.injected_mbq, region)


def _check_lesions(n_lesions: int, volumes: FloatArray, sites: tuple[str, ...], priors: CohortPriors) -> None:
    if n_lesions < 0:
        raise InputError(f"n_lesions must be ≥ 0, got {n_lesions}")
    if volumes.shape != (n_lesions,):
        raise InputError(f"lesion_volumes_ml needs {n_lesions} values (one per lesion), got shape {volumes.shape}")
    if not (np.all(np.isfinite(volumes)) and np.all(volumes >= 1e-3) and np.all(volumes <= 1e5)):
        raise InputError("lesion_volumes_ml must be finite and within [1e-3, 1e5] mL")
    if len(sites) != n_lesions:
        raise InputError(f"lesion_sites needs {n_lesions} entries, got {len(sites)}")
    unknown = set(sites) - set(priors.lesions.site_uptake_factor)
    if unknown:
        raise InputError(f"unknown lesion sites {sorted(unknown)}; known: {sorted(priors.lesions.site_uptake_factor)}")


def sample_patient_kinetics(
    rng: np.random.Generator,
    priors: CohortPriors,
    n_lesions: int,
    lesion_volumes_ml: npt.ArrayLike,
    lesion_sites: Sequence[str] | None = None,
    *,
    injected_mbq: float | None = None,
    organ_volumes_ml: Mapping[str, float] | None = None,
) -> PatientKinetics:
    """Draw one patient's cycle-1 kinetics from the priors and solve the whole-body model.

    Args:
        rng: the patient's generator (see `patient_rng`).
        priors: population priors.
        n_lesions: number of lesions.
        lesion_volumes_ml: volume of each lesion (mL), shape (n_lesions,).
        lesion_sites: site of each lesion (``bone``, ``lymph_node``, ``liver``); default all bone.
        injected_mbq: administered activity (MBq); default drawn from `priors.treatment`.
        organ_volumes_ml: region name → volume (mL) from the anatomy; default drawn around ICRP 89 masses.
            Organ uptake scales with volume, so an organ's dose per GBq does not depend on its size on average.
    """
    lam = _decay_constant_per_h()
    st, cp, lp = priors.structure, priors.compartments, priors.lesions
    volumes = np.atleast_1d(np.asarray(lesion_volumes_ml, dtype=np.float64)) if n_lesions else np.zeros(0)
    sites = tuple(lesion_sites) if lesion_sites is not None else ("bone",) * n_lesions
    _check_lesions(n_lesions, volumes, sites, priors)
    ref = reference_model(priors)
    s_sh = st.shared_variance_fraction
    if not 0.0 <= s_sh <= 1.0:
        raise InputError(f"shared_variance_fraction must be in [0, 1], got {s_sh}")
    rho = st.uptake_t_eff_correlation
    if injected_mbq is None:
        tol = priors.treatment.activity_tolerance
        injected_mbq = priors.treatment.activity_mbq * rng.uniform(1.0 - tol, 1.0 + tol)
    z_patient = float(rng.standard_normal())
    r_ren = cp.renal_patient_factor_correlation
    z_renal = r_ren * z_patient + math.sqrt(1.0 - r_ren**2) * float(rng.standard_normal())

    names: list[str] = [INTERSTITIAL]
    kinds: list[str] = ["background"]
    vols: list[float] = [math.nan]
    a_l: list[float] = [ref.interstitial[0]]
    b_l: list[float] = [ref.interstitial[1]]
    leak_l: list[float] = [0.0]
    z_t_all: list[float] = [math.nan]
    log_u_all: list[float] = [0.0]

    def region_z(z_shared: float, z_class: float, z_own: float, side_fraction: float) -> float:
        z_region = math.sqrt(1.0 - side_fraction) * z_class + math.sqrt(side_fraction) * z_own
        return math.sqrt(s_sh) * z_shared + math.sqrt(1.0 - s_sh) * z_region

    overrides = dict(organ_volumes_ml or {})
    for o in priors.organs:
        q = o.side_variance_fraction
        s_u = o.uptake_sigma_log_effective(rho, st.organ_dose_other_sigma_log)
        zc_t, zc_u, zc_m = rng.standard_normal(3)
        for r in o.regions:
            zs_t, zs_u, zs_m = rng.standard_normal(3)
            z_t = region_z(z_patient, zc_t, zs_t, q)
            e_u = math.sqrt(1.0 - q) * zc_u + math.sqrt(q) * zs_u
            log_u = s_u * (rho * z_t + math.sqrt(1.0 - rho**2) * e_u)
            v_ref = ref.organ_volume_ml[r]
            v = v_ref * math.exp(o.mass_sigma_log * (math.sqrt(1.0 - q) * zc_m + math.sqrt(q) * zs_m))
            if r in overrides:
                v = float(overrides.pop(r))
                if not (math.isfinite(v) and v > 0):
                    raise InputError(f"organ_volumes_ml[{r!r}] must be a positive volume in mL, got {v}")
            t_eff = ref.washout_t_eff_h[r] * math.exp(o.t_eff_sigma_log * z_t)
            names.append(r)
            kinds.append(o.kind)
            vols.append(v)
            a_l.append(ref.organ_uptake[r] * math.exp(log_u) * v / v_ref)
            b_l.append(float(release_rate_per_h(t_eff, lam, st.min_release_per_h)))
            leak_l.append(0.0)
            z_t_all.append(z_t)
            log_u_all.append(log_u)
    if overrides:
        raise InputError(f"organ_volumes_ml has unknown regions {sorted(overrides)}")

    # Bowel: no patient factor (faecal transit); rest of body: shares the patient factor.
    z_bu, z_bt = rng.standard_normal(2)
    t_bowel = cp.bowel_t_eff_h * math.exp(cp.bowel_sigma_log * z_bt)
    out_bowel = float(release_rate_per_h(t_bowel, lam, st.min_release_per_h))
    names.append(BOWEL)
    kinds.append("background")
    vols.append(math.nan)
    a_l.append(ref.bowel[0] * math.exp(cp.bowel_sigma_log * z_bu))
    b_l.append((1.0 - cp.bowel_fecal_fraction) * out_bowel)
    leak_l.append(cp.bowel_fecal_fraction * out_bowel)
    z_t_all.append(math.nan)
    log_u_all.append(cp.bowel_sigma_log * z_bu)
    z_ru, z_rt = rng.standard_normal(2)
    z_t_rest = math.sqrt(s_sh) * z_patient + math.sqrt(1.0 - s_sh) * z_rt
    names.append(REST)
    kinds.append("background")
    vols.append(math.nan)
    a_l.append(ref.rest[0] * math.exp(cp.rest_sigma_log * z_ru))
    rest_t_eff_h = cp.rest_t_eff_h * math.exp(cp.rest_sigma_log * z_t_rest)
    b_l.append(float(release_rate_per_h(rest_t_eff_h, lam, st.min_release_per_h)))
    leak_l.append(0.0)
    z_t_all.append(z_t_rest)
    log_u_all.append(cp.rest_sigma_log * z_ru)

    # Lesions: uptake ∝ volume × site factor × expression; T_eff = median × patient × lesion factor.
    zl_t, zl_u = rng.standard_normal(n_lesions), rng.standard_normal(n_lesions)
    z_t_les = math.sqrt(s_sh) * z_patient + math.sqrt(1.0 - s_sh) * zl_t
    log_u_les = lp.uptake_sigma_log * (rho * z_t_les + math.sqrt(1.0 - rho**2) * zl_u)
    site_f = np.array([lp.site_uptake_factor[s] for s in sites], dtype=np.float64)
    a_les = ref.lesion_uptake_per_ml * volumes * site_f * np.exp(log_u_les)
    t_les = ref.washout_t_eff_h[TUMOUR_CLASS] * lp.t_eff_calibration
    b_les = release_rate_per_h(t_les * np.exp(lp.t_eff_sigma_log * z_t_les), lam, st.min_release_per_h)
    names.extend(lesion_name(i) for i in range(n_lesions))
    kinds.extend(["lesion"] * n_lesions)

    k_u = ref.renal * math.exp(cp.renal_sigma_log * z_renal)
    rates = CompartmentRates(
        names=tuple(names),
        uptake_per_h=np.concatenate([a_l, a_les]),
        release_per_h=np.concatenate([b_l, b_les]),
        leak_per_h=np.concatenate([leak_l, np.zeros(n_lesions)]),
        renal_per_h=np.asarray(k_u),
    )
    void_t, void_r = sample_voids(rng, priors)
    latent = {
        "t_eff_patient_z": z_patient,
        "renal_z": z_renal,
        "t_eff_z": np.concatenate([z_t_all, z_t_les]),
        "uptake_log_factor": np.concatenate([log_u_all, log_u_les]),
    }
    return PatientKinetics.from_rates(
        rates,
        kinds=[BLOOD, *kinds, "organ", "excreta", "excreta"],
        volumes_ml=np.concatenate([[math.nan], vols, volumes, [math.nan] * 3]),
        lesion_sites=sites,
        injected_mbq=float(injected_mbq),
        void_times_h=void_t,
        void_residual_fraction=void_r,
        latent=latent,
        cycle=1,
    )


def sample_next_cycle_kinetics(
    rng: np.random.Generator,
    previous: PatientKinetics,
    priors: CohortPriors,
    *,
    injected_mbq: float | None = None,
) -> PatientKinetics:
    """The same patient one cycle later: same regions and lesions, modestly changed rates, new voiding.

    Args:
        rng: the patient's generator.
        previous: the previous cycle's kinetics.
        priors: population priors (`structure.cycle_*`, `treatment`).
        injected_mbq: activity of this cycle (MBq); default drawn from `priors.treatment`.
    """
    rates = perturb_rates(rng, previous.rates, priors.structure)
    if injected_mbq is None:
        tol = priors.treatment.activity_tolerance
        injected_mbq = priors.treatment.activity_mbq * rng.uniform(1.0 - tol, 1.0 + tol)
    void_t, void_r = sample_voids(rng, priors)
    return PatientKinetics.from_rates(
        rates,
        kinds=previous.kinds,
        volumes_ml=previous.volumes_ml,
        lesion_sites=previous.lesion_sites,
        injected_mbq=float(injected_mbq),
        void_times_h=void_t,
        void_residual_fraction=void_r,
        latent=previous.latent,
        cycle=previous.cycle + 1,
    )


def sample_pet_lesion_factor(rng: np.random.Generator, kinetics: PatientKinetics, priors: CohortPriors) -> FloatArray:
    """PET uptake factor of each lesion (log-normal, median 1), in lesion-row order.

    Built from the lesion's PSMA expression (its uptake rate per mL relative to the population: expression
    draw × site factor) with correlation `priors.lesions.pet_expression_correlation` plus independent noise,
    so PET carries no information on retention (T_eff) beyond what expression shares with it. Multiply by
    the tracer's tumour SUV to get the lesion's PET SUV.
    """
    lp = priors.lesions
    rows = kinetics.lesion_rows
    rho = lp.pet_expression_correlation
    if not -1.0 <= rho <= 1.0:
        raise InputError(f"pet_expression_correlation must be in [-1, 1], got {rho}")
    site = np.log([lp.site_uptake_factor[s] for s in kinetics.lesion_sites])
    expression = np.asarray(kinetics.latent["uptake_log_factor"], dtype=np.float64)[rows - 1] + site
    noise = lp.uptake_sigma_log * rng.standard_normal(rows.size)
    out: FloatArray = np.exp(rho * expression + math.sqrt(1.0 - rho**2) * noise)
    return out
