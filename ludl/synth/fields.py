"""Smooth Gaussian random fields for the synthetic patients (textures, heterogeneity, lobulated shapes).

A field is white noise filtered with a Gaussian kernel of standard deviation `sigma_mm`, divided by the exact
standard deviation of that filter (the root sum of squares of the discrete kernel), so it has zero mean and unit
variance everywhere except within ~2σ of the array edges (reflected there). Large kernels are filtered on a
coarser grid and interpolated back: the same statistics at a fraction of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import InputError

__all__ = ["gaussian_random_field"]

F32 = npt.NDArray[np.float32]

# Filter at a resolution where σ spans about this many voxels: enough for a smooth, accurately scaled field.
_COARSE_SIGMA_VOXELS = 2.0


def _kernel_rss(sigma_voxels: float) -> float:
    """Root sum of squares of scipy's normalised 1D Gaussian kernel (truncate = 4)."""
    if sigma_voxels <= 0:
        return 1.0
    radius = int(4.0 * sigma_voxels + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_voxels) ** 2)
    k /= k.sum()
    return float(math.sqrt(np.sum(k**2)))


def gaussian_random_field(
    rng: np.random.Generator,
    shape_zyx: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    sigma_mm: float,
    count: int | None = None,
) -> F32:
    """Zero-mean, unit-variance smooth random field, float32 of `shape_zyx` (or `count` independent ones).

    Args:
        rng: random generator (the only source of randomness).
        shape_zyx: array shape (z, y, x).
        spacing_zyx_mm: voxel size (mm) along (z, y, x).
        sigma_mm: correlation length: standard deviation of the Gaussian smoothing kernel (mm), > 0.
        count: if given, return `count` independent fields stacked, shape (count, z, y, x) (one filter call).
    """
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise InputError(f"count must be a positive integer or None, got {count!r}")
    shape = tuple(int(n) for n in shape_zyx)
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 1 or spacing.shape != (3,) or not np.all(spacing > 0):
        raise InputError(f"need a 3D shape ≥ 1 and three positive spacings, got {shape_zyx}, {spacing_zyx_mm}")
    if not (math.isfinite(sigma_mm) and sigma_mm > 0):
        raise InputError(f"sigma_mm must be a positive length in mm, got {sigma_mm}")
    sigma_vox = sigma_mm / spacing
    # Coarsening factor per axis (integer, ≥ 1): keeps ≈ 2 voxels per σ on the filtering grid.
    factor = np.maximum(1, np.floor(sigma_vox / _COARSE_SIGMA_VOXELS)).astype(int)
    coarse_shape = tuple(math.ceil(n / f) + 1 for n, f in zip(shape, factor, strict=True))
    if np.all(factor == 1):
        coarse_shape = shape
    sigma_c = sigma_vox / factor
    n = 1 if count is None else count
    noise = rng.standard_normal((n, *coarse_shape), dtype=np.float32)
    field = ndimage.gaussian_filter(noise, sigma=(0.0, *sigma_c), mode="reflect")
    field /= math.prod(_kernel_rss(s) for s in sigma_c)
    if coarse_shape != shape:
        # Coarse voxel c sits at fine index c·f: with grid_mode=False, zoom maps corner to corner, so an output of
        # f·(n_c − 1) + 1 voxels puts the fine grid exactly there. Linear interpolation of a field smooth over
        # ≥ 2 coarse voxels keeps its variance to within a few %.
        n_out = [f * (n - 1) + 1 for n, f in zip(coarse_shape, factor, strict=True)]
        zoom = [1.0] + [o / c for o, c in zip(n_out, coarse_shape, strict=True)]
        field = ndimage.zoom(field, zoom, order=1, grid_mode=False)
        field = np.ascontiguousarray(field[:, : shape[0], : shape[1], : shape[2]])
    out = np.asarray(field, dtype=np.float32)
    return out if count is not None else out[0]
