"""Partial-volume correction of region means from the nominal SPECT resolution and each region's own shape.

SPECT at 10–15 mm FWHM spills a small region's activity out of its contour (and a hot neighbour's into it).
Both methods here model the reconstructed resolution as a Gaussian PSF of the cohort's *nominal* FWHM — never the
(unknown) true one — applied to the region masks on the grid the statistics are taken on:

- ``"rc"`` (recovery coefficient): RC_j = mean over region j of (PSF ⊛ 1_j); the corrected mean is observed / RC_j.
  Exact for a uniform region in a cold surrounding; it ignores spill-in.
- ``"gtm"`` (geometric transfer matrix, Rousset et al. 1998 J Nucl Med 39:904): W_ij = mean over region j of
  (PSF ⊛ 1_i), with every voxel belonging to exactly one region (labelled regions plus the unlabelled rest), and the
  true means solve Wᵀ c_true = c_obs. Accounts for spill-out and spill-in between all regions.
- `gtm_matrix_fractional`: the same with regions given as tissue fractions of each voxel, for label maps drawn on a
  finer grid than the SPECT's (the pipeline's default): boundary voxels shared by an organ and its surroundings
  are modelled as shared, so the voxel-size part of the partial-volume effect is corrected too.

Both return a multiplicative factor per region (corrected / observed mean), applied to region TIA and mean dose.
Regions are blurred within their bounding box grown by 4 σ (the Gaussian beyond that carries < 1e-4), so the cost
scales with region size, not with the whole-body grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.options import PVC_METHODS
from ludl.errors import InputError
from ludl.physics.units import FWHM_PER_SIGMA

__all__ = [
    "background_blocks",
    "fractional_means",
    "gtm_matrix",
    "gtm_matrix_fractional",
    "gtm_solve",
    "pvc_factors",
    "recovery_coefficients",
]

_TRUNCATE_SIGMA = 4.0


def _sigma_voxels(
    fwhm_mm: float, spacing_zyx_mm: Sequence[float], extra_variance_zyx_mm2: Sequence[float] | None = None
) -> npt.NDArray[np.float64]:
    """Gaussian σ per axis in voxels: the PSF's, widened by an extra variance per axis (mm²) where given."""
    if not (np.isfinite(fwhm_mm) and fwhm_mm > 0):
        raise InputError(f"fwhm_mm must be a positive resolution in mm, got {fwhm_mm}")
    extra = np.zeros(3) if extra_variance_zyx_mm2 is None else np.asarray(extra_variance_zyx_mm2, dtype=np.float64)
    if extra.shape != (3,) or not np.all(np.isfinite(extra) & (extra >= 0)):
        raise InputError(f"extra_variance_zyx_mm2 must be three variances ≥ 0 in mm², got {extra_variance_zyx_mm2}")
    sigma_mm = np.sqrt((fwhm_mm / FWHM_PER_SIGMA) ** 2 + extra)
    return np.asarray(sigma_mm / np.asarray(spacing_zyx_mm, dtype=np.float64), dtype=np.float64)


def _blurred_box(
    mask: npt.NDArray[np.bool_], sigma: npt.NDArray[np.float64]
) -> tuple[tuple[slice, ...], npt.NDArray[np.float64]] | None:
    """(box, PSF ⊛ mask inside the box); the box is the mask's bounding box grown by 4 σ and clipped to the grid."""
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    margin = np.ceil(_TRUNCATE_SIGMA * sigma).astype(int) + 1
    box = tuple(
        slice(max(0, int(i.min()) - m), min(n, int(i.max()) + 1 + m))
        for i, m, n in zip(idx, margin, mask.shape, strict=True)
    )
    # mode="constant": outside the grid is not this region (no activity there to spill back in).
    blurred = ndimage.gaussian_filter(mask[box].astype(np.float64), sigma, mode="constant", truncate=_TRUNCATE_SIGMA)
    return box, np.asarray(blurred)


def recovery_coefficients(
    labels: npt.ArrayLike, values: Mapping[str, int], spacing_zyx_mm: Sequence[float], fwhm_mm: float
) -> dict[str, float]:
    """Recovery coefficient of every region: mean of the PSF-blurred region mask inside the region (0–1].

    Args:
        labels: integer label map (z, y, x).
        values: region name → label value.
        spacing_zyx_mm: voxel size (z, y, x), mm.
        fwhm_mm: nominal reconstructed resolution (Gaussian FWHM), mm.
    """
    lab = np.asarray(labels)
    sigma = _sigma_voxels(fwhm_mm, spacing_zyx_mm)
    out: dict[str, float] = {}
    for name, value in values.items():  # a loop over regions; each blur is vectorised over its box
        mask = lab == value
        found = _blurred_box(mask, sigma)
        out[name] = float("nan") if found is None else float(found[1][mask[found[0]]].mean())
    return out


def gtm_matrix(
    labels: npt.ArrayLike, values: Mapping[str, int], spacing_zyx_mm: Sequence[float], fwhm_mm: float
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Geometric transfer matrix over the regions plus ``"_rest"`` (every voxel of the grid in no region).

    Returns:
        (names, W) with W[i, j] = mean over region j of PSF ⊛ 1_i, so that observed mean_j = Σ_i W[i, j] · true_i.
    """
    lab = np.asarray(labels)
    present = [n for n, v in values.items() if np.any(lab == v)]
    # Compact index per voxel: 0..n-2 the regions, n-1 the rest; no voxel is shared.
    index = np.full(lab.shape, len(present), dtype=np.int64)
    for i, name in enumerate(present):
        index[lab == values[name]] = i
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    w, _ = gtm_matrix_fractional(index, len(present) + 1, none, spacing_zyx_mm, fwhm_mm)
    return [*present, "_rest"], w


def gtm_matrix_fractional(
    index: npt.ArrayLike,
    n_regions: int,
    mixed: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
    spacing_zyx_mm: Sequence[float],
    fwhm_mm: float,
    extra_variance_zyx_mm2: Sequence[float] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Geometric transfer matrix of regions given as tissue fractions: the voxel-size partial-volume effect too.

    A label map drawn on a finer grid than the SPECT's leaves boundary voxels holding several regions (a kidney's
    hot cortex and the fat around it). Counting such a voxel wholly to one region dilutes the region's true mean
    before any blur does (−10 % for a kidney on 6 mm voxels); with fractions f_i(x) (Σ_i f_i = 1 in every voxel)
    the model is A(x) = Σ_i c_i (PSF ⊛ f_i)(x), and c_i is the mean over the region's fine-grid extent.

    Args:
        index: (z, y, x) compact region index 0..n−1 of every voxel wholly in one region, −1 for mixed voxels.
        n_regions: number of regions (the last is usually the unlabelled rest, the largest).
        mixed: (flat voxel index, region index, fraction) triples of the mixed voxels; a voxel's fractions sum to 1.
        spacing_zyx_mm, fwhm_mm: voxel size and nominal Gaussian FWHM, mm.
        extra_variance_zyx_mm2: blur added to the PSF per axis (mm²), e.g. by resampling a scan onto this grid
            (`ludl.dosimetry.gtm_partition.resampling_variance_zyx_mm2`); None: none.

    Returns:
        (W, weights): W[i, j] = Σ_x (PSF ⊛ f_i)(x) f_j(x) / Σ_x f_j(x), so observed fraction-weighted mean_j =
        Σ_i W[i, j] c_i; weights[j] = Σ_x f_j(x), the region's volume in voxels.
    """
    idx = np.asarray(index, dtype=np.int64)
    n = int(n_regions)
    sigma = _sigma_voxels(fwhm_mm, spacing_zyx_mm, extra_variance_zyx_mm2)
    mv, mr, mf = (np.asarray(a) for a in mixed)
    mv, mr, mf = mv.astype(np.int64), mr.astype(np.int64), mf.astype(np.float64)
    mz, my, mx = np.unravel_index(mv, idx.shape)
    pure = idx >= 0
    weights = np.bincount(idx[pure], minlength=n).astype(np.float64) + np.bincount(mr, weights=mf, minlength=n)
    margin = np.ceil(_TRUNCATE_SIGMA * sigma).astype(int) + 1
    # Bounding box of every region over its whole and its shared voxels.
    lo = np.full((n, 3), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((n, 3), -1, dtype=np.int64)
    for i, found in enumerate(ndimage.find_objects(np.where(pure, idx + 1, 0), max_label=n)):
        if found is not None:
            lo[i] = [s.start for s in found]
            hi[i] = [s.stop - 1 for s in found]
    for k, coord in enumerate((mz, my, mx)):
        np.minimum.at(lo[:, k], mr, coord)
        np.maximum.at(hi[:, k], mr, coord)
    # PSF ⊛ f_last = PSF ⊛ 1 − Σ PSF ⊛ f_i (linearity): the large remainder is never blurred itself.
    rest_blur = np.asarray(
        ndimage.gaussian_filter(np.ones(idx.shape), sigma, mode="constant", truncate=_TRUNCATE_SIGMA)
    )
    w = np.zeros((n, n))
    for i in range(n - 1):  # a loop over regions; each blur is vectorised over its box
        if hi[i, 0] < 0:
            continue
        own = mr == i
        start = [max(0, int(lo[i, k]) - int(margin[k])) for k in range(3)]
        stop = [min(idx.shape[k], int(hi[i, k]) + 1 + int(margin[k])) for k in range(3)]
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        inside = idx[box]
        f = (inside == i).astype(np.float64)
        f[mz[own] - start[0], my[own] - start[1], mx[own] - start[2]] = mf[own]
        # mode="constant": outside the grid is not this region (no activity there to spill back in).
        blurred = np.asarray(ndimage.gaussian_filter(f, sigma, mode="constant", truncate=_TRUNCATE_SIGMA))
        rest_blur[box] -= blurred
        keep = inside >= 0
        w[i] = np.bincount(inside[keep], weights=blurred[keep], minlength=n)
        in_box = (
            (mz >= start[0]) & (mz < stop[0]) & (my >= start[1]) & (my < stop[1]) & (mx >= start[2]) & (mx < stop[2])
        )
        gathered = blurred[mz[in_box] - start[0], my[in_box] - start[1], mx[in_box] - start[2]]
        w[i] += np.bincount(mr[in_box], weights=gathered * mf[in_box], minlength=n)
    w[n - 1] = np.bincount(idx[pure], weights=rest_blur[pure], minlength=n)
    w[n - 1] += np.bincount(mr, weights=rest_blur[mz, my, mx] * mf, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(weights > 0, w / np.maximum(weights, 1e-300), 0.0)
    return w, weights


def fractional_means(
    array: npt.ArrayLike,
    index: npt.ArrayLike,
    n_regions: int,
    mixed: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
    weights: npt.ArrayLike,
) -> npt.NDArray[np.float64]:
    """Fraction-weighted mean of `array` in every region of a `gtm_matrix_fractional` partition (0 where empty)."""
    a = np.asarray(array, dtype=np.float64)
    idx = np.asarray(index, dtype=np.int64)
    mv, mr, mf = (np.asarray(x) for x in mixed)
    pure = idx >= 0
    sums = np.bincount(idx[pure], weights=a[pure], minlength=n_regions)
    sums += np.bincount(mr.astype(np.int64), weights=a.ravel()[mv.astype(np.int64)] * mf, minlength=n_regions)
    wts = np.asarray(weights, dtype=np.float64)
    return np.asarray(np.where(wts > 0, sums / np.maximum(wts, 1e-300), 0.0))


def background_blocks(
    labels: npt.ArrayLike, body: npt.ArrayLike, spacing_zyx_mm: Sequence[float], block_mm: float, first_value: int
) -> tuple[npt.NDArray[np.int32], dict[str, int]]:
    """Split the unlabelled body into cubes of about `block_mm` as GTM background regions.

    Unlabelled tissue is far from uniform (bowel, blood pool, muscle, lung); one "rest" region with one mean makes
    GTM mis-estimate the spill-in to every organ next to a hot unlabelled structure. Cubes a few FWHM wide give the
    background a local mean each and stay well determined (their recovery is high).

    Args:
        labels: integer label map (z, y, x); 0 = no region.
        body: boolean body mask on the same grid (e.g. CT > −900 HU); unlabelled voxels outside it stay 0.
        spacing_zyx_mm: voxel size, mm.
        block_mm: edge of a cube, mm.
        first_value: label value of the first cube (above every region value).

    Returns:
        (labels with the cubes added, cube name → value).
    """
    lab = np.asarray(labels).astype(np.int32)
    free = (lab == 0) & np.asarray(body, dtype=bool)
    cells = [max(1, round(block_mm / s)) for s in spacing_zyx_mm]
    iz, iy, ix = (np.arange(n) // c for n, c in zip(lab.shape, cells, strict=True))
    ny, nx = int(iy[-1]) + 1, int(ix[-1]) + 1
    cube = np.broadcast_to(iz[:, None, None] * (ny * nx) + iy[None, :, None] * nx + ix[None, None, :], lab.shape)
    used, inverse = np.unique(cube[free], return_inverse=True)
    out = lab.copy()
    out[free] = first_value + inverse.ravel().astype(np.int32)
    return out, {f"_bg_{k:04d}": first_value + k for k in range(used.size)}


def gtm_solve(w: npt.NDArray[np.float64], observed: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """True region means from observed ones: solves Wᵀ c_true = c_obs for one or several columns of observations.

    Args:
        w: the `gtm_matrix` (n, n).
        observed: observed region means (n,) or (n, k) — e.g. one column per time point.
    """
    obs = np.asarray(observed, dtype=np.float64)
    try:
        return np.asarray(np.linalg.solve(w.T, obs))
    except np.linalg.LinAlgError as err:
        raise InputError(f"the geometric transfer matrix is singular ({err}); use pvc='rc'") from err


def pvc_factors(
    method: str,
    labels: npt.ArrayLike,
    values: Mapping[str, int],
    observed_means: Mapping[str, float],
    spacing_zyx_mm: Sequence[float],
    fwhm_mm: float,
    *,
    rest_mean: float = 0.0,
) -> dict[str, float]:
    """Corrected / observed mean for every region (1.0 for ``"none"``).

    Args:
        method: ``"none"``, ``"rc"`` or ``"gtm"``.
        labels, values, spacing_zyx_mm, fwhm_mm: as in `recovery_coefficients`.
        observed_means: region name → observed mean (e.g. TIA concentration) inside the region.
        rest_mean: observed mean of the unlabelled voxels (``"gtm"`` only).
    """
    if method not in PVC_METHODS:
        raise InputError(f"pvc={method!r} is not known; use one of {', '.join(PVC_METHODS)}")
    if method == "none":
        return {name: 1.0 for name in values}
    if method == "rc":
        rc = recovery_coefficients(labels, values, spacing_zyx_mm, fwhm_mm)
        return {name: (1.0 / r if np.isfinite(r) and r > 0 else float("nan")) for name, r in rc.items()}
    names, w = gtm_matrix(labels, values, spacing_zyx_mm, fwhm_mm)
    obs = np.asarray([observed_means.get(n, 0.0) if n != "_rest" else rest_mean for n in names], dtype=np.float64)
    true = gtm_solve(w, obs)
    out: dict[str, float] = {}
    for name in values:
        if name in names:
            o = observed_means.get(name, 0.0)
            t = float(true[names.index(name)])
            out[name] = max(t, 0.0) / o if o > 0 else float("nan")
        else:
            out[name] = float("nan")
    return out
