"""Partial-volume correction of region means from the nominal SPECT resolution and each region's own shape.

SPECT at 10–15 mm FWHM spills a small region's activity out of its contour (and a hot neighbour's into it).
Both methods here model the reconstructed resolution as a Gaussian PSF of the cohort's *nominal* FWHM — never the
(unknown) true one — applied to the region masks on the grid the statistics are taken on:

- ``"rc"`` (recovery coefficient): RC_j = mean over region j of (PSF ⊛ 1_j); the corrected mean is observed / RC_j.
  Exact for a uniform region in a cold surrounding; it ignores spill-in.
- ``"gtm"`` (geometric transfer matrix, Rousset et al. 1998 J Nucl Med 39:904): W_ij = mean over region j of
  (PSF ⊛ 1_i), with every voxel belonging to exactly one region (labelled regions plus the unlabelled rest), and the
  true means solve Wᵀ c_true = c_obs. Accounts for spill-out and spill-in between all regions.

Both return a multiplicative factor per region (corrected / observed mean), applied to region TIA and mean dose.
Regions are blurred within their bounding box grown by 4 σ (the Gaussian beyond that carries < 1e-4), so the cost
scales with region size, not with the whole-body grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import InputError

__all__ = ["PVC_METHODS", "gtm_matrix", "pvc_factors", "recovery_coefficients"]

PVC_METHODS = ("none", "rc", "gtm")
# FWHM = 2 √(2 ln 2) σ for a Gaussian.
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_TRUNCATE_SIGMA = 4.0


def _sigma_voxels(fwhm_mm: float, spacing_zyx_mm: Sequence[float]) -> npt.NDArray[np.float64]:
    if not (np.isfinite(fwhm_mm) and fwhm_mm > 0):
        raise InputError(f"fwhm_mm must be a positive resolution in mm, got {fwhm_mm}")
    return np.asarray([fwhm_mm / _FWHM_PER_SIGMA / s for s in spacing_zyx_mm], dtype=np.float64)


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
    """Geometric transfer matrix over the regions plus ``"_rest"`` (every unlabelled voxel of the grid).

    Returns:
        (names, W) with W[i, j] = mean over region j of PSF ⊛ 1_i, so that observed mean_j = Σ_i W[i, j] · true_i.
    """
    lab = np.asarray(labels)
    sigma = _sigma_voxels(fwhm_mm, spacing_zyx_mm)
    names = [n for n, v in values.items() if np.any(lab == v)]
    masks = [lab == values[n] for n in names]
    rest = np.ones(lab.shape, dtype=bool)
    for m in masks:
        rest &= ~m
    masks.append(rest)
    names_all = [*names, "_rest"]
    n = len(masks)
    # PSF ⊛ 1_rest = PSF ⊛ 1 − Σ PSF ⊛ 1_i (linearity): the large remainder is never blurred itself.
    whole = np.asarray(ndimage.gaussian_filter(np.ones(lab.shape), sigma, mode="constant", truncate=_TRUNCATE_SIGMA))
    rest_blur = whole.copy()
    counts = [int(m.sum()) for m in masks]
    w = np.zeros((n, n))
    for i, mask in enumerate(masks[:-1]):
        found = _blurred_box(mask, sigma)
        if found is None:
            continue
        box, blurred = found
        rest_blur[box] -= blurred
        for j, other in enumerate(masks):
            inside = other[box]
            if counts[j] and inside.any():
                w[i, j] = float(blurred[inside].sum()) / counts[j]
    for j, other in enumerate(masks):
        if other.any():
            w[n - 1, j] = float(rest_blur[other].mean())
    return names_all, w


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
    try:
        true = np.linalg.solve(w.T, obs)
    except np.linalg.LinAlgError as err:
        raise InputError(f"the geometric transfer matrix is singular ({err}); use pvc='rc'") from err
    out: dict[str, float] = {}
    for name in values:
        if name in names:
            o = observed_means.get(name, 0.0)
            t = float(true[names.index(name)])
            out[name] = max(t, 0.0) / o if o > 0 else float("nan")
        else:
            out[name] = float("nan")
    return out
