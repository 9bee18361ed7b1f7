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

The parts: `ludl.dosimetry.stp_case` (a case's region curves, ground truth and single-scan partial-volume and dose
values: `stp_case`), `ludl.dosimetry.stp_population` (region classes and the population values, with the prior
check of issue 11), `ludl.dosimetry.stp_table` (one case's STP rows and voxel maps, and how a row reads); this
module runs them over a cohort and writes the table. Their public names are importable from here too.

Training sets follow ``splits.json``: a patient's baselines come from the priors of the fold whose test set holds it,
so no patient ever informs its own estimate.

Two roads lead to the same table: `run_stp_baselines` computes (or is given) each case's ground truth, and
``ludl prepare`` stores each case's `StpCase` in its sidecar (`StpCase.to_dict`) and builds the table from the
sidecars with `stp_cohort_table` once every case of the cohort is prepared. Only `run_stp_baselines` writes voxel maps.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import DosimetryResult, compute_dosimetry
from ludl.dosimetry.stp_case import reference_grid, stp_case
from ludl.dosimetry.stp_population import (
    OTHER_CLASS,
    REGION_CLASSES,
    clearance_t_eff_h,
    fit_population_priors,
    madsen_t_eff_h,
    region_class,
)
from ludl.dosimetry.stp_table import METHODS, stp_dose_map, stp_region_table
from ludl.dosimetry.timepoints import load_cycle
from ludl.errors import InputError
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write_text
from ludl.io.manifest import load_manifest
from ludl.io.outcomes import load_outcomes
from ludl.io.prepared_sidecar import StpCase
from ludl.io.splits import Splits, make_splits, read_splits
from ludl.io.truth import read_truth
from ludl.physics.stp import PriorInformedEstimator

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
_NAN = float("nan")


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
    grid, aligned, regions, ref_index = reference_grid(data, result)
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
