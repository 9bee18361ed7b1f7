"""Small synthetic DICOM files for tests, written with pydicom (NM multi-frame, CT/PT/NM slices, RTSTRUCT).

Every writer takes the geometry as DICOM states it (ImagePositionPatient, ImageOrientationPatient, PixelSpacing,
signed SpacingBetweenSlices) so tests can compute expected physical positions by hand from the standard's
definitions, independently of the reader under test. Other helpers' tests may import these functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ludl.io.nm_write import AXIAL_ORIENTATION, NmIdentity, nm_tomo_dataset

__all__ = [
    "CT_IMAGE",
    "NM_IMAGE",
    "PET_IMAGE",
    "RTSTRUCT",
    "dicom_position",
    "read_back",
    "truncate_file",
    "write_image_series",
    "write_nm_multiframe",
    "write_rtstruct",
]

NM_IMAGE = "1.2.840.10008.5.1.4.1.1.20"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
_MODALITY_SOP = {"NM": NM_IMAGE, "CT": CT_IMAGE, "PT": PET_IMAGE}
AXIAL = AXIAL_ORIENTATION


def dicom_position(
    ipp: Sequence[float],
    iop: Sequence[float],
    pixel_spacing_mm: Sequence[float],
    row: float,
    col: float,
    slice_offset_mm: float = 0.0,
) -> npt.NDArray[np.float64]:
    """LPS position of pixel (row, col) by PS3.3 C.7.6.2.1.1, plus an offset along the normal (NM slices)."""
    r = np.asarray(iop[:3], dtype=float)
    c = np.asarray(iop[3:], dtype=float)
    n = np.cross(r, c)
    # Column index walks along the row direction by the column spacing (PixelSpacing[1]), row index along the
    # column direction by the row spacing (PixelSpacing[0]).
    return (
        np.asarray(ipp, dtype=float)
        + col * pixel_spacing_mm[1] * r
        + row * pixel_spacing_mm[0] * c
        + slice_offset_mm * n
    )


def _file_dataset(path: Path, sop_class_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "TEST0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20250101"
    ds.StudyTime = "090000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "ludl-tests"
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.Laterality = ""
    return ds


def _pixels(ds: Dataset, array: npt.NDArray[Any]) -> None:
    values = np.asarray(array)
    signed = values.dtype.kind == "i"
    stored = values.astype("<i2" if signed else "<u2")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.Rows, ds.Columns = int(values.shape[-2]), int(values.shape[-1])
    ds.PixelData = stored.tobytes()


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# Over 80 lines only by its signature and Args docstring: the body is one sequence of steps.
def write_nm_multiframe(
    path: str | os.PathLike[str],
    stored: npt.ArrayLike,
    *,
    pixel_spacing_mm: tuple[float, float] = (4.8, 4.8),
    spacing_between_slices_mm: float | None = 4.8,
    position_xyz_mm: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = AXIAL,
    geometry_in_detector_sequence: bool = True,
    slice_vector: Sequence[int] | None = None,
    rwvm: tuple[str, float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    image_type: str = "RECON TOMO",
    frame_increment_pointer: Sequence[int] | None = (0x0054, 0x0080),
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    acquisition: tuple[str, str] = ("20250101", "100000"),
    sop_class_uid: str = NM_IMAGE,
) -> Path:
    """Write a multi-frame NM image (frames = slices) holding `stored` (frames, rows, cols) as 16-bit integers.

    Built by the product's writer (`ludl.io.nm_write.nm_tomo_dataset`), then edited into the requested quirk.

    Args:
        path: file to write.
        stored: stored pixel values, shape (frames, rows, columns); integer dtype (signed → int16).
        pixel_spacing_mm: PixelSpacing (row spacing, column spacing).
        spacing_between_slices_mm: signed SpacingBetweenSlices; None omits it.
        position_xyz_mm: ImagePositionPatient of the first frame; None omits it.
        orientation: ImageOrientationPatient; None omits it.
        geometry_in_detector_sequence: put position/orientation in DetectorInformationSequence (as NM does)
            rather than at the top level.
        slice_vector: SliceVector (1-based), default 1..frames.
        rwvm: (UCUM units code, slope, intercept) for a RealWorldValueMappingSequence item; None: no mapping.
        rescale: (RescaleSlope, RescaleIntercept); None omits them.
        image_type: third value of ImageType (RECON TOMO, RECON GATED TOMO, TOMO, STATIC, …).
        frame_increment_pointer: the attribute tag the frames step along, as (group, element) pairs flattened.
        series_uid, frame_of_reference_uid: UIDs (new ones by default).
        acquisition: (AcquisitionDate, AcquisitionTime).
        sop_class_uid: SOP class (NM Image Storage by default).
    """
    file = Path(path)
    values = np.asarray(stored)
    if values.ndim != 3:
        raise ValueError("stored must be (frames, rows, columns)")
    who = NmIdentity(
        patient_id="TEST0001",
        sop_uid=generate_uid(),
        study_uid=generate_uid(),
        series_uid=series_uid or generate_uid(),
        frame_of_reference_uid=frame_of_reference_uid or generate_uid(),
        acquisition=datetime(2025, 1, 1, 10),
        frame_duration_ms=20000,
    )
    ds = nm_tomo_dataset(
        file,
        values,
        who=who,
        pixel_spacing_mm=pixel_spacing_mm,
        spacing_between_slices_mm=4.8 if spacing_between_slices_mm is None else spacing_between_slices_mm,
        position_xyz_mm=(0.0, 0.0, 0.0) if position_xyz_mm is None else position_xyz_mm,
        orientation=AXIAL if orientation is None else orientation,
    )
    # The product writer's dataset, edited into the quirk under test.
    ds.PatientName = "Test^Phantom"
    ds.Manufacturer = "ludl-tests"
    ds.StudyTime = "090000"
    del ds.ContentDate, ds.ContentTime  # only the acquisition and series times the test asks for
    ds.AcquisitionDate, ds.AcquisitionTime = acquisition
    ds.SeriesDate, ds.SeriesTime = acquisition
    ds.CountsAccumulated = int(values.sum())
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "EMISSION"]
    if sop_class_uid != NM_IMAGE:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    _nm_geometry_quirks(ds, spacing_between_slices_mm, position_xyz_mm, orientation, geometry_in_detector_sequence)
    if frame_increment_pointer is None:
        del ds.FrameIncrementPointer
    else:
        pairs = list(frame_increment_pointer)
        tags = [Tag(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
        ds.FrameIncrementPointer = tags[0] if len(tags) == 1 else tags
    if slice_vector is not None:
        ds.SliceVector = list(slice_vector)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = float(rescale[0]), float(rescale[1])
    if rwvm is not None:
        ds.RealWorldValueMappingSequence = [_rwvm_item(*rwvm)]
    ds.save_as(file, enforce_file_format=True)
    return file


def _rwvm_item(units: str, slope: float, intercept: float) -> Dataset:
    """A RealWorldValueMapping item in any UCUM units (the product writes Bq/ml only)."""
    item = Dataset()
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = 65535
    item.RealWorldValueSlope = float(slope)
    item.RealWorldValueIntercept = float(intercept)
    item.LUTExplanation = units
    item.LUTLabel = "RWVM"
    item.MeasurementUnitsCodeSequence = [_code(units, "UCUM", units)]
    return item


def _nm_geometry_quirks(
    ds: Dataset,
    spacing_between_slices_mm: float | None,
    position_xyz_mm: Sequence[float] | None,
    orientation: Sequence[float] | None,
    geometry_in_detector_sequence: bool,
) -> None:
    """Drop or move the geometry attributes the way a non-conforming exporter does."""
    detector = ds.DetectorInformationSequence[0]
    if spacing_between_slices_mm is None:
        del ds.SpacingBetweenSlices
    if position_xyz_mm is None:
        del detector.ImagePositionPatient
    if orientation is None:
        del detector.ImageOrientationPatient
    if not geometry_in_detector_sequence:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
            if keyword in detector:
                setattr(ds, keyword, getattr(detector, keyword))
                delattr(detector, keyword)


def write_image_series(
    folder: str | os.PathLike[str],
    array: npt.ArrayLike,
    *,
    modality: str = "CT",
    spacing_zyx_mm: tuple[float, float, float] = (2.0, 1.0, 1.0),
    origin_xyz_mm: Sequence[float] = (0.0, 0.0, 0.0),
    orientation: Sequence[float] = AXIAL,
    rescale: tuple[float, float] = (1.0, 0.0),
    series_uid: str | None = None,
    skip: Iterable[int] = (),
    duplicate: Iterable[int] = (),
    prefix: str = "slice",
    shuffle: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write `array` (z, y, x) as single-frame slices, slice k at origin + k · spacing_z · normal.

    Args:
        folder: output folder (created).
        array: stored values (integers; signed → int16).
        modality: CT, PT or NM (sets the SOP class).
        spacing_zyx_mm: (slice step, row spacing, column spacing).
        origin_xyz_mm: ImagePositionPatient of slice 0.
        orientation: ImageOrientationPatient.
        rescale: (RescaleSlope, RescaleIntercept) written on every slice.
        series_uid: shared SeriesInstanceUID (new by default).
        skip: slice numbers not written (a missing slice).
        duplicate: slice numbers written twice (a duplicate position).
        prefix: file name prefix.
        shuffle: write file names in a scrambled order so readers must sort by position.
        extra: attributes set on every slice (e.g. ``{"Units": "BQML"}``).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    values = np.asarray(array)
    series = series_uid or generate_uid()
    study = generate_uid()
    frame_of_reference = generate_uid()
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    skipped = set(skip)
    copies = {k: (2 if k in set(duplicate) else 1) for k in range(values.shape[0])}
    rng = np.random.default_rng(0)
    names = rng.permutation(values.shape[0] * 2) if shuffle else np.arange(values.shape[0] * 2)
    paths = []
    for k in range(values.shape[0]):
        if k in skipped:
            continue
        for copy in range(copies[k]):
            path = out / f"{prefix}_{int(names[2 * k + copy]):04d}.dcm"
            ds = _file_dataset(path, _MODALITY_SOP[modality])
            ds.Modality = modality
            ds.ImageType = (
                ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
                if modality == "NM"
                else ["ORIGINAL", "PRIMARY", "AXIAL"]
            )
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.FrameOfReferenceUID = frame_of_reference
            ds.SeriesNumber = 1
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [
                float(v) for v in np.asarray(origin_xyz_mm, float) + k * spacing_zyx_mm[0] * normal
            ]
            ds.ImageOrientationPatient = [float(v) for v in orientation]
            ds.PixelSpacing = [float(spacing_zyx_mm[1]), float(spacing_zyx_mm[2])]
            ds.SliceThickness = float(spacing_zyx_mm[0])
            ds.RescaleSlope, ds.RescaleIntercept = float(rescale[0]), float(rescale[1])
            if modality == "CT":
                ds.RescaleType = "HU"
                ds.KVP = 120
                ds.AcquisitionNumber = 1
            for key, value in (extra or {}).items():
                setattr(ds, key, value)
            _pixels(ds, values[k])
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def write_rtstruct(
    path: str | os.PathLike[str],
    rois: Mapping[str, Sequence[npt.ArrayLike]],
    *,
    frame_of_reference_uid: str | None = None,
    geometric_type: str = "CLOSED_PLANAR",
) -> Path:
    """Write an RT Structure Set: `rois` maps a name to its closed planar contours, each (n, 3) LPS points in mm."""
    file = Path(path)
    ds = _file_dataset(file, RTSTRUCT)
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "test"
    frame = frame_of_reference_uid or generate_uid()
    ref = Dataset()
    ref.FrameOfReferenceUID = frame
    ds.ReferencedFrameOfReferenceSequence = [ref]
    ds.StructureSetROISequence = []
    ds.ROIContourSequence = []
    ds.RTROIObservationsSequence = []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contour_items = []
        for points in contours:
            pts = np.asarray(points, dtype=float).reshape(-1, 3)
            item = Dataset()
            item.ContourGeometricType = geometric_type
            item.NumberOfContourPoints = len(pts)
            item.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            contour_items.append(item)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        rc.ContourSequence = contour_items
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(obs)
    ds.save_as(file, enforce_file_format=True)
    return file


def truncate_file(path: str | os.PathLike[str], keep_fraction: float = 0.6) -> Path:
    """Cut a file to `keep_fraction` of its bytes, as an interrupted copy would."""
    file = Path(path)
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep_fraction)])
    return file


def read_back(path: str | os.PathLike[str]) -> Dataset:
    """pydicom's own reading of a file (for assertions on what was written)."""
    return pydicom.dcmread(path)
