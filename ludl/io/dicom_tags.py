"""Reading DICOM attributes the way the standard places them: numbers, NM geometry, dates and times, link UIDs.

Geometry (DICOM PS3.3 C.7.6.2.1.1): ImageOrientationPatient holds the row direction (towards increasing column
index, our x axis) then the column direction (increasing row index, y); the slice normal is their cross product.
Multi-frame NM (C.8.4.15) puts position and orientation in DetectorInformationSequence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "direction_matrix",
    "frame_count",
    "image_orientation",
    "image_position",
    "link_meta",
    "parse_dicom_datetime",
    "sop_class_name",
    "tag_floats",
]


def tag_floats(value: Any) -> list[float] | None:
    """A DS/IS value (one or several) as floats; None when missing or not numbers."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes, int, float)):
            return [float(value)]
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _detector_item(ds: Any) -> Any | None:
    """The first DetectorInformationSequence item (NM), if any."""
    seq = ds.get("DetectorInformationSequence")
    if seq:
        return seq[0]
    return None


def image_orientation(ds: Any) -> list[float] | None:
    """ImageOrientationPatient: NM's DetectorInformationSequence (where the NM IOD puts it) first, then top level."""
    item = _detector_item(ds)
    iop = tag_floats(item.get("ImageOrientationPatient")) if item is not None else None
    if iop is None:
        iop = tag_floats(ds.get("ImageOrientationPatient"))
    return iop if iop is not None and len(iop) == 6 else None


def image_position(ds: Any) -> list[float] | None:
    """ImagePositionPatient: NM's DetectorInformationSequence first, then the top level."""
    item = _detector_item(ds)
    ipp = tag_floats(item.get("ImagePositionPatient")) if item is not None else None
    if ipp is None:
        ipp = tag_floats(ds.get("ImagePositionPatient"))
    return ipp if ipp is not None and len(ipp) == 3 else None


def frame_count(ds: Any) -> int:
    """NumberOfFrames (1 when absent or malformed)."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def direction_matrix(iop: Sequence[float]) -> npt.NDArray[np.float64]:
    """ITK 3×3 direction (columns: row direction, column direction, normal) of an ImageOrientationPatient."""
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:], dtype=np.float64)
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    return np.stack([row, col, np.cross(row, col)], axis=1)


def sop_class_name(uid: str) -> str:
    """The SOP class's name from pydicom's UID dictionary."""
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
