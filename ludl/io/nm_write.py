"""The one NM writer: a SPECT bed as a multi-frame NM Image (RECON TOMO) DICOM file, as a clinic would export it.

Frames are axial slices (FrameIncrementPointer → SliceVector), geometry in the DetectorInformationSequence
(ImagePositionPatient of the first frame, ImageOrientationPatient) with a signed SpacingBetweenSlices, values
as 16-bit integers with a RealWorldValueMapping to Bq/ml (what `ludl.io.read_nm` reads back).

`write_nm_spect` writes a Bq/mL `Volume` (the synthetic cohorts): reproducible and de-identified — UIDs are derived
from a seed text (`ludl.io.rtdose.new_uid`), dates are fixed, the patient is ``SYNxxxx`` with no other identifying or
generator information, and the series description is generic. `nm_tomo_dataset` builds the dataset from stored
values and DICOM geometry as the standard states it; the test factory edits its result to inject reader quirks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import GeometryError, InputError
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write
from ludl.io.deid import DEIDENTIFICATION_METHOD
from ludl.io.dicom_file import NM_IMAGE_STORAGE
from ludl.io.rtdose import new_uid

__all__ = [
    "AXIAL_ORIENTATION",
    "NmIdentity",
    "bq_per_ml_mapping",
    "nm_tomo_dataset",
    "write_nm_spect",
]

# ImageOrientationPatient of axial slices: rows along +x, columns along +y (the slice normal is +z).
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_MAX_STORED = 65000  # uint16 with head room
# Projections of one SPECT rotation (3° steps over 360°).
_FRAMES_IN_ROTATION = 120


@dataclass(frozen=True)
class NmIdentity:
    """Who and when of one NM file: patient, UIDs, acquisition start and the duration of one projection."""

    patient_id: str
    sop_uid: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    acquisition: datetime
    frame_duration_ms: int


def _code(value: str, scheme: str, meaning: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _header(ds: Any, who: NmIdentity) -> None:
    """Patient, study, series and date attributes (de-identified: no name but the ID, no birth date)."""
    ds.PatientName = who.patient_id
    ds.PatientID = who.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "M"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD  # Type 1C once the identity is removed (dciodvfy)
    date, clock = who.acquisition.strftime("%Y%m%d"), who.acquisition.strftime("%H%M%S")
    ds.StudyDate, ds.StudyTime = date, clock
    ds.SeriesDate, ds.SeriesTime = date, clock
    ds.AcquisitionDate, ds.AcquisitionTime = date, clock
    ds.ContentDate, ds.ContentTime = date, clock
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "ludl"
    ds.SeriesDescription = "SPECT"
    ds.PositionReferenceIndicator = ""
    ds.Laterality = ""
    ds.Modality = "NM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.StudyInstanceUID = who.study_uid
    ds.SeriesInstanceUID = who.series_uid
    ds.FrameOfReferenceUID = who.frame_of_reference_uid
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1


def _nm_modules(ds: Any, frame_duration_ms: int) -> None:
    """Type 1/2 attributes of the NM modules (PS3.3 C.8.4): detector, energy window, rotation, orientation codes."""
    from pydicom.dataset import Dataset

    ds.NumberOfDetectors = 1
    ds.NumberOfEnergyWindows = 1
    ds.NumberOfRotations = 1
    window = Dataset()
    window.EnergyWindowName = "Lu177 208keV"
    ds.EnergyWindowInformationSequence = [window]
    ds.RadiopharmaceuticalInformationSequence = []
    rotation = Dataset()
    rotation.StartAngle = 0.0
    rotation.AngularStep = 3.0
    rotation.RotationDirection = "CW"
    rotation.ScanArc = 360.0
    rotation.NumberOfFramesInRotation = _FRAMES_IN_ROTATION
    rotation.ActualFrameDuration = frame_duration_ms
    ds.RotationInformationSequence = [rotation]
    ds.PatientOrientationCodeSequence = []
    ds.PatientGantryRelationshipCodeSequence = []


def bq_per_ml_mapping(slope: float) -> Any:
    """A RealWorldValueMapping item: stored value × `slope` = Bq/ml."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = 65535
    item.RealWorldValueSlope = slope
    item.RealWorldValueIntercept = 0.0
    item.LUTExplanation = "Bq/ml"
    item.LUTLabel = "BQML"
    item.MeasurementUnitsCodeSequence = [_code("Bq/ml", "UCUM", "Becquerels/milliliter")]
    return item


def nm_tomo_dataset(
    path: str | os.PathLike[str],
    stored: npt.NDArray[Any],
    *,
    who: NmIdentity,
    pixel_spacing_mm: tuple[float, float],
    spacing_between_slices_mm: float,
    position_xyz_mm: Sequence[float],
    orientation: Sequence[float] = AXIAL_ORIENTATION,
    bq_per_ml_slope: float | None = None,
) -> Any:
    """A multi-frame NM RECON TOMO dataset holding `stored` (frames, rows, columns) as 16-bit integers.

    Args:
        path: the file the dataset is meant for (kept as its filename; nothing is written).
        stored: stored pixel values; a signed integer dtype is written as int16, anything else as uint16.
        who: patient, UIDs, acquisition start, projection duration.
        pixel_spacing_mm: PixelSpacing (row spacing, column spacing).
        spacing_between_slices_mm: signed SpacingBetweenSlices (negative: frames stacked against the normal).
        position_xyz_mm: ImagePositionPatient of the first frame (in DetectorInformationSequence).
        orientation: ImageOrientationPatient (in DetectorInformationSequence).
        bq_per_ml_slope: RealWorldValueMapping slope to Bq/ml; None writes no mapping.
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.tag import Tag
    from pydicom.uid import UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(NM_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(who.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(Path(path)), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    _header(ds, who)
    n_frames = int(stored.shape[0])
    ds.NumberOfFrames = n_frames
    ds.FrameIncrementPointer = Tag(0x0054, 0x0080)
    ds.SliceVector = list(range(1, n_frames + 1))
    ds.NumberOfSlices = n_frames
    ds.PixelSpacing = [float(v) for v in pixel_spacing_mm]
    ds.SliceThickness = abs(float(spacing_between_slices_mm))
    ds.SpacingBetweenSlices = float(spacing_between_slices_mm)
    detector = Dataset()
    detector.ImagePositionPatient = [float(v) for v in position_xyz_mm]
    detector.ImageOrientationPatient = [float(v) for v in orientation]
    detector.CollimatorType = "PARA"
    ds.DetectorInformationSequence = [detector]
    _nm_modules(ds, who.frame_duration_ms)
    if bq_per_ml_slope is not None:
        ds.RealWorldValueMappingSequence = [bq_per_ml_mapping(bq_per_ml_slope)]
    signed = stored.dtype.kind == "i"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
    ds.PixelData = np.asarray(stored).astype("<i2" if signed else "<u2").tobytes()
    return ds


def write_nm_spect(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    patient_id: str,
    uid_seed: str,
    study_key: str,
    acquisition: datetime,
    acquisition_s: float,
    frame_of_reference_key: str,
) -> Path:
    """Write one SPECT bed (Bq/mL, identity direction) as a multi-frame NM DICOM file.

    Args:
        volume: the bed's activity concentration (Bq/mL) on its own axis-aligned grid.
        path: file to write (its folder is created).
        patient_id: de-identified patient ID (also the patient name).
        uid_seed: seed text of this image's SOP/series UIDs (unique per image, reproducible).
        study_key: seed text of the study UID (shared by the images of one study).
        acquisition: acquisition start (date and time written to the header; the manifest's time_h rules).
        acquisition_s: acquisition duration (s), written as the actual frame duration of the rotation.
        frame_of_reference_key: seed text of the FrameOfReferenceUID (shared by the images of one pose).
    """
    if volume.unit != "Bq/mL":
        raise InputError(f"write_nm_spect writes Bq/mL images, got unit {volume.unit!r}")
    if not np.allclose(volume.direction, np.eye(3), atol=1e-6):
        raise GeometryError("write_nm_spect needs an axis-aligned grid (identity direction)")
    values = np.asarray(volume.array, dtype=np.float64)
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise InputError("SPECT values must be finite and ≥ 0 Bq/mL")
    top = float(values.max())
    slope = top / _MAX_STORED if top > 0 else 1.0
    stored = np.rint(values / slope).astype("<u2")
    who = NmIdentity(
        patient_id=patient_id,
        sop_uid=new_uid(uid_seed, "sop"),
        study_uid=new_uid(study_key, "study"),
        series_uid=new_uid(uid_seed, "series"),
        frame_of_reference_uid=new_uid(frame_of_reference_key, "frame_of_reference"),
        acquisition=acquisition,
        frame_duration_ms=round(acquisition_s * 1000.0 / _FRAMES_IN_ROTATION),
    )
    sz, sy, sx = (float(s) for s in volume.spacing_zyx_mm)
    dest = Path(path)
    ds = nm_tomo_dataset(
        dest,
        stored,
        who=who,
        pixel_spacing_mm=(sy, sx),
        spacing_between_slices_mm=sz,  # along +z = row × column direction for the axial orientation
        position_xyz_mm=volume.origin_xyz_mm,
        bq_per_ml_slope=slope,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return dest
