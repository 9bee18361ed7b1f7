"""SPECT protocol (`SpectSpec`), the patient's camera (`SpectSystem`) and the records of a simulated scan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.io.nm import counts_to_bq_per_ml

__all__ = [
    "SpectBed",
    "SpectBedImage",
    "SpectScan",
    "SpectSpec",
    "SpectSystem",
    "SpectTruth",
    "sample_spect_system",
]


@dataclass(frozen=True)
class SpectSpec:
    """A post-therapy 177Lu SPECT protocol and system (docs/synthetic-cohort.md SPECT/CT table).

    Args:
        matrix_xy: transaxial matrix (square), voxels.
        spacing_mm: isotropic voxel size, mm (128², 4.8 mm in the multicentre survey).
        bed_slices: slices per bed position (≈ 390 mm camera axial FOV / 4.8 mm).
        overlap_slices: slices shared by neighbouring beds.
        n_beds: default number of bed positions (1 or 2; `plan_beds` may override per scan).
        acquisition_s: acquisition time one bed's reconstruction stands for, s (a manifest field, docs/physics.md §6).
        bed_gap_min: (low, high) pause between the end of one bed and the start of the next, min (uniform).
        axial_jitter_mm: uniform ± jitter of the bed block's axial centre, mm (positioning by the technologist).
        fwhm_nominal_mm: the resolution the site states (written to the manifest), mm.
        fwhm_factor_range: the true FWHM at the reference depth is nominal × U(low, high)
            (0.95–1.15: docs/synthetic-cohort.md).
        depth_gain_per_100mm: relative FWHM increase per 100 mm of depth below the body surface (collimator
            resolution worsens with distance; assumption within the 10–15 mm clinical range).
        depth_reference_mm: depth at which the FWHM equals the realised system FWHM, mm.
        depth_bands: number of depth nodes of the depth-dependent blur (≥ 1; 1 = depth-independent).
        sensitivity_cps_per_mbq: nominal system volume sensitivity, cps/MBq (5.7–10.8 published; manifest value).
        calibration_error_sd: relative SD of the true sensitivity around the nominal ("a few percent").
        calibration_error_max: clip of the relative calibration error.
        deadtime_per_mbq: dead-time factor = 1 + this × activity in the patient (MBq) at the bed's start.
        noise_cv_reference: voxel CV of the reconstruction at `noise_reference_counts` expected counts per bed.
        noise_reference_counts: expected counts per bed at which the CV is `noise_cv_reference`.
        noise_cv_range: (low, high) clip of the voxel CV.
        noise_correlation_fwhm_mm: FWHM of the noise texture (OSEM with post-filter), mm.
        body_threshold_hu: CT threshold of the body outline used for the depth, HU.
    """

    matrix_xy: int = 128
    spacing_mm: float = 4.8
    bed_slices: int = 81
    overlap_slices: int = 8
    n_beds: int = 1
    acquisition_s: float = 1200.0
    bed_gap_min: tuple[float, float] = (1.0, 8.0)
    axial_jitter_mm: float = 20.0
    fwhm_nominal_mm: float = 12.0
    fwhm_factor_range: tuple[float, float] = (0.95, 1.15)
    depth_gain_per_100mm: float = 0.15
    depth_reference_mm: float = 60.0
    depth_bands: int = 3
    sensitivity_cps_per_mbq: float = 9.4
    calibration_error_sd: float = 0.03
    calibration_error_max: float = 0.08
    # Assumption: ≈ 6 % count loss at 4 h after 7.4 GBq (≈ 4 GBq still in the patient), the order reported for
    # 177Lu SPECT at day-0 activities (Uribe et al. 2018 EJNMMI Phys 5:2; losses grow with the activity present).
    deadtime_per_mbq: float = 1.5e-5
    # Voxel CV 10–20 % in organs of clinical reconstructions (docs/synthetic-cohort.md "SPECT/CT (post-therapy 177Lu)");
    # ≈ 14 % at ≈ 2·10⁷ counts per bed (≈ 1.8 GBq in the field of view, 9.4 cps/MBq, 20 min: a 24 h scan). The cap
    # stands for longer late acquisitions / stronger filtering that clinics use when counts are low.
    noise_cv_reference: float = 0.14
    noise_reference_counts: float = 2.0e7
    noise_cv_range: tuple[float, float] = (0.06, 0.25)
    noise_correlation_fwhm_mm: float = 9.0
    body_threshold_hu: float = -500.0

    def __post_init__(self) -> None:
        if self.matrix_xy < 4 or self.bed_slices < 4:
            raise InputError(f"SpectSpec: matrix_xy and bed_slices must be ≥ 4, got {self.matrix_xy}/{self.bed_slices}")
        if not 0 <= self.overlap_slices < self.bed_slices:
            raise InputError(f"SpectSpec.overlap_slices must lie in [0, bed_slices), got {self.overlap_slices}")
        if self.n_beds < 1:
            raise InputError(f"SpectSpec.n_beds must be ≥ 1, got {self.n_beds}")
        for name in ("spacing_mm", "acquisition_s", "fwhm_nominal_mm", "sensitivity_cps_per_mbq"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"SpectSpec.{name} must be > 0, got {value}")
        lo, hi = self.fwhm_factor_range
        if not 0 < lo <= hi:
            raise InputError(f"SpectSpec.fwhm_factor_range must satisfy 0 < low ≤ high, got {self.fwhm_factor_range}")
        if self.depth_bands < 1:
            raise InputError(f"SpectSpec.depth_bands must be ≥ 1, got {self.depth_bands}")
        if not 0 < self.noise_cv_range[0] <= self.noise_cv_range[1]:
            raise InputError(f"SpectSpec.noise_cv_range must satisfy 0 < low ≤ high, got {self.noise_cv_range}")


@dataclass(frozen=True)
class SpectSystem:
    """The realised camera of one patient (hidden truth): true resolution and true sensitivity."""

    fwhm_true_mm: float
    sensitivity_true_cps_per_mbq: float
    sensitivity_nominal_cps_per_mbq: float

    @property
    def calibration_factor(self) -> float:
        """True / nominal sensitivity = activity read with the nominal calibration / true activity."""
        return self.sensitivity_true_cps_per_mbq / self.sensitivity_nominal_cps_per_mbq


def sample_spect_system(rng: np.random.Generator, spec: SpectSpec) -> SpectSystem:
    """Draw the true FWHM (nominal × U(range)) and the true sensitivity (nominal × (1 + clipped Gaussian error)).

    Draw one per patient (one camera for all time points) and pass it to `simulate_spect`.
    """
    factor = float(rng.uniform(*spec.fwhm_factor_range))
    error = float(
        np.clip(rng.normal(0.0, spec.calibration_error_sd), -spec.calibration_error_max, spec.calibration_error_max)
    )
    return SpectSystem(
        fwhm_true_mm=spec.fwhm_nominal_mm * factor,
        sensitivity_true_cps_per_mbq=spec.sensitivity_cps_per_mbq * (1.0 + error),
        sensitivity_nominal_cps_per_mbq=spec.sensitivity_cps_per_mbq,
    )


@dataclass(frozen=True, eq=False)
class SpectBed:
    """One planned bed position: acquisition order `index`, start time and its grid in the scanner frame.

    Args:
        index: acquisition order (0 first).
        start_h: acquisition start after the 177Lu injection, h (the manifest's `time_h` of this bed).
        acquisition_s: acquisition time the reconstruction stands for, s.
        first_slice: position of the bed's first slice on the scan's common slice lattice.
        grid: an empty Volume with the bed's geometry (scanner frame, identity direction).
    """

    index: int
    start_h: float
    acquisition_s: float
    first_slice: int
    grid: Volume


@dataclass(frozen=True, eq=False)
class SpectBedImage:
    """One reconstructed bed: counts on the bed grid plus what the manifest row of that bed needs."""

    bed: SpectBed
    counts: Volume  # unit "counts", float32, on bed.grid
    deadtime_factor: float  # true / observed count rate (≥ 1): a manifest field

    def activity_bq_per_ml(self, sensitivity_cps_per_mbq: float) -> Volume:
        """Counts calibrated as a clinic would with the given (nominal) sensitivity, Bq/mL."""
        values = counts_to_bq_per_ml(
            self.counts.array,
            self.counts.voxel_volume_ml,
            acquisition_s=self.bed.acquisition_s,
            sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
            deadtime_factor=self.deadtime_factor,
        )
        return self.counts.with_array(values.astype(np.float32), unit="Bq/mL")


@dataclass(frozen=True)
class SpectTruth:
    """Hidden truth of one SPECT scan (write to truth/ only, never to images or the manifest)."""

    fwhm_true_mm: float
    fwhm_depth_gain_per_100mm: float
    depth_reference_mm: float
    sensitivity_true_cps_per_mbq: float
    calibration_factor: float
    noise_cv: tuple[float, ...]  # per bed
    expected_counts: tuple[float, ...]  # per bed, before noise
    patient_activity_mbq: tuple[float, ...]  # per bed start: what drives the dead time
    pose: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "fwhm_true_mm": self.fwhm_true_mm,
            "fwhm_depth_gain_per_100mm": self.fwhm_depth_gain_per_100mm,
            "depth_reference_mm": self.depth_reference_mm,
            "sensitivity_true_cps_per_mbq": self.sensitivity_true_cps_per_mbq,
            "calibration_factor": self.calibration_factor,
            "noise_cv": list(self.noise_cv),
            "expected_counts": list(self.expected_counts),
            "patient_activity_mbq": list(self.patient_activity_mbq),
            "pose": dict(self.pose),
        }


@dataclass(frozen=True, eq=False)
class SpectScan:
    """One simulated SPECT time point.

    Attributes:
        beds: per bed, in acquisition order: counts on the bed's own grid, start time, acquisition time, dead time.
        activity_bq_per_ml: the beds calibrated with the NOMINAL sensitivity and their dead-time factors and stitched
            on the common lattice (overlap slices from the bed whose centre is nearest, as `ludl.io.read_nm` does);
            `meta["bed_index_per_slice"]` lists the bed of each slice.
        bed_index_per_slice: the same as an array.
        fov_mask: bool Volume on the truth grid: voxels some bed saw (in this scan's pose).
        bed_mask: int8 Volume on the truth grid: the bed whose slice holds each voxel in the stitched volume, −1
            outside the field of view.
        truth: hidden truth (true FWHM, calibration, noise level, pose).
        fwhm_nominal_mm, sensitivity_cps_per_mbq: the nominal values for cohort.yaml / the manifest.
    """

    beds: tuple[SpectBedImage, ...]
    activity_bq_per_ml: Volume
    bed_index_per_slice: npt.NDArray[np.int64]
    fov_mask: Volume
    bed_mask: Volume
    truth: SpectTruth
    fwhm_nominal_mm: float
    sensitivity_cps_per_mbq: float

    @property
    def grid(self) -> Volume:
        """The stitched scan geometry (use it for the CT of this time point: `ct_grid(scan.grid)`)."""
        return self.activity_bq_per_ml

    def manifest_fields(self, bed: int) -> dict[str, Any]:
        """The manifest cells of one bed row (nothing hidden)."""
        image = self.beds[bed]
        return {
            "bed": bed,
            "time_h": image.bed.start_h,
            "acquisition_s": image.bed.acquisition_s,
            "sensitivity_cps_per_mbq": self.sensitivity_cps_per_mbq,
            "fwhm_mm": self.fwhm_nominal_mm,
            "deadtime_factor": image.deadtime_factor,
        }
