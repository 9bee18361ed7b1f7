"""RT Dose: round trips, an independent reader (SimpleITK + DoseGridScaling by hand), pydicom's own test file,
the absolute frame-offset form, dciodvfy, refusal of non-dose units, de-identification and atomicity."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from scipy.spatial.transform import Rotation

from ludl.errors import InputError, UnitsError
from ludl.imaging import Volume
from ludl.io.rtdose import DOSE_SUMMATION_TYPE, read_rtdose, write_rtdose
from tests.io.dicom_factory import write_image_series

FIXED_TIME = dt.datetime(2025, 1, 2, 3, 4, 5)


@pytest.fixture
def dose() -> Volume:
    rng = np.random.default_rng(4)
    return Volume(rng.gamma(2.0, 3.0, (6, 7, 8)), (4.0, 2.5, 3.0), origin_xyz_mm=(-20.0, 15.0, 100.0), unit="Gy")


@pytest.fixture
def oblique_left_handed_dose(dose: Volume) -> Volume:
    direction = Rotation.from_euler("xyz", [10.0, -20.0, 30.0], degrees=True).as_matrix()
    direction[:, 2] *= -1.0  # slices stacked against the plane normal
    return Volume(dose.array, dose.spacing_zyx_mm, dose.origin_xyz_mm, direction=direction, unit="Gy")


def _physical(volume: Volume, index_zyx: tuple[int, int, int]) -> np.ndarray:
    return volume.index_to_physical(np.asarray(index_zyx, dtype=float))


@pytest.mark.parametrize("which", ["dose", "oblique_left_handed_dose"])
def test_round_trip(tmp_path: Path, which: str, request: pytest.FixtureRequest) -> None:
    original: Volume = request.getfixturevalue(which)
    back = read_rtdose(write_rtdose(original, tmp_path / "rd.dcm"))
    assert back.unit == "Gy" and back.shape == original.shape
    assert np.abs(back.array - original.array).max() <= 1e-6 * original.array.max()
    for index in [(0, 0, 0), (5, 6, 7), (2, 3, 1)]:
        np.testing.assert_allclose(_physical(back, index), _physical(original, index), atol=1e-6)


def test_simpleitk_with_hand_applied_scaling_agrees(tmp_path: Path, oblique_left_handed_dose: Volume) -> None:
    path = write_rtdose(oblique_left_handed_dose, tmp_path / "rd.dcm")
    image = sitk.ReadImage(str(path))  # SimpleITK ignores DoseGridScaling
    scaling = float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)
    values = sitk.GetArrayFromImage(image).astype(np.float64) * scaling
    np.testing.assert_allclose(values, oblique_left_handed_dose.array, atol=1e-6 * oblique_left_handed_dose.array.max())
    for index_zyx in [(0, 0, 0), (5, 6, 7)]:
        itk_point = image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index_zyx[::-1]])
        np.testing.assert_allclose(itk_point, _physical(oblique_left_handed_dose, index_zyx), atol=1e-6)


def test_pydicom_test_file_reads_relative_dose() -> None:
    path = get_testdata_file("rtdose.dcm")
    with pytest.raises(UnitsError, match="RELATIVE"):
        read_rtdose(path)
    volume = read_rtdose(path, allow_relative=True)
    image = sitk.ReadImage(path)
    # Stored values 795000…1254000 with DoseGridScaling 1e-6 (file header), frames 5 mm apart, 10 mm pixels.
    assert volume.unit == "1" and volume.shape == (15, 10, 10)
    assert volume.array.min() == pytest.approx(0.795) and volume.array.max() == pytest.approx(1.254)
    np.testing.assert_allclose(volume.array, sitk.GetArrayFromImage(image) * 1e-6, rtol=1e-12)
    assert volume.spacing_zyx_mm == (5.0, 10.0, 10.0)
    np.testing.assert_allclose(volume.origin_xyz_mm, image.GetOrigin())


def test_absolute_frame_offsets(tmp_path: Path, dose: Volume) -> None:
    path = write_rtdose(dose, tmp_path / "rd.dcm")
    ds = pydicom.dcmread(path)
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [z0 + float(v) for v in ds.GridFrameOffsetVector]  # PS3.3 C.8.8.3.2 absolute form
    ds.save_as(path)
    back = read_rtdose(path)
    assert back.same_grid(dose)


def test_reference_frame_of_reference_and_deidentification(tmp_path: Path, dose: Volume) -> None:
    ct_paths = write_image_series(tmp_path / "ct", np.zeros((3, 4, 5), dtype=np.int16))
    ct = pydicom.dcmread(ct_paths[0])
    ds = pydicom.dcmread(write_rtdose(dose, tmp_path / "rd.dcm", reference=tmp_path / "ct", patient_id="P007"))
    assert ds.FrameOfReferenceUID == ct.FrameOfReferenceUID and ds.StudyInstanceUID == ct.StudyInstanceUID
    assert ds.SeriesInstanceUID != ct.SeriesInstanceUID
    assert str(ds.PatientName) == "P007" and ds.PatientID == "P007" and ds.PatientBirthDate == ""
    assert "Phantom" not in str(ds.PatientName) and ds.PatientIdentityRemoved == "YES"
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", DOSE_SUMMATION_TYPE)
    assert ds.BitsAllocated == 32 and ds.PixelRepresentation == 0 and float(ds.GridFrameOffsetVector[0]) == 0.0
    assert "ReferencedRTPlanSequence" not in ds
    kept = pydicom.dcmread(write_rtdose(dose, tmp_path / "rd2.dcm", reference=ct_paths[0], deidentify=False))
    assert kept.PatientID == ct.PatientID


def test_seeded_write_is_byte_identical(tmp_path: Path, dose: Volume) -> None:
    a = write_rtdose(dose, tmp_path / "a.dcm", uid_seed="P001-c1", timestamp=FIXED_TIME).read_bytes()
    b = write_rtdose(dose, tmp_path / "b.dcm", uid_seed="P001-c1", timestamp=FIXED_TIME).read_bytes()
    c = write_rtdose(dose, tmp_path / "c.dcm", uid_seed="P002-c1", timestamp=FIXED_TIME).read_bytes()
    assert a == b and a != c


def test_refuses_non_dose_and_bad_values(tmp_path: Path, dose: Volume) -> None:
    with pytest.raises(UnitsError, match="NIfTI"):
        write_rtdose(dose.with_array(dose.array, unit="MBq*h/mL"), tmp_path / "tia.dcm")
    with pytest.raises(InputError, match="negative"):
        write_rtdose(dose.with_array(dose.array - 10.0), tmp_path / "neg.dcm")
    with pytest.raises(InputError, match="RT Plan"):
        write_rtdose(dose, tmp_path / "plan.dcm", summation_type="PLAN")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path, dose: Volume, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self: pydicom.Dataset, filename: object, **kwargs: object) -> None:
        Path(str(filename)).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom.Dataset, "save_as", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_rtdose(dose, tmp_path / "rd.dcm")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(tmp_path: Path, oblique_left_handed_dose: Volume) -> None:
    ct_paths = write_image_series(tmp_path / "ct", np.zeros((3, 4, 5), dtype=np.int16))
    path = write_rtdose(oblique_left_handed_dose, tmp_path / "rd.dcm", reference=ct_paths[0])
    # dicom3tools 1.00~20220618 (Debian 12) aborts with an assertion on *any* 32-bit pixel data (pydicom's own
    # rtdose.dcm included), so the validator sees a twin differing only in Bits Allocated/Stored/High Bit (RT Dose
    # allows 16 or 32) and a 16-bit copy of the pixels; every other attribute is the written object's.
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = (pixels.astype(np.uint64) >> 16).astype("<u2").tobytes()
    twin = tmp_path / "rd16.dcm"
    ds.save_as(twin)
    result = subprocess.run(["dciodvfy", str(twin)], capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert "RTDose" in output, output  # the validator recognised the IOD
    errors = [line for line in output.splitlines() if re.match(r"\s*Error", line)]
    assert errors == [], output
