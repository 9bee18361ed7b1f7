"""Single-time-point (STP) estimates of one case: region rows (`stp_region_table`) and voxel maps (`stp_dose_map`).

Each method turns one scan into a region TIA (`ludl.dosimetry.baselines` lists them): ``haenscheid`` TIA =
A(t)·2t/ln2 (docs/physics.md §3), ``madsen`` TIA = A(t)·e^{λt}/λ with the training split's T_eff of the region class,
``prior`` the posterior-median TIA of `ludl.physics.stp.PriorInformedEstimator` (population values:
`ludl.dosimetry.stp_population`). With the scan's single-scan values f, u, g of the region (`ludl.dosimetry.stp_case`),
an STP row reads:

- ``tia_mbq_h`` = f · TIA_STP, ``mean_dose_gy`` = g · TIA_STP (partial-volume corrected, what is evaluated);
- ``tia_uncorrected_mbq_h`` = TIA_STP, ``mean_dose_uncorrected_gy`` = u · TIA_STP (no correction);
- ``pvc_factor`` = f; ``gt_tia_uncorrected_mbq_h``: the multi-TP uncorrected TIA, so that
  ``tia_uncorrected_mbq_h / gt_tia_uncorrected_mbq_h − 1`` is the kinetic error of the STP formula alone.

With the ground truth's ``pvc="none"`` f = 1 and g = u. Cases whose rows lack the ``ss…`` values (sidecars written
before them) get NaN corrected and uncorrected doses. Voxel dose maps (Hänscheid, Madsen) use voxel
TIA = A(x, t)·τ(x) and the pipeline's kernel convolution with density correction, without correction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.dosimetry.dose import dose_map_gy
from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.registration import AlignedTimePoint
from ludl.dosimetry.stp_case import single_scan_keys
from ludl.dosimetry.stp_population import OTHER_CLASS, REGION_CLASSES, region_class
from ludl.errors import InputError
from ludl.io.prepared_sidecar import StpCase
from ludl.physics.stp import PriorInformedEstimator, haenscheid_tia, madsen_tia
from ludl.physics.units import MBQ_PER_BQ

__all__ = ["METHODS", "stp_dose_map", "stp_region_table"]

METHODS = ("haenscheid", "madsen", "prior")
_NAN = float("nan")


def _timepoint_index(case: StpCase, time_h: float) -> int:
    for i, t in enumerate(case.timepoints_h):
        if math.isclose(t, float(time_h), abs_tol=1e-6):
            return i
    raise InputError(
        f"patient {case.patient_id} cycle {case.cycle} has no time point {time_h:g} h; "
        f"it has {', '.join(f'{t:g}' for t in case.timepoints_h)} h"
    )


def stp_region_table(
    case_result: StpCase,
    time_h: float,
    method: str,
    *,
    t_eff_h: Mapping[str, float] | None = None,
    estimator: PriorInformedEstimator | None = None,
    fold: int | None = None,
) -> list[dict[str, Any]]:
    """STP region TIA and mean dose of one case from its scan at nominal time `time_h`, beside the ground truth.

    One row per scored region of a `REGION_CLASSES` class (`STP_COLUMNS`); NaN where the method cannot estimate
    (no activity at the scan, no population value for the class).

    Args:
        case_result: the case (`stp_case`).
        time_h: nominal time point (h), one of the case's.
        method: ``haenscheid``, ``madsen`` (needs `t_eff_h`) or ``prior`` (needs `estimator`).
        t_eff_h: region class → population T_eff (h), from `madsen_t_eff_h` on the training split.
        estimator: a `PriorInformedEstimator` built on `fit_population_priors` of the training split.
        fold: the case's fold, written to the rows.
    """
    if method not in METHODS:
        raise InputError(f"method={method!r} is not known; use one of {', '.join(METHODS)}")
    if method == "madsen" and t_eff_h is None:
        raise InputError("method='madsen' needs t_eff_h= (madsen_t_eff_h of the training split)")
    if method == "prior" and estimator is None:
        raise InputError("method='prior' needs estimator= (PriorInformedEstimator(fit_population_priors(...)))")
    case = case_result
    index = _timepoint_index(case, time_h)
    rows = [r for r in case.regions if r["region_class"] in REGION_CLASSES and r["scored"]]
    rows = [r for r in rows if math.isfinite(r["tia_uncorrected_mbq_h"]) and r["tia_uncorrected_mbq_h"] > 0]
    when = np.array([case.curves[r["region"]][0][index] for r in rows], dtype=np.float64)
    activity = np.array([case.curves[r["region"]][1][index] for r in rows], dtype=np.float64)
    tia, sd, t_used = _stp_tia(rows, activity, when, method, t_eff_h, estimator, case.injected_mbq)
    keys = single_scan_keys(case.timepoints_h[index])
    return [
        _stp_row(case, r, index, method, fold, keys, when[i], activity[i], t_used[i], tia[i], sd[i])
        for i, r in enumerate(rows)
    ]


def _stp_tia(
    rows: Sequence[Mapping[str, Any]],
    activity: npt.NDArray[np.float64],
    when: npt.NDArray[np.float64],
    method: str,
    t_eff_h: Mapping[str, float] | None,
    estimator: PriorInformedEstimator | None,
    injected_mbq: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Uncorrected STP TIA, its SD and the T_eff used (MBq·h, MBq·h, h) of the regions' activities at one scan."""
    tia = np.full(len(rows), _NAN)
    sd = np.full(len(rows), _NAN)
    t_used = np.full(len(rows), _NAN)
    ok = (activity > 0) & np.isfinite(when) & (when > 0)
    if method == "haenscheid":
        tia[ok] = haenscheid_tia(activity[ok], when[ok])
    elif method == "madsen" and t_eff_h is not None:
        t_used = np.array([t_eff_h.get(str(r["region_class"]), _NAN) for r in rows], dtype=np.float64)
        ok &= np.isfinite(t_used) & (t_used > 0)
        tia[ok] = madsen_tia(activity[ok], when[ok], t_used[ok])
    elif method == "prior" and estimator is not None:
        ok &= np.array([r["region_class"] in estimator.priors for r in rows], dtype=bool)
        if ok.any():
            # All regions of this scan belong to one patient: they share the patient factor of the prior.
            post = estimator.posterior(
                activity[ok],
                when[ok],
                [str(r["region_class"]) for r, k in zip(rows, ok, strict=True) if k],
                injected_mbq,
            )
            # The median, not the mean: errors are scored relative, and a late scan's posterior has a long upper tail.
            tia[ok], sd[ok] = post.median, post.sd
    return tia, sd, t_used


def _stp_row(
    case: StpCase,
    r: Mapping[str, Any],
    index: int,
    method: str,
    fold: int | None,
    keys: tuple[str, str, str],
    when: float,
    activity: float,
    t_used: float,
    tia: float,
    sd: float,
) -> dict[str, Any]:
    """One `STP_COLUMNS` row: a region's STP estimate at one scan beside its ground truth and true values."""
    factor_key, dose_key, dose_unc_key = keys
    # Partial volume and dose per TIA from this scan alone (ludl.dosimetry.stp_case), never from the other time points.
    factor = float(r.get(factor_key, _NAN))
    true_tia, true_dose = case.truth.get(str(r["region"]), (_NAN, _NAN))
    return {
        "patient_id": case.patient_id,
        "cycle": case.cycle,
        "fold": "" if fold is None else fold,
        "region": r["region"],
        "kind": r["kind"],
        "region_class": r["region_class"],
        "method": method,
        "timepoint_h": float(case.timepoints_h[index]),
        "time_h": float(when),
        "activity_mbq": float(activity),
        "t_eff_used_h": float(t_used),
        "tia_mbq_h": float(tia) * factor,
        "mean_dose_gy": float(tia) * float(r.get(dose_key, _NAN)),
        "tia_uncorrected_mbq_h": float(tia),
        "mean_dose_uncorrected_gy": float(tia) * float(r.get(dose_unc_key, _NAN)),
        "pvc_factor": factor,
        "map_mean_dose_gy": _NAN,
        "tia_sd_mbq_h": float(sd) * factor,
        "gt_tia_mbq_h": r["tia_mbq_h"],
        "gt_tia_uncorrected_mbq_h": r["tia_uncorrected_mbq_h"],
        "gt_mean_dose_gy": r["mean_dose_gy"],
        "gt_mean_dose_uncorrected_gy": r["mean_dose_uncorrected_gy"],
        "gt_t_eff_h": r["t_eff_h"],
        "gt_t_eff_clearance_h": r.get("t_eff_clearance_h", _NAN),
        "true_tia_mbq_h": true_tia,
        "true_mean_dose_gy": true_dose,
        "volume_ml": r["volume_ml"],
    }


# ------------------------------------------------------------------------------------------------ voxel maps


def stp_dose_map(
    aligned: AlignedTimePoint,
    regions: RegionSet,
    density_g_per_ml: npt.NDArray[np.float64],
    spacing_zyx_mm: tuple[float, float, float],
    method: str,
    *,
    t_eff_h: Mapping[str, float] | None = None,
    dose_method: str = "dvk",
    kernel_cache_dir: str | Path | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Voxel TIA (MBq·h/mL) = A(x, t)·τ(x) from one scan and its dose (Gy) by the pipeline's convolution.

    τ = 2t/ln2 (``haenscheid``) or e^{λt}/λ with the population T_eff of the voxel's region class (``madsen``;
    unlabelled and bladder voxels use `OTHER_CLASS`, else Hänscheid's τ); t is the voxel's bed time.

    Returns:
        (TIA map, dose map), on the grid of `aligned`.
    """
    if method not in ("haenscheid", "madsen"):
        raise InputError(f"voxel STP maps exist for 'haenscheid' and 'madsen', not {method!r}")
    concentration = np.asarray(aligned.activity.array, dtype=np.float64) * MBQ_PER_BQ  # MBq/mL
    when = np.asarray(aligned.time_h_map, dtype=np.float64)
    inside = np.isfinite(when) & (when > 0) & (concentration > 0)
    tia = np.zeros(concentration.shape, dtype=np.float64)
    t = when[inside]
    tau = np.asarray(haenscheid_tia(np.ones_like(t), t), dtype=np.float64)
    if method == "madsen":
        if t_eff_h is None:
            raise InputError("method='madsen' needs t_eff_h= (madsen_t_eff_h of the training split)")
        t_map = np.full(concentration.shape, float(t_eff_h.get(OTHER_CLASS, _NAN)))
        for name, kind in regions.kinds.items():
            cls = region_class(name, kind)
            if cls is not None and cls in t_eff_h:
                t_map[regions.mask(name)] = t_eff_h[cls]
        t_vox = t_map[inside]
        has = np.isfinite(t_vox) & (t_vox > 0)
        tau[has] = np.asarray(madsen_tia(np.ones(int(has.sum())), t[has], t_vox[has]), dtype=np.float64)
    tia[inside] = concentration[inside] * tau
    return tia, dose_map_gy(tia, density_g_per_ml, spacing_zyx_mm, dose_method, kernel_cache_dir)
