"""Bad input is a clear error naming the file or flag and the fix, or a prominent warning — never a silent wrong
dose: PET of another patient (IDs, or a CT that does not match), SPECT without a time stamp and no time_h, no
activity, an artifact of another format version, a scan time far outside the training range, a SPECT in counts
without calibration, a truncated DICOM series, another voxel size than the model's (resampled, with a note)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ludl.errors import DicomError, GeometryError, InputError, LudlError, UnitsError
from tests.inference.conftest import DicomPatient, TinyRun, held_out_inputs
from tests.io.dicom_factory import write_image_series, write_nm_multiframe


@pytest.fixture(scope="module")
def predictor(tiny_run: TinyRun) -> object:
    from ludl.inference.predictor import Predictor

    return Predictor(tiny_run.artifact, roi_size_zyx=None)


def _held_out(tiny_run: TinyRun) -> object:
    case = sorted((tiny_run.prepared / "cases").iterdir())[0].name
    return held_out_inputs(tiny_run.prepared, case, 24.0)


def test_pet_of_another_patient_by_id(tmp_path: Path, dicom_patient: DicomPatient) -> None:
    from ludl.inference.inputs import read_scan_inputs

    other_ct = tmp_path / "other_ct"
    write_image_series(other_ct, np.zeros((4, 8, 8), np.int16), extra={"PatientID": "SOMEONE_ELSE"})
    with pytest.raises(InputError, match=r"SOMEONE_ELSE.*two patients"):
        read_scan_inputs(
            dicom_patient.spect, dicom_patient.ct, pet=dicom_patient.pet, pet_ct=other_ct, time_h=24, injected_mbq=7000
        )


def test_pet_whose_ct_does_not_match_the_spect_ct(dicom_patient: DicomPatient) -> None:
    from ludl.imaging.volume import Volume
    from ludl.inference.inputs import scan_inputs
    from ludl.io.nifti import read_nifti

    ct = read_nifti(dicom_patient.ct)
    rng = np.random.default_rng(0)
    noise_ct = Volume(rng.normal(0, 300, ct.shape).astype(np.float32), ct.spacing_zyx_mm, ct.origin_xyz_mm, unit="HU")
    pet = read_nifti(dicom_patient.pet)
    grid = ct.with_array(np.ones(ct.shape, np.float32), unit="Bq/mL")
    with pytest.raises(GeometryError, match=r"PET's CT.*this patient"):
        scan_inputs(grid, ct, time_h=24, injected_mbq=7000, pet=pet, pet_ct=noise_ct)


def test_spect_without_time_stamp_and_no_time_h(dicom_patient: DicomPatient) -> None:
    from ludl.inference.inputs import read_scan_inputs

    with pytest.raises(InputError, match=r"spect=.*time_h="):
        read_scan_inputs(dicom_patient.spect, dicom_patient.ct, injected_mbq=7000)


def test_activity_missing(dicom_patient: DicomPatient) -> None:
    from ludl.inference.inputs import read_scan_inputs

    with pytest.raises(InputError, match=r"injected_mbq="):
        read_scan_inputs(dicom_patient.spect, dicom_patient.ct, time_h=24)


def test_artifact_of_another_format_version(tmp_path: Path, tiny_run: TinyRun) -> None:
    from ludl.inference.model import load_models

    copy = tmp_path / "model"
    shutil.copytree(tiny_run.artifact, copy)
    document = json.loads((copy / "model.json").read_text())
    document["format_version"] = 99
    (copy / "model.json").write_text(json.dumps(document))
    with pytest.raises(LudlError, match=r"model\.json: artifact format version 99.*retrain"):
        load_models(copy)


def test_scan_time_far_outside_training_range(tiny_run: TinyRun, predictor: object) -> None:
    from dataclasses import replace

    from ludl.inference.predictor import Predictor

    inputs = _held_out(tiny_run)
    with pytest.raises(InputError, match=r"time_h=2000.*allow_time_extrapolation=true"):
        predictor.predict(replace(inputs, time_h=2000.0))  # type: ignore[attr-defined,type-var]
    allowed = Predictor(tiny_run.artifact, roi_size_zyx=None, allow_time_extrapolation=True)
    prediction = allowed.predict(replace(inputs, time_h=2000.0))  # type: ignore[type-var]
    assert any("far outside the model's training range" in w for w in prediction.warnings)


def test_spect_in_counts_without_calibration(tmp_path: Path, dicom_patient: DicomPatient) -> None:
    from ludl.inference.inputs import read_scan_inputs

    nm = write_nm_multiframe(tmp_path / "counts.dcm", np.ones((4, 8, 8), np.uint16), rwvm=("{counts}", 1.0, 0.0))
    with pytest.raises(UnitsError, match=r"spect=.*sensitivity_cps_per_mbq= and acquisition_s="):
        read_scan_inputs(nm, dicom_patient.ct, time_h=24, injected_mbq=7000)


def test_truncated_dicom_series(tmp_path: Path, dicom_patient: DicomPatient) -> None:
    from ludl.inference.inputs import read_scan_inputs

    folder = tmp_path / "spect"
    shutil.copytree(dicom_patient.spect, folder)
    file = next(f for f in sorted(folder.rglob("*")) if f.is_file())
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(DicomError, match=str(folder.name)):
        read_scan_inputs(folder, dicom_patient.ct, time_h=24, injected_mbq=7000)


def test_other_voxel_size_is_resampled_with_a_note(tiny_run: TinyRun, predictor: object) -> None:
    from dataclasses import replace

    from ludl.imaging.resample import grid_with_spacing, resample_to

    inputs = _held_out(tiny_run)
    spacing = tuple(s * 0.8 for s in inputs.spect.spacing_zyx_mm)  # type: ignore[attr-defined]
    grid = grid_with_spacing(inputs.spect, spacing)  # type: ignore[attr-defined,arg-type]
    finer = replace(
        inputs,  # type: ignore[type-var]
        spect=resample_to(inputs.spect, grid, kind="activity"),  # type: ignore[attr-defined]
        density=resample_to(inputs.density, grid, kind="linear"),  # type: ignore[attr-defined]
        suv=resample_to(inputs.suv, grid, kind="activity"),  # type: ignore[attr-defined]
        reference_labels=None,
    )
    prediction = predictor.predict(finer)  # type: ignore[attr-defined]
    assert any("differs from the model's" in w and "resampled" in w for w in prediction.warnings)
    assert prediction.dose.shape == finer.spect.shape and prediction.dose.same_grid(finer.spect)
    # the dose is the model-grid dose mapped back: its integral over the body is kept within interpolation error
    coarse = predictor.predict(replace(inputs, reference_labels=None))  # type: ignore[attr-defined,type-var]
    a = float(np.sum(prediction.dose.array)) * prediction.dose.voxel_volume_ml
    b = float(np.sum(coarse.dose.array)) * coarse.dose.voxel_volume_ml
    assert a == pytest.approx(b, rel=0.1)
