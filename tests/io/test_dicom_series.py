"""Folder scanning: every problem reported at once, each naming its file, without loading pixel data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ludl.errors import DicomError, GeometryError
from ludl.io.dicom_file import read_dicom_file
from ludl.io.dicom_geometry import multiframe_geometry
from ludl.io.dicom_series import inspect_dicom_folder, load_series
from ludl.io.dicom_tags import parse_dicom_datetime
from tests.io.dicom_factory import truncate_file, write_image_series, write_nm_multiframe, write_rtstruct


def test_report_lists_every_problem_without_raising(tmp_path: Path) -> None:
    folder = tmp_path / "messy"
    stored = np.zeros((6, 4, 4), dtype=np.int16)
    paths = write_image_series(folder, stored, series_uid="1.2.3.1", skip=[2], shuffle=False, prefix="ct")
    write_image_series(folder, stored[:3], series_uid="1.2.3.2", duplicate=[1], shuffle=False, prefix="other")
    truncate_file(paths[0], 0.5)
    (folder / "notes.txt").write_text("scanner log")
    (folder / "garbage.bin").write_bytes(b"\x01\x02" * 300)
    (folder / "broken.dcm").write_bytes(paths[1].read_bytes()[:200])  # DICM prefix, header cut short

    report = inspect_dicom_folder(folder)
    assert not report.ok
    text = "\n".join(report.all_problems)
    assert "2 CT series mixed in one folder" in text
    assert "gap of 4.000 mm" in text and "ct_0002.dcm" in text  # slice 2 missing between files 1 and 3
    assert "duplicate slice position" in text and "other_" in text
    assert "ct_0000.dcm" in text and "truncated" in text
    assert "broken.dcm" in text
    skipped = "\n".join(report.skipped)
    assert "notes.txt" in skipped and "garbage.bin" in skipped
    ct = next(s for s in report.series if s.series_uid == "1.2.3.1")
    assert ct.modality == "CT" and ct.sop_class == "CT Image Storage" and ct.n_files == 4  # ct_0000 unreadable


def test_summary_geometry_and_split_series_note(tmp_path: Path) -> None:
    stored = np.zeros((8, 3, 5), dtype=np.int16)
    write_image_series(tmp_path / "all", stored, spacing_zyx_mm=(3.0, 0.7, 0.9), origin_xyz_mm=(1.0, 2.0, 3.0))
    summary = inspect_dicom_folder(tmp_path / "all").series[0]
    assert summary.ok and summary.shape == (8, 3, 5)
    assert summary.spacing_zyx_mm == pytest.approx((3.0, 0.7, 0.9))
    assert summary.orientation == pytest.approx((1, 0, 0, 0, 1, 0))
    assert summary.origin_xyz_mm == pytest.approx((1.0, 2.0, 3.0))
    # The second half of a series in its own folder: complete-looking stack, but instance numbers start at 5.
    paths = write_image_series(tmp_path / "half", stored, skip=range(4), series_uid="1.2.9", shuffle=False)
    half = inspect_dicom_folder(tmp_path / "half").series[0]
    assert half.ok and half.n_files == 4 and half.instance_range == (5, 8)
    assert any("split series" in n for n in half.notes)
    assert len(paths) == 4


def test_header_scan_does_not_need_pixels(tmp_path: Path) -> None:
    path = write_nm_multiframe(tmp_path / "nm.dcm", np.ones((3, 4, 4), dtype=np.uint16), spacing_between_slices_mm=-2)
    report = inspect_dicom_folder(tmp_path)
    summary = report.series[0]
    assert summary.modality == "NM" and summary.shape == (3, 4, 4) and summary.spacing_zyx_mm[0] == 2.0
    ds = read_dicom_file(path, pixels=False)
    assert "PixelData" not in ds
    geometry = multiframe_geometry(ds, path)
    assert geometry.frame_order == (2, 1, 0)  # negative spacing: the last frame is the lowest along the normal


def test_missing_nm_geometry_is_a_reported_problem(tmp_path: Path) -> None:
    write_nm_multiframe(tmp_path / "nm.dcm", np.ones((3, 4, 4), dtype=np.uint16), spacing_between_slices_mm=None)
    report = inspect_dicom_folder(tmp_path)
    assert any("SpacingBetweenSlices" in p and "nm.dcm" in p for p in report.all_problems)
    with pytest.raises(GeometryError, match="SpacingBetweenSlices"):
        load_series(tmp_path, "NM")


def test_rtstruct_series_is_summarised(tmp_path: Path) -> None:
    square = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]], dtype=float)
    write_rtstruct(tmp_path / "rs.dcm", {"liver": [square]})
    summary = inspect_dicom_folder(tmp_path).series[0]
    assert summary.modality == "RTSTRUCT" and summary.ok and summary.shape is None


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DicomError, match="no such file"):
        inspect_dicom_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert any("no DICOM files" in p for p in inspect_dicom_folder(tmp_path / "empty").problems)
    with pytest.raises(DicomError, match="no CT series"):
        load_series(tmp_path / "empty", "CT")


def test_parse_dicom_datetime_forms() -> None:
    assert str(parse_dicom_datetime("20250102", "003000.5")) == "2025-01-02 00:30:00.500000"
    assert str(parse_dicom_datetime(datetime="20250101233000.000000+0100")) == "2025-01-01 23:30:00"
    assert str(parse_dicom_datetime("20250101", "1015")) == "2025-01-01 10:15:00"
    assert parse_dicom_datetime("2025", "10") is None


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("ImageOrientationPatient", [0.0, 1.0, 0.0, 1.0, 0.0, 0.0], "orientation"),
        ("Columns", 3, "image size"),
    ],
)
def test_inconsistent_slices_are_reported(tmp_path: Path, attribute: str, value: object, message: str) -> None:
    import pydicom

    paths = write_image_series(tmp_path / "ct", np.zeros((4, 4, 4), dtype=np.int16), shuffle=False, prefix="s")
    ds = pydicom.dcmread(paths[2])
    setattr(ds, attribute, value)
    if attribute == "Columns":
        ds.PixelData = ds.PixelData[: 4 * 3 * 2]
    ds.save_as(paths[2])
    report = inspect_dicom_folder(tmp_path / "ct")
    assert any(message in p and "s_0004.dcm" in p for p in report.all_problems)
    with pytest.raises(GeometryError, match=message):
        load_series(tmp_path / "ct", "CT")


def test_secondary_capture_is_a_problem_even_with_modality_nm(tmp_path: Path) -> None:
    import shutil

    from pydicom.data import get_testdata_file

    source = get_testdata_file("JPEG2000.dcm")
    if source is None:
        pytest.skip("pydicom test file JPEG2000.dcm not available")
    shutil.copy(str(source), tmp_path / "sc.dcm")
    report = inspect_dicom_folder(tmp_path)
    assert report.series[0].modality == "NM"
    assert any("Secondary Capture" in p and "sc.dcm" in p for p in report.all_problems)
