"""Partial-volume-corrected region doses from ONE map, without any other time point (issue 11 Build 4).

The multi-time-point pipeline corrects every scan by GTM and fits the corrected curves (`gtm_per_timepoint`). A single
scan — a network's predicted TIA map, or one SPECT turned into a TIA by an STP formula — has one map only. Its regions
are corrected here by the same road, once: the pipeline's GTM system (labelled regions, background cubes, split
organs, tissue fractions of shared voxels; `ludl.dosimetry.gtm_partition`) applied to the map's region means, then
each region holds its corrected mean uniformly and the dose of that distribution is taken (`corrected_region_doses`,
the pipeline's own step). For a map that is a constant τ times the activity the GTM is linear, so correcting the
activity of the scan and scaling is the same as correcting its TIA map.

This is the TIA-level ("static") GTM of the pipeline: the multi-TP pipeline itself falls back to it where a
corrected curve cannot be fitted. It cannot see a region whose curve shape differs from its neighbour's spill-in (the
per-time-point GTM can), which is the price of having one map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.dose import corrected_region_doses, dose_map_gy
from ludl.dosimetry.gtm_partition import Fractions, gtm_system
from ludl.dosimetry.pvc import gtm_solve
from ludl.dosimetry.regions import RegionSet
from ludl.errors import InputError

__all__ = ["SingleScanDoses", "correct_region_doses", "single_scan_factors"]


@dataclass(frozen=True)
class SingleScanDoses:
    """Region results of one map (every region of the `RegionSet` but ``body`` kinds).

    Attributes:
        factors: corrected / observed region total of the map (on the region's whole-voxel mask); NaN where the map
            has nothing in the region.
        mean_dose_gy: mean dose of the corrected activity distribution over the region (Gy).
        mean_dose_uncorrected_gy: mean of the map's own dose over the region (Gy).
    """

    factors: dict[str, float]
    mean_dose_gy: dict[str, float]
    mean_dose_uncorrected_gy: dict[str, float]


def _values(regions: RegionSet) -> dict[str, int]:
    return {n: v for n, v in regions.values.items() if regions.kinds[n] != "body"}


def single_scan_factors(
    maps: Sequence[npt.NDArray[np.float64]],
    regions: RegionSet,
    spacing_zyx_mm: tuple[float, float, float],
    fwhm_mm: float,
    *,
    body: npt.NDArray[np.bool_] | None = None,
    fractions: Fractions | None = None,
) -> list[dict[str, float]]:
    """GTM factor (corrected / observed region total) of every region, for each map on its own.

    One GTM system serves all maps (e.g. the scans of one case, resampled to one grid): each map is corrected from its
    own region means only.

    Args:
        maps: maps (z, y, x) on the grid of `regions` — TIA (MBq·h/mL) or activity concentration; any linear unit.
        regions: regions on that grid (`ludl.dosimetry.regions.RegionSet`).
        spacing_zyx_mm: voxel size, mm.
        fwhm_mm: nominal reconstructed resolution (Gaussian FWHM) of the scan, mm.
        body: body tissue voxels (`ludl.dosimetry.gtm_partition.body_mask` of the CT); None: the whole grid, so
            unlabelled voxels are all split into background cubes.
        fractions: tissue fractions of voxels the label map shares between regions, in region values
            (`region_fractions`), as the pipeline uses them; None: whole voxels.

    Returns:
        One dict per map: region name → factor (NaN where the map's region total is not positive).
    """
    values = _values(regions)
    shape = regions.labels.shape
    if any(np.shape(m) != shape for m in maps):
        raise InputError(f"every map must be on the label grid {shape}; resample it to the regions' grid first")
    inside = np.ones(shape, dtype=np.bool_) if body is None else np.asarray(body, dtype=np.bool_)
    system = gtm_system(regions, values, inside, spacing_zyx_mm, fwhm_mm, fractions)
    names = [system.names[i] for i in system.keep]
    # Fine-grid volume (voxels) of each whole region: the corrected total is corrected mean × this volume.
    counts = dict(zip(names, (system.merge_obs @ system.counts)[system.keep], strict=True))
    # A GTM region without voxels (the air, when `body` is the whole grid) has an empty row and column: left out.
    used = np.flatnonzero(system.counts > 0)
    w = system.w[np.ix_(used, used)]
    out: list[dict[str, float]] = []
    for array in maps:
        a = np.asarray(array, dtype=np.float64)
        per_part = np.zeros(len(system.names))
        per_part[used] = gtm_solve(w, system.means(a)[used])
        true = dict(zip(names, system.whole(per_part, system.merge_true), strict=True))
        sums = np.atleast_1d(np.asarray(ndimage.sum(a, labels=regions.labels, index=list(values.values()))))
        factors: dict[str, float] = {}
        for (name, _), observed in zip(values.items(), sums, strict=True):
            corrected = max(float(true.get(name, np.nan)), 0.0) * float(counts.get(name, np.nan))
            factors[name] = corrected / float(observed) if observed > 0 else float("nan")
        out.append(factors)
    return out


def correct_region_doses(
    tia_mbq_h_per_ml: npt.NDArray[np.float64],
    regions: RegionSet,
    density_g_per_ml: npt.NDArray[np.float64],
    spacing_zyx_mm: tuple[float, float, float],
    fwhm_mm: float,
    *,
    dose_gy: npt.NDArray[np.float64] | None = None,
    body: npt.NDArray[np.bool_] | None = None,
    fractions: Fractions | None = None,
    factors: Mapping[str, float] | None = None,
    dose_method: str = "dvk",
    kernel_cache_dir: str | Path | None = None,
) -> SingleScanDoses:
    """Partial-volume-corrected region mean doses of ONE TIA map: GTM of its region means, dose of the result.

    Args:
        tia_mbq_h_per_ml: the TIA map (MBq·h/mL) on the grid of `regions` (a network's prediction, an STP map).
        regions: regions on that grid (labels and kinds; lesions one region each): for a label map with a cohort's
            label values, `ludl.dosimetry.regions.expand_regions(labels, label_values)`, as the pipeline builds them.
        density_g_per_ml: mass density on the grid (from the CT), for the kernel's density scaling.
        spacing_zyx_mm: voxel size, mm.
        fwhm_mm: nominal resolution of the scan the map comes from, mm.
        dose_gy: the map's own dose (Gy) for the uncorrected means; None: computed here (one more convolution).
        body, fractions: as in `single_scan_factors`.
        factors: precomputed `single_scan_factors` of this map (skips the GTM).
        dose_method, kernel_cache_dir: as `ludl.dosimetry.dose.dose_map_gy` (``dvk`` or ``ldm``).
    """
    tia = np.asarray(tia_mbq_h_per_ml, dtype=np.float64)
    density = np.asarray(density_g_per_ml, dtype=np.float64)
    if tia.shape != regions.labels.shape or density.shape != tia.shape:
        raise InputError(
            f"TIA map {tia.shape}, density {density.shape} and labels {regions.labels.shape} must share one grid"
        )
    if factors is None:
        factors = single_scan_factors([tia], regions, spacing_zyx_mm, fwhm_mm, body=body, fractions=fractions)[0]
    corrected = corrected_region_doses(tia, regions, factors, density, spacing_zyx_mm, dose_method, kernel_cache_dir)
    own = dose_map_gy(tia, density, spacing_zyx_mm, dose_method, kernel_cache_dir) if dose_gy is None else dose_gy
    uncorrected = {name: float(np.asarray(own)[regions.mask(name)].mean()) for name in _values(regions)}
    return SingleScanDoses(dict(factors), corrected, uncorrected)
