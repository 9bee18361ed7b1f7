"""Partial-volume correction: recovery coefficients against the analytic sphere, GTM against known true means."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, ndimage

from ludl.dosimetry.pvc import (
    background_blocks,
    fractional_means,
    gtm_matrix,
    gtm_matrix_fractional,
    gtm_solve,
    pvc_factors,
    recovery_coefficients,
)
from ludl.errors import InputError

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _sphere_rc(radius_mm: float, fwhm_mm: float) -> float:
    """Mean of a Gaussian-blurred uniform sphere over the sphere (continuous, by quadrature).

    RC = (1/V) ∫ g(d) · V_overlap(d) 4πd² dd, with the overlap of two spheres of radius R at distance d
    V_overlap = π (4R + d)(2R − d)² / 12 and g the 3D Gaussian density of the displacement.
    """
    s = fwhm_mm * FWHM_TO_SIGMA
    volume = 4.0 / 3.0 * math.pi * radius_mm**3

    def integrand(d: float) -> float:
        g = math.exp(-(d**2) / (2 * s**2)) / (2 * math.pi * s**2) ** 1.5
        return g * math.pi * (4 * radius_mm + d) * (2 * radius_mm - d) ** 2 / 12.0 * 4 * math.pi * d**2

    value, _ = integrate.quad(integrand, 0.0, 2 * radius_mm)
    return value / volume


def _sphere_labels(radius_mm: float, spacing_mm: float, n: int) -> np.ndarray:
    c = (np.arange(n) - (n - 1) / 2) * spacing_mm
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return ((x**2 + y**2 + z**2) <= radius_mm**2).astype(np.int16)


@pytest.mark.parametrize(("radius_mm", "fwhm_mm"), [(10.0, 10.0), (6.0, 12.0), (20.0, 10.0)])
def test_sphere_recovery_matches_the_analytic_value(radius_mm: float, fwhm_mm: float) -> None:
    spacing = 1.0
    labels = _sphere_labels(radius_mm, spacing, int(2 * radius_mm + 6 * fwhm_mm) | 1)
    rc = recovery_coefficients(labels, {"lesion_001": 1}, (spacing,) * 3, fwhm_mm)["lesion_001"]
    assert rc == pytest.approx(_sphere_rc(radius_mm, fwhm_mm), rel=0.02)


def test_literature_magnitude_for_a_4ml_sphere() -> None:
    # docs/synthetic-cohort.md: a 4 mL sphere recovers ≈ 0.5 at 10 mm FWHM and ≈ 0.33 at 15 mm.
    radius = (3 * 4000.0 / (4 * math.pi)) ** (1 / 3)
    assert _sphere_rc(radius, 10.0) == pytest.approx(0.5, abs=0.06)
    labels = _sphere_labels(radius, 1.0, 71)
    assert recovery_coefficients(labels, {"a": 1}, (1.0,) * 3, 15.0)["a"] == pytest.approx(0.33, abs=0.05)


def test_gtm_recovers_true_means_of_adjacent_regions() -> None:
    # Two touching boxes and a warm background, blurred by the same PSF the method assumes.
    shape = (30, 40, 50)
    labels = np.zeros(shape, dtype=np.int16)
    labels[8:22, 10:30, 10:25] = 1
    labels[8:22, 10:30, 25:32] = 2
    true = {"liver": 4.0, "lesion_001": 20.0}
    background = 1.0
    image = np.full(shape, background)
    image[labels == 1], image[labels == 2] = true["liver"], true["lesion_001"]
    spacing, fwhm = (4.0, 4.0, 4.0), 12.0
    blurred = ndimage.gaussian_filter(image, [fwhm * FWHM_TO_SIGMA / s for s in spacing], mode="constant")
    values = {"liver": 1, "lesion_001": 2}
    observed = {n: float(blurred[labels == v].mean()) for n, v in values.items()}
    rest = float(blurred[labels == 0].mean())
    factors = pvc_factors("gtm", labels, values, observed, spacing, fwhm, rest_mean=rest)
    for name in values:
        assert observed[name] * factors[name] == pytest.approx(true[name], rel=0.01)
    # The recovery coefficient ignores spill-in from the hot neighbour: it over-corrects the liver.
    rc = pvc_factors("rc", labels, values, observed, spacing, fwhm)
    assert observed["liver"] * rc["liver"] > 1.02 * true["liver"]
    names, w = gtm_matrix(labels, values, spacing, fwhm)
    assert names[-1] == "_rest"
    # Columns of W sum to the blurred whole grid's mean over the region: ≤ 1, and ≈ 1 far from the border.
    assert np.all(w.sum(axis=0) <= 1.0 + 1e-9) and w.sum(axis=0)[0] == pytest.approx(1.0, abs=1e-3)


def test_none_and_bad_method() -> None:
    labels = np.ones((3, 3, 3), dtype=np.int16)
    assert pvc_factors("none", labels, {"a": 1}, {"a": 2.0}, (1.0,) * 3, 10.0) == {"a": 1.0}
    with pytest.raises(InputError, match="pvc='psf'"):
        pvc_factors("psf", labels, {"a": 1}, {"a": 2.0}, (1.0,) * 3, 10.0)
    with pytest.raises(InputError, match="fwhm_mm"):
        recovery_coefficients(labels, {"a": 1}, (1.0,) * 3, 0.0)


def test_background_blocks_let_gtm_see_a_hot_unlabelled_neighbour() -> None:
    # An organ next to a hot unlabelled slab (bowel-like) in a warm body, all blurred by the assumed PSF: one "rest"
    # mean for the whole background mis-states the spill-in; local background cubes recover the organ's true mean.
    shape = (32, 40, 48)
    labels = np.zeros(shape, dtype=np.int32)
    labels[8:24, 10:30, 10:22] = 1
    image = np.zeros(shape)
    body = np.zeros(shape, dtype=bool)
    body[2:30, 3:37, 3:45] = True
    image[body] = 1.0
    image[8:24, 10:30, 22:27] = 8.0  # the hot unlabelled slab touching the organ
    image[labels == 1] = 4.0
    spacing, fwhm = (4.0, 4.0, 4.0), 12.0
    blurred = ndimage.gaussian_filter(image, [fwhm * FWHM_TO_SIGMA / s for s in spacing], mode="constant")

    def organ_estimate(lab: np.ndarray, values: dict[str, int]) -> float:
        names, w = gtm_matrix(lab, values, spacing, fwhm)
        masks = [lab == values[n] for n in names[:-1]]
        rest = ~np.any(masks, axis=0)
        obs = np.array([*(blurred[m].mean() for m in masks), blurred[rest].mean()])
        return float(gtm_solve(w, obs)[names.index("organ")])

    single = organ_estimate(labels, {"organ": 1})
    extended, blocks = background_blocks(labels, body, spacing, 20.0, first_value=2)
    assert set(np.unique(extended[body & (labels == 0)])) == set(blocks.values())
    assert np.all(extended[~body] == 0) and np.all(extended[labels == 1] == 1)
    local = organ_estimate(extended, {"organ": 1, **blocks})
    assert abs(local / 4.0 - 1.0) < 0.03
    assert abs(single / 4.0 - 1.0) > 2 * abs(local / 4.0 - 1.0)


def test_gtm_solve_corrects_every_time_point_column_alike() -> None:
    # Linearity: a column of observations per time point gives the true means of each time point.
    labels = np.zeros((24, 24, 24), dtype=np.int16)
    labels[6:18, 6:18, 6:12] = 1
    labels[6:18, 6:18, 12:16] = 2
    spacing, fwhm = (4.0, 4.0, 4.0), 10.0
    values = {"a": 1, "b": 2}
    _, w = gtm_matrix(labels, values, spacing, fwhm)
    truth = np.array([[5.0, 2.0, 1.0], [30.0, 25.0, 20.0], [0.5, 0.2, 0.1]])  # a, b, rest over 3 time points
    observed = np.zeros_like(truth)
    for k in range(truth.shape[1]):
        image = np.full(labels.shape, truth[2, k])
        image[labels == 1], image[labels == 2] = truth[0, k], truth[1, k]
        blurred = ndimage.gaussian_filter(image, [fwhm * FWHM_TO_SIGMA / s for s in spacing], mode="constant")
        observed[:, k] = [blurred[labels == 1].mean(), blurred[labels == 2].mean(), blurred[labels == 0].mean()]
    np.testing.assert_allclose(gtm_solve(w, observed), truth, rtol=0.01, atol=1e-3)


def _fractional_partition(fine: np.ndarray, factor: int) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """Whole-voxel index (0 region, 1 rest, −1 shared) and fraction triples of a 0/1 fine map on a `factor`× grid."""
    shape = tuple(s // factor for s in fine.shape)
    share = fine.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))
    index = np.where(share >= 1.0, 0, 1).astype(np.int64)
    mixed = (share > 0) & (share < 1)
    index[mixed] = -1
    voxel = np.flatnonzero(mixed)
    triples = (
        np.concatenate([voxel, voxel]),
        np.concatenate([np.zeros(voxel.size, np.int64), np.ones(voxel.size, np.int64)]),
        np.concatenate([share.ravel()[voxel], 1.0 - share.ravel()[voxel]]),
    )
    return index, triples, share


def test_fractional_gtm_recovers_the_fine_mean_that_whole_voxels_dilute() -> None:
    # A 10 mm sphere drawn on 2 mm voxels, imaged on 4 mm voxels at 10 mm FWHM: the tissue-fraction effect of the
    # boundary voxels comes on top of the blur. Truth: concentration 10 in the sphere, 1 around it.
    fine = _sphere_labels(10.0, 2.0, 40).astype(np.float64)
    sigma = 10.0 * FWHM_TO_SIGMA / 4.0
    index, triples, share = _fractional_partition(fine, 2)
    activity = 1.0 + 9.0 * share  # activity-conserving downsampling of the true image
    observed = ndimage.gaussian_filter(activity, sigma, mode="constant", truncate=4.0)
    w, weights = gtm_matrix_fractional(index, 2, triples, (4.0,) * 3, 10.0)
    assert weights[0] * 8 == pytest.approx(fine.sum())  # the region's fine volume, in fine voxels / 8
    means = fractional_means(observed, index, 2, triples, weights)
    true = gtm_solve(w, means)
    assert true[0] == pytest.approx(10.0, rel=0.01)
    assert true[1] == pytest.approx(1.0, rel=0.02)
    # Whole voxels by majority (the previous model) read the sphere well below its true concentration.
    majority = (share >= 0.5).astype(np.int16)
    _, w_whole = gtm_matrix(majority, {"s": 1}, (4.0,) * 3, 10.0)
    obs_whole = [observed[majority == 1].mean(), observed[majority == 0].mean()]
    assert gtm_solve(w_whole, obs_whole)[0] < 0.95 * 10.0


def test_fractional_gtm_matches_whole_volume_blurs_and_treats_listed_whole_voxels_alike() -> None:
    labels = np.zeros((24, 30, 30), dtype=np.int16)
    labels[6:14, 8:20, 5:15] = 1
    labels[10:20, 12:22, 15:25] = 2
    spacing, fwhm = (4.0, 4.0, 4.0), 10.0
    index = np.where(labels == 1, 0, np.where(labels == 2, 1, 2)).astype(np.int64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    w, weights = gtm_matrix_fractional(index, 3, empty, spacing, fwhm)
    assert weights.tolist() == [float((labels == v).sum()) for v in (1, 2, 0)]
    # Brute force: blur each whole indicator over the whole grid (no boxes, no linearity shortcut for the rest).
    sigma = fwhm * FWHM_TO_SIGMA / 4.0
    blurred = [ndimage.gaussian_filter((labels == v).astype(float), sigma, mode="constant") for v in (1, 2, 0)]
    brute = np.array([[b[labels == v].mean() for v in (1, 2, 0)] for b in blurred])
    np.testing.assert_allclose(w, brute, atol=1e-6)
    # The same voxels listed as shared with fraction 1 take the shared-voxel road and give the same matrix.
    listed = np.flatnonzero(labels == 2)
    shared = index.copy()
    shared.ravel()[listed] = -1
    triples = (listed, np.ones(listed.size, np.int64), np.ones(listed.size))
    w_shared, weights_shared = gtm_matrix_fractional(shared, 3, triples, spacing, fwhm)
    np.testing.assert_allclose(w_shared, w, atol=1e-12)
    np.testing.assert_allclose(weights_shared, weights)
