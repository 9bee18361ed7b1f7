"""DICOM RT Dose: write absorbed-dose maps for molecular radiotherapy, read any grid-based RT Dose as a Gy `Volume`.

Written objects follow docs/physics.md §6: DoseUnits GY, DoseType PHYSICAL, 32-bit unsigned pixels with DoseGridScaling,
relative GridFrameOffsetVector (first 0), the Frame of Reference of the source SPECT/CT, new UIDs, and a
DoseSummationType that needs no Referenced RT Plan (see `DOSE_SUMMATION_TYPE`). De-identified by default.
Only doses go here: a TIA map or any non-Gy image is refused (write NIfTI instead).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, GeometryError, InputError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write
from ludl.io.deid import set_patient_module
from ludl.io.dicom_file import reads_dicom

__all__ = [
    "DOSE_SUMMATION_TYPE",
    "RT_DOSE_STORAGE",
    "ReferenceLike",
    "new_uid",
    "read_rtdose",
    "reference_attributes",
    "write_rtdose",
]

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
# DoseSummationType (PS3.3 C.8.8.3, Table C.8-39). Referenced RT Plan Sequence (300C,0002) is required for PLAN,
# MULTI_PLAN, FRACTION, BEAM, BRACHY, FRACTION_SESSION, BEAM_SESSION, BRACHY_SESSION and CONTROL_POINT; Referenced
# Treatment Record Sequence (3008,0030) for RECORD; PLAN_OVERVIEW describes a dose computed from an RT Plan Overview.
# Radioligand therapy has no plan, no treatment record and no plan overview, so every standard term would claim
# something false or demand a reference we cannot give (dciodvfy reports "Missing attribute Type 1C … Referenced RT
# Plan/Treatment Record Sequence" for PLAN, MULTI_PLAN and RECORD — checked). The attribute holds *Defined* Terms, which
# PS3.3 §7.4 lets an implementation extend, so ludl writes its own term "MRT" (molecular radiotherapy): validators
# report only "unrecognized defined term" (a warning, not an error) and no conditional reference is triggered.
DOSE_SUMMATION_TYPE = "MRT"
_NEEDS_REFERENCE = frozenset(
    {
        "PLAN",
        "MULTI_PLAN",
        "FRACTION",
        "BEAM",
        "BRACHY",
        "FRACTION_SESSION",
        "BEAM_SESSION",
        "BRACHY_SESSION",
        "CONTROL_POINT",
        "RECORD",
    }
)
_MAX_UINT32 = 2**32 - 1
_DESCRIPTION = "ludl absorbed dose"

ReferenceLike = Any  # pydicom Dataset | path of a DICOM file or folder | Volume (meta) | Mapping | None

# Attributes copied from the reference (Patient ones only when not de-identifying).
_LINK_KEYS = ("StudyInstanceUID", "FrameOfReferenceUID", "PositionReferenceIndicator")
_STUDY_KEYS = ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
_PATIENT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


def new_uid(seed: str | None, role: str) -> str:
    """A new DICOM UID: random, or derived from (`seed`, `role`) so that reruns give identical files."""
    from pydicom.uid import generate_uid

    if seed is None:
        return str(generate_uid())
    return str(generate_uid(entropy_srcs=[seed, role]))


def _read_header(path: Path) -> Any:
    import pydicom

    if path.is_dir():
        for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
            try:
                return pydicom.dcmread(candidate, stop_before_pixels=True)
            except Exception:  # any non-DICOM file in the folder is skipped on purpose
                continue
        raise DicomError(f"reference folder {path} holds no readable DICOM file; pass the source series' folder")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise DicomError(f"reference {path} is not a readable DICOM file ({exc}); pass a DICOM file or folder") from exc


def reference_attributes(reference: ReferenceLike) -> dict[str, Any]:
    """Study, Frame of Reference and patient attributes of a reference (Dataset, DICOM path, Volume or mapping)."""
    if reference is None:
        return {}
    if isinstance(reference, Volume):
        source: Any = reference.meta
    elif isinstance(reference, str | os.PathLike):
        source = _read_header(Path(reference))
    else:
        source = reference
    keys = (*_LINK_KEYS, *_STUDY_KEYS, *_PATIENT_KEYS)
    out: dict[str, Any] = {}
    for key in keys:
        value = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
        if value is not None and str(value) != "":
            out[key] = str(value)
    return out


def _geometry_attributes(dose: Volume) -> dict[str, Any]:
    direction = dose.direction
    row_dir, col_dir, slice_dir = direction[:, 0], direction[:, 1], direction[:, 2]
    normal = np.cross(row_dir, col_dir)
    # Frames are stacked along the slice axis; the relative offsets run along the plane normal (PS3.3 C.8.8.3.2),
    # negative when the volume's third axis points against it (left-handed direction matrices).
    sign = float(np.sign(slice_dir @ normal))
    if abs(abs(slice_dir @ normal) - 1.0) > 1e-4:
        raise GeometryError("the dose grid's slice axis is not perpendicular to its planes; RT Dose cannot hold it")
    dz, dy, dx = dose.spacing_zyx_mm
    offsets = [sign * k * dz for k in range(dose.shape[0])]
    return {
        "ImagePositionPatient": _ds_list(dose.origin_xyz_mm),
        "ImageOrientationPatient": _ds_list((*row_dir, *col_dir)),
        "PixelSpacing": _ds_list((dy, dx)),  # (row spacing = along columns = y, column spacing = x)
        "SliceThickness": _ds_number(dz),
        "GridFrameOffsetVector": _ds_list(offsets),
    }


def _ds_number(value: float) -> str:
    """A Decimal String of at most 16 characters (PS3.5 §6.2), as precise as that allows."""
    from pydicom.valuerep import format_number_as_ds

    number = float(value)
    return str(format_number_as_ds(0.0 if number == 0 else number))


def _ds_list(values: Any) -> list[str]:
    return [_ds_number(float(v)) for v in values]


def _pixels(dose_gy: npt.NDArray[Any]) -> tuple[npt.NDArray[np.uint32], str]:
    values = np.asarray(dose_gy, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError("dose map contains NaN or infinite values; RT Dose cannot store them")
    if (values < 0).any():
        raise InputError(f"dose map has negative values (min {values.min():.3g} Gy); RT Dose PHYSICAL is ≥ 0")
    peak = float(values.max()) if values.size else 0.0
    # The scaling is a DS (≤ 16 characters): round it first, then quantise with the value actually stored.
    scaling_text = _ds_number(peak / (_MAX_UINT32 - 1)) if peak > 0 else "1"
    scaling = float(scaling_text)
    stored = np.clip(np.rint(values / scaling), 0, _MAX_UINT32).astype("<u4")
    return stored, scaling_text


def _check_writable(dose: Volume, summation_type: str) -> None:
    """A dose in Gy with a summation type that needs no RT Plan; `UnitsError`/`InputError` otherwise."""
    if dose.unit != "Gy":
        raise UnitsError(
            f"RT Dose holds absorbed dose in Gy only, got a {dose.unit!r} image; write it as NIfTI "
            "(ludl.io.nifti.write_nifti) instead"
        )
    if summation_type in _NEEDS_REFERENCE:
        raise InputError(
            f"DoseSummationType {summation_type!r} requires a referenced RT Plan or treatment record, which ludl "
            f"does not write; use the default {DOSE_SUMMATION_TYPE!r}"
        )


def _set_study_and_series(
    ds: Any, ref: Mapping[str, Any], *, deidentify: bool, uid_seed: str | None, when: _dt.datetime
) -> None:
    """General Study (the reference's, unless de-identified) and RT Series attributes."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.StudyInstanceUID = ref.get("StudyInstanceUID") or new_uid(uid_seed, "study")
    keep_study = not deidentify
    ds.StudyDate = ref.get("StudyDate", date) if keep_study else date
    ds.StudyTime = ref.get("StudyTime", time) if keep_study else time
    ds.StudyID = ref.get("StudyID", "") if keep_study else ""
    ds.AccessionNumber = ref.get("AccessionNumber", "") if keep_study else ""
    ds.ReferringPhysicianName = ref.get("ReferringPhysicianName", "") if keep_study else ""
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = new_uid(uid_seed, "rtdose-series")
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.OperatorsName = ""


def _set_image_pixel(ds: Any, dose: Volume) -> None:
    """Image Plane, Image Pixel and Multi-frame attributes (frames along GridFrameOffsetVector, 32-bit unsigned)."""
    import pydicom

    for key, value in _geometry_attributes(dose).items():
        setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = dose.shape[0]
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)  # GridFrameOffsetVector
    ds.Rows, ds.Columns = dose.shape[1], dose.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0


# Over 80 lines only by its signature and Args docstring: the body is one sequence of steps.
def write_rtdose(
    dose: Volume,
    path: str | os.PathLike[str],
    reference: ReferenceLike = None,
    *,
    deidentify: bool = True,
    patient_id: str | None = None,
    uid_seed: str | None = None,
    timestamp: _dt.datetime | None = None,
    series_description: str = _DESCRIPTION,
    series_number: int = 900,
    summation_type: str = DOSE_SUMMATION_TYPE,
    dose_comment: str | None = None,
) -> Path:
    """Write an absorbed-dose `Volume` (unit Gy) as a DICOM RT Dose file, atomically.

    Args:
        dose: dose map in Gy (any orientation; the slice axis must be perpendicular to the planes).
        path: destination file.
        reference: the source image the dose belongs to — a pydicom Dataset, the path of a DICOM file or series
            folder, a Volume whose meta holds ``FrameOfReferenceUID``/``StudyInstanceUID``, or a mapping of those.
            None: taken from ``dose.meta`` when present, otherwise new UIDs (the dose then overlays nothing).
        deidentify: write no patient name, ID or birth date (only `patient_id`, a pseudonym, if given).
        patient_id: pseudonym written as PatientID and PatientName.
        uid_seed: derive the new Series/SOP (and any missing Study/Frame of Reference) UIDs from this string,
            for byte-identical reruns; together with a fixed `timestamp`.
        timestamp: content/creation date and time (default: now).
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        summation_type: DoseSummationType; the default needs no RT Plan (see `DOSE_SUMMATION_TYPE`).
        dose_comment: optional DoseComment (≤ 64 characters).

    Returns:
        The destination path.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    _check_writable(dose, summation_type)
    ref = reference_attributes(dose.meta if reference is None else reference)
    if reference is not None and "FrameOfReferenceUID" not in ref:
        raise DicomError(
            f"reference {reference!r:.80} has no FrameOfReferenceUID; pass the source SPECT/CT series it belongs to"
        )
    when = timestamp or _dt.datetime.now()
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    stored, scaling_text = _pixels(dose.array)
    sop_uid = new_uid(uid_seed, "rtdose-sop")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RT_DOSE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = RT_DOSE_STORAGE
    ds.SOPInstanceUID = sop_uid
    # Patient module (type 2 attributes present, possibly empty).
    set_patient_module(ds, deidentify=deidentify, patient_id=patient_id, reference=ref)
    _set_study_and_series(ds, ref, deidentify=deidentify, uid_seed=uid_seed, when=when)
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description[:64]
    # Frame of Reference and General Equipment.
    ds.FrameOfReferenceUID = ref.get("FrameOfReferenceUID") or new_uid(uid_seed, "frame-of-reference")
    ds.PositionReferenceIndicator = ref.get("PositionReferenceIndicator", "")
    ds.Manufacturer = "ludl"
    ds.SoftwareVersions = _software_version()
    # General Image, Image Plane, Image Pixel, Multi-frame.
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    _set_image_pixel(ds, dose)
    # RT Dose.
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation_type
    ds.DoseGridScaling = scaling_text
    if dose_comment:
        ds.DoseComment = dose_comment[:64]
    ds.add_new(0x7FE00010, "OW", stored.tobytes())
    with atomic_write(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return f"ludl {version('ludl')}"
    except Exception:
        return "ludl"


def _frame_offsets(ds: Any, src: Path, normal: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    raw = getattr(ds, "GridFrameOffsetVector", None)
    if raw is None or len(np.atleast_1d(raw)) == 0:
        if n_frames > 1:
            raise DicomError(f"{src} has {n_frames} frames but no GridFrameOffsetVector; the file is incomplete")
        return np.zeros(1)
    offsets = np.asarray([float(v) for v in np.atleast_1d(raw)], dtype=np.float64)
    if offsets.size != n_frames:
        raise DicomError(f"{src}: GridFrameOffsetVector has {offsets.size} values for {n_frames} frames")
    if offsets[0] != 0.0:
        # Absolute form (PS3.3 C.8.8.3.2): offsets are patient z coordinates, allowed only for axial planes.
        if not np.allclose(np.abs(normal), [0.0, 0.0, 1.0], atol=1e-4):
            raise DicomError(f"{src}: absolute GridFrameOffsetVector on non-axial planes is not valid DICOM")
        z0 = float(np.asarray(ds.ImagePositionPatient, dtype=np.float64)[2])
        offsets = (offsets - z0) * float(np.sign(normal[2]))
    return offsets


@reads_dicom
def read_rtdose(path: str | os.PathLike[str], *, allow_relative: bool = False) -> Volume:
    """Read a grid-based DICOM RT Dose file as a `Volume` in Gy (DoseGridScaling applied, geometry from the file).

    Args:
        path: RT Dose file.
        allow_relative: accept DoseUnits RELATIVE and return a dimensionless (unit ``"1"``) volume.

    Raises:
        DicomError: not an RT Dose, no pixel data, or inconsistent frame offsets.
        UnitsError: DoseUnits is not GY (RELATIVE without `allow_relative`).
        GeometryError: frames not evenly spaced.
    """
    import pydicom

    src = Path(path)
    try:
        ds = pydicom.dcmread(src)
    except Exception as exc:
        raise DicomError(f"{src} is not a readable DICOM file ({exc})") from exc
    if str(getattr(ds, "SOPClassUID", "")) != RT_DOSE_STORAGE and getattr(ds, "Modality", "") != "RTDOSE":
        raise DicomError(f"{src} is not an RT Dose object (SOP Class {getattr(ds, 'SOPClassUID', '?')})")
    if "PixelData" not in ds:
        raise DicomError(f"{src} holds no dose grid (points/isodose/DVH only); ludl reads grid-based RT Dose only")
    units = str(getattr(ds, "DoseUnits", "")).upper()
    if units == "GY":
        unit = "Gy"
    elif units == "RELATIVE" and allow_relative:
        unit = "1"
    else:
        raise UnitsError(
            f"{src} has DoseUnits {units or '(missing)'!r}; ludl needs absolute dose in GY "
            "(pass allow_relative=True to read a RELATIVE dose as dimensionless)"
        )
    pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[None]
    scaling = float(getattr(ds, "DoseGridScaling", 1.0) or 1.0)
    try:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        position = [float(v) for v in ds.ImagePositionPatient]
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError(f"{src} lacks Image Plane attributes (orientation, position, spacing): {exc}") from exc
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    offsets = _frame_offsets(ds, src, normal)
    if offsets.size > 1:
        steps = np.diff(offsets)
        if not np.allclose(steps, steps[0], rtol=1e-4, atol=1e-3) or steps[0] == 0:
            raise GeometryError(f"{src}: dose frames are not evenly spaced ({offsets.tolist()}); ludl needs a grid")
        dz = float(abs(steps.mean()))
        slice_dir = normal * float(np.sign(steps[0]))
    else:
        thickness = getattr(ds, "SliceThickness", None)
        dz = float(thickness) if thickness not in (None, "") and float(thickness) > 0 else 1.0
        slice_dir = normal
    meta = {
        key: str(getattr(ds, key))
        for key in (
            "FrameOfReferenceUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "DoseType",
            "DoseSummationType",
        )
        if key in ds
    }
    meta["Modality"] = "RTDOSE"
    return Volume(
        array=pixels * scaling,
        spacing_zyx_mm=(dz, row_spacing, col_spacing),
        origin_xyz_mm=(position[0], position[1], position[2]),
        direction=np.column_stack([row_dir, col_dir, slice_dir]),
        unit=unit,
        meta=meta,
    )
