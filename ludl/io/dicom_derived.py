"""What every derived DICOM object ludl writes through highdicom (SEG, Parametric Map) needs from its source images.

A derived object inherits patient, study and Frame of Reference from the images it was computed from. This module
loads those source images (a series folder, file list or Datasets), synthesises a header-only stand-in when the input
was NIfTI (a mapping or Volume carrying ``FrameOfReferenceUID``/``StudyInstanceUID``), gives a multi-frame NM image
the functional groups highdicom reads geometry from, converts a ludl `Volume` grid to a `highdicom.Volume`, and pins
the dates and UIDs highdicom chooses itself so that a seeded write is byte-identical. The object's geometry always
comes from the ludl `Volume` itself (highdicom's volume-based construction), never from the source grid.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, GeometryError
from ludl.imaging.volume import Volume
from ludl.io.deid import set_patient_module
from ludl.io.rtdose import new_uid, reference_attributes

__all__ = [
    "LUDL_EQUIPMENT",
    "Equipment",
    "derived_sources",
    "hd_volume",
    "load_sources",
    "pin_header",
    "shorten_decimal_string",
    "synthetic_source",
    "with_functional_groups",
]

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class Equipment(TypedDict):
    """highdicom's equipment keywords (typed, so `**LUDL_EQUIPMENT` type-checks against its constructors)."""

    manufacturer: str
    manufacturer_model_name: str
    software_versions: str
    device_serial_number: str


# The equipment module of every object ludl derives: the software, not a device.
LUDL_EQUIPMENT: Equipment = {
    "manufacturer": "ludl",
    "manufacturer_model_name": "ludl",
    "software_versions": "ludl",
    "device_serial_number": "0",
}


def load_sources(reference: Any) -> list[Any]:
    """Headers of the source series: a folder, a file, a list of paths/Datasets or one Dataset (one series only)."""
    import pydicom

    if isinstance(reference, str | os.PathLike):
        folder = Path(reference)
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else [folder]
        reference = files
    if isinstance(reference, pydicom.Dataset):
        return [reference]
    datasets = []
    for item in reference:
        if isinstance(item, pydicom.Dataset):
            datasets.append(item)
            continue
        try:
            datasets.append(pydicom.dcmread(item, stop_before_pixels=True))
        except Exception as exc:
            if isinstance(reference, list) and len(reference) > 1 and Path(item).parent.is_dir():
                continue  # a non-DICOM file inside a series folder
            raise DicomError(f"source image {item} is not readable DICOM ({exc})") from exc
    if not datasets:
        raise DicomError(f"no DICOM source images found in {reference!r:.80}; pass the series the labels belong to")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise DicomError(f"source images come from {len(series)} series; pass the one series the labels were drawn on")
    return datasets


def synthetic_source(volume: Volume, ref: Mapping[str, Any], uid_seed: str | None, date: str, role: str) -> Any:
    """A header-only source instance (not written) for a volume with no DICOM source; `role` prefixes its UIDs."""
    import pydicom

    ds = pydicom.Dataset()
    ds.SOPClassUID = _SECONDARY_CAPTURE
    ds.SOPInstanceUID = new_uid(uid_seed, f"{role}-synthetic-source")
    ds.SeriesInstanceUID = new_uid(uid_seed, f"{role}-synthetic-source-series")
    ds.StudyInstanceUID = ref.get("StudyInstanceUID") or new_uid(uid_seed, "study")
    ds.FrameOfReferenceUID = ref.get("FrameOfReferenceUID") or new_uid(uid_seed, "frame-of-reference")
    ds.Modality = "OT"
    ds.PatientName = ref.get("PatientName", "")
    ds.PatientID = ref.get("PatientID", "")
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ref.get("StudyDate", date)
    ds.StudyTime = ref.get("StudyTime", "000000")
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
    ds.PositionReferenceIndicator = ""
    # highdicom needs a patient-coordinate source: give it the volume's first plane.
    ds.ImagePositionPatient = [float(v) for v in volume.origin_xyz_mm]
    ds.ImageOrientationPatient = [float(v) for v in (*volume.direction[:, 0], *volume.direction[:, 1])]
    ds.PixelSpacing = [float(volume.spacing_zyx_mm[1]), float(volume.spacing_zyx_mm[2])]
    ds.SliceThickness = float(volume.spacing_zyx_mm[0])
    return ds


def with_functional_groups(ds: Any) -> Any:
    """A header copy of a multi-frame NM image with the geometry highdicom looks for, synthesised.

    NM keeps position and orientation in DetectorInformationSequence and steps frames by the (signed)
    SpacingBetweenSlices along the plane normal (PS3.3 C.8.4.15); highdicom reads multi-frame geometry from the
    Shared/Per-frame Functional Groups of enhanced objects, so those are built from the NM attributes. The file on
    disk is untouched; only the derived object's references point at this instance.
    """
    import pydicom

    has_groups = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if has_groups or (n_frames == 1 and "ImagePositionPatient" in ds):
        return ds
    detectors = ds.get("DetectorInformationSequence") or [ds]
    where = detectors[0] if "ImagePositionPatient" in detectors[0] else ds
    if "ImagePositionPatient" not in where or "ImageOrientationPatient" not in where or "PixelSpacing" not in ds:
        raise DicomError(
            "the source image has no ImagePositionPatient/ImageOrientationPatient/PixelSpacing (root, functional "
            "groups or DetectorInformationSequence); pass the CT series or a Volume carrying the Frame of Reference"
        )
    position = np.asarray([float(v) for v in where.ImagePositionPatient])
    orientation = [float(v) for v in where.ImageOrientationPatient]
    normal = np.cross(orientation[:3], orientation[3:])
    step = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 0)
    if step == 0 and n_frames > 1:
        raise DicomError("multi-frame source without SpacingBetweenSlices or SliceThickness; cannot place its frames")
    header = copy.deepcopy(ds)
    measures = pydicom.Dataset()
    measures.PixelSpacing = ds.PixelSpacing
    measures.SliceThickness = getattr(ds, "SliceThickness", None) or abs(step)
    if step:
        measures.SpacingBetweenSlices = abs(step)
    plane = pydicom.Dataset()
    plane.ImageOrientationPatient = orientation
    shared = pydicom.Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [plane]
    header.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in range(n_frames):
        item = pydicom.Dataset()
        plane_position = pydicom.Dataset()
        plane_position.ImagePositionPatient = [float(v) for v in position + k * step * normal]
        item.PlanePositionSequence = [plane_position]
        frames.append(item)
    header.PerFrameFunctionalGroupsSequence = frames
    return header


def hd_volume(array: npt.NDArray[Any], grid: Volume, frame_of_reference_uid: str) -> Any:
    """`array` (z, y, x) on the grid of `grid` as a `highdicom.Volume` in patient coordinates."""
    import highdicom as hd

    # highdicom's affine maps (slice, row, column) indices to LPS mm: columns are the z, y, x axes of our Volume.
    affine = np.eye(4)
    dz, dy, dx = grid.spacing_zyx_mm
    affine[:3, 0] = grid.direction[:, 2] * dz
    affine[:3, 1] = grid.direction[:, 1] * dy
    affine[:3, 2] = grid.direction[:, 0] * dx
    affine[:3, 3] = grid.origin_xyz_mm
    return hd.Volume(array, affine, "PATIENT", frame_of_reference_uid=frame_of_reference_uid)


def derived_sources(
    volume: Volume,
    reference: Any,
    uid_seed: str | None,
    date: str,
    *,
    role: str,
    what: str = "a SEG",
    noun: str = "labels",
) -> tuple[list[Any], str]:
    """The source images a derived object references (loaded, or one synthetic stand-in) and their FrameOfReferenceUID.

    `role` prefixes the UIDs of a synthetic stand-in; `what` and `noun` name the object and its content in errors.
    """
    if isinstance(reference, Volume | Mapping):
        ref = reference_attributes(reference)
        sources = [synthetic_source(volume, ref, uid_seed, date, role)]
    elif reference is None:
        sources = [synthetic_source(volume, reference_attributes(volume), uid_seed, date, role)]
    else:
        sources = load_sources(reference)
        if len(sources) == 1:
            sources = [with_functional_groups(sources[0])]
    frame_uid = str(getattr(sources[0], "FrameOfReferenceUID", ""))
    if not frame_uid:
        raise DicomError(f"the source images carry no FrameOfReferenceUID; {what} cannot be placed without one")
    own_frame = volume.meta.get("FrameOfReferenceUID")
    if own_frame and str(own_frame) != frame_uid:
        raise GeometryError(
            f"{noun} belong to Frame of Reference {own_frame} but the source images to {frame_uid}; "
            f"pass the series the {noun} were drawn on"
        )
    return sources, frame_uid


def shorten_decimal_string(dataset: Any, element: Any) -> None:
    """Rewrite a decimal string (VR DS) longer than DICOM's 16 characters as pydicom's auto-format does.

    highdicom writes each frame's ImagePositionPatient at full float precision; a SPECT origin such as −188.2211433…
    then breaks the VR (dciodvfy: "Length invalid"). Rounding to 16 characters moves a plane by < 1e-9 mm.
    Use as ``ds.walk(shorten_decimal_string)``.
    """
    from pydicom.valuerep import DS

    if element.VR != "DS" or element.value is None:
        return
    values = element.value if element.VM > 1 else [element.value]
    if any(len(str(v)) > 16 for v in values):
        fixed = [DS(float(v), auto_format=True) for v in values]
        element.value = fixed if element.VM > 1 else fixed[0]


def pin_header(
    ds: Any, *, role: str, deidentify: bool, patient_id: str | None, uid_seed: str | None, date: str, time: str
) -> None:
    """De-identify and pin the dates/UIDs highdicom chose itself, so a seeded write is reproducible.

    `role` names the object in the seeded DimensionOrganizationUID (``"seg"`` → role ``"seg-dimension-organization"``).
    """
    if deidentify:
        set_patient_module(ds, deidentify=True, patient_id=patient_id)
        # Study-level identifiers as in write_rtdose: the Study UID stays (it links the object to its images).
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = ""
        ds.StudyDate, ds.StudyTime = date, time
    elif patient_id:
        ds.PatientName = patient_id
        ds.PatientID = patient_id
    for key in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        if key in ds:
            setattr(ds, key, date)
    for key in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        if key in ds:
            setattr(ds, key, time)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time
    if uid_seed is not None and "DimensionOrganizationSequence" in ds:
        fixed = new_uid(uid_seed, f"{role}-dimension-organization")
        for item in ds.DimensionOrganizationSequence:
            item.DimensionOrganizationUID = fixed
        for item in ds.get("DimensionIndexSequence", []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = fixed
