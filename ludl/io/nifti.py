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
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import GeometryError, InputError, UnitsError
from ludl.imaging.volume import UNITS, Volume
from ludl.io.atomic import atomic_write

__all__ = ["MAX_NIFTI_VOXELS", "check_nifti_integrity", "read_nifti", "write_nifti"]

_UNIT_NOTE = re.compile(r"ludl unit=(\S+)")
# Largest image ludl reads (2**31 voxels = 8 GiB of float32, beyond any whole-body CT): a header claiming more is
# corrupt or hostile, refused before memory is allocated.
MAX_NIFTI_VOXELS = 2**31
_CHUNK_BYTES = 1 << 20
# NIfTI datatype code → numpy type of the voxel kinds that can hold NaN/inf (FLOAT32, FLOAT64)
_FLOAT_DATATYPES = {16: "f4", 64: "f8"}


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


@dataclass(frozen=True)
class _Layout:
    """Where a NIfTI file's voxels are and what they are, from its header."""

    offset: int  # first voxel byte
    n_bytes: int  # voxel data bytes
    float_dtype: np.dtype[Any] | None  # voxels that can hold NaN/inf


def _chunks(src: Path, gzipped: bool) -> Iterator[bytes]:
    """The file's (decompressed) bytes in chunks, to the end; a cut or corrupt gzip stream raises (length, CRC)."""
    with open(src, "rb") as fh:
        if not gzipped:
            while chunk := fh.read(_CHUNK_BYTES):
                yield chunk
            return
        inflater = zlib.decompressobj(wbits=31)
        try:
            while chunk := fh.read(_CHUNK_BYTES):
                data = chunk
                while data:
                    yield inflater.decompress(data, _CHUNK_BYTES)
                    data = inflater.unconsumed_tail
                    if inflater.eof:  # end of one gzip member; another may follow (concatenated .gz files)
                        data = data or inflater.unused_data
                        if data[:2] != b"\x1f\x8b":
                            return  # trailing bytes after the last member are ignored, as gzip does
                        inflater = zlib.decompressobj(wbits=31)
        except zlib.error as exc:
            raise InputError(f"{src}: corrupt gzip data ({exc}); the file is damaged, copy or export it again") from exc
        if not inflater.eof:
            raise InputError(
                f"{src}: the gzip stream ends early (unexpected end of file); the file is truncated, copy or export "
                "it again"
            )


def _layout(src: Path, header: bytes) -> _Layout:
    """Voxel offset, size and float type from a NIfTI-1/-2 header; refuses invalid and absurd sizes."""
    if len(header) < 348:
        raise InputError(
            f"{src}: {len(header)} bytes, shorter than a NIfTI header (348); the file is truncated or not a NIfTI "
            "image, copy or export it again"
        )
    for endian in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(endian + "i", header[:4])
        if sizeof_hdr == 348 and header[344:347] not in (b"n+1", b"ni1"):
            raise InputError(f"{src} has no NIfTI-1 magic (an Analyze file or a corrupt header); export it as NIfTI")
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            (offset,) = struct.unpack(endian + "f", header[108:112])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = float(struct.unpack(endian + "q", header[168:176])[0])
            break
    else:
        raise InputError(f"{src} has no NIfTI-1 or NIfTI-2 header (sizeof_hdr is not 348 or 540); check the file")
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]) or bitpix not in (8, 16, 32, 64, 128, 256):
        raise InputError(
            f"{src}: NIfTI header is invalid (dim {list(dims[: ndim + 1]) if 0 <= ndim <= 7 else dims}, "
            f"bitpix {bitpix}); the file is corrupt, export it again"
        )
    n_voxels = 1
    for d in dims[1 : ndim + 1]:
        n_voxels *= int(d)
    if n_voxels > MAX_NIFTI_VOXELS:
        raise InputError(
            f"{src}: the header claims {' × '.join(str(d) for d in dims[1 : ndim + 1])} = {n_voxels:.3g} voxels, "
            f"more than ludl reads ({MAX_NIFTI_VOXELS:.3g}); the header is corrupt, export the image again"
        )
    if not (offset >= 0 and offset < 2**40):  # also catches NaN
        raise InputError(f"{src}: NIfTI header has an invalid voxel offset {offset}; the file is corrupt")
    code = _FLOAT_DATATYPES.get(datatype)
    float_dtype = np.dtype(code).newbyteorder(endian) if code is not None and bitpix == 8 * int(code[1]) else None
    return _Layout(max(int(offset), 348), n_voxels * bitpix // 8, float_dtype)


def _header_bytes(src: Path, gzipped: bool) -> bytes:
    """The first 540 (decompressed) bytes: room for a NIfTI-1 or NIfTI-2 header."""
    head = b""
    for chunk in _chunks(src, gzipped):
        head += chunk
        if len(head) >= 540:
            break
    return head[:540]


def check_nifti_integrity(path: str | os.PathLike[str], *, allow_nonfinite: bool = False) -> None:
    """Check a NIfTI file whole: all the voxel data its header announces present, and no NaN/inf voxel.

    SimpleITK pads a cut ``.nii.gz`` with zeros and reads NaN/inf as 0, both without a word; this check reads the
    (decompressed) stream to its end and turns either into an error before any image is built.

    Raises:
        InputError: naming the file, for a corrupt or truncated gzip stream, an invalid header, a header claiming an
            absurd size, fewer bytes than the header announces, or NaN/inf voxel values (unless `allow_nonfinite`).
    """
    src = Path(path)
    with open(src, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    layout = _layout(src, _header_bytes(src, gzipped))
    position, n_nan, n_inf, carry = 0, 0, 0, b""
    end = layout.offset + layout.n_bytes
    for chunk in _chunks(src, gzipped):
        lo, hi = max(layout.offset - position, 0), min(end - position, len(chunk))
        position += len(chunk)
        if layout.float_dtype is None or allow_nonfinite or hi <= lo:
            continue
        data = carry + chunk[lo:hi]
        usable = len(data) - len(data) % layout.float_dtype.itemsize
        values = np.frombuffer(data[:usable], dtype=layout.float_dtype)
        n_nan += int(np.count_nonzero(np.isnan(values)))
        n_inf += int(np.count_nonzero(np.isinf(values)))
        carry = data[usable:]
    if position < end:
        kind = "decompressed data" if gzipped else "file"
        raise InputError(
            f"{src}: the {kind} holds {position} bytes but its header announces {end}; the file is truncated, "
            "copy or export it again"
        )
    if n_nan or n_inf:
        raise InputError(
            f"{src}: {n_nan} NaN and {n_inf} infinite voxel value(s); replace them in the export (SimpleITK would "
            "read them as 0, ludl never guesses a value)"
        )


def _stored_unit(image: Any) -> str | None:
    for key in ("descrip", "ITK_FileNotes"):
        if image.HasMetaDataKey(key):
            match = _UNIT_NOTE.search(image.GetMetaData(key))
            if match:
                return match.group(1)
    return None


def read_nifti(path: str | os.PathLike[str], unit: str | None = None, *, allow_nonfinite: bool = False) -> Volume:
    """Read a NIfTI file into a `Volume`, unit from the file's ludl note or from `unit`.

    The file is checked whole first (`check_nifti_integrity`): a truncated or corrupt file is an error, never an
    image padded with zeros.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        unit: the voxel unit; required when the file was not written by ludl, and must agree with it otherwise.
        allow_nonfinite: read NaN/inf voxels as 0 instead of refusing the file (PET exports mark voxels outside
            the field of view so).

    Raises:
        UnitsError: no unit known, an unknown unit, or `unit` contradicting the file.
        GeometryError: the file is not a 3D image.
        InputError: the file is unreadable, truncated or corrupt, or holds NaN/inf (unless allowed).
    """
    import SimpleITK as sitk

    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"NIfTI file {src} does not exist")
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(src))
    try:
        reader.ReadImageInformation()  # header only: the cheap checks come before reading the whole file
    except RuntimeError as exc:
        raise InputError(f"{src} could not be read as NIfTI ({_last_line(exc)}); check the file") from exc
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise GeometryError(
            f"{src} is a {reader.GetDimension()}D image with {reader.GetNumberOfComponents()} component(s); "
            "ludl reads single-channel 3D volumes only (split 4D series into one file per frame)"
        )
    stored = _stored_unit(reader)
    if stored is not None and stored not in UNITS:
        raise UnitsError(f"{src} declares unit {stored!r}, which ludl does not know; use one of {sorted(UNITS)}")
    if unit is not None and stored is not None and unit != stored:
        raise UnitsError(f"{src} holds {stored!r} but unit={unit!r} was requested; convert explicitly instead")
    chosen = stored if stored is not None else unit
    if chosen is None:
        raise UnitsError(f"{src} carries no ludl unit note; pass unit=… (one of {sorted(UNITS)}) to read it")
    check_nifti_integrity(src, allow_nonfinite=allow_nonfinite)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{src} could not be read as NIfTI ({_last_line(exc)}); check the file") from exc
    geometry = (*image.GetSpacing(), *image.GetOrigin(), *image.GetDirection())
    if not all(np.isfinite(geometry)) or min(image.GetSpacing()) <= 0:
        raise GeometryError(
            f"{src}: the header's geometry is not finite or not positive (spacing {image.GetSpacing()}, origin "
            f"{image.GetOrigin()}); fix the header (pixdim, qform/sform)"
        )
    volume = Volume.from_sitk(image, unit=chosen)
    if chosen == "mask":
        volume = volume.with_array(volume.array.astype(np.bool_))
    return volume


def _last_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
