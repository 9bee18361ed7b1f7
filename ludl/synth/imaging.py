"""Scanner images of a digital patient: post-therapy 177Lu SPECT (per bed), low-dose CT and pre-therapy PSMA PET.

Image-domain models (fast; COHORT.md SPECT/CT and PET tables are the requirements). Inputs are maps on the truth
grid in the reference pose; every scan has its own grid in its own pose (`ludl.synth.pose`).

SPECT, per bed position (each with its own start time and activity map):
1. truth concentration → working grid at the SPECT voxel size (exact block/box aggregation, ∫ conserved);
2. pulled through the pose onto the bed's scanner grid (activity-conserving, `apply_pose(kind="activity")`);
3. expected counts = A · S_true · t_acq / dead-time factor, S_true = nominal sensitivity × (1 + calibration error);
4. depth-dependent blur: the counts are split by source depth below the body outline (transaxial distance to the
   surface, hat-function weights over a few depth bands) and each part is blurred with its own Gaussian, so counts
   are conserved and the PSF widens with depth: FWHM(d) = FWHM_true · (1 + g · (d − d_ref) / 100 mm);
5. correlated reconstruction noise: a multiplicative log-normal field (ML-EM noise is close to log-normal with a
   standard deviation proportional to the mean, Barrett, Wilson & Tsui 1994 Phys Med Biol 39:833) with the voxel CV
   set by the bed's expected total counts, CV = CV_ref · √(N_ref / N) (Poisson statistics of the projections).
Only the nominal FWHM, the nominal sensitivity, the acquisition time and the dead-time factor are meant for the
manifest; the realised FWHM, the calibration error and the noise level are hidden truth (`SpectTruth`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import GeometryError, InputError
from ludl.imaging.resample import grid_with_spacing, resample_to
from ludl.imaging.volume import Volume
from ludl.io.nm import counts_to_bq_per_ml
from ludl.physics.nuclides import get_nuclide
from ludl.synth.pose import Pose, PoseKind, PoseSpec, apply_pose, random_pose

__all__ = [
    "FWHM_PER_SIGMA",
    "PetSpec",
    "Pose",
    "PoseKind",
    "PoseSpec",
    "SpectBed",
    "SpectBedImage",
    "SpectScan",
    "SpectSpec",
    "SpectSystem",
    "SpectTruth",
    "apply_pose",
    "bq_per_ml_to_suv",
    "correlated_noise",
    "ct_grid",
    "fov_masks",
    "fwhm_at_depth_mm",
    "pet_grid",
    "plan_beds",
    "random_pose",
    "sample_spect_system",
    "simulate_ct",
    "simulate_pet",
    "simulate_spect",
    "suv_to_bq_per_ml",
    "working_grid",
]

FloatArray = npt.NDArray[np.float64]
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # ≈ 2.3548
_BQ_PER_MBQ = 1e6
# Gaussian kernels are cut at 3.5 σ: the tail beyond holds < 0.05 % of the weight.
_TRUNCATE = 3.5
# Linear interpolation and box aggregation of a grid of spacing Δ add, on average over sub-voxel offsets, a variance
# of Δ²/6 (two-tap kernel f(1 − f), mean over f) and Δ²/12 (box) per axis; the Gaussian blur is narrowed by that
# much so that the *image* has the configured resolution.
_DISCRETISATION_VARIANCE_PER_SPACING2 = 1.0 / 6.0 + 1.0 / 12.0


# ----------------------------------------------------------------------------------------------------------------
# specifications
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpectSpec:
    """A post-therapy 177Lu SPECT protocol and system (COHORT.md SPECT/CT table).

    Args:
        matrix_xy: transaxial matrix (square), voxels.
        spacing_mm: isotropic voxel size, mm (128², 4.8 mm in the multicentre survey).
        bed_slices: slices per bed position (≈ 390 mm camera axial FOV / 4.8 mm).
        overlap_slices: slices shared by neighbouring beds.
        n_beds: default number of bed positions (1 or 2; `plan_beds` may override per scan).
        acquisition_s: acquisition time one bed's reconstruction stands for, s (a manifest field, PHYSICS.md §6).
        bed_gap_min: (low, high) pause between the end of one bed and the start of the next, min (uniform).
        axial_jitter_mm: uniform ± jitter of the bed block's axial centre, mm (positioning by the technologist).
        fwhm_nominal_mm: the resolution the site states (written to the manifest), mm.
        fwhm_factor_range: the true FWHM at the reference depth is nominal × U(low, high) (COHORT.md: 0.95–1.15).
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
    # Voxel CV 10–20 % in organs of clinical reconstructions (COHORT.md "noise"); ≈ 14 % at ≈ 2·10⁷ counts per bed
    # (≈ 1.8 GBq in the field of view, 9.4 cps/MBq, 20 min: a 24 h scan). The cap stands for longer late
    # acquisitions / stronger filtering that clinics use when counts are low.
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


@dataclass(frozen=True)
class PetSpec:
    """A pre-therapy PSMA PET protocol (COHORT.md PET table).

    Args:
        spacing_mm: isotropic voxel size, mm (3–4 mm clinical; coarser for small presets).
        fwhm_mm: reconstructed resolution, mm (≈ 5 mm, EJNMMI Phys 2022).
        noise_cv_reference: voxel CV at SUV `noise_reference_suv` (≈ 15 % in liver, EJNMMI Phys 2022).
        noise_reference_suv: SUV level of the CV reference (liver SUVmean ≈ 5, Li 2017 JNM for DCFPyL).
        noise_level_exponent: CV ∝ (SUV / reference)^(−exponent): hot regions are relatively less noisy
            (0 = purely multiplicative, 0.5 = Poisson-like; assumption 0.25).
        noise_cv_range: (low, high) clip of the voxel CV.
        noise_correlation_fwhm_mm: FWHM of the noise texture, mm.
        margin_mm: field of view beyond the truth grid on every side, mm.
    """

    spacing_mm: float = 4.0
    fwhm_mm: float = 5.0
    noise_cv_reference: float = 0.15
    noise_reference_suv: float = 5.0
    noise_level_exponent: float = 0.25
    noise_cv_range: tuple[float, float] = (0.05, 0.6)
    noise_correlation_fwhm_mm: float = 6.0
    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("spacing_mm", "fwhm_mm", "noise_reference_suv", "noise_correlation_fwhm_mm"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"PetSpec.{name} must be > 0, got {value}")
        if self.noise_cv_reference < 0 or not 0 < self.noise_cv_range[0] <= self.noise_cv_range[1]:
            raise InputError(f"PetSpec: noise CV must be ≥ 0 within a valid range, got {self.noise_cv_range}")


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float | Sequence[float]
) -> npt.NDArray[np.float32]:
    """A stationary Gaussian field of zero mean and unit voxel variance with Gaussian correlation (σ in voxels)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    sigmas = np.broadcast_to(np.asarray(sigma_voxels, dtype=np.float64), (len(shape),))
    if not np.any(sigmas > 0):
        return white
    smooth = ndimage.gaussian_filter(white, sigmas, mode="wrap", truncate=_TRUNCATE)
    # Variance of filtered unit white noise = Π over axes of Σ k² of the discrete 1D kernels (wrap: stationary).
    variance = 1.0
    for sigma, n in zip(sigmas, shape, strict=True):
        if sigma <= 0:
            continue
        delta = np.zeros(max(n, 2 * int(_TRUNCATE * sigma + 0.5) + 1))
        delta[delta.size // 2] = 1.0
        kernel = ndimage.gaussian_filter1d(delta, float(sigma), mode="wrap", truncate=_TRUNCATE)
        variance *= float((kernel**2).sum())
    return np.asarray(smooth / np.float32(math.sqrt(variance)), dtype=np.float32)


def _lognormal_factor(noise: npt.NDArray[np.float32], cv: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """exp(s·g − s²/2) with s = √ln(1 + CV²): mean 1 and coefficient of variation CV for unit-variance g."""
    s = np.sqrt(np.log1p(np.square(np.asarray(cv, dtype=np.float32))))
    return np.asarray(np.exp(s * noise - 0.5 * s * s), dtype=np.float32)


def _check_truth_grid(volume: Volume, name: str) -> None:
    if not np.allclose(volume.direction, np.eye(3), atol=1e-6):
        raise GeometryError(f"{name} must lie on an axis-aligned truth grid (identity direction)")


def working_grid(truth: Volume, spacing_mm: float) -> tuple[Volume, int | None]:
    """A reference-frame grid at `spacing_mm` covering `truth`, and the integer block factor if there is one.

    When `spacing_mm` is an integer multiple r of the truth spacing on every axis, the working grid is the exact
    r×r×r block aggregation of the truth grid (padded up to whole blocks), so aggregation is a reshape-mean.
    """
    ratios = np.asarray([spacing_mm / s for s in truth.spacing_zyx_mm])
    r = round(float(ratios[0]))
    if r >= 1 and np.allclose(ratios, r, rtol=1e-6):
        shape = tuple(math.ceil(n / r) for n in truth.shape)
        first = truth.index_to_physical([(r - 1) / 2.0] * 3)
        grid = Volume(
            np.zeros(shape, dtype=np.uint8),
            (spacing_mm, spacing_mm, spacing_mm),
            (float(first[0]), float(first[1]), float(first[2])),
            truth.direction,
        )
        return grid, r
    return grid_with_spacing(truth, (spacing_mm, spacing_mm, spacing_mm)), None


def _block_sum(array: npt.NDArray[np.float32], block: int) -> npt.NDArray[np.float32]:
    """Sums over block×block×block boxes (a ragged last box sums what there is): strided adds, no big copies."""
    out = array
    for axis in range(3):  # a loop over the three axes and the block offsets, not voxels
        n_blocks = -(-out.shape[axis] // block)
        total: npt.NDArray[np.float32] | None = None
        for offset in range(block):
            part = out[(slice(None),) * axis + (slice(offset, None, block),)]
            if part.shape[axis] < n_blocks:
                pad = [(0, 0)] * 3
                pad[axis] = (0, n_blocks - part.shape[axis])
                part = np.pad(part, pad)
            total = part.astype(np.float32) if total is None else total + part
        assert total is not None  # block ≥ 1
        out = total
    return out


def _aggregate(volume: Volume, grid: Volume, block: int | None, kind: str = "mean") -> Volume:
    """`volume` (truth grid) onto the working `grid`.

    ``kind="mean"`` (concentrations): box mean with the part of a box beyond the truth counted as empty, so
    ∫ value dV is conserved. ``kind="edge"`` (HU): mean over the real voxels of each box.
    """
    if block is None:
        return resample_to(volume, grid, kind="activity" if kind == "mean" else "linear")
    array = volume.array.astype(np.float32, copy=False)
    if block == 1:
        return grid.with_array(array.copy(), unit=volume.unit)
    sums = _block_sum(array, block)
    if kind == "mean":
        return grid.with_array(sums / np.float32(block**3), unit=volume.unit)
    counts = [
        np.minimum(block, n - block * np.arange(g)).astype(np.float32)
        for g, n in zip(grid.shape, volume.shape, strict=True)
    ]
    n_real = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    return grid.with_array(sums / n_real, unit=volume.unit)


def _scanner_grid(
    centre_xy_mm: tuple[float, float], matrix_xy: int, spacing_mm: float, z_first_mm: float, n_slices: int
) -> Volume:
    origin = (
        centre_xy_mm[0] - (matrix_xy - 1) / 2.0 * spacing_mm,
        centre_xy_mm[1] - (matrix_xy - 1) / 2.0 * spacing_mm,
        z_first_mm,
    )
    return Volume(np.zeros((n_slices, matrix_xy, matrix_xy), dtype=np.uint8), (spacing_mm,) * 3, origin)


def _slab(grid: Volume, first: int, n: int) -> Volume:
    """The grid's slices [first, first + n) on the same lattice (first may be negative or beyond the grid)."""
    origin = grid.index_to_physical([float(first), 0.0, 0.0])
    return Volume(
        np.zeros((n, *grid.shape[1:]), dtype=np.uint8),
        grid.spacing_zyx_mm,
        (float(origin[0]), float(origin[1]), float(origin[2])),
        grid.direction,
    )


def _slice_origin(grid: Volume, first: int) -> tuple[float, float, float]:
    origin = grid.index_to_physical([float(first), 0.0, 0.0])
    return (float(origin[0]), float(origin[1]), float(origin[2]))


def _needed_slices(work: Volume, pose: Pose, scanner_grid: Volume) -> tuple[int, int]:
    """Slices [lo, hi) of the reference-frame `work` grid that the pose can carry into `scanner_grid`."""
    shape = np.asarray(scanner_grid.shape, dtype=np.float64)
    corners = np.array(
        [[z, y, x] for z in (-0.5, shape[0] - 0.5) for y in (-0.5, shape[1] - 0.5) for x in (-0.5, shape[2] - 0.5)]
    )
    points = pose.inverse(scanner_grid.index_to_physical(corners).T)
    z_index = work.physical_to_index(points.T)[:, 0]
    u_max = 0.0 if pose.displacement_xyz_mm is None else float(np.abs(pose.displacement_xyz_mm).max())
    slack = 2 + math.ceil(u_max / work.spacing_zyx_mm[0])
    lo = max(0, math.floor(float(z_index.min())) - slack)
    hi = min(work.shape[0], math.ceil(float(z_index.max())) + 1 + slack)
    return lo, max(lo + 1, hi)


def _depth_mm(ct_work: Volume, threshold_hu: float) -> npt.NDArray[np.float32]:
    """Transaxial depth below the body outline (2D distance to the outside in each slice), mm; 0 outside."""
    body = ct_work.array > threshold_hu
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    body = ndimage.binary_fill_holes(body, structure=in_plane)  # lungs and bowel gas lie inside the body
    _, dy, dx = ct_work.spacing_zyx_mm
    depth = np.zeros(body.shape, dtype=np.float32)
    for k in np.nonzero(body.any(axis=(1, 2)))[0]:  # per slice: the camera orbits in the transaxial plane
        depth[k] = ndimage.distance_transform_edt(body[k], sampling=(dy, dx))
    return depth


def fwhm_at_depth_mm(system_fwhm_mm: float, depth_mm: npt.ArrayLike, spec: SpectSpec) -> FloatArray:
    """FWHM(d) = FWHM_true · (1 + g · (d − d_ref) / 100 mm), floored at half the system FWHM."""
    d = np.asarray(depth_mm, dtype=np.float64)
    scale = 1.0 + spec.depth_gain_per_100mm * (d - spec.depth_reference_mm) / 100.0
    return np.asarray(system_fwhm_mm * np.maximum(scale, 0.5))


def _blur_variance_voxels(fwhm_mm: float, spacing_mm: float) -> float:
    """Variance (voxel²) of the Gaussian that gives the image `fwhm_mm` after the discretisation blur."""
    variance = (fwhm_mm / FWHM_PER_SIGMA) ** 2 - _DISCRETISATION_VARIANCE_PER_SPACING2 * spacing_mm**2
    return max(variance, 0.0) / spacing_mm**2


def _sampled_gaussian(sigma: float) -> FloatArray:
    radius = max(1, math.ceil(_TRUNCATE * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / max(sigma, 1e-12)) ** 2)
    return np.asarray(kernel / kernel.sum())


@functools.lru_cache(maxsize=256)
def _exact_variance_kernel(variance_voxels: float) -> FloatArray:
    """A sampled Gaussian whose *discrete* variance equals `variance_voxels` (σ below ≈ 0.6 voxel a plainly
    sampled Gaussian is much narrower than its σ, which would sharpen coarse presets)."""

    def variance(kernel: FloatArray) -> float:
        x = np.arange(kernel.size, dtype=np.float64) - (kernel.size - 1) / 2.0
        return float((kernel * x**2).sum())

    lo, hi = 0.0, math.sqrt(variance_voxels) + 1.0
    for _ in range(50):  # bisection on σ: the discrete variance grows monotonically with it
        mid = 0.5 * (lo + hi)
        if variance(_sampled_gaussian(mid)) < variance_voxels:
            lo = mid
        else:
            hi = mid
    return _sampled_gaussian(0.5 * (lo + hi))


def _gaussian_blur(array: npt.NDArray[np.float32], variance_voxels: float) -> npt.NDArray[np.float32]:
    """Separable blur with an isotropic kernel of the given discrete variance (voxel²); zero outside the array."""
    if variance_voxels <= 1e-6:
        return array
    kernel = _exact_variance_kernel(round(float(variance_voxels), 6))
    out = array
    for axis in range(3):
        out = ndimage.correlate1d(out, kernel, axis=axis, mode="constant", cval=0.0)
    return np.asarray(out, dtype=np.float32)


def _depth_blur(
    counts: npt.NDArray[np.float32], depth: npt.NDArray[np.float32], system_fwhm_mm: float, spec: SpectSpec
) -> npt.NDArray[np.float32]:
    """Σ_k G_σk ⊗ (w_k · counts): hat weights over depth nodes, each part blurred with its own FWHM (conserving)."""
    spacing = spec.spacing_mm
    d_max = float(depth.max()) if depth.size else 0.0
    if spec.depth_bands == 1 or d_max <= 0:
        fwhm = float(fwhm_at_depth_mm(system_fwhm_mm, spec.depth_reference_mm, spec))
        return _gaussian_blur(counts, _blur_variance_voxels(fwhm, spacing))
    nodes = np.linspace(0.0, d_max, spec.depth_bands)
    position = depth * np.float32((spec.depth_bands - 1) / d_max)
    out = np.zeros_like(counts)
    for k, node in enumerate(nodes):  # a loop over a few depth bands, not voxels
        weight = np.maximum(np.float32(0.0), np.float32(1.0) - np.abs(position - np.float32(k)))
        if not weight.any():
            continue
        variance = _blur_variance_voxels(float(fwhm_at_depth_mm(system_fwhm_mm, node, spec)), spacing)
        out += _gaussian_blur(counts * weight, variance)
    return out


def _decay_per_h() -> float:
    return float(get_nuclide("Lu-177").decay_constant_per_h)


# ----------------------------------------------------------------------------------------------------------------
# SPECT
# ----------------------------------------------------------------------------------------------------------------
def plan_beds(
    rng: np.random.Generator,
    spec: SpectSpec,
    time_h: float,
    truth_grid: Volume,
    *,
    n_beds: int | None = None,
    axial_centre_mm: float | None = None,
) -> tuple[SpectBed, ...]:
    """Place the bed positions of one scan and give each its start time.

    Args:
        rng: random generator of this patient.
        spec: SPECT protocol.
        time_h: start of the first bed after the injection, h (jittered by the caller).
        truth_grid: the truth grid (its centre is the table axis; its z centre the default axial centre).
        n_beds: bed positions of this scan (default `spec.n_beds`); beds are stacked from superior (bed 0,
            acquired first) to inferior, overlapping by `spec.overlap_slices`.
        axial_centre_mm: LPS z (mm) the block of beds is centred on before jitter (e.g. the kidneys' level).

    Returns:
        The beds in acquisition order; all on one slice lattice (whole-slice offsets, as `read_nm` stitches).
    """
    n = spec.n_beds if n_beds is None else int(n_beds)
    if n < 1:
        raise InputError(f"n_beds must be ≥ 1, got {n}")
    if not np.isfinite(time_h):
        raise InputError(f"time_h must be finite, got {time_h}")
    shape = np.asarray(truth_grid.shape, dtype=np.float64)
    centre = truth_grid.index_to_physical((shape - 1.0) / 2.0)
    z_centre = float(centre[2]) if axial_centre_mm is None else float(axial_centre_mm)
    z_centre += float(rng.uniform(-spec.axial_jitter_mm, spec.axial_jitter_mm))
    step = spec.bed_slices - spec.overlap_slices
    total = n * spec.bed_slices - (n - 1) * spec.overlap_slices
    z_first = z_centre - (total - 1) / 2.0 * spec.spacing_mm
    beds = []
    start_h = float(time_h)
    for k in range(n):
        first_slice = (n - 1 - k) * step  # bed 0 is the most superior (largest LPS z)
        grid = _scanner_grid(
            (float(centre[0]), float(centre[1])),
            spec.matrix_xy,
            spec.spacing_mm,
            z_first + first_slice * spec.spacing_mm,
            spec.bed_slices,
        )
        beds.append(SpectBed(k, start_h, float(spec.acquisition_s), first_slice, grid))
        start_h += spec.acquisition_s / 3600.0 + float(rng.uniform(*spec.bed_gap_min)) / 60.0
    return tuple(beds)


def fov_masks(truth_grid: Volume, pose: Pose, beds: Sequence[SpectBed]) -> tuple[Volume, Volume]:
    """(fov_mask bool, bed_mask int8 with −1 outside) on the truth grid for beds seen in `pose`.

    A truth voxel is in the field of view when its centre, moved by the pose, lies inside a bed's voxel boxes; where
    beds overlap it belongs to the bed whose axial centre is nearest (the stitching rule of `read_nm`).
    """
    _check_truth_grid(truth_grid, "the truth grid")
    bed_mask = np.full(truth_grid.shape, -1, dtype=np.int8)
    ref = beds[0].grid
    # All beds lie on one slice lattice (index = slice of bed 0's grid). Which bed each lattice slice belongs to in
    # the stitched volume (nearest bed centre, as `read_nm` stitches) is a lookup table over the lattice.
    firsts = np.asarray([b.first_slice - beds[0].first_slice for b in beds])
    lengths = np.asarray([b.grid.shape[0] for b in beds])
    lo, hi = int(firsts.min()), int((firsts + lengths).max())
    lattice = np.arange(lo, hi)
    covered = (lattice[None, :] >= firsts[:, None]) & (lattice[None, :] < (firsts + lengths)[:, None])
    distance = np.where(covered, np.abs(lattice[None, :] - (firsts + (lengths - 1) / 2.0)[:, None]), np.inf)
    lut = np.where(covered.any(axis=0), np.argmin(distance, axis=0), -1).astype(np.int8)
    lut = np.concatenate([lut, np.array([-1], dtype=np.int8)])  # the last entry catches everything outside
    rows = max(1, (1 << 21) // (truth_grid.shape[1] * truth_grid.shape[2]))
    for z0 in range(0, truth_grid.shape[0], rows):  # slabs of slices (memory), not voxels
        z1 = min(z0 + rows, truth_grid.shape[0])
        index = pose.index_map_to(truth_grid, ref, z0, z1)
        slot = np.floor(index[0] + np.float32(0.5 - lo)).astype(np.int32)
        outside = (slot < 0) | (slot >= hi - lo)
        outside |= (index[1] < -0.5) | (index[1] >= ref.shape[1] - 0.5)
        outside |= (index[2] < -0.5) | (index[2] >= ref.shape[2] - 0.5)
        slot[outside] = hi - lo
        bed_mask[z0:z1] = lut[slot]
    bed_volume = truth_grid.with_array(bed_mask, unit="label")
    return truth_grid.with_array(bed_mask >= 0, unit="mask"), bed_volume


def simulate_spect(
    activity_bq_per_ml: Volume | Sequence[Volume],
    ct_hu: Volume,
    spec: SpectSpec,
    rng: np.random.Generator,
    pose: Pose,
    *,
    beds: Sequence[SpectBed],
    system: SpectSystem | None = None,
) -> SpectScan:
    """Simulate one SPECT time point, bed by bed, from the true activity in the reference pose.

    Args:
        activity_bq_per_ml: true concentration on the truth grid (reference pose), Bq/mL; one Volume per bed at
            that bed's start time (preferred: the biology changes between beds), or one Volume used for all beds
            with later beds decayed physically from the first bed's start.
        ct_hu: true CT on the truth grid (HU), for the body outline the depth-dependent resolution needs.
        spec: SPECT protocol.
        rng: random generator of this patient (noise).
        pose: reference → scanner pose of this time point.
        beds: from `plan_beds`.
        system: the patient's camera (`sample_spect_system`, drawn once per patient); drawn here when None.

    Returns:
        A `SpectScan` (counts per bed, the stitched nominal-calibration Bq/mL image, FOV masks on the truth grid,
        hidden truth).
    """
    if not beds:
        raise InputError("simulate_spect needs at least one bed (see plan_beds)")
    maps = [activity_bq_per_ml] if isinstance(activity_bq_per_ml, Volume) else list(activity_bq_per_ml)
    if len(maps) not in (1, len(beds)):
        raise InputError(f"give one activity map or one per bed ({len(beds)}), got {len(maps)}")
    for volume in maps:
        _check_truth_grid(volume, "activity_bq_per_ml")
        volume.require_same_grid(maps[0], "activity maps")
    maps[0].require_same_grid(ct_hu, "activity_bq_per_ml and ct_hu")
    if system is None:
        system = sample_spect_system(rng, spec)
    lam = _decay_per_h()
    work, block = working_grid(maps[0], spec.spacing_mm)
    depth_work = work.with_array(_depth_mm(_aggregate(ct_hu, work, block, kind="edge"), spec.body_threshold_hu), "1")
    # Margin (slices) around a bed so that the blur near its ends sees the activity just outside it.
    sigma_max = float(fwhm_at_depth_mm(system.fwhm_true_mm, 250.0, spec)) / FWHM_PER_SIGMA
    margin = math.ceil(_TRUNCATE * sigma_max / spec.spacing_mm) + 1
    images, cvs, counts_expected, patient_mbq = [], [], [], []
    for b, bed in enumerate(beds):  # a loop over one or two beds
        if len(maps) == len(beds):
            truth_map, decay = maps[b], 1.0
        else:
            truth_map, decay = maps[0], math.exp(-lam * (bed.start_h - beds[0].start_h))
        activity_mbq = float(truth_map.array.sum(dtype=np.float64)) * truth_map.voxel_volume_ml / _BQ_PER_MBQ * decay
        deadtime = 1.0 + spec.deadtime_per_mbq * activity_mbq
        padded = _slab(bed.grid, -margin, bed.grid.shape[0] + 2 * margin)
        lo, hi = _needed_slices(work, pose, padded)
        sub_work = _slab(work, lo, hi - lo)
        if block is None:
            work_map = resample_to(truth_map, sub_work, kind="activity")
        else:  # only the truth slices whose blocks can reach this bed
            sub_truth = truth_map.with_array(truth_map.array[lo * block : hi * block])
            sub_truth = Volume(sub_truth.array, truth_map.spacing_zyx_mm, _slice_origin(truth_map, lo * block))
            work_map = _aggregate(sub_truth, sub_work, block)
        conc = apply_pose(work_map, pose, padded, kind="activity").array
        depth = apply_pose(sub_work.with_array(depth_work.array[lo:hi]), pose, padded, kind="linear").array
        # counts = A[MBq] · S_true · t_acq / dead-time factor (PHYSICS.md §6 read backwards)
        counts_per_bq_ml = (
            padded.voxel_volume_ml / _BQ_PER_MBQ * system.sensitivity_true_cps_per_mbq * bed.acquisition_s / deadtime
        )
        expected = _depth_blur(
            conc.astype(np.float32) * np.float32(counts_per_bq_ml * decay), depth, system.fwhm_true_mm, spec
        )
        expected = np.maximum(expected, np.float32(0.0))[margin : margin + bed.grid.shape[0]]
        n_counts = float(expected.sum(dtype=np.float64))
        cv = spec.noise_cv_reference * math.sqrt(spec.noise_reference_counts / max(n_counts, 1.0))
        cv = float(np.clip(cv, *spec.noise_cv_range))
        sigma_noise = spec.noise_correlation_fwhm_mm / FWHM_PER_SIGMA / spec.spacing_mm
        noisy = expected * _lognormal_factor(correlated_noise(rng, expected.shape, sigma_noise), cv)
        counts = bed.grid.with_array(noisy.astype(np.float32), unit="counts")
        images.append(SpectBedImage(bed, counts, float(deadtime)))
        cvs.append(cv)
        counts_expected.append(n_counts)
        patient_mbq.append(activity_mbq)
    stitched, bed_of_slice = _stitch(images, spec.sensitivity_cps_per_mbq)
    fov, bed_mask = fov_masks(maps[0], pose, beds)
    truth = SpectTruth(
        fwhm_true_mm=system.fwhm_true_mm,
        fwhm_depth_gain_per_100mm=spec.depth_gain_per_100mm,
        depth_reference_mm=spec.depth_reference_mm,
        sensitivity_true_cps_per_mbq=system.sensitivity_true_cps_per_mbq,
        calibration_factor=system.calibration_factor,
        noise_cv=tuple(cvs),
        expected_counts=tuple(counts_expected),
        patient_activity_mbq=tuple(patient_mbq),
        pose=pose.as_dict(),
    )
    return SpectScan(
        beds=tuple(images),
        activity_bq_per_ml=stitched,
        bed_index_per_slice=bed_of_slice,
        fov_mask=fov,
        bed_mask=bed_mask,
        truth=truth,
        fwhm_nominal_mm=spec.fwhm_nominal_mm,
        sensitivity_cps_per_mbq=spec.sensitivity_cps_per_mbq,
    )


def _stitch(images: Sequence[SpectBedImage], sensitivity: float) -> tuple[Volume, npt.NDArray[np.int64]]:
    """Calibrate each bed (nominal sensitivity, its dead time) and stitch on the common lattice, nearest centre."""
    calibrated = [image.activity_bq_per_ml(sensitivity) for image in images]
    firsts = [image.bed.first_slice for image in images]
    lo = min(firsts)
    hi = max(f + c.shape[0] for f, c in zip(firsts, calibrated, strict=True))
    z = np.arange(lo, hi)
    centres = np.asarray([f + (c.shape[0] - 1) / 2.0 for f, c in zip(firsts, calibrated, strict=True)])
    covered = np.stack([(z >= f) & (z < f + c.shape[0]) for f, c in zip(firsts, calibrated, strict=True)])
    distance = np.where(covered, np.abs(z[None, :] - centres[:, None]), np.inf)
    bed_of_slice = np.argmin(distance, axis=0).astype(np.int64)
    if not covered.any(axis=0).all():
        raise GeometryError("the beds leave a gap between them; plan them with plan_beds (overlap_slices ≥ 0)")
    out = np.empty((z.size, *calibrated[0].shape[1:]), dtype=np.float32)
    for b, (first, image) in enumerate(zip(firsts, calibrated, strict=True)):  # a loop over beds
        rows = np.nonzero(bed_of_slice == b)[0]
        out[rows] = image.array[z[rows] - first]
    ref = calibrated[int(np.argmin(firsts))]
    meta = {"bed_index_per_slice": [int(v) for v in bed_of_slice], "n_beds": len(images)}
    volume = Volume(out, ref.spacing_zyx_mm, ref.origin_xyz_mm, ref.direction, unit="Bq/mL", meta=meta)
    return volume, bed_of_slice


# ----------------------------------------------------------------------------------------------------------------
# CT
# ----------------------------------------------------------------------------------------------------------------
def ct_grid(scan_grid: Volume, upsample: int = 1) -> Volume:
    """An empty grid for the CT of a scan: the scan's field of view at its spacing / `upsample`."""
    if upsample < 1:
        raise InputError(f"upsample must be ≥ 1, got {upsample}")
    if upsample == 1:
        return scan_grid.with_array(np.zeros(scan_grid.shape, dtype=np.uint8), unit="1")
    spacing = tuple(s / upsample for s in scan_grid.spacing_zyx_mm)
    return grid_with_spacing(scan_grid, (spacing[0], spacing[1], spacing[2]))


def simulate_ct(
    hu_truth: Volume,
    grid: Volume,
    pose: Pose,
    rng: np.random.Generator,
    *,
    noise_hu: float = 20.0,
    noise_correlation_mm: float = 2.0,
) -> Volume:
    """Low-dose CT of one scan: the true HU (reference pose) seen in `pose` on `grid`, with correlated noise.

    Args:
        hu_truth: true HU on the truth grid.
        grid: the CT grid in the scanner frame (e.g. `ct_grid(scan.grid)`).
        pose: reference → scanner pose of this time point (the CT shares the SPECT's pose).
        rng: random generator.
        noise_hu: voxel noise SD, HU (low-dose CT at 2–5 mm voxels: ≈ 10–30 HU; assumption).
        noise_correlation_mm: noise texture FWHM, mm.

    Returns:
        float32 HU on `grid`, −1000 (air) outside the truth, clipped to [−1024, 3071].
    """
    _check_truth_grid(hu_truth, "hu_truth")
    spacing = float(min(grid.spacing_zyx_mm))
    work, block = working_grid(hu_truth, spacing)
    source = _aggregate(hu_truth, work, block, kind="edge") if block and block > 1 else hu_truth
    image = apply_pose(source, pose, grid, kind="linear", default=-1000.0).array.astype(np.float32)
    sigma = [noise_correlation_mm / FWHM_PER_SIGMA / s for s in grid.spacing_zyx_mm]
    image += np.float32(noise_hu) * correlated_noise(rng, image.shape, sigma)
    return grid.with_array(np.clip(image, -1024.0, 3071.0).astype(np.float32), unit="HU")


# ----------------------------------------------------------------------------------------------------------------
# PET
# ----------------------------------------------------------------------------------------------------------------
def suv_to_bq_per_ml(suv: npt.ArrayLike, weight_kg: float, injected_mbq: float) -> FloatArray:
    """C = SUV · injected activity / body weight (SUVbw, PHYSICS.md §6; activity decayed to the scan), Bq/mL."""
    if weight_kg <= 0 or injected_mbq <= 0:
        raise InputError(f"weight_kg and injected_mbq must be > 0, got {weight_kg}, {injected_mbq}")
    return np.asarray(suv, dtype=np.float64) * (injected_mbq * _BQ_PER_MBQ) / (weight_kg * 1000.0)


def bq_per_ml_to_suv(concentration_bq_per_ml: npt.ArrayLike, weight_kg: float, injected_mbq: float) -> FloatArray:
    """SUVbw = C · weight / injected activity (g/mL), the inverse of `suv_to_bq_per_ml`."""
    if weight_kg <= 0 or injected_mbq <= 0:
        raise InputError(f"weight_kg and injected_mbq must be > 0, got {weight_kg}, {injected_mbq}")
    return np.asarray(concentration_bq_per_ml, dtype=np.float64) * (weight_kg * 1000.0) / (injected_mbq * _BQ_PER_MBQ)


def pet_grid(truth_grid: Volume, spec: PetSpec, rng: np.random.Generator) -> Volume:
    """The PET scanner grid: covers the truth field of view (+ margin) at `spec.spacing_mm`, random sub-voxel origin."""
    shape = np.asarray(truth_grid.shape, dtype=np.float64)
    extent = shape * np.asarray(truth_grid.spacing_zyx_mm) + 2 * spec.margin_mm
    n = np.maximum(1, np.ceil(extent / spec.spacing_mm)).astype(int)
    centre = truth_grid.index_to_physical((shape - 1.0) / 2.0)
    offset = rng.uniform(-0.5, 0.5, 3) * spec.spacing_mm  # its own lattice, not the truth's
    origin = centre - (n[::-1] - 1) / 2.0 * spec.spacing_mm + offset
    return Volume(
        np.zeros(tuple(int(v) for v in n), dtype=np.uint8),
        (spec.spacing_mm,) * 3,
        (float(origin[0]), float(origin[1]), float(origin[2])),
    )


def simulate_pet(
    pet_suv_truth: Volume,
    spec: PetSpec,
    rng: np.random.Generator,
    pose: Pose,
    *,
    grid: Volume | None = None,
) -> Volume:
    """Pre-therapy PSMA PET in SUV: the true SUV map (reference pose) in the PET pose, ≈ 5 mm FWHM, noisy.

    Args:
        pet_suv_truth: true SUVbw on the truth grid (reference pose).
        spec: PET protocol.
        rng: random generator.
        pose: reference → PET scanner pose (`random_pose`; rigid offset plus slight deformation).
        grid: output grid (default `pet_grid(truth grid, spec, rng)`).

    Returns:
        float32 SUV Volume on the PET grid (∫ SUV dV conserved before noise; noise has mean 1).
    """
    _check_truth_grid(pet_suv_truth, "pet_suv_truth")
    if grid is None:
        grid = pet_grid(pet_suv_truth, spec, rng)
    work, block = working_grid(pet_suv_truth, spec.spacing_mm)
    suv = apply_pose(_aggregate(pet_suv_truth, work, block), pose, grid, kind="activity").array.astype(np.float32)
    suv = _gaussian_blur(suv, _blur_variance_voxels(spec.fwhm_mm, spec.spacing_mm))
    suv = np.maximum(suv, np.float32(0.0))
    level = np.maximum(suv, np.float32(1e-3 * spec.noise_reference_suv)) / np.float32(spec.noise_reference_suv)
    cv = np.clip(spec.noise_cv_reference * level ** np.float32(-spec.noise_level_exponent), *spec.noise_cv_range)
    sigma_noise = spec.noise_correlation_fwhm_mm / FWHM_PER_SIGMA / spec.spacing_mm
    noisy = suv * _lognormal_factor(correlated_noise(rng, suv.shape, sigma_noise), cv)
    return grid.with_array(noisy.astype(np.float32), unit="SUV")
