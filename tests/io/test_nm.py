"""NM SPECT reader: geometry by the DICOM definitions, value mapping, calibration, beds and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from ludl.errors import DicomError, GeometryError, UnitsError
from ludl.io.nm import counts_to_bq_per_ml, read_nm, read_nm_beds
from tests.io.dicom_factory import dicom_position, truncate_file, write_image_series, write_nm_multiframe

SHAPE = (7, 9, 11)  # frames, rows, columns: all different so a swapped axis cannot pass
HOT = (4, 2, 7)  # frame, row, column of the hot voxel


def _oblique_orientation() -> tuple[float, ...]:
    # Rotate the axial cosines by 30° about x then 20° about z: a proper rotation, nothing axis-aligned.
    a, b = np.deg2rad(30.0), np.deg2rad(20.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    return tuple(float(v) for v in np.concatenate([rot[:, 0], rot[:, 1]]))


def _hot_stored(value: int = 500) -> np.ndarray:
    stored = np.full(SHAPE, 10, dtype=np.uint16)
    stored[HOT] = value
    return stored


@pytest.mark.parametrize(
    ("spacing_mm", "orientation", "in_detector_sequence"),
    [
        (4.8, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), True),
        (-4.8, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), True),
        (3.3, _oblique_orientation(), True),
        (-2.5, _oblique_orientation(), False),
    ],
)
def test_hot_voxel_lands_where_the_dicom_geometry_puts_it(
    tmp_path: Path, spacing_mm: float, orientation: tuple[float, ...], in_detector_sequence: bool
) -> None:
    ipp = (-120.5, 33.25, 410.0)
    pixel_spacing = (4.0, 3.0)  # row spacing ≠ column spacing: catches swapped in-plane axes
    path = write_nm_multiframe(
        tmp_path / "nm.dcm",
        _hot_stored(),
        pixel_spacing_mm=pixel_spacing,
        spacing_between_slices_mm=spacing_mm,
        position_xyz_mm=ipp,
        orientation=orientation,
        geometry_in_detector_sequence=in_detector_sequence,
        rwvm=("Bq/ml", 1.0, 0.0),
    )
    volume = read_nm(path)
    frame, row, col = HOT
    # PS3.3 C.8.4.15: frame k lies k · SpacingBetweenSlices along the normal (cross product of the cosines).
    expected = dicom_position(ipp, orientation, pixel_spacing, row, col, slice_offset_mm=frame * spacing_mm)
    hot_index = np.unravel_index(int(np.argmax(volume.array)), volume.shape)
    np.testing.assert_allclose(volume.index_to_physical(hot_index), expected, atol=1e-3)
    assert volume.shape == SHAPE
    assert volume.spacing_zyx_mm == pytest.approx((abs(spacing_mm), pixel_spacing[0], pixel_spacing[1]))
    assert np.linalg.det(volume.direction) == pytest.approx(1.0)  # z runs along +normal
    # Every voxel, not only the hot one: the first frame's first pixel sits at ImagePositionPatient.
    first_frame = 0 if spacing_mm > 0 else SHAPE[0] - 1
    np.testing.assert_allclose(volume.physical_to_index(ipp), (first_frame, 0, 0), atol=1e-6)


def test_slice_vector_orders_frames(tmp_path: Path) -> None:
    stored = np.zeros((4, 3, 3), dtype=np.uint16)
    for frame in range(4):
        stored[frame] = 10 * (frame + 1)
    # Frames hold slices 3, 1, 4, 2: slice numbers, not frame numbers, give the position.
    path = write_nm_multiframe(tmp_path / "nm.dcm", stored, slice_vector=[3, 1, 4, 2], rwvm=("Bq/ml", 1.0, 0.0))
    volume = read_nm(path)
    assert volume.array[:, 0, 0].tolist() == [20.0, 40.0, 10.0, 30.0]
    # Frame 0 (slice 3) is at ImagePositionPatient, so slice 1 lies two steps below it.
    np.testing.assert_allclose(volume.origin_xyz_mm, (0.0, 0.0, -2 * 4.8), atol=1e-6)


def test_activity_concentration_mapping_is_used_as_is(tmp_path: Path) -> None:
    stored = np.full((3, 4, 5), 100, dtype=np.uint16)
    path = write_nm_multiframe(tmp_path / "nm.dcm", stored, rwvm=("kBq/ml", 0.5, 1.0), rescale=(7.0, 0.0))
    volume = read_nm(path)
    assert volume.unit == "Bq/mL"
    # RWVM wins over RescaleSlope: (100 · 0.5 + 1) kBq/mL.
    np.testing.assert_allclose(volume.array, 51_000.0, rtol=1e-6)


def test_counts_are_calibrated_with_sensitivity_time_and_deadtime(tmp_path: Path) -> None:
    counts = 1_000
    stored = np.full((3, 4, 5), counts, dtype=np.uint16)
    spacing_mm = 4.8
    path = write_nm_multiframe(
        tmp_path / "nm.dcm", stored, pixel_spacing_mm=(spacing_mm, spacing_mm), spacing_between_slices_mm=spacing_mm
    )
    volume = read_nm(path, sensitivity_cps_per_mbq=10.0, acquisition_s=1800.0, deadtime_factor=1.25)
    # docs/physics.md §6 by hand: 1000 counts / (1800 s · 10 cps/MBq) = 0.0556 MBq in a 0.110592 mL voxel.
    voxel_ml = (spacing_mm / 10.0) ** 3
    expected = 1_000 / (1800.0 * 10.0) * 1e6 / voxel_ml * 1.25
    np.testing.assert_allclose(volume.array, expected, rtol=1e-6)
    assert expected == pytest.approx(627_933.7, rel=1e-6)
    # Integral check: total activity equals counts / (t · S) · deadtime, whatever the voxel size.
    total_mbq = volume.array.sum() * volume.voxel_volume_ml / 1e6
    assert total_mbq == pytest.approx(stored.sum() / (1800.0 * 10.0) * 1.25, rel=1e-6)


def test_counts_to_bq_per_ml_rejects_bad_calibration() -> None:
    with pytest.raises(ValueError, match="deadtime_factor"):
        counts_to_bq_per_ml([1.0], 1.0, acquisition_s=10.0, sensitivity_cps_per_mbq=5.0, deadtime_factor=0.9)
    with pytest.raises(ValueError, match="sensitivity"):
        counts_to_bq_per_ml([1.0], 1.0, acquisition_s=10.0, sensitivity_cps_per_mbq=0.0)


def test_counts_without_calibration_raise_units_error(tmp_path: Path) -> None:
    path = write_nm_multiframe(tmp_path / "nm.dcm", np.ones((2, 3, 3), dtype=np.uint16))
    with pytest.raises(UnitsError, match=r"sensitivity_cps_per_mbq and acquisition_s") as err:
        read_nm(path)
    assert "nm.dcm" in str(err.value)
    with pytest.raises(UnitsError, match="acquisition_s"):
        read_nm(path, sensitivity_cps_per_mbq=9.0)


def test_unknown_units_raise_units_error(tmp_path: Path) -> None:
    path = write_nm_multiframe(tmp_path / "odd.dcm", np.ones((2, 3, 3), dtype=np.uint16), rwvm=("mg/dl", 1.0, 0.0))
    with pytest.raises(UnitsError, match=r"odd\.dcm.*mg/dl"):
        read_nm(path)


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        ({"spacing_between_slices_mm": None}, "SpacingBetweenSlices"),
        ({"position_xyz_mm": None}, "ImagePositionPatient"),
        ({"orientation": None}, "ImageOrientationPatient"),
    ],
)
def test_missing_geometry_raises_geometry_error(tmp_path: Path, kwargs: dict[str, object], missing: str) -> None:
    path = write_nm_multiframe(tmp_path / "nogeo.dcm", np.ones((3, 3, 3), dtype=np.uint16), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(GeometryError, match=f"nogeo.dcm.*{missing}"):
        read_nm(path, sensitivity_cps_per_mbq=1.0, acquisition_s=1.0)


def test_truncated_file_raises_dicom_error_naming_it(tmp_path: Path) -> None:
    path = write_nm_multiframe(tmp_path / "cut.dcm", np.ones((8, 16, 16), dtype=np.uint16), rwvm=("Bq/ml", 1, 0))
    truncate_file(path, 0.7)
    with pytest.raises(DicomError, match=r"cut\.dcm.*truncated"):
        read_nm(path)
    with pytest.raises(DicomError, match=r"cut\.dcm"):
        read_nm(tmp_path)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPEG-lossy.dcm", "JPGExtended.dcm"])
def test_pydicom_nm_secondary_capture_is_refused(tmp_path: Path, name: str) -> None:
    from pydicom.data import get_testdata_file

    source = get_testdata_file(name)
    if source is None:
        pytest.skip(f"pydicom test file {name} not available")
    target = Path(shutil.copy(str(source), tmp_path / name))
    with pytest.raises(DicomError, match=r"Secondary Capture") as err:
        read_nm(target)
    assert name in str(err.value)


@pytest.mark.parametrize(("image_type", "pointer"), [("RECON GATED TOMO", None), ("TOMO", None)])
def test_gated_and_projection_data_are_refused(tmp_path: Path, image_type: str, pointer: None) -> None:
    path = write_nm_multiframe(tmp_path / "g.dcm", np.ones((2, 3, 3), dtype=np.uint16), image_type=image_type)
    with pytest.raises(DicomError, match=image_type):
        read_nm(path, sensitivity_cps_per_mbq=1.0, acquisition_s=1.0)


def test_frames_stepping_along_time_slots_are_refused(tmp_path: Path) -> None:
    path = write_nm_multiframe(
        tmp_path / "gated.dcm",
        np.ones((2, 3, 3), dtype=np.uint16),
        frame_increment_pointer=(0x0054, 0x0070, 0x0054, 0x0080),
        image_type="RECON TOMO",
    )
    with pytest.raises(GeometryError, match="gated"):
        read_nm(path, sensitivity_cps_per_mbq=1.0, acquisition_s=1.0)


def test_single_frame_nm_slices_are_stacked(tmp_path: Path) -> None:
    array = np.arange(4 * 3 * 2, dtype=np.uint16).reshape(4, 3, 2)
    write_image_series(tmp_path / "nm", array, modality="NM", spacing_zyx_mm=(5.0, 2.0, 3.0), rescale=(2.0, 0.0))
    volume = read_nm(tmp_path / "nm", sensitivity_cps_per_mbq=2.0, acquisition_s=100.0)
    voxel_ml = 5.0 * 2.0 * 3.0 / 1000.0
    expected = array * 2.0 / (100.0 * 2.0) * 1e6 / voxel_ml
    np.testing.assert_allclose(volume.array, expected, rtol=1e-6)


def _bed(path: Path, n_frames: int, z0_mm: float, counts: int, series_uid: str | None = None) -> Path:
    stored = np.full((n_frames, 4, 4), counts, dtype=np.uint16)
    stored[:, 0, 0] = np.arange(n_frames)  # a per-frame signature to check which bed a slice came from
    return write_nm_multiframe(
        path, stored, position_xyz_mm=(0.0, 0.0, z0_mm), spacing_between_slices_mm=5.0, series_uid=series_uid
    )


def test_beds_are_calibrated_separately_and_stitched(tmp_path: Path) -> None:
    # Bed 0 covers z = 0..45 mm (10 slices), bed 1 z = 30..75 mm: 4 slices overlap.
    bed0 = _bed(tmp_path / "bed0.dcm", 10, 0.0, 600)
    bed1 = _bed(tmp_path / "bed1.dcm", 10, 30.0, 600)
    volume, beds = read_nm_beds(
        [bed1, bed0], times_h=[24.5, 24.0], sensitivity_cps_per_mbq=10.0, acquisition_s=[1200.0, 600.0]
    )
    assert volume.shape == (16, 4, 4)
    np.testing.assert_allclose(volume.origin_xyz_mm, (0.0, 0.0, 0.0), atol=1e-6)
    voxel_ml = 0.5 * 0.48 * 0.48  # 5 mm slices, 4.8 mm pixels, in cm³
    expected_bed1 = 600 / (1200.0 * 10.0) * 1e6 / voxel_ml  # given first: bed index 0
    expected_bed0 = 600 / (600.0 * 10.0) * 1e6 / voxel_ml
    per_slice = volume.meta["bed_index_per_slice"]
    # Overlap slices 6..9 go to the bed whose centre is nearer: bed0's centre is slice 4.5, bed1's 10.5.
    assert per_slice == [1] * 8 + [0] * 8
    np.testing.assert_allclose(volume.array[:8, 1, 1], expected_bed0, rtol=1e-6)
    np.testing.assert_allclose(volume.array[8:, 1, 1], expected_bed1, rtol=1e-6)
    # Slice 8 (z = 40 mm) is frame 2 of bed1: its signature pixel says so.
    assert volume.array[8, 0, 0] == pytest.approx(2 / (1200.0 * 10.0) * 1e6 / voxel_ml, rel=1e-6)
    assert volume.meta["slice_time_h"][:8] == [24.0] * 8
    assert beds.unit == "label" and beds.same_grid(volume)
    assert np.array_equal(beds.array[:, 2, 3], per_slice)


def test_beds_in_one_series_folder_and_gaps(tmp_path: Path) -> None:
    uid = generate_uid()
    folder = tmp_path / "wb"
    folder.mkdir()
    _bed(folder / "a.dcm", 5, 25.0, 100, series_uid=uid)
    _bed(folder / "b.dcm", 5, 0.0, 100, series_uid=uid)
    volume = read_nm(folder, sensitivity_cps_per_mbq=5.0, acquisition_s=[300.0, 600.0])
    assert volume.shape == (10, 4, 4)
    assert volume.meta["n_beds"] == 2
    _bed(tmp_path / "far.dcm", 5, 80.0, 100)
    with pytest.raises(GeometryError, match="uncovered"):
        read_nm([folder / "b.dcm", tmp_path / "far.dcm"], sensitivity_cps_per_mbq=5.0, acquisition_s=300.0)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_factory_nm_file_is_a_valid_nm_image(tmp_path: Path) -> None:
    import subprocess

    path = write_nm_multiframe(tmp_path / "nm.dcm", _hot_stored(), spacing_between_slices_mm=-4.8, rwvm=("Bq/ml", 1, 0))
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    # The reader's geometry tests are only worth something if the synthetic input is a conformant NM object.
    assert errors == []


def test_two_detector_placements_are_refused(tmp_path: Path) -> None:
    import pydicom

    path = write_nm_multiframe(tmp_path / "two.dcm", np.ones((2, 3, 3), dtype=np.uint16), rwvm=("Bq/ml", 1, 0))
    ds = pydicom.dcmread(path)
    second = pydicom.Dataset()
    second.ImagePositionPatient = [0.0, 0.0, 100.0]
    second.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.DetectorInformationSequence.append(second)
    ds.save_as(path)
    with pytest.raises(GeometryError, match="DetectorInformationSequence items"):
        read_nm(path)
