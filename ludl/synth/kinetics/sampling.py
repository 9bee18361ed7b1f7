"""Patient sampling: generators, lesions, voiding, cycle-1 and next-cycle kinetics, PET lesion factors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.regions import lesion_name
from ludl.synth.kinetics.curves import PatientKinetics
from ludl.synth.kinetics.rates import (
    BLOOD,
    BOWEL,
    INTERSTITIAL,
    REST,
    FloatArray,
    decay_constant_per_h,
    perturb_rates,
    release_rate_per_h,
)
from ludl.synth.kinetics.reference import TUMOUR_CLASS, ReferenceModel, reference_model
from ludl.synth.kinetics.uptake_phase import draw_delivery_pools, lesion_compartment_rates
from ludl.synth.priors import CohortPriors

__all__ = [
    "Lesions",
    "patient_rng",
    "sample_lesions",
    "sample_next_cycle_kinetics",
    "sample_patient_kinetics",
    "sample_pet_lesion_factor",
    "sample_voids",
    "tumour_sink_log_factor",
]


def patient_rng(seed: int, patient_index: int) -> np.random.Generator:
    """Random generator of one patient: depends on (seed, index) only, never on the cohort size.

    Same stream as child `patient_index` of ``np.random.SeedSequence(seed).spawn(n)`` for any n > index.
    """
    if patient_index < 0 or seed < 0:
        raise InputError(f"seed and patient_index must be ≥ 0, got seed={seed}, patient_index={patient_index}")
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(patient_index,)))


# --------------------------------------------------------------------------------------------- lesions


@dataclass(frozen=True, eq=False)
class Lesions:
    """A patient's metastases, in random order (the order carries no meaning)."""

    volumes_ml: FloatArray
    sites: tuple[str, ...]
    diffuse_marrow: bool = False  # diffuse marrow involvement (`LesionPrior.diffuse_marrow_*`)

    @property
    def n(self) -> int:
        """Number of lesions."""
        return len(self.sites)


def sample_lesions(rng: np.random.Generator, priors: CohortPriors) -> Lesions:
    """Draw lesion count, sites and volumes from `priors.lesions` (docs/synthetic-cohort.md "Lesions")."""
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
    diffuse = bool(rng.random() < lp.diffuse_marrow_probability)
    return Lesions(volumes_ml=vol[order], sites=tuple(site_list[i] for i in order), diffuse_marrow=diffuse)


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


@dataclass
class _RegionRows:
    """Per-compartment draws of the non-lesion compartments, in row order (interstitial fluid first)."""

    names: list[str]
    kinds: list[str]
    vols: list[float]
    uptake: list[float]
    release: list[float]
    leak: list[float]
    z_t: list[float]
    log_u: list[float]

    def add(
        self, name: str, kind: str, vol: float, uptake: float, release: float, leak: float, z_t: float, log_u: float
    ) -> None:
        """Append one compartment's row."""
        self.names.append(name)
        self.kinds.append(kind)
        self.vols.append(vol)
        self.uptake.append(uptake)
        self.release.append(release)
        self.leak.append(leak)
        self.z_t.append(z_t)
        self.log_u.append(log_u)


def _draw_organ_rows(
    rng: np.random.Generator,
    priors: CohortPriors,
    ref: ReferenceModel,
    rows: _RegionRows,
    z_patient: float,
    organ_volumes_ml: Mapping[str, float] | None,
    sink_log: float,
) -> None:
    """Organ rows: T_eff and uptake factors (class, side, own parts and tumour sink) and volumes, in prior order."""
    lam = decay_constant_per_h()
    st = priors.structure
    s_sh = st.shared_variance_fraction
    rho = st.organ_uptake_t_eff_correlation
    if not -1.0 <= rho <= 1.0:
        raise InputError(f"organ_uptake_t_eff_correlation must be in [-1, 1], got {rho}")

    def region_z(z_shared: float, z_class: float, z_own: float, side_fraction: float) -> float:
        z_region = math.sqrt(1.0 - side_fraction) * z_class + math.sqrt(side_fraction) * z_own
        return math.sqrt(s_sh) * z_shared + math.sqrt(1.0 - s_sh) * z_region

    overrides = dict(organ_volumes_ml or {})
    for o in priors.organs:
        q = o.side_variance_fraction
        s_u = o.own_uptake_sigma_log(rho, st.organ_dose_other_sigma_log)
        zc_t, zc_u, zc_m = rng.standard_normal(3)
        for r in o.regions:
            zs_t, zs_u, zs_m = rng.standard_normal(3)
            z_t = region_z(z_patient, zc_t, zs_t, q)
            e_u = math.sqrt(1.0 - q) * zc_u + math.sqrt(q) * zs_u
            log_u = s_u * (rho * z_t + math.sqrt(1.0 - rho**2) * e_u) + sink_log
            v_ref = ref.organ_volume_ml[r]
            v = v_ref * math.exp(o.mass_sigma_log * (math.sqrt(1.0 - q) * zc_m + math.sqrt(q) * zs_m))
            if r in overrides:
                v = float(overrides.pop(r))
                if not (math.isfinite(v) and v > 0):
                    raise InputError(f"organ_volumes_ml[{r!r}] must be a positive volume in mL, got {v}")
            t_eff = ref.washout_t_eff_h[r] * math.exp(o.t_eff_sigma_log * z_t)
            uptake = ref.organ_uptake[r] * math.exp(log_u) * v / v_ref
            release = float(release_rate_per_h(t_eff, lam, st.min_release_per_h))
            rows.add(r, o.kind, v, uptake, release, 0.0, z_t, log_u)
    if overrides:
        raise InputError(f"organ_volumes_ml has unknown regions {sorted(overrides)}")


def _draw_background_rows(
    rng: np.random.Generator, priors: CohortPriors, ref: ReferenceModel, rows: _RegionRows, z_patient: float
) -> None:
    """Bowel (no patient factor: faecal transit) and rest of body (shares the patient factor)."""
    lam = decay_constant_per_h()
    st, cp = priors.structure, priors.compartments
    s_sh = st.shared_variance_fraction
    z_bu, z_bt = rng.standard_normal(2)
    t_bowel = cp.bowel_t_eff_h * math.exp(cp.bowel_sigma_log * z_bt)
    out_bowel = float(release_rate_per_h(t_bowel, lam, st.min_release_per_h))
    rows.add(
        BOWEL,
        "background",
        math.nan,
        ref.bowel[0] * math.exp(cp.bowel_sigma_log * z_bu),
        (1.0 - cp.bowel_fecal_fraction) * out_bowel,
        cp.bowel_fecal_fraction * out_bowel,
        math.nan,
        cp.bowel_sigma_log * z_bu,
    )
    z_ru, z_rt = rng.standard_normal(2)
    z_t_rest = math.sqrt(s_sh) * z_patient + math.sqrt(1.0 - s_sh) * z_rt
    rest_t_eff_h = cp.rest_t_eff_h * math.exp(cp.rest_sigma_log * z_t_rest)
    rows.add(
        REST,
        "background",
        math.nan,
        ref.rest[0] * math.exp(cp.rest_sigma_log * z_ru),
        float(release_rate_per_h(rest_t_eff_h, lam, st.min_release_per_h)),
        0.0,
        z_t_rest,
        cp.rest_sigma_log * z_ru,
    )


def _draw_lesion_rates(
    rng: np.random.Generator,
    priors: CohortPriors,
    ref: ReferenceModel,
    z_patient: float,
    volumes: FloatArray,
    sites: tuple[str, ...],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Lesion uptake ∝ volume × site factor × expression; T_eff = median × patient × tumour × lesion factor.

    Returns:
        (uptake per h, release per h, T_eff z-scores, log uptake factors), one value per lesion.
    """
    lam = decay_constant_per_h()
    st, lp = priors.structure, priors.lesions
    s_sh, rho = st.shared_variance_fraction, st.uptake_t_eff_correlation
    n_lesions = len(sites)
    f_pat = s_sh if lp.t_eff_patient_variance_fraction is None else lp.t_eff_patient_variance_fraction
    if not s_sh <= f_pat <= 1.0:
        raise InputError(
            f"lesions.t_eff_patient_variance_fraction must be in [shared_variance_fraction ({s_sh}), 1], got {f_pat}"
        )
    # The tumour factor is drawn only when it has weight: the default cohorts keep their streams byte for byte.
    z_tumour = float(rng.standard_normal()) if f_pat > s_sh else 0.0
    zl_t, zl_u = rng.standard_normal(n_lesions), rng.standard_normal(n_lesions)
    z_t_les = math.sqrt(s_sh) * z_patient + math.sqrt(f_pat - s_sh) * z_tumour + math.sqrt(1.0 - f_pat) * zl_t
    log_u_les = lp.uptake_sigma_log * (rho * z_t_les + math.sqrt(1.0 - rho**2) * zl_u)
    site_f = np.array([lp.site_uptake_factor[s] for s in sites], dtype=np.float64)
    a_les = ref.lesion_uptake_per_ml * volumes * site_f * np.exp(log_u_les)
    t_les = ref.washout_t_eff_h[TUMOUR_CLASS] * lp.t_eff_calibration
    b_les = release_rate_per_h(t_les * np.exp(lp.t_eff_sigma_log * z_t_les), lam, st.min_release_per_h)
    return a_les, b_les, z_t_les, log_u_les


def tumour_sink_log_factor(tumour_volume_ml: float, priors: CohortPriors) -> float:
    """Log factor on every organ's uptake rate from ligand competition with a total tumour volume (mL).

    −β ln((K + V)/(K + V₀)) (`KineticStructurePrior.tumour_sink_*`): 0 at the reference tumour volume V₀.
    """
    st = priors.structure
    k_ml, v0 = st.tumour_sink_half_volume_ml, priors.lesions.reference_tumour_volume_ml
    if not (k_ml > 0 and st.tumour_sink_exponent >= 0):
        raise InputError(
            f"tumour_sink_half_volume_ml must be > 0 and tumour_sink_exponent ≥ 0, got {k_ml}, "
            f"{st.tumour_sink_exponent}"
        )
    return -st.tumour_sink_exponent * math.log((k_ml + tumour_volume_ml) / (k_ml + v0))


def sample_patient_kinetics(
    rng: np.random.Generator,
    priors: CohortPriors,
    n_lesions: int,
    lesion_volumes_ml: npt.ArrayLike,
    lesion_sites: Sequence[str] | None = None,
    *,
    injected_mbq: float | None = None,
    organ_volumes_ml: Mapping[str, float] | None = None,
    diffuse_marrow: bool = False,
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
        diffuse_marrow: diffuse marrow involvement: the red marrow takes up `diffuse_marrow_uptake_factor` × more.
    """
    st, cp = priors.structure, priors.compartments
    volumes = np.atleast_1d(np.asarray(lesion_volumes_ml, dtype=np.float64)) if n_lesions else np.zeros(0)
    sites = tuple(lesion_sites) if lesion_sites is not None else ("bone",) * n_lesions
    _check_lesions(n_lesions, volumes, sites, priors)
    ref = reference_model(priors)
    s_sh = st.shared_variance_fraction
    if not 0.0 <= s_sh <= 1.0:
        raise InputError(f"shared_variance_fraction must be in [0, 1], got {s_sh}")
    if injected_mbq is None:
        tol = priors.treatment.activity_tolerance
        injected_mbq = priors.treatment.activity_mbq * rng.uniform(1.0 - tol, 1.0 + tol)
    z_patient = float(rng.standard_normal())
    r_ren = cp.renal_patient_factor_correlation
    z_renal = r_ren * z_patient + math.sqrt(1.0 - r_ren**2) * float(rng.standard_normal())
    # Drawn for every patient, so the stream does not depend on the involvement.
    z_marrow = float(rng.standard_normal())

    # The draws' order is the generator's stream: organs, bowel and rest, lesions, then the voids.
    rows = _RegionRows(
        [INTERSTITIAL],
        ["background"],
        [math.nan],
        [ref.interstitial[0]],
        [ref.interstitial[1]],
        [0.0],
        [math.nan],
        [0.0],
    )
    sink_log = tumour_sink_log_factor(float(np.sum(volumes)), priors)
    _draw_organ_rows(rng, priors, ref, rows, z_patient, organ_volumes_ml, sink_log)
    _draw_background_rows(rng, priors, ref, rows, z_patient)
    marrow_log = 0.0
    if diffuse_marrow:
        lp = priors.lesions
        marrow_log = math.log(lp.diffuse_marrow_uptake_factor) + lp.diffuse_marrow_sigma_log * z_marrow
        for j, kind in enumerate(rows.kinds):
            if kind == "marrow":
                rows.uptake[j] *= math.exp(marrow_log)
                rows.log_u[j] += marrow_log
    a_les, b_les, z_t_les, log_u_les = _draw_lesion_rates(rng, priors, ref, z_patient, volumes, sites)
    pools = draw_delivery_pools(rng, priors.lesions, a_les, b_les)
    names = [*rows.names, *(lesion_name(i + 1) for i in range(n_lesions))]
    kinds = [*rows.kinds, *["lesion"] * n_lesions]

    k_u = ref.renal * math.exp(cp.renal_sigma_log * z_renal)
    rates = lesion_compartment_rates(names, rows.names, rows.uptake, rows.release, rows.leak, a_les, b_les, k_u, pools)
    void_t, void_r = sample_voids(rng, priors)
    latent = {
        "t_eff_patient_z": z_patient,
        "renal_z": z_renal,
        "tumour_sink_log_factor": sink_log,
        "diffuse_marrow_log_factor": marrow_log,
        "t_eff_z": np.concatenate([rows.z_t, z_t_les]),
        "uptake_log_factor": np.concatenate([rows.log_u, log_u_les]),
    }
    if pools is not None:
        latent["lesion_uptake_peak_target_h"] = pools.peak_h
    return PatientKinetics.from_rates(
        rates,
        kinds=[BLOOD, *kinds, "organ", "excreta", "excreta"],
        volumes_ml=np.concatenate([[math.nan], rows.vols, volumes, [math.nan] * 3]),
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
