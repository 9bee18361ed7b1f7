"""NIfTI read/write through SimpleITK, with the physical unit kept inside the file.

NIfTI has no field for a voxel unit (``xyzt_units`` covers space and time only). ludl stores it in the header's
80-character ``descrip`` field as ``ludl unit=<unit>`` — one file, nothing to lose on copy, and visible in any NIfTI
viewer's header dump. A NIfTI written elsewhere carries no such note: reading it needs ``unit=``.

``.nii.gz`` output is deterministic: identical volumes give byte-identical files (the gzip header's modification
time is forced to 0, and no file name is stored), so synthetic cohorts can be checked by hash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import GeometryError, InputError, UnitsError
from ludl.imaging.volume import UNITS, Volume
from ludl.io.atomic import atomic_write

__all__ = ["read_nifti", "write_nifti"]

_UNIT_NOTE = re.compile(r"ludl unit=(\S+)")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return suffix
    return ""


def _zero_gzip_mtime(path: Path) -> None:
    # gzip header bytes 4–7 hold MTIME (RFC 1952 §2.3); the CRC covers only the data, so patching is safe.
    with open(path, "r+b") as fh:
        header = fh.read(10)
        if len(header) == 10 and header[:2] == b"\x1f\x8b" and header[4:8] != b"\x00\x00\x00\x00":
            fh.seek(4)
            fh.write(b"\x00\x00\x00\x00")


def write_nifti(volume: Volume, path: str | os.PathLike[str], *, dtype: npt.DTypeLike | None = None) -> Path:
    """Write `volume` to a ``.nii`` or ``.nii.gz`` file atomically, its unit stored in the ``descrip`` field.

    Args:
        volume: image to write (bool masks are stored as uint8 and read back as bool for unit ``"mask"``).
        path: destination ending in ``.nii`` or ``.nii.gz``.
        dtype: optional storage type (e.g. ``np.float32`` to halve a float64 map's size).

    Returns:
        The destination path.
    """
    import SimpleITK as sitk

    dest = Path(path)
    suffix = _suffix(dest)
    if not suffix:
        raise InputError(f"NIfTI file name must end in .nii or .nii.gz, got {dest.name!r}")
    array = volume.array if dtype is None else volume.array.astype(dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    image = volume.with_array(array).to_sitk()
    image.SetMetaData("ITK_FileNotes", f"ludl unit={volume.unit}")
    with atomic_write(dest, suffix=suffix) as tmp:
        sitk.WriteImage(image, str(tmp), suffix == ".nii.gz")
        if suffix == ".nii.gz":
            _zero_gzip_mtime(tmp)
    return dest


def _stored_unit(image: Any) -> str | None:
    for key in ("descrip", "ITK_FileNotes"):
        if image.HasMetaDataKey(key):
            match = _UNIT_NOTE.search(image.GetMetaData(key))
            if match:
                return match.group(1)
    return None


def read_nifti(path: str | os.PathLike[str], unit: str | None = None) -> Volume:
    """Read a NIfTI file into a `Volume`, unit from the file's ludl note or from `unit`.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        unit: the voxel unit; required when the file was not written by ludl, and must agree with it otherwise.

    Raises:
        UnitsError: no unit known, an unknown unit, or `unit` contradicting the file.
        GeometryError: the file is not a 3D image.
    """
    import SimpleITK as sitk

    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"NIfTI file {src} does not exist")
    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("NiftiImageIO")
        reader.SetFileName(str(src))
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{src} could not be read as NIfTI ({exc.args[0].splitlines()[-1]}); check the file") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryError(
            f"{src} is a {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} component(s); "
            "ludl reads single-channel 3D volumes only (split 4D series into one file per frame)"
        )
    stored = _stored_unit(image)
    if stored is not None and stored not in UNITS:
        raise UnitsError(f"{src} declares unit {stored!r}, which ludl does not know; use one of {sorted(UNITS)}")
    if unit is not None and stored is not None and unit != stored:
        raise UnitsError(f"{src} holds {stored!r} but unit={unit!r} was requested; convert explicitly instead")
    chosen = stored if stored is not None else unit
    if chosen is None:
        raise UnitsError(f"{src} carries no ludl unit note; pass unit=… (one of {sorted(UNITS)}) to read it")
    volume = Volume.from_sitk(image, unit=chosen)
    if chosen == "mask":
        volume = volume.with_array(volume.array.astype(np.bool_))
    return volume
