"""The region table of one prediction: every organ and lesion with volume, dose statistics, BED and uncertainty.

Region means come from `ludl.models.whole_volume.region_means` and the partial-volume-corrected means from
`correct_single_scan` — the two functions the training's held-out evaluation scores with (the root ``train.py``
hands `correct_single_scan` to `ludl.training.predict.RegionScoring`): one road from a predicted volume to the
numbers, whether ``train.py`` or ``infer.py`` asks.

Uncertainty of a region mean: the spread of the members (ensemble folds × test-time flips) combined with one
model's error for that kind of region at that scan time, learned on the training's validation fold
(`ModelSet.region_relative_sd`, `ludl.models.uncertainty`), as independent parts; the 90 % interval is
mean ± 1.645 SD (`Z_90`). The training measures its coverage on held-out patients (`ModelSet.interval_coverage`);
`ludl.inference.calibration` re-measures it through this very table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.single_scan import correct_region_doses
from ludl.dosimetry.stp_population import region_class
from ludl.models.region_model import RegionFactor
from ludl.models.uncertainty import Z_90, interval_class
from ludl.models.whole_volume import CorrectionInput, region_means
from ludl.physics.radiobiology import (
    KIDNEY_ALPHA_BETA_GY,
    KIDNEY_T_REPAIR_H,
    SALIVARY_ALPHA_BETA_GY,
    bed_gy,
    region_stats,
)

__all__ = [
    "BED_RADIOBIOLOGY",
    "REGION_TABLE_COLUMNS",
    "Z_90",
    "correct_single_scan",
    "effective_half_life_h",
    "region_table",
]

# (α/β Gy, repair half-time h) for the BED of organs at risk (`ludl.physics.radiobiology`). Salivary glands take the
# kidney's repair half-time — an assumption, stated in docs/inference.md.
BED_RADIOBIOLOGY: Mapping[str, tuple[float, float]] = {
    "kidney_left": (KIDNEY_ALPHA_BETA_GY, KIDNEY_T_REPAIR_H),
    "kidney_right": (KIDNEY_ALPHA_BETA_GY, KIDNEY_T_REPAIR_H),
    **{
        f"{g}_{s}": (SALIVARY_ALPHA_BETA_GY, KIDNEY_T_REPAIR_H)
        for g in ("parotid", "submandibular")
        for s in ("left", "right")
    },
}
REGION_TABLE_COLUMNS: tuple[str, ...] = (
    "region",
    "kind",
    "source",
    "volume_ml",
    "mean_dose_gy",
    "voxel_mean_dose_gy",
    "median_dose_gy",
    "max_dose_gy",
    "d2_gy",
    "d50_gy",
    "d98_gy",
    "tia_mbq_h",
    "t_eff_h",
    "bed_gy",
    "mean_dose_sd_gy",
    "mean_dose_lo90_gy",
    "mean_dose_hi90_gy",
    "member_sd_gy",
    "correction_factor",
    "scored",
    "flags",
)


def correct_single_scan(item: CorrectionInput) -> dict[str, float]:
    """Partial-volume-corrected mean dose (Gy) of every region of one predicted TIA map (single-scan GTM)."""
    regions = RegionSet(
        item.labels, dict(item.region_values), {n: item.region_kinds.get(n, "organ") for n in item.region_values}
    )
    doses = correct_region_doses(
        item.tia_mbq_h_per_ml,
        regions,
        item.density_g_per_ml,
        item.spacing_zyx_mm,
        item.fwhm_mm,
        dose_gy=item.dose_gy,
    )
    return dict(doses.mean_dose_gy)


def effective_half_life_h(tau_h: float, time_h: float) -> float:
    """Effective half-life (h) of a mono-exponential A(s) = A0·e^(−λs) with ∫₀^∞ A = A(t)·τ: the root λ < 1/t of
    e^(λt)/λ = τ (slow clearance; τ ≥ e·t always). NaN where τ < e·t (no mono-exponential fits)."""
    if not (math.isfinite(tau_h) and tau_h > 0 and time_h > 0) or tau_h < math.e * time_h * (1 - 1e-9):
        return math.nan
    lo, hi = 1e-9, 1.0 / time_h  # f(λ) = e^(λt)/λ decreases from +∞ to e·t on (0, 1/t]
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.exp(mid * time_h) / mid > tau_h:
            lo = mid
        else:
            hi = mid
    return math.log(2.0) / (0.5 * (lo + hi))


def _means(dose_gy: torch.Tensor, labels: npt.NDArray[Any], values: Sequence[int]) -> npt.NDArray[np.float64]:
    regions = torch.as_tensor(np.asarray(labels, dtype=np.int32))
    return region_means(dose_gy, regions, torch.as_tensor(list(values), dtype=torch.int64)).cpu().numpy()


def region_table(
    dose_gy: torch.Tensor,
    member_doses_gy: Sequence[torch.Tensor],
    tia_mbq_h_per_ml: torch.Tensor,
    activity_mbq_per_ml: torch.Tensor,
    density_g_per_ml: torch.Tensor,
    regions: RegionSet,
    spacing_zyx_mm: tuple[float, float, float],
    *,
    time_h: float,
    fwhm_mm: float | None,
    relative_sd: Mapping[str, float],
    source: str,
    edge_flags: Mapping[str, str] | None = None,
    calibration: RegionFactor | None = None,
    features: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """One row per region (`REGION_TABLE_COLUMNS`) of a prediction, all maps (z, y, x) on the regions' grid.

    Args:
        dose_gy: the reported dose map (member mean); member_doses_gy: each member's map (one: no spread).
        tia_mbq_h_per_ml, activity_mbq_per_ml, density_g_per_ml: the TIA, the scan's activity and density.
        regions: the regions scored (network segmentation or a reference label map).
        fwhm_mm: the SPECT's resolution for the partial-volume correction (None: uncorrected means reported).
        relative_sd: interval class (`ludl.models.uncertainty.interval_class`) or kind group (``lesion``/``organ``,
            the fallback) → one model's relative SD of a region mean at this scan time (`ModelSet.region_relative_sds`).
        source: ``network`` or ``reference`` (whose regions these are).
        edge_flags: region → why it is not scored (e.g. it touches the edge of the field of view).
        calibration: the model's region factor (`ModelSet.region_factor`: class factors and the region kinetics
            model, `ludl.models.region_model`): the reported mean is the corrected (else voxel) mean × the factor of
            its class, scan time and `features`, exactly as the training evaluation scored it.
        features: region → the region kinetics model's features (`ludl.models.whole_volume.scored_region_features`).
    """
    names = [n for n in regions.values if regions.kinds.get(n, "organ") != "body"]
    values = [regions.values[n] for n in names]
    if not names:
        return []
    voxel_ml = float(np.prod(spacing_zyx_mm)) / 1000.0
    means = _means(dose_gy, regions.labels, values)
    members = np.stack([_means(d, regions.labels, values) for d in member_doses_gy]) if member_doses_gy else means[None]
    member_sd = members.std(axis=0, ddof=1) if members.shape[0] > 1 else np.zeros(len(names))
    corrected: Mapping[str, float] = {}
    if fwhm_mm is not None and math.isfinite(fwhm_mm) and fwhm_mm > 0:
        corrected = correct_single_scan(
            CorrectionInput(
                tia_mbq_h_per_ml.double().cpu().numpy(),
                dose_gy.double().cpu().numpy(),
                np.asarray(regions.labels, dtype=np.int32),
                dict(regions.values),  # every region, body included: the GTM system is the evaluation's
                dict(regions.kinds),
                density_g_per_ml.double().cpu().numpy(),
                spacing_zyx_mm,
                float(fwhm_mm),
            )
        )
    dose = dose_gy.double().cpu().numpy()
    tia = tia_mbq_h_per_ml.double().cpu().numpy()
    activity = activity_mbq_per_ml.double().cpu().numpy()
    rows = []
    for i, name in enumerate(names):
        kind = regions.kinds.get(name, "organ")
        mask = regions.mask(name)
        if not mask.any():
            continue
        stats = region_stats(dose, mask, voxel_ml)
        tia_total = float(tia[mask].sum()) * voxel_ml
        activity_total = float(activity[mask].sum()) * voxel_ml
        t_eff = effective_half_life_h(tia_total / activity_total, time_h) if activity_total > 0 else math.nan
        mean = float(corrected.get(name, math.nan))
        mean = mean if math.isfinite(mean) else float(means[i])
        if calibration is not None:
            mean *= calibration(region_class(name, kind) or "", time_h, (features or {}).get(name, {}))
        group = "lesion" if kind == "lesion" else "organ"
        cls = interval_class(region_class(name, kind), kind, stats.volume_ml)
        rel = float(relative_sd.get(cls or group, relative_sd.get(group, math.nan)))
        model_sd = mean * rel if math.isfinite(rel) else 0.0
        sd = math.hypot(float(member_sd[i]), model_sd)
        bed = math.nan
        if name in BED_RADIOBIOLOGY and math.isfinite(t_eff) and mean >= 0:
            ab, repair = BED_RADIOBIOLOGY[name]
            bed = float(bed_gy(mean, t_eff, ab, repair))
        flag = (edge_flags or {}).get(name, "")
        rows.append(
            {
                "region": name,
                "kind": kind,
                "source": source,
                "volume_ml": stats.volume_ml,
                "mean_dose_gy": mean,
                "voxel_mean_dose_gy": float(means[i]),
                "median_dose_gy": stats.median_gy,
                "max_dose_gy": stats.max_gy,
                "d2_gy": stats.d2_gy,
                "d50_gy": stats.d50_gy,
                "d98_gy": stats.d98_gy,
                "tia_mbq_h": tia_total,
                "t_eff_h": t_eff,
                "bed_gy": bed,
                "mean_dose_sd_gy": sd,
                "mean_dose_lo90_gy": max(mean - Z_90 * sd, 0.0),
                "mean_dose_hi90_gy": mean + Z_90 * sd,
                "member_sd_gy": float(member_sd[i]),
                "correction_factor": mean / float(means[i]) if float(means[i]) > 0 else math.nan,
                "scored": not flag,
                "flags": flag,
            }
        )
    return rows
