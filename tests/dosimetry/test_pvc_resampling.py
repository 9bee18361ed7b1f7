"""GTM of a scan resampled onto the reference grid: the resampling's own blur is part of the PSF.

Analytic reference: activity-conserving resampling at a fraction u between two voxel centres averages them with
weights 1 − u and u, a kernel of variance u(1 − u)·s² per axis (s²/4 at half a voxel; s²/6 on average over u).
The phantom (uniform spheres of known concentration, Gaussian blur of known FWHM) gives the true values.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ludl.dosimetry.gtm_partition import resampling_variance_zyx_mm2
from ludl.dosimetry.nema import gtm_sphere_means, simulate_sphere_phantom
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume

SPACING_MM = 6.0
FWHM_MM = 12.0
SPHERES_MM = (22.0, 28.0, 37.0)  # 5.6, 11.5, 26.5 mL: the lesions ≥ 4 mL the accuracy bar is about


def _volume(array: np.ndarray, origin_mm: float) -> Volume:
    return Volume(np.asarray(array, dtype=np.float32), (SPACING_MM,) * 3, (origin_mm,) * 3, unit="Bq/mL")


def test_half_voxel_shift_adds_a_quarter_voxel_squared() -> None:
    """u = ½ on every axis: variance s²/4 per axis; the same grid without a transform: none."""
    grid = _volume(np.zeros((8, 9, 10)), 0.0)
    moving = _volume(np.zeros((8, 9, 10)), -SPACING_MM / 2)
    assert resampling_variance_zyx_mm2(moving, grid, None) == pytest.approx((SPACING_MM**2 / 4,) * 3, rel=1e-9)
    assert resampling_variance_zyx_mm2(grid, grid, None) == (0.0, 0.0, 0.0)


def test_rotation_averages_to_a_sixth_of_a_voxel_squared() -> None:
    """A rotation spreads u uniformly over the grid: the mean of u(1 − u) over uniform u is 1/6."""
    import SimpleITK as sitk

    grid = _volume(np.zeros((60, 60, 60)), 0.0)
    rotation = sitk.Euler3DTransform((180.0, 180.0, 180.0), 0.05, 0.04, 0.06, (1.3, -2.1, 0.7))
    variance = resampling_variance_zyx_mm2(grid, grid, rotation)
    assert variance == pytest.approx((SPACING_MM**2 / 6,) * 3, rel=0.05)


def test_gtm_with_the_resampling_blur_recovers_a_resampled_scan() -> None:
    """Spheres imaged half a voxel off the reference grid and resampled onto it: GTM with the PSF alone reads them
    low; with the resampling's blur added they come back to their true concentration (within 2 %)."""
    reference = simulate_sphere_phantom(FWHM_MM, SPACING_MM, sphere_conc=10.0, background=0.0, diameters_mm=SPHERES_MM)
    # The same phantom imaged on a grid shifted by half a voxel (its spheres half a voxel further along every index).
    shifted = simulate_sphere_phantom(FWHM_MM, SPACING_MM, 10.0, 0.0, SPHERES_MM, offset_mm=(SPACING_MM / 2,) * 3)
    moving = _volume(shifted.image, -SPACING_MM / 2)
    grid = _volume(reference.image, 0.0)
    resampled = np.asarray(resample_to(moving, grid, kind="activity").array, dtype=np.float64)
    scan = dataclasses.replace(reference, image=resampled)
    variance = resampling_variance_zyx_mm2(moving, grid, None)

    direct = gtm_sphere_means(reference, FWHM_MM) / 10.0 - 1.0
    psf_only = gtm_sphere_means(scan, FWHM_MM) / 10.0 - 1.0
    with_blur = gtm_sphere_means(scan, FWHM_MM, variance) / 10.0 - 1.0

    assert np.all(np.abs(direct) < 0.02)  # the reference scan itself: GTM exact up to the phantom's voxelisation
    assert np.all(psf_only < -0.03)  # resampled, PSF alone: under-corrected
    assert np.all(np.abs(with_blur) < 0.02)
    assert math.isclose(float(np.mean(with_blur)), float(np.mean(direct)), abs_tol=0.01)
