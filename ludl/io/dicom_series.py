"""Find, group, sort and check DICOM image series in a folder, reading headers only.

`inspect_dicom_folder` never raises on bad data: it returns a `FolderReport` whose series summaries list every
problem found (each naming the file), so the cohort validator can report them all at once. `load_series` is the
strict twin used by the readers: it raises on the first problem and returns the datasets sorted along the slice
normal with their `SeriesGeometry`.

Geometry (DICOM PS3.3 C.7.6.2.1.1): ImageOrientationPatient holds the row direction (towards increasing column
index, our x axis) then the column direction (increasing row index, y); the slice normal is their cross product;
PixelSpacing is (row spacing = y, column spacing = x). Slices are sorted by the projection of ImagePositionPatient
on the normal, so the output z axis always runs along +normal (a right-handed direction matrix).
Multi-frame NM (RECON TOMO, PS3.3 C.8.4.15): position and orientation live in DetectorInformationSequence, frame
k lies at IPP + (SliceVector[k] - SliceVector[0]) · SpacingBetweenSlices · normal, and SpacingBetweenSlices is
signed (negative: slices stacked against the normal).
"""

from __future__ import annotations

import datetime as dt
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, GeometryError, LudlError
from ludl.imaging.volume import Volume

__all__ = [
    "SECONDARY_CAPTURE_SOP_CLASSES",
    "FolderReport",
    "SeriesGeometry",
    "SeriesSummary",
    "inspect_dicom_folder",
    "link_meta",
    "load_series",
    "multiframe_geometry",
    "parse_dicom_datetime",
    "read_dicom_file",
    "select_series",
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
# Classic single-frame image storage classes we stack into volumes (CT, MR, PET) plus NM (single- or multi-frame).
_STACKABLE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
        "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
    }
)
_NM_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.20"
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
_SLICE_VECTOR_TAG = 0x00540080
# Tolerances (mm unless stated): DS values carry ≤ 16 characters, so 1e-3 mm is far above rounding noise.
_DUPLICATE_MM = 1e-3
_GAP_FACTOR = 1.5  # a step > 1.5 × the median step means at least one missing slice
_UNEVEN_REL = 0.01  # steps differing by > 1 % from the median need resampling
_OFF_NORMAL_MM = 0.01  # slice origins off the normal line (gantry tilt, shear)
_ORIENTATION_TOL = 1e-4


# -- small header helpers ---------------------------------------------------------------------------------------
def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes, int, float)):
            return [float(value)]
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _detector_item(ds: Any) -> Any | None:
    seq = ds.get("DetectorInformationSequence")
    if seq:
        return seq[0]
    return None


def _orientation(ds: Any) -> list[float] | None:
    """ImageOrientationPatient: NM's DetectorInformationSequence (where the NM IOD puts it) first, then top level."""
    item = _detector_item(ds)
    iop = _floats(item.get("ImageOrientationPatient")) if item is not None else None
    if iop is None:
        iop = _floats(ds.get("ImageOrientationPatient"))
    return iop if iop is not None and len(iop) == 6 else None


def _position(ds: Any) -> list[float] | None:
    """ImagePositionPatient: NM's DetectorInformationSequence first, then the top level."""
    item = _detector_item(ds)
    ipp = _floats(item.get("ImagePositionPatient")) if item is not None else None
    if ipp is None:
        ipp = _floats(ds.get("ImagePositionPatient"))
    return ipp if ipp is not None and len(ipp) == 3 else None


def _n_frames(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _direction(iop: Sequence[float]) -> npt.NDArray[np.float64]:
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:], dtype=np.float64)
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    return np.stack([row, col, np.cross(row, col)], axis=1)


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else "unknown SOP class"


def parse_dicom_datetime(date: Any = None, time: Any = None, datetime: Any = None) -> dt.datetime | None:
    """Naive datetime from a DICOM DT, or a DA plus a TM; None when the values are missing or malformed.

    Args:
        date: DA value ``YYYYMMDD``.
        time: TM value ``HHMMSS.FFFFFF`` (components after HH optional).
        datetime: DT value ``YYYYMMDDHHMMSS.FFFFFF&ZZXX`` (takes precedence; a UTC offset is dropped).
    """

    def _time_part(text: str) -> dt.timedelta | None:
        text = text.strip().replace(":", "")
        if not text:
            return None
        whole, _, frac = text.partition(".")
        if not whole.isdigit() or len(whole) not in (2, 4, 6):
            return None
        h, m, s = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
        micro = round(float("0." + frac) * 1e6) if frac.isdigit() else 0
        return dt.timedelta(hours=h, minutes=m, seconds=s, microseconds=micro)

    if datetime is not None and str(datetime).strip():
        text = str(datetime).strip()
        for sign in ("+", "-"):  # drop a UTC offset: DICOM TM values it is compared with carry none
            if sign in text[8:]:
                text = text[: 8 + text[8:].index(sign)]
        day = text[:8]
        rest = text[8:]
        if len(day) != 8 or not day.isdigit():
            return None
        base = dt.datetime(int(day[:4]), int(day[4:6]), int(day[6:8]))
        offset = _time_part(rest) if rest else dt.timedelta(0)
        return None if offset is None else base + offset
    if date is None or time is None:
        return None
    day = str(date).strip().replace(".", "")
    if len(day) != 8 or not day.isdigit():
        return None
    offset = _time_part(str(time))
    if offset is None:
        return None
    return dt.datetime(int(day[:4]), int(day[4:6]), int(day[6:8])) + offset


def link_meta(ds: Any) -> dict[str, str]:
    """Attributes that tie derived objects (RT Dose, SEG) to this image, under their DICOM keywords, for Volume.meta."""
    meta = {"Modality": str(ds.get("Modality", "") or "")}
    for key in ("FrameOfReferenceUID", "StudyInstanceUID", "PositionReferenceIndicator"):
        value = ds.get(key)
        if value not in (None, ""):
            meta[key] = str(value)
    return meta


# -- reading one file ---------------------------------------------------------------------------------------------
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
    expected = (rows * cols * _n_frames(ds) * samples * bits + 7) // 8
    if (group, elem) == (0x7FE0, 0x0010) and length < expected:
        return f"pixel data holds {length} bytes, {expected} expected for {_n_frames(ds)}×{rows}×{cols} (truncated?)"
    return None


@dataclass(frozen=True)
class _Header:
    path: Path
    ds: Any
    problem: str | None  # a truncation found without loading pixels


def _read_header(path: Path) -> tuple[_Header | None, str | None, str | None]:
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
    except InvalidDicomError:
        return None, f"{path}: skipped (not DICOM)", None
    except Exception as err:  # pydicom raises many types on corrupt headers; all mean "unreadable" to a user
        return None, None, f"{path}: unreadable or truncated DICOM file ({type(err).__name__}: {err})"
    sop = str(ds.get("SOPClassUID", ""))
    if sop == _DICOMDIR_SOP_CLASS:
        return None, f"{path}: skipped (DICOMDIR index file)", None
    if not sop or "SeriesInstanceUID" not in ds:
        return None, None, f"{path}: DICOM header incomplete (no SOPClassUID/SeriesInstanceUID: file truncated?)"
    if sop in _STACKABLE_SOP_CLASSES and problem is None and "Rows" not in ds:
        problem = "image without Rows/Columns/pixel data (file truncated?)"
    return _Header(path, ds, problem), None, None


def read_dicom_file(path: str | os.PathLike[str], *, pixels: bool = True) -> Any:
    """Read one DICOM file (header only when `pixels` is False); `DicomError` naming the file if it is broken."""
    import pydicom

    file = Path(path)
    if not file.is_file():
        raise DicomError(f"{file}: no such file; check the path")
    header, skip, problem = _read_header(file)
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


# -- geometry -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SeriesGeometry:
    """Geometry of a sorted series: the z axis runs along +normal.

    Attributes:
        shape_zyx: array shape (slices, rows, columns).
        spacing_zyx_mm: voxel size (slice step, row spacing, column spacing) in mm.
        origin_xyz_mm: LPS centre of the first voxel of the first sorted slice.
        direction: ITK 3×3 direction matrix (columns: row direction, column direction, normal).
        frame_order: for a multi-frame file, the frame numbers (0-based) in sorted slice order; None otherwise.
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: npt.NDArray[np.float64]
    frame_order: tuple[int, ...] | None = None

    def to_volume(self, array: npt.ArrayLike, unit: str, meta: dict[str, Any] | None = None) -> Volume:
        """A `Volume` holding `array` (z, y, x) on this geometry."""
        values = np.asarray(array)
        if tuple(values.shape) != self.shape_zyx:
            raise GeometryError(f"array shape {values.shape} does not match the series geometry {self.shape_zyx}")
        return Volume(values, self.spacing_zyx_mm, self.origin_xyz_mm, self.direction, unit=unit, meta=meta or {})


def multiframe_geometry(ds: Any, source: str | os.PathLike[str] = "") -> SeriesGeometry:
    """Geometry of a multi-frame NM reconstruction (RECON TOMO); `GeometryError` naming `source` if incomplete."""
    name = str(source) or "multi-frame DICOM file"
    detectors = ds.get("DetectorInformationSequence") or []
    if len(detectors) > 1:
        placements = {
            tuple((_floats(d.get("ImagePositionPatient")) or []) + (_floats(d.get("ImageOrientationPatient")) or []))
            for d in detectors
        }
        if len(placements) > 1:
            raise GeometryError(
                f"{name}: {len(detectors)} DetectorInformationSequence items place the volume differently; a "
                "reconstruction has one placement: export each reconstruction (bed) as its own file"
            )
    iop = _orientation(ds)
    ipp = _position(ds)
    spacing_2d = _floats(ds.get("PixelSpacing"))
    required = (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp), ("PixelSpacing", spacing_2d))
    missing = [tag for tag, value in required if value is None]
    n_frames = _n_frames(ds)
    step = _floats(ds.get("SpacingBetweenSlices"))
    if n_frames > 1 and not step:
        missing.append("SpacingBetweenSlices")
    if missing:
        raise GeometryError(
            f"{name}: geometry incomplete, missing {', '.join(missing)} (looked at the top level and in "
            "DetectorInformationSequence); ludl never assumes a default spacing or position: re-export the "
            "reconstruction with full geometry"
        )
    assert iop is not None and ipp is not None and spacing_2d is not None  # for the type checker; checked above
    if len(spacing_2d) != 2 or min(spacing_2d) <= 0:
        raise GeometryError(f"{name}: PixelSpacing {spacing_2d} is not two positive numbers")
    if n_frames == 1 and not step:
        thickness = _floats(ds.get("SliceThickness"))
        step = thickness
        if not step:
            raise GeometryError(f"{name}: single frame without SpacingBetweenSlices or SliceThickness")
    assert step is not None
    step_mm = float(step[0])
    if step_mm == 0.0 or not np.isfinite(step_mm):
        raise GeometryError(f"{name}: SpacingBetweenSlices is {step_mm}; it must be a non-zero distance in mm")
    direction = _direction(iop)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise GeometryError(f"{name}: ImageOrientationPatient {iop} is not two orthogonal unit vectors")
    pointers = ds.get("FrameIncrementPointer")
    pointer_list = [] if pointers is None else (list(pointers) if isinstance(pointers, Sequence) else [pointers])
    pointer_ints = [int(p) for p in pointer_list]
    if n_frames > 1 and pointer_ints and pointer_ints != [_SLICE_VECTOR_TAG]:
        raise GeometryError(
            f"{name}: frames step along {[f'({p >> 16:04X},{p & 0xFFFF:04X})' for p in pointer_ints]}, not "
            "only the Slice Vector (0054,0080): this is not a single reconstructed volume (gated, dynamic or "
            "multi-window data); export one ungated reconstruction"
        )
    slice_vector = ds.get("SliceVector")
    if slice_vector is not None and len(slice_vector) == n_frames:
        slices = np.asarray([int(v) for v in slice_vector], dtype=np.int64) - 1
    elif slice_vector is not None:
        raise GeometryError(f"{name}: SliceVector has {len(slice_vector)} entries for {n_frames} frames")
    else:
        slices = np.arange(n_frames, dtype=np.int64)
    if len(np.unique(slices)) != n_frames:
        raise GeometryError(f"{name}: SliceVector repeats slice numbers; frames would overlap")
    normal = direction[:, 2]
    # Frame k lies (slice_k - slice_0) steps of the signed spacing along the normal from the stated position.
    offsets_mm = (slices - slices[0]).astype(np.float64) * step_mm
    order = np.argsort(offsets_mm, kind="stable")
    sorted_offsets = offsets_mm[order]
    if n_frames > 1:
        steps = np.diff(sorted_offsets)
        if not np.allclose(steps, abs(step_mm), rtol=1e-6, atol=1e-6):
            raise GeometryError(f"{name}: SliceVector leaves gaps between slices (steps {np.unique(steps)} mm)")
    origin = np.asarray(ipp, dtype=np.float64) + sorted_offsets[0] * normal
    rows, cols = int(ds.Rows), int(ds.Columns)
    return SeriesGeometry(
        shape_zyx=(n_frames, rows, cols),
        spacing_zyx_mm=(abs(step_mm), float(spacing_2d[0]), float(spacing_2d[1])),
        origin_xyz_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        frame_order=tuple(int(i) for i in order),
    )


def _stack_geometry(
    headers: Sequence[_Header],
) -> tuple[list[_Header], SeriesGeometry | None, list[tuple[type[LudlError], str]]]:
    """Sort single-frame headers along the normal and check the stack; never raises."""
    problems: list[tuple[type[LudlError], str]] = []
    first = headers[0]
    iop0 = _orientation(first.ds)
    if iop0 is None:
        problems.append((GeometryError, f"{first.path}: no ImageOrientationPatient; cannot place the slices"))
        return list(headers), None, problems
    for h in headers:
        iop = _orientation(h.ds)
        if iop is None or not np.allclose(iop, iop0, atol=_ORIENTATION_TOL):
            problems.append(
                (GeometryError, f"{h.path}: orientation {iop} differs from {iop0} in {first.path}; split the series")
            )
            return list(headers), None, problems
    size0 = (first.ds.get("Rows"), first.ds.get("Columns"))
    spacing0 = _floats(first.ds.get("PixelSpacing"))
    if spacing0 is None or len(spacing0) != 2 or min(spacing0) <= 0:
        problems.append((GeometryError, f"{first.path}: PixelSpacing missing or invalid ({spacing0})"))
        return list(headers), None, problems
    for h in headers:
        if (h.ds.get("Rows"), h.ds.get("Columns")) != size0:
            problems.append(
                (
                    GeometryError,
                    f"{h.path}: image size {h.ds.get('Rows')}×{h.ds.get('Columns')} differs from "
                    f"{size0[0]}×{size0[1]} in {first.path}",
                )
            )
            return list(headers), None, problems
        sp = _floats(h.ds.get("PixelSpacing"))
        if sp is None or not np.allclose(sp, spacing0, rtol=1e-4, atol=1e-5):
            problems.append((GeometryError, f"{h.path}: PixelSpacing {sp} differs from {spacing0} in {first.path}"))
            return list(headers), None, problems
    positions = []
    for h in headers:
        ipp = _position(h.ds)
        if ipp is None:
            problems.append((GeometryError, f"{h.path}: no ImagePositionPatient; cannot place the slice"))
            return list(headers), None, problems
        positions.append(ipp)
    direction = _direction(iop0)
    normal = direction[:, 2]
    pos = np.asarray(positions, dtype=np.float64)
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    sorted_headers = [headers[i] for i in order]
    pos, along = pos[order], along[order]
    n = len(sorted_headers)
    if n == 1:
        step_values = _floats(first.ds.get("SpacingBetweenSlices")) or _floats(first.ds.get("SliceThickness"))
        if not step_values or step_values[0] <= 0:
            problems.append(
                (GeometryError, f"{first.path}: single slice without SpacingBetweenSlices or SliceThickness")
            )
            return sorted_headers, None, problems
        step = abs(float(step_values[0]))
    else:
        steps = np.diff(along)
        for i in np.nonzero(steps < _DUPLICATE_MM)[0]:
            problems.append(
                (
                    DicomError,
                    f"{sorted_headers[i + 1].path}: duplicate slice position {along[i + 1]:.3f} mm along the normal "
                    f"(same as {sorted_headers[i].path}); remove the duplicate or split the series",
                )
            )
        real = steps[steps >= _DUPLICATE_MM]
        if real.size == 0:
            return sorted_headers, None, problems
        step = float(np.median(real))
        for i in np.nonzero(steps > _GAP_FACTOR * step)[0]:
            missing = round(steps[i] / step) - 1
            problems.append(
                (
                    DicomError,
                    f"{sorted_headers[i].path} → {sorted_headers[i + 1].path}: gap of {steps[i]:.3f} mm where "
                    f"slices are {step:.3f} mm apart (about {missing} slice(s) missing); re-export the full series",
                )
            )
        uneven = (steps >= _DUPLICATE_MM) & (steps <= _GAP_FACTOR * step) & (np.abs(steps - step) > _UNEVEN_REL * step)
        for i in np.nonzero(uneven)[0]:
            problems.append(
                (
                    GeometryError,
                    f"{sorted_headers[i + 1].path}: slice step {steps[i]:.4f} mm differs from the median "
                    f"{step:.4f} mm; the series is unevenly spaced and needs resampling before use",
                )
            )
        off = pos - pos[0] - np.outer(along - along[0], normal)
        off_mm = np.linalg.norm(off, axis=1)
        if off_mm.max() > _OFF_NORMAL_MM:
            worst = int(np.argmax(off_mm))
            problems.append(
                (
                    GeometryError,
                    f"{sorted_headers[worst].path}: slice origin lies {off_mm[worst]:.3f} mm off the slice normal "
                    "(gantry tilt or sheared stack); resample to an orthogonal grid first",
                )
            )
    geometry = SeriesGeometry(
        shape_zyx=(n, int(size0[0]), int(size0[1])),
        spacing_zyx_mm=(step, float(spacing0[0]), float(spacing0[1])),
        origin_xyz_mm=(float(pos[0, 0]), float(pos[0, 1]), float(pos[0, 2])),
        direction=direction,
    )
    return sorted_headers, geometry, problems


# -- series summaries ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SeriesSummary:
    """What the headers of one series say, and every problem found in them.

    Attributes:
        series_uid: SeriesInstanceUID.
        modality: Modality (CT, PT, NM, RTSTRUCT, SEG, RTDOSE, …).
        sop_class_uid: SOP Class UID of the first file; `sop_class` its name.
        files: the files, sorted along the slice normal where geometry allows.
        n_files: number of files; `n_frames` total frames.
        shape: (z, y, x) of the assembled volume, when known.
        spacing_zyx_mm: voxel size in mm, when known.
        orientation: ImageOrientationPatient (6 direction cosines), when known.
        origin_xyz_mm: LPS centre of the first voxel, when known.
        frame_of_reference_uid, study_uid, description: from the headers.
        instance_range: smallest and largest InstanceNumber, when all files carry one.
        problems: one message per problem, each naming a file; empty when the series is usable.
        notes: facts worth reporting that are not errors (e.g. instance numbers not starting at 1).
    """

    series_uid: str
    modality: str
    sop_class_uid: str
    sop_class: str
    files: tuple[Path, ...]
    n_files: int
    n_frames: int
    shape: tuple[int, int, int] | None
    spacing_zyx_mm: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    origin_xyz_mm: tuple[float, float, float] | None
    frame_of_reference_uid: str | None
    study_uid: str | None
    description: str
    instance_range: tuple[int, int] | None
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    _error_types: tuple[type[LudlError], ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def raise_if_problems(self) -> None:
        """Raise the first problem as its error type (others are counted in the message)."""
        if not self.problems:
            return
        error = self._error_types[0] if self._error_types else DicomError
        more = f" (and {len(self.problems) - 1} more problem(s): run `ludl validate` to list them)"
        raise error(self.problems[0] + (more if len(self.problems) > 1 else ""))


@dataclass(frozen=True, eq=False)
class FolderReport:
    """Result of `inspect_dicom_folder`: the series found, the files skipped, and every problem.

    Attributes:
        path: the folder (or file) inspected.
        series: one summary per SeriesInstanceUID, ordered by modality then description.
        skipped: notes about non-DICOM files that were ignored.
        problems: folder-level problems (unreadable files, several series of one modality), each naming files.
    """

    path: Path
    series: tuple[SeriesSummary, ...]
    skipped: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def all_problems(self) -> tuple[str, ...]:
        """Folder problems followed by every series' problems."""
        return self.problems + tuple(p for s in self.series for p in s.problems)

    @property
    def ok(self) -> bool:
        """True when neither the folder nor any series has a problem."""
        return not self.all_problems


def _gather_files(root: Path, recursive: bool) -> list[Path]:
    if root.is_file():
        return [root]
    if recursive:
        files: list[Path] = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files.extend(Path(folder) / n for n in sorted(names))
        return files
    return sorted(p for p in root.iterdir() if p.is_file())


def _summarise(uid: str, headers: list[_Header]) -> SeriesSummary:
    first = headers[0].ds
    modality = str(first.get("Modality", "") or "")
    sop = str(first.get("SOPClassUID", ""))
    errors: list[tuple[type[LudlError], str]] = []
    notes: list[str] = []
    for h in headers:
        if h.problem is not None:
            errors.append((DicomError, f"{h.path}: {h.problem}; re-export the file"))
        h_sop = str(h.ds.get("SOPClassUID", ""))
        if h_sop != sop:
            errors.append(
                (DicomError, f"{h.path}: SOP class {_sop_class_name(h_sop)} differs from {_sop_class_name(sop)}")
            )
    shape = spacing = origin = orientation = None
    files = [h.path for h in headers]
    n_frames = sum(_n_frames(h.ds) for h in headers)
    multi = any(_n_frames(h.ds) > 1 for h in headers) or (sop == _NM_SOP_CLASS and len(headers) == 1)
    if sop in SECONDARY_CAPTURE_SOP_CLASSES:
        # Modality may still say NM/PT/CT (pydicom's "NM" test files): flag it so it cannot pass for an image.
        errors.append(
            (
                DicomError,
                f"{headers[0].path}: Secondary Capture image (Modality {modality or 'unset'}) — a screenshot without "
                "quantitative values or 3D geometry; export the original image series",
            )
        )
    elif sop in _STACKABLE_SOP_CLASSES and multi:
        geometries = []
        for h in headers:
            try:
                geometries.append(multiframe_geometry(h.ds, h.path))
            except GeometryError as err:
                errors.append((GeometryError, str(err)))
            except (AttributeError, TypeError, ValueError) as err:
                errors.append((DicomError, f"{h.path}: malformed geometry attributes ({err})"))
        if len(geometries) == len(headers) and geometries:
            if len(geometries) > 1:
                normal = geometries[0].direction[:, 2]
                order = np.argsort([np.dot(g.origin_xyz_mm, normal) for g in geometries], kind="stable")
                geometries = [geometries[i] for i in order]
                files = [files[i] for i in order]
                notes.append(f"{len(headers)} multi-frame files in one series (bed positions?)")
            g = geometries[0]
            if all(x.shape_zyx == g.shape_zyx for x in geometries):
                shape = g.shape_zyx
            spacing, origin = g.spacing_zyx_mm, g.origin_xyz_mm
            orientation = tuple(float(v) for v in np.concatenate([g.direction[:, 0], g.direction[:, 1]]))
    elif sop in _STACKABLE_SOP_CLASSES:
        sorted_headers, geometry, stack_errors = _stack_geometry(headers)
        errors.extend(stack_errors)
        files = [h.path for h in sorted_headers]
        if geometry is not None:
            shape, spacing, origin = geometry.shape_zyx, geometry.spacing_zyx_mm, geometry.origin_xyz_mm
            d = geometry.direction
            orientation = tuple(float(v) for v in np.concatenate([d[:, 0], d[:, 1]]))
    elif "Rows" in first:
        shape = (n_frames, int(first.Rows), int(first.Columns))
    numbers = [h.ds.get("InstanceNumber") for h in headers]
    instance_range = None
    if all(v is not None and str(v).strip() for v in numbers):
        try:
            ints = [int(v) for v in numbers]
            instance_range = (min(ints), max(ints))
            if len(headers) > 1 and (min(ints) > 1 or max(ints) - min(ints) + 1 != len(ints)):
                notes.append(
                    f"instance numbers run {min(ints)}–{max(ints)} over {len(ints)} files: part of the series may "
                    "lie in another folder (split series?)"
                )
        except (TypeError, ValueError):
            pass
    return SeriesSummary(
        series_uid=uid,
        modality=modality,
        sop_class_uid=sop,
        sop_class=_sop_class_name(sop) if sop else "",
        files=tuple(files),
        n_files=len(headers),
        n_frames=n_frames,
        shape=shape,
        spacing_zyx_mm=spacing,
        orientation=orientation,
        origin_xyz_mm=origin,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID")) if "FrameOfReferenceUID" in first else None,
        study_uid=str(first.get("StudyInstanceUID")) if "StudyInstanceUID" in first else None,
        description=str(first.get("SeriesDescription", "") or ""),
        instance_range=instance_range,
        problems=tuple(msg for _, msg in errors),
        notes=tuple(notes),
        _error_types=tuple(cls for cls, _ in errors),
    )


def _scan(path: Path, recursive: bool) -> tuple[FolderReport, dict[str, list[_Header]]]:
    if not path.exists():
        raise DicomError(f"{path}: no such file or folder; check the path")
    skipped: list[str] = []
    problems: list[str] = []
    groups: dict[str, list[_Header]] = {}
    for file in _gather_files(path, recursive):
        header, skip, problem = _read_header(file)
        if skip is not None:
            skipped.append(skip)
        if problem is not None:
            problems.append(problem)
        if header is not None:
            groups.setdefault(str(header.ds.SeriesInstanceUID), []).append(header)
    summaries = [_summarise(uid, headers) for uid, headers in groups.items()]
    summaries.sort(key=lambda s: (s.modality, s.description, s.series_uid))
    if not summaries and not problems:
        problems.append(f"{path}: no DICOM files found; check the path")
    by_modality: dict[str, list[SeriesSummary]] = {}
    for s in summaries:
        by_modality.setdefault(s.modality, []).append(s)
    for modality, group in by_modality.items():
        if len(group) > 1 and modality not in ("RTSTRUCT", "SEG", "SR", "PR", "REG"):
            listing = "; ".join(
                f"{s.series_uid} ({s.description or 'no description'}, {s.n_files} files)" for s in group
            )
            problems.append(
                f"{path}: {len(group)} {modality} series mixed in one folder: {listing}; give series_uid or put "
                "each series in its own folder"
            )
    report = FolderReport(path=path, series=tuple(summaries), skipped=tuple(skipped), problems=tuple(problems))
    return report, groups


def inspect_dicom_folder(path: str | os.PathLike[str], *, recursive: bool = True) -> FolderReport:
    """Scan a folder's DICOM headers (no pixel data) and report its series and every problem; never raises on data.

    Args:
        path: a folder (searched recursively by default) or a single DICOM file.
        recursive: also scan sub-folders.

    Returns:
        A `FolderReport`; `DicomError` only when `path` does not exist.
    """
    report, _ = _scan(Path(path), recursive)
    return report


def select_series(
    report: FolderReport, modality: str | Iterable[str] | None = None, series_uid: str | None = None
) -> SeriesSummary:
    """The one series of `report` matching `modality`/`series_uid`; `DicomError` when none or several match."""
    wanted = {modality} if isinstance(modality, str) else (set(modality) if modality is not None else None)
    candidates = [s for s in report.series if wanted is None or s.modality in wanted]
    if series_uid is not None:
        candidates = [s for s in candidates if s.series_uid == series_uid]
    what = f"{'/'.join(sorted(wanted)) if wanted else 'image'} series" + (f" {series_uid}" if series_uid else "")
    if not candidates:
        found = ", ".join(f"{s.modality} {s.series_uid}" for s in report.series) or "no DICOM series"
        extra = f"; {report.problems[0]}" if report.problems else ""
        raise DicomError(f"{report.path}: no {what} found (found: {found}){extra}")
    if len(candidates) > 1:
        listing = "; ".join(f"{s.series_uid} ({s.description or s.modality}, {s.n_files} files)" for s in candidates)
        raise DicomError(
            f"{report.path}: {len(candidates)} {what} mixed in one folder: {listing}; pass series_uid to choose one "
            "or put each series in its own folder"
        )
    chosen = candidates[0]
    unreadable = [p for p in report.problems if "mixed in one folder" not in p]
    if unreadable:
        raise DicomError(unreadable[0] + ("" if len(unreadable) == 1 else f" (and {len(unreadable) - 1} more)"))
    return chosen


def load_series(
    path: str | os.PathLike[str],
    modality: str | Iterable[str] | None = None,
    *,
    series_uid: str | None = None,
    recursive: bool = True,
) -> tuple[list[Any], SeriesGeometry]:
    """Load one image series (pixels included), sorted along the slice normal, and its geometry; strict.

    Args:
        path: a folder or a single DICOM file.
        modality: the Modality wanted (e.g. ``"CT"``); series of other modalities in the folder are ignored.
        series_uid: choose one series when the folder holds several of the wanted modality.
        recursive: also scan sub-folders.

    Returns:
        (datasets, geometry): single-frame slices sorted along +normal, or a one-element list holding a
        multi-frame file whose frames `geometry.frame_order` sorts.

    Raises:
        DicomError: no or several matching series, unreadable/truncated files, missing or duplicate slices.
        GeometryError: missing or inconsistent orientation, spacing or size.
    """
    report, groups = _scan(Path(path), recursive)
    summary = select_series(report, modality, series_uid)
    summary.raise_if_problems()
    if summary.sop_class_uid in SECONDARY_CAPTURE_SOP_CLASSES:
        raise DicomError(
            f"{summary.files[0]}: Secondary Capture image ({summary.sop_class_uid}) — a screenshot without "
            "quantitative values or 3D geometry; export the original image series"
        )
    if summary.sop_class_uid not in _STACKABLE_SOP_CLASSES:
        raise DicomError(
            f"{summary.files[0]}: {summary.sop_class} ({summary.sop_class_uid}) is not an image series ludl can "
            "stack (CT, MR, PET or NM image storage)"
        )
    headers = groups[summary.series_uid]
    if summary.n_files > 1 and any(_n_frames(h.ds) > 1 for h in headers):
        raise DicomError(
            f"{Path(path)}: series {summary.series_uid} holds {summary.n_files} multi-frame files (bed positions?); "
            "read it with ludl.io.nm.read_nm, which stitches beds"
        )
    datasets = [read_dicom_file(f) for f in summary.files]
    if len(datasets) == 1 and (_n_frames(datasets[0]) > 1 or summary.sop_class_uid == _NM_SOP_CLASS):
        return datasets, multiframe_geometry(datasets[0], summary.files[0])
    by_path = {h.path: h for h in headers}
    _, geometry, errors = _stack_geometry([by_path[f] for f in summary.files])
    if errors or geometry is None:  # pragma: no cover - summary.raise_if_problems already caught these
        cls, message = errors[0] if errors else (GeometryError, f"{path}: cannot build the series geometry")
        raise cls(message)
    return datasets, geometry
