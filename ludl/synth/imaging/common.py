"""Image-domain tools shared by the SPECT, CT and PET models: working grids, exact aggregation, blur, noise."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import GeometryError
from ludl.imaging.resample import grid_with_spacing, resample_to
from ludl.imaging.volume import Volume
from ludl.physics.units import FWHM_PER_SIGMA  # re-exported: the synthetic camera's resolution uses it

__all__ = [
    "FWHM_PER_SIGMA",
    "TRUNCATE",
    "FloatArray",
    "aggregate",
    "blur_variance_voxels",
    "check_truth_grid",
    "correlated_noise",
    "gaussian_blur",
    "lognormal_factor",
    "working_grid",
]


FloatArray = npt.NDArray[np.float64]
# Gaussian kernels are cut at 3.5 σ: the tail beyond holds < 0.05 % of the weight.
TRUNCATE = 3.5
# Linear interpolation and box aggregation of a grid of spacing Δ add, on average over sub-voxel offsets, a variance
# of Δ²/6 (two-tap kernel f(1 − f), mean over f) and Δ²/12 (box) per axis; the Gaussian blur is narrowed by that
# much so that the *image* has the configured resolution.
_DISCRETISATION_VARIANCE_PER_SPACING2 = 1.0 / 6.0 + 1.0 / 12.0


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float | Sequence[float]
) -> npt.NDArray[np.float32]:
    """A stationary Gaussian field of zero mean and unit voxel variance with Gaussian correlation (σ in voxels)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    sigmas = np.broadcast_to(np.asarray(sigma_voxels, dtype=np.float64), (len(shape),))
    if not np.any(sigmas > 0):
        return white
    smooth = ndimage.gaussian_filter(white, sigmas, mode="wrap", truncate=TRUNCATE)
    # Variance of filtered unit white noise = Π over axes of Σ k² of the discrete 1D kernels (wrap: stationary).
    variance = 1.0
    for sigma, n in zip(sigmas, shape, strict=True):
        if sigma <= 0:
            continue
        delta = np.zeros(max(n, 2 * int(TRUNCATE * sigma + 0.5) + 1))
        delta[delta.size // 2] = 1.0
        kernel = ndimage.gaussian_filter1d(delta, float(sigma), mode="wrap", truncate=TRUNCATE)
        variance *= float((kernel**2).sum())
    return np.asarray(smooth / np.float32(math.sqrt(variance)), dtype=np.float32)


def lognormal_factor(noise: npt.NDArray[np.float32], cv: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """exp(s·g − s²/2) with s = √ln(1 + CV²): mean 1 and coefficient of variation CV for unit-variance g."""
    s = np.sqrt(np.log1p(np.square(np.asarray(cv, dtype=np.float32))))
    return np.asarray(np.exp(s * noise - 0.5 * s * s), dtype=np.float32)


def check_truth_grid(volume: Volume, name: str) -> None:
    """Raise `GeometryError` unless `volume` lies on an axis-aligned grid."""
    if not np.allclose(volume.direction, np.eye(3), atol=1e-6):
        raise GeometryError(f"{name} must lie on an axis-aligned truth grid (identity direction)")


def working_grid(truth: Volume, spacing_mm: float) -> tuple[Volume, int | None]:
    """A reference-frame grid at `spacing_mm` covering `truth`, and the integer block factor if there is one.

    When `spacing_mm` is an integer multiple r of the truth spacing on every axis, the working grid is the exact
    r×r×r block aggregation of the truth grid (padded up to whole blocks), so aggregation is a reshape-mean.
    """
    ratios = np.asarray([spacing_mm / s for s in truth.spacing_zyx_mm])
    r = round(float(ratios[0]))
    if r >= 1 and np.allclose(ratios, r, rtol=1e-6):
        shape = tuple(math.ceil(n / r) for n in truth.shape)
        first = truth.index_to_physical([(r - 1) / 2.0] * 3)
        grid = Volume(
            np.zeros(shape, dtype=np.uint8),
            (spacing_mm, spacing_mm, spacing_mm),
            (float(first[0]), float(first[1]), float(first[2])),
            truth.direction,
        )
        return grid, r
    return grid_with_spacing(truth, (spacing_mm, spacing_mm, spacing_mm)), None


def _block_sum(array: npt.NDArray[np.float32], block: int) -> npt.NDArray[np.float32]:
    """Sums over block×block×block boxes (a ragged last box sums what there is): strided adds, no big copies."""
    out = array
    for axis in range(3):  # a loop over the three axes and the block offsets, not voxels
        n_blocks = -(-out.shape[axis] // block)
        total: npt.NDArray[np.float32] | None = None
        for offset in range(block):
            part = out[(slice(None),) * axis + (slice(offset, None, block),)]
            if part.shape[axis] < n_blocks:
                pad = [(0, 0)] * 3
                pad[axis] = (0, n_blocks - part.shape[axis])
                part = np.pad(part, pad)
            total = part.astype(np.float32) if total is None else total + part
        assert total is not None  # block ≥ 1
        out = total
    return out


def aggregate(volume: Volume, grid: Volume, block: int | None, kind: str = "mean") -> Volume:
    """`volume` (truth grid) onto the working `grid`.

    ``kind="mean"`` (concentrations): box mean with the part of a box beyond the truth counted as empty, so
    ∫ value dV is conserved. ``kind="edge"`` (HU): mean over the real voxels of each box.
    """
    if block is None:
        return resample_to(volume, grid, kind="activity" if kind == "mean" else "linear")
    array = volume.array.astype(np.float32, copy=False)
    if block == 1:
        return grid.with_array(array.copy(), unit=volume.unit)
    sums = _block_sum(array, block)
    if kind == "mean":
        return grid.with_array(sums / np.float32(block**3), unit=volume.unit)
    counts = [
        np.minimum(block, n - block * np.arange(g)).astype(np.float32)
        for g, n in zip(grid.shape, volume.shape, strict=True)
    ]
    n_real = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    return grid.with_array(sums / n_real, unit=volume.unit)


def blur_variance_voxels(fwhm_mm: float, spacing_mm: float) -> float:
    """Variance (voxel²) of the Gaussian that gives the image `fwhm_mm` after the discretisation blur."""
    variance = (fwhm_mm / FWHM_PER_SIGMA) ** 2 - _DISCRETISATION_VARIANCE_PER_SPACING2 * spacing_mm**2
    return max(variance, 0.0) / spacing_mm**2


def _sampled_gaussian(sigma: float) -> FloatArray:
    radius = max(1, math.ceil(TRUNCATE * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / max(sigma, 1e-12)) ** 2)
    return np.asarray(kernel / kernel.sum())


@functools.lru_cache(maxsize=256)
def _exact_variance_kernel(variance_voxels: float) -> FloatArray:
    """A sampled Gaussian whose *discrete* variance equals `variance_voxels` (σ below ≈ 0.6 voxel a plainly
    sampled Gaussian is much narrower than its σ, which would sharpen coarse presets)."""

    def variance(kernel: FloatArray) -> float:
        x = np.arange(kernel.size, dtype=np.float64) - (kernel.size - 1) / 2.0
        return float((kernel * x**2).sum())

    lo, hi = 0.0, math.sqrt(variance_voxels) + 1.0
    for _ in range(50):  # bisection on σ: the discrete variance grows monotonically with it
        mid = 0.5 * (lo + hi)
        if variance(_sampled_gaussian(mid)) < variance_voxels:
            lo = mid
        else:
            hi = mid
    return _sampled_gaussian(0.5 * (lo + hi))


def gaussian_blur(array: npt.NDArray[np.float32], variance_voxels: float) -> npt.NDArray[np.float32]:
    """Separable blur with an isotropic kernel of the given discrete variance (voxel²); zero outside the array."""
    if variance_voxels <= 1e-6:
        return array
    kernel = _exact_variance_kernel(round(float(variance_voxels), 6))
    out = array
    for axis in range(3):
        out = ndimage.correlate1d(out, kernel, axis=axis, mode="constant", cval=0.0)
    return np.asarray(out, dtype=np.float32)
