"""Label maps drawn on a 2× finer grid brought onto the SPECT grid: majority vote against the analytic sphere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ludl.imaging.label_grid import label_fractions, labels_with_fractions, majority_labels
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume

CENTRE_XYZ_MM = (1.3, -2.1, 0.7)
RADIUS_MM = 14.0


def _grids() -> tuple[Volume, Volume]:
    """A 3 mm label map with a sphere and the 6 mm grid it subdivides exactly (as the synthetic truth grid)."""
    coarse = Volume(np.zeros((16, 16, 16), dtype=np.float32), (6.0, 6.0, 6.0), (-45.0, -45.0, -45.0), unit="Bq/mL")
    n = 32
    origin = tuple(o - 1.5 for o in coarse.origin_xyz_mm)  # fine voxel centres sit 1.5 mm either side of coarse ones
    idx = np.indices((n, n, n)).astype(np.float64)
    z, y, x = (origin[2 - k] + 3.0 * idx[k] for k in range(3))
    inside = (x - CENTRE_XYZ_MM[0]) ** 2 + (y - CENTRE_XYZ_MM[1]) ** 2 + (z - CENTRE_XYZ_MM[2]) ** 2 <= RADIUS_MM**2
    fine = Volume(inside.astype(np.int16) * 7, (3.0, 3.0, 3.0), origin, unit="label")
    return fine, coarse


def _centroid_xyz(volume: Volume, value: int) -> np.ndarray:
    return np.asarray(volume.index_to_physical(np.argwhere(np.asarray(volume.array) == value).mean(axis=0)))


def test_majority_keeps_the_sphere_in_place_where_nearest_neighbour_moves_it() -> None:
    fine, coarse = _grids()
    majority = majority_labels(fine, coarse)
    assert majority is not None and majority.same_grid(coarse)
    exact_ml = 4.0 / 3.0 * math.pi * RADIUS_MM**3 / 1000.0
    volume_ml = float((np.asarray(majority.array) == 7).sum()) * 0.216
    assert volume_ml == pytest.approx(exact_ml, rel=0.08)
    shift = np.linalg.norm(_centroid_xyz(majority, 7) - np.asarray(CENTRE_XYZ_MM))
    nearest = resample_to(fine, coarse, kind="nearest")
    nearest_shift = np.linalg.norm(_centroid_xyz(nearest, 7) - np.asarray(CENTRE_XYZ_MM))
    assert shift < 0.8
    assert nearest_shift > 1.5 * shift


def test_other_directions_are_left_to_nearest_neighbour() -> None:
    fine, coarse = _grids()
    flipped = Volume(coarse.array, coarse.spacing_zyx_mm, coarse.origin_xyz_mm, np.diag([-1.0, 1.0, 1.0]), unit="Bq/mL")
    assert majority_labels(fine, flipped) is None


def test_tissue_fractions_conserve_the_fine_volume() -> None:
    fine, coarse = _grids()
    fractions = label_fractions(fine, coarse)
    majority = majority_labels(fine, coarse)
    assert fractions is not None and majority is not None
    voxel, value, fraction = fractions
    assert set(value.tolist()) == {7}
    # Shared voxels hold 1..7 of their 8 fine voxels; whole voxels are the majority voxels not listed as shared.
    assert np.all((fraction > 0) & (fraction < 1))
    assert np.allclose(fraction * 8, np.round(fraction * 8))
    whole = (np.asarray(majority.array) == 7).ravel()
    whole[voxel] = False
    fine_count = int((np.asarray(fine.array) == 7).sum())
    assert float(whole.sum() + fraction.sum()) * 8 == pytest.approx(fine_count, abs=1e-6)


def _slab_labels(offset_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[Volume, Volume]:
    """A clinical label grid (0.98 × 0.98 × 5 mm) with the analytic sphere drawn on it, and a 4.8 mm SPECT grid."""
    spect = Volume(np.zeros((24, 24, 24), dtype=np.float32), (4.8, 4.8, 4.8), (-55.2, -55.2, -55.2), unit="Bq/mL")
    shape = (22, 112, 112)
    spacing = (5.0, 0.98, 0.98)
    origin = tuple(-(n - 1) / 2 * s + d for n, s, d in zip(shape[::-1], spacing[::-1], offset_xyz_mm, strict=True))
    idx = np.indices(shape).astype(np.float64)
    z, y, x = (origin[2 - k] + spacing[k] * idx[k] for k in range(3))
    inside = (x - CENTRE_XYZ_MM[0]) ** 2 + (y - CENTRE_XYZ_MM[1]) ** 2 + (z - CENTRE_XYZ_MM[2]) ** 2 <= RADIUS_MM**2
    return Volume(inside.astype(np.int16) * 7, spacing, origin, unit="label"), spect


def _drawn_ml(labels: Volume) -> float:
    return float((np.asarray(labels.array) == 7).sum()) * labels.voxel_volume_ml


def _fraction_ml(labels: Volume, grid: Volume) -> float:
    """Volume of label 7 on `grid` from the tissue fractions: shared voxels' fractions plus whole majority voxels."""
    found = labels_with_fractions(labels, grid)
    assert found is not None
    majority, (voxel, value, fraction) = found
    whole = (np.asarray(majority.array) == 7).ravel()
    whole[voxel] = False
    return float(whole.sum() + fraction[value == 7].sum()) * grid.voxel_volume_ml


def test_thick_label_slices_leave_no_gap_and_keep_the_drawn_volume() -> None:
    # 5 mm label slices on a 4.8 mm grid: counting fine-voxel centres left every ~25th SPECT slice empty.
    labels, spect = _slab_labels()
    majority = majority_labels(labels, spect)
    assert majority is not None
    mask = np.asarray(majority.array) == 7
    z_with = np.flatnonzero(mask.any(axis=(1, 2)))
    assert np.all(np.diff(z_with) == 1)  # a contiguous run of slices
    # Exact overlaps conserve the drawn volume to float precision.
    assert _fraction_ml(labels, spect) == pytest.approx(_drawn_ml(labels), rel=1e-9)


@pytest.mark.parametrize("offset", [(1e-5, 1e-5, 1e-5), (-1e-5, -1e-5, -1e-5), (0.245, 0.245, 1.25)])
def test_fractions_move_continuously_with_the_label_grid(offset: tuple[float, float, float]) -> None:
    labels, spect = _slab_labels()
    moved = Volume(labels.array, labels.spacing_zyx_mm, tuple(np.add(labels.origin_xyz_mm, offset)), unit="label")
    # The same drawn voxels moved by a sub-voxel offset: the volume on the SPECT grid does not change at all.
    assert _fraction_ml(moved, spect) == pytest.approx(_fraction_ml(labels, spect), rel=1e-9)
    if max(abs(d) for d in offset) < 1e-3:
        a, b = majority_labels(labels, spect), majority_labels(moved, spect)
        assert a is not None and b is not None
        np.testing.assert_array_equal(a.array, b.array)  # float noise of an origin changes no whole voxel


def test_a_sliver_of_another_label_keeps_the_voxel_listed_with_both() -> None:
    # Label 7 poking 2e-4 mm (5e-5 of a voxel) into a coarse voxel otherwise filled by label 3.
    coarse = Volume(np.zeros((1, 1, 2), dtype=np.float32), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), unit="1")
    fine_array = np.zeros((1, 1, 4), dtype=np.int16)
    fine_array[0, 0, :2] = 7
    fine_array[0, 0, 2:] = 3
    fine = Volume(fine_array, (4.0, 4.0, 2.0), (-1.0 + 2e-4, 0.0, 0.0), unit="label")  # label 3 starts at x = 2 + 2e-4
    fractions = label_fractions(fine, coarse)
    assert fractions is not None
    voxel, value, fraction = fractions
    second = voxel == 1
    assert sorted(value[second].tolist()) == [3, 7]
    assert fraction[second & (value == 7)] == pytest.approx(5e-5)
    assert fraction[second].sum() == pytest.approx(1.0)
