"""Pre-therapy PSMA PET in SUV: protocol, scanner grid and the image model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.synth.imaging.common import (
    FWHM_PER_SIGMA,
    aggregate,
    blur_variance_voxels,
    check_truth_grid,
    correlated_noise,
    gaussian_blur,
    lognormal_factor,
    working_grid,
)
from ludl.synth.pose import Pose, apply_pose

__all__ = [
    "PetSpec",
    "pet_grid",
    "simulate_pet",
]


@dataclass(frozen=True)
class PetSpec:
    """A pre-therapy PSMA PET protocol (docs/synthetic-cohort.md PET table).

    Args:
        spacing_mm: isotropic voxel size, mm (3–4 mm clinical; coarser for small presets).
        fwhm_mm: reconstructed resolution, mm (≈ 5 mm, EJNMMI Phys 2022).
        noise_cv_reference: voxel CV at SUV `noise_reference_suv` (≈ 15 % in liver, EJNMMI Phys 2022).
        noise_reference_suv: SUV level of the CV reference (liver SUVmean ≈ 5, Li 2017 JNM for DCFPyL).
        noise_level_exponent: CV ∝ (SUV / reference)^(−exponent): hot regions are relatively less noisy
            (0 = purely multiplicative, 0.5 = Poisson-like; assumption 0.25).
        noise_cv_range: (low, high) clip of the voxel CV.
        noise_correlation_fwhm_mm: FWHM of the noise texture, mm.
        margin_mm: field of view beyond the truth grid on every side, mm.
    """

    spacing_mm: float = 4.0
    fwhm_mm: float = 5.0
    noise_cv_reference: float = 0.15
    noise_reference_suv: float = 5.0
    noise_level_exponent: float = 0.25
    noise_cv_range: tuple[float, float] = (0.05, 0.6)
    noise_correlation_fwhm_mm: float = 6.0
    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("spacing_mm", "fwhm_mm", "noise_reference_suv", "noise_correlation_fwhm_mm"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"PetSpec.{name} must be > 0, got {value}")
        if self.noise_cv_reference < 0 or not 0 < self.noise_cv_range[0] <= self.noise_cv_range[1]:
            raise InputError(f"PetSpec: noise CV must be ≥ 0 within a valid range, got {self.noise_cv_range}")


def pet_grid(truth_grid: Volume, spec: PetSpec, rng: np.random.Generator) -> Volume:
    """The PET scanner grid: covers the truth field of view (+ margin) at `spec.spacing_mm`, random sub-voxel origin."""
    shape = np.asarray(truth_grid.shape, dtype=np.float64)
    extent = shape * np.asarray(truth_grid.spacing_zyx_mm) + 2 * spec.margin_mm
    n = np.maximum(1, np.ceil(extent / spec.spacing_mm)).astype(int)
    centre = truth_grid.index_to_physical((shape - 1.0) / 2.0)
    offset = rng.uniform(-0.5, 0.5, 3) * spec.spacing_mm  # its own lattice, not the truth's
    origin = centre - (n[::-1] - 1) / 2.0 * spec.spacing_mm + offset
    return Volume(
        np.zeros(tuple(int(v) for v in n), dtype=np.uint8),
        (spec.spacing_mm,) * 3,
        (float(origin[0]), float(origin[1]), float(origin[2])),
    )


def simulate_pet(
    pet_suv_truth: Volume,
    spec: PetSpec,
    rng: np.random.Generator,
    pose: Pose,
    *,
    grid: Volume | None = None,
) -> Volume:
    """Pre-therapy PSMA PET in SUV: the true SUV map (reference pose) in the PET pose, ≈ 5 mm FWHM, noisy.

    Args:
        pet_suv_truth: true SUVbw on the truth grid (reference pose).
        spec: PET protocol.
        rng: random generator.
        pose: reference → PET scanner pose (`random_pose`; rigid offset plus slight deformation).
        grid: output grid (default `pet_grid(truth grid, spec, rng)`).

    Returns:
        float32 SUV Volume on the PET grid (∫ SUV dV conserved before noise; noise has mean 1).
    """
    check_truth_grid(pet_suv_truth, "pet_suv_truth")
    if grid is None:
        grid = pet_grid(pet_suv_truth, spec, rng)
    work, block = working_grid(pet_suv_truth, spec.spacing_mm)
    suv = apply_pose(aggregate(pet_suv_truth, work, block), pose, grid, kind="activity").array.astype(np.float32)
    suv = gaussian_blur(suv, blur_variance_voxels(spec.fwhm_mm, spec.spacing_mm))
    suv = np.maximum(suv, np.float32(0.0))
    level = np.maximum(suv, np.float32(1e-3 * spec.noise_reference_suv)) / np.float32(spec.noise_reference_suv)
    cv = np.clip(spec.noise_cv_reference * level ** np.float32(-spec.noise_level_exponent), *spec.noise_cv_range)
    sigma_noise = spec.noise_correlation_fwhm_mm / FWHM_PER_SIGMA / spec.spacing_mm
    noisy = suv * lognormal_factor(correlated_noise(rng, suv.shape, sigma_noise), cv)
    return grid.with_array(noisy.astype(np.float32), unit="SUV")
