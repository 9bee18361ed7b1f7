"""Label maps drawn on a 2× finer grid brought onto the SPECT grid: majority vote against the analytic sphere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ludl.imaging.label_grid import label_fractions, majority_labels
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
