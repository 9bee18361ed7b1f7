"""DICOM SEG: round trips on CT slices written by pydicom, a Volume-only reference, an NM multi-frame reference,
dciodvfy, de-identification and reproducible bytes."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ludl.errors import DicomError, GeometryError, InputError
from ludl.imaging import Volume
from ludl.io.seg import read_seg, write_seg
from tests.io.dicom_factory import write_image_series, write_nm_multiframe

NAMES = {"liver": 3, "lesion_001": 7, "spleen": 9}  # spleen deliberately absent from the map
SPACING = (3.0, 1.5, 1.25)
ORIGIN = (-5.0, -6.0, -7.0)
OBLIQUE = (0.8660254037844387, 0.5, 0.0, -0.5, 0.8660254037844387, 0.0)  # 30° about z


def _label_array() -> np.ndarray:
    labels = np.zeros((6, 8, 10), dtype=np.int16)
    labels[1:3, 2:5, 3:7] = 3
    labels[4, 5:7, 1:3] = 7
    return labels


def _labels_on(orientation: tuple[float, ...]) -> Volume:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    direction = np.column_stack([row, col, np.cross(row, col)])
    return Volume(_label_array(), SPACING, origin_xyz_mm=ORIGIN, direction=direction, unit="label")


@pytest.fixture
def ct_series(tmp_path: Path) -> list[Path]:
    return write_image_series(
        tmp_path / "ct", np.zeros((6, 8, 10), dtype=np.int16), spacing_zyx_mm=SPACING, origin_xyz_mm=ORIGIN
    )


def test_round_trip_on_ct_slices(tmp_path: Path, ct_series: list[Path]) -> None:
    labels = _labels_on((1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    path = write_seg(labels, tmp_path / "seg.dcm", ct_series, NAMES, patient_id="P001")
    back, names = read_seg(path, names=NAMES)
    assert names == NAMES and back.unit == "label"
    # Empty planes are not stored: without a grid the volume spans planes 1–4, in place.
    np.testing.assert_array_equal(back.array, labels.array[1:5])
    np.testing.assert_allclose(back.origin_xyz_mm, labels.index_to_physical([1, 0, 0]), atol=1e-6)
    full, _ = read_seg(path, grid=labels, names=NAMES)
    assert full.same_grid(labels)
    np.testing.assert_array_equal(full.array, labels.array)
    # Without a value mapping the segment numbers (1, 2, 3 in name order) come back.
    numbered, numbers = read_seg(path, grid=labels)
    assert numbers == {"liver": 1, "lesion_001": 2, "spleen": 3}
    np.testing.assert_array_equal(numbered.array, np.select([labels.array == 3, labels.array == 7], [1, 2], 0))
    ct = pydicom.dcmread(ct_series[0])
    ds = pydicom.dcmread(path)
    assert ds.FrameOfReferenceUID == ct.FrameOfReferenceUID and ds.StudyInstanceUID == ct.StudyInstanceUID
    assert ds.SegmentationType == "BINARY" and [s.SegmentLabel for s in ds.SegmentSequence] == list(NAMES)
    assert str(ds.PatientName) == "P001" and ds.PatientBirthDate == "" and ds.PatientIdentityRemoved == "YES"
    assert ds.PatientID == "P001" and ct.PatientID not in str(ds.to_json_dict())


def test_volume_reference_without_dicom_source(tmp_path: Path) -> None:
    meta = {"FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.1", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.2"}
    labels = _labels_on(OBLIQUE).with_array(_label_array(), **meta)
    path = write_seg(labels, tmp_path / "seg.dcm", labels, NAMES)
    back, _ = read_seg(path, grid=labels, names=NAMES)
    np.testing.assert_array_equal(back.array, labels.array)
    assert pydicom.dcmread(path).FrameOfReferenceUID == meta["FrameOfReferenceUID"]


def test_nm_multiframe_reference(tmp_path: Path) -> None:
    nm = write_nm_multiframe(
        tmp_path / "nm.dcm",
        np.zeros((6, 8, 10), dtype=np.int16),
        pixel_spacing_mm=SPACING[1:],
        spacing_between_slices_mm=SPACING[0],
        position_xyz_mm=ORIGIN,
    )
    labels = _labels_on((1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    path = write_seg(labels, tmp_path / "seg.dcm", nm, NAMES)
    back, _ = read_seg(path, grid=labels, names=NAMES)
    np.testing.assert_array_equal(back.array, labels.array)
    # Frames are tied to the NM frames they lie on (synthesised functional groups): the liver's planes 1–2.
    ds = pydicom.dcmread(path)
    referenced = {
        int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        for item in ds.PerFrameFunctionalGroupsSequence
        if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
    }
    assert referenced == {2, 3}


def test_seeded_write_is_byte_identical(tmp_path: Path, ct_series: list[Path]) -> None:
    labels = _labels_on((1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    when = dt.datetime(2025, 1, 2, 3, 4, 5)
    a = write_seg(labels, tmp_path / "a.dcm", ct_series, NAMES, uid_seed="P001", timestamp=when).read_bytes()
    b = write_seg(labels, tmp_path / "b.dcm", ct_series, NAMES, uid_seed="P001", timestamp=when).read_bytes()
    assert a == b


def test_bad_inputs(tmp_path: Path, ct_series: list[Path]) -> None:
    labels = _labels_on((1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    with pytest.raises(InputError, match="label map"):
        write_seg(labels.with_array(labels.array.astype(float), unit="Gy"), tmp_path / "x.dcm", ct_series, NAMES)
    with pytest.raises(InputError, match="share"):
        write_seg(labels, tmp_path / "x.dcm", ct_series, {"a": 3, "b": 3})
    foreign = labels.with_array(labels.array, FrameOfReferenceUID="1.2.3")
    with pytest.raises(GeometryError, match="Frame of Reference"):
        write_seg(foreign, tmp_path / "x.dcm", ct_series, NAMES)
    path = write_seg(labels, tmp_path / "ok.dcm", ct_series, NAMES)
    with pytest.raises(DicomError, match="lesion_001"):
        read_seg(path, names={"liver": 3, "spleen": 9})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "ok.dcm"]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("orientation", [(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), OBLIQUE])
def test_dciodvfy_reports_no_errors(tmp_path: Path, orientation: tuple[float, ...]) -> None:
    ct = write_image_series(
        tmp_path / "ct",
        np.zeros((6, 8, 10), np.int16),
        spacing_zyx_mm=SPACING,
        origin_xyz_mm=ORIGIN,
        orientation=orientation,
    )
    path = write_seg(_labels_on(orientation), tmp_path / "seg.dcm", ct, NAMES)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert "Segmentation" in output, output
    assert [line for line in output.splitlines() if re.match(r"\s*Error", line)] == [], output
