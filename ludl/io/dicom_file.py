"""Reading one DICOM file: header without pixels (never raising on bad data) or fully, with a check for truncation.

Which files count as DICOM, which SOP classes are image series ludl stacks, and which are screenshots.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from ludl.errors import DicomError, LudlError
from ludl.io.dicom_tags import frame_count

_P = ParamSpec("_P")
_R = TypeVar("_R")

__all__ = [
    "NM_IMAGE_STORAGE",
    "SECONDARY_CAPTURE_SOP_CLASSES",
    "STACKABLE_SOP_CLASSES",
    "DicomHeader",
    "dicom_errors",
    "read_dicom_file",
    "read_header",
    "reads_dicom",
]

# Secondary Capture (single-frame and the multi-frame variants): screenshots, never quantitative images.
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"  # Nuclear Medicine Image Storage
# Classic single-frame image storage classes we stack into volumes (CT, MR, PET) plus NM (single- or multi-frame).
STACKABLE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
        NM_IMAGE_STORAGE,
    }
)
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Files that are certainly not DICOM: skipped without opening them.
_NON_DICOM_SUFFIXES = (
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".mha",
    ".mhd",
    ".txt",
    ".csv",
    ".json",
    ".yaml",
    ".yml",
    ".md",
    ".xml",
    ".pdf",
    ".png",
    ".jpg",
    ".jpeg",
    ".npy",
    ".npz",
    ".zip",
    ".gz",
    ".py",
)


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def dicom_errors(source: object) -> Iterator[None]:
    """Turn any failure but a `LudlError` while reading DICOM `source` into a `DicomError` naming it.

    pydicom converts values lazily and raises many types on corrupt data (ValueError, AttributeError, struct.error,
    NotImplementedError for an unknown VR, …) wherever a value is first used; to a user they all mean one thing.
    """
    try:
        yield
    except LudlError:
        raise
    except Exception as err:  # any failure on corrupt data; the cause stays chained for debugging
        raise DicomError(
            f"{source}: cannot read this DICOM data ({type(err).__name__}: {_short(err)}); the file is corrupt or "
            "not what ludl expects, re-export it"
        ) from err


def reads_dicom(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a reader whose first argument is the path: failures on corrupt data become `DicomError` (above)."""

    @functools.wraps(func)
    def reader(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        source = args[0] if args else kwargs.get("path", "DICOM input")
        with dicom_errors(source):
            return func(*args, **kwargs)

    return reader


def _pixel_data_problem(fp: Any, ds: Any, size: int) -> str | None:
    """Check that the (not loaded) pixel data element is complete; `fp` sits at its tag."""
    pos = fp.tell()
    fp.seek(pos)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    implicit = bool(getattr(tsyntax, "is_implicit_VR", False)) if tsyntax is not None else False
    little = bool(getattr(tsyntax, "is_little_endian", True)) if tsyntax is not None else True
    if tsyntax is not None and getattr(tsyntax, "is_deflated", False):
        return None  # deflated data sets cannot be checked without inflating them
    head = fp.read(12)
    if len(head) < 8:
        return "no pixel data (file truncated?)"
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    if (group, elem) not in ((0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)):
        return None  # stopped on something else (no pixel data element): handled by the caller
    if implicit:
        (length,) = struct.unpack(endian + "I", head[4:8])
        header = 8
    else:
        if len(head) < 12:
            return "pixel data element cut short (file truncated?)"
        (length,) = struct.unpack(endian + "I", head[8:12])
        header = 12
    if length == 0xFFFFFFFF:
        return None  # encapsulated (compressed) pixel data: length unknown until decoded
    if pos + header + length > size:
        return f"pixel data cut short: {size - pos - header} of {length} bytes present (file truncated?)"
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    expected = (rows * cols * frame_count(ds) * samples * bits + 7) // 8
    if (group, elem) == (0x7FE0, 0x0010) and length < expected:
        return f"pixel data holds {length} bytes, {expected} expected for {frame_count(ds)}×{rows}×{cols} (truncated?)"
    return None


def _convert_public(ds: Any) -> None:
    """Convert every public element's value (recursing into sequences); private elements ludl never reads are left
    raw, so a vendor's malformed private tag does not make a good image unreadable."""
    for tag in list(ds.keys()):
        if tag.is_private:
            continue
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                _convert_public(item)


@dataclass(frozen=True)
class DicomHeader:
    """One file's header (pixels not loaded) and any truncation found in it."""

    path: Path
    ds: Any
    problem: str | None  # a truncation found without loading pixels


def read_header(path: Path) -> tuple[DicomHeader | None, str | None, str | None]:
    """(header, skip note, problem). Exactly one of the three is meaningful."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = path.name.lower()
    if name.startswith(".") or name.endswith(_NON_DICOM_SUFFIXES):
        return None, f"{path}: skipped (not a DICOM file name)", None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fp:
            fp.seek(128)
            has_prefix = fp.read(4) == b"DICM"
            fp.seek(0)
            if has_prefix:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
            else:
                # Files without the 128-byte preamble (older exports, pydicom's rtstruct.dcm) are still DICOM if a
                # forced parse finds the identifying attributes; anything else is not DICOM and is skipped.
                try:
                    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
                except Exception:  # a forced parse of a non-DICOM file can fail in many ways
                    return None, f"{path}: skipped (not DICOM)", None
                if not ("SOPClassUID" in ds and ("SeriesInstanceUID" in ds or "Modality" in ds)):
                    return None, f"{path}: skipped (not DICOM)", None
            problem = _pixel_data_problem(fp, ds, size) if "Rows" in ds else None
            _convert_public(ds)  # convert every value now: pydicom raises on corrupt values only when used
    except InvalidDicomError:
        return None, f"{path}: skipped (not DICOM)", None
    except Exception as err:  # pydicom raises many types on corrupt headers; all mean "unreadable" to a user
        return None, None, f"{path}: unreadable or truncated DICOM file ({type(err).__name__}: {err})"
    sop = str(ds.get("SOPClassUID", ""))
    if sop == _DICOMDIR_SOP_CLASS:
        return None, f"{path}: skipped (DICOMDIR index file)", None
    if not sop or "SeriesInstanceUID" not in ds:
        return None, None, f"{path}: DICOM header incomplete (no SOPClassUID/SeriesInstanceUID: file truncated?)"
    if sop in STACKABLE_SOP_CLASSES and problem is None and "Rows" not in ds:
        problem = "image without Rows/Columns/pixel data (file truncated?)"
    return DicomHeader(path, ds, problem), None, None


def read_dicom_file(path: str | os.PathLike[str], *, pixels: bool = True) -> Any:
    """Read one DICOM file (header only when `pixels` is False); `DicomError` naming the file if it is broken."""
    import pydicom

    file = Path(path)
    if not file.is_file():
        raise DicomError(f"{file}: no such file; check the path")
    header, skip, problem = read_header(file)
    if header is None:
        raise DicomError(problem or skip or f"{file}: not a DICOM file")
    if header.problem is not None:
        raise DicomError(f"{file}: {header.problem}; re-export the file")
    if not pixels:
        return header.ds
    try:
        ds = pydicom.dcmread(file, force=True)
        if "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            _ = ds.pixel_array  # decode now so a broken file fails here, naming itself
    except Exception as err:  # pydicom raises many types on corrupt data; all mean the same to a user
        syntax = getattr(getattr(header.ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = f"transfer syntax {syntax.name}; " if syntax is not None and syntax.is_compressed else ""
        raise DicomError(
            f"{file}: cannot decode the pixel data ({hint}{type(err).__name__}: {err}); re-export it uncompressed "
            "or install a decoder plugin (pylibjpeg)"
        ) from err
    return ds
