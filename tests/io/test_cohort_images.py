"""Manifest row → Volume in its unit: PET as body-weight SUV, SPECT in Bq/mL, CT in HU, errors naming the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ludl.errors import InputError, UnitsError
from ludl.imaging import Volume
from ludl.io.cohort import CohortConfig
from ludl.io.cohort_images import read_ct_row, read_pet_suv_row, read_spect_row
from ludl.io.manifest import Manifest, ManifestRow
from ludl.io.nifti import write_nifti

CONFIG = CohortConfig(name="t", nuclide="Lu-177", units={"spect": "Bq/mL", "ct": "HU", "pet": "Bq/mL"}, fwhm_mm=10.0)


def _volume(values: np.ndarray, unit: str) -> Volume:
    return Volume(values.astype(np.float32), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), np.eye(3), unit=unit)


def _manifest(root: Path, rows: list[ManifestRow]) -> Manifest:
    return Manifest(rows=tuple(rows), root=root, file=root / "manifest.csv")


def _row(role: str, path: str, line: int, **cells: float | str) -> ManifestRow:
    return ManifestRow(patient_id="P1", cycle=1, role=role, path=path, injected_mbq=7400.0, line=line, **cells)


def test_pet_in_bq_per_ml_becomes_body_weight_suv(tmp_path: Path) -> None:
    concentration = np.full((2, 3, 4), 5000.0)
    concentration[0, 0, 0] = np.nan
    write_nifti(_volume(concentration, "Bq/mL"), tmp_path / "pet.nii.gz")
    row = _row("pet", "pet.nii.gz", 3, weight_kg=80.0, pet_injected_mbq=200.0, time_h=-240.0)
    suv = read_pet_suv_row(_manifest(tmp_path, [row]), CONFIG, row)
    # SUVbw = C · weight / activity = 5000 Bq/mL · 80,000 g / 200e6 Bq = 2.0; NaN → 0.
    assert suv.unit == "SUV" and suv.array.dtype == np.float32
    assert float(suv.array[1, 1, 1]) == pytest.approx(2.0, rel=1e-6) and float(suv.array[0, 0, 0]) == 0.0
    bare = _row("pet", "pet.nii.gz", 4, time_h=-240.0)
    with pytest.raises(UnitsError, match=r"line 4.*weight_kg and pet_injected_mbq"):
        read_pet_suv_row(_manifest(tmp_path, [bare]), CONFIG, bare)


def test_spect_in_mbq_per_ml_is_read_in_bq_per_ml(tmp_path: Path) -> None:
    write_nifti(_volume(np.full((2, 3, 4), 0.25), "MBq/mL"), tmp_path / "spect.nii.gz")
    row = _row("spect", "spect.nii.gz", 2, timepoint_h=24.0, time_h=24.5)
    volume, beds = read_spect_row(_manifest(tmp_path, [row]), CONFIG, [row], [24.5])
    assert volume.unit == "Bq/mL" and float(volume.array.mean()) == pytest.approx(250_000.0)
    assert beds.unit == "label" and int(np.asarray(beds.array).max()) == 0


def test_missing_images_name_the_manifest_line(tmp_path: Path) -> None:
    ct = _row("ct", "nowhere/ct.nii.gz", 7, timepoint_h=24.0, time_h=24.5)
    with pytest.raises(InputError, match=r"ct 'nowhere/ct\.nii\.gz' \(manifest\.csv line 7\)"):
        read_ct_row(_manifest(tmp_path, [ct]), ct)
    spect = _row("spect", "nowhere/spect.nii.gz", 5, timepoint_h=24.0, time_h=24.5)
    with pytest.raises(InputError, match=r"line 5.*not found"):
        read_spect_row(_manifest(tmp_path, [spect]), CONFIG, [spect], [24.5])
