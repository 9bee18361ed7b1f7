"""Absorbed dose of a TIA map: voxel S kernel convolution with CT density scaling, or local deposition.

The physics and its sources: docs/physics.md §4.

`corrected_region_doses` gives each region the mean dose of its partial-volume-corrected activity distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ludl.dosimetry.regions import RegionSet

__all__ = ["corrected_region_doses", "dose_map_gy"]


def dose_map_gy(
    tia: npt.NDArray[np.float64],
    density: npt.NDArray[np.float64],
    spacing_zyx_mm: tuple[float, float, float],
    dose_method: str,
    kernel_cache_dir: str | Path | None,
) -> npt.NDArray[np.float64]:
    """Dose (Gy) of a TIA map (MBq·h/mL): DVK convolution with CT density scaling, or local deposition."""
    from ludl.physics.dose import dose_from_tia, ldm_dose, voxel_tia_mbq_h
    from ludl.physics.kernels import MEDIA, voxel_s_kernel

    voxel_tia = voxel_tia_mbq_h(tia, spacing_zyx_mm)
    if dose_method == "ldm":
        return np.asarray(ldm_dose(voxel_tia, spacing_zyx_mm, density), dtype=np.float64)
    kernel = voxel_s_kernel(spacing_zyx_mm, medium="soft_tissue", cache_dir=kernel_cache_dir)
    return np.asarray(
        dose_from_tia(
            voxel_tia,
            kernel,
            density_g_per_ml=density,
            kernel_density_g_per_ml=MEDIA["soft_tissue"].density_g_per_ml,  # ρ_k/ρ_CT, docs/physics.md §4
        ),
        dtype=np.float64,
    )


def corrected_region_doses(
    tia: npt.NDArray[np.float64],
    regions: RegionSet,
    factors: Mapping[str, float],
    density: npt.NDArray[np.float64],
    spacing_zyx_mm: tuple[float, float, float],
    dose_method: str,
    kernel_cache_dir: str | Path | None,
) -> dict[str, float]:
    """Partial-volume-corrected mean dose (Gy) of every region, from the corrected activity distribution.

    Each corrected region holds its corrected mean TIA uniformly (the GTM's own model of the true distribution);
    unlabelled voxels keep their observed TIA. Convolving that map gives each region its self-dose at the corrected
    level *and* the cross-dose of its corrected neighbours (a liver beside lesions 100× hotter, photons from the whole
    body) and the β energy a small hot region loses across its edge — which scaling the observed mean dose by the TIA
    factor gets wrong in opposite directions (observed TIA is blurred, so its dose has no edge loss, and spill-in
    removed from the liver's TIA also removes the lesions' real cross-dose).
    """
    corrected = np.array(tia, dtype=np.float64, copy=True)
    masks = {}
    for name, kind in regions.kinds.items():
        factor = factors.get(name, math.nan)
        if kind == "body" or not math.isfinite(factor):
            continue
        mask = regions.mask(name)
        if mask.any():
            corrected[mask] = factor * float(tia[mask].mean())
            masks[name] = mask
    dose = dose_map_gy(corrected, density, spacing_zyx_mm, dose_method, kernel_cache_dir)
    return {name: float(dose[mask].mean()) for name, mask in masks.items()}
