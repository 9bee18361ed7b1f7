"""Post-therapy 177Lu SPECT, bed by bed: bed planning, depth-dependent blur, counts, noise, stitching, FOV masks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import GeometryError, InputError
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume
from ludl.physics.nuclides import get_nuclide
from ludl.physics.units import BQ_PER_MBQ
from ludl.synth.imaging.common import (
    FWHM_PER_SIGMA,
    TRUNCATE,
    FloatArray,
    aggregate,
    blur_variance_voxels,
    check_truth_grid,
    correlated_noise,
    gaussian_blur,
    lognormal_factor,
    working_grid,
)
from ludl.synth.imaging.spect_protocol import (
    SpectBed,
    SpectBedImage,
    SpectScan,
    SpectSpec,
    SpectSystem,
    SpectTruth,
    sample_spect_system,
)
from ludl.synth.pose import Pose, apply_pose

__all__ = [
    "fov_masks",
    "fwhm_at_depth_mm",
    "plan_beds",
    "simulate_spect",
]


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


def _depth_blur(
    counts: npt.NDArray[np.float32], depth: npt.NDArray[np.float32], system_fwhm_mm: float, spec: SpectSpec
) -> npt.NDArray[np.float32]:
    """Σ_k G_σk ⊗ (w_k · counts): hat weights over depth nodes, each part blurred with its own FWHM (conserving)."""
    spacing = spec.spacing_mm
    d_max = float(depth.max()) if depth.size else 0.0
    if spec.depth_bands == 1 or d_max <= 0:
        fwhm = float(fwhm_at_depth_mm(system_fwhm_mm, spec.depth_reference_mm, spec))
        return gaussian_blur(counts, blur_variance_voxels(fwhm, spacing))
    nodes = np.linspace(0.0, d_max, spec.depth_bands)
    position = depth * np.float32((spec.depth_bands - 1) / d_max)
    out = np.zeros_like(counts)
    for k, node in enumerate(nodes):  # a loop over a few depth bands, not voxels
        weight = np.maximum(np.float32(0.0), np.float32(1.0) - np.abs(position - np.float32(k)))
        if not weight.any():
            continue
        variance = blur_variance_voxels(float(fwhm_at_depth_mm(system_fwhm_mm, node, spec)), spacing)
        out += gaussian_blur(counts * weight, variance)
    return out


def _decay_per_h() -> float:
    return float(get_nuclide("Lu-177").decay_constant_per_h)


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
    check_truth_grid(truth_grid, "the truth grid")
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


def _bed_image(
    truth_map: Volume,
    decay: float,
    bed: SpectBed,
    work: Volume,
    block: int | None,
    depth_work: Volume,
    margin: int,
    pose: Pose,
    spec: SpectSpec,
    system: SpectSystem,
    rng: np.random.Generator,
) -> tuple[SpectBedImage, float, float, float]:
    """One bed's noisy counts from the truth map (decayed by `decay`): (image, noise CV, expected counts, MBq)."""
    activity_mbq = float(truth_map.array.sum(dtype=np.float64)) * truth_map.voxel_volume_ml / BQ_PER_MBQ * decay
    deadtime = 1.0 + spec.deadtime_per_mbq * activity_mbq
    padded = _slab(bed.grid, -margin, bed.grid.shape[0] + 2 * margin)
    lo, hi = _needed_slices(work, pose, padded)
    sub_work = _slab(work, lo, hi - lo)
    if block is None:
        work_map = resample_to(truth_map, sub_work, kind="activity")
    else:  # only the truth slices whose blocks can reach this bed
        sub_truth = truth_map.with_array(truth_map.array[lo * block : hi * block])
        sub_truth = Volume(sub_truth.array, truth_map.spacing_zyx_mm, _slice_origin(truth_map, lo * block))
        work_map = aggregate(sub_truth, sub_work, block)
    conc = apply_pose(work_map, pose, padded, kind="activity").array
    depth = apply_pose(sub_work.with_array(depth_work.array[lo:hi]), pose, padded, kind="linear").array
    # counts = A[MBq] · S_true · t_acq / dead-time factor (docs/physics.md §6 read backwards)
    counts_per_bq_ml = (
        padded.voxel_volume_ml / BQ_PER_MBQ * system.sensitivity_true_cps_per_mbq * bed.acquisition_s / deadtime
    )
    expected = _depth_blur(
        conc.astype(np.float32) * np.float32(counts_per_bq_ml * decay), depth, system.fwhm_true_mm, spec
    )
    expected = np.maximum(expected, np.float32(0.0))[margin : margin + bed.grid.shape[0]]
    n_counts = float(expected.sum(dtype=np.float64))
    cv = spec.noise_cv_reference * math.sqrt(spec.noise_reference_counts / max(n_counts, 1.0))
    cv = float(np.clip(cv, *spec.noise_cv_range))
    sigma_noise = spec.noise_correlation_fwhm_mm / FWHM_PER_SIGMA / spec.spacing_mm
    noisy = expected * lognormal_factor(correlated_noise(rng, expected.shape, sigma_noise), cv)
    counts = bed.grid.with_array(noisy.astype(np.float32), unit="counts")
    return SpectBedImage(bed, counts, float(deadtime)), cv, n_counts, activity_mbq


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
        check_truth_grid(volume, "activity_bq_per_ml")
        volume.require_same_grid(maps[0], "activity maps")
    maps[0].require_same_grid(ct_hu, "activity_bq_per_ml and ct_hu")
    if system is None:
        system = sample_spect_system(rng, spec)
    lam = _decay_per_h()
    work, block = working_grid(maps[0], spec.spacing_mm)
    depth_work = work.with_array(_depth_mm(aggregate(ct_hu, work, block, kind="edge"), spec.body_threshold_hu), "1")
    # Margin (slices) around a bed so that the blur near its ends sees the activity just outside it.
    sigma_max = float(fwhm_at_depth_mm(system.fwhm_true_mm, 250.0, spec)) / FWHM_PER_SIGMA
    margin = math.ceil(TRUNCATE * sigma_max / spec.spacing_mm) + 1
    images, cvs, counts_expected, patient_mbq = [], [], [], []
    for b, bed in enumerate(beds):  # a loop over one or two beds
        if len(maps) == len(beds):
            truth_map, decay = maps[b], 1.0
        else:
            truth_map, decay = maps[0], math.exp(-lam * (bed.start_h - beds[0].start_h))
        image, cv, n_counts, activity_mbq = _bed_image(
            truth_map, decay, bed, work, block, depth_work, margin, pose, spec, system, rng
        )
        images.append(image)
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
