"""Generate and write a synthetic cohort in the institutional format, with its truth (DESIGN.md "Data formats").

One patient = one independent random stream (`patient_rng(seed, index)` and sub-streams of the same seed
sequence), so patients can be generated in any order and in parallel and the cohort is byte-identical for the
same configuration and seed. Written:

- ``cohort.yaml``, ``manifest.csv``, ``outcomes.csv`` (the institutional part; passes `validate_cohort`);
- images per patient and cycle under ``SYN0001/c1/`` … (NIfTI, or the SPECT beds as multi-frame NM DICOM
  folders; SPECT in Bq/mL, CT/PET-CT in HU, PET in SUV, label map on the truth grid at the reference time);
- ``truth/``: ``regions.csv`` (both cycles), ``response.csv``, ``single_scan_bound.csv``, ``patients.csv``
  (hidden generator variables) and per patient the true TIA and dose maps of cycle 1 on the fine truth grid.

Nothing outside ``truth/`` carries a generator variable: patient IDs are the index, file names carry only the
role and nominal time point, scan times are jittered, lesions are numbered in random order.
With ``images=False`` only kinetics, the truth tables (region doses from self-dose S values) and the response
are produced: fast enough for hundreds of patients in tests.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text
from ludl.io.cohort import CohortConfig, write_cohort_config
from ludl.io.manifest import OUTCOME_COLUMNS, ManifestRow, write_manifest
from ludl.io.regions import ORGAN_REGIONS
from ludl.synth.activity import build_activity_model, injection_site_index
from ludl.synth.bound import (
    BOUND_COLUMNS,
    SingleScanEstimate,
    reference_kinetics_grid,
    single_scan_estimates,
    summarise_bound,
)
from ludl.synth.kinetics import (
    Lesions,
    PatientKinetics,
    patient_rng,
    sample_lesions,
    sample_patient_kinetics,
    sample_pet_lesion_factor,
)
from ludl.synth.presets import SynthPreset, get_preset
from ludl.synth.priors import CohortPriors, default_priors, replace_priors
from ludl.synth.response import PatientResponse, simulate_response
from ludl.synth.truth import (
    REGION_COLUMNS,
    RegionTruth,
    region_truth,
    regions_from_kinetics,
    tia_map_mbq_h_per_ml,
    true_dose_gy,
)

__all__ = [
    "PatientResult",
    "SynthConfig",
    "SynthSummary",
    "generate_cohort",
    "generate_patient",
    "patient_id",
    "run_synth",
]

FloatArray = npt.NDArray[np.float64]

# Sub-streams of a patient's seed sequence (patient_rng is spawn_key (i,); these are (i, k)).
_STREAM_ANATOMY = 1
_STREAM_IMAGING = 2
_STREAM_PROTOCOL = 3
# Hidden truth of every SPECT bed (truth/<patient>/spect.csv).
_SPECT_TRUTH_COLUMNS = (
    "patient_id",
    "cycle",
    "timepoint_h",
    "bed",
    "fwhm_true_mm",
    "calibration_factor",
    "noise_cv",
    "deadtime_factor",
)
# Fixed calendar: every cycle-1 injection on the same day and hour (dates carry no information).
_INJECTION_DATETIME = datetime(2024, 1, 8, 10, 0, 0)


def patient_id(index: int) -> str:
    """De-identified synthetic patient ID of patient `index` (0-based): ``SYN0001`` …; carries no generator value."""
    return f"SYN{index + 1:04d}"


def _sub_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, stream)))


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic cohort (same config + seed → byte-identical files).

    Args:
        preset: grids, time points and output format (`ludl.synth.presets`).
        n_patients: number of patients.
        seed: cohort seed (≥ 0).
        images: write images and truth maps; False: kinetics, truth tables and response only.
        preview: write PNG montages under ``preview/`` (needs images).
        workers: processes (None: all cores; 1: in-process).
        priors: population priors (COHORT.md), e.g. with another shared-variance fraction.
        name: cohort name in ``cohort.yaml``.
        scan_jitter_fraction: SD of the actual scan start around the nominal time point, as a fraction of it,
            capped at `scan_jitter_max_h` (COHORT.md "No shortcuts": jitter on scan times).
        scan_jitter_max_h: cap of that SD (h).
        second_bed_probability: chance that a time point up to 48 h has a second bed position (half of it later:
            "late time points often one bed", COHORT.md); its start time comes from the imaging's bed plan.
        residual_fraction_max: residual activity in syringe and lines, uniform in [0, this] of the injection.
        extravasation_probability: chance of an extravasation at the injection site.
        extravasation_fraction: range of the extravasated share of the injection.
        pet_days_before: range of days between PET and the cycle-1 injection (COHORT.md: 0–4 weeks).
        pet_tracers: tracers drawn with equal probability (recorded in the manifest).
        bound_timepoints_h: scan times of the single-scan bound (default: the preset's time points).
        single_scan_bound: compute the single-scan bound (≈ 0.1 s per patient; off only for quick statistics).
    """

    preset: SynthPreset
    n_patients: int
    seed: int
    images: bool = True
    preview: bool = False
    workers: int | None = None
    priors: CohortPriors = field(default_factory=default_priors)
    name: str = "synthetic"
    scan_jitter_fraction: float = 0.05
    scan_jitter_max_h: float = 2.0
    second_bed_probability: float = 0.4
    residual_fraction_max: float = 0.02
    extravasation_probability: float = 0.1
    extravasation_fraction: tuple[float, float] = (0.005, 0.05)
    pet_days_before: tuple[float, float] = (1.0, 28.0)
    pet_tracers: tuple[str, ...] = ("68Ga-PSMA-11", "18F-DCFPyL")
    bound_timepoints_h: tuple[float, ...] | None = None
    single_scan_bound: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.n_patients, bool) or not isinstance(self.n_patients, int) or self.n_patients < 1:
            raise InputError(f"n_patients must be a whole number ≥ 1, got {self.n_patients!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a whole number ≥ 0, got {self.seed!r}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be ≥ 1 or None (all cores), got {self.workers}")
        if not 0.0 <= self.second_bed_probability <= 1.0 or not 0.0 <= self.extravasation_probability <= 1.0:
            raise InputError("second_bed_probability and extravasation_probability must be in [0, 1]")
        if not 0.0 <= self.residual_fraction_max < 0.5:
            raise InputError("residual_fraction_max must be in [0, 0.5)")
        if not self.pet_tracers:
            raise InputError("pet_tracers needs at least one tracer name")

    @property
    def bound_times_h(self) -> tuple[float, ...]:
        """Scan times of the single-scan bound."""
        return self.bound_timepoints_h or self.preset.timepoints_h


@dataclass(frozen=True, eq=False)
class PatientResult:
    """What one patient contributes to the cohort-level files (the images are already written)."""

    patient_id: str
    manifest_rows: tuple[ManifestRow, ...]
    region_rows: tuple[RegionTruth, ...]
    psa_baseline: float
    psa_week12: float
    non_response: bool
    p_non_response: float
    latent: Mapping[str, float]
    bound: tuple[SingleScanEstimate, ...]
    lesion_pet_log_factor: FloatArray
    lesion_log_uptake_24h: FloatArray
    seconds: float


@dataclass(frozen=True)
class SynthSummary:
    """What `generate_cohort` produced; `.format()` gives a few lines for the terminal."""

    out_dir: Path
    preset: str
    n_patients: int
    images: bool
    seconds: float
    seconds_per_patient: float
    non_response_rate: float
    achievable_auc: float
    n_lesions_median: float
    n_files: int

    def format(self) -> str:
        """Plain-text summary."""
        return "\n".join(
            [
                f"synthetic cohort written to {self.out_dir}",
                f"  preset            {self.preset} ({'images' if self.images else 'no images'})",
                f"  patients          {self.n_patients} (median {self.n_lesions_median:g} lesions)",
                f"  non-response rate {self.non_response_rate:.2f}   achievable AUC {self.achievable_auc:.3f}",
                f"  time              {self.seconds:.1f} s ({self.seconds_per_patient:.2f} s per patient)",
                f"  files             {self.n_files}",
            ]
        )


# --------------------------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class _Protocol:
    """Per-patient acquisition protocol draws (not generator variables of the biology)."""

    residual_mbq: float
    extravasated_mbq: float
    scan_times_h: tuple[tuple[float, ...], ...]  # per time point: the first bed's start, once per bed
    pet_time_h: float
    pet_tracer: str
    pet_injected_mbq: float
    weight_kg: float


def _draw_protocol(config: SynthConfig, rng: np.random.Generator, systemic_mbq: float) -> _Protocol:
    residual_f = rng.uniform(0.0, config.residual_fraction_max)
    ext_f = rng.uniform(*config.extravasation_fraction) if rng.random() < config.extravasation_probability else 0.0
    times: list[tuple[float, ...]] = []
    previous = 0.0
    for tp in config.preset.timepoints_h:
        sd = min(config.scan_jitter_fraction * tp, config.scan_jitter_max_h)
        start = max(tp + float(np.clip(rng.normal(0.0, sd), -2.0 * sd, 2.0 * sd)), previous + 0.5, 0.25)
        p_second = config.second_bed_probability * (1.0 if tp <= 48.0 else 0.5)
        # One entry per bed; the later beds' own start times come from `plan_beds` (acquisition + pause).
        beds = [start, start] if rng.random() < p_second else [start]
        previous = start + 0.75 * (len(beds) - 1)
        times.append(tuple(round(t, 4) for t in beds))
    tracer = config.pet_tracers[int(rng.integers(0, len(config.pet_tracers)))]
    # 68Ga-PSMA-11 ≈ 2 MBq/kg, 18F-DCFPyL ≈ 4 MBq/kg (≈ 150–330 MBq); weight of an mCRPC patient ≈ 80 ± 12 kg.
    weight = float(np.clip(rng.normal(80.0, 12.0), 50.0, 130.0))
    pet_mbq = weight * (2.0 if "Ga" in tracer else 4.0) * rng.uniform(0.9, 1.1)
    # The kinetics hold the systemic activity; the manifest's injected activity adds extravasation and residual.
    total = systemic_mbq / (1.0 - residual_f - ext_f)
    return _Protocol(
        residual_mbq=round(total * residual_f, 3),
        extravasated_mbq=round(total * ext_f, 3),
        scan_times_h=tuple(times),
        pet_time_h=-24.0 * rng.uniform(*config.pet_days_before),
        pet_tracer=tracer,
        pet_injected_mbq=round(pet_mbq, 1),
        weight_kg=round(weight, 1),
    )


def _injected_mbq(kinetics: PatientKinetics, protocol: _Protocol) -> float:
    return round(kinetics.injected_mbq + protocol.residual_mbq + protocol.extravasated_mbq, 3)


# --------------------------------------------------------------------------------------------- patients


def _log_uptake_24h(kinetics: PatientKinetics) -> FloatArray:
    """log of each lesion's 24 h activity concentration (the 177Lu uptake PET is compared with)."""
    rows = kinetics.lesion_rows
    a = kinetics.activity_mbq(24.0)[rows, 0] / kinetics.volumes_ml[rows]
    out: FloatArray = np.log(np.maximum(a, 1e-300))
    return out


def generate_patient(config: SynthConfig, index: int, out_dir: Path | None = None) -> PatientResult:
    """Generate patient `index` (0-based); with images, write its image and truth files under `out_dir`."""
    t0 = time.perf_counter()
    priors = config.priors
    pid = patient_id(index)
    rng = patient_rng(config.seed, index)
    lesions = sample_lesions(rng, priors)
    anatomy = None
    if config.images:
        anatomy, lesions = _make_patient_anatomy(config, _sub_rng(config.seed, index, _STREAM_ANATOMY), lesions)
    kin = sample_patient_kinetics(
        rng,
        priors,
        lesions.n,
        lesions.volumes_ml,
        lesions.sites,
        organ_volumes_ml=None if anatomy is None else anatomy.organ_volumes_ml,
    )
    pet_factor = sample_pet_lesion_factor(rng, kin, priors)
    response: PatientResponse = simulate_response(rng, kin, priors)
    cycles = [kin] + ([response.cycle2] if config.preset.n_cycles >= 2 else [])
    protocol_rng = _sub_rng(config.seed, index, _STREAM_PROTOCOL)
    protocols = [_draw_protocol(config, protocol_rng, k.injected_mbq) for k in cycles]
    # Extravasation is modelled at cycle 1 only (the later cycles' activity maps hold none).
    protocols[1:] = [dataclasses.replace(p, extravasated_mbq=0.0) for p in protocols[1:]]
    if anatomy is None or out_dir is None:
        region_rows = [row for k in cycles for row in regions_from_kinetics(pid, k)]
        manifest_rows: list[ManifestRow] = []
    else:
        manifest_rows, region_rows = _write_patient_images(
            config,
            out_dir,
            pid,
            anatomy,
            cycles,
            protocols,
            pet_factor,
            _sub_rng(config.seed, index, _STREAM_IMAGING),
        )
    bound: tuple[SingleScanEstimate, ...] = ()
    if config.single_scan_bound:
        ref_kin = reference_kinetics_grid(kin, priors)
        bound = tuple(
            single_scan_estimates(kin, priors, t, pet_factor, reference=ref_kin) for t in config.bound_times_h
        )
    latent = {
        "t_eff_patient_z": float(kin.latent["t_eff_patient_z"]),
        "renal_z": float(kin.latent["renal_z"]),
        "n_lesions": float(kin.lesion_rows.size),
        "tumour_volume_ml": float(np.sum(kin.volumes_ml[kin.lesion_rows])),
        "systemic_mbq": float(kin.injected_mbq),
        "alpha_per_gy": float(response.alpha_per_gy),
    }
    return PatientResult(
        patient_id=pid,
        manifest_rows=tuple(manifest_rows),
        region_rows=tuple(region_rows),
        psa_baseline=response.psa_baseline,
        psa_week12=response.psa_week12,
        non_response=response.non_response,
        p_non_response=response.p_non_response,
        latent=latent,
        bound=bound,
        lesion_pet_log_factor=np.log(pet_factor),
        lesion_log_uptake_24h=_log_uptake_24h(kin),
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------------------------- images


# Label values of the written label maps (one table for the whole cohort, as cohort.yaml needs): organs in
# DESIGN.md order, lesion_NNN = 100 + NNN (individual lesions, numbered in random order).
_ORGAN_LABELS: tuple[str, ...] = (*ORGAN_REGIONS, "red_marrow")
_LESION_LABEL_OFFSET = 100
# Normal-tissue PET SUVmean for 18F-DCFPyL (Li 2017 JNM: kidney 20 ± 4.6, parotid 9 ± 2, submandibular 9.5 ± 2.3,
# lacrimal 6.5 ± 1.8, liver 5.0 ± 0.7, spleen 4.0 ± 1.5); the other tissues are assumptions (blood pool 1.5,
# marrow 1.2, bone 0.8, bowel 2.5, urine 15, lung 0.3, soft tissue 0.6). Tumour SUVmean median 7.6 (Kuo 2024).
_PET_SUV: Mapping[str, tuple[float, float]] = {
    "kidney": (20.0, 4.6),
    "parotid": (9.0, 2.0),
    "submandibular": (9.5, 2.3),
    "lacrimal": (6.5, 1.8),
    "liver": (5.0, 0.7),
    "spleen": (4.0, 1.5),
    "red_marrow": (1.2, 0.3),
}
_PET_BACKGROUND_SUV: Mapping[str, float] = {
    "blood_pool": 1.5,
    "marrow_other": 1.2,
    "bone": 0.8,
    "bowel": 2.5,
    "bladder": 15.0,
    "lung": 0.3,
    "rest_of_body": 0.6,
}
_PET_TUMOUR_SUV = 7.6
# 68Ga-PSMA-11 vs 18F-DCFPyL: SUVs differ 2–3× between tracers at SUVmax (COHORT.md); SUVmean ratio assumed 0.7
# for normal organs and 0.9 for tumour, so models must normalise per tracer.
_GA_ORGAN_FACTOR = 0.7
_GA_TUMOUR_FACTOR = 0.9
# Correlation of an organ's PET SUV with its 177Lu uptake factor (assumption: PET shows expression).
_PET_ORGAN_UPTAKE_CORRELATION = 0.7


def _cohort_label_values(max_lesions: int = 150) -> dict[str, int]:
    values = {name: i + 1 for i, name in enumerate(_ORGAN_LABELS)}
    values.update({f"lesion_{j:03d}": _LESION_LABEL_OFFSET + j for j in range(1, max_lesions + 1)})
    return values


@dataclass(frozen=True, eq=False)
class _PatientAnatomy:
    anatomy: Any
    organ_volumes_ml: dict[str, float]


def _label_volumes_ml(labels: Any, label_values: Mapping[str, int]) -> dict[str, float]:
    lab = np.asarray(labels.array)
    counts = np.bincount(lab.ravel().astype(np.int64) - int(lab.min()))
    v_ml = float(np.prod(labels.spacing_zyx_mm)) * 1e-3
    out = {}
    for name, value in label_values.items():
        k = int(value) - int(lab.min())
        out[name] = float(counts[k]) * v_ml if 0 <= k < counts.size else 0.0
    return out


def _make_patient_anatomy(config: SynthConfig, rng: np.random.Generator, lesions: Lesions) -> tuple[Any, Lesions]:
    """The patient's anatomy on the truth grid (S1's `make_anatomy`) and the lesions as placed (realised volumes)."""
    from ludl.synth.anatomy import AnatomySpec, make_anatomy

    p = config.preset
    spec = AnatomySpec(shape_zyx=p.truth_shape_zyx, spacing_zyx_mm=(p.truth_spacing_mm,) * 3, extent=p.extent)
    anatomy = make_anatomy(rng, spec, lesions)
    volumes = _label_volumes_ml(anatomy.labels, anatomy.label_values)
    realised = np.array(
        [volumes.get(f"lesion_{j + 1:03d}", 0.0) or float(lesions.volumes_ml[j]) for j in range(lesions.n)]
    )
    organ_volumes = {r: volumes[r] for o in config.priors.organs for r in o.regions if volumes.get(r, 0.0) > 0.0}
    placed = Lesions(volumes_ml=np.clip(realised, 1e-3, 1e5), sites=lesions.sites)
    return _PatientAnatomy(anatomy, organ_volumes), placed


def _spect_spec(preset: SynthPreset) -> Any:
    from ludl.synth.imaging import SpectSpec

    nz, ny, nx = preset.spect_shape_zyx
    bed = math.ceil(0.65 * nz)
    return SpectSpec(
        matrix_xy=max(ny, nx),
        spacing_mm=preset.spect_spacing_mm,
        bed_slices=bed,
        overlap_slices=max(0, 2 * bed - nz),
        fwhm_nominal_mm=preset.fwhm_mm,
    )


def _pet_suv_truth(
    anatomy: Any,
    kinetics: PatientKinetics,
    priors: CohortPriors,
    pet_factor: FloatArray,
    tracer: str,
    rng: np.random.Generator,
) -> Any:
    """True SUV map on the truth grid: tissue SUVs × the anatomy's PET texture (`pet_weight`)."""
    lab = np.asarray(anatomy.labels.array)
    values: Mapping[str, int] = anatomy.label_values
    ga = "Ga" in tracer
    lut = np.zeros(int(lab.max()) + 1, dtype=np.float64)
    for name, suv in _PET_BACKGROUND_SUV.items():
        if name in values:
            lut[values[name]] = suv * (_GA_ORGAN_FACTOR if ga else 1.0)
    log_u = np.asarray(kinetics.latent["uptake_log_factor"], dtype=np.float64)
    st = priors.structure
    rho = _PET_ORGAN_UPTAKE_CORRELATION
    for o in priors.organs:
        median, sd = _PET_SUV[o.name]
        s_pet = math.log1p((sd / median) ** 2) ** 0.5
        s_u = o.uptake_sigma_log_effective(st.uptake_t_eff_correlation, st.organ_dose_other_sigma_log)
        for r in o.regions:
            z_u = log_u[kinetics.index(r) - 1] / s_u
            suv = median * math.exp(s_pet * (rho * z_u + math.sqrt(1 - rho**2) * rng.standard_normal()))
            if r in values:
                lut[values[r]] = suv * (_GA_ORGAN_FACTOR if ga else 1.0)
    for j, r in enumerate(kinetics.lesion_regions):
        if r in values:
            lut[values[r]] = _PET_TUMOUR_SUV * float(pet_factor[j]) * (_GA_TUMOUR_FACTOR if ga else 1.0)
    weight = np.asarray(anatomy.pet_weight, dtype=np.float64).reshape(lab.shape)
    suv_map = lut[np.clip(lab, 0, None)] * weight
    return anatomy.labels.with_array(suv_map.astype(np.float32), unit="SUV")


def _written_labels(anatomy: Any) -> Any:
    """The anatomy's labels remapped to the cohort's label values (organs, red marrow, lesions; rest 0)."""
    lab = np.asarray(anatomy.labels.array)
    cohort = _cohort_label_values(10_000)
    lut = np.zeros(int(lab.max()) + 1, dtype=np.int16)
    for name, value in anatomy.label_values.items():
        if name in cohort and 0 <= value < lut.size:
            lut[value] = cohort[name]
    return anatomy.labels.with_array(lut[np.clip(lab, 0, None)], unit="label")


def _fov_fractions(labels: Any, label_values: Mapping[str, int], fov: Any) -> dict[str, float]:
    lab = np.asarray(labels.array)
    seen = np.asarray(fov.array, dtype=bool)
    out: dict[str, float] = {}
    for name, value in label_values.items():
        mask = lab == value
        n = int(mask.sum())
        if n:
            out[name] = float(seen[mask].sum()) / n
    out["body"] = float(seen[lab > 0].sum()) / max(int((lab > 0).sum()), 1)
    return out


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _write_patient_images(
    config: SynthConfig,
    out: Path,
    pid: str,
    patient: _PatientAnatomy,
    cycles: Sequence[PatientKinetics],
    protocols: Sequence[_Protocol],
    pet_factor: FloatArray,
    rng: np.random.Generator,
) -> tuple[list[ManifestRow], list[RegionTruth]]:
    """Simulate and write one patient's images (cycle 1; cycle 2 too with `cycle2_images`) and truth maps.

    Returns the patient's manifest rows and truth-table rows.
    """
    from ludl.io.nifti import write_nifti
    from ludl.synth.dicom import write_nm_spect
    from ludl.synth.imaging import (
        PetSpec,
        PoseSpec,
        ct_grid,
        pet_grid,
        plan_beds,
        random_pose,
        sample_spect_system,
        simulate_ct,
        simulate_pet,
        simulate_spect,
    )
    from ludl.synth.pose import Pose

    anatomy = patient.anatomy
    preset = config.preset
    labels = anatomy.labels
    values: Mapping[str, int] = anatomy.label_values
    folder = out / pid
    truth_dir = out / "truth" / pid
    folder.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    kin1 = cycles[0]
    protocol = protocols[0]
    site = np.zeros(0, dtype=np.intp)
    if protocol.extravasated_mbq > 0:
        centre = dict(getattr(anatomy, "landmarks_xyz_mm", {}) or {}).get("injection_site")
        site = injection_site_index(labels, rng, centre_xyz_mm=centre)
    # An injection site outside the truth grid (arm outside the crop) keeps its activity off the map.
    ext_mbq = protocol.extravasated_mbq if site.size else 0.0
    region_rows: list[RegionTruth] = []
    models = []
    for kin in cycles:
        model = build_activity_model(
            kin,
            labels,
            values,
            anatomy.uptake_weight,
            anatomy.clearance_shift_per_h,
            extravasated_mbq=ext_mbq if kin is kin1 else 0.0,
            extravasation_index=site,
        )
        models.append(model)
    spect_spec = _spect_spec(preset)
    system = sample_spect_system(rng, spect_spec)
    pose_spec = PoseSpec()
    injected = _injected_mbq(kin1, protocol)
    common: dict[str, Any] = {
        "patient_id": pid,
        "cycle": 1,
        "injected_mbq": injected,
        "residual_mbq": protocol.residual_mbq,
        "extravasated_mbq": protocol.extravasated_mbq,
        "injection_datetime": _INJECTION_DATETIME,
    }
    rows: list[ManifestRow] = []
    # PET and its CT: weeks before cycle 1, own grid and pose.
    pet_spec = PetSpec(spacing_mm=preset.pet_spacing_mm)
    pet_pose = random_pose(rng, pose_spec, labels)
    grid_pet = pet_grid(labels, pet_spec, rng)
    suv_truth = _pet_suv_truth(anatomy, kin1, config.priors, pet_factor, protocol.pet_tracer, rng)
    pet = simulate_pet(suv_truth, pet_spec, rng, pet_pose, grid=grid_pet)
    pet_ct = simulate_ct(anatomy.hu, grid_pet, pet_pose, rng)
    pet_extra: dict[str, Any] = {
        "time_h": round(protocol.pet_time_h, 3),
        "pet_tracer": protocol.pet_tracer,
        "pet_injected_mbq": protocol.pet_injected_mbq,
        "weight_kg": protocol.weight_kg,
    }
    (folder / "c1").mkdir(parents=True, exist_ok=True)
    write_nifti(pet, folder / "c1" / "pet.nii.gz", dtype=np.float32)
    write_nifti(pet_ct, folder / "c1" / "pet_ct.nii.gz", dtype=np.int16)
    rows.append(ManifestRow(role="pet", path=_rel(folder / "c1" / "pet.nii.gz", out), **common, **pet_extra))
    rows.append(ManifestRow(role="pet_ct", path=_rel(folder / "c1" / "pet_ct.nii.gz", out), **common, **pet_extra))
    fov_reference = None
    scan_cells: list[list[str]] = []
    image_cycles = [0] + ([1] if preset.cycle2_images and len(cycles) > 1 else [])
    interval_weeks = config.priors.treatment.cycle_interval_weeks
    for c in image_cycles:
        kin_c, protocol_c = cycles[c], protocols[c]
        cdir = folder / f"c{c + 1}"
        cdir.mkdir(parents=True, exist_ok=True)
        common_c: dict[str, Any] = {
            **common,
            "cycle": c + 1,
            "injected_mbq": _injected_mbq(kin_c, protocol_c),
            "residual_mbq": protocol_c.residual_mbq,
            "extravasated_mbq": protocol_c.extravasated_mbq,
            "injection_datetime": _INJECTION_DATETIME + timedelta(weeks=interval_weeks * c),
        }
        for tp, times in zip(preset.timepoints_h, protocol_c.scan_times_h, strict=True):
            reference = math.isclose(tp, preset.reference_timepoint_h)
            pose = Pose.identity() if reference else random_pose(rng, pose_spec, labels)
            n_beds = len(times)
            centre = None
            if n_beds == 1 and "kidney_left" in values:
                kz = np.flatnonzero(np.any(np.asarray(labels.array) == values["kidney_left"], axis=(1, 2)))
                if kz.size:
                    centre = float(labels.index_to_physical([float(kz.mean()), 0.0, 0.0])[2])
            beds = plan_beds(rng, spect_spec, times[0], labels, n_beds=n_beds, axial_centre_mm=centre)
            maps = [models[c].activity_bq_per_ml(b.start_h) for b in beds]
            scan = simulate_spect(maps, anatomy.hu, spect_spec, rng, pose, beds=beds, system=system)
            ct = simulate_ct(anatomy.hu, ct_grid(scan.grid), pose, rng)
            tag = f"{tp:g}h"
            for b, image in enumerate(scan.beds):
                stem = f"spect_{tag}" if n_beds == 1 else f"spect_{tag}_bed{b + 1}"
                fields = scan.manifest_fields(b)
                bed_image = image.activity_bq_per_ml(scan.sensitivity_cps_per_mbq)
                if preset.image_format == "dicom":
                    name = stem  # a DICOM folder holding one multi-frame NM file
                    write_nm_spect(
                        bed_image,
                        cdir / stem / "nm.dcm",
                        patient_id=pid,
                        uid_seed=f"{config.seed}/{pid}/c{c + 1}/{stem}",
                        study_key=f"{config.seed}/{pid}/c{c + 1}/{tag}",
                        acquisition=common_c["injection_datetime"] + timedelta(hours=float(fields["time_h"])),
                        acquisition_s=float(fields["acquisition_s"]),
                        frame_of_reference_key=f"{config.seed}/{pid}/c{c + 1}/{tag}",
                    )
                else:
                    name = f"{stem}.nii.gz"
                    write_nifti(bed_image, cdir / name, dtype=np.float32)
                rows.append(
                    ManifestRow(
                        role="spect",
                        timepoint_h=tp,
                        time_h=round(float(fields["time_h"]), 4),
                        bed=None if n_beds == 1 else b + 1,
                        path=_rel(cdir / name, out),
                        acquisition_s=float(fields["acquisition_s"]),
                        sensitivity_cps_per_mbq=float(fields["sensitivity_cps_per_mbq"]),
                        fwhm_mm=float(fields["fwhm_mm"]),
                        deadtime_factor=round(float(fields["deadtime_factor"]), 5),
                        **common_c,
                    )
                )
                scan_cells.append(
                    [
                        pid,
                        str(c + 1),
                        f"{tp:g}",
                        str(b + 1),
                        _num(scan.truth.fwhm_true_mm),
                        _num(scan.truth.calibration_factor),
                        _num(scan.truth.noise_cv[b]),
                        _num(float(fields["deadtime_factor"])),
                    ]
                )
            write_nifti(ct, cdir / f"ct_{tag}.nii.gz", dtype=np.int16)
            rows.append(
                ManifestRow(
                    role="ct",
                    timepoint_h=tp,
                    time_h=round(times[0], 4),
                    path=_rel(cdir / f"ct_{tag}.nii.gz", out),
                    **common_c,
                )
            )
            if reference and c == 0:
                fov_reference = scan.fov_mask
            if reference:
                write_nifti(_written_labels(anatomy), cdir / f"labels_{tag}.nii.gz", dtype=np.int16)
                rows.append(
                    ManifestRow(
                        role="mask",
                        timepoint_h=tp,
                        time_h=round(times[0], 4),
                        path=_rel(cdir / f"labels_{tag}.nii.gz", out),
                        **common_c,
                    )
                )
    fractions = _fov_fractions(labels, values, fov_reference) if fov_reference is not None else None
    for c, (kin, model) in enumerate(zip(cycles, models, strict=True)):
        tia = tia_map_mbq_h_per_ml(model)
        dose = true_dose_gy(tia, anatomy.density_g_per_ml)
        region_rows.extend(region_truth(pid, kin, labels, values, dose, tia, fractions))
        if c == 0:
            write_nifti(tia, truth_dir / "tia_c1.nii.gz", dtype=np.float32)
            write_nifti(dose, truth_dir / "dose_c1.nii.gz", dtype=np.float32)
            write_nifti(anatomy.labels, truth_dir / "labels_c1.nii.gz", dtype=np.int16)
    atomic_write_text(
        truth_dir / "spect.csv",
        _csv_text(
            _SPECT_TRUTH_COLUMNS,
            scan_cells,
        ),
    )
    return rows, region_rows


# --------------------------------------------------------------------------------------------- writing


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _num(x: float) -> str:
    return f"{x:.10g}"


def _auc(scores: FloatArray, labels: npt.NDArray[np.bool_]) -> float:
    """ROC AUC by the rank-sum (Mann–Whitney) formula, ties counted half; NaN without both classes."""
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def _cohort_config(config: SynthConfig, label_values: Mapping[str, int] | None) -> CohortConfig:
    return CohortConfig(
        name=config.name,
        nuclide="Lu-177",
        description=f"ludl synthetic cohort, preset {config.preset.name}",
        sensitivity_cps_per_mbq=9.4,  # PHYSICS.md §6 system volume sensitivity (only used for count images)
        fwhm_mm=config.preset.fwhm_mm,
        labels=dict(label_values or {}),
    )


def _write_cohort_files(config: SynthConfig, out: Path, results: Sequence[PatientResult]) -> int:
    """Write the cohort-level files; returns how many files were written."""
    labels = _cohort_label_values(config.priors.lesions.max_lesions) if config.images else None
    write_cohort_config(_cohort_config(config, labels), out / "cohort.yaml")
    n = 1
    rows = [r for res in results for r in res.manifest_rows]
    if rows:
        write_manifest(rows, out / "manifest.csv")
        n += 1
    outcomes = [
        [res.patient_id, _num(res.psa_baseline), _num(res.psa_week12), "1" if res.non_response else "0"]
        for res in results
    ]
    atomic_write_text(out / "outcomes.csv", _csv_text(OUTCOME_COLUMNS, outcomes))
    truth = out / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    region_cells = [row.cells() for res in results for row in res.region_rows]
    atomic_write_text(truth / "regions.csv", _csv_text(REGION_COLUMNS, region_cells))
    response_cells = [[res.patient_id, _num(res.p_non_response)] for res in results]
    atomic_write_text(truth / "response.csv", _csv_text(("patient_id", "p_non_response"), response_cells))
    latent_keys = tuple(results[0].latent)
    latent_cells = [[res.patient_id, *(_num(res.latent[k]) for k in latent_keys)] for res in results]
    atomic_write_text(truth / "patients.csv", _csv_text(("patient_id", *latent_keys), latent_cells))
    lesion_cells = [
        [res.patient_id, f"lesion_{j + 1:03d}", _num(p), _num(u)]
        for res in results
        for j, (p, u) in enumerate(zip(res.lesion_pet_log_factor, res.lesion_log_uptake_24h, strict=True))
    ]
    atomic_write_text(
        truth / "lesion_pet.csv",
        _csv_text(("patient_id", "region", "log_pet_factor", "log_uptake_24h_mbq_per_ml"), lesion_cells),
    )
    if config.single_scan_bound:
        bound_rows = summarise_bound(
            {res.patient_id: res.bound for res in results},
            config.bound_times_h,
            config.priors.structure.shared_variance_fraction,
            seed=config.seed,
        )
        atomic_write_text(truth / "single_scan_bound.csv", _csv_text(BOUND_COLUMNS, [b.cells() for b in bound_rows]))
    return n + 6


def _worker_init() -> None:
    # One BLAS/FFT thread per process: patients are the parallel unit.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _one(args: tuple[SynthConfig, int, Path]) -> PatientResult:
    config, index, out = args
    return generate_patient(config, index, out)


def generate_cohort(config: SynthConfig, out_dir: str | os.PathLike[str]) -> SynthSummary:
    """Generate every patient (in parallel) and write the cohort folder `out_dir` (created; files replaced)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = config.workers or os.cpu_count() or 1
    workers = max(1, min(workers, config.n_patients))
    jobs = [(config, i, out) for i in range(config.n_patients)]
    from tqdm import tqdm

    progress = tqdm(total=config.n_patients, desc="synth", unit="patient", disable=not sys.stderr.isatty())
    results: list[PatientResult] = []
    try:
        if workers == 1:
            for job in jobs:
                results.append(_one(job))
                progress.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
                for res in pool.map(_one, jobs, chunksize=max(1, config.n_patients // (4 * workers))):
                    results.append(res)
                    progress.update(1)
    finally:
        progress.close()
    n_files = _write_cohort_files(config, out, results)
    if config.images and config.preview:
        from ludl.synth.preview import write_previews

        n_files += write_previews(out, [r.patient_id for r in results])
    n_files += sum(len(r.manifest_rows) for r in results)
    labels = np.array([r.non_response for r in results], dtype=bool)
    probs = np.array([r.p_non_response for r in results])
    seconds = time.perf_counter() - t0
    return SynthSummary(
        out_dir=out,
        preset=config.preset.name,
        n_patients=config.n_patients,
        images=config.images,
        seconds=seconds,
        seconds_per_patient=float(np.mean([r.seconds for r in results])),
        non_response_rate=float(labels.mean()),
        achievable_auc=_auc(probs, labels),
        n_lesions_median=float(np.median([r.latent["n_lesions"] for r in results])),
        n_files=n_files,
    )


# --------------------------------------------------------------------------------------------- entry point

_TOP_LEVEL_OVERRIDES = ("shared_variance_fraction", "timepoints_h", "activity_mbq", "max_lesions", "image_format")


def make_config(
    preset: str,
    n_patients: int,
    seed: int,
    *,
    images: bool = True,
    preview: bool = False,
    workers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SynthConfig:
    """Build a `SynthConfig` from a preset name and the override mapping of `configs/synth.yaml`.

    `overrides` keys: ``shared_variance_fraction``, ``timepoints_h``, ``activity_mbq``, ``max_lesions``,
    ``image_format`` (shortcuts; None = keep), ``preset`` (any `SynthPreset` field), ``priors`` (nested
    `CohortPriors` overrides) and ``protocol`` (any other `SynthConfig` field).
    """
    ov = dict(overrides or {})
    unknown = set(ov) - {*_TOP_LEVEL_OVERRIDES, "preset", "priors", "protocol"}
    if unknown:
        raise InputError(
            f"unknown synth overrides {sorted(unknown)}; "
            f"use {', '.join(_TOP_LEVEL_OVERRIDES)}, preset, priors or protocol"
        )
    preset_ov = dict(ov.get("preset") or {})
    for key in ("timepoints_h", "image_format"):
        if ov.get(key) is not None:
            preset_ov[key] = ov[key]
    priors_ov: dict[str, Any] = {k: dict(v) for k, v in (ov.get("priors") or {}).items()}
    if ov.get("shared_variance_fraction") is not None:
        priors_ov.setdefault("structure", {})["shared_variance_fraction"] = float(ov["shared_variance_fraction"])
    if ov.get("activity_mbq") is not None:
        priors_ov.setdefault("treatment", {})["activity_mbq"] = float(ov["activity_mbq"])
    chosen = get_preset(preset, preset_ov)
    max_lesions = int(ov["max_lesions"]) if ov.get("max_lesions") is not None else chosen.max_lesions
    priors_ov.setdefault("lesions", {}).setdefault("max_lesions", max_lesions)
    priors = replace_priors(default_priors(), priors_ov)
    protocol: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in (ov.get("protocol") or {}).items()
    }
    return SynthConfig(
        preset=chosen,
        n_patients=int(n_patients),
        seed=int(seed),
        images=images,
        preview=preview,
        workers=workers,
        priors=priors,
        **protocol,
    )


def run_synth(
    preset: str,
    n_patients: int,
    seed: int,
    out: Path,
    images: bool = True,
    preview: bool = False,
    workers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SynthSummary:
    """The `ludl synth` job: build the configuration and generate the cohort into `out`."""
    config = make_config(preset, n_patients, seed, images=images, preview=preview, workers=workers, overrides=overrides)
    return generate_cohort(config, out)
