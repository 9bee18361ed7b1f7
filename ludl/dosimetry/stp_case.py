"""One case for the single-time-point baselines: `StpCase` from a loaded case and its multi-TP ground truth.

A(t) is the region's total activity at the scan, on the ground truth's reference grid and without partial-volume
correction, at its actual (activity-weighted bed) acquisition time — exactly one point of the curve the multi-TP
pipeline fitted. Each STP method gives the region's uncorrected TIA from it (``tia_uncorrected_mbq_h``).

Partial volume and dose come from that ONE scan too, never from the case's other time points (issue 11 Build 4):
`stp_case` corrects every scan on its own with the pipeline's GTM (`ludl.dosimetry.single_scan`, the scan's own
FWHM, the label map's tissue fractions) and convolves the scan's activity map and its corrected version with the
pipeline's kernel. Per region and scan that gives the GTM factor f (corrected / observed activity) and the dose per
uncorrected TIA of the observed map (u) and of the corrected one (g), stored in the region rows as
``ss<t>h_pvc_factor``, ``ss<t>h_dose_uncorrected_gy_per_mbq_h`` and ``ss<t>h_dose_gy_per_mbq_h`` (t the nominal
scan time, `single_scan_keys`). The scan's activity distribution stands for its TIA distribution (τ uniform), so
cross-dose between regions follows the activity at the scan. How an STP row uses f, u and g:
`ludl.dosimetry.stp_table`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ludl.dosimetry.pipeline import DosimetryResult
from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.registration import AlignedTimePoint, align_timepoints
from ludl.dosimetry.single_scan import correct_region_doses, single_scan_factors
from ludl.dosimetry.stp_population import BIEXP_PARAMS, clearance_t_eff_h, region_class
from ludl.dosimetry.tia import REST_REGION, region_fits
from ludl.dosimetry.timepoints import CycleData
from ludl.imaging.volume import Volume
from ludl.io.prepared_sidecar import StpCase
from ludl.physics.units import MBQ_PER_BQ

__all__ = ["reference_grid", "single_scan_keys", "stp_case"]

_NAN = float("nan")


def reference_grid(
    data: CycleData, result: DosimetryResult
) -> tuple[Volume, tuple[AlignedTimePoint, ...], RegionSet, int]:
    """The ground truth's reference grid, the aligned time points on it and the regions (as `compute_dosimetry`)."""
    ref_h = float(result.settings["reference_timepoint_h"])
    nominal = [t.timepoint_h for t in data.timepoints]
    ref_index = next(i for i, t in enumerate(nominal) if math.isclose(t, ref_h, abs_tol=1e-6))
    grid = data.timepoints[ref_index].spect
    aligned = align_timepoints(data, result.registrations, grid)
    return grid, aligned, result.regions_map, ref_index


def single_scan_keys(time_h: float) -> tuple[str, str, str]:
    """Region-row keys of one scan's single-scan values: GTM factor, corrected and uncorrected dose per TIA."""
    return (
        f"ss{time_h:g}h_pvc_factor",
        f"ss{time_h:g}h_dose_gy_per_mbq_h",
        f"ss{time_h:g}h_dose_uncorrected_gy_per_mbq_h",
    )


def _single_scan_values(
    data: CycleData, result: DosimetryResult, kernel_cache_dir: str | Path | None
) -> tuple[dict[str, dict[str, float]], tuple[AlignedTimePoint, ...], Volume]:
    """Every scan on its own: region → ``ss…`` values (module docstring), the aligned scans and the grid."""
    from ludl.dosimetry.gtm_partition import body_mask
    from ludl.dosimetry.pipeline import on_reference_grid

    _, _, regions, ref_index = reference_grid(data, result)
    g = on_reference_grid(data, result.registrations, ref_index)
    spacing, voxel_ml = g.grid.spacing_zyx_mm, g.grid.voxel_volume_ml
    dose_method = str(result.settings.get("dose_method", "dvk"))
    correct = str(result.settings.get("pvc", "gtm")) != "none"
    body = body_mask(g.hu)
    names = [n for n, k in regions.kinds.items() if k != "body"]
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    for tp, scan in zip(g.aligned, data.timepoints, strict=True):
        conc = np.asarray(tp.activity.array, dtype=np.float64) * MBQ_PER_BQ  # MBq/mL: a TIA map for τ = 1 h
        factors = None
        if correct:
            (factors,) = single_scan_factors([conc], regions, spacing, scan.fwhm_mm, body=body, fractions=g.fractions)
        else:
            factors = {n: 1.0 for n in names}
        doses = correct_region_doses(
            conc, regions, g.density_g_per_ml, spacing, scan.fwhm_mm, factors=factors, dose_method=dose_method,
            kernel_cache_dir=kernel_cache_dir,
        )  # fmt: skip
        keys = single_scan_keys(tp.timepoint_h)
        for name in names:
            total = float(conc[regions.mask(name)].sum()) * voxel_ml  # MBq, the region's uncorrected TIA at τ = 1 h
            ok = total > 0
            out[name][keys[0]] = float(factors.get(name, _NAN))
            out[name][keys[1]] = doses.mean_dose_gy.get(name, _NAN) / total if ok else _NAN
            out[name][keys[2]] = doses.mean_dose_uncorrected_gy.get(name, _NAN) / total if ok else _NAN
    return out, tuple(g.aligned), g.grid


def stp_case(
    data: CycleData,
    result: DosimetryResult,
    truth: Mapping[str, tuple[float, float]] | None = None,
    *,
    kernel_cache_dir: str | Path | None = None,
) -> StpCase:
    """Collect what the STP methods need from a loaded case and its multi-TP ground truth (`compute_dosimetry`).

    Besides the ground truth, each scan's single-scan partial-volume factor and dose per TIA (module docstring):
    one GTM and two kernel convolutions per scan (`kernel_cache_dir`: where kernels are cached).
    """
    single, aligned, grid = _single_scan_values(data, result, kernel_cache_dir)
    regions = result.regions_map
    fits, curves, _notes = region_fits(aligned, regions, "biexp_uptake", grid.voxel_volume_ml)
    base = {"patient_id": data.patient_id, "cycle": data.cycle, "injected_mbq": data.net_administered_mbq}
    rows: list[dict[str, Any]] = []
    gt_rows = [*result.regions, {"region": REST_REGION, "kind": "rest", "scored": False}]
    for gt in gt_rows:
        name = str(gt["region"])
        fit = fits.get(name)
        row: dict[str, Any] = {
            **base,
            "region": name,
            "kind": gt["kind"],
            "region_class": region_class(name, str(gt["kind"])),
            "scored": bool(gt.get("scored", True)),
        }
        for key in ("volume_ml", "tia_mbq_h", "tia_uncorrected_mbq_h", "mean_dose_gy", "mean_dose_uncorrected_gy"):
            row[key] = float(gt.get(key, _NAN))
        # Madsen's population T_eff is the ground truth's (model "auto"); unlabelled voxels have no ground-truth row,
        # so their T_eff is that of their biexp_uptake fit.
        row["t_eff_h"] = float(gt["t_eff_h"]) if "t_eff_h" in gt else (fit.t_eff_h if fit is not None else _NAN)
        row["t_eff_clearance_h"] = clearance_t_eff_h(*curves[name]) if name in curves else _NAN
        for key in BIEXP_PARAMS:
            row[key] = float(fit.params[key]) if fit is not None else _NAN
        row.update(single.get(name, {}))
        row["fit_cv"] = _NAN
        if fit is not None and fit.n_points > 3 and float(np.mean(fit.activity)) > 0:
            row["fit_cv"] = math.sqrt(fit.rss / (fit.n_points - 3)) / float(np.mean(fit.activity))
        rows.append(row)
    return StpCase(
        patient_id=data.patient_id,
        cycle=data.cycle,
        injected_mbq=data.net_administered_mbq,
        timepoints_h=tuple(t.timepoint_h for t in data.timepoints),
        regions=tuple(rows),
        curves={k: (np.asarray(v[0], dtype=np.float64), np.asarray(v[1], dtype=np.float64)) for k, v in curves.items()},
        truth=dict(truth or {}),
    )
