"""What one scan can tell: the best achievable single-scan TIA error under the generator's own priors.

COHORT.md "What one scan can tell": an oracle knows, for every region of a patient, the true mean activity at
the scan time, the lesions' PET uptake, the volumes, the scan time and the injected activity, and the
generator's priors including the shared patient factor; it returns for each region the TIA estimate that
minimises the error measure. The error measure is the absolute relative error |T̂ − T| / T, whose minimiser
is the median of the posterior of T weighted by 1/T (the "relative-error median"); that is what we return.

Posterior (per patient, per scan time t). Each region r has a T_eff factor z_r = √s z_p + √(1−s) ε_r (s: the
shared-variance fraction, z_p the patient factor) and an uptake factor log u_r ~ N(0, σ_u), as the generator
draws them. A region fed by the blood curve β(t) (of a reference patient with this patient's lesions and
organ volumes; not rescaled to the observed blood, whose tail carries the patient factor through
recirculation in a way this one-compartment view cannot use) holds x_r(t) = α_r u_r φ(t; b(z_r)),
φ = Σ_k c_k (e^{ν_k t} − e^{−(λ+b)t}) / (ν_k + λ + b), and its TIA is x_r(t) · τ(z_r) with
τ = TIA_β / ((λ + b) φ) — independent of the uptake. Given the observed activity, log u_r is fixed by z_r, so
each region's likelihood is a 1-D function of z_r (uptake prior × lesion PET likelihood, PET = expression
with correlation ρ_PET). The patient factor is integrated out by quadrature over its prior (the deterministic
form of importance sampling over z_p): p(z_p | all) ∝ N(z_p) Π_r ∫ L_r(z_r) N(z_r; √s z_p, 1−s) dz_r.
Approximations (which only make the bound looser): regions are one compartment fed by blood (no re-uptake),
left/right organ class correlation, the renal–patient-factor link and an uptake–T_eff correlation are ignored.
Because the oracle sees noise-free region activity the bound is optimistic against real scans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.physics.stp import haenscheid_tia
from ludl.synth.kinetics import (
    TUMOUR_CLASS,
    CompartmentRates,
    PatientKinetics,
    ReferenceModel,
    reference_model,
    release_rate_per_h,
)
from ludl.synth.priors import CohortPriors

__all__ = [
    "BOUND_COLUMNS",
    "REGION_CLASSES",
    "BoundRow",
    "SingleScanEstimate",
    "reference_kinetics",
    "reference_kinetics_grid",
    "region_class",
    "single_scan_estimates",
    "summarise_bound",
]

FloatArray = npt.NDArray[np.float64]

# Region classes of the evaluation (DESIGN.md "Evaluation").
REGION_CLASSES: tuple[str, ...] = ("kidneys", "salivary", "lacrimal", "liver", "spleen", "red_marrow", "lesions")
BOUND_COLUMNS: tuple[str, ...] = (
    "region_class",
    "timepoint_h",
    "n_regions",
    "n_patients",
    "median_abs_error_pct",
    "median_abs_error_ci_low_pct",
    "median_abs_error_ci_high_pct",
    "p90_abs_error_pct",
    "mean_error_pct",
    "haenscheid_median_abs_error_pct",
    "shared_variance_fraction",
    "estimator",
)
ESTIMATOR = "posterior relative-error median (minimises E|T_hat - T|/T)"
# Patient-factor nodes: Gauss–Hermite (probabilists') quadrature of its N(0, 1) prior; each node has its own
# reference blood curve, so few nodes keep the cost down.
_ZP, _ZP_WEIGHTS = np.polynomial.hermite_e.hermegauss(11)
_ZP_WEIGHTS = _ZP_WEIGHTS / _ZP_WEIGHTS.sum()
_ZR = np.linspace(-5.5, 5.5, 111)


def region_class(region: str) -> str | None:
    """Evaluation class of a region name (None for regions outside the classes: blood, bladder, …)."""
    if region.startswith("lesion_"):
        return "lesions"
    if region.startswith("kidney_"):
        return "kidneys"
    if region.startswith(("parotid_", "submandibular_")):
        return "salivary"
    if region.startswith("lacrimal_"):
        return "lacrimal"
    if region in ("liver", "spleen", "red_marrow"):
        return region
    return None


@dataclass(frozen=True)
class SingleScanEstimate:
    """The oracle's estimates for one patient-cycle and scan time, per region (kinetics row order)."""

    time_h: float
    regions: tuple[str, ...]
    true_tia_mbq_h: FloatArray
    bound_tia_mbq_h: FloatArray
    haenscheid_tia_mbq_h: FloatArray
    patient_factor_mean: float = 0.0


def reference_kinetics(kinetics: PatientKinetics, priors: CohortPriors, patient_factor: float = 0.0) -> PatientKinetics:
    """Reference-rate kinetics with this patient's organ volumes and lesions, all region factors 1.

    `patient_factor` (z_p) sets the shared part of every T_eff (median × e^{σ √s z_p}) and the renal rate's
    expectation given z_p: recirculation makes the blood tail depend on it.
    """
    ref = reference_model(priors)
    lp, st, cp = priors.lesions, priors.structure, priors.compartments
    lam = kinetics.decay_constant_per_h
    shared = math.sqrt(min(max(st.shared_variance_fraction, 0.0), 1.0)) * patient_factor
    floor = st.min_release_per_h
    t_les = ref.washout_t_eff_h[TUMOUR_CLASS] * lp.t_eff_calibration * math.exp(lp.t_eff_sigma_log * shared)
    organ_sigma = {r: o.t_eff_sigma_log for o in priors.organs for r in o.regions}
    names = kinetics.rates.names
    a = np.empty(len(names))
    b = np.empty(len(names))
    leak = np.zeros(len(names))
    site = dict(zip(kinetics.lesion_regions, kinetics.lesion_sites, strict=True))
    for j, name in enumerate(names):
        v = float(kinetics.volumes_ml[kinetics.index(name)])
        if name == "interstitial":
            a[j], b[j] = ref.interstitial
        elif name == "bowel":
            a[j], b[j], leak[j] = ref.bowel
        elif name == "rest_of_body":
            a[j] = ref.rest[0]
            b[j] = float(release_rate_per_h(cp.rest_t_eff_h * math.exp(cp.rest_sigma_log * shared), lam, floor))
        elif name in site:
            a[j] = ref.lesion_uptake_per_ml * v * lp.site_uptake_factor[site[name]]
            b[j] = float(release_rate_per_h(t_les, lam, floor))
        else:
            a[j] = ref.organ_uptake[name] * v / ref.organ_volume_ml[name]
            t_r = ref.washout_t_eff_h[name] * math.exp(organ_sigma[name] * shared)
            b[j] = float(release_rate_per_h(t_r, lam, floor))
    renal = ref.renal * math.exp(cp.renal_sigma_log * cp.renal_patient_factor_correlation * patient_factor)
    rates = CompartmentRates(names, a, b, leak, np.asarray(renal))
    return PatientKinetics.from_rates(
        rates,
        kinds=kinetics.kinds,
        volumes_ml=kinetics.volumes_ml,
        lesion_sites=kinetics.lesion_sites,
        injected_mbq=1.0,
        void_times_h=np.zeros(0),
        void_residual_fraction=np.zeros(0),
    )


def reference_kinetics_grid(kinetics: PatientKinetics, priors: CohortPriors) -> tuple[PatientKinetics, ...]:
    """`reference_kinetics` at every patient-factor quadrature node (what `single_scan_estimates` integrates over)."""
    return tuple(reference_kinetics(kinetics, priors, float(z)) for z in _ZP)


def _normal_logpdf(x: FloatArray, sd: float) -> FloatArray:
    out: FloatArray = -0.5 * (x / sd) ** 2 - math.log(sd * math.sqrt(2.0 * math.pi))
    return out


def _phi(c_k: FloatArray, nu: FloatArray, k: FloatArray, time_h: float) -> FloatArray:
    """Σ_k c_k (e^{ν_k t} − e^{−k t}) / (ν_k + k) per washout rate k, with its limit t e^{νt} at ν + k → 0."""
    den = nu[None, :] + k[:, None]
    small = np.abs(den) < 1e-9
    num = np.exp(nu[None, :] * time_h) - np.exp(-k * time_h)[:, None]
    term = np.where(small, time_h * np.exp(nu[None, :] * time_h), num / np.where(small, 1.0, den))
    out: FloatArray = term @ c_k
    return out


def _weighted_median(values: FloatArray, weights: FloatArray) -> float:
    order = np.argsort(values)
    cw = np.cumsum(weights[order])
    k = int(np.searchsorted(cw, 0.5 * cw[-1]))
    return float(values[order][min(k, values.size - 1)])


def _posterior_estimates(
    log_l: FloatArray, tau: FloatArray, a_obs: FloatArray, s: float
) -> tuple[FloatArray, FloatArray]:
    """Posterior-median TIA of each region and the patient factor's posterior on its nodes.

    Args:
        log_l: log-likelihood of each region's observation on the (patient-factor, region-factor) grid.
        tau: TIA per observed activity (h) on that grid, per region.
        a_obs: each region's activity at the scan (MBq).
        s: shared variance fraction.
    """
    sq = math.sqrt(s)
    # p(z_r | z_p) on the grids; quadrature over the patient factor's prior (its nodes carry their prior weight).
    var = max(1.0 - s, 1e-4)
    cond = np.exp(_normal_logpdf(_ZR[None, :] - sq * _ZP[:, None], math.sqrt(var)))  # (n_p, n_r)
    dz = _ZR[1] - _ZR[0]
    m = log_l.max(axis=(1, 2), keepdims=True)  # one constant per region: keeps the z_p dependence
    lik = np.exp(log_l - m)  # (n_reg, n_p, n_r)
    marg = np.einsum("ipr,pr->ip", lik, cond) * dz  # (n_reg, n_p)
    log_post_zp = np.log(_ZP_WEIGHTS) + np.sum(np.log(np.maximum(marg, 1e-300)), axis=0)
    post_zp = np.exp(log_post_zp - log_post_zp.max())
    post_zp /= post_zp.sum()
    est = np.empty(log_l.shape[0])
    for i in range(log_l.shape[0]):
        # p(z_p, z_r | all) = p(z_p | all) L_r(z_r | z_p) p(z_r | z_p) / M_r(z_p)
        joint = (post_zp / np.maximum(marg[i], 1e-300))[:, None] * lik[i] * cond
        tia = a_obs[i] * tau[i]
        est[i] = _weighted_median(tia.ravel(), (joint / np.maximum(tia, 1e-300)).ravel())
    return est, post_zp


def _region_prior(
    r: str, kinetics: PatientKinetics, priors: CohortPriors, ref: ReferenceModel
) -> tuple[float, float, float, float, float]:
    """What the oracle knows of region `r` before the scan: median T_eff (h), its log-SD, the uptake log-SD, the
    uptake rate of the median patient (1/h) and the log site factor (lesions; 0 for organs)."""
    st, lp = priors.structure, priors.lesions
    v = float(kinetics.volumes_ml[kinetics.index(r)])
    organ_of = {name: o for o in priors.organs for name in o.regions}
    if r in organ_of:
        o = organ_of[r]
        s_u = o.uptake_sigma_log_effective(st.uptake_t_eff_correlation, st.organ_dose_other_sigma_log)
        return ref.washout_t_eff_h[r], o.t_eff_sigma_log, s_u, ref.organ_uptake[r] * v / ref.organ_volume_ml[r], 0.0
    site = kinetics.lesion_sites[list(kinetics.lesion_regions).index(r)]
    t_les = ref.washout_t_eff_h[TUMOUR_CLASS] * lp.t_eff_calibration
    site_log = math.log(lp.site_uptake_factor[site])
    return t_les, lp.t_eff_sigma_log, lp.uptake_sigma_log, ref.lesion_uptake_per_ml * v * math.exp(site_log), site_log


def single_scan_estimates(
    kinetics: PatientKinetics,
    priors: CohortPriors,
    time_h: float,
    pet_lesion_factor: npt.ArrayLike | None = None,
    regions: Sequence[str] | None = None,
    *,
    reference: Sequence[PatientKinetics] | None = None,
) -> SingleScanEstimate:
    """The oracle's best single-scan TIA of every organ, marrow and lesion region at `time_h` (see module doc).

    Args:
        kinetics: the patient-cycle's exact kinetics (truth).
        priors: the generator's priors (the oracle knows them).
        time_h: scan time after injection (h, > 0).
        pet_lesion_factor: PET uptake factor per lesion (lesion-row order), as `sample_pet_lesion_factor` gives;
            None: the oracle has no PET.
        regions: restrict to these regions (default: every organ, marrow and lesion row).
        reference: this patient's reference kinetics per patient-factor node (`reference_kinetics_grid`), to
            reuse across scan times.
    """
    if not (math.isfinite(time_h) and time_h > 0):
        raise InputError(f"time_h must be > 0 h, got {time_h}")
    st, lp = priors.structure, priors.lesions
    s = min(max(st.shared_variance_fraction, 0.0), 1.0)
    lam = kinetics.decay_constant_per_h
    ref = reference_model(priors)
    refs = reference if reference is not None else reference_kinetics_grid(kinetics, priors)
    if len(refs) != _ZP.size:
        raise InputError(
            f"reference needs one kinetics per patient-factor node ({_ZP.size}); use reference_kinetics_grid"
        )
    blood = [rk.blood_exponentials() for rk in refs]
    tia_beta = np.array([float(np.sum(c / -nu)) for nu, c in blood])
    a_true = kinetics.activity_mbq(time_h)[:, 0]
    sel = [
        r
        for r, k in zip(kinetics.regions, kinetics.kinds, strict=True)
        if (k in ("organ", "marrow") and r in ref.organ_uptake) or k == "lesion"
    ]
    if regions is not None:
        sel = [r for r in sel if r in set(regions)]
    lesion_rows = list(kinetics.lesion_regions)
    pet = None if pet_lesion_factor is None else np.asarray(pet_lesion_factor, dtype=np.float64)
    n_p, n_r = _ZP.size, _ZR.size
    log_l = np.empty((len(sel), n_p, n_r))
    tau = np.empty((len(sel), n_p, n_r))
    phi_cache: dict[tuple[float, float], tuple[FloatArray, FloatArray]] = {}
    for i, r in enumerate(sel):
        t_med, s_t, s_u, alpha, site_log = _region_prior(r, kinetics, priors, ref)
        key = (t_med, s_t)
        if key not in phi_cache:  # all lesions share one T_eff prior: one φ for them all
            b = np.asarray(release_rate_per_h(t_med * np.exp(s_t * _ZR), lam, st.min_release_per_h), dtype=np.float64)
            k = lam + b
            phi_k = np.stack([np.maximum(_phi(c, nu, k, time_h), 1e-300) for nu, c in blood])  # (n_p, n_r)
            phi_cache[key] = (phi_k, tia_beta[:, None] / (k[None, :] * phi_k))
        phi, tau[i] = phi_cache[key]
        obs = max(a_true[kinetics.index(r)], 1e-300)
        log_u = math.log(obs / (kinetics.injected_mbq * alpha)) - np.log(phi)
        log_l[i] = _normal_logpdf(log_u, s_u)
        if pet is not None and r in lesion_rows:
            rho = lp.pet_expression_correlation
            sd = max(s_u * math.sqrt(max(1.0 - rho**2, 1e-6)), 1e-3)
            log_l[i] += _normal_logpdf(math.log(pet[lesion_rows.index(r)]) - rho * (log_u + site_log), sd)
    est, post_zp = _posterior_estimates(log_l, tau, np.array([a_true[kinetics.index(r)] for r in sel]), s)
    true = np.array([kinetics.tia_mbq_h(r) for r in sel])
    obs_a = np.array([a_true[kinetics.index(r)] for r in sel])
    return SingleScanEstimate(
        time_h=float(time_h),
        regions=tuple(sel),
        true_tia_mbq_h=true,
        bound_tia_mbq_h=est,
        haenscheid_tia_mbq_h=np.asarray(haenscheid_tia(obs_a, time_h), dtype=np.float64),
        patient_factor_mean=float(post_zp @ _ZP),
    )


@dataclass(frozen=True)
class BoundRow:
    """One row of `truth/single_scan_bound.csv`."""

    region_class: str
    timepoint_h: float
    n_regions: int
    n_patients: int
    median_abs_error_pct: float
    median_abs_error_ci_low_pct: float
    median_abs_error_ci_high_pct: float
    p90_abs_error_pct: float
    mean_error_pct: float
    haenscheid_median_abs_error_pct: float
    shared_variance_fraction: float
    estimator: str = ESTIMATOR

    def cells(self) -> list[str]:
        """CSV cells in `BOUND_COLUMNS` order."""
        out: list[str] = []
        for name in BOUND_COLUMNS:
            value = getattr(self, name)
            out.append(f"{value:.6g}" if isinstance(value, float) else str(value))
        return out


def summarise_bound(
    estimates: Mapping[str, Sequence[SingleScanEstimate]],
    timepoints_h: Sequence[float],
    shared_variance_fraction: float,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> list[BoundRow]:
    """Per region class and nominal time point: the bound's error statistics with a patient bootstrap CI.

    Args:
        estimates: patient id → one `SingleScanEstimate` per time point (same order as `timepoints_h`).
        timepoints_h: nominal time points.
        shared_variance_fraction: the cohort's setting (recorded: the bound depends on it).
        n_bootstrap: bootstrap resamples over patients for the CI of the median.
        seed: bootstrap seed (fixed: byte-identical output).
    """
    rng = np.random.default_rng(seed)
    patients = list(estimates)
    rows: list[BoundRow] = []
    for j, tp in enumerate(timepoints_h):
        for cls in REGION_CLASSES:
            err: list[FloatArray] = []
            hae: list[FloatArray] = []
            for p in patients:
                e = estimates[p][j]
                keep = np.array([region_class(r) == cls for r in e.regions], dtype=bool)
                err.append((e.bound_tia_mbq_h[keep] / e.true_tia_mbq_h[keep] - 1.0) * 100.0)
                hae.append((e.haenscheid_tia_mbq_h[keep] / e.true_tia_mbq_h[keep] - 1.0) * 100.0)
            all_err = np.concatenate(err) if err else np.zeros(0)
            if all_err.size == 0:
                continue
            all_hae = np.concatenate(hae)
            n_pat = sum(1 for x in err if x.size)
            idx = [i for i, x in enumerate(err) if x.size]
            boots = []
            for _ in range(n_bootstrap):
                pick = rng.choice(idx, size=len(idx), replace=True)
                boots.append(float(np.median(np.abs(np.concatenate([err[i] for i in pick])))))
            rows.append(
                BoundRow(
                    region_class=cls,
                    timepoint_h=float(tp),
                    n_regions=int(all_err.size),
                    n_patients=n_pat,
                    median_abs_error_pct=float(np.median(np.abs(all_err))),
                    median_abs_error_ci_low_pct=float(np.percentile(boots, 2.5)),
                    median_abs_error_ci_high_pct=float(np.percentile(boots, 97.5)),
                    p90_abs_error_pct=float(np.percentile(np.abs(all_err), 90)),
                    mean_error_pct=float(np.mean(all_err)),
                    haenscheid_median_abs_error_pct=float(np.median(np.abs(all_hae))),
                    shared_variance_fraction=float(shared_variance_fraction),
                )
            )
    return rows
