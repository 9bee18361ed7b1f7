"""Rigid registration: recover a known pose of an analytic CT-like phantom, determinism, quality flags."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from ludl.errors import InputError
from ludl.imaging import Volume
from ludl.imaging.registration import register_rigid, registration_quality, rigid_transform

SPACING_MM = 4.0


def _phantom_hu(p: npt.NDArray[np.float64], squash_x: float = 1.0) -> npt.NDArray[np.float64]:
    """HU of an analytic torso at LPS points (…, 3): body, lungs, liver, kidneys, spine (textbook HU values)."""
    x, y, z = p[..., 0] / squash_x, p[..., 1], p[..., 2]
    hu = np.full(p.shape[:-1], -1000.0)
    body = ((x / 150) ** 2 + (y / 100) ** 2 <= 1) & (np.abs(z) <= 110)
    hu[body] = 0.0
    for side in (-1, 1):
        lung = ((x - side * 60) / 45) ** 2 + (y / 55) ** 2 + ((z - 50) / 60) ** 2 <= 1
        hu[lung & body] = -800.0
        kidney = ((x - side * 55) / 20) ** 2 + ((y - 40) / 25) ** 2 + ((z + 50) / 35) ** 2 <= 1
        hu[kidney] = 35.0
    hu[((x + 50) / 55) ** 2 + ((y + 10) / 45) ** 2 + ((z + 20) / 40) ** 2 <= 1] = 60.0
    hu[((x / 15) ** 2 + ((y - 60) / 15) ** 2 <= 1) & body] = 700.0
    return hu


def _ct(
    map_points: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None = None, squash_x: float = 1.0
) -> Volume:
    shape = (64, 64, 88)
    nz, ny, nx = shape
    origin = (-(nx - 1) / 2 * SPACING_MM, -(ny - 1) / 2 * SPACING_MM, -(nz - 1) / 2 * SPACING_MM)
    grid = Volume(np.zeros(shape, dtype=np.float32), (SPACING_MM,) * 3, origin_xyz_mm=origin, unit="HU")
    points = grid.index_to_physical(np.argwhere(np.ones(shape, dtype=bool)))
    if map_points is not None:
        points = map_points(points)
    return grid.with_array(_phantom_hu(points, squash_x).reshape(shape).astype(np.float32))


@pytest.fixture(scope="module")
def pose() -> tuple[Volume, Volume, object]:
    """Fixed phantom, and the phantom seen after a known rigid motion T (fixed points → moving points)."""
    truth = rigid_transform((2.0, -1.5, 3.0), (7.3, -5.1, 4.2), (0.0, 0.0, 0.0))
    inverse = truth.GetInverse()
    offset = np.asarray(inverse.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.array([inverse.TransformPoint(tuple(e)) for e in np.eye(3)]) - offset
    # moving(q) = fixed(T⁻¹ q): evaluate the analytic phantom at the inverse-mapped points.
    moving = _ct(lambda q: q @ matrix + offset)
    return _ct(), moving, truth


def test_recovers_known_shift_and_rotation_within_one_voxel(pose: tuple[Volume, Volume, object]) -> None:
    fixed, moving, truth = pose
    result = register_rigid(fixed, moving)
    rng = np.random.default_rng(0)
    points = rng.uniform([-140, -90, -100], [140, 90, 100], (300, 3))
    estimated = np.array([result.transform.TransformPoint(tuple(p)) for p in points])
    expected = np.array([truth.TransformPoint(tuple(p)) for p in points])  # type: ignore[attr-defined]
    assert np.linalg.norm(estimated - expected, axis=1).max() <= SPACING_MM
    np.testing.assert_allclose(result.rotation_deg, (2.0, -1.5, 3.0), atol=1.0)
    assert result.quality.ok, result.quality.reasons
    assert result.quality.correlation > 0.9


def test_registration_is_deterministic(pose: tuple[Volume, Volume, object]) -> None:
    fixed, moving, _ = pose
    first = register_rigid(fixed, moving, iterations=30)
    second = register_rigid(fixed, moving, iterations=30)
    assert first.transform.GetParameters() == second.transform.GetParameters()


def test_non_rigid_change_is_flagged(pose: tuple[Volume, Volume, object]) -> None:
    fixed, _, _ = pose
    squashed = _ct(squash_x=0.88)  # body 12 % narrower: no rigid motion explains it
    result = register_rigid(fixed, squashed)
    assert not result.quality.ok
    assert any("rigid" in reason or "correlation" in reason for reason in result.quality.reasons)


def test_unregistered_pose_scores_worse_than_registered(pose: tuple[Volume, Volume, object]) -> None:
    fixed, moving, truth = pose
    before = registration_quality(fixed, moving, rigid_transform())
    after = registration_quality(fixed, moving, truth)
    assert after.mean_abs_diff_hu < before.mean_abs_diff_hu
    assert after.ok and not before.ok


def test_rigid_transform_convention() -> None:
    # ITK Euler angles are right-handed: +90° about z takes +x to +y; translation is added after rotation.
    t = rigid_transform((0.0, 0.0, 90.0), (1.0, 2.0, 3.0), (10.0, 0.0, 0.0))
    np.testing.assert_allclose(t.TransformPoint((11.0, 0.0, 0.0)), (11.0, 3.0, 3.0), atol=1e-12)


def test_needs_ct_units() -> None:
    spect = Volume(np.zeros((4, 4, 4)), (4.0, 4.0, 4.0), unit="Bq/mL")
    with pytest.raises(InputError, match="HU"):
        register_rigid(spect, spect)
