"""One patient-cycle of `ludl prepare` as a prepared case (docs/cohort-format.md): `prepare_case`.

Load the case (`load_cycle`), run the multi-time-point pipeline (`compute_dosimetry`, the ground truth), then write,
per time point and on *that* time point's own SPECT grid (as a clinic hands it over at inference):

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
(``stp_case``: `StpCase.to_dict`, with the true values of a synthetic cohort's ``truth/regions.csv``). A case is
written whole or not at all (`ludl.io.prepared.write_case`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import DosimetryResult, compute_dosimetry
from ludl.dosimetry.registration import require_registered
from ludl.dosimetry.stp_case import stp_case
from ludl.dosimetry.timepoints import CycleData, load_cycle
from ludl.errors import GeometryError, LudlError
from ludl.imaging.resample import resample_to, transform_affine
from ludl.imaging.volume import Volume
from ludl.io.cohort import CohortConfig, load_cohort_config
from ludl.io.cohort_images import read_ct_row, read_pet_suv_row, row_where
from ludl.io.manifest import Manifest, ManifestRow, load_manifest
from ludl.io.prepared import CaseTimepoint, clean_stale, write_case
from ludl.io.prepared_sidecar import CaseSidecar, GroundTruthInfo, PetInfo, StpCase, TimepointInfo
from ludl.io.prepared_stats import class_map, classes_present, label_coverage
from ludl.io.provenance import Provenance, canonical_json, manifest_provenance
from ludl.io.truth import read_truth

__all__ = ["case_id", "case_inputs", "case_provenance", "prepare_case"]

_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def case_id(patient_id: str, cycle: int) -> str:
    """Folder name of a patient-cycle: the cohort's pseudonymous ID (made file-safe) and the cycle, ``P01_c1``.

    Characters outside ``[A-Za-z0-9_-]`` become ``-`` and a short hash of the original ID is appended, so two IDs
    never share a folder. No other patient attribute (name, birth date …) is ever used.
    """
    safe = _SAFE_ID.sub("-", patient_id)
    if safe != patient_id or not safe:
        safe = f"{safe}-{hashlib.sha256(patient_id.encode('utf-8')).hexdigest()[:8]}"
    return f"{safe}_c{int(cycle)}"


# ------------------------------------------------------------------------------------------------ provenance


def case_inputs(manifest: Manifest, patient_id: str, cycle: int) -> tuple[ManifestRow, ...]:
    """The manifest rows a case reads: every row of its cycle, and the patient's PET (and PET-CT) rows up to it."""
    own = manifest.select(patient_id=patient_id, cycle=cycle)
    pets = [r for r in manifest.select(patient_id=patient_id) if r.role in ("pet", "pet_ct") and r.cycle < cycle]
    return (*own, *pets)


def case_provenance(
    manifest: Manifest,
    patient_id: str,
    cycle: int,
    *,
    options: DosimetryOptions,
    nifti: bool,
    truth: Mapping[str, tuple[float, float]],
) -> Provenance:
    """What a case is computed from: its image files, manifest rows, ``cohort.yaml``, truth rows and settings.

    Image paths are the manifest's (relative to the cohort): ``case.json`` holds no absolute path.
    """
    rows = case_inputs(manifest, patient_id, int(cycle))
    label = f"{patient_id} c{int(cycle)}"
    truth_text = canonical_json({k: list(v) for k, v in sorted(truth.items())})
    extra = {f"truth/regions.csv[{label}]": hashlib.sha256(truth_text.encode("ascii")).hexdigest()}
    settings = {"dosimetry": options.settings(), "nifti": bool(nifti)}
    return manifest_provenance(manifest, rows, settings, label=label, extra=extra)


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
    provenance: Provenance,
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
            seconds={},  # timings vary run to run: kept in prepare_summary.json, so a rerun writes the case bytewise
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
        provenance=provenance.to_dict(),
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
    provenance: Provenance | None = None,
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
        provenance: the case's `case_provenance`, when the caller has it already (else computed here, before the
            inputs are read), recorded in ``case.json``.

    Raises:
        LudlError: bad input (with file and manifest line), as `load_cycle` and `compute_dosimetry` raise it.
    """
    options = DosimetryOptions() if options is None else options
    config = config or load_cohort_config(cohort_dir)
    manifest = manifest or load_manifest(cohort_dir, config)
    if truth is None:
        truth = read_truth(cohort_dir).get((patient_id, int(cycle)), {})
    if provenance is None:
        provenance = case_provenance(manifest, patient_id, int(cycle), options=options, nifti=nifti, truth=truth)
    data = load_cycle(cohort_dir, patient_id, int(cycle), manifest=manifest, config=config)
    result = compute_dosimetry(data, options)
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
    sidecar = _sidecar(data, result, options, pet, pet_info, stp, notes, provenance)
    cid = case_id(patient_id, int(cycle))
    clean_stale(cases_dir, cid)
    return write_case(cases_dir, cid, timepoints, sidecar, nifti=nifti, overwrite=overwrite)
