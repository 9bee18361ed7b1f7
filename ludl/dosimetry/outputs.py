"""The files one patient-cycle's dosimetry writes: dose and TIA maps, RT Dose, region and registration tables, DVH,
HTML summary (all atomic, no patient identifiers)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ludl.dosimetry.regions import write_regions_csv
from ludl.dosimetry.registration import TimepointRegistration
from ludl.dosimetry.timepoints import CycleData
from ludl.io.atomic import atomic_write_text

if TYPE_CHECKING:
    from ludl.dosimetry.pipeline import DosimetryResult

__all__ = ["EXTRA_REGION_COLUMNS", "write_outputs", "write_region_table"]

# Columns after `REGION_COLUMNS` (docs/cohort-format.md "regions.csv"): the resolution PVC used and where it came
# from, a flag on values not to use for decisions (the image-based red marrow under lesion spill-in), the
# blood-based red-marrow dose.
EXTRA_REGION_COLUMNS: tuple[str, ...] = ("resolution", "fwhm_used_mm", "flag", "blood_based_dose_gy")


def write_region_table(rows: Sequence[dict[str, object]], path: Path) -> Path:
    """``regions.csv``: the `REGION_COLUMNS` then the `EXTRA_REGION_COLUMNS` the rows carry (empty for NaN)."""
    return write_regions_csv(rows, path, EXTRA_REGION_COLUMNS)


def _write_registration_csv(registrations: Sequence[TimepointRegistration], path: Path) -> Path:
    """Pose and residual of every time point (the non-rigid residual is what the rigid fit leaves)."""
    rows = [r.as_row() for r in registrations]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def write_outputs(result: DosimetryResult, data: CycleData, ref_index: int, out: Path) -> dict[str, Path]:
    """Write the result's maps (NIfTI, RT Dose), tables (regions, registration) and the report (summary.html/.pdf)."""
    from ludl.dosimetry.report import write_dosimetry_report
    from ludl.io.nifti import write_nifti
    from ludl.io.rtdose import write_rtdose

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["dose_nifti"] = write_nifti(result.dose, out / "dose_gy.nii.gz")
    files["tia_nifti"] = write_nifti(result.tia, out / "tia_mbq_h_per_ml.nii.gz")
    ref_spect = data.timepoints[ref_index].spect
    reference = ref_spect if ref_spect.meta.get("FrameOfReferenceUID") else None
    files["rtdose"] = write_rtdose(result.dose, out / "dose_rtdose.dcm", reference=reference, deidentify=True)
    files["regions_csv"] = write_region_table(result.regions, out / "regions.csv")
    files["registration_csv"] = _write_registration_csv(result.registrations, out / "registration.csv")
    files.update(write_dosimetry_report(result, data, ref_index, out))
    return files
