"""Resampling: conservation of ∫ C dV checked against independent overlap/brute-force integrals, interpolation
against analytic fields, transform convention against a known shift."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk

from ludl.errors import GeometryError, InputError
from ludl.imaging import Volume
from ludl.imaging.registration import rigid_transform
from ludl.imaging.resample import grid_with_spacing, resample_spacing, resample_to


def _grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> Volume:
    return Volume(np.zeros(shape, dtype=np.uint8), spacing, origin_xyz_mm=origin)


def _overlap_fractions(moving: Volume, reference: Volume) -> list[npt.NDArray[np.float64]]:
    """Per-axis share of each moving voxel inside the reference box (axis-aligned grids), in (x, y, z) order."""
    lo = np.asarray(reference.origin_xyz_mm) - np.asarray(reference.spacing_xyz_mm) / 2
    hi = lo + np.asarray(reference.spacing_xyz_mm) * np.asarray(reference.shape[::-1])
    fractions = []
    for axis in range(3):
        s = moving.spacing_xyz_mm[axis]
        centres = moving.origin_xyz_mm[axis] + np.arange(moving.shape[2 - axis]) * s
        inside = np.minimum(centres + s / 2, hi[axis]) - np.maximum(centres - s / 2, lo[axis])
        fractions.append(np.clip(inside, 0, None) / s)
    return fractions


@pytest.fixture
def random_activity() -> Volume:
    rng = np.random.default_rng(1)
    return Volume(rng.random((20, 24, 28)), (2.0, 2.0, 2.0), origin_xyz_mm=(1.0, 2.0, 3.0), unit="Bq/mL")


def test_integer_downsampling_equals_block_mean(random_activity: Volume) -> None:
    reference = _grid((10, 12, 14), (4.0, 4.0, 4.0), (2.0, 3.0, 4.0))
    out = resample_to(random_activity, reference, kind="activity")
    expected = random_activity.array.reshape(10, 2, 12, 2, 14, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(out.array, expected, rtol=1e-12)
    assert out.unit == "Bq/mL" and out.same_grid(reference)


def test_aligned_arbitrary_grid_conserves_integral_over_overlap(random_activity: Volume) -> None:
    reference = _grid((11, 13, 9), (3.3, 4.1, 5.7), (5.0, 7.0, 9.0))  # cuts through the moving field of view
    out = resample_to(random_activity, reference, kind="activity")
    fx, fy, fz = _overlap_fractions(random_activity, reference)
    expected = (random_activity.array * fz[:, None, None] * fy[None, :, None] * fx[None, None, :]).sum()
    expected *= random_activity.voxel_volume_ml
    assert out.array.sum() * reference.voxel_volume_ml == pytest.approx(expected, rel=1e-10)


def test_aligned_upsampling_conserves_total(random_activity: Volume) -> None:
    reference = _grid((50, 60, 70), (0.9, 0.85, 0.83), (-1.0, -1.0, -1.0))  # covers the whole moving image
    out = resample_to(random_activity, reference, kind="activity")
    total = random_activity.array.sum() * random_activity.voxel_volume_ml
    assert out.array.sum() * reference.voxel_volume_ml == pytest.approx(total, rel=1e-10)


def test_flipped_and_permuted_reference_reorders_exactly(random_activity: Volume) -> None:
    # Same voxels, stored with z and x flipped: the exact path must just reorder the array.
    flip = np.diag([-1.0, 1.0, -1.0])
    end = random_activity.index_to_physical(np.asarray(random_activity.shape, dtype=float) - 1)
    reference = Volume(
        np.zeros(random_activity.shape), random_activity.spacing_zyx_mm, (end[0], 2.0, end[2]), direction=flip
    )
    out = resample_to(random_activity, reference, kind="activity")
    np.testing.assert_allclose(out.array, random_activity.array[::-1, :, ::-1], rtol=1e-12)
    # Index axes swapped (x ↔ y): the array is transposed.
    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    reference = Volume(np.zeros((20, 28, 24)), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0), direction=swap)
    out = resample_to(random_activity, reference, kind="activity")
    np.testing.assert_allclose(out.array, np.transpose(random_activity.array, (0, 2, 1)), rtol=1e-12)


def _brute_force_inside(moving: Volume, reference: Volume, transform: sitk.Transform, n: int = 8) -> float:
    """∫ C dV over the moving voxels' sub-points that map into the reference box (independent Monte Carlo grid)."""
    sub = (np.arange(n) + 0.5) / n - 0.5
    offsets = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(-1, 3)
    nonzero = np.argwhere(moving.array != 0)
    points = (nonzero[:, None, :] + offsets[None]).reshape(-1, 3)
    values = np.repeat(moving.array[moving.array != 0], n**3) / n**3
    inverse = transform.GetInverse()
    physical = moving.index_to_physical(points)
    mapped = np.array([inverse.TransformPoint(tuple(p)) for p in physical[:: max(1, len(physical) // 400000)]])
    if len(mapped) != len(physical):
        raise AssertionError("test grid too large for brute force")
    index = reference.physical_to_index(mapped)
    inside = ((index >= -0.5) & (index <= np.asarray(reference.shape) - 0.5)).all(axis=1)
    return float((values * inside).sum() * moving.voxel_volume_ml)


def test_rotated_transform_conserves_total_and_keeps_interior_values() -> None:
    array = np.zeros((16, 18, 20))
    array[4:12, 5:13, 6:15] = 5.0  # a uniform block well inside both fields of view
    moving = Volume(array, (2.0, 2.0, 2.0), origin_xyz_mm=(0.0, 0.0, 0.0), unit="Bq/mL")
    reference = _grid((24, 26, 30), (1.7, 1.6, 1.5), (-4.0, -4.0, -4.0))
    transform = rigid_transform((6.0, -4.0, 9.0), (1.3, -0.7, 0.9), (19.0, 17.0, 15.0))
    out = resample_to(moving, reference, kind="activity", transform=transform)
    total = array.sum() * moving.voxel_volume_ml
    assert out.array.sum() * reference.voxel_volume_ml == pytest.approx(total, rel=1e-3)
    # Deep inside the block (≥ 2 voxels from its rotated faces) the concentration is untouched.
    ref_points = reference.index_to_physical(np.argwhere(np.ones(reference.shape, dtype=bool)))
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in ref_points])
    idx = moving.physical_to_index(mapped)
    deep = ((idx >= [4 + 2, 5 + 2, 6 + 2]) & (idx <= [11 - 2, 12 - 2, 14 - 2])).all(axis=1).reshape(reference.shape)
    assert deep.sum() > 50
    np.testing.assert_allclose(out.array[deep], 5.0, rtol=5e-3)


def test_rotated_transform_partial_field_of_view_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    array = np.zeros((12, 14, 16))
    array[3:9, 3:11, 3:13] = rng.random((6, 8, 10))
    moving = Volume(array, (2.0, 2.0, 2.0), unit="Bq/mL")
    reference = _grid((10, 14, 12), (2.5, 2.0, 1.5), (4.0, -2.0, -2.0))  # cuts the object
    transform = rigid_transform((5.0, 3.0, -7.0), (0.5, 1.0, -0.5), (15.0, 13.0, 11.0))
    out = resample_to(moving, reference, kind="activity", transform=transform)
    expected = _brute_force_inside(moving, reference, transform)
    assert 0 < expected < array.sum() * moving.voxel_volume_ml  # really partial
    assert out.array.sum() * reference.voxel_volume_ml == pytest.approx(expected, rel=1e-3)


def test_linear_reproduces_a_linear_field_and_transform_convention() -> None:
    reference = _grid((8, 9, 10), (2.0, 2.0, 2.0), (10.0, 10.0, 10.0))
    moving_grid = _grid((20, 20, 20), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    coords = moving_grid.index_to_physical(np.argwhere(np.ones(moving_grid.shape, dtype=bool)))

    def field(xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return 3.0 * xyz[..., 0] - 2.0 * xyz[..., 1] + 0.5 * xyz[..., 2] + 7.0

    moving = moving_grid.with_array(field(coords).reshape(moving_grid.shape), unit="Bq/mL")
    shift = np.array([1.3, -0.8, 2.1])
    out = resample_to(moving, reference, kind="linear", transform=rigid_transform(translation_mm=tuple(shift)))
    ref_points = reference.index_to_physical(np.argwhere(np.ones(reference.shape, dtype=bool)))
    # The transform maps reference points to moving points: out(p) = field(p + t).
    np.testing.assert_allclose(out.array.ravel(), field(ref_points + shift), rtol=1e-9, atol=1e-9)


def test_nearest_keeps_label_values_and_dtypes() -> None:
    labels = np.zeros((10, 10, 10), dtype=np.int16)
    labels[2:5, 2:5, 2:5] = 3
    labels[6:9, 6:9, 6:9] = 11
    volume = Volume(labels, (2.0, 2.0, 2.0), unit="label")
    out = resample_to(volume, _grid((13, 13, 13), (1.5, 1.5, 1.5), (0.1, 0.1, 0.1)), kind="nearest")
    assert out.array.dtype == np.int16 and set(np.unique(out.array)) == {0, 3, 11}
    mask = Volume(labels > 0, (2.0, 2.0, 2.0), unit="mask")
    assert resample_to(mask, volume, kind="nearest").array.dtype == np.bool_


def test_resample_spacing_keeps_centre_and_conserves() -> None:
    volume = Volume(np.random.default_rng(2).random((12, 12, 12)), (2.0, 2.0, 2.0), (5.0, 6.0, 7.0), unit="Bq/mL")
    out = resample_spacing(volume, (4.0, 3.0, 6.0), kind="activity")
    assert out.shape == (6, 8, 4) and out.spacing_zyx_mm == (4.0, 3.0, 6.0)
    centre_old = volume.index_to_physical((np.asarray(volume.shape) - 1) / 2)
    centre_new = out.index_to_physical((np.asarray(out.shape) - 1) / 2)
    np.testing.assert_allclose(centre_new, centre_old, atol=1e-9)
    total = volume.array.sum() * volume.voxel_volume_ml
    assert out.array.sum() * out.voxel_volume_ml == pytest.approx(total, rel=1e-10)
    assert grid_with_spacing(volume, (24.0, 24.0, 24.0)).shape == (1, 1, 1)


def test_default_fills_outside_field_of_view() -> None:
    volume = Volume(np.ones((4, 4, 4)), (1.0, 1.0, 1.0), unit="HU")
    out = resample_to(volume, _grid((4, 4, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), default=-1000.0)
    np.testing.assert_array_equal(out.array[:, :, 4:], -1000.0)
    np.testing.assert_array_equal(out.array[:, :, :3], 1.0)


def test_invalid_requests_raise() -> None:
    labels = Volume(np.zeros((4, 4, 4), dtype=np.int16), (1.0, 1.0, 1.0), unit="label")
    with pytest.raises(InputError, match="nearest"):
        resample_to(labels, labels, kind="linear")
    bad = Volume(np.full((4, 4, 4), np.nan), (1.0, 1.0, 1.0), unit="Bq/mL")
    with pytest.raises(InputError, match="finite"):
        resample_to(bad, bad, kind="activity")
    with pytest.raises(InputError, match="kind"):
        resample_to(bad, bad, kind="cubic")  # type: ignore[arg-type]
    good = bad.with_array(np.ones((4, 4, 4)))
    bspline = sitk.BSplineTransformInitializer(good.to_sitk(), [2, 2, 2])
    params = np.asarray(bspline.GetParameters())
    bspline.SetParameters(tuple(np.random.default_rng(0).normal(0, 0.5, params.size)))
    with pytest.raises(GeometryError, match="affine"):
        resample_to(good, good, kind="activity", transform=bspline)


@pytest.mark.parametrize(
    ("unit", "kind"),
    [
        ("label", "nearest"),
        ("mask", "nearest"),
        ("Bq/mL", "activity"),
        ("MBq/mL", "activity"),
        ("MBq*h/mL", "activity"),
        ("counts", "activity"),
        ("SUV", "activity"),
        ("HU", "linear"),
        ("Gy", "linear"),
        ("g/mL", "linear"),
        ("1", "linear"),
    ],
)
def test_unit_decides_the_interpolation(unit: str, kind: str) -> None:
    assert Volume(np.zeros((2, 2, 2)), (1.0, 1.0, 1.0), unit=unit).resample_kind == kind


def test_default_kind_conserves_activity_and_keeps_labels() -> None:
    # A 2×2×2 block of 1 mL voxels onto one 8 mL voxel: conserving gives the block mean (∫ C dV = 8·mean),
    # nearest/linear would give a corner value or an interpolated one at the block centre.
    values = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    coarse = Volume(np.zeros((1, 1, 1)), (2.0, 2.0, 2.0), origin_xyz_mm=(0.5, 0.5, 0.5))
    activity = resample_to(Volume(values, (1.0, 1.0, 1.0), unit="Bq/mL"), coarse)
    assert float(activity.array[0, 0, 0]) == pytest.approx(values.mean())
    labels = Volume(np.array([[[3, 3], [3, 3]], [[3, 3], [3, 3]]], dtype=np.int16), (1.0, 1.0, 1.0), unit="label")
    out = resample_to(labels, coarse)
    assert out.array.dtype == np.int16 and int(out.array[0, 0, 0]) == 3


def test_ct_outside_its_field_of_view_is_air() -> None:
    ct = Volume(np.full((4, 4, 4), 40.0), (1.0, 1.0, 1.0), unit="HU")
    out = resample_to(ct, _grid((4, 4, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    np.testing.assert_array_equal(out.array[:, :, 5:], -1000.0)  # air, not 0 HU (water)
    np.testing.assert_array_equal(out.array[:, :, :3], 40.0)
    density = Volume(np.ones((4, 4, 4)), (1.0, 1.0, 1.0), unit="g/mL")
    np.testing.assert_array_equal(resample_to(density, out).array[:, :, 5:], 0.0)
