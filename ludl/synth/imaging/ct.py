"""Low-dose CT of a scan: the true HU in the scan's pose on its grid, with correlated noise.

Noise level (docs/synthetic-cohort.md, SPECT/CT): the CT of a SPECT/CT is a low-dose scan, 110–120 kVp at
≈ 40 mAs (Gupta et al. 2017, Am J Nucl Med Mol Imaging 7:63, bone SPECT-CT 110 kVp / 40 mAs; Grosser et al. 2019,
Acta Radiol Open 8:2058460119856266, abdominal SPECT-CT 120 kV / 40 mA). Pontana et al. 2015 (Diagn Interv
Imaging 96:487) measured 17.7 HU image noise at 120 kVp / 110 mAs with filtered back-projection; quantum noise SD
scales as 1/√mAs (Brooks & Di Chiro 1976, Med Phys 3:237), so 40 mAs gives 17.7·√(110/40) ≈ 29 HU. We read that
value at a typical SPECT/CT reconstruction voxel of 5 mm slices × 0.98 mm pixels (500 mm field / 512; assumption:
the source does not give its voxel in the abstract). Averaging uncorrelated noise over a larger voxel divides its
SD by √(volume ratio): the synthetic CT lies on SPECT-like grids (2.4–6 mm), so its voxel noise is a few HU (6 HU at
4.8 mm isotropic), far below the within-tissue texture of the truth (`anatomy.tissue_hu`).
"""

from __future__ import annotations

import math

import numpy as np

from ludl.errors import InputError
from ludl.imaging.resample import grid_with_spacing
from ludl.imaging.volume import Volume
from ludl.synth.imaging.common import FWHM_PER_SIGMA, aggregate, check_truth_grid, correlated_noise, working_grid
from ludl.synth.pose import Pose, apply_pose

__all__ = [
    "LOW_DOSE_CT_MAS",
    "LOW_DOSE_CT_NOISE_HU",
    "LOW_DOSE_CT_REFERENCE_VOXEL_MM3",
    "ct_grid",
    "low_dose_ct_noise_hu",
    "simulate_ct",
]

# Tube current–time product of the low-dose CT of SPECT/CT (Gupta 2017; Grosser 2019; module docstring).
LOW_DOSE_CT_MAS = 40.0
# Pontana 2015: 17.7 HU at 120 kVp / 110 mAs (FBP); noise SD ∝ 1/√mAs (Brooks & Di Chiro 1976).
_MEASURED_NOISE_HU, _MEASURED_MAS = 17.66, 110.0
LOW_DOSE_CT_NOISE_HU = _MEASURED_NOISE_HU * math.sqrt(_MEASURED_MAS / LOW_DOSE_CT_MAS)  # ≈ 29.3 HU
# The voxel that noise SD is read at: 5 mm slice, 0.98 mm pixels (500 mm / 512) (assumption, see the docstring).
LOW_DOSE_CT_REFERENCE_VOXEL_MM3 = 5.0 * (500.0 / 512.0) ** 2


def low_dose_ct_noise_hu(spacing_zyx_mm: tuple[float, float, float]) -> float:
    """Voxel noise SD (HU) of the low-dose CT on a grid of this spacing: the reference SD × √(V_ref / V)."""
    volume_mm3 = math.prod(float(s) for s in spacing_zyx_mm)
    if not volume_mm3 > 0.0:
        raise InputError(f"CT voxel spacing must be positive, got {spacing_zyx_mm} mm")
    return LOW_DOSE_CT_NOISE_HU * math.sqrt(LOW_DOSE_CT_REFERENCE_VOXEL_MM3 / volume_mm3)


def ct_grid(scan_grid: Volume, upsample: int = 1) -> Volume:
    """An empty grid for the CT of a scan: the scan's field of view at its spacing / `upsample`."""
    if upsample < 1:
        raise InputError(f"upsample must be ≥ 1, got {upsample}")
    if upsample == 1:
        return scan_grid.with_array(np.zeros(scan_grid.shape, dtype=np.uint8), unit="1")
    spacing = tuple(s / upsample for s in scan_grid.spacing_zyx_mm)
    return grid_with_spacing(scan_grid, (spacing[0], spacing[1], spacing[2]))


def simulate_ct(
    hu_truth: Volume,
    grid: Volume,
    pose: Pose,
    rng: np.random.Generator,
    *,
    noise_hu: float | None = None,
    noise_correlation_mm: float = 2.0,
) -> Volume:
    """Low-dose CT of one scan: the true HU (reference pose) seen in `pose` on `grid`, with correlated noise.

    Args:
        hu_truth: true HU on the truth grid.
        grid: the CT grid in the scanner frame (e.g. `ct_grid(scan.grid)`).
        pose: reference → scanner pose of this time point (the CT shares the SPECT's pose).
        rng: random generator.
        noise_hu: voxel noise SD, HU; None: the published low-dose level at this grid's voxel size
            (`low_dose_ct_noise_hu`).
        noise_correlation_mm: noise texture FWHM, mm.

    Returns:
        float32 HU on `grid`, −1000 (air) outside the truth, clipped to [−1024, 3071].
    """
    check_truth_grid(hu_truth, "hu_truth")
    spacing = float(min(grid.spacing_zyx_mm))
    work, block = working_grid(hu_truth, spacing)
    source = aggregate(hu_truth, work, block, kind="edge") if block and block > 1 else hu_truth
    image = apply_pose(source, pose, grid, kind="linear", default=-1000.0).array.astype(np.float32)
    sigma = [noise_correlation_mm / FWHM_PER_SIGMA / s for s in grid.spacing_zyx_mm]
    sd_hu = low_dose_ct_noise_hu(grid.spacing_zyx_mm) if noise_hu is None else noise_hu
    image += np.float32(sd_hu) * correlated_noise(rng, image.shape, sigma)
    return grid.with_array(np.clip(image, -1024.0, 3071.0).astype(np.float32), unit="HU")
