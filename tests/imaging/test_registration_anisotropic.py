"""Rigid registration on clinical, anisotropic CT grids: no SimpleITK failure, and a known pose recovered < 1 mm.

Clinical CTs are 0.6–1 mm in-plane × 1.25–5 mm slices on 512² matrices, or SPECT/CT low-dose CTs near
3.9 × 3.9 × 4.4 mm: an axis at or above the 4 mm working spacing next to a finer one used to give a zero Gaussian
width and a raw SimpleITK error. The pose is a known rotation + translation of an analytic phantom (its HU evaluated
at the inverse-mapped points), so the truth comes from the phantom, not from the registration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ludl.imaging import Volume
from ludl.imaging.registration import _working_image, register_rigid, rigid_transform
from tests.imaging.test_registration import _phantom_hu

ROTATION_DEG = (2.0, -1.5, 3.0)
TRANSLATION_MM = (7.3, -5.1, 4.2)


def _ct(shape: tuple[int, int, int], spacing_zyx_mm: tuple[float, float, float], motion: Any = None) -> Volume:
    """The analytic torso on a centred grid (slab by slab: a 512² × 80 grid has 21 M points), optionally moved."""
    nz, ny, nx = shape
    sz, sy, sx = spacing_zyx_mm
    origin = (-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz)
    grid = Volume(np.zeros(shape, dtype=np.float32), spacing_zyx_mm, origin_xyz_mm=origin, unit="HU")
    inverse: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
    if motion is not None:
        # moving(q) = fixed(T⁻¹ q): evaluate the phantom at the inverse-mapped points.
        inv = motion.GetInverse()
        offset = np.asarray(inv.TransformPoint((0.0, 0.0, 0.0)))
        inverse = (np.array([inv.TransformPoint(tuple(e)) for e in np.eye(3)]) - offset, offset)
    out = np.empty(shape, dtype=np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for z in range(nz):
        points = grid.index_to_physical(np.stack([np.full(yy.size, z), yy.ravel(), xx.ravel()], axis=-1))
        if inverse is not None:
            points = points @ inverse[0] + inverse[1]
        out[z] = _phantom_hu(points).reshape(ny, nx)
    return grid.with_array(out)


def _max_error_mm(transform: Any, truth: Any) -> float:
    """Largest distance between where `transform` and `truth` send points spread over the torso."""
    points = np.random.default_rng(0).uniform([-140, -90, -100], [140, 90, 100], (300, 3))
    got = np.array([transform.TransformPoint(tuple(p)) for p in points])
    want = np.array([truth.TransformPoint(tuple(p)) for p in points])
    return float(np.linalg.norm(got - want, axis=1).max())


CLINICAL_SHAPE, CLINICAL_SPACING = (80, 512, 512), (5.0, 0.98, 0.98)  # diagnostic CT, 5 mm slices


@pytest.fixture(scope="module")
def clinical_ct() -> Volume:
    """The 512 × 512 × 80 CT at 0.98 × 0.98 × 5 mm, reference pose."""
    return _ct(CLINICAL_SHAPE, CLINICAL_SPACING)


def test_recovers_a_known_pose_below_one_mm_on_a_512_matrix_5_mm_ct(clinical_ct: Volume) -> None:
    truth = rigid_transform(ROTATION_DEG, TRANSLATION_MM)
    result = register_rigid(clinical_ct, _ct(CLINICAL_SHAPE, CLINICAL_SPACING, truth))
    assert _max_error_mm(result.transform, truth) < 1.0
    assert result.quality.ok, result.quality.reasons


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((88, 128, 128), (4.4, 3.9, 3.9)),  # SPECT/CT low-dose CT, in-plane just under the working spacing
        ((176, 160, 160), (1.25, 2.0, 2.0)),  # thin slices, coarser in-plane
    ],
)
def test_recovers_a_known_pose_below_one_mm_on_anisotropic_grids(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    truth = rigid_transform(ROTATION_DEG, TRANSLATION_MM)
    result = register_rigid(_ct(shape, spacing), _ct(shape, spacing, truth))
    assert _max_error_mm(result.transform, truth) < 1.0
    assert result.quality.ok, result.quality.reasons


def test_fixed_and_moving_on_different_anisotropic_grids(clinical_ct: Volume) -> None:
    # Reference CT 0.98 × 0.98 × 5 mm (512²), later time point's CT on a SPECT/CT grid: one physical space.
    truth = rigid_transform(ROTATION_DEG, TRANSLATION_MM)
    result = register_rigid(clinical_ct, _ct((88, 128, 128), (4.4, 3.9, 3.9), truth))
    assert _max_error_mm(result.transform, truth) < 1.0


@pytest.mark.parametrize("spacing", [(5.0, 0.98, 0.98), (4.4, 3.9, 3.9), (4.0, 1.0, 4.0), (6.0, 6.0, 6.0)])
def test_working_image_is_isotropic_and_keeps_the_field_of_view(spacing: tuple[float, float, float]) -> None:
    ct = Volume(np.zeros((20, 30, 30), dtype=np.float32), spacing, unit="HU")
    working = _working_image(ct, 4.0)
    fov = np.asarray(ct.shape) * np.asarray(spacing)
    if min(spacing) >= 4.0:
        assert working.spacing_zyx_mm == spacing  # already at or coarser than the working grid: left as is
    else:
        assert working.spacing_zyx_mm == (4.0, 4.0, 4.0)
        np.testing.assert_allclose(np.asarray(working.shape) * 4.0, fov, atol=4.0)
    np.testing.assert_allclose(working.array, 0.0, atol=1e-3)  # a uniform image stays uniform
