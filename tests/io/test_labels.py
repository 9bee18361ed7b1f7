"""Label maps from RTSTRUCT (rasterised contours), DICOM SEG and NIfTI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ludl.errors import DicomError, GeometryError, InputError
from ludl.imaging.volume import Volume
from ludl.io.labels import read_labels
from ludl.io.rtstruct import fill_polygons, read_rtstruct, read_rtstruct_masks, rtstruct_roi_names
from tests.conftest import require_testdata
from tests.io.dicom_factory import write_rtstruct

SUV_DRO = Path(__file__).resolve().parents[1] / "data" / "suv_dro"  # vendored: tests/data/README.md


def _shoelace_mm2(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _square(x0: float, y0: float, side: float, z: float) -> np.ndarray:
    return np.array([[x0, y0, z], [x0 + side, y0, z], [x0 + side, y0 + side, z], [x0, y0 + side, z]], dtype=float)


def _grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> Volume:
    return Volume(np.zeros(shape, dtype=np.uint8), spacing, origin, unit="label")


def test_fill_polygons_even_odd_and_analytic_areas() -> None:
    # A 40×40 square with a 20×20 hole, then a triangle: pixel counts approach the exact areas.
    outer = np.array([[10, 10], [50, 10], [50, 50], [10, 50]], dtype=float)
    hole = np.array([[20, 20], [40, 20], [40, 40], [20, 40]], dtype=float)
    mask = fill_polygons([outer, hole], (64, 64))
    assert mask.sum() == 40 * 40 - 20 * 20  # half-open edges make axis-aligned squares exact
    assert not mask[30, 30] and mask[15, 15] and not mask[5, 5]
    triangle = np.array([[0.3, 0.7], [60.2, 3.1], [25.9, 55.4]])
    area = _shoelace_mm2(np.c_[triangle, np.zeros(3)])
    assert fill_polygons([triangle], (64, 64)).sum() == pytest.approx(area, rel=0.02)
    # A polygon reaching outside the grid is clipped, not wrapped (x, y < 5 exclusive: 5 × 5 pixel centres).
    assert fill_polygons([np.array([[-10, -10], [5, -10], [5, 5], [-10, 5]], dtype=float)], (8, 8)).sum() == 25


@pytest.mark.parametrize(
    ("slice_mm", "pixel_mm", "offset_mm"),
    [(10.0, 2.0, 0.0), (5.0, 3.0, 0.7), (2.5, 1.7, -0.3)],
)
def test_pydicom_rtstruct_volume_matches_area_times_thickness(
    slice_mm: float, pixel_mm: float, offset_mm: float
) -> None:
    from pydicom.data import get_testdata_file

    source = get_testdata_file("rtstruct.dcm")
    import pydicom

    ds = pydicom.dcmread(source, force=True)
    contours = [np.asarray(c.ContourData, float).reshape(-1, 3) for c in ds.ROIContourSequence[0].ContourSequence]
    plane_step_mm = 10.0  # the three planes of "patient" lie at z = −200, −190, −180 mm
    expected_ml = sum(_shoelace_mm2(c) for c in contours) * plane_step_mm / 1000.0
    nz = round(60 / slice_mm)
    n_xy = round(460 / pixel_mm)
    grid = _grid((nz, n_xy, n_xy), (slice_mm, pixel_mm, pixel_mm), (-230 + offset_mm, -230 + offset_mm, -220.0))
    labels, names = read_rtstruct(source, grid)
    assert names == ["patient"]  # the two isocentre POINT structures have no area to fill
    volume_ml = float((labels.array == 1).sum()) * labels.voxel_volume_ml
    assert volume_ml == pytest.approx(expected_ml, rel=0.03)
    assert expected_ml == pytest.approx(3 * 400 * 300 * 10 / 1000.0)


def test_suv_dro_rtstruct_agrees_with_its_nifti_mask() -> None:
    require_testdata("suv_dro", "DRO_0_0")
    from ludl.io.pet import read_pet

    pet = read_pet(SUV_DRO / "DRO_0_0" / "PT")
    contoured, names = read_rtstruct(SUV_DRO / "DRO_0_0" / "RS", pet)
    reference, mapping = read_labels(SUV_DRO / "DRO_0_0" / "mask" / "DRO_mask.nii.gz", pet)
    assert names == ["region_1"] and mapping == {"label_1": 1}
    a = contoured.array > 0
    b = reference.array > 0
    # README: the RTSTRUCT has 16 contoured slices, the mask 18; compare where both have something.
    common = a.any(axis=(1, 2)) & b.any(axis=(1, 2))
    assert common.sum() == 16
    dice = 2.0 * (a[common] & b[common]).sum() / (a[common].sum() + b[common].sum())
    assert dice >= 0.9


def _two_structures(path: Path, frame: str | None = None) -> Path:
    body = [_square(-40, -40, 80, z) for z in (0.0, 4.0, 8.0, 12.0)]
    kidney = [_square(-10, -10, 20, z) for z in (4.0, 8.0)]
    return write_rtstruct(path, {"Body": body, "kidney_left": kidney}, frame_of_reference_uid=frame)


def test_label_order_overlap_and_name_mapping(tmp_path: Path) -> None:
    rs = _two_structures(tmp_path / "rs.dcm")
    grid = _grid((5, 50, 50), (4.0, 2.0, 2.0), (-49.0, -49.0, 0.0))
    labels, names = read_rtstruct(rs, grid)
    assert names == ["Body", "kidney_left"]
    # The kidney, listed later, wins inside the body: 10×10 pixels on 2 slices.
    assert (labels.array == 2).sum() == 2 * 10 * 10
    assert (labels.array == 1).sum() == 4 * 40 * 40 - 2 * 10 * 10
    # Cohort labels: region name → value, names matched case-insensitively, absent regions simply missing.
    mapped, found = read_labels(rs, grid, names={"body": 13, "kidney_left": 1, "liver": 9})
    assert found == {"body": 13, "kidney_left": 1}
    assert set(np.unique(mapped.array)) == {0, 1, 13}
    assert mapped.meta["label_names"] == {13: "body", 1: "kidney_left"}
    masks = read_rtstruct_masks(rs, grid)
    assert masks["Body"].sum() == 4 * 40 * 40  # separate masks keep the overlap
    assert rtstruct_roi_names(rs) == ["Body", "kidney_left"]


def test_rtstruct_errors(tmp_path: Path) -> None:
    rs = _two_structures(tmp_path / "rs.dcm", frame="1.2.3.4")
    grid = _grid((5, 50, 50), (4.0, 2.0, 2.0), (-49.0, -49.0, 0.0))
    with pytest.raises(DicomError, match=r"rs\.dcm: no structure named 'spleen'"):
        read_rtstruct(rs, grid, names=["spleen"])
    other_frame = grid.with_array(grid.array, FrameOfReferenceUID="9.9.9")
    with pytest.raises(GeometryError, match="frame of reference"):
        read_rtstruct(rs, other_frame)
    tilted = Volume(grid.array, grid.spacing_zyx_mm, grid.origin_xyz_mm, _rotation_x(20.0), unit="label")
    with pytest.raises(GeometryError, match="not parallel"):
        read_rtstruct(rs, tilted)
    with pytest.raises(InputError, match="grid="):
        read_labels(rs)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(rs.read_bytes()[:400])
    with pytest.raises(DicomError, match=r"cut\.dcm"):
        read_labels(cut, grid)


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def test_nifti_labels_resampled_onto_a_grid(tmp_path: Path) -> None:
    import SimpleITK as sitk

    array = np.zeros((4, 6, 6), dtype=np.int16)
    array[1:3, 2:4, 2:4] = 2
    source = Volume(array, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), unit="label")
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(source.to_sitk(), str(path))
    same, found = read_labels(path)
    assert found == {"label_2": 2} and np.array_equal(same.array, array) and same.unit == "label"
    fine = _grid((8, 12, 12), (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))
    resampled, _ = read_labels(path, fine, names=["bone", "kidney_left"])
    # Nearest neighbour onto a grid twice as fine: each labelled voxel becomes 8, the value is kept.
    assert (resampled.array == 2).sum() == 8 * (array == 2).sum()
    assert resampled.meta["label_names"] == {2: "kidney_left"}
    with pytest.raises(InputError, match="not in the given names"):
        read_labels(path, names=["bone"])
    float_path = tmp_path / "prob.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 2, 2), 0.5, dtype=np.float32)), str(float_path))
    with pytest.raises(InputError, match="not whole numbers"):
        read_labels(float_path)


def test_seg_round_trip_through_read_labels(tmp_path: Path) -> None:
    from ludl.io import seg as seg_module  # highdicom is a dependency: a failed import must fail, not skip

    array = np.zeros((3, 8, 8), dtype=np.uint8)
    array[1, 2:5, 3:6] = 1
    array[2, 4:7, 1:3] = 2
    labels = Volume(array, (3.0, 2.0, 2.0), (10.0, -5.0, 40.0), unit="label", meta={"FrameOfReferenceUID": "1.2.3"})
    path = seg_module.write_seg(labels, tmp_path / "seg.dcm", labels, ["liver", "spleen"])
    shutil.copy(path, tmp_path / "copy.dcm")
    read, found = read_labels(path, labels)
    assert found == {"liver": 1, "spleen": 2}
    assert np.array_equal(read.array, array)
    with pytest.raises(DicomError, match="SEG series has 2 files"):
        read_labels(tmp_path, labels)  # a copy of the file: one series, two files, which one?
