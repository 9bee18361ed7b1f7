"""load_cycle: time points, beds with their own times, calibration of count images, activities, bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ludl.dosimetry.timepoints import load_cycle
from ludl.errors import InputError, LudlError, ManifestError
from ludl.io.manifest import load_manifest, write_manifest
from tests.dosimetry import cohort_factory as cf


def test_time_points_beds_and_activities(exact_cohort: Path) -> None:
    data = load_cycle(exact_cohort, "P01", 1)
    assert [t.timepoint_h for t in data.timepoints] == list(cf.TIMES_H)
    # 24 h has two beds, the second started BED_DELAY_H later; every slice knows its bed.
    tp = data.timepoints[1]
    assert tp.bed_times_h == pytest.approx((cf.ACTUAL_H[1], cf.ACTUAL_H[1] + cf.BED_DELAY_H))
    assert tp.spect.shape == cf.SHAPE_ZYX  # stitched back to the full field of view
    beds = np.asarray(tp.bed_index.array)[:, 0, 0]
    assert beds[0] == 0 and beds[-1] == 1 and set(np.unique(beds)) == {0, 1}
    assert data.timepoints[0].bed_times_h == (cf.ACTUAL_H[0],)
    assert data.mask_timepoint_h == 24.0
    assert set(data.label_values) == set(cf.LABELS)
    assert data.net_administered_mbq == cf.INJECTED_MBQ


def test_counts_are_calibrated_like_the_bq_per_ml_images(tmp_path: Path) -> None:
    spec = cf.CohortSpec(timepoint_indices=(0, 1, 2), units="counts", sensitivity_cps_per_mbq=9.4, acquisition_s=1200.0)
    data = load_cycle(cf.write_cohort(tmp_path / "counts", spec), "P01", 1)
    expected = cf.activity_mbq_per_ml(cf.ACTUAL_H[0], cf.SHIFTS_MM[0]) * 1e6  # Bq/mL, docs/physics.md §6
    np.testing.assert_allclose(data.timepoints[0].spect.array, expected, rtol=1e-5, atol=1e-3)
    assert data.timepoints[0].spect.unit == "Bq/mL"


def test_spect_counts_without_calibration_name_the_row(tmp_path: Path) -> None:
    spec = cf.CohortSpec(timepoint_indices=(0, 1, 2), units="counts", sensitivity_cps_per_mbq=9.4, acquisition_s=600.0)
    root = cf.write_cohort(tmp_path / "c", spec)
    # Remove the cohort default sensitivity: the SPECT rows cannot be calibrated any more.
    text = (root / "cohort.yaml").read_text().replace("  sensitivity_cps_per_mbq: 9.4\n", "")
    (root / "cohort.yaml").write_text(text)
    with pytest.raises(LudlError, match=r"manifest.csv:2: .*sensitivity_cps_per_mbq"):
        load_cycle(root, "P01", 1)


def test_missing_acquisition_time_names_the_row(tmp_path: Path) -> None:
    spec = cf.CohortSpec(timepoint_indices=(0, 1, 2), units="counts", sensitivity_cps_per_mbq=9.4, acquisition_s=600.0)
    root = cf.write_cohort(tmp_path / "c", spec)
    manifest = load_manifest(root)
    rows = [r if r.line != 4 else replace(r, acquisition_s=None) for r in manifest.rows]
    write_manifest(rows, root)
    with pytest.raises(LudlError, match=r"manifest.csv:4: .*acquisition_s"):
        load_cycle(root, "P01", 1)


def test_residual_activity_is_subtracted(tmp_path: Path) -> None:
    root = cf.write_cohort(tmp_path / "c", cf.CohortSpec(timepoint_indices=(0, 1, 2), residual_mbq=150.0))
    assert load_cycle(root, "P01", 1).net_administered_mbq == pytest.approx(cf.INJECTED_MBQ - 150.0)


def test_mismatched_patient_id_lists_the_patients(exact_cohort: Path) -> None:
    with pytest.raises(ManifestError, match=r"patient 'P1' is not in .*; patients: P01"):
        load_cycle(exact_cohort, "P1", 1)


def _dicom_with_patient(folder: Path, patient_id: str) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.20")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = "NM"
    ds.save_as(folder / "1.dcm", enforce_file_format=True)


def test_dicom_images_of_two_patients_in_one_cycle_name_the_rows(tmp_path: Path) -> None:
    root = cf.write_cohort(tmp_path / "c", cf.CohortSpec(timepoint_indices=(0, 1, 2)))
    _dicom_with_patient(root / "dicom" / "spect4", "PSEUDO-7")
    _dicom_with_patient(root / "dicom" / "spect24", "PSEUDO-8")
    paths = {2: "dicom/spect4", 4: "dicom/spect24"}
    rows = [replace(r, path=paths.get(r.line, r.path)) for r in load_manifest(root).rows]
    write_manifest(rows, root)
    with pytest.raises(InputError, match=r"'dicom/spect24' \(manifest.csv line 4\) has DICOM PatientID 'PSEUDO-8'"):
        load_cycle(root, "P01", 1)
