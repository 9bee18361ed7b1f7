"""Low-dose CT of a scan: the true HU in the scan's pose on its grid, with correlated noise."""

from __future__ import annotations

import numpy as np

from ludl.errors import InputError
from ludl.imaging.resample import grid_with_spacing
from ludl.imaging.volume import Volume
from ludl.synth.imaging.common import FWHM_PER_SIGMA, aggregate, check_truth_grid, correlated_noise, working_grid
from ludl.synth.pose import Pose, apply_pose

__all__ = [
    "ct_grid",
    "simulate_ct",
]


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
    noise_hu: float = 20.0,
    noise_correlation_mm: float = 2.0,
) -> Volume:
    """Low-dose CT of one scan: the true HU (reference pose) seen in `pose` on `grid`, with correlated noise.

    Args:
        hu_truth: true HU on the truth grid.
        grid: the CT grid in the scanner frame (e.g. `ct_grid(scan.grid)`).
        pose: reference → scanner pose of this time point (the CT shares the SPECT's pose).
        rng: random generator.
        noise_hu: voxel noise SD, HU (low-dose CT at 2–5 mm voxels: ≈ 10–30 HU; assumption).
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
    image += np.float32(noise_hu) * correlated_noise(rng, image.shape, sigma)
    return grid.with_array(np.clip(image, -1024.0, 3071.0).astype(np.float32), unit="HU")
