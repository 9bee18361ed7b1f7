"""Radiobiology and dose statistics for reporting: BED/EQD2 (Dale), DVH, D_x/V_x, region and tumour summaries.

BED follows the linear-quadratic model with incomplete repair for a continuously decaying dose rate
(Dale 1985, Br J Radiol 58:515; Dale 1996, Int J Radiat Biol 69:395): BED = D·(1 + G·D/(α/β)), G the
Lea–Catcheside factor. Kidney defaults α/β = 2.6 Gy and T_rep = 2.8 h (docs/physics.md §5; common choices
in 177Lu renal dosimetry, e.g. Bodei 2008, Eur J Nucl Med Mol Imaging 35:1847).

These are reporting quantities (NumPy only), not training targets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError

__all__ = [
    "KIDNEY_ALPHA_BETA_GY",
    "KIDNEY_T_REPAIR_H",
    "SALIVARY_ALPHA_BETA_GY",
    "RegionStats",
    "bed_gy",
    "cumulative_bed_gy",
    "d_x",
    "dvh",
    "eqd2_gy",
    "g_factor",
    "region_stats",
    "v_x",
    "whole_body_tumour_dose",
]

KIDNEY_ALPHA_BETA_GY = 2.6  # docs/physics.md §5
KIDNEY_T_REPAIR_H = 2.8  # docs/physics.md §5
# Salivary glands: the late-responding-tissue α/β; no consensus exists for PSMA therapy (docs/inference.md).
SALIVARY_ALPHA_BETA_GY = 3.0

FloatArray = npt.NDArray[np.float64]

# Uptake and washout rates closer than this (relative) are split symmetrically: the closed form divides
# by their difference; the ± split cancels the first-order error (G is smooth in the rates).
_EQUAL_RATE_SPLIT = 1e-4


def _as_float(x: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def _positive(x: npt.ArrayLike, name: str, allow_inf: bool = False) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(arr) & (arr > 0) & (np.isfinite(arr) | allow_inf)
    if not np.all(ok):
        raise InputError(f"{name} must be positive{' (inf allowed)' if allow_inf else ' and finite'}, got {x!r}")
    return arr


def _g_sum_of_exponentials(coef: FloatArray, rate: FloatArray, mu: FloatArray) -> FloatArray:
    """Lea–Catcheside G for R(t) = Σ_i c_i e^{−a_i t} (rates on the last axis), repair rate μ.

    G = (2/D²) ∫₀^∞ R(t) ∫₀^t R(w) e^{−μ(t−w)} dw dt = 2 Σ_ij c_i c_j / ((a_i + a_j)(a_i + μ)) / (Σ_i c_i/a_i)².
    """
    ci, cj = coef[..., :, None], coef[..., None, :]
    ai, aj = rate[..., :, None], rate[..., None, :]
    num = 2.0 * np.sum(ci * cj / ((ai + aj) * (ai + mu[..., None, None])), axis=(-2, -1))
    dose = np.sum(coef / rate, axis=-1)
    g: FloatArray = num / dose**2
    return g


def g_factor(
    t_eff_h: npt.ArrayLike,
    t_repair_h: npt.ArrayLike = KIDNEY_T_REPAIR_H,
    uptake_half_life_h: npt.ArrayLike | None = None,
) -> FloatArray:
    """Lea–Catcheside dose-protraction factor G ∈ [0, 1] for an exponentially decaying dose rate.

    Instant uptake: G = λ/(λ + μ), λ = ln2/T_eff, μ = ln2/T_rep. With an uptake phase the dose rate is
    ∝ e^{−λ t} − e^{−λ_u t} (λ_u = ln2/T_uptake) and G is the same double integral in closed form.

    Args:
        t_eff_h: effective (clearance) half-life of the dose rate in h.
        t_repair_h: repair half-time in h (inf: no repair, G = 1).
        uptake_half_life_h: uptake half-life in h, or None for instant uptake.
    """
    lam = math.log(2.0) / _positive(t_eff_h, "t_eff_h")
    mu = math.log(2.0) / _positive(t_repair_h, "t_repair_h", allow_inf=True)
    if uptake_half_life_h is None:
        g_instant: FloatArray = lam / (lam + mu)
        return g_instant
    lam_u = math.log(2.0) / _positive(uptake_half_life_h, "uptake_half_life_h")
    lam, lam_u, mu = np.broadcast_arrays(lam, lam_u, mu)
    close = np.abs(lam_u - lam) <= _EQUAL_RATE_SPLIT * np.maximum(lam, lam_u)
    mid = 0.5 * (lam + lam_u)
    # G is symmetric in the two rates (swapping them flips the sign of R and D together), so a split
    # around the mean is exact to second order.
    lo = np.where(close, mid * (1.0 - _EQUAL_RATE_SPLIT), lam)
    hi = np.where(close, mid * (1.0 + _EQUAL_RATE_SPLIT), lam_u)
    rates = np.stack([lo, hi], axis=-1)
    coef = np.broadcast_to(np.array([1.0, -1.0]), rates.shape)
    g: FloatArray = _g_sum_of_exponentials(coef, rates, np.asarray(mu))
    return g


def bed_gy(
    dose_gy: npt.ArrayLike,
    t_eff_h: npt.ArrayLike,
    alpha_beta_gy: npt.ArrayLike = KIDNEY_ALPHA_BETA_GY,
    t_repair_h: npt.ArrayLike = KIDNEY_T_REPAIR_H,
    uptake_half_life_h: npt.ArrayLike | None = None,
) -> FloatArray:
    """Biologically effective dose (Gy) of one cycle: BED = D·(1 + G·D/(α/β)) (Dale), vectorised.

    Args:
        dose_gy: absorbed dose of the cycle in Gy.
        t_eff_h: effective half-life of the region's dose rate in h.
        alpha_beta_gy: α/β in Gy (kidney default 2.6).
        t_repair_h: repair half-time in h (kidney default 2.8).
        uptake_half_life_h: uptake half-life in h (None: instant uptake).
    """
    dose = _as_float(dose_gy, "dose_gy")
    if np.any(dose < 0):
        raise InputError("dose_gy contains negative doses")
    ab = _positive(alpha_beta_gy, "alpha_beta_gy")
    g = g_factor(t_eff_h, t_repair_h, uptake_half_life_h)
    bed: FloatArray = dose * (1.0 + g * dose / ab)
    return bed


def eqd2_gy(bed: npt.ArrayLike, alpha_beta_gy: npt.ArrayLike = KIDNEY_ALPHA_BETA_GY) -> FloatArray:
    """Equivalent dose in 2-Gy fractions (Gy): EQD2 = BED / (1 + 2/(α/β))."""
    b = _as_float(bed, "bed")
    ab = _positive(alpha_beta_gy, "alpha_beta_gy")
    out: FloatArray = b / (1.0 + 2.0 / ab)
    return out


def cumulative_bed_gy(bed_per_cycle_gy: npt.ArrayLike, axis: int = 0) -> FloatArray:
    """Cumulative BED over cycles (Gy): BED adds over cycles (docs/physics.md §5); cycles along `axis`."""
    b = _as_float(bed_per_cycle_gy, "bed_per_cycle_gy")
    if b.ndim == 0 or b.shape[axis] == 0:
        raise InputError("bed_per_cycle_gy needs at least one cycle along the cycle axis")
    out: FloatArray = np.sum(b, axis=axis)
    return out


def _masked_doses(dose_gy: npt.ArrayLike, mask: npt.ArrayLike) -> FloatArray:
    dose = _as_float(dose_gy, "dose_gy")
    m = np.asarray(mask)
    if m.shape != dose.shape:
        raise InputError(f"mask shape {m.shape} differs from dose shape {dose.shape}; put both on the same grid")
    if m.dtype != np.bool_:
        # A label map passed by mistake (values 1…N) would silently merge regions: demand 0/1.
        if not np.all((m == 0) | (m == 1)):
            raise InputError("mask must be boolean or 0/1; select one region of a label map with labels == value")
        m = m.astype(bool)
    values = dose[m]
    if values.size == 0:
        raise InputError("mask is empty: the region has no voxels on this grid")
    return values


def dvh(dose_gy: npt.ArrayLike, mask: npt.ArrayLike, bins: int | npt.ArrayLike = 200) -> tuple[FloatArray, FloatArray]:
    """Cumulative dose–volume histogram of a region: V(d) = fraction of its voxels with dose ≥ d.

    Args:
        dose_gy: dose map in Gy.
        mask: region mask, boolean or 0/1, same shape.
        bins: number of dose points from 0 to the region maximum, or the dose points (Gy) themselves.

    Returns:
        (dose axis in Gy, volume fraction in [0, 1]), both 1-D; V(0) = 1 for non-negative doses.
    """
    values = np.sort(_masked_doses(dose_gy, mask))
    if np.ndim(bins) == 0:
        n = int(bins)  # type: ignore[arg-type]
        if n < 2:
            raise InputError(f"bins must be ≥ 2 dose points, got {bins!r}")
        axis = np.linspace(0.0, float(values[-1]), n)
    else:
        axis = _as_float(bins, "bins").ravel()
        if axis.size == 0 or np.any(np.diff(axis) < 0):
            raise InputError("bins given as dose points must be a non-empty, increasing array in Gy")
    frac: FloatArray = 1.0 - np.searchsorted(values, axis, side="left") / values.size
    return axis, frac


def d_x(dose_gy: npt.ArrayLike, mask: npt.ArrayLike, x_percent: npt.ArrayLike) -> FloatArray:
    """D_x (Gy): the highest dose that at least x % of the region receives (D2 near-max, D50, D98 near-min).

    On voxels: the ⌈x·n/100⌉-th highest dose; D0 is the maximum and D100 the minimum. So V_x(D_x) ≥ x/100.
    """
    values = np.sort(_masked_doses(dose_gy, mask))[::-1]
    x = _as_float(x_percent, "x_percent")
    if np.any((x < 0) | (x > 100)):
        raise InputError(f"x_percent must lie in [0, 100], got {x_percent!r}")
    # The small tolerance keeps 7 % of 100 voxels at 7 voxels despite 0.07·100 = 7.000000000000001.
    rank = np.ceil(x * values.size / 100.0 - 1e-9).astype(np.int64)
    out: FloatArray = values[np.clip(rank - 1, 0, values.size - 1)]
    return out


def v_x(dose_gy: npt.ArrayLike, mask: npt.ArrayLike, x_gy: npt.ArrayLike) -> FloatArray:
    """V_x: fraction (0–1) of the region's voxels receiving at least x Gy (vectorised over x_gy)."""
    values = np.sort(_masked_doses(dose_gy, mask))
    x = _as_float(x_gy, "x_gy")
    out: FloatArray = 1.0 - np.searchsorted(values, x, side="left") / values.size
    return out


@dataclass(frozen=True)
class RegionStats:
    """Dose statistics of one region (Gy, mL)."""

    mean_gy: float
    median_gy: float
    min_gy: float
    max_gy: float
    d2_gy: float
    d50_gy: float
    d98_gy: float
    volume_ml: float
    n_voxels: int

    def as_dict(self) -> dict[str, Any]:
        """The statistics as a plain dict (for tables and JSON)."""
        return asdict(self)


def region_stats(dose_gy: npt.ArrayLike, mask: npt.ArrayLike, voxel_volume_ml: float) -> RegionStats:
    """Mean, median, min, max, D2/D50/D98 and volume of a region.

    Args:
        dose_gy: dose map in Gy.
        mask: region mask, boolean or 0/1, same shape.
        voxel_volume_ml: volume of one voxel in mL.
    """
    vox_ml = float(_positive(voxel_volume_ml, "voxel_volume_ml"))
    values = _masked_doses(dose_gy, mask)
    d2, d50, d98 = d_x(values, np.ones(values.shape, dtype=bool), [2.0, 50.0, 98.0])
    return RegionStats(
        mean_gy=float(np.mean(values)),
        median_gy=float(np.median(values)),
        min_gy=float(np.min(values)),
        max_gy=float(np.max(values)),
        d2_gy=float(d2),
        d50_gy=float(d50),
        d98_gy=float(d98),
        volume_ml=values.size * vox_ml,
        n_voxels=int(values.size),
    )


def whole_body_tumour_dose(mean_doses_gy: npt.ArrayLike, volumes_ml: npt.ArrayLike) -> float:
    """Whole-body tumour dose (Gy): volume-weighted mean of lesion mean doses, Σ D_i V_i / Σ V_i (Violet 2019).

    Args:
        mean_doses_gy: mean dose of each lesion in Gy, 1-D.
        volumes_ml: volume of each lesion in mL, same length.
    """
    d = _as_float(mean_doses_gy, "mean_doses_gy").ravel()
    v = _as_float(volumes_ml, "volumes_ml").ravel()
    if d.size == 0 or d.size != v.size:
        raise InputError(f"need one volume per lesion mean dose, got {d.size} doses and {v.size} volumes (≥ 1)")
    if np.any(v < 0) or float(np.sum(v)) <= 0:
        raise InputError("volumes_ml must be ≥ 0 with a positive total")
    return float(np.sum(d * v) / np.sum(v))
