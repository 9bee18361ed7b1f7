"""Count-noise resampling: the SPECT a shorter acquisition (fewer counts) would have given, for augmentation.

Model. A voxel of activity concentration a (MBq/mL) stands for n = a·k detected counts, k = V·S·t (voxel volume mL,
system volume sensitivity cps/MBq, acquisition time s; docs/physics.md §6). Keeping each count with probability f
(binomial thinning of a Poisson count, so again Poisson) and rescaling by 1/f gives an estimate of a with the same
mean and the added variance a·(1 − f)/(f·k). We draw it from a gamma distribution with that mean and variance
(shape a/s, scale s, s = (1 − f)/(f·k)): non-negative, exact in mean and variance, close to the scaled Poisson
for more than a few counts, and continuous like a reconstructed image. Where the shape exceeds `GAUSSIAN_SHAPE`
(≥ 50 effective counts) the normal with the same mean and variance is drawn instead: 3× faster, indistinguishable
from the gamma there, and below zero with probability < 1e-12. It is a per-voxel model: a reconstruction's
noise is spatially correlated and larger than the voxel's Poisson noise, so `k` is best read as "effective counts
per MBq/mL" and the fraction range as the strength of the augmentation.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError

__all__ = [
    "DEFAULT_ACQUISITION_S",
    "DEFAULT_SENSITIVITY_CPS_PER_MBQ",
    "GAUSSIAN_SHAPE",
    "count_noise_variance",
    "counts_per_mbq_per_ml",
    "resample_counts",
]

# 177Lu, 208 keV window, medium-energy collimators: the synthetic cohort's system volume sensitivity (physics.md §6).
DEFAULT_SENSITIVITY_CPS_PER_MBQ = 9.4
# Used when a time point's sidecar does not know its acquisition time: a common 177Lu SPECT protocol per bed.
DEFAULT_ACQUISITION_S = 1200.0
GAUSSIAN_SHAPE = 50.0


def counts_per_mbq_per_ml(voxel_ml: float, sensitivity_cps_per_mbq: float, acquisition_s: float) -> float:
    """k: counts a voxel of 1 MBq/mL stands for (voxel volume × sensitivity × acquisition time)."""
    k = float(voxel_ml) * float(sensitivity_cps_per_mbq) * float(acquisition_s)
    if not k > 0:
        raise InputError(
            f"count-noise needs a positive voxel volume, sensitivity and acquisition time, got {voxel_ml} mL, "
            f"{sensitivity_cps_per_mbq} cps/MBq, {acquisition_s} s; set data.augmentation.sensitivity_cps_per_mbq"
        )
    return k


def count_noise_variance(
    activity_mbq_per_ml: npt.ArrayLike, count_fraction: float, counts_per_unit: float
) -> npt.NDArray[np.float64]:
    """Variance added by keeping `count_fraction` of the counts and rescaling: a·(1 − f)/(f·k)."""
    f = float(count_fraction)
    return np.asarray(activity_mbq_per_ml, dtype=np.float64) * (1.0 - f) / (f * float(counts_per_unit))


def resample_counts(
    activity_mbq_per_ml: npt.NDArray[np.floating],
    count_fraction: float,
    counts_per_unit: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """The activity map at `count_fraction` of its counts: draws with mean a and variance a·(1 − f)/(f·k)."""
    f = float(count_fraction)
    if not 0.0 < f <= 1.0:
        raise InputError(f"count fraction must be in (0, 1], got {f}; set data.augmentation.count_fraction_range")
    a = np.clip(np.asarray(activity_mbq_per_ml, dtype=np.float32), 0.0, None)
    if f == 1.0:
        return a
    scale = np.float32((1.0 - f) / (f * float(counts_per_unit)))
    shape = a / scale
    out = np.zeros_like(a)
    few = (shape > 0) & (shape < GAUSSIAN_SHAPE)  # gamma(shape 0) is the point mass at 0: empty voxels stay empty
    out[few] = rng.standard_gamma(shape[few], dtype=np.float32) * scale
    many = shape >= GAUSSIAN_SHAPE
    values = a[many]
    out[many] = values + np.sqrt(values * scale) * rng.standard_normal(values.shape, dtype=np.float32)
    return np.clip(out, 0.0, None)
