"""Clean cohorts the bad-input corpus breaks one way each: NIfTI, DICOM (NM, CT, PET, RTSTRUCT) and a runnable one.

Every builder writes a cohort that passes `ludl validate` (asserted in test_corpus.py), so each case's failure is
the one thing the case changed.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from tests.conftest import require_testdata
from tests.io.dicom_factory import write_image_series, write_nm_multiframe, write_rtstruct
from tests.io.test_manifest import BQML, COHORT_YAML, CT_FRAME, _make_cohort, _row, _write_csv

__all__ = [
    "dicom_cohort",
    "edit_dicom",
    "edit_rows",
    "nifti_cohort",
    "rows_of",
    "write_rows",
]

# Line numbers of the clean NIfTI cohort (tests.io.test_manifest._clean_rows; line 1 is the header)
NIFTI_LINES = {"pet": 2, "pet_ct": 3, "spect_4h": 4, "ct_4h": 5, "spect_24h": 6, "ct_24h": 7, "mask_24h": 10}
# Line numbers of the clean DICOM cohort below
DICOM_LINES = {"spect_4h": 2, "ct_4h": 3, "spect_24h": 4, "ct_24h": 5, "mask": 6, "pet": 7, "pet_ct": 8}


def nifti_cohort(root: Path) -> Path:
    """Two patients, NIfTI images (tests.io.test_manifest's clean cohort)."""
    return _make_cohort(root)


def rows_of(root: Path) -> list[dict[str, str]]:
    """The manifest rows as dicts (cells as text)."""
    with (root / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(root: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Rewrite manifest.csv with `rows` (and `columns`, default the rows' own)."""
    names = columns or list(rows[0])
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def edit_rows(root: Path, edit: Callable[[list[dict[str, str]]], None]) -> None:
    """Apply `edit` to the manifest rows in place."""
    rows = rows_of(root)
    edit(rows)
    write_rows(root, rows)


def edit_dicom(folder: Path, edit: Callable[[Any], None], pattern: str = "*.dcm") -> None:
    """Apply `edit` to every DICOM file of a folder and save it."""
    for file in sorted(folder.glob(pattern)):
        ds = pydicom.dcmread(file)
        edit(ds)
        ds.save_as(file)


def _pet_series(folder: Path) -> None:
    """The vendored IBSI SUV DRO 0_0 PET slices (BQML, decay-corrected START), as a patient's PET."""
    shutil.copytree(require_testdata("suv_dro", "DRO_0_0", "PT"), folder)


def dicom_cohort(root: Path) -> Path:
    """P1: NM SPECT (Bq/mL) and CT series at 4 h and 24 h, an RTSTRUCT at 24 h, a PET (IBSI DRO) with its CT."""
    common = {"injection_datetime": "2025-01-01T06:00:00"}
    rows = []
    for tp in (4, 24):
        (root / f"spect_{tp}h").mkdir(parents=True)
        write_nm_multiframe(root / f"spect_{tp}h" / "nm.dcm", np.full((4, 4, 4), 100, dtype=np.uint16), rwvm=BQML)
        ct = np.zeros((5, 4, 4), dtype=np.int16)
        write_image_series(
            root / f"ct_{tp}h", ct, spacing_zyx_mm=(2.0, 1.0, 1.0), extra={"FrameOfReferenceUID": CT_FRAME}
        )
        rows.append(_row("P1", 1, "spect", tp, None, f"spect_{tp}h", **common))
        rows.append(_row("P1", 1, "ct", tp, None, f"ct_{tp}h", **common))
    square = np.array([[0.0, 0.0, 4.0], [2.0, 0.0, 4.0], [2.0, 2.0, 4.0], [0.0, 2.0, 4.0]])
    (root / "rs").mkdir()
    write_rtstruct(root / "rs" / "rs.dcm", {"liver": [square]}, frame_of_reference_uid=CT_FRAME)
    rows.append(_row("P1", 1, "mask", 24, None, "rs/rs.dcm", **common))
    _pet_series(root / "pet")
    write_image_series(root / "pet_ct", np.zeros((5, 4, 4), dtype=np.int16), extra={"PatientID": "TEST0001"})
    rows.append(_row("P1", 1, "pet", None, -100.0, "pet", pet_tracer="18F-FDG", **common))
    rows.append(_row("P1", 1, "pet_ct", None, -100.0, "pet_ct", **common))
    (root / "cohort.yaml").write_text(COHORT_YAML)
    _write_csv(root / "manifest.csv", rows)
    # One DICOM PatientID for every image of P1 (the DRO's own ID), as an export of one patient would have.
    pet_id = str(pydicom.dcmread(next(iter(sorted((root / "pet").glob("*.dcm"))))).PatientID)
    for folder in ("spect_4h", "ct_4h", "spect_24h", "ct_24h", "rs", "pet_ct"):
        edit_dicom(root / folder, lambda ds: setattr(ds, "PatientID", pet_id))
    return root
