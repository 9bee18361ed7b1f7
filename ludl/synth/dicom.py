"""Write a synthetic SPECT bed as a multi-frame NM Image (RECON TOMO) DICOM file, as a clinic would export it.

Frames are axial slices (FrameIncrementPointer → SliceVector), geometry in the DetectorInformationSequence
(ImagePositionPatient of the first frame, ImageOrientationPatient) with a signed SpacingBetweenSlices, values
as 16-bit integers with a RealWorldValueMapping to Bq/ml (what `ludl.io.read_nm` reads back). Reproducible and
de-identified: UIDs are derived from a seed text (`ludl.io.rtdose.new_uid`), dates are fixed, the patient is
``SYNxxxx`` with no other identifying or generator information, and the series description is generic.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np

from ludl.errors import GeometryError, InputError
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write
from ludl.io.rtdose import new_uid

__all__ = ["NM_IMAGE_STORAGE", "write_nm_spect"]

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
_MAX_STORED = 65000  # uint16 with head room


def _code(value: str, scheme: str, meaning: str) -> object:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


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
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.tag import Tag
    from pydicom.uid import UID, ExplicitVRLittleEndian

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
    dest = Path(path)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(NM_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(new_uid(uid_seed, "sop"))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(dest), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "M"
    ds.PatientIdentityRemoved = "YES"
    date, clock = acquisition.strftime("%Y%m%d"), acquisition.strftime("%H%M%S")
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
    ds.StudyInstanceUID = new_uid(study_key, "study")
    ds.SeriesInstanceUID = new_uid(uid_seed, "series")
    ds.FrameOfReferenceUID = new_uid(frame_of_reference_key, "frame_of_reference")
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    n_frames = int(stored.shape[0])
    ds.NumberOfFrames = n_frames
    ds.FrameIncrementPointer = Tag(0x0054, 0x0080)
    ds.SliceVector = list(range(1, n_frames + 1))
    ds.NumberOfSlices = n_frames
    sz, sy, sx = (float(s) for s in volume.spacing_zyx_mm)
    ds.PixelSpacing = [sy, sx]
    ds.SliceThickness = sz
    ds.SpacingBetweenSlices = sz  # along +z = row × column direction for the axial orientation below
    detector = Dataset()
    detector.ImagePositionPatient = [float(v) for v in volume.origin_xyz_mm]
    detector.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    detector.CollimatorType = "PARA"
    ds.DetectorInformationSequence = [detector]
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
    rotation.NumberOfFramesInRotation = 120
    rotation.ActualFrameDuration = round(acquisition_s * 1000.0 / 120)
    ds.RotationInformationSequence = [rotation]
    ds.PatientOrientationCodeSequence = []
    ds.PatientGantryRelationshipCodeSequence = []
    item = Dataset()
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = 65535
    item.RealWorldValueSlope = slope
    item.RealWorldValueIntercept = 0.0
    item.LUTExplanation = "Bq/ml"
    item.LUTLabel = "BQML"
    item.MeasurementUnitsCodeSequence = [_code("Bq/ml", "UCUM", "Becquerels/milliliter")]
    ds.RealWorldValueMappingSequence = [item]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
    ds.PixelData = stored.tobytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return dest
