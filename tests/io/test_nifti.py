"""NIfTI round trips (unit in ``descrip``), deterministic .nii.gz, raw-header geometry, and atomic writes."""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from ludl.errors import GeometryError, InputError, UnitsError
from ludl.imaging import Volume
from ludl.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from ludl.io.nifti import read_nifti, write_nifti


@pytest.fixture
def oblique_dose() -> Volume:
    direction = Rotation.from_euler("xyz", [12.0, -7.0, 25.0], degrees=True).as_matrix()
    array = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    return Volume(array, (3.0, 2.0, 1.5), origin_xyz_mm=(-10.0, 20.0, 5.5), direction=direction, unit="Gy")


def _raw_header(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data)[:348] if data[:2] == b"\x1f\x8b" else data[:348]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_values_geometry_unit(tmp_path: Path, oblique_dose: Volume, suffix: str) -> None:
    path = write_nifti(oblique_dose, tmp_path / f"dose{suffix}")
    back = read_nifti(path)
    assert back.unit == "Gy" and back.same_grid(oblique_dose)
    np.testing.assert_array_equal(back.array, oblique_dose.array)
    # Header read by hand (NIfTI-1: descrip at byte 148, sform rows at 280/296/312, in RAS = LPS with x, y negated).
    header = _raw_header(path)
    assert header[148:228].rstrip(b"\0").decode() == "ludl unit=Gy"
    srow = np.array(struct.unpack("<12f", header[280:328])).reshape(3, 4)
    lps_affine = np.diag([-1.0, -1.0, 1.0]) @ srow
    np.testing.assert_allclose(lps_affine, oblique_dose.affine_xyz[:3], atol=1e-4)


def test_labels_and_masks_keep_their_types(tmp_path: Path) -> None:
    labels = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (1.0, 1.0, 1.0), unit="label")
    assert read_nifti(write_nifti(labels, tmp_path / "l.nii.gz")).array.dtype == np.int16
    mask = labels.with_array(labels.array % 2 == 0, unit="mask")
    back = read_nifti(write_nifti(mask, tmp_path / "m.nii.gz"))
    assert back.array.dtype == np.bool_ and (back.array == mask.array).all()


def test_compressed_output_is_byte_identical(tmp_path: Path, oblique_dose: Volume) -> None:
    first = write_nifti(oblique_dose, tmp_path / "a.nii.gz").read_bytes()
    time.sleep(1.1)  # a gzip MTIME would differ by now
    second = write_nifti(oblique_dose, tmp_path / "b.nii.gz").read_bytes()
    assert first == second
    assert first[4:8] == b"\0\0\0\0"  # RFC 1952 MTIME field


def test_foreign_file_needs_unit(tmp_path: Path) -> None:
    path = tmp_path / "foreign.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), dtype=np.float32)), str(path))
    with pytest.raises(UnitsError, match="unit="):
        read_nifti(path)
    assert read_nifti(path, unit="Bq/mL").unit == "Bq/mL"


def test_unit_conflict_and_bad_inputs(tmp_path: Path, oblique_dose: Volume) -> None:
    path = write_nifti(oblique_dose, tmp_path / "d.nii")
    with pytest.raises(UnitsError, match="Gy"):
        read_nifti(path, unit="MBq*h/mL")
    with pytest.raises(InputError, match=r"\.nii"):
        write_nifti(oblique_dose, tmp_path / "d.mha")
    four_d = tmp_path / "4d.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 2, 3, 4), dtype=np.float32)), str(four_d))
    with pytest.raises(GeometryError, match="3D"):
        read_nifti(four_d, unit="1")


# -- atomic writes ----------------------------------------------------------------------------------------------------
def test_atomic_write_replaces_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with atomic_write(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        tmp.write_text("new")
        assert dest.read_text() == "old"  # nothing visible until the context exits
    assert dest.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "t.txt", "é")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" and (tmp_path / "t.txt").read_text("utf-8") == "é"


def test_atomic_write_failure_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(dest) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    dest.write_text("keep")
    with pytest.raises(RuntimeError), atomic_write(dest) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert dest.read_text() == "keep" and [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_atomic_write_needs_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="create it first"), atomic_write(tmp_path / "missing" / "f.txt"):
        pass


# ------------------------------------------------------------------------------------------- integrity (issue 14)


def _gz_volume(tmp_path: Path) -> Path:
    array = np.random.default_rng(1).random((20, 64, 64)).astype(np.float32)  # incompressible: the cut hits voxels
    return write_nifti(Volume(array, (4.8, 4.8, 4.8), unit="Bq/mL"), tmp_path / "spect.nii.gz")


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = _gz_volume(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 3])  # SimpleITK alone would pad the missing two thirds with zeros
    with pytest.raises(InputError, match=r"cut\.nii\.gz.*truncated"):
        read_nifti(cut)


def test_corrupt_gzip_is_an_error(tmp_path: Path) -> None:
    data = bytearray(_gz_volume(tmp_path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the stream's CRC-32 (RFC 1952) no longer matches
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"bad\.nii\.gz"):
        read_nifti(bad)


def test_truncated_plain_nifti_and_a_header_claiming_huge_sizes(tmp_path: Path) -> None:
    volume = Volume(np.ones((4, 5, 6), dtype=np.float32), (1.0, 1.0, 1.0), unit="HU")
    path = write_nifti(volume, tmp_path / "ct.nii")
    data = path.read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:-8])  # two voxels of 4 bytes short
    # NIfTI-1 single file: 348-byte header + 4-byte extension flag = vox_offset 352, then 4·5·6 float32 voxels
    expected = 352 + 4 * 5 * 6 * 4
    with pytest.raises(InputError, match=rf"holds {expected - 8} bytes but its header announces {expected}"):
        read_nifti(tmp_path / "cut.nii")
    # NIfTI-1 dim[3] (int16 at byte 46): 30000 slices with the 5×6 voxels of data present → refused, nothing allocated
    huge = bytearray(data)
    huge[46:48] = struct.pack("<h", 30000)
    (tmp_path / "huge.nii").write_bytes(bytes(huge))
    with pytest.raises(InputError, match=r"header announces"):
        read_nifti(tmp_path / "huge.nii")
    huge[42:48] = struct.pack("<3h", 32767, 32767, 32767)  # 3.5e13 voxels: beyond anything ludl reads
    (tmp_path / "absurd.nii").write_bytes(bytes(huge))
    with pytest.raises(InputError, match=r"more than ludl reads"):
        read_nifti(tmp_path / "absurd.nii")


def test_concatenated_gzip_members_are_read_whole(tmp_path: Path) -> None:
    path = _gz_volume(tmp_path)
    raw = gzip.decompress(path.read_bytes())
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # what `cat a.gz b.gz` gives
    np.testing.assert_array_equal(read_nifti(two).array, read_nifti(path).array)
