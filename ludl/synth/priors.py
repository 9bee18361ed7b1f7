"""Population priors of the synthetic cohort: every number a config value with its source (docs/synthetic-cohort.md).

Distributions across patients are log-normal unless said otherwise (effective half-lives: J Nucl Med 2022,
PMC8882881). "assumption" marks a value no source pinned down. A published *range* of a dose per GBq is read
as the 5–95 % interval of the population (assumption: the ranges are extremes of small series), so its log
spread is ln(hi/lo) / (2 · 1.645).

The dataclasses are frozen and nest into one `CohortPriors`; `replace_priors` applies a nested mapping of
overrides (what a Hydra/YAML config gives) and rejects unknown keys.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ludl.errors import InputError

__all__ = [
    "SOFT_TISSUE_DENSITY_G_PER_ML",
    "Z_95",
    "CohortPriors",
    "CompartmentPrior",
    "KineticStructurePrior",
    "LesionPrior",
    "OrganPrior",
    "ResponsePrior",
    "TreatmentPrior",
    "VoidingPrior",
    "cv_sigma_log",
    "default_priors",
    "range_sigma_log",
    "replace_priors",
]

# ICRU Report 44 soft tissue (as `ludl.physics.dose`): organ mass → the sphere volume whose S value we use.
SOFT_TISSUE_DENSITY_G_PER_ML = 1.04
# Standard-normal 95th percentile: a 5–95 % range spans ±1.645 σ.
Z_95 = 1.6448536269514722


def range_sigma_log(lo: float, hi: float) -> float:
    """Log-normal σ whose 5–95 % interval is (lo, hi) (how published ranges are read here)."""
    if not (0 < lo < hi):
        raise InputError(f"a range needs 0 < lo < hi, got ({lo}, {hi})")
    return math.log(hi / lo) / (2.0 * Z_95)


def cv_sigma_log(mean: float, sd: float) -> float:
    """Log-normal σ of a quantity published as mean ± SD (arithmetic): √ln(1 + (SD/mean)²)."""
    if not (mean > 0 and sd >= 0):
        raise InputError(f"a mean ± SD needs mean > 0 and SD ≥ 0, got {mean} ± {sd}")
    return math.sqrt(math.log1p((sd / mean) ** 2))


@dataclass(frozen=True)
class TreatmentPrior:
    """Administered activity and schedule."""

    activity_mbq: float = 7400.0  # VISION (Sartor 2021 NEJM): 7.4 GBq per cycle
    activity_tolerance: float = 0.10  # VISION: ± 10 %, drawn uniform in the band (assumption on the shape)
    cycle_interval_weeks: float = 6.0  # VISION: every 6 weeks


@dataclass(frozen=True)
class OrganPrior:
    """One organ class (one or two regions: left/right) of the whole-body model.

    `uptake_sigma_log` is the organ's own inter-patient spread of PSMA uptake (log units): what tumour burden
    and renal function do not explain. The defaults are the published inter-patient spreads of normal-organ
    PSMA PET SUVmean (Li 2017, read as mean ± SD, see `cv_sigma_log`). With `uptake_sigma_log=None` it is
    derived from the published dose range instead (`uptake_sigma_log_effective`).
    """

    name: str
    regions: tuple[str, ...]
    kind: str  # "organ" or "marrow" (docs/architecture.md region kinds)
    mass_g: float  # per region (one side)
    dose_gy_per_gbq: float  # population median of the mean absorbed dose per injected GBq
    dose_range_gy_per_gbq: tuple[float, float]
    t_eff_h: float  # population median effective half-life
    t_eff_sigma_log: float = 0.35  # docs/synthetic-cohort.md: σ_log ≈ 0.3–0.4 across patients
    uptake_sigma_log: float | None = None
    mass_sigma_log: float = 0.15  # assumption: organ size varies ≈ 15 % around ICRP 89 reference male
    side_variance_fraction: float = 0.2  # assumption: share of a side's log variance not common to both sides

    @property
    def dose_sigma_log(self) -> float:
        """Log spread of the dose per GBq implied by the published range."""
        return range_sigma_log(*self.dose_range_gy_per_gbq)

    def own_uptake_sigma_log(self, uptake_t_eff_correlation: float, other_sigma_log: float = 0.0) -> float:
        """The organ's own log-uptake spread: `uptake_sigma_log`, or derived from the dose range (≥ 0.05).

        Derived: σ_D² = σ_u² + σ_T² + 2ρσ_uσ_T + σ_other² (dose ∝ uptake × T_eff).
        """
        if self.uptake_sigma_log is not None:
            return self.uptake_sigma_log
        s_d, s_t, rho = self.dose_sigma_log, self.t_eff_sigma_log, uptake_t_eff_correlation
        # Positive root of σ_u² + 2ρσ_Tσ_u + (σ_T² + σ_other² − σ_D²) = 0.
        disc = (rho * s_t) ** 2 - (s_t**2 + other_sigma_log**2 - s_d**2)
        s_u = -rho * s_t + math.sqrt(disc) if disc > 0 else 0.0
        return max(s_u, 0.05)

    def uptake_sigma_log_effective(self, uptake_t_eff_correlation: float, other_sigma_log: float = 0.0) -> float:
        """Spread of the organ's latent log-uptake factor: own spread and the tumour sink (`other_sigma_log`).

        The latent factor (``kinetics.latent["uptake_log_factor"]``) holds both, so dividing it by this gives
        a z-score of unit variance across the cohort (what the PET organ SUVs are drawn from).
        """
        own = self.own_uptake_sigma_log(uptake_t_eff_correlation, other_sigma_log)
        return math.hypot(own, other_sigma_log)


def _default_organs() -> tuple[OrganPrior, ...]:
    # Own uptake spreads: normal-organ 18F-DCFPyL SUVmean mean ± SD of Li 2017 (JNM 58 suppl 1; kidney 20 ± 4.6,
    # parotid 9 ± 2, submandibular 9.5 ± 2.3, lacrimal 6.5 ± 1.8, liver 5.0 ± 0.7, spleen 4.0 ± 1.5); red marrow
    # 1.2 ± 0.3 is an assumption (the PET table's marrow SUV). PET and 177Lu-PSMA bind the same receptor, so
    # the inter-patient spread of organ expression is taken as the same for both (assumption).
    return (
        # Masses: ICRP Publication 89 adult male (kidneys 310 g, liver 1800 g, spleen 150 g, parotids 50 g,
        # submandibular ("submaxillary") 25 g, active marrow 1170 g), as tabulated e.g. by Lee et al. 2012 Health Phys
        # 102:292 (Table 2) and ICRP 110 Table 4.1; paired organs split evenly. Doses / T_eff: docs/synthetic-cohort.md
        # table (Hohberg 2016, Kabasakal 2017, Peters 2022, Violet 2019, Okamoto 2017; T_eff: AAPM 2026 abstract, 20
        # pts). Kidney T_eff spread at docs/synthetic-cohort.md's low end (0.3): with the published uptake spread and
        # the tumour sink the kidney dose spread stays near its published range.
        OrganPrior(
            "kidney",
            ("kidney_left", "kidney_right"),
            "organ",
            155.0,
            0.5,
            (0.25, 1.0),
            35.5,
            t_eff_sigma_log=0.3,
            uptake_sigma_log=cv_sigma_log(20.0, 4.6),
        ),
        OrganPrior(
            "parotid",
            ("parotid_left", "parotid_right"),
            "organ",
            25.0,
            0.6,
            (0.3, 1.9),
            42.2,
            uptake_sigma_log=cv_sigma_log(9.0, 2.0),
        ),
        # Submandibular and lacrimal T_eff: "as parotid" (assumption, docs/synthetic-cohort.md).
        OrganPrior(
            "submandibular",
            ("submandibular_left", "submandibular_right"),
            "organ",
            12.5,
            0.5,
            (0.2, 1.0),
            42.2,
            uptake_sigma_log=cv_sigma_log(9.5, 2.3),
        ),
        # Lacrimal mass: MRI mean volume 0.77 / 0.68 mL right/left (Bukhari 2014, Ophthal Plast Reconstr Surg 30:388) ×
        # 1.0 g/mL ≈ 0.73 g. Dose 2.0 (0.4–4.5): Hohberg 2016 2.82, Okamoto 2017 3.8 disagree. That range is far wider
        # than Li 2017's lacrimal SUV spread (6.5 ± 1.8) allows, and docs/synthetic-cohort.md matches the doses first:
        # the own uptake spread is derived from the dose range (uptake_sigma_log=None).
        OrganPrior("lacrimal", ("lacrimal_left", "lacrimal_right"), "organ", 0.73, 2.0, (0.4, 4.5), 42.2),
        # Liver T_eff spread at docs/synthetic-cohort.md's low end (0.3), as the kidneys'.
        OrganPrior(
            "liver",
            ("liver",),
            "organ",
            1800.0,
            0.10,
            (0.05, 0.2),
            22.9,
            t_eff_sigma_log=0.3,
            uptake_sigma_log=cv_sigma_log(5.0, 0.7),
        ),
        # Spleen: docs/synthetic-cohort.md gives only 0.06–0.15 → median taken as the geometric mid-point 0.095; its
        # published dose range is narrower than its T_eff and uptake spreads allow, so its realised dose spread is
        # wider.
        OrganPrior(
            "spleen",
            ("spleen",),
            "organ",
            150.0,
            0.095,
            (0.06, 0.15),
            16.8,
            t_eff_sigma_log=0.3,
            uptake_sigma_log=cv_sigma_log(4.0, 1.5),
        ),
        OrganPrior(
            "red_marrow",
            ("red_marrow",),
            "marrow",
            1170.0,
            0.03,
            (0.015, 0.11),
            32.0,
            uptake_sigma_log=cv_sigma_log(1.2, 0.3),
        ),
    )


@dataclass(frozen=True)
class CompartmentPrior:
    """Blood, interstitial fluid, urinary and faecal excretion, rest of body, bowel."""

    blood_distribution_half_life_h: float = 0.16  # Kabasakal 2017: blood distribution phase
    blood_elimination_half_life_h: float = 10.8  # Kabasakal 2017: calibration target of the rest-of-body washout
    interstitial_to_blood_ratio: float = 3.0  # assumption: interstitial fluid ≈ 3× plasma volume (ICRP 89)
    # Blood → bladder rate (1/h) of the reference patient; with a plasma volume of ≈ 3 L, 1.4/h is a
    # clearance of ≈ 70 mL/min (elderly mCRPC patients). Calibrated with the rest of body so that ≈ 50 % of
    # the activity is in urine by 4 h (Kurth 2018); by 12 h the cohort median is ≈ 65 % against Kurth's
    # ≈ 70 %: with median organ and lesion doses on target the organs and a 300 mL tumour burden still hold
    # ≈ 25 % at 12 h, which caps it (Kurth's tumour burdens are not known).
    renal_rate_per_h: float = 1.4
    renal_sigma_log: float = 0.25  # assumption
    # Correlation of log renal rate with the shared T_eff patient factor: poorer renal function, slower
    # washout everywhere (assumption). Not ±1, so blood and bladder do not reveal the factor exactly.
    renal_patient_factor_correlation: float = -0.4
    # Rest of body: non-specific tissue binding that returns to blood. Share = fraction of the injected
    # activity it takes up (decay-weighted) in the reference patient; share and washout calibrated to Kurth
    # 2018's excretion (70 % by 12 h) and Kabasakal's blood elimination half-life (assumption).
    rest_share: float = 0.22
    rest_t_eff_h: float = 2.5
    rest_sigma_log: float = 0.25  # assumption
    # Bowel: small intestinal uptake leaving mainly with faeces (assumption; excretion is "mainly in urine").
    bowel_share: float = 0.015
    bowel_t_eff_h: float = 30.0
    bowel_fecal_fraction: float = 0.8
    bowel_sigma_log: float = 0.4
    # Calibration targets (Kurth 2018), checked by the tests.
    urine_fraction_4h: float = 0.5
    urine_fraction_12h: float = 0.7
    whole_body_t_eff_h: float = 40.5  # Kurth 2018: 40.5 ± 9.6 h (21.7–85.7), late whole-body retention


@dataclass(frozen=True)
class KineticStructurePrior:
    """How region kinetics covary: T_eff = median × patient factor × region factor (docs/synthetic-cohort.md)."""

    # Share of each region's log T_eff variance that is common to all regions of a patient. No source pins
    # it (docs/synthetic-cohort.md): results must be reported over a sweep of it.
    shared_variance_fraction: float = 0.3
    # Correlation of a lesion's log uptake with its log T_eff (stated, docs/synthetic-cohort.md asks for it): 0 =
    # independent.
    uptake_t_eff_correlation: float = 0.0
    # The same for organs. Negative (assumption): with the published uptake spreads (Li 2017), the published
    # T_eff spreads (σ_log 0.3–0.4) and the tumour sink, independent uptake would widen the organ dose spreads
    # ≈ 30 % beyond their published ranges; docs/synthetic-cohort.md asks the generator to state the value it uses.
    organ_uptake_t_eff_correlation: float = -0.3
    # Tumour sink by ligand competition (docs/synthetic-cohort.md: kidney dose falls with tumour volume, r ≈ −0.58 in a
    # 13-patient Monte Carlo study): every organ's uptake rate × ((K + V₀)/(K + V))^β, V the total tumour
    # volume, V₀ the reference volume (`LesionPrior.reference_tumour_volume_ml`) and K the volume below which
    # tumour binds too little ligand to matter (assumption). β calibrated so that the Pearson r of log kidney
    # dose vs log total tumour volume is ≈ −0.58 on the default cohort (tests/synth/test_kinetics.py). Blood
    # depletion by the lesions (the linear model) adds to it; alone it gave r ≈ −0.29.
    tumour_sink_exponent: float = 0.18
    tumour_sink_half_volume_ml: float = 30.0
    # Log spread of ln(K + V) across the default cohort (measured; tests/synth/test_kinetics.py checks it):
    # β × this is the organ uptake spread that comes from the tumour sink.
    tumour_sink_volume_sigma_log: float = 1.0

    @property
    def organ_dose_other_sigma_log(self) -> float:
        """Log spread of organ uptake that comes from outside the organ (the tumour sink), across the cohort."""
        return self.tumour_sink_exponent * self.tumour_sink_volume_sigma_log

    # Release rates never fall below this (1/h): T_eff is capped just under the physical half-life
    # (ln2/(λ+1e-4) = 155.9 h for 177Lu).
    min_release_per_h: float = 1e-4
    # Cycle to cycle (same lesions): modest changes of uptake and T_eff (assumption), part shared per patient.
    cycle_uptake_sigma_log: float = 0.12
    cycle_t_eff_sigma_log: float = 0.10
    cycle_renal_sigma_log: float = 0.10
    cycle_shared_variance_fraction: float = 0.5


@dataclass(frozen=True)
class LesionPrior:
    """Metastases: count, sites, volumes, uptake and T_eff."""

    count_median: float = 20.0  # TheraP; 1,364 lesions / 65 pts: skewed, median ≈ 20, 1 to > 100
    count_sigma_log: float = 1.0  # assumption: gives ≈ 5 % of patients above 100 lesions
    max_lesions: int = 150  # config cap for small grids
    # Patients with disease at a site (VISION / TheraP / PSMAfore: bone 88–92 %, node 33–53 %, liver 6–14 %).
    site_probability: Mapping[str, float] = field(
        default_factory=lambda: {"bone": 0.90, "lymph_node": 0.43, "liver": 0.10}
    )
    # How a patient's lesions split over the sites present (assumption).
    site_weight: Mapping[str, float] = field(default_factory=lambda: {"bone": 0.70, "lymph_node": 0.25, "liver": 0.05})
    # Relative uptake by site: Scarpa 2017 bone 3.4 / node 2.6 / liver 2.4 Gy/GBq and Innsbruck (32 pts)
    # bone 4.0 / node 3.1 / liver 3.0 → node ≈ 0.77, liver ≈ 0.73 of bone.
    site_uptake_factor: Mapping[str, float] = field(
        default_factory=lambda: {"bone": 1.0, "lymph_node": 0.77, "liver": 0.73}
    )
    # Diffuse marrow involvement (the "superscan" pattern of mCRPC: tumour spread through the marrow rather
    # than focal lesions): a share of patients (assumption: a minority of 177Lu-PSMA candidates; no single
    # source read) whose red-marrow uptake is this factor × the normal (log-normal spread; assumption).
    diffuse_marrow_probability: float = 0.12
    diffuse_marrow_uptake_factor: float = 4.0
    diffuse_marrow_sigma_log: float = 0.4
    volume_min_ml: float = 0.5  # docs/synthetic-cohort.md: 0.5–100 mL each
    volume_max_ml: float = 100.0
    # Lesion volume = patient scale × lesion factor; the patient scale median and the spreads give a total
    # tumour volume of median ≈ 300 mL, 10 to > 2,000 mL (docs/synthetic-cohort.md: median 200–500 mL, assumption).
    volume_patient_median_ml: float = 10.0
    volume_patient_sigma_log: float = 0.6
    volume_lesion_sigma_log: float = 0.9
    # Tumour volume of the reference patient the uptake rates are calibrated at (≈ the cohort median).
    reference_tumour_volume_ml: float = 300.0
    reference_lesion_volume_ml: float = 10.0
    dose_gy_per_gbq: float = 3.5  # docs/synthetic-cohort.md: median ≈ 3.5 Gy/GBq, emerges from the kinetics
    dose_gsd_range: tuple[float, float] = (1.7, 2.1)  # docs/synthetic-cohort.md: geometric SD ≈ 1.7–2.1
    # docs/synthetic-cohort.md: median ≈ 70 h, 40–160 h, capped at the physical 159.5 h (assumption)
    t_eff_h: float = 70.0
    # The 40–160 h range read as every published range here is (the population's 5–95 % interval,
    # `range_sigma_log`): ln(160/40) / 3.29 = 0.421. It was 0.3, narrower than the range it cites and than the
    # organs' (σ_log 0.3–0.4 with ranges of 5–18×, AAPM 2026 abstract); a wide tumour T_eff spread is why
    # single-scan tumour dosimetry of 177Lu-PSMA is unreliable (J Nucl Med 2022, PMC8882881).
    t_eff_sigma_log: float = range_sigma_log(40.0, 160.0)
    # Share of the lesion log T_eff variance that is patient-level (shared by all of a patient's lesions): the
    # patient factor every region shares (`structure.shared_variance_fraction`, 0.3) plus, above it, a tumour
    # factor of the patient's own (tumour biology: internalisation, PSMA recycling). None = the shared fraction
    # alone (no tumour factor; the default, so default cohorts are unchanged). Must be ≥ that fraction.
    # No publication splits lesion T_eff variance into patient and lesion parts (assumption either way). It
    # does not open the dose-over-24 h-proxy gap: +0.002 / −0.002 / +0.002 at 0.3 / 0.6 / 0.9 on 800
    # patients (docs/synthetic-cohort.md, "Response": why a 24 h scan keeps most of the dose information).
    t_eff_patient_variance_fraction: float | None = None
    # Lesion uptake phase (off by default: None keeps the default cohort byte for byte). A lesion then takes its
    # activity up through a delivery pool of its own (blood ⇄ pool ⇄ lesion, the pool counted in rest_of_body), so
    # lesion activity keeps rising for a lesion-specific time: its time to peak is drawn log-normal with this
    # 5–95 % range (h, read as every range here, `range_sigma_log`), e.g. (12, 48): some lesions still rising at
    # 24–48 h. Assumption: the stored literature searched gave no lesion time-activity data to pin it
    # (docs/synthetic-cohort.md, "Lesion uptake phase"). Realised peaks follow it to ≈ 10–20 % (blood input).
    uptake_peak_h_range: tuple[float, float] | None = None
    # Share of the log peak-time variance that is patient-level (tumour perfusion, ligand amount; assumption).
    uptake_peak_patient_variance_fraction: float = 0.0
    # Share of the pool's outflow that enters the lesion (the rest returns to blood; assumption).
    uptake_delivery_fraction: float = 0.5
    # Assumption: PSMA expression per mL, sized (with the T_eff spread) for the dose GSD above: 2.07 on the
    # 300-patient test population (0.5 with the former T_eff σ_log 0.3).
    uptake_sigma_log: float = 0.47
    # Pooled-lesion median dose of the cohort ≠ reference-patient dose (sink, small-lesion S values, site
    # mix): this factor on the lesion uptake rate was calibrated to land the cohort median at ≈ 3.5 Gy/GBq.
    uptake_calibration: float = 1.46
    # Same for the lesion washout: pooled lesions sit mostly in high-burden patients, where released activity
    # is taken up again by the other lesions, which lengthens their T_eff; calibrated to a pooled median ≈ 70 h.
    t_eff_calibration: float = 0.88
    # PET (pre-therapy) vs 177Lu lesion uptake: r ≈ 0.74 (1,364-lesion study; range of reports 0.6–0.9),
    # measured as the literature does: log lesion PET SUV (per tracer) vs log 177Lu concentration at 24 h,
    # Pearson pooled over lesions. The config knob: set it and the generator follows.
    pet_uptake_correlation: float = 0.74
    # PET shows expression (the lesion's uptake rate per mL: expression draw × site factor), never retention.
    # Expression itself correlates this much with the 24 h concentration (T_eff, the shared patient factor and
    # the tumour sink blur it; measured on the default cohort, tests/synth/test_kinetics.py checks it), so
    # PET correlates pet_uptake_correlation / this with expression.
    expression_uptake_24h_correlation: float = 0.75

    @property
    def pet_expression_correlation(self) -> float:
        """Correlation of log PET SUV with log expression that lands `pet_uptake_correlation` (≤ 1)."""
        if not (0.0 < self.expression_uptake_24h_correlation <= 1.0 and -1.0 <= self.pet_uptake_correlation <= 1.0):
            raise InputError(
                "lesions.pet_uptake_correlation must be in [-1, 1] and expression_uptake_24h_correlation in (0, 1], "
                f"got {self.pet_uptake_correlation}, {self.expression_uptake_24h_correlation}"
            )
        return max(-1.0, min(1.0, self.pet_uptake_correlation / self.expression_uptake_24h_correlation))


@dataclass(frozen=True)
class VoidingPrior:
    """Random bladder voiding (docs/synthetic-cohort.md "No shortcuts": voiding is random)."""

    first_void_h: tuple[float, float] = (0.5, 2.5)  # assumption: uniform
    interval_median_h: float = 3.5  # assumption: daytime voiding every 3–4 h
    interval_sigma_log: float = 0.35  # assumption
    residual_fraction_max: float = 0.1  # assumption: post-void residual 0–10 %, uniform
    horizon_h: float = 2000.0  # voids are simulated up to here (12 physical half-lives: nothing left)


@dataclass(frozen=True)
class ResponsePrior:
    """Mechanistic response: LQ cell kill, regrowth, PSA from living burden (docs/synthetic-cohort.md "Response")."""

    # Effective α of mCRPC lesions under 177Lu (per Gy of BED; far below external-beam values, standing in for hypoxia
    # and heterogeneity). Calibrated so the non-response rate (PSA50 at 12 weeks after 2 cycles) is ≈ 50 % (VISION 46 %,
    # TheraP 66 %, LuPSMA 57 % response; docs/synthetic-cohort.md: aim for ≈ 50 %): 0.506 on 3,000.
    alpha_per_gy_median: float = 0.033
    alpha_patient_sigma_log: float = 0.25  # patient-level radiosensitivity spread (assumption)
    alpha_lesion_sigma_log: float = 0.25  # lesion-level (assumption)
    alpha_beta_gy: float = 1.5  # prostate cancer α/β ≈ 1.5 Gy (Brenner & Hall 1999; Fowler 2001)
    t_repair_h: float = 1.5  # assumption: sublethal repair half-time of tumour cells
    # How much the lesion's dose drives its kill: K = α · BED_ref^(1−s) · BED^s. s = 1 is the plain LQ model;
    # s = 0 makes the kill ignore the dose (the dose then carries no information beyond PET); s = 2 doubles
    # the weight of every log-BED difference ("strong"). BED_ref is where the strengths agree: set so the
    # non-response rate is about the same at s = 0, 1 and 2 (0.47, 0.47, 0.51 on the 2,000 benchmark patients).
    dose_response_strength: float = 1.0
    reference_bed_gy: float = 28.0
    # α ∝ (lesion PET expression factor)^γ: PSMA-low lesions respond less than their dose alone says
    # (assumption: PSMA-low clones and FDG-discordant disease). γ and the hidden spreads below (α patient
    # 0.25, changes between cycles 0.6) were calibrated together (benchmarks/response_auc.py, 2,000 patients)
    # to docs/synthetic-cohort.md's targets; with the lesion T_eff σ_log 0.42 they still give PET-only features
    # AUC 0.703 (≈ 0.70), perfect cycle-one dosimetry + PET + baseline PSA 0.806 by logistic regression and 0.814
    # as the dosimetry oracle (≈ 0.80), the dose adding +0.10 over PET-only. Against a 24 h concentration it adds
    # only +0.012: lesion uptake is done by ≈ 10 h, so the 24 h concentration also reads retention and
    # keeps ≈ 80 % of the dose's variance even at wider T_eff spreads (docs/synthetic-cohort.md, "Response").
    # A lesion uptake phase (`LesionPrior.uptake_peak_h_range`, off by default) moves it to +0.014 (peaks
    # 12–48 h) and +0.041 (12–96 h, 70 % patient-level; +0.059 at strength 2), 2,000 patients.
    # γ = 0 does not fix it (+0.006 on 800 patients, PET-only then 0.64), nor does patient-level lesion retention
    # (`LesionPrior.t_eff_patient_variance_fraction` 0.9: +0.010 [0.000, 0.018] on 2,000).
    pet_radiosensitivity_exponent: float = 1.0
    # Truth-map mean dose of a lesion / its sphere self-dose (unit density), by site: ρ_k/ρ of the site's
    # lesion density (bone lesions are dense) and the cross-dose. Measured on 16 `demo` patients with truth
    # maps (396 lesions; `python benchmarks/response_auc.py --dose-agreement`): bone 0.774 (per-lesion
    # spread 9.5 %, the lesion's density), lymph node 1.008, liver 1.011 (spread 0.5 %).
    truth_dose_factor: Mapping[str, float] = field(
        default_factory=lambda: {"bone": 0.774, "lymph_node": 1.008, "liver": 1.011}
    )
    # Untreated growth of living burden: doubling time median 10 weeks (assumption: mCRPC PSA doubling
    # times of a few months), log spread across patients and lesions.
    doubling_time_weeks_median: float = 10.0
    doubling_time_patient_sigma_log: float = 0.5
    growth_lesion_sigma_log: float = 0.2
    # Unknown at cycle 1: change of regrowth rate and of radiosensitivity between cycles (assumption:
    # acquired resistance, repopulation), cycle-2 kinetics (KineticStructurePrior.cycle_*), cycle-2 activity
    # and PSA measurement noise. Sized (with the spreads above) so the full achievable AUC is ≈ 0.92.
    growth_change_sigma_log: float = 0.6
    alpha_change_sigma_log: float = 0.6
    # PSA: living tumour volume × lesion secretion; biological + assay variation per measurement.
    psa_per_ml_median: float = 0.3  # ng/mL per mL: ≈ 90 ng/mL for 300 mL (VISION baseline median ≈ 75; assumption)
    psa_secretion_sigma_log: float = 0.5  # assumption: lesion-specific secretion
    psa_noise_sigma_log: float = 0.2  # assumption: within-patient PSA variation (biological + assay) ≈ 20 %
    response_threshold: float = 0.5  # PCWG3 PSA50: decline ≥ 50 % from baseline
    label_week: float = 12.0  # PCWG3 / NCT07370597: at 12 weeks, after two cycles
    # Monte Carlo draws (fixed per patient) for p_true (over the future) and p_observable (over the hidden
    # biology and the future, importance-weighted by the measured baseline PSA).
    n_draws: int = 400
    n_observable_draws: int = 1000


@dataclass(frozen=True)
class CohortPriors:
    """All population priors of the synthetic cohort."""

    treatment: TreatmentPrior = field(default_factory=TreatmentPrior)
    compartments: CompartmentPrior = field(default_factory=CompartmentPrior)
    organs: tuple[OrganPrior, ...] = field(default_factory=_default_organs)
    structure: KineticStructurePrior = field(default_factory=KineticStructurePrior)
    lesions: LesionPrior = field(default_factory=LesionPrior)
    voiding: VoidingPrior = field(default_factory=VoidingPrior)
    response: ResponsePrior = field(default_factory=ResponsePrior)

    def organ(self, name: str) -> OrganPrior:
        """The organ class called `name` (e.g. ``"kidney"``)."""
        for o in self.organs:
            if o.name == name:
                return o
        raise InputError(f"no organ class {name!r} in the priors; known: {[o.name for o in self.organs]}")


def default_priors() -> CohortPriors:
    """The cohort's default priors (docs/synthetic-cohort.md)."""
    return CohortPriors()


_T = TypeVar("_T")


def replace_priors(priors: _T, overrides: Mapping[str, Any]) -> _T:
    """Copy of a priors dataclass with nested overrides applied (what a YAML config gives).

    Example: ``{"structure": {"shared_variance_fraction": 0.5}}``. Organ classes are addressed by name:
    ``{"organs": {"kidney": {"t_eff_h": 40.0}}}``.
    """
    if not dataclasses.is_dataclass(priors) or isinstance(priors, type):
        raise InputError(f"replace_priors needs a priors dataclass instance, got {type(priors).__name__}")
    names = {f.name for f in dataclasses.fields(priors)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise InputError(f"unknown prior {type(priors).__name__}.{key}; known: {sorted(names)}")
        current = getattr(priors, key)
        if key == "organs" and isinstance(value, Mapping):
            by_name = {o.name: o for o in current}
            unknown = set(value) - set(by_name)
            if unknown:
                raise InputError(f"unknown organ classes {sorted(unknown)}; known: {sorted(by_name)}")
            changes[key] = tuple(replace_priors(o, value[o.name]) if o.name in value else o for o in current)
        elif dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = replace_priors(current, value)
        elif isinstance(value, list) and (isinstance(current, tuple) or current is None):
            # YAML gives lists; ranges are tuples (also where the default is None, e.g. uptake_peak_h_range).
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(priors, **changes)
