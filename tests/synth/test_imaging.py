"""Scanner simulation of the synthetic cohort: SPECT quantification, resolution, noise, beds, pose, PET, CT.

Expected values come from outside the code: the true activity put into the phantom, the configured FWHM and its
stated depth law, the docs/synthetic-cohort.md ranges
(voxel CV 10–20 % in organs, ≈ 15 % PET noise in liver), the 177Lu half-life
and the SUV definition.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.physics.units import BQ_PER_MBQ, MBQ_PER_BQ, bq_per_ml_from_suv, suv_bw
from ludl.synth.imaging import (
    PetSpec,
    SpectSpec,
    SpectSystem,
    ct_grid,
    plan_beds,
    simulate_ct,
    simulate_pet,
    simulate_spect,
)
from ludl.synth.pose import Pose, PoseSpec, apply_pose, random_pose

LU177_HALF_LIFE_H = 6.647 * 24.0  # ICRP 107: 6.647 d
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
TRUTH_MM = 2.4
SPECT_MM = 4.8


def _phantom(shape_zyx: tuple[int, int, int], half_width_mm: float = 100.0) -> tuple[Volume, Volume]:
    """An empty truth map and a CT of a square-section soft-tissue body (full z length) in air."""
    _, ny, nx = shape_zyx
    y = (np.arange(ny) - (ny - 1) / 2.0) * TRUTH_MM
    x = (np.arange(nx) - (nx - 1) / 2.0) * TRUTH_MM
    body = (np.abs(y)[:, None] <= half_width_mm) & (np.abs(x)[None, :] <= half_width_mm)
    hu = np.where(np.broadcast_to(body, shape_zyx), 40.0, -1000.0).astype(np.float32)
    grid = Volume(np.zeros(shape_zyx, dtype=np.float32), (TRUTH_MM,) * 3, (0.0, 0.0, 0.0), unit="Bq/mL")
    return grid, grid.with_array(hu, unit="HU")


def _spec(**changes: object) -> SpectSpec:
    base = SpectSpec(matrix_xy=64, spacing_mm=SPECT_MM, bed_slices=24, overlap_slices=4, fwhm_nominal_mm=12.0)
    return replace(base, **changes)  # type: ignore[arg-type]


def _system(spec: SpectSpec, fwhm_mm: float = 12.0, calibration: float = 1.0) -> SpectSystem:
    return SpectSystem(fwhm_mm, spec.sensitivity_cps_per_mbq * calibration, spec.sensitivity_cps_per_mbq)


def _rigid(shift_xyz_mm: tuple[float, float, float], centre: tuple[float, float, float]) -> Pose:
    return Pose(translation_xyz_mm=shift_xyz_mm, centre_xyz_mm=centre)


def _centre(volume: Volume) -> tuple[float, float, float]:
    c = volume.index_to_physical((np.asarray(volume.shape, dtype=float) - 1.0) / 2.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def _total_mbq(volume: Volume, mask: np.ndarray | None = None) -> float:
    values = volume.array if mask is None else volume.array * mask
    return float(values.sum(dtype=np.float64)) * volume.voxel_volume_ml * MBQ_PER_BQ


# --------------------------------------------------------------------------------------------------------------
# quantification: counts → activity with the manifest values recovers the truth in the field of view
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("calibration", [1.0, 1.05])
def test_counts_recover_true_activity_in_fov_per_bed(calibration: float) -> None:
    truth, ct = _phantom((80, 96, 96))
    z, y, x = np.indices(truth.shape)
    body = ct.array > -500
    # ≈ 4 GBq in the patient (a 4 h scan after 7.4 GBq: dead time matters), hot spheres in both beds.
    act1 = np.where(body, 2.0e5, 0.0)
    for zc in (20, 60):
        act1[((z - zc) ** 2 + (y - 48) ** 2 + (x - 40) ** 2) * TRUTH_MM**2 < 25.0**2] = 1.5e7
    act2 = 0.9 * act1  # the biology moved on by the time the second bed starts
    maps = [truth.with_array(act1.astype(np.float32)), truth.with_array(act2.astype(np.float32))]
    spec = _spec(n_beds=2, bed_slices=26, axial_jitter_mm=0.0)
    rng = np.random.default_rng(3)
    pose = random_pose(rng, PoseSpec(), truth)
    beds = plan_beds(rng, spec, 4.0, truth, n_beds=2)
    scan = simulate_spect(maps, ct, spec, rng, pose, beds=beds, system=_system(spec, calibration=calibration))

    # The beds (2 × 26 − 4 slices of 4.8 mm = 230 mm) cover the whole 192 mm phantom plus margin.
    assert scan.fov_mask.array[body].all()
    for b, image in enumerate(scan.beds):
        assert image.deadtime_factor > 1.03  # count losses at ≈ 4 GBq
        assert image.deadtime_factor == pytest.approx(1.0 + spec.deadtime_per_mbq * _total_mbq(maps[b]), rel=1e-9)
    # Stitched image (nominal calibration, manifest dead time) vs truth per bed region, each at its own start time.
    stitched = scan.activity_bq_per_ml
    recovered = _total_mbq(stitched)
    true = sum(_total_mbq(maps[b], scan.bed_mask.array == b) for b in range(2))
    assert recovered / true == pytest.approx(calibration, rel=0.01)


def test_single_map_decays_physically_for_the_second_bed() -> None:
    truth, ct = _phantom((80, 96, 96))
    z, y, x = np.indices(truth.shape)
    act = np.where(((z - 60) ** 2 + (y - 48) ** 2 + (x - 48) ** 2) * TRUTH_MM**2 < 30.0**2, 1e6, 0.0)
    act += np.where(((z - 20) ** 2 + (y - 48) ** 2 + (x - 48) ** 2) * TRUTH_MM**2 < 30.0**2, 1e6, 0.0)
    # A 10 h pause makes the decay measurable; no jitter keeps the bed boundary between the two spheres.
    spec = _spec(n_beds=2, bed_gap_min=(600.0, 600.0), axial_jitter_mm=0.0, noise_cv_range=(0.02, 0.02))
    rng = np.random.default_rng(4)
    beds = plan_beds(rng, spec, 24.0, truth, n_beds=2)
    pose = Pose.identity()
    scan = simulate_spect(
        truth.with_array(act.astype(np.float32)), ct, spec, rng, pose, beds=beds, system=_system(spec)
    )
    dt_h = beds[1].start_h - beds[0].start_h
    assert dt_h == pytest.approx(spec.acquisition_s / 3600.0 + 10.0)
    per_bed = [_total_mbq(scan.activity_bq_per_ml, (scan.bed_index_per_slice == b)[:, None, None]) for b in range(2)]
    true = [_total_mbq(truth.with_array(act), scan.bed_mask.array == b) for b in range(2)]
    assert per_bed[0] / true[0] == pytest.approx(1.0, rel=0.01)
    assert per_bed[1] / true[1] == pytest.approx(0.5 ** (dt_h / LU177_HALF_LIFE_H), rel=0.01)


def test_beds_have_their_own_start_times_and_stitch_on_one_lattice() -> None:
    truth, _ = _phantom((80, 96, 96))
    spec = _spec()
    beds = plan_beds(np.random.default_rng(0), spec, 24.0, truth, n_beds=2)
    assert [b.index for b in beds] == [0, 1]
    gap_h = beds[1].start_h - beds[0].start_h - spec.acquisition_s / 3600.0
    assert spec.bed_gap_min[0] / 60.0 <= gap_h <= spec.bed_gap_min[1] / 60.0
    # Neighbouring beds share `overlap_slices` slices, bed 0 superior (larger LPS z).
    z0 = beds[0].grid.origin_xyz_mm[2]
    z1 = beds[1].grid.origin_xyz_mm[2]
    assert z0 - z1 == pytest.approx((spec.bed_slices - spec.overlap_slices) * SPECT_MM)
    with pytest.raises(InputError):
        plan_beds(np.random.default_rng(0), spec, 24.0, truth, n_beds=0)


def test_fov_mask_excludes_what_no_bed_sees() -> None:
    truth, ct = _phantom((160, 64, 64))  # 384 mm long, one bed of 24 × 4.8 = 115 mm
    spec = _spec(matrix_xy=40)
    rng = np.random.default_rng(5)
    centre_z = _centre(truth)[2]
    beds = plan_beds(rng, replace(spec, axial_jitter_mm=0.0), 24.0, truth, n_beds=1, axial_centre_mm=centre_z)
    pose = _rigid((0.0, 0.0, 7.0), _centre(truth))
    scan = simulate_spect(
        truth.with_array(np.ones(truth.shape, np.float32)), ct, spec, rng, pose, beds=beds, system=_system(spec)
    )
    z_mm = truth.index_to_physical(np.stack([np.arange(160.0), np.zeros(160), np.zeros(160)], axis=1))[:, 2]
    inside_z = np.asarray(scan.fov_mask.array.any(axis=(1, 2)), dtype=bool)
    # The bed covers z ∈ centre ± 57.6 mm in the scanner; the patient moved +7 mm, so truth z ∈ that − 7 mm.
    lo, hi = centre_z - 57.6 - 7.0, centre_z + 57.6 - 7.0
    assert inside_z[(z_mm > lo + 1.3) & (z_mm < hi - 1.3)].all()
    assert not inside_z[(z_mm < lo - 1.3) | (z_mm > hi + 1.3)].any()


# --------------------------------------------------------------------------------------------------------------
# resolution: point sources blur to the configured FWHM, deeper sources more
# --------------------------------------------------------------------------------------------------------------
def _measured_fwhm(scan_image: Volume, source_xyz_mm: np.ndarray, window_mm: float = 30.0) -> float:
    """FWHM from the second moment about the known source position, averaged over the three axes."""
    idx = np.indices(scan_image.shape).reshape(3, -1).T.astype(float)
    pos = scan_image.index_to_physical(idx)
    values = scan_image.array.reshape(-1).astype(np.float64)
    near = np.all(np.abs(pos - source_xyz_mm) < window_mm, axis=1)
    weights = values[near] / values[near].sum()
    variance = float((weights[:, None] * (pos[near] - source_xyz_mm) ** 2).sum(axis=0).mean())
    variance += TRUTH_MM**2 / 12.0  # the source is one truth voxel, a box of 2.4 mm
    return FWHM_PER_SIGMA * math.sqrt(variance)


@pytest.mark.slow
def test_point_sources_blur_to_the_configured_fwhm_and_more_with_depth() -> None:
    truth, ct = _phantom((64, 100, 100), half_width_mm=110.0)
    spec = _spec(matrix_xy=56, bed_slices=36, noise_cv_range=(1e-4, 1e-4), deadtime_per_mbq=0.0)
    system = _system(spec, fwhm_mm=13.0)
    rng = np.random.default_rng(11)
    # Depth below the −y surface (body spans y, x ∈ ±110 mm around the centre): shallow 20 mm, deep 90 mm (the
    # distance to every other surface is larger); the two lie 70 mm apart in y, sources 72 mm apart in z.
    cy = (100 - 1) / 2.0
    depths_mm = {"shallow": 20.0, "deep": 90.0}
    measured: dict[str, list[float]] = {"shallow": [], "deep": []}
    for _ in range(6):  # random sub-voxel shifts average the interpolation part of the blur, as in a cohort
        act = np.zeros(truth.shape, dtype=np.float32)
        sources = []
        for name, depth in depths_mm.items():
            for jz in (16, 46):
                jy = round(cy - (110.0 - depth) / TRUTH_MM) + int(rng.integers(0, 2))
                jz_ = jz + int(rng.integers(0, 2))
                jx = 49 + int(rng.integers(0, 2))
                act[jz_, jy, jx] = 1e9
                sources.append((name, np.array([jx, jy, jz_], dtype=float) * TRUTH_MM))
        shift = tuple(float(v) for v in rng.uniform(-SPECT_MM, SPECT_MM, 3))
        pose = _rigid(shift, _centre(truth))  # type: ignore[arg-type]
        beds = plan_beds(rng, spec, 24.0, truth, n_beds=1)
        scan = simulate_spect(truth.with_array(act), ct, spec, rng, pose, beds=beds, system=system)
        for name, p in sources:
            source = pose.forward(p[:, None])[:, 0]
            measured[name].append(_measured_fwhm(scan.activity_bq_per_ml, source))

    def model(depth_mm: float) -> float:  # the stated depth law, written out here
        return 13.0 * (1.0 + spec.depth_gain_per_100mm * (depth_mm - spec.depth_reference_mm) / 100.0)

    shallow, deep = float(np.mean(measured["shallow"])), float(np.mean(measured["deep"]))
    assert shallow == pytest.approx(model(20.0), rel=0.03)
    assert deep == pytest.approx(model(90.0), rel=0.03)
    assert deep > 1.1 * shallow


# --------------------------------------------------------------------------------------------------------------
# noise: voxel CV in a uniform organ 10–20 % at clinical counts, scaling with √counts
# --------------------------------------------------------------------------------------------------------------
def _organ_cv(activity_in_organ_mbq: float, seed: int) -> tuple[float, float]:
    truth, ct = _phantom((60, 96, 96))
    z, y, x = np.indices(truth.shape)
    organ = (np.abs(z - 30) * TRUTH_MM < 50) & (np.abs(y - 48) * TRUTH_MM < 50) & (np.abs(x - 48) * TRUTH_MM < 50)
    concentration = activity_in_organ_mbq * BQ_PER_MBQ / (organ.sum() * truth.voxel_volume_ml)
    act = np.where(organ, concentration, 0.0).astype(np.float32)
    spec = _spec(bed_slices=40)
    rng = np.random.default_rng(seed)
    beds = plan_beds(rng, replace(spec, axial_jitter_mm=0.0), 24.0, truth, n_beds=1)
    scan = simulate_spect(truth.with_array(act), ct, spec, rng, Pose.identity(), beds=beds, system=_system(spec))
    image = scan.activity_bq_per_ml
    idx = np.indices(image.shape).reshape(3, -1).T.astype(float)
    pos = image.index_to_physical(idx) - np.array([47.5, 47.5, 29.5]) * TRUTH_MM
    interior = np.all(np.abs(pos) < 50.0 - 20.0, axis=1)  # 20 mm ≫ 2σ of the blur away from the organ's edge
    values = image.array.reshape(-1)[interior]
    return float(values.std() / values.mean()), float(scan.truth.noise_cv[0])


def test_spect_organ_noise_is_in_the_clinical_range_and_scales_with_counts() -> None:
    # ≈ 1.5 GBq seen at 24 h after 7.4 GBq (docs/synthetic-cohort.md: ≈ 50 % excreted by 4 h, organs and tumour hold the
    # rest).
    cv_high, stated_high = _organ_cv(1500.0, seed=1)
    cv_low, _ = _organ_cv(750.0, seed=2)
    assert 0.10 <= cv_high <= 0.20
    assert cv_high == pytest.approx(stated_high, rel=0.15)
    assert cv_low / cv_high == pytest.approx(math.sqrt(2.0), rel=0.12)  # Poisson statistics of the projections


# --------------------------------------------------------------------------------------------------------------
# pose
# --------------------------------------------------------------------------------------------------------------
def test_pose_moves_a_marker_by_the_pose_translation_and_rotation() -> None:
    grid = Volume(np.zeros((50, 50, 50), dtype=np.float32), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), unit="Bq/mL")
    marker = np.zeros(grid.shape, dtype=np.float32)
    marker[20:23, 30:33, 14:17] = 1.0  # 6 mm cube centred at index (21, 31, 15) → x, y, z = 30, 62, 42 mm
    p = np.array([30.0, 62.0, 42.0])
    centre = (49.0, 49.0, 49.0)
    for pose in (
        Pose(translation_xyz_mm=(7.0, -4.0, 5.5), centre_xyz_mm=centre),
        Pose(rotation_deg_xyz=(2.0, -1.5, 3.0), translation_xyz_mm=(-3.0, 6.0, 1.0), centre_xyz_mm=centre),
    ):
        moved = apply_pose(grid.with_array(marker), pose, grid, kind="activity")
        w = moved.array / moved.array.sum()
        idx = np.indices(grid.shape).reshape(3, -1).T.astype(float)
        centroid = (w.reshape(-1)[:, None] * grid.index_to_physical(idx)).sum(axis=0)
        # Expected position written out: R(p − c) + c + t with R = Rz·Ry·Rx.
        ax, ay, az = np.deg2rad(pose.rotation_deg_xyz)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        expected = rz @ ry @ rx @ (p - centre) + centre + np.asarray(pose.translation_xyz_mm)
        np.testing.assert_allclose(centroid, expected, atol=0.1)
        assert moved.array.sum() == pytest.approx(marker.sum(), rel=1e-5)  # the marker stays inside: conserved


def test_random_pose_stays_within_its_limits_and_inverts() -> None:
    grid = Volume(np.zeros((60, 60, 60), dtype=np.uint8), (4.0, 4.0, 4.0))
    spec = PoseSpec(
        shift_sd_mm=5.0, shift_max_mm=9.0, rotation_sd_deg=2.0, rotation_max_deg=3.0, deformation_rms_mm=2.0
    )
    rng = np.random.default_rng(8)
    for _ in range(20):
        pose = random_pose(rng, spec, grid)
        assert np.all(np.abs(pose.rotation_deg_xyz) <= 3.0)
        assert np.all(np.abs(pose.translation_xyz_mm) <= 9.0)
        assert pose.as_dict()["deformation_rms_mm"] == pytest.approx(2.0, rel=1e-6)
    points = rng.uniform(20.0, 220.0, (3, 200))
    np.testing.assert_allclose(pose.forward(pose.inverse(points)), points, atol=0.02)


def test_deformed_pose_conserves_activity_and_keeps_concentration_near_one() -> None:
    grid = Volume(np.zeros((40, 40, 40), dtype=np.float32), (4.0, 4.0, 4.0), unit="Bq/mL")
    z, y, x = np.indices(grid.shape)
    inside = (np.abs(z - 19.5) < 12) & (np.abs(y - 19.5) < 12) & (np.abs(x - 19.5) < 12)
    uniform = grid.with_array(inside.astype(np.float32))
    pose = random_pose(np.random.default_rng(2), PoseSpec(deformation_rms_mm=2.0), grid)
    moved = apply_pose(uniform, pose, grid, kind="activity")
    assert moved.array.sum() == pytest.approx(uniform.array.sum(), rel=1e-5)
    core = (np.abs(z - 19.5) < 7) & (np.abs(y - 19.5) < 7) & (np.abs(x - 19.5) < 7)
    # Interior concentration changes only by the local volume change det(I + ∇u) ≈ 1 ± a few %.
    assert np.all(np.abs(moved.array[core] - 1.0) < 0.1)


def test_apply_pose_nearest_keeps_labels() -> None:
    grid = Volume(np.zeros((20, 20, 20), dtype=np.int16), (3.0, 3.0, 3.0), unit="label")
    labels = grid.array.copy()
    labels[5:15, 5:15, 5:15] = 7
    out = apply_pose(grid.with_array(labels), _rigid((3.0, 0.0, 0.0), (30.0, 30.0, 30.0)), grid, kind="nearest")
    assert out.array.dtype == np.int16
    assert set(np.unique(out.array)) == {0, 7}
    assert (out.array == 7).sum() == (labels == 7).sum()  # a whole-voxel shift moves the block intact


# --------------------------------------------------------------------------------------------------------------
# PET and CT
# --------------------------------------------------------------------------------------------------------------
def test_suv_definition() -> None:
    # SUVbw = C · weight / injected: 5000 Bq/mL · 80 000 g / 200 MBq = 2.0 g/mL.
    # The synthetic cohort converts through ludl.physics.units (one SUV formula for every layer).
    assert float(suv_bw(5000.0, 80.0, 200.0)) == pytest.approx(2.0)
    assert float(bq_per_ml_from_suv(2.0, 80.0, 200.0)) == pytest.approx(5000.0)
    with pytest.raises(InputError):
        bq_per_ml_from_suv(1.0, 0.0, 200.0)


def test_pet_liver_noise_and_suv_scale() -> None:
    truth, _ = _phantom((60, 80, 80))
    z, y, x = np.indices(truth.shape)
    liver = (np.abs(z - 30) * TRUTH_MM < 50) & (np.abs(y - 40) * TRUTH_MM < 60) & (np.abs(x - 40) * TRUTH_MM < 60)
    suv = np.where(liver, 5.0, 0.0).astype(np.float32)  # liver SUVmean ≈ 5 (Li 2017, DCFPyL)
    rng = np.random.default_rng(6)
    pose = random_pose(rng, PoseSpec(), truth)
    pet = simulate_pet(truth.with_array(suv, unit="SUV"), PetSpec(spacing_mm=4.8), rng, pose)
    assert pet.unit == "SUV"
    idx = np.indices(pet.shape).reshape(3, -1).T.astype(float)
    ref_pos = pose.inverse(pet.index_to_physical(idx).T).T - np.array([39.5, 39.5, 29.5]) * TRUTH_MM
    interior = np.all(np.abs(ref_pos) < np.array([60.0, 60.0, 50.0]) - 12.0, axis=1)
    values = pet.array.reshape(-1)[interior]
    assert float(values.mean()) == pytest.approx(5.0, rel=0.03)
    assert 0.12 <= float(values.std() / values.mean()) <= 0.18  # ≈ 15 % in liver (EJNMMI Phys 2022)
    total = float(pet.array.sum(dtype=np.float64)) * pet.voxel_volume_ml
    assert total == pytest.approx(float(suv.sum(dtype=np.float64)) * truth.voxel_volume_ml, rel=0.02)


def test_ct_noise_level_and_air_outside() -> None:
    _, ct = _phantom((40, 96, 96))
    grid = ct_grid(Volume(np.zeros((20, 48, 48), np.uint8), (SPECT_MM,) * 3, (0.0, 0.0, 0.0)), upsample=2)
    assert grid.spacing_zyx_mm == pytest.approx((TRUTH_MM,) * 3)
    image = simulate_ct(ct, grid, Pose.identity(), np.random.default_rng(0), noise_hu=20.0)
    idx = np.indices(image.shape).reshape(3, -1).T.astype(float)
    pos = image.index_to_physical(idx) - np.array([47.5, 47.5, 19.5]) * TRUTH_MM
    values = image.array.reshape(-1)
    inner = np.all(np.abs(pos[:, :2]) < 90.0, axis=1)
    outer = np.any(np.abs(pos[:, :2]) > 105.0, axis=1) & np.all(np.abs(pos[:, :2]) < 110.0, axis=1)
    assert float(values[inner].mean()) == pytest.approx(40.0, abs=2.0)
    assert float(values[inner].std()) == pytest.approx(20.0, rel=0.1)
    assert float(values[outer].mean()) == pytest.approx(-1000.0, abs=5.0)
    assert image.array.min() >= -1024.0


def test_simulate_spect_rejects_mismatched_maps() -> None:
    truth, ct = _phantom((20, 30, 30))
    spec = _spec(matrix_xy=20, bed_slices=10, overlap_slices=2)
    beds = plan_beds(np.random.default_rng(0), spec, 4.0, truth, n_beds=2)
    with pytest.raises(InputError):
        simulate_spect([truth, truth, truth], ct, spec, np.random.default_rng(0), Pose.identity(), beds=beds)
