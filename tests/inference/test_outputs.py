"""On a synthetic patient (SPECT as DICOM NM): every output opens with pydicom and SimpleITK alone, RT Dose and SEG
share the SPECT's Frame of Reference and grid, the region table equals the dose map's statistics recomputed here,
the DICOM objects pass dciodvfy, and nothing identifies the patient unless asked."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from tests.inference.conftest import DicomPatient, TinyRun


@pytest.fixture(scope="module")
def written(tiny_run: TinyRun, dicom_patient: DicomPatient, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import ludl.report
    from ludl.inference.outputs import write_outputs
    from ludl.inference.predictor import Predictor

    p = dicom_patient
    prediction = Predictor(tiny_run.artifact, roi_size_zyx=(32, 32, 32), tta=True).predict_files(
        p.spect,
        p.ct,
        pet=p.pet,
        pet_ct=p.pet_ct,
        time_h=p.time_h,
        injected_mbq=p.injected_mbq,
        fwhm_mm=p.fwhm_mm,
        labels=p.labels,
        label_names=p.label_names,
    )
    out = tmp_path_factory.mktemp("infer_out")
    seen: list[Any] = []

    real_write_report = ludl.report.write_report

    def write_report(content: Any, out_dir: Path) -> dict[str, Path]:  # the real report, with its content kept
        seen.append(content)
        return real_write_report(content, out_dir)

    ludl.report.write_report = write_report  # type: ignore[assignment]
    try:
        files = write_outputs(prediction, out)
    finally:
        ludl.report.write_report = real_write_report  # type: ignore[assignment]
    return prediction, files, out, seen


def _spect_header(p: DicomPatient) -> Any:
    return pydicom.dcmread(next(f for f in sorted(p.spect.rglob("*")) if f.is_file()), stop_before_pixels=True)


def test_rtdose_and_seg_share_the_spect_frame_of_reference_and_grid(written: Any, dicom_patient: DicomPatient) -> None:
    prediction, files, _, _ = written
    spect = _spect_header(dicom_patient)
    grid = prediction.inputs.spect
    dose = pydicom.dcmread(files["rtdose"])
    seg = pydicom.dcmread(files["seg"])
    assert dose.FrameOfReferenceUID == spect.FrameOfReferenceUID == seg.FrameOfReferenceUID
    assert dose.StudyInstanceUID == spect.StudyInstanceUID
    assert (int(dose.NumberOfFrames), int(dose.Rows), int(dose.Columns)) == grid.shape
    assert np.allclose([float(v) for v in dose.PixelSpacing], grid.spacing_zyx_mm[1:])
    offsets = np.asarray([float(v) for v in dose.GridFrameOffsetVector])
    assert np.allclose(np.diff(offsets), grid.spacing_zyx_mm[0])
    assert np.allclose([float(v) for v in dose.ImagePositionPatient], grid.origin_xyz_mm, atol=1e-3)
    # the stored dose is the NIfTI dose (DoseGridScaling quantisation: < 1e-6 of the maximum)
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(files["dose"])))
    stored = dose.pixel_array.astype(np.float64) * float(dose.DoseGridScaling)
    assert np.max(np.abs(stored - nifti)) <= 1e-6 * float(nifti.max()) + 1e-12
    # the TIA Parametric Map: same Frame of Reference and Study, and the NIfTI TIA's values (float32, no rescale)
    from ludl.io.parametric_map import read_parametric_map

    pm = pydicom.dcmread(files["tia_pm"])
    assert pm.FrameOfReferenceUID == spect.FrameOfReferenceUID and pm.StudyInstanceUID == spect.StudyInstanceUID
    tia_pm = read_parametric_map(files["tia_pm"])
    tia_nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(files["tia"])))
    assert tia_pm.shape == grid.shape and np.allclose(tia_pm.origin_xyz_mm, grid.origin_xyz_mm, atol=1e-3)
    assert np.array_equal(np.asarray(tia_pm.array, dtype=np.float32), tia_nifti.astype(np.float32))
    # every NIfTI output has the SPECT's geometry
    for role in ("dose", "tia", "dose_sd", "labels"):
        image = sitk.ReadImage(str(files[role]))
        assert image.GetSize() == grid.shape[::-1]
        assert np.allclose(image.GetSpacing(), grid.spacing_xyz_mm)
        assert np.allclose(image.GetOrigin(), grid.origin_xyz_mm, atol=1e-3)
    # the SEG's segments are the network's regions, placed on the SPECT grid
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(files["labels"])))
    segments = {str(s.SegmentLabel) for s in seg.SegmentSequence}
    names = {n for n, v in prediction.region_values.items() if (labels == v).any()}
    assert names <= segments


def test_region_table_equals_independent_statistics(written: Any) -> None:
    prediction, files, _, _ = written
    dose = sitk.GetArrayFromImage(sitk.ReadImage(str(files["dose"]))).astype(np.float64)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(files["labels"])))
    voxel_ml = float(np.prod(prediction.inputs.spect.spacing_zyx_mm)) / 1000.0
    with Path(files["regions"]).open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"] == "network"]
    assert rows
    for row in rows:
        voxels = dose[labels == prediction.region_values[row["region"]]]
        assert float(row["volume_ml"]) == pytest.approx(voxels.size * voxel_ml, rel=1e-9)
        assert float(row["voxel_mean_dose_gy"]) == pytest.approx(voxels.mean(), rel=1e-6)
        assert float(row["max_dose_gy"]) == pytest.approx(voxels.max(), rel=1e-6)
        assert float(row["median_dose_gy"]) == pytest.approx(np.median(voxels), rel=1e-6)
        # D2 ≥ D50 ≥ D98 and D2 within the voxels' 97th–99th percentiles (definitions of D_x differ at one voxel)
        d2, d98 = float(row["d2_gy"]), float(row["d98_gy"])
        assert np.percentile(voxels, 97) - 1e-9 <= d2 <= voxels.max() + 1e-9
        assert voxels.min() - 1e-9 <= d98 <= np.percentile(voxels, 3) + 1e-9
        lo, hi = float(row["mean_dose_lo90_gy"]), float(row["mean_dose_hi90_gy"])
        assert lo <= float(row["mean_dose_gy"]) <= hi
    reference = [r for r in prediction.regions if r["source"] == "reference"]
    assert {"kidney_left", "liver"} <= {r["region"] for r in reference}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("role", ["rtdose", "seg", "tia_pm"])
def test_dicom_objects_pass_dciodvfy(written: Any, role: str) -> None:
    _, files, _, _ = written
    result = subprocess.run(["dciodvfy", str(files[role])], capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert [line for line in output.splitlines() if re.match(r"\s*Error", line)] == [], output


def test_no_identifiers_and_a_complete_summary(written: Any, dicom_patient: DicomPatient) -> None:
    prediction, files, _, seen = written
    summary = json.loads(Path(files["summary"]).read_text())
    for path in (files["summary"], files["regions"]):
        assert "SYN0001" not in Path(path).read_text()
    for role in ("rtdose", "seg", "tia_pm"):
        ds = pydicom.dcmread(files[role])
        assert "SYN0001" not in str(ds.PatientID) and "SYN0001" not in str(ds.PatientName)
    assert summary["patient"].startswith("P-") and summary["identifiers_kept"] is False
    assert set(summary["inputs_sha256"]) >= {"spect", "ct", "pet", "pet_ct"}
    assert summary["sources"]["time_h"].startswith("command line")
    assert summary["members"] == 2 and prediction.n_members == 2  # one model × (identity, left-right flip)
    wbtd = summary["whole_body_tumour_dose"]
    assert wbtd["lesions_scored"] <= wbtd["lesions_found"]
    assert summary["ludl_version"] and summary["model"]
    # the report got the content: header pseudonymised, every region, the warnings
    (content,) = seen
    assert content.header.patient_label == summary["patient"]
    assert len(content.regions) == len(prediction.regions)
    assert content.images.dose_gy.shape == prediction.inputs.spect.shape
    page = Path(files["report_html"]).read_text()
    assert summary["patient"] in page and "SYN0001" not in page
