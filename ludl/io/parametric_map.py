"""DICOM Parametric Map (PS3.3 A.75) write and read: a quantitative map such as the TIA, beside the RT Dose.

RT Dose holds only Gy (or RELATIVE), so a time-integrated activity map written there would be read as a dose by every
planning system. The Parametric Map is DICOM's object for quantitative images: 32-bit float pixels (FloatPixelData,
no rescale loss) whose Real World Value Mapping states the unit as a UCUM code (TIA: ``MBq.h/mL``) and the quantity.
It is a multi-frame object (one frame per plane, per-frame ImagePositionPatient) in the Study and Frame of Reference
of the source SPECT, written through highdicom with the SEG's source handling (`ludl.io.dicom_derived`).

Reading needs only pydicom: values are the stored floats through the mapping's slope and intercept, geometry comes
from the plane positions. A map written with its slice axis against the plane normal (left-handed direction) reads
back right-handed: same voxels at the same physical positions, planes in the other order.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, GeometryError, InputError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write
from ludl.io.dicom_derived import (
    LUDL_EQUIPMENT,
    derived_sources,
    hd_volume,
    pin_header,
    shorten_decimal_string,
)
from ludl.io.dicom_file import read_dicom_file, reads_dicom
from ludl.io.rtdose import new_uid

__all__ = ["PARAMETRIC_MAP_STORAGE", "UCUM_UNITS", "read_parametric_map", "write_parametric_map"]

PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
# ludl unit → (UCUM code, UCUM meaning, default quantity). UCUM writes a product with "." (MBq·h/mL → "MBq.h/mL").
UCUM_UNITS: dict[str, tuple[str, str, str]] = {
    "MBq*h/mL": ("MBq.h/mL", "megabecquerel hour per milliliter", "Time-integrated activity concentration"),
    "Bq/mL": ("Bq/mL", "becquerel per milliliter", "Activity concentration"),
    "MBq/mL": ("MBq/mL", "megabecquerel per milliliter", "Activity concentration"),
    "Gy": ("Gy", "gray", "Absorbed dose"),
    "h": ("h", "hour", "Effective half-life"),
    "1": ("1", "no units", "Dimensionless ratio"),
}
# No standard code exists for a time-integrated activity (CID 7180 lists none), so quantities are coded in a private
# scheme (PS3.16 §8.2: designators beginning "99" are private) with a short, stable code value.
_QUANTITY_SCHEME = "99LUDL"
_QUANTITY_CODES = {
    "Time-integrated activity concentration": "TIAC",
    "Activity concentration": "AC",
    "Absorbed dose": "DOSE",
    "Effective half-life": "TEFF",
    "Dimensionless ratio": "RATIO",
}
_DESCRIPTION = "ludl time-integrated activity"


def _quantity_code(quantity: str) -> Any:
    from highdicom.sr import CodedConcept

    # Unknown quantities get a stable code value derived from their meaning (SH: at most 16 characters).
    value = _QUANTITY_CODES.get(quantity) or "Q" + hashlib.sha1(quantity.encode()).hexdigest()[:10].upper()
    return CodedConcept(value=value, scheme_designator=_QUANTITY_SCHEME, meaning=quantity[:64])


def _checked_pixels(volume: Any, path: Path) -> npt.NDArray[np.float32]:
    """The map as finite float32 (z, y, x); `InputError` naming the destination otherwise."""
    if not isinstance(volume, Volume):
        shape = getattr(volume, "shape", None)
        raise InputError(
            f"{path}: a Parametric Map is written from a 3-D ludl Volume (array, spacing, origin, direction), got "
            f"{type(volume).__name__} of shape {shape}; wrap the array in ludl.imaging.Volume with its grid"
        )
    values = np.asarray(volume.array)
    if values.dtype.kind not in "biuf":
        raise InputError(f"{path}: map values must be numbers, got dtype {values.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf, refused just below
        pixels = values.astype(np.float32)
    bad = ~np.isfinite(pixels)
    if bad.any():
        raise InputError(
            f"{path}: the map has {int(bad.sum())} NaN or infinite voxel(s) (or values beyond float32); replace "
            "them (e.g. np.nan_to_num) before writing"
        )
    return np.ascontiguousarray(pixels)


def _ucum(volume: Volume, unit_ucum: str | None, path: Path) -> tuple[str, str]:
    if unit_ucum is not None:
        known = {code: meaning for code, meaning, _ in UCUM_UNITS.values()}
        return unit_ucum, known.get(unit_ucum, unit_ucum)
    if volume.unit not in UCUM_UNITS:
        raise UnitsError(
            f"{path}: no UCUM unit known for a {volume.unit!r} map (known: {sorted(UCUM_UNITS)}); pass unit_ucum"
        )
    code, meaning, _ = UCUM_UNITS[volume.unit]
    return code, meaning


# Over 80 lines only by its signature and Args docstring: the body is one sequence of steps.
def write_parametric_map(
    volume: Volume,
    path: str | os.PathLike[str],
    reference: Any = None,
    *,
    quantity: str | None = None,
    unit_ucum: str | None = None,
    description: str = _DESCRIPTION,
    deidentify: bool = True,
    patient_id: str | None = None,
    uid_seed: str | None = None,
    timestamp: _dt.datetime | None = None,
    series_number: int = 902,
) -> Path:
    """Write a quantitative map (e.g. the TIA in MBq·h/mL) as a DICOM Parametric Map with float32 pixels, atomically.

    Args:
        volume: the map (any orientation); its values are stored as float32, its grid as the plane geometry.
        path: destination file.
        reference: source series (Datasets, file paths, or a folder: the SPECT) — preferred — or a Volume/mapping
            carrying ``FrameOfReferenceUID``/``StudyInstanceUID`` (input was NIfTI); None: taken from
            ``volume.meta``. As `ludl.io.seg.write_seg`.
        quantity: meaning of the quantity definition (default from the unit, TIA: "Time-integrated activity
            concentration").
        unit_ucum: UCUM code of the values (default from ``volume.unit``, see `UCUM_UNITS`).
        description: SeriesDescription, ContentDescription and LUTExplanation (≤ 64 characters).
        deidentify: write no patient name, ID or birth date (only `patient_id`, a pseudonym, if given).
        patient_id: pseudonym written as PatientID and PatientName.
        uid_seed: derive every new UID from this string (with a fixed `timestamp`: byte-identical reruns).
        timestamp: content/series date and time (default: now).
        series_number: SeriesNumber.

    Returns:
        The destination path.

    Raises:
        InputError: not a 3-D Volume, or NaN/infinite values. UnitsError: a unit with no known UCUM code.
    """
    import highdicom as hd
    import pydicom

    dest = Path(path)
    pixels = _checked_pixels(volume, dest)
    code, meaning = _ucum(volume, unit_ucum, dest)
    what = quantity or UCUM_UNITS.get(volume.unit, ("", "", volume.unit))[2]
    when = timestamp or _dt.datetime.now()
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    sources, frame_uid = derived_sources(
        volume, reference, uid_seed, date, role="pm", what="a Parametric Map", noun="map values"
    )
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=code[:16],
        lut_explanation=description[:64],
        unit=hd.sr.CodedConcept(value=code, scheme_designator="UCUM", meaning=meaning),
        value_range=(low, high),  # floats: the Double Float First/Last Value Mapped form
        slope=1.0,
        intercept=0.0,
        quantity_definition=_quantity_code(what),
    )
    # A display window over the whole range; the values themselves carry no window.
    window = hd.VOILUTTransformation(window_center=(low + high) / 2.0, window_width=max(high - low, 1e-6))
    pm = hd.pm.ParametricMap(
        source_images=sources,
        pixel_array=hd_volume(pixels, volume, frame_uid),
        series_instance_uid=new_uid(uid_seed, "pm-series"),
        series_number=int(series_number),
        sop_instance_uid=new_uid(uid_seed, "pm-sop"),
        instance_number=1,
        **LUDL_EQUIPMENT,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[window],
        content_description=description[:64],
        content_label="MAP",
        series_description=description[:64],
    )
    _add_frame_anatomy(pm)
    pin_header(pm, role="pm", deidentify=deidentify, patient_id=patient_id, uid_seed=uid_seed, date=date, time=time)
    pm.walk(shorten_decimal_string)
    with atomic_write(dest, suffix=".dcm") as tmp:
        pydicom.dcmwrite(tmp, pm, enforce_file_format=True)
    return dest


def _add_frame_anatomy(pm: Any) -> None:
    """Frame Anatomy (entire body, unpaired) in the shared functional groups.

    Without it the General Series' Laterality (Type 2C, needed when no frame laterality is given) is missing and
    dciodvfy reports an error; a whole-body SPECT map covers no single paired organ, so "U" (unpaired) is the truth.
    """
    import pydicom
    from pydicom.sr.codedict import codes

    body = codes.SCT.EntireBody
    region = pydicom.Dataset()
    region.CodeValue = body.value
    region.CodingSchemeDesignator = body.scheme_designator
    region.CodeMeaning = body.meaning
    anatomy = pydicom.Dataset()
    anatomy.AnatomicRegionSequence = [region]
    anatomy.FrameLaterality = "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]


def _frame_item(ds: Any, frame: int, sequence: str) -> Any:
    """The functional-group item `sequence` of one frame: per-frame if present there, else shared; None if absent."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame) and sequence in per_frame[frame]:
        return per_frame[frame][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def _real_world_values(ds: Any, stored: npt.NDArray[Any], src: Path) -> tuple[npt.NDArray[np.float32], str]:
    """Stored values through each frame's (first) Real World Value Mapping, and its UCUM unit code."""
    out = np.empty(stored.shape, dtype=np.float32)
    units = set()
    for k in range(stored.shape[0]):
        item = _frame_item(ds, k, "RealWorldValueMappingSequence")
        if item is None:
            raise DicomError(f"{src}: frame {k + 1} has no Real World Value Mapping; the values have no unit")
        if "RealWorldValueLUTData" in item:
            raise DicomError(f"{src}: a lookup-table Real World Value Mapping is not supported (only slope/intercept)")
        slope = float(item.get("RealWorldValueSlope", 1.0))
        intercept = float(item.get("RealWorldValueIntercept", 0.0))
        out[k] = (stored[k].astype(np.float64) * slope + intercept).astype(np.float32)
        units.add(str(item.MeasurementUnitsCodeSequence[0].CodeValue))
    if len(units) != 1:
        raise DicomError(f"{src}: frames carry different units {sorted(units)}; ludl reads one quantity per map")
    return out, units.pop()


def _plane_geometry(
    ds: Any, n_frames: int, src: Path
) -> tuple[npt.NDArray[np.intp], tuple[float, float, float], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(frame order along the normal, spacing_zyx_mm, origin_xyz_mm, direction) from the plane positions."""
    orientation = _frame_item(ds, 0, "PlaneOrientationSequence")
    measures = _frame_item(ds, 0, "PixelMeasuresSequence")
    if orientation is None or measures is None:
        raise DicomError(f"{src}: no PlaneOrientationSequence/PixelMeasuresSequence; not a patient-space map")
    iop = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    positions = []
    for k in range(n_frames):
        plane = _frame_item(ds, k, "PlanePositionSequence")
        if plane is None:
            raise DicomError(f"{src}: frame {k + 1} has no PlanePositionSequence; its plane cannot be placed")
        positions.append([float(v) for v in plane.ImagePositionPatient])
    xyz = np.asarray(positions)
    order = np.argsort(xyz @ normal, kind="stable")
    xyz = xyz[order]
    dy, dx = (float(v) for v in measures.PixelSpacing)
    if n_frames > 1:
        steps = np.diff(xyz, axis=0)
        dz = float(np.median(steps @ normal))
        if dz <= 0 or np.abs(steps - dz * normal).max() > 1e-3 * max(dz, 1.0):
            raise GeometryError(
                f"{src}: the frames are not equally spaced planes along one normal (steps {np.round(steps, 4)}); "
                "ludl reads a Parametric Map as one regular volume"
            )
    else:
        dz = float(measures.get("SpacingBetweenSlices") or measures.get("SliceThickness") or 1.0)
    direction = np.column_stack([row, col, normal])
    return order, (dz, dy, dx), xyz[0], direction


@reads_dicom
def read_parametric_map(path: str | os.PathLike[str]) -> Volume:
    """Read a DICOM Parametric Map as a `Volume` in real-world units (through its mapping) on its plane geometry.

    Raises:
        DicomError: not a Parametric Map, no mapping, a lookup-table mapping or mixed units.
        UnitsError: a UCUM unit ludl has no name for (see `UCUM_UNITS`).
        GeometryError: frames that are not one regular stack of planes.
    """
    src = Path(path)
    ds = read_dicom_file(src)
    if str(getattr(ds, "SOPClassUID", "")) != PARAMETRIC_MAP_STORAGE:
        raise DicomError(f"{src}: SOP class {getattr(ds, 'SOPClassUID', '?')} is not a Parametric Map")
    stored = np.asarray(ds.pixel_array)
    if stored.ndim == 2:
        stored = stored[np.newaxis]
    values, code = _real_world_values(ds, stored, src)
    units = {ucum: unit for unit, (ucum, _, _) in UCUM_UNITS.items()}
    if code not in units:
        raise UnitsError(f"{src}: unit {code!r} has no ludl name; ludl reads maps in {sorted(units)}")
    order, spacing, origin, direction = _plane_geometry(ds, stored.shape[0], src)
    meta = {"FrameOfReferenceUID": str(ds.FrameOfReferenceUID), "Modality": str(ds.get("Modality", "OT"))}
    if "StudyInstanceUID" in ds:
        meta["StudyInstanceUID"] = str(ds.StudyInstanceUID)
    return Volume(
        array=values[order],
        spacing_zyx_mm=spacing,
        origin_xyz_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        unit=units[code],
        meta=meta,
    )
