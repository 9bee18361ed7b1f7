"""DICOM Parametric Map: round trips on SPECT-like grids, pydicom-only reading, SimpleITK, the NM source's Study and
Frame of Reference, dciodvfy, reproducible bytes and refusal of bad maps."""

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
from scipy.spatial.transform import Rotation

from ludl.errors import DicomError, GeometryError, InputError, LudlError, UnitsError
from ludl.imaging import Volume
from ludl.io.parametric_map import PARAMETRIC_MAP_STORAGE, read_parametric_map, write_parametric_map
from tests.io.dicom_factory import write_nm_multiframe

FIXED_TIME = dt.datetime(2025, 1, 2, 3, 4, 5)
# (spacing_zyx_mm, origin_xyz_mm): a CT-like anisotropic grid and the 4.8 mm SPECT grid, origins with many digits.
GRIDS = {
    "anisotropic": ((5.0, 0.98, 0.98), (-249.51171875, -180.2211433, -601.25)),
    "spect_4.8mm": ((4.8, 4.8, 4.8), (-305.6, -305.6, -188.2211433)),
}


def _tia(spacing: tuple[float, float, float], origin: tuple[float, float, float], **meta: str) -> Volume:
    rng = np.random.default_rng(12)
    values = rng.gamma(2.0, 3.0, (6, 7, 9)).astype(np.float32)  # MBq·h/mL, a few to tens
    values[0, 0, 0] = 0.0
    return Volume(values, spacing, origin_xyz_mm=origin, unit="MBq*h/mL", meta=meta)


def _nm_source(path: Path, tia: Volume) -> Path:
    """A multi-frame NM SPECT on the TIA's grid (the map is derived from it)."""
    return write_nm_multiframe(
        path,
        np.zeros(tia.shape, dtype=np.int16),
        pixel_spacing_mm=(tia.spacing_zyx_mm[1], tia.spacing_zyx_mm[2]),
        spacing_between_slices_mm=tia.spacing_zyx_mm[0],
        position_xyz_mm=tia.origin_xyz_mm,
    )


@pytest.mark.parametrize("grid", list(GRIDS))
def test_round_trip_on_the_nm_source(tmp_path: Path, grid: str) -> None:
    tia = _tia(*GRIDS[grid])
    nm = _nm_source(tmp_path / "nm.dcm", tia)
    path = write_parametric_map(tia, tmp_path / "tia_pm.dcm", nm, patient_id="SYN0001")
    back = read_parametric_map(path)
    assert back.unit == "MBq*h/mL" and back.shape == tia.shape
    np.testing.assert_array_equal(back.array, tia.array)  # float32 pixels: no rescale loss at all
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.spacing_zyx_mm, tia.spacing_zyx_mm, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.origin_xyz_mm, tia.origin_xyz_mm, rtol=0, atol=1e-6)
    np.testing.assert_allclose(back.direction, tia.direction, atol=1e-12)
    source = pydicom.dcmread(nm, stop_before_pixels=True)
    assert back.meta["FrameOfReferenceUID"] == source.FrameOfReferenceUID
    assert back.meta["StudyInstanceUID"] == source.StudyInstanceUID


def test_oblique_left_handed_map_keeps_every_voxel_in_place(tmp_path: Path) -> None:
    direction = Rotation.from_euler("xyz", [10.0, -20.0, 30.0], degrees=True).as_matrix()
    direction[:, 2] *= -1.0  # slices stacked against the plane normal
    tia = _tia(*GRIDS["anisotropic"])
    tia = Volume(tia.array, tia.spacing_zyx_mm, tia.origin_xyz_mm, direction=direction, unit=tia.unit)
    back = read_parametric_map(write_parametric_map(tia, tmp_path / "pm.dcm", {"FrameOfReferenceUID": "1.2.3"}))
    # Read back right-handed: the same planes in the other order, each voxel at the same LPS position.
    np.testing.assert_array_equal(back.array, tia.array[::-1])
    last = tia.shape[0] - 1
    for k, j, i in [(0, 0, 0), (2, 3, 4), (last, 6, 8)]:
        np.testing.assert_allclose(
            back.index_to_physical([last - k, j, i]), tia.index_to_physical([k, j, i]), rtol=0, atol=1e-6
        )


def test_pydicom_alone_reads_class_unit_frames_and_planes(tmp_path: Path) -> None:
    tia = _tia(*GRIDS["anisotropic"])
    nm = _nm_source(tmp_path / "nm.dcm", tia)
    ds = pydicom.dcmread(write_parametric_map(tia, tmp_path / "pm.dcm", nm, patient_id="SYN0001"))
    assert ds.SOPClassUID == PARAMETRIC_MAP_STORAGE == "1.2.840.10008.5.1.4.1.1.30"
    assert int(ds.NumberOfFrames) == tia.shape[0] and (ds.Rows, ds.Columns) == tia.shape[1:]
    assert "FloatPixelData" in ds and ds.BitsAllocated == 32
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("MBq.h/mL", "UCUM")  # UCUM for MBq·h/mL
    assert (float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)) == (1.0, 0.0)
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert quantity.CodeMeaning == "Time-integrated activity concentration"
    # Frames may come in any order (highdicom writes these top plane first): each frame's plane position must be
    # where the Volume puts the first voxel of the plane whose values it holds (PS3.3 C.7.6.2.1.1).
    planes = set()
    for frame, item in zip(ds.pixel_array, ds.PerFrameFunctionalGroupsSequence, strict=True):
        position = np.asarray([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        k = round(float(position[2] - tia.origin_xyz_mm[2]) / tia.spacing_zyx_mm[0])
        np.testing.assert_allclose(position, tia.index_to_physical([k, 0, 0]), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(frame, tia.array[k])
        planes.add(k)
    assert planes == set(range(tia.shape[0]))
    assert str(ds.PatientName) == "SYN0001" and ds.PatientBirthDate == "" and ds.PatientIdentityRemoved == "YES"
    source = pydicom.dcmread(nm, stop_before_pixels=True)
    assert source.PatientID not in str(ds.to_json_dict())


def test_simpleitk_cannot_read_a_float_parametric_map(tmp_path: Path) -> None:
    """SimpleITK 2.5 (GDCM) has no reader for FloatPixelData; if a later one has, it must agree with ours."""
    tia = _tia(*GRIDS["spect_4.8mm"])
    path = write_parametric_map(tia, tmp_path / "pm.dcm", {"FrameOfReferenceUID": "1.2.3"})
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        assert "Unable to determine ImageIO reader" in str(err)
        return
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), tia.array, rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), tia.origin_xyz_mm, atol=1e-4)


def test_nifti_input_shares_the_given_study_and_frame_of_reference(tmp_path: Path) -> None:
    link = {"FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.11", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.12"}
    tia = _tia(*GRIDS["spect_4.8mm"])
    from_mapping = pydicom.dcmread(write_parametric_map(tia, tmp_path / "a.dcm", link))
    from_meta = pydicom.dcmread(write_parametric_map(tia.with_array(tia.array, **link), tmp_path / "b.dcm"))
    for ds in (from_mapping, from_meta):
        assert ds.FrameOfReferenceUID == link["FrameOfReferenceUID"]
        assert ds.StudyInstanceUID == link["StudyInstanceUID"]


def test_seeded_write_is_byte_identical(tmp_path: Path) -> None:
    tia = _tia(*GRIDS["anisotropic"])
    nm = _nm_source(tmp_path / "nm.dcm", tia)
    a = write_parametric_map(tia, tmp_path / "a.dcm", nm, uid_seed="P001-c1", timestamp=FIXED_TIME).read_bytes()
    b = write_parametric_map(tia, tmp_path / "b.dcm", nm, uid_seed="P001-c1", timestamp=FIXED_TIME).read_bytes()
    c = write_parametric_map(tia, tmp_path / "c.dcm", nm, uid_seed="P002-c1", timestamp=FIXED_TIME).read_bytes()
    assert a == b and a != c


def test_bad_inputs_name_the_file_and_leave_nothing(tmp_path: Path) -> None:
    tia = _tia(*GRIDS["spect_4.8mm"])
    link = {"FrameOfReferenceUID": "1.2.3"}
    holes = tia.array.copy()
    holes[1, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"nan\.dcm.*NaN or infinite"):
        write_parametric_map(tia.with_array(holes), tmp_path / "nan.dcm", link)
    with pytest.raises(InputError, match=r"huge\.dcm.*beyond float32"):
        write_parametric_map(tia.with_array(tia.array.astype(np.float64) * 1e300), tmp_path / "huge.dcm", link)
    with pytest.raises(LudlError, match=r"flat\.dcm.*3-D"):
        write_parametric_map(np.ones((7, 9), np.float32), tmp_path / "flat.dcm", link)  # type: ignore[arg-type]
    with pytest.raises(UnitsError, match=r"ct\.dcm.*UCUM"):
        write_parametric_map(tia.with_array(tia.array, unit="HU"), tmp_path / "ct.dcm", link)
    assert list(tmp_path.iterdir()) == []
    nm = _nm_source(tmp_path / "nm.dcm", tia)
    with pytest.raises(DicomError, match=r"nm\.dcm.*not a Parametric Map"):
        read_parametric_map(nm)
    elsewhere = tia.with_array(tia.array, FrameOfReferenceUID="1.2.826.0.1.3680043.8.498.99")
    with pytest.raises(GeometryError, match="Frame of Reference"):
        write_parametric_map(elsewhere, tmp_path / "moved.dcm", nm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nm.dcm"]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("grid", list(GRIDS))
def test_dciodvfy_reports_no_errors(tmp_path: Path, grid: str) -> None:
    tia = _tia(*GRIDS[grid])
    path = write_parametric_map(tia, tmp_path / "pm.dcm", _nm_source(tmp_path / "nm.dcm", tia), patient_id="SYN0001")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert "ParametricMap" in output, output  # the validator recognised the IOD
    assert [line for line in output.splitlines() if re.match(r"\s*Error", line)] == [], output
