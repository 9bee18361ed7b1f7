"""`ludl prepare`: every patient-cycle of a cohort as a prepared case (docs/cohort-format.md; "Scaling out" in
docs/architecture.md).

For each patient-cycle with SPECT rows: load it (`load_cycle`), run the multi-time-point pipeline
(`compute_dosimetry`, the ground truth), then write, per time point and on *that* time point's own SPECT grid (as a
clinic hands it over at inference):

- the SPECT (Bq/mL, as read) and its CT as mass density (g/mL, docs/physics.md §4 curve);
- the ground-truth TIA map (MBq·h/mL), mapped from the reference grid with the inverse of the time point's rigid
  registration, conserving ∫ TIA dV (`resample_to(kind="activity")`); the dose map (Gy) by linear interpolation; the
  region labels by nearest neighbour and their canonical classes (``classes``); the mask of voxels the reference grid
  covers (``gt_fov``);
- the pre-therapy PET SUV (when the cohort has one): its CT is registered to the reference CT once and the PET is
  resampled through (time point → reference → PET), conserving ∫ SUV dV like any activity image;

plus the typed sidecar (`ludl.io.prepared_sidecar.CaseSidecar`, `TimepointInfo`): times, activities, grids,
transforms, registration quality, ground-truth region statistics, labelled and unlabeled classes, dosimetry settings,
PET tracer, intensity statistics, and the case's region curves and ground truth for the single-time-point baselines
(``stp_case``: `StpCase.to_dict`, with the true values of a synthetic cohort's ``truth/regions.csv``). Finished cases
are skipped, a case is written whole or not at all, a case failing with a `LudlError` is recorded with its reason in
``prepare_summary.json`` while the others finish, and the case list (sorted as the manifest orders patients) is
sharded ``[i::n]`` for ``shard=i/n``. ``splits.json`` (patient-level folds stratified by ``non_response``) depends
only on the manifest, outcomes and seed, so every shard writes the same file.

Once every case of the cohort is settled (prepared, or failed in this run or in another shard's summary), the shard
that sees it writes ``dataset.json`` (`ludl.io.prepared_dataset`, from the sidecars) and builds ``stp_regions.csv``
(Hänscheid, Madsen and the prior-informed estimator at every scan time, `ludl.dosimetry.baselines.stp_cohort_table`)
from the sidecars and ``splits.json``, leaving failed cases out. Each shard writes its summary before it looks, so the
last one to finish sees the others; two that write them write the same content. Region statistics only: voxel dose
maps of the STP methods come from `run_stp_baselines(write_maps=True)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ludl.dosimetry.baselines import STP_FILE, stp_case, stp_cohort_table, write_stp_table
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import DosimetryResult, compute_dosimetry
from ludl.dosimetry.registration import require_registered
from ludl.dosimetry.timepoints import CycleData, load_cycle
from ludl.errors import GeometryError, InputError, LudlError
from ludl.imaging.resample import resample_to, transform_affine
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write_text
from ludl.io.cohort import CohortConfig, load_cohort_config
from ludl.io.cohort_images import read_ct_row, read_pet_suv_row, row_where
from ludl.io.manifest import Manifest, ManifestRow, load_manifest
from ludl.io.outcomes import load_outcomes
from ludl.io.prepared import (
    CASES_FOLDER,
    SIDECAR,
    CaseTimepoint,
    PreparedCase,
    case_is_complete,
    clean_stale,
    read_case,
    write_case,
)
from ludl.io.prepared_dataset import DATASET_FILE, build_dataset_descriptor, write_dataset_descriptor
from ludl.io.prepared_sidecar import CaseSidecar, GroundTruthInfo, PetInfo, StpCase, TimepointInfo, to_jsonable
from ludl.io.prepared_stats import class_map, classes_present, label_coverage
from ludl.io.splits import SPLITS_FILE, Splits, make_splits, write_splits
from ludl.io.truth import read_truth

__all__ = [
    "CASES_FOLDER",
    "SUMMARY_FILE",
    "CaseOutcome",
    "PrepareSummary",
    "case_id",
    "parse_shard",
    "prepare_case",
    "run_prepare",
    "shard_cases",
]

SUMMARY_FILE = "prepare_summary.json"
_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


# ------------------------------------------------------------------------------------------------ case list


def case_id(patient_id: str, cycle: int) -> str:
    """Folder name of a patient-cycle: the cohort's pseudonymous ID (made file-safe) and the cycle, ``P01_c1``.

    Characters outside ``[A-Za-z0-9_-]`` become ``-`` and a short hash of the original ID is appended, so two IDs
    never share a folder. No other patient attribute (name, birth date …) is ever used.
    """
    safe = _SAFE_ID.sub("-", patient_id)
    if safe != patient_id or not safe:
        safe = f"{safe}-{hashlib.sha256(patient_id.encode('utf-8')).hexdigest()[:8]}"
    return f"{safe}_c{int(cycle)}"


def parse_shard(shard: str | Sequence[int]) -> tuple[int, int]:
    """``"i/n"`` (or ``(i, n)``) → (i, n) with 0 ≤ i < n."""
    try:
        if isinstance(shard, str):
            left, right = shard.split("/")
            index, count = int(left), int(right)
        else:
            index, count = (int(v) for v in shard)
    except (ValueError, TypeError) as err:
        raise InputError(f"shard={shard!r}: give it as i/n, e.g. shard=0/4 for the first of four shards") from err
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard={shard!r}: need 0 ≤ i < n (shards are numbered 0/n … {max(count, 1) - 1}/n)")
    return index, count


def shard_cases(cases: Sequence[tuple[str, int]], index: int, count: int) -> list[tuple[str, int]]:
    """The cases of shard `index` of `count`: ``cases[index::count]`` (the manifest's order is deterministic)."""
    return list(cases)[index::count]


def _cohort_cases(manifest: Manifest) -> list[tuple[str, int]]:
    """Patient-cycles with SPECT rows, patients in natural order (P2 before P10), cycles ascending."""
    return [(p, c) for p, c in manifest.patient_cycles() if manifest.select(patient_id=p, cycle=c, role="spect")]


# ------------------------------------------------------------------------------------------------ summary


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one patient-cycle: ``done``, ``skipped`` (already prepared) or ``failed`` (with reason)."""

    case_id: str
    patient_id: str
    cycle: int
    status: str
    reason: str = ""
    error_type: str = ""
    seconds: float = 0.0
    detail: str = ""  # traceback, for errors that are not LudlErrors (a bug rather than bad input)


@dataclass(frozen=True)
class PrepareSummary:
    """The run over one shard of a cohort.

    Attributes:
        cohort_dir, out_dir: input cohort and output folder (cases under ``out_dir/cases``).
        shard: (i, n).
        cases: one outcome per patient-cycle of this shard, in case order.
        splits_file, summary_file: ``splits.json`` and the summary JSON written.
        stp_file: ``stp_regions.csv`` when this shard wrote it (None: switched off, or cases still missing).
        dataset_file: ``dataset.json`` when this shard wrote it (None: cases still missing).
        notes: remarks worth a look; seconds: wall time.
    """

    cohort_dir: Path
    out_dir: Path
    shard: tuple[int, int]
    cases: tuple[CaseOutcome, ...]
    splits_file: Path | None = None
    summary_file: Path | None = None
    stp_file: Path | None = None
    dataset_file: Path | None = None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for c in self.cases if c.status == status)

    @property
    def n_done(self) -> int:
        """Cases prepared in this run."""
        return self._count("done")

    @property
    def n_skipped(self) -> int:
        """Cases already prepared (left as they were)."""
        return self._count("skipped")

    @property
    def n_failed(self) -> int:
        """Cases that failed (see `failures`)."""
        return self._count("failed")

    @property
    def failures(self) -> tuple[CaseOutcome, ...]:
        """The failed cases with their reasons."""
        return tuple(c for c in self.cases if c.status == "failed")

    @property
    def ok(self) -> bool:
        """True when no case failed."""
        return self.n_failed == 0

    def to_dict(self) -> dict[str, Any]:
        """The ``prepare_summary.json`` document."""
        out: dict[str, Any] = to_jsonable(
            {
                "cohort_dir": self.cohort_dir,
                "out_dir": self.out_dir,
                "shard": f"{self.shard[0]}/{self.shard[1]}",
                "n_cases": len(self.cases),
                "n_done": self.n_done,
                "n_skipped": self.n_skipped,
                "n_failed": self.n_failed,
                "seconds": round(self.seconds, 3),
                "splits_file": self.splits_file,
                "stp_file": self.stp_file,
                "dataset_file": self.dataset_file,
                "notes": list(self.notes),
                "cases": [asdict(c) for c in self.cases],
            }
        )
        return out

    def format(self) -> str:
        """A short report: counts, failures with reasons, where the cases are."""
        i, n = self.shard
        lines = [
            f"ludl prepare {self.cohort_dir} → {self.out_dir / CASES_FOLDER}" + (f"  (shard {i}/{n})" if n > 1 else ""),
            f"{len(self.cases)} case(s): {self.n_done} done, {self.n_skipped} skipped (already prepared), "
            f"{self.n_failed} failed   [{self.seconds:.1f} s]",
        ]
        for c in self.failures:
            lines.append(f"  FAILED {c.case_id} (patient {c.patient_id} cycle {c.cycle}): {c.error_type}: {c.reason}")
        lines += [f"note: {note}" for note in self.notes]
        if self.splits_file is not None:
            lines.append(f"splits: {self.splits_file}")
        if self.dataset_file is not None:
            lines.append(f"dataset: {self.dataset_file}")
        if self.stp_file is not None:
            lines.append(f"STP baselines: {self.stp_file}")
        if self.summary_file is not None:
            lines.append(f"summary: {self.summary_file}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ PET


@dataclass(frozen=True, eq=False)
class _Pet:
    suv: Volume
    ct: Volume
    row: ManifestRow


def _load_pet(manifest: Manifest, config: CohortConfig, patient_id: str, cycle: int) -> tuple[_Pet | None, str]:
    """The patient's pre-therapy PET (this cycle's, else the latest earlier one) as SUV with its CT; or a note."""
    pets = [r for r in manifest.select(patient_id=patient_id, role="pet") if r.cycle <= cycle]
    if not pets:
        return None, ""
    row = max(pets, key=lambda r: r.cycle)
    cts = manifest.select(patient_id=patient_id, cycle=row.cycle, role="pet_ct")
    if not cts:
        return None, f"{row_where(manifest, row)} has no pet_ct row to register it with: PET left out"
    suv = read_pet_suv_row(manifest, config, row)
    ct = read_ct_row(manifest, cts[0])
    return _Pet(suv, ct, row), ""


def _register_pet(pet: _Pet, reference_ct: Volume, manifest: Manifest) -> tuple[Any, dict[str, Any]]:
    """Rigid transform (reference points → PET points) through the PET's CT; raises when it cannot be registered."""
    from ludl.imaging.registration import register_rigid

    where = row_where(manifest, pet.row)
    try:
        # PET is weeks earlier on another scanner: start from the body-outline centroids, not the scanner frame.
        result = register_rigid(reference_ct, pet.ct, initial="body")
    except LudlError as err:
        raise GeometryError(f"the CT of {where} cannot be registered to the reference CT: {err}") from err
    require_registered(result, f"the CT of {where}", "reference CT")
    q = result.quality
    info = {
        "translation_mm": list(result.translation_mm),
        "rotation_deg": list(result.rotation_deg),
        "hu_correlation": q.correlation,
        "mean_abs_diff_hu": q.mean_abs_diff_hu,
        "flags": list(q.reasons),
        "transform_from_reference": transform_affine(result.transform).tolist(),
    }
    return result.transform, info


# ------------------------------------------------------------------------------------------------ one case


def _compose(first: Any | None, then: Any | None) -> Any | None:
    """SimpleITK transform applying `first`, then `then` (None = identity)."""
    import SimpleITK as sitk

    if first is None:
        return then
    if then is None:
        return first
    return sitk.CompositeTransform([then, first])  # SimpleITK applies the last-added transform first


def _case_timepoints(
    data: CycleData, result: DosimetryResult, pet: _Pet | None, pet_transform: Any | None
) -> list[CaseTimepoint]:
    """Every time point on its own SPECT grid with the ground truth mapped back onto it."""
    from ludl.physics.dose import density_from_hu

    ref_grid = result.dose
    region_values = result.regions_map.values
    labels_ref = ref_grid.with_array(np.asarray(result.regions_map.labels, dtype=np.int32), unit="label")
    ones_ref = ref_grid.with_array(np.ones(ref_grid.shape, dtype=np.uint8), unit="label")
    tia_ref_total = float(np.asarray(result.tia.array, dtype=np.float64).sum()) * ref_grid.voxel_volume_ml
    out: list[CaseTimepoint] = []
    for tp, reg, in_fov_mbq in zip(data.timepoints, result.registrations, result.activity_in_fov_mbq, strict=True):
        grid = tp.spect
        # The registration maps reference points → this time point's points; resampling onto this grid needs the
        # opposite direction (this grid's points → reference points).
        inverse = None if reg.transform is None else reg.transform.GetInverse()
        if inverse is None and grid.same_grid(ref_grid):
            tia, dose, labels = result.tia, result.dose, labels_ref
            fov = np.ones(grid.shape, dtype=bool)
        else:
            tia = resample_to(result.tia, grid, kind="activity", transform=inverse)
            dose = resample_to(result.dose, grid, kind="linear", transform=inverse)
            labels = resample_to(labels_ref, grid, kind="nearest", transform=inverse)
            fov = np.asarray(resample_to(ones_ref, grid, kind="nearest", transform=inverse).array) > 0
        hu = tp.ct if tp.ct.same_grid(grid) else resample_to(tp.ct, grid, kind="linear", default=-1000.0)
        density = np.asarray(density_from_hu(np.asarray(hu.array, dtype=np.float64)), dtype=np.float32)
        volumes: dict[str, Volume] = {
            "spect": grid,
            "density": grid.with_array(density, unit="g/mL"),
            "tia": tia,
            "dose": dose,
            "labels": labels,
            "classes": labels.with_array(class_map(labels.array, region_values), unit="label"),
            "gt_fov": grid.with_array(fov, unit="mask"),
        }
        if pet is not None:
            volumes["pet"] = resample_to(pet.suv, grid, kind="activity", transform=_compose(inverse, pet_transform))
        forward = transform_affine(reg.transform)
        info = TimepointInfo(
            time_h=tp.time_h,
            bed_times_h=tuple(tp.bed_times_h),
            acquisition_s=tuple(r.acquisition_s for r in tp.spect_rows),
            fwhm_mm=tp.fwhm_mm,
            is_reference=reg.is_reference,
            activity_in_fov_mbq=in_fov_mbq,
            registration=reg.as_row(),
            # 4×4 affines on LPS points (mm), SimpleITK convention: reference → this time point, and its inverse.
            transform_from_reference=_rows(forward),
            transform_to_reference=_rows(np.linalg.inv(forward)),
            gt_tia_total_mbq_h=float(np.asarray(tia.array, dtype=np.float64).sum()) * grid.voxel_volume_ml,
            gt_tia_reference_total_mbq_h=tia_ref_total,
            gt_fov_fraction=float(fov.mean()),
        )
        out.append(CaseTimepoint(tp.timepoint_h, volumes, info))
    return out


def _rows(matrix: Any) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(matrix, dtype=np.float64))


def _sidecar(
    data: CycleData,
    result: DosimetryResult,
    options: DosimetryOptions,
    pet: _Pet | None,
    pet_info: Mapping[str, Any] | None,
    stp: StpCase,
    notes: list[str],
) -> CaseSidecar:
    from ludl import __version__

    regions = result.regions_map
    pet_entry = None
    if pet is not None:
        pet_entry = PetInfo(
            tracer=pet.row.pet_tracer,
            time_h=pet.row.time_h,
            injected_mbq=pet.row.pet_injected_mbq,
            weight_kg=pet.row.weight_kg,
            cycle=pet.row.cycle,
            registration=dict(pet_info or {}),
        )
    # What the cohort contours (cohort.yaml labels, else the names its label maps carry); the rest is unknown.
    labelled, unlabeled = label_coverage(data.config.labels or data.label_values, data.config.unlabeled)
    return CaseSidecar(
        ludl_version=__version__,
        patient_id=data.patient_id,
        cycle=data.cycle,
        nuclide=data.config.nuclide,
        injected_mbq=data.injected_mbq,
        residual_mbq=data.residual_mbq,
        extravasated_mbq=data.extravasated_mbq,
        net_administered_mbq=data.net_administered_mbq,
        timepoints_h=tuple(t.timepoint_h for t in data.timepoints),
        reference_timepoint_h=result.settings.get("reference_timepoint_h"),
        mask_timepoint_h=data.mask_timepoint_h,
        ground_truth=GroundTruthInfo(
            method="multi-time-point conventional dosimetry (ludl.dosimetry.pipeline)",
            settings=dict(result.settings),
            whole_body_tumour_dose_gy=result.whole_body_tumour_dose_gy,
            seconds=dict(result.seconds),
        ),
        dosimetry=options.settings(),
        region_values=dict(regions.values),
        region_kinds=dict(regions.kinds),
        classes_present=classes_present(regions.labels, regions.values),
        labelled_classes=labelled,
        unlabeled=unlabeled,
        regions=tuple(dict(r) for r in result.regions),
        pet=pet_entry,
        stp_case=stp,
        notes=(*result.notes, *notes),
    )


def prepare_case(
    cohort_dir: str | Path,
    patient_id: str,
    cycle: int,
    cases_dir: str | Path,
    *,
    nifti: bool = False,
    overwrite: bool = False,
    manifest: Manifest | None = None,
    config: CohortConfig | None = None,
    truth: Mapping[str, tuple[float, float]] | None = None,
    options: DosimetryOptions | None = None,
) -> Path:
    """Prepare one patient-cycle into ``cases_dir/<case_id>`` (atomic); returns the case folder.

    Args:
        cohort_dir: cohort folder.
        patient_id, cycle: the case.
        cases_dir: the store folder.
        nifti: also write NIfTI copies for viewing.
        overwrite: replace an existing case.
        manifest, config: already-loaded cohort files (skip re-reading them).
        truth: region → (true TIA MBq·h, true mean dose Gy) of this case, stored with its ``stp_case`` entry; None:
            read from the cohort's ``truth/regions.csv`` (none without it).
        options: the ground-truth dosimetry settings (default `DosimetryOptions()`).

    Raises:
        LudlError: bad input (with file and manifest line), as `load_cycle` and `compute_dosimetry` raise it.
    """
    options = DosimetryOptions() if options is None else options
    config = config or load_cohort_config(cohort_dir)
    manifest = manifest or load_manifest(cohort_dir, config)
    options = DosimetryOptions() if options is None else options
    data = load_cycle(cohort_dir, patient_id, int(cycle), manifest=manifest, config=config)
    result = compute_dosimetry(data, options)
    if truth is None:
        truth = read_truth(cohort_dir).get((patient_id, int(cycle)), {})
    # From the ground truth just computed: the STP baselines never run the multi-time-point pipeline a second time.
    stp = stp_case(data, result, truth, kernel_cache_dir=options.kernel_cache_dir)
    notes: list[str] = []
    pet, pet_note = _load_pet(manifest, config, patient_id, int(cycle))
    if pet_note:
        notes.append(pet_note)
    pet_transform, pet_info = None, None
    if pet is not None:
        ref = next(i for i, r in enumerate(result.registrations) if r.is_reference)
        pet_transform, pet_info = _register_pet(pet, data.timepoints[ref].ct, manifest)
    timepoints = _case_timepoints(data, result, pet, pet_transform)
    sidecar = _sidecar(data, result, options, pet, pet_info, stp, notes)
    cid = case_id(patient_id, int(cycle))
    clean_stale(cases_dir, cid)
    return write_case(cases_dir, cid, timepoints, sidecar, nifti=nifti, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------ cohort


def _prepare_one(
    cohort_dir: Path,
    patient_id: str,
    cycle: int,
    cases_dir: Path,
    manifest: Manifest,
    config: CohortConfig,
    nifti: bool,
    overwrite: bool,
    truth: Mapping[str, tuple[float, float]],
    options: DosimetryOptions,
) -> CaseOutcome:
    """One case, never raising for bad input: the outcome carries the reason."""
    cid = case_id(patient_id, cycle)
    start = time.perf_counter()
    if not overwrite and case_is_complete(cases_dir / cid):
        return CaseOutcome(cid, patient_id, cycle, "skipped")
    try:
        prepare_case(
            cohort_dir,
            patient_id,
            cycle,
            cases_dir,
            nifti=nifti,
            overwrite=True,  # an incomplete or older-format folder at the destination is replaced
            manifest=manifest,
            config=config,
            truth=truth,
            options=options,
        )
    except LudlError as err:
        return CaseOutcome(cid, patient_id, cycle, "failed", str(err), type(err).__name__, time.perf_counter() - start)
    except Exception as err:  # a bug, not bad input: recorded with its traceback so the other cases still finish
        return CaseOutcome(
            cid,
            patient_id,
            cycle,
            "failed",
            f"unexpected error (please report): {err}",
            type(err).__name__,
            time.perf_counter() - start,
            traceback.format_exc(),
        )
    return CaseOutcome(cid, patient_id, cycle, "done", seconds=time.perf_counter() - start)


def _outcomes(jobs: list[tuple[Any, ...]], workers: int) -> Iterator[CaseOutcome]:
    if workers == 1:
        for job in jobs:
            yield _prepare_one(*job)
        return
    from joblib import Parallel, delayed

    # loky processes (patients are the parallel unit); joblib limits each worker's BLAS threads to cores / workers.
    parallel = Parallel(n_jobs=workers, return_as="generator_unordered")
    yield from parallel(delayed(_prepare_one)(*job) for job in jobs)


def _run_jobs(jobs: list[tuple[Any, ...]], workers: int | None) -> dict[str, CaseOutcome]:
    """Run the case jobs (in `workers` processes; None: all cores) with a progress bar; outcomes by case id."""
    from ludl.progress import progress

    n_workers = max(1, min(int(workers) if workers is not None else (os.cpu_count() or 1), len(jobs) or 1))
    results: dict[str, CaseOutcome] = {}
    with progress(len(jobs), "prepare", unit="case") as step:
        for outcome in _outcomes(jobs, n_workers):
            results[outcome.case_id] = outcome
            reason = outcome.reason.splitlines()[0] if outcome.reason else ""
            step(note=f"{outcome.case_id} {outcome.status}" + (f": {reason}" if outcome.status == "failed" else ""))
    return results


def _write_splits(
    cohort: Path, out: Path, cases: Sequence[tuple[str, int]], n_folds: int, seed: int
) -> tuple[Splits, Path, list[str]]:
    """``splits.json``: patient folds (at most one per patient) stratified by ``non_response``; with a note."""
    patients = sorted({p for p, _ in cases})
    folds = min(n_folds, len(patients))
    notes = (
        []
        if folds == n_folds
        else [f"n_folds={n_folds} but the cohort has {len(patients)} patient(s): {folds} fold(s) written"]
    )
    splits = make_splits(patients, load_outcomes(cohort), n_folds=folds, seed=seed)
    return splits, write_splits(splits, out / SPLITS_FILE), notes


def _summary_file(out: Path, index: int, count: int) -> Path:
    # One file per shard: shards may run at the same time and must not overwrite each other's summary.
    return out / (SUMMARY_FILE if count == 1 else f"prepare_summary.shard-{index}-of-{count}.json")


def _failed_in_other_shards(out: Path, index: int, count: int) -> set[tuple[str, int]]:
    """Cases the other shards' summaries (as last written) list as failed; unreadable summaries count as absent."""
    failed: set[tuple[str, int]] = set()
    for j in range(count):
        if j == index:
            continue
        try:
            document = json.loads(_summary_file(out, j, count).read_text(encoding="utf-8"))
            failed |= {(str(c["patient_id"]), int(c["cycle"])) for c in document["cases"] if c["status"] == "failed"}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return failed


def _few(case_ids: Sequence[str], limit: int = 5) -> str:
    return ", ".join(case_ids[:limit]) + (f" … (+{len(case_ids) - limit})" if len(case_ids) > limit else "")


@dataclass(frozen=True, eq=False)
class _Settled:
    """Where the cohort's cases stand once this shard is done: prepared (complete), left out (failed), waiting."""

    prepared: dict[tuple[str, int], PreparedCase]
    left_out: list[str]
    waiting: list[str]


def _settled_cases(
    out: Path, cases: Sequence[tuple[str, int]], outcomes: Mapping[str, CaseOutcome], index: int, count: int
) -> _Settled:
    """Every case of the cohort: prepared, failed here or in another shard's summary, or still waiting."""
    failed_here = {(o.patient_id, o.cycle) for o in outcomes.values() if o.status == "failed"}
    failed_elsewhere = _failed_in_other_shards(out, index, count) if count > 1 else set()
    settled = _Settled({}, [], [])
    for p, c in cases:
        cid = case_id(p, c)
        folder = out / CASES_FOLDER / cid
        if (p, c) in failed_here:  # a complete folder left from an earlier run is not this run's ground truth
            settled.left_out.append(cid)
        elif case_is_complete(folder):
            settled.prepared[(p, c)] = read_case(folder)
        elif (p, c) in failed_elsewhere:
            settled.left_out.append(cid)
        else:
            settled.waiting.append(cid)
    return settled


def _write_dataset(out: Path, settled: _Settled, options: DosimetryOptions) -> tuple[Path | None, list[str]]:
    """``dataset.json`` from the sidecars of the prepared cases (failed cases left out); else None and why not."""
    if not settled.prepared:
        return None, [f"{DATASET_FILE} not written: no case was prepared"]
    try:
        descriptor = build_dataset_descriptor(list(settled.prepared.values()), options.settings())
    except LudlError as err:
        return None, [f"{DATASET_FILE} not written: {err}"]
    return write_dataset_descriptor(descriptor, out / DATASET_FILE), []


def _write_stp_baselines(out: Path, settled: _Settled, splits: Splits) -> tuple[Path | None, list[str]]:
    """``stp_regions.csv`` from the sidecars of the prepared cases; else None and why not."""
    found: dict[tuple[str, int], StpCase] = {}
    without: list[str] = []
    for key, case in settled.prepared.items():
        entry = case.sidecar.get("stp_case")
        if entry is None:
            without.append(case.case_id)
            continue
        try:
            found[key] = StpCase.from_dict(entry)
        except InputError as err:
            return None, [f"{STP_FILE} not written: {case.path / SIDECAR}: {err}"]
    if without:
        return None, [
            f"{STP_FILE} not written: {len(without)} case(s) have no stp_case entry, prepared by an older ludl "
            f"({_few(without)}); rerun `ludl prepare … overwrite=true` for them"
        ]
    if not found:
        return None, [f"{STP_FILE} not written: no case was prepared"]
    try:
        rows = stp_cohort_table(found, splits)
    except LudlError as err:
        return None, [f"{STP_FILE} not written: {err}"]
    left_out = settled.left_out
    notes = [f"{STP_FILE}: {len(left_out)} failed case(s) left out ({_few(left_out)})"] if left_out else []
    return write_stp_table(rows, out / STP_FILE), notes


def _write_cohort_files(
    out: Path, settled: _Settled, splits: Splits, options: DosimetryOptions, stp_baselines: bool
) -> tuple[Path | None, Path | None, list[str]]:
    """``dataset.json`` and (when asked) ``stp_regions.csv`` once every case is settled; their paths and notes."""
    names = f"{DATASET_FILE} and {STP_FILE}" if stp_baselines else DATASET_FILE
    if settled.waiting:
        return (
            None,
            None,
            [
                f"{names} not written yet: {len(settled.waiting)} case(s) are not prepared ({_few(settled.waiting)}); "
                "the last shard to finish writes them (rerun any shard once all are done to write them)"
            ],
        )
    dataset_file, notes = _write_dataset(out, settled, options)
    stp_file = None
    if stp_baselines:
        stp_file, stp_notes = _write_stp_baselines(out, settled, splits)
        notes += stp_notes
    return dataset_file, stp_file, notes


def run_prepare(
    cohort_dir: str | Path,
    out_dir: str | Path,
    *,
    shard: str | Sequence[int] = "0/1",
    workers: int | None = None,
    overwrite: bool = False,
    n_folds: int = 5,
    seed: int = 0,
    nifti: bool = False,
    stp_baselines: bool = True,
    options: DosimetryOptions | None = None,
) -> PrepareSummary:
    """Prepare every patient-cycle of a cohort (one shard of it) as prepared cases, with ``splits.json``.

    Args:
        cohort_dir: cohort folder (cohort.yaml, manifest.csv, optional outcomes.csv).
        out_dir: output folder: ``cases/<case_id>/`` (see `ludl.io.prepared`), ``splits.json``, ``dataset.json``,
            ``prepare_summary.json`` (``prepare_summary.shard-i-of-n.json`` when sharded) and ``stp_regions.csv``.
        shard: ``"i/n"``: this process prepares cases ``[i::n]`` of the sorted case list.
        workers: parallel processes (joblib); None: all cores, 1: in this process.
        overwrite: redo finished cases (default: skip them).
        n_folds, seed: patient-level folds of ``splits.json`` (n_folds is capped at the number of patients).
        nifti: also write NIfTI copies of every array, for viewing.
        stp_baselines: when every case of the cohort is prepared (or failed), write ``stp_regions.csv``: the STP
            baselines of every case from the sidecars and ``splits.json`` (`ludl.dosimetry.baselines`).
        options: the ground-truth dosimetry settings (`DosimetryOptions`), as for ``ludl dosimetry``.

    Returns:
        The summary (also written as JSON); failed cases are listed with their reasons, never raised.

    Raises:
        LudlError: problems with the whole run (cohort files, options, shard), before any case is prepared.
    """
    start = time.perf_counter()
    index, count = parse_shard(shard)
    options = DosimetryOptions() if options is None else options
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers must be ≥ 1 or None (all cores), got {workers}")
    if int(n_folds) < 1:
        raise InputError(f"n_folds must be ≥ 1, got {n_folds}")
    cohort = Path(cohort_dir)
    out = Path(out_dir)
    config = load_cohort_config(cohort)
    manifest = load_manifest(cohort, config)
    cases = _cohort_cases(manifest)
    if not cases:
        raise InputError(f"{manifest.file} lists no SPECT rows: nothing to prepare")
    truth = read_truth(cohort)  # read once, here: a broken truth table stops the run before any case
    out.mkdir(parents=True, exist_ok=True)
    splits, splits_file, notes = _write_splits(cohort, out, cases, int(n_folds), int(seed))

    mine = shard_cases(cases, index, count)
    cases_dir = out / CASES_FOLDER
    cases_dir.mkdir(exist_ok=True)
    results: dict[str, CaseOutcome] = {}
    todo: list[tuple[str, int]] = []
    for p, c in mine:  # finished cases are skipped here, so that a resumed run starts no worker for them
        cid = case_id(p, c)
        if not overwrite and case_is_complete(cases_dir / cid):
            results[cid] = CaseOutcome(cid, p, c, "skipped")
        else:
            todo.append((p, c))
    jobs = [
        (cohort, p, c, cases_dir, manifest, config, bool(nifti), bool(overwrite), truth.get((p, c), {}), options)
        for p, c in todo
    ]
    results.update(_run_jobs(jobs, workers))
    ordered = tuple(results[case_id(p, c)] for p, c in mine)
    summary_file = _summary_file(out, index, count)
    summary = PrepareSummary(
        cohort_dir=cohort,
        out_dir=out,
        shard=(index, count),
        cases=ordered,
        splits_file=splits_file,
        summary_file=summary_file,
        notes=tuple(notes),
        seconds=time.perf_counter() - start,
    )
    # Written before looking at the other shards, so that of two shards finishing together the later one sees this
    # shard's failures.
    atomic_write_text(summary_file, json.dumps(summary.to_dict(), indent=1, allow_nan=False) + "\n")
    settled = _settled_cases(out, cases, results, index, count)
    dataset_file, stp_file, more = _write_cohort_files(out, settled, splits, options, bool(stp_baselines))
    summary = replace(
        summary,
        dataset_file=dataset_file,
        stp_file=stp_file,
        notes=(*notes, *more),
        seconds=time.perf_counter() - start,
    )
    atomic_write_text(summary_file, json.dumps(summary.to_dict(), indent=1, allow_nan=False) + "\n")
    return summary
