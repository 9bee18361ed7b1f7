"""Batch inference over a cohort manifest: one scan time of every (or one) patient-cycle, with a progress bar.

Each case is read by the cohort readers the dosimetry pipeline uses (`ludl.dosimetry.timepoints.load_cycle`: SPECT
beds stitched and calibrated, CT, activities, scan times from the manifest), its pre-therapy PET and PET/CT from the
manifest rows, the cohort's label map as reference regions when it was drawn at that time point. A case that fails
is reported with its error and the batch goes on; ``batch_summary.json`` lists what was written and what failed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ludl.dosimetry.prepare_case import case_id
from ludl.errors import InputError, LudlError
from ludl.imaging.resample import resample_to
from ludl.inference.inputs import ReferenceLabels, ScanInputs, scan_inputs
from ludl.inference.outputs import write_outputs
from ludl.inference.predictor import Predictor
from ludl.io.atomic import atomic_write_text
from ludl.io.regions import region_kind
from ludl.progress import progress

__all__ = ["BatchResult", "cohort_scan_inputs", "run_batch"]


@dataclass
class BatchResult:
    """Where each case's outputs went and which cases failed (case → error)."""

    written: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def _kind(name: str) -> str:
    try:
        return region_kind(name)
    except LudlError:
        return "organ"


def cohort_scan_inputs(cohort: str | Path, patient_id: str, cycle: int, timepoint_h: float) -> ScanInputs:
    """One patient-cycle's scan at nominal time `timepoint_h` from a cohort (manifest values, PET, reference labels)."""
    from ludl.dosimetry.timepoints import load_cycle
    from ludl.io.cohort_images import read_ct_row, read_pet_suv_row

    data = load_cycle(cohort, patient_id, cycle)
    tps = [t for t in data.timepoints if math.isclose(t.timepoint_h, float(timepoint_h), abs_tol=1e-6)]
    if not tps:
        have = ", ".join(f"{t.timepoint_h:g}" for t in data.timepoints)
        raise InputError(f"{patient_id} cycle {cycle} has no scan at timepoint_h={timepoint_h:g}; it has {have} h")
    tp = tps[0]
    manifest = data.manifest
    pets = [r for r in manifest.select(patient_id=patient_id, role="pet") if r.cycle <= cycle]
    pet = pet_ct = None
    if pets:
        row = max(pets, key=lambda r: r.cycle)
        cts = manifest.select(patient_id=patient_id, cycle=row.cycle, role="pet_ct")
        if cts:
            pet, pet_ct = read_pet_suv_row(manifest, data.config, row), read_ct_row(manifest, cts[0])
    reference = None
    notes = []
    if math.isclose(data.mask_timepoint_h, tp.timepoint_h):
        labels = resample_to(data.labels, tp.spect, kind="nearest")
        reference = ReferenceLabels(labels, dict(data.label_values), {n: _kind(n) for n in data.label_values})
    else:
        notes.append(f"the cohort's label map was drawn at {data.mask_timepoint_h:g} h: not scored beside this scan")
    source = f"cohort manifest {manifest.file}"
    return scan_inputs(
        tp.spect,
        tp.ct,
        time_h=tp.time_h,
        injected_mbq=data.net_administered_mbq,
        pet=pet,
        pet_ct=pet_ct,
        fwhm_mm=tp.fwhm_mm,
        reference_labels=reference,
        sources={"time_h": source, "injected_mbq": source, "fwhm_mm": source},
        warnings=notes,
    )


def run_batch(
    predictor: Predictor,
    cohort: str | Path,
    out: str | Path,
    *,
    patients: Sequence[str] | str = "all",
    cycle: int = 1,
    timepoint_h: float = 24.0,
    dicom: bool = True,
    report: bool = True,
    keep_identifiers: bool = False,
) -> BatchResult:
    """Predict `timepoint_h` of `patients` (``"all"`` or IDs) of `cohort`; outputs in ``out/<case>_<t>h/``."""
    from ludl.io.manifest import load_manifest

    manifest = load_manifest(cohort)
    wanted = (
        list(manifest.patients()) if patients == "all" else [patients] if isinstance(patients, str) else list(patients)
    )
    unknown = [p for p in wanted if p not in manifest.patients()]
    if unknown:
        raise InputError(f"patient(s) {', '.join(unknown)} not in {manifest.file}; give patient=all or one of its IDs")
    root = Path(out)
    result = BatchResult()
    with progress(len(wanted), "infer", unit="case") as step:
        for patient in wanted:
            name = f"{case_id(patient, cycle)}_{timepoint_h:g}h"
            try:
                inputs = replace(cohort_scan_inputs(cohort, patient, cycle, timepoint_h), patient_id=patient)
                prediction = predictor.predict(inputs)
                write_outputs(
                    prediction, root / name, dicom=dicom, report=report, keep_identifiers=keep_identifiers, cycle=cycle
                )
                result.written[name] = root / name
                step(note=f"{name} done")
            except LudlError as err:
                result.failed[name] = str(err)
                step(note=f"{name} failed")
    document: dict[str, Any] = {
        "cohort": str(cohort),
        "timepoint_h": timepoint_h,
        "cycle": cycle,
        "written": {k: str(v) for k, v in result.written.items()},
        "failed": result.failed,
    }
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "batch_summary.json", json.dumps(document, indent=2))
    return result
