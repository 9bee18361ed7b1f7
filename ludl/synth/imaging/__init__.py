"""Scanner images of a digital patient: post-therapy 177Lu SPECT (per bed), low-dose CT and pre-therapy PSMA PET.

Image-domain models (fast; the SPECT/CT and PET tables of docs/synthetic-cohort.md are the requirements).
Inputs are maps on the truth
grid in the reference pose; every scan has its own grid in its own pose (`ludl.synth.pose`).

SPECT, per bed position (each with its own start time and activity map):
1. truth concentration → working grid at the SPECT voxel size (exact block/box aggregation, ∫ conserved);
2. pulled through the pose onto the bed's scanner grid (activity-conserving, `apply_pose(kind="activity")`);
3. expected counts = A · S_true · t_acq / dead-time factor, S_true = nominal sensitivity × (1 + calibration error);
4. depth-dependent blur: the counts are split by source depth below the body outline (transaxial distance to the
   surface, hat-function weights over a few depth bands) and each part is blurred with its own Gaussian, so counts
   are conserved and the PSF widens with depth: FWHM(d) = FWHM_true · (1 + g · (d − d_ref) / 100 mm);
5. correlated reconstruction noise: a multiplicative log-normal field (ML-EM noise is close to log-normal with a
   standard deviation proportional to the mean, Barrett, Wilson & Tsui 1994 Phys Med Biol 39:833) with the voxel CV
   set by the bed's expected total counts, CV = CV_ref · √(N_ref / N) (Poisson statistics of the projections).
Only the nominal FWHM, the nominal sensitivity, the acquisition time and the dead-time factor are meant for the
manifest; the realised FWHM, the calibration error and the noise level are hidden truth (`SpectTruth`).

Modules: `common` (working grids, aggregation, blur, noise), `spect_protocol` (protocol, camera, scan records),
`spect` (the SPECT model), `ct` and `pet`. SUV conversions are `ludl.physics.units.suv_bw` and
`bq_per_ml_from_suv`.
"""

from __future__ import annotations

from ludl.synth.imaging.common import FWHM_PER_SIGMA, correlated_noise, working_grid
from ludl.synth.imaging.ct import ct_grid, simulate_ct
from ludl.synth.imaging.pet import PetSpec, pet_grid, simulate_pet
from ludl.synth.imaging.spect import fov_masks, fwhm_at_depth_mm, plan_beds, simulate_spect
from ludl.synth.imaging.spect_protocol import (
    SpectBed,
    SpectBedImage,
    SpectScan,
    SpectSpec,
    SpectSystem,
    SpectTruth,
    sample_spect_system,
)
from ludl.synth.pose import Pose, PoseKind, PoseSpec, apply_pose, random_pose

__all__ = [
    "FWHM_PER_SIGMA",
    "PetSpec",
    "Pose",
    "PoseKind",
    "PoseSpec",
    "SpectBed",
    "SpectBedImage",
    "SpectScan",
    "SpectSpec",
    "SpectSystem",
    "SpectTruth",
    "apply_pose",
    "correlated_noise",
    "ct_grid",
    "fov_masks",
    "fwhm_at_depth_mm",
    "pet_grid",
    "plan_beds",
    "random_pose",
    "sample_spect_system",
    "simulate_ct",
    "simulate_pet",
    "simulate_spect",
    "working_grid",
]
