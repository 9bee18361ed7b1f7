"""Single-time-point (STP) baselines on a cohort: Hänscheid, Madsen and the prior-informed estimator (issue 5 item 4).

For every patient-cycle and every single time point present (4, 24, 48, 96, 168 h), each method turns that one scan
into a region TIA and mean dose, stored beside the multi-time-point ground truth (``stp_regions.csv``) so that
evaluation compares methods (docs/architecture.md "Evaluation"):

- ``haenscheid``: TIA = A(t)·2t/ln2 (docs/physics.md §3);
- ``madsen``: TIA = A(t)·e^{λt}/λ with λ = ln2/T_eff, T_eff the *training split's* median clearance T_eff of the
  region class (a mono-exponential through each multi-TP curve from its peak on: `clearance_t_eff_h`,
  `madsen_t_eff_h`);
- ``prior``: the posterior-median TIA of `ludl.physics.stp.PriorInformedEstimator` with one `RegionPrior` per region
  class fitted *only* on the training split's multi-TP ``biexp_uptake`` region fits, with a patient factor shared
  by all regions of a patient (`fit_population_priors`).

Population values are learned from scored regions only. The prior check of issue 11 (demo cohort, 8 patients, 24 h
scan, kinetic error = uncorrected STP TIA / uncorrected multi-TP TIA − 1, median | median |error|): lesions
read −24 % | 31 % because the lesion prior was fitted on unscored lesions too, whose curves (partly outside the field
of view) fit with a residual CV of ≈ 0.7 and T_eff ≈ 12 h against ≈ 58 h; from scored regions only −4 % | 14 %
(the cohort's single-scan bound: 14 %). The posterior itself is converged (16× the samples: within 1 point) and the
shared patient factor changes little (regions independent: lesions 12 %, kidneys 13 %). What remains is the
estimator's limit: kidneys 12 % with the priors of 6–7 training patients, 7 % with 7 patients, 6.5 % with a prior
from every patient (bound 5 %) — the prior's spread from a few patients; liver and spleen −10 to −12 %, of which
−7 and −4 % is ``biexp_uptake``'s single clearance phase against the ground truth's model choice (integrating each
region's own multi-TP ``biexp_uptake`` fit).

Training sets follow ``splits.json``: a patient's baselines come from the priors of the fold whose test set holds it,
so no patient ever informs its own estimate.

Two roads lead to the same table: `run_stp_baselines` computes (or is given) each case's ground truth, and
``ludl prepare`` stores each case's `StpCase` in its sidecar (`StpCase.to_dict`) and builds the table from the
sidecars with `stp_cohort_table` once every case of the cohort is prepared. Only `run_stp_baselines` writes voxel maps.

A(t) is the region's total activity at the scan, on the ground truth's reference grid and without partial-volume
correction, at its actual (activity-weighted bed) acquisition time — exactly one point of the curve the multi-TP
pipeline fitted. Each STP method gives the region's uncorrected TIA from it (``tia_uncorrected_mbq_h``).

Partial volume and dose come from that ONE scan too, never from the case's other time points (issue 11 Build 4):
`stp_case` corrects every scan on its own with the pipeline's GTM (`ludl.dosimetry.single_scan`, the scan's own
FWHM, the label map's tissue fractions) and convolves the scan's activity map and its corrected version with the
pipeline's kernel. Per region and scan that gives the GTM factor f (corrected / observed activity) and the dose per
uncorrected TIA of the observed map (u) and of the corrected one (g), stored in the region rows as
``ss<t>h_pvc_factor``, ``ss<t>h_dose_uncorrected_gy_per_mbq_h`` and ``ss<t>h_dose_gy_per_mbq_h`` (t the nominal
scan time). The scan's activity distribution stands for its TIA distribution (τ uniform), so cross-dose between
regions follows the activity at the scan. An STP row then reads:

- ``tia_mbq_h`` = f · TIA_STP, ``mean_dose_gy`` = g · TIA_STP (partial-volume corrected, what is evaluated);
- ``tia_uncorrected_mbq_h`` = TIA_STP, ``mean_dose_uncorrected_gy`` = u · TIA_STP (no correction);
- ``pvc_factor`` = f; ``gt_tia_uncorrected_mbq_h``: the multi-TP uncorrected TIA, so that
  ``tia_uncorrected_mbq_h / gt_tia_uncorrected_mbq_h − 1`` is the kinetic error of the STP formula alone.

With the ground truth's ``pvc="none"`` f = 1 and g = u. Cases whose rows lack the ``ss…`` values (sidecars written
before them) get NaN corrected and uncorrected doses. Voxel dose maps (Hänscheid, Madsen) use voxel
TIA = A(x, t)·τ(x) and the pipeline's kernel convolution with density correction, without correction.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.dosimetry.dose import dose_map_gy
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import DosimetryResult, compute_dosimetry
from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.registration import AlignedTimePoint, align_timepoints
from ludl.dosimetry.single_scan import correct_region_doses, single_scan_factors
from ludl.dosimetry.tia import REST_REGION, region_fits
from ludl.dosimetry.timepoints import CycleData, load_cycle
from ludl.errors import InputError, LudlError
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write_text
from ludl.io.manifest import load_manifest
from ludl.io.outcomes import load_outcomes
from ludl.io.prepared_sidecar import StpCase
from ludl.io.splits import Splits, make_splits, read_splits
from ludl.io.truth import read_truth
from ludl.physics.kinetics import fit_tac
from ludl.physics.stp import PriorInformedEstimator, RegionPrior, haenscheid_tia, madsen_tia
from ludl.physics.units import MBQ_PER_BQ

__all__ = [
    "METHODS",
    "OTHER_CLASS",
    "REGION_CLASSES",
    "STP_COLUMNS",
    "STP_FILE",
    "STP_TIMEPOINTS_H",
    "StpCase",
    "clearance_t_eff_h",
    "fit_population_priors",
    "madsen_t_eff_h",
    "read_truth",
    "region_class",
    "run_stp_baselines",
    "stp_case",
    "stp_cohort_table",
    "stp_dose_map",
    "stp_region_table",
    "write_stp_table",
]

METHODS = ("haenscheid", "madsen", "prior")
REGION_CLASSES = ("kidneys", "salivary", "lacrimal", "liver", "spleen", "red_marrow", "lesions")
# Everything else with kinetics (bladder, unlabelled voxels): only used for the voxels of Madsen dose maps.
OTHER_CLASS = "other"
STP_FILE = "stp_regions.csv"
STP_TIMEPOINTS_H = (4.0, 24.0, 48.0, 96.0, 168.0)  # the nominal scan times evaluated, where a case has them
STP_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "cycle",
    "fold",
    "region",
    "kind",
    "region_class",
    "method",
    "timepoint_h",
    "time_h",
    "activity_mbq",
    "t_eff_used_h",
    "tia_mbq_h",
    "mean_dose_gy",
    "tia_uncorrected_mbq_h",
    "mean_dose_uncorrected_gy",
    "pvc_factor",
    "map_mean_dose_gy",
    "tia_sd_mbq_h",
    "gt_tia_mbq_h",
    "gt_tia_uncorrected_mbq_h",
    "gt_mean_dose_gy",
    "gt_mean_dose_uncorrected_gy",
    "gt_t_eff_h",
    "gt_t_eff_clearance_h",
    "true_tia_mbq_h",
    "true_mean_dose_gy",
    "volume_ml",
)
_PARAMS = ("a0", "lambda1_per_h", "lambda2_per_h")
_NAN = float("nan")


def region_class(region: str, kind: str) -> str | None:
    """Region class of a region (`REGION_CLASSES`), `OTHER_CLASS` for bladder/body/unlabelled, None for nothing."""
    if kind == "lesion":
        return "lesions"
    if region.startswith("kidney"):
        return "kidneys"
    if region.startswith(("parotid", "submandibular")):
        return "salivary"
    if region.startswith("lacrimal"):
        return "lacrimal"
    if region in ("liver", "spleen", "red_marrow"):
        return region
    return OTHER_CLASS


def _reference_grid(
    data: CycleData, result: DosimetryResult
) -> tuple[Volume, tuple[AlignedTimePoint, ...], RegionSet, int]:
    """The ground truth's reference grid, the aligned time points on it and the regions (as `compute_dosimetry`)."""
    ref_h = float(result.settings["reference_timepoint_h"])
    nominal = [t.timepoint_h for t in data.timepoints]
    ref_index = next(i for i, t in enumerate(nominal) if math.isclose(t, ref_h, abs_tol=1e-6))
    grid = data.timepoints[ref_index].spect
    aligned = align_timepoints(data, result.registrations, grid)
    return grid, aligned, result.regions_map, ref_index


def clearance_t_eff_h(time_h: npt.ArrayLike, activity_mbq: npt.ArrayLike) -> float:
    """Effective half-life (h) of a mono-exponential through a curve's clearance; NaN with < 2 points past the peak.

    The clearance is the points after the highest one, or from the highest one when that leaves fewer than two.

    Madsen's population T_eff is of this kind (Madsen 2018 fitted mono-exponentials to the clearance): the T_eff of
    the dominant multi-exponential term is the fast early phase for the spleen or liver (≈ 10 h), which integrated
    from a 96 h scan over-estimates the TIA many times.
    """
    t = np.asarray(time_h, dtype=np.float64)
    a = np.asarray(activity_mbq, dtype=np.float64)
    order = np.argsort(t)
    t, a = t[order], a[order]
    if a.size == 0 or not np.all(np.isfinite(a)):
        return _NAN
    # From the point after the highest one: the highest sample may still hold uptake (a 4 h kidney point does).
    start = int(np.argmax(a))
    start += 1 if t.size - start > 2 else 0
    t, a = t[start:], a[start:]
    if t.size < 2 or np.any(a <= 0):
        return _NAN
    try:
        return float(fit_tac(t, a, model="mono").t_eff_h)
    except LudlError:
        return _NAN


def _single_scan_keys(time_h: float) -> tuple[str, str, str]:
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

    _, _, regions, ref_index = _reference_grid(data, result)
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
        keys = _single_scan_keys(tp.timepoint_h)
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
        for key in _PARAMS:
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


# ------------------------------------------------------------------------------------------------ population fits


def _training_rows(region_tables: Iterable[Any], train_patients: Iterable[str]) -> list[Mapping[str, Any]]:
    train = {str(p) for p in train_patients}
    if not train:
        raise InputError("train_patients is empty: population baselines need the training split of splits.json")
    rows: list[Mapping[str, Any]] = []
    for item in region_tables:
        rows.extend(item.regions if isinstance(item, StpCase) else [item])
    # Only scored regions: a region partly outside the field of view at some scan has no kinetics in its curve
    # (demo cohort: such lesions' fits have a residual CV of ≈ 0.7 and a T_eff of ≈ 12 h against ≈ 58 h for the
    # scored ones); learning population kinetics from them pulled every lesion estimate low (issue 11 Build 4).
    return [r for r in rows if str(r["patient_id"]) in train and bool(r.get("scored", True))]


def _row_class(row: Mapping[str, Any]) -> str | None:
    cls = row.get("region_class")
    return str(cls) if cls else region_class(str(row["region"]), str(row["kind"]))


def madsen_t_eff_h(region_tables: Iterable[Any], train_patients: Iterable[str]) -> dict[str, float]:
    """Madsen's population T_eff (h) per region class: the median clearance T_eff over the training patients only.

    Only scored regions count (``scored`` false: partly outside the field of view, no kinetics in the curve).

    Args:
        region_tables: region rows with ``patient_id, region, kind, t_eff_clearance_h`` (`clearance_t_eff_h` of the
            multi-TP curve; `stp_case` fills it; `StpCase` objects work too).
        train_patients: the training split's patient IDs; rows of other patients are ignored.
    """
    values: dict[str, list[float]] = {}
    for row in _training_rows(region_tables, train_patients):
        cls, t_eff = _row_class(row), float(row.get("t_eff_clearance_h", _NAN))
        if cls is not None and math.isfinite(t_eff) and t_eff > 0:
            values.setdefault(cls, []).append(t_eff)
    return {cls: float(np.median(v)) for cls, v in sorted(values.items())}


def fit_population_priors(
    region_tables: Iterable[Any], train_patients: Iterable[str], *, noise_cv: float | None = None
) -> dict[str, RegionPrior]:
    """One `RegionPrior` per region class from the training patients' multi-TP ``biexp_uptake`` region fits.

    The covariance is split into a within-patient part and a patient factor shared by all regions of a patient
    (`RegionPrior.from_fits` with patient IDs) where the class has several fits per patient; otherwise the regions
    are taken as independent. Classes with fewer than 2 usable fits get no prior. Only scored regions count
    (rows with ``scored`` false are skipped, as in `madsen_t_eff_h`).

    Args:
        region_tables: ground-truth region rows with ``patient_id, region, kind, injected_mbq, a0, lambda1_per_h,
            lambda2_per_h`` and optionally ``fit_cv`` (`StpCase` objects work too).
        train_patients: the training split's patient IDs; rows of other patients are ignored.
        noise_cv: measurement CV for every class; default: the median ``fit_cv`` of the class (floored at 1 %).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in _training_rows(region_tables, train_patients):
        cls = _row_class(row)
        if cls not in REGION_CLASSES:
            continue
        params = [float(row.get(k, _NAN)) for k in _PARAMS]
        if all(math.isfinite(p) for p in params) and params[0] > 0 and 0 < params[1] < params[2]:
            groups.setdefault(cls, []).append(row)
    priors: dict[str, RegionPrior] = {}
    for cls, rows in sorted(groups.items()):
        if len(rows) < 2:
            continue
        fits = [{k: float(r[k]) for k in _PARAMS} for r in rows]
        injected = [float(r["injected_mbq"]) for r in rows]
        cv = noise_cv
        if cv is None:
            cvs = [float(r.get("fit_cv", _NAN)) for r in rows]
            finite = [c for c in cvs if math.isfinite(c)]
            # As RegionPrior.from_fits: fits that interpolate their points would make the likelihood spuriously sharp.
            cv = max(float(np.median(finite)), 0.01) if finite else 0.1
        try:
            prior = RegionPrior.from_fits(fits, injected, noise_cv=cv, patient_ids=[str(r["patient_id"]) for r in rows])
        except InputError:  # one fit per patient (e.g. liver, one cycle): no within-patient spread to split off
            prior = RegionPrior.from_fits(fits, injected, noise_cv=cv)
        priors[cls] = prior
    return priors


# ------------------------------------------------------------------------------------------------ STP tables


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
                case.injected_mbq,
            )
            # The median, not the mean: errors are scored relative, and a late scan's posterior has a long upper tail.
            tia[ok], sd[ok] = post.median, post.sd
    factor_key, dose_key, dose_unc_key = _single_scan_keys(case.timepoints_h[index])
    out: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        # Partial volume and dose per TIA from this scan alone (module docstring), never from the other time points.
        factor = float(r.get(factor_key, _NAN))
        true_tia, true_dose = case.truth.get(str(r["region"]), (_NAN, _NAN))
        out.append(
            {
                "patient_id": case.patient_id,
                "cycle": case.cycle,
                "fold": "" if fold is None else fold,
                "region": r["region"],
                "kind": r["kind"],
                "region_class": r["region_class"],
                "method": method,
                "timepoint_h": float(case.timepoints_h[index]),
                "time_h": float(when[i]),
                "activity_mbq": float(activity[i]),
                "t_eff_used_h": float(t_used[i]),
                "tia_mbq_h": float(tia[i]) * factor,
                "mean_dose_gy": float(tia[i]) * float(r.get(dose_key, _NAN)),
                "tia_uncorrected_mbq_h": float(tia[i]),
                "mean_dose_uncorrected_gy": float(tia[i]) * float(r.get(dose_unc_key, _NAN)),
                "pvc_factor": factor,
                "map_mean_dose_gy": _NAN,
                "tia_sd_mbq_h": float(sd[i]) * factor,
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
        )
    return out


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


# ------------------------------------------------------------------------------------------------ cohort


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_stp_table(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write STP rows as CSV (`STP_COLUMNS`, 6 significant digits, empty for NaN) atomically; returns the path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STP_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in STP_COLUMNS])
    return atomic_write_text(path, buffer.getvalue())


def _resolve_splits(splits: Splits | str | Path | None, cohort: Path, patients: Sequence[str]) -> Splits:
    if isinstance(splits, Splits):
        resolved = splits
    elif splits is not None:
        resolved = read_splits(splits)
    else:
        resolved = make_splits(patients, load_outcomes(cohort), n_folds=min(5, len(set(patients))), seed=0)
    missing = sorted(set(patients) - set(resolved.patients))
    if missing:
        raise InputError(f"patients {missing} of {cohort} are in no fold of the splits; rerun `ludl prepare`")
    return resolved


def _require_folds(splits: Splits) -> None:
    if splits.n_folds < 2:
        raise InputError(
            f"the splits have {splits.n_folds} fold: STP population baselines need ≥ 2 folds (a patient's values come "
            "from the other folds' patients); prepare with n_folds ≥ 2 on a cohort of ≥ 2 patients"
        )


def stp_cohort_table(
    cases: Mapping[tuple[str, int], StpCase],
    splits: Splits,
    *,
    timepoints_h: Sequence[float] = STP_TIMEPOINTS_H,
    map_mean_dose_gy: Mapping[tuple[str, int], Mapping[tuple[str, float], Mapping[str, float]]] | None = None,
) -> list[dict[str, Any]]:
    """The STP table of a set of cases: every method at every scan time each case has, beside its ground truth.

    Population values (Madsen's T_eff, the prior) of a case come from the training patients of its fold only, and
    only from the cases given: a patient whose cases are missing (failed) informs nobody.

    Args:
        cases: (patient_id, cycle) → `StpCase`; the rows follow this order.
        splits: patient-level folds (``splits.json``) holding every patient of `cases`; at least 2 folds.
        timepoints_h: nominal scan times to evaluate, where a case has them.
        map_mean_dose_gy: (patient_id, cycle) → (method, time point) → region → mean dose of the voxel map (Gy), to
            fill ``map_mean_dose_gy`` (NaN elsewhere).

    Returns:
        One row per case × time point × method × scored region (`STP_COLUMNS`); ``prior`` rows only for folds whose
        training patients give at least one class prior.
    """
    _require_folds(splits)
    missing = sorted({p for p, _ in cases} - set(splits.patients))
    if missing:
        raise InputError(f"patients {missing} are in no fold of the splits; rerun `ludl prepare` to write splits.json")
    all_cases = list(cases.values())
    folds = sorted({splits.fold_of(p) for p, _ in cases})
    # One set of population values per fold, from its training patients only.
    t_effs = {k: madsen_t_eff_h(all_cases, splits.train(k)) for k in folds}
    estimators: dict[int, PriorInformedEstimator | None] = {}
    for k in folds:
        priors = fit_population_priors(all_cases, splits.train(k))
        estimators[k] = PriorInformedEstimator(priors) if priors else None
    maps = map_mean_dose_gy or {}
    table: list[dict[str, Any]] = []
    for key, case in cases.items():
        fold = splits.fold_of(key[0])
        present = [t for t in timepoints_h if any(math.isclose(t, s, abs_tol=1e-6) for s in case.timepoints_h)]
        case_maps = maps.get(key, {})
        for t in present:
            for method in METHODS:
                if method == "prior" and estimators[fold] is None:
                    continue
                rows = stp_region_table(case, t, method, t_eff_h=t_effs[fold], estimator=estimators[fold], fold=fold)
                for row in rows:
                    row["map_mean_dose_gy"] = case_maps.get((method, float(t)), {}).get(str(row["region"]), _NAN)
                table.extend(rows)
    return table


def run_stp_baselines(
    cohort_dir: str | Path,
    ground_truth: Mapping[tuple[str, int], DosimetryResult] | None,
    splits: Splits | str | Path | None,
    out_dir: str | Path,
    *,
    timepoints_h: Sequence[float] = STP_TIMEPOINTS_H,
    write_maps: bool = True,
    options: DosimetryOptions | None = None,
) -> list[dict[str, Any]]:
    """STP baselines for every patient-cycle of a cohort, written to ``out_dir/stp_regions.csv`` (and maps).

    Args:
        cohort_dir: the cohort (manifest, images; ``truth/regions.csv`` when synthetic adds the true values).
        ground_truth: (patient_id, cycle) → the multi-TP `DosimetryResult`; cases not in it (or all, for None) are
            computed here with `compute_dosimetry(data, options)`.
        splits: `Splits`, a ``splits.json`` path (or its folder), or None to make 5 patient folds (seed 0) here.
        out_dir: output folder: ``stp_regions.csv`` (`STP_COLUMNS`) and, with `write_maps`, Hänscheid and Madsen
            dose maps ``maps/<patient>_c<cycle>/<method>_<t>h_dose_gy.nii.gz`` on the ground truth's grid.
        timepoints_h: nominal scan times to evaluate, where the case has them.
        write_maps: also compute and write the voxel dose maps (two kernel convolutions per case and time point).
        options: dosimetry settings for cases computed here and for the maps (default `DosimetryOptions()`).

    Returns:
        The table's rows (`stp_cohort_table`).
    """
    cohort, out = Path(cohort_dir), Path(out_dir)
    manifest = load_manifest(cohort)
    keys = [(p, c) for p, c in manifest.patient_cycles() if manifest.select(patient_id=p, cycle=c, role="spect")]
    if not keys:
        raise InputError(f"{manifest.file} has no SPECT rows: nothing to evaluate")
    folds = _resolve_splits(splits, cohort, [p for p, _ in keys])
    _require_folds(folds)
    out.mkdir(parents=True, exist_ok=True)
    truth = read_truth(cohort)
    given = dict(ground_truth or {})
    options = DosimetryOptions() if options is None else options

    cases: dict[tuple[str, int], StpCase] = {}
    results: dict[tuple[str, int], DosimetryResult] = {}
    for key in keys:
        data = load_cycle(cohort, *key)
        result = given.get(key) or compute_dosimetry(data, options)
        cases[key] = stp_case(data, result, truth.get(key, {}), kernel_cache_dir=options.kernel_cache_dir)
        if write_maps:
            results[key] = result

    maps: dict[tuple[str, int], dict[tuple[str, float], dict[str, float]]] = {}
    if write_maps:
        all_cases = list(cases.values())
        for key, case in cases.items():
            present = [t for t in timepoints_h if any(math.isclose(t, s, abs_tol=1e-6) for s in case.timepoints_h)]
            if present:
                # The same Madsen T_eff as the table's: the medians of the case's training patients.
                t_eff = madsen_t_eff_h(all_cases, folds.train(folds.fold_of(key[0])))
                maps[key] = _write_case_maps(cohort, key, results[key], present, t_eff, out, options)
    table = stp_cohort_table(cases, folds, timepoints_h=timepoints_h, map_mean_dose_gy=maps)
    write_stp_table(table, out / STP_FILE)
    return table


def _write_case_maps(
    cohort: Path,
    key: tuple[str, int],
    result: DosimetryResult,
    timepoints_h: Sequence[float],
    t_eff_h: Mapping[str, float],
    out: Path,
    options: DosimetryOptions,
) -> dict[tuple[str, float], dict[str, float]]:
    """Write the Hänscheid and Madsen dose maps of one case; return their uncorrected region means (Gy)."""
    from ludl.io.nifti import write_nifti
    from ludl.physics.dose import density_from_hu

    data = load_cycle(cohort, *key)
    grid, aligned, regions, ref_index = _reference_grid(data, result)
    hu = resample_to(data.timepoints[ref_index].ct, grid, kind="linear", default=-1000.0)
    density = np.asarray(density_from_hu(np.asarray(hu.array, dtype=np.float64)), dtype=np.float64)
    folder = out / "maps" / f"{key[0]}_c{key[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    means: dict[tuple[str, float], dict[str, float]] = {}
    nominal = [a.timepoint_h for a in aligned]
    for t in timepoints_h:
        tp = aligned[next(i for i, s in enumerate(nominal) if math.isclose(s, t, abs_tol=1e-6))]
        for method in ("haenscheid", "madsen"):
            _, dose = stp_dose_map(
                tp,
                regions,
                density,
                grid.spacing_zyx_mm,
                method,
                t_eff_h=t_eff_h,
                dose_method=options.dose_method,
                kernel_cache_dir=options.kernel_cache_dir,
            )
            volume = Volume(dose.astype(np.float32), grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit="Gy")
            write_nifti(volume, folder / f"{method}_{t:g}h_dose_gy.nii.gz")
            means[(method, t)] = {name: float(dose[regions.mask(name)].mean()) for name in regions.values}
    return means
