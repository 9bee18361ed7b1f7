"""CT reader: HU, slice sorting along the normal, geometry, rejection of broken stacks, density."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ludl.errors import DicomError, GeometryError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.ct import ct_to_density, read_ct
from tests.io.dicom_factory import truncate_file, write_image_series


def _stored(n: int = 6) -> np.ndarray:
    stored = np.zeros((n, 5, 4), dtype=np.int16)
    stored += (100 * np.arange(n, dtype=np.int16))[:, None, None]  # slice k holds 100·k: order is visible
    stored[:, 1, 2] += 7
    return stored


def test_hu_and_sorting_along_the_normal(tmp_path: Path) -> None:
    # Column direction −y: the normal points to −z (feet), so the stack must be sorted by −z, not by z.
    orientation = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    write_image_series(
        tmp_path / "ct",
        _stored(),
        spacing_zyx_mm=(2.5, 0.8, 0.6),
        origin_xyz_mm=(-10.0, 20.0, 300.0),
        orientation=orientation,
        rescale=(1.0, -1024.0),
    )
    ct = read_ct(tmp_path / "ct")
    assert ct.unit == "HU"
    np.testing.assert_allclose(ct.array[:, 0, 0], 100 * np.arange(6) - 1024.0)
    assert ct.array[3, 1, 2] == pytest.approx(300 + 7 - 1024.0)
    assert ct.spacing_zyx_mm == pytest.approx((2.5, 0.8, 0.6))
    np.testing.assert_allclose(ct.origin_xyz_mm, (-10.0, 20.0, 300.0))
    # Voxel (z=3, row 1, col 2) by the DICOM definition: IPP_3 + col·Δx·row_dir + row·Δy·col_dir.
    expected = np.array([-10.0 + 2 * 0.6, 20.0 - 1 * 0.8, 300.0 - 3 * 2.5])
    np.testing.assert_allclose(ct.index_to_physical((3, 1, 2)), expected, atol=1e-6)


def test_pydicom_ct_small_reads_as_one_slice() -> None:
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    ct = read_ct(source)
    ds = pydicom.dcmread(source)
    np.testing.assert_allclose(ct.array[0], ds.pixel_array * 1.0 - 1024.0)
    assert ct.spacing_zyx_mm[0] == pytest.approx(float(ds.SliceThickness))


def test_missing_slice_is_rejected_naming_the_neighbours(tmp_path: Path) -> None:
    paths = write_image_series(tmp_path / "ct", _stored(), skip=[3], shuffle=False, prefix="s")
    with pytest.raises(DicomError, match=r"s_0004\.dcm → .*s_0008\.dcm: gap of 4\.000 mm.*1 slice"):
        read_ct(tmp_path / "ct")
    assert len(paths) == 5


def test_duplicate_slice_is_rejected(tmp_path: Path) -> None:
    write_image_series(tmp_path / "ct", _stored(), duplicate=[2])
    with pytest.raises(DicomError, match="duplicate slice position"):
        read_ct(tmp_path / "ct")


def test_truncated_slice_is_named(tmp_path: Path) -> None:
    paths = write_image_series(tmp_path / "ct", _stored(), shuffle=False, prefix="s")
    truncate_file(paths[2], 0.9)
    with pytest.raises(DicomError, match=r"s_0004\.dcm: .*truncated"):
        read_ct(tmp_path / "ct")


def test_mixed_series_need_a_series_uid(tmp_path: Path) -> None:
    write_image_series(tmp_path / "ct", _stored(), series_uid="1.2.3.4", prefix="a")
    write_image_series(tmp_path / "ct", _stored(3) + 5, series_uid="1.2.3.5", prefix="b")
    with pytest.raises(DicomError, match="2 CT series mixed in one folder"):
        read_ct(tmp_path / "ct")
    assert read_ct(tmp_path / "ct", series_uid="1.2.3.5").shape == (3, 5, 4)


def test_inconsistent_pixel_spacing_is_a_geometry_error(tmp_path: Path) -> None:
    paths = write_image_series(tmp_path / "ct", _stored(), shuffle=False, prefix="s")
    ds = pydicom.dcmread(paths[4])
    ds.PixelSpacing = [0.9, 1.0]
    ds.save_as(paths[4])
    with pytest.raises(GeometryError, match=r"s_0008\.dcm: PixelSpacing"):
        read_ct(tmp_path / "ct")


def test_gantry_tilt_and_uneven_spacing_are_geometry_errors(tmp_path: Path) -> None:
    paths = write_image_series(tmp_path / "tilt", _stored(), shuffle=False, prefix="s")
    for k, path in enumerate(paths):  # shift each slice in y as a tilted gantry does
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0.0, 0.5 * k, 2.0 * k]
        ds.save_as(path)
    with pytest.raises(GeometryError, match="off the slice normal"):
        read_ct(tmp_path / "tilt")
    paths = write_image_series(tmp_path / "uneven", _stored(), shuffle=False, prefix="s")
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = [0.0, 0.0, 6.4]  # 2.4 mm after slice 2, 1.6 mm before slice 4
    ds.save_as(paths[3])
    with pytest.raises(GeometryError, match="unevenly spaced"):
        read_ct(tmp_path / "uneven")


def test_not_hu_is_a_units_error(tmp_path: Path) -> None:
    write_image_series(tmp_path / "ct", _stored(), extra={"RescaleType": "OD"})
    with pytest.raises(UnitsError, match="RescaleType 'OD'"):
        read_ct(tmp_path / "ct")


def test_non_ct_series_is_refused(tmp_path: Path) -> None:
    write_image_series(tmp_path / "pt", _stored(), modality="PT")
    with pytest.raises(DicomError, match="no CT series"):
        read_ct(tmp_path / "pt")
    shutil.rmtree(tmp_path / "pt")


def test_ct_to_density_water_air_and_bone() -> None:
    pytest.importorskip("ludl.physics.dose")
    hu = Volume(np.array([[[-1000.0, 0.0, 1000.0]]], dtype=np.float32), (1.0, 1.0, 1.0), unit="HU")
    rho = ct_to_density(hu)
    assert rho.unit == "g/mL" and rho.same_grid(hu)
    # Air ≈ 0.0012 g/mL (clipped), water 1.0, cortical-bone end of Schneider et al. 2000 ≈ 1.64 g/mL.
    np.testing.assert_allclose(rho.array.ravel(), [0.0012, 1.0, 1.638], rtol=0.02)
    with pytest.raises(UnitsError):
        ct_to_density(rho)


def test_pixel_padding_becomes_air(tmp_path: Path) -> None:
    stored = _stored()
    stored[:, 0, 0] = -2000  # outside the reconstruction circle
    write_image_series(tmp_path / "ct", stored, extra={"PixelPaddingValue": -2000})
    ct = read_ct(tmp_path / "ct")
    np.testing.assert_allclose(ct.array[:, 0, 0], -1000.0)
    assert ct.array[2, 1, 2] == pytest.approx(207.0)
