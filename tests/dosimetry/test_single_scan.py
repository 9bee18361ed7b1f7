"""Single-scan partial-volume correction against analytic cases: a uniform sphere blurred by a known Gaussian PSF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ludl.dosimetry.dose import dose_map_gy
from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.single_scan import correct_region_doses, single_scan_factors
from ludl.errors import InputError

SPACING = (4.8, 4.8, 4.8)
FWHM_MM = 12.0
SHAPE = (36, 36, 36)


def _sphere(centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    z, y, x = np.indices(SHAPE).astype(np.float64)
    d2 = sum(((g + 0.5) * s - c) ** 2 for g, s, c in zip((z, y, x), SPACING, centre_mm, strict=True))
    return np.asarray(d2 <= radius_mm**2)


def _blur(array: np.ndarray) -> np.ndarray:
    # The scanner: a Gaussian PSF of FWHM_MM, independent of the code under test (nothing outside the grid).
    sigma = [FWHM_MM / (2.0 * np.sqrt(2.0 * np.log(2.0))) / s for s in SPACING]
    return np.asarray(ndimage.gaussian_filter(array, sigma, mode="constant", truncate=4.0))


@pytest.fixture
def two_spheres() -> tuple[RegionSet, np.ndarray]:
    """A hot 20 mm-radius lesion beside a cooler 30 mm-radius organ in a warm body; true TIA (MBq·h/mL)."""
    lesion = _sphere((86.0, 60.0, 86.0), 20.0)
    organ = _sphere((86.0, 118.0, 86.0), 30.0) & ~lesion
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[lesion], labels[organ] = 1, 2
    regions = RegionSet(labels, {"lesion_001": 1, "spleen": 2}, {"lesion_001": "lesion", "spleen": "organ"})
    tia = np.full(SHAPE, 0.5)
    tia[lesion], tia[organ] = 40.0, 4.0
    return regions, tia


def test_factors_recover_the_true_totals(two_spheres: tuple[RegionSet, np.ndarray]) -> None:
    regions, tia = two_spheres
    observed = _blur(tia)
    (factors,) = single_scan_factors([observed], regions, SPACING, FWHM_MM)
    for name in ("lesion_001", "spleen"):
        mask = regions.mask(name)
        # The GTM model is exact here: the corrected total equals the unblurred one.
        assert factors[name] * observed[mask].sum() == pytest.approx(tia[mask].sum(), rel=1e-3)
    assert factors["lesion_001"] > 1.2  # a 4 cm sphere at 12 mm FWHM loses a real share of its counts


def test_factors_are_linear_in_the_map(two_spheres: tuple[RegionSet, np.ndarray]) -> None:
    regions, tia = two_spheres
    observed = _blur(tia)
    one, scaled = single_scan_factors([observed, 37.0 * observed], regions, SPACING, FWHM_MM)
    # A constant τ times the activity map: correcting the activity then scaling is the same as correcting the TIA.
    for name in one:
        assert scaled[name] == pytest.approx(one[name], rel=1e-9)


@pytest.mark.parametrize("dose_method", ["ldm", "dvk"])
def test_corrected_dose_of_a_blurred_sphere(
    two_spheres: tuple[RegionSet, np.ndarray], dose_method: str, tmp_path: object
) -> None:
    regions, tia = two_spheres
    density = np.full(SHAPE, 1.04)
    cache = str(tmp_path)
    truth = dose_map_gy(tia, density, SPACING, dose_method, cache)
    result = correct_region_doses(
        _blur(tia), regions, density, SPACING, FWHM_MM, dose_method=dose_method, kernel_cache_dir=cache
    )
    for name in ("lesion_001", "spleen"):
        true_dose = float(truth[regions.mask(name)].mean())
        assert result.mean_dose_gy[name] == pytest.approx(true_dose, rel=0.02)
    # Without the correction the small hot sphere reads well low.
    lesion_true = float(truth[regions.mask("lesion_001")].mean())
    assert result.mean_dose_uncorrected_gy["lesion_001"] < 0.85 * lesion_true


def test_map_off_the_label_grid_is_refused(two_spheres: tuple[RegionSet, np.ndarray]) -> None:
    regions, tia = two_spheres
    with pytest.raises(InputError, match="label grid"):
        single_scan_factors([tia[:-1]], regions, SPACING, FWHM_MM)


def test_a_label_map_with_thousands_of_regions_is_refused_before_the_dense_system() -> None:
    from ludl.dosimetry.gtm_partition import MAX_GTM_REGIONS
    from ludl.dosimetry.regions import expand_regions

    labels = np.zeros((36, 36, 36), dtype=np.int32)
    labels[::2, ::2, ::2] = 1  # 18³ = 5,832 isolated voxels: one lesion each (a noise segmentation)
    regions = expand_regions(labels, {"lesion": 1})
    assert len(regions.values) == 18**3 > MAX_GTM_REGIONS
    with pytest.raises(InputError, match=r"5832 regions .* GB partial-volume system .* pvc=none"):
        single_scan_factors([np.ones(labels.shape)], regions, (4.8, 4.8, 4.8), 12.0)
