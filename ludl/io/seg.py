"""DICOM Segmentation (SEG) write and read through highdicom: one BINARY segment per region name.

Writing needs the source images the labels were drawn on, because a SEG is a derived object that inherits their
patient, study and Frame of Reference:

- preferred: the source series (CT slices, or one multi-frame image) as pydicom Datasets, file paths or a folder;
- otherwise a `Volume` (or mapping) carrying ``FrameOfReferenceUID``/``StudyInstanceUID`` in its meta: ludl then
  synthesises one header-only source instance (never written to disk) so that highdicom can build the object. The
  SEG's geometry always comes from the label `Volume` itself (highdicom's volume-based construction), so labels need
  not lie on the source grid; the SEG then references a source instance that exists nowhere — viewers align it via
  the Frame of Reference, which is what matters for dosimetry.

Segment labels are the region names (docs/architecture.md "Public names"); categories/types use SNOMED CT codes where
ludl knows the organ, "Tissue" otherwise. Reading returns a label `Volume` whose values are the segment numbers, or the
caller's own label values when a name → value mapping is given.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import DicomError, GeometryError, InputError
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write
from ludl.io.dicom_derived import (
    LUDL_EQUIPMENT,
    derived_sources,
    hd_volume,
    pin_header,
    shorten_decimal_string,
)
from ludl.io.dicom_file import reads_dicom
from ludl.io.rtdose import new_uid

__all__ = ["read_seg", "segment_codes", "write_seg"]

# Region name stem → pydicom.sr.codedict SCT keyword (docs/architecture.md region names; laterality stays in the label).
_ORGAN_CODES = {
    "kidney": "Kidney",
    "parotid": "ParotidGland",
    "submandibular": "SubmandibularGland",
    "lacrimal": "LacrimalGland",
    "liver": "Liver",
    "spleen": "Spleen",
    "bladder": "UrinaryBladderStructure",
    "red_marrow": "BoneMarrow",
    "body": "EntireBody",
}


def segment_codes(name: str) -> tuple[Any, Any]:
    """(category, type) SNOMED CT codes for a region name: organ codes, lesion → Lesion, unknown → Tissue."""
    from pydicom.sr.codedict import codes

    stem = name.removesuffix("_left").removesuffix("_right")
    if stem.startswith("lesion"):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion
    if stem in _ORGAN_CODES:
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, _ORGAN_CODES[stem])
    return codes.SCT.Tissue, codes.SCT.Tissue


def _names_mapping(names: Mapping[str, int] | Sequence[str]) -> dict[str, int]:
    if isinstance(names, Mapping):
        mapping = {str(k): int(v) for k, v in names.items()}
    else:
        mapping = {str(n): i + 1 for i, n in enumerate(names)}
    if not mapping:
        raise InputError("names is empty; give at least one region name (→ label value) to write")
    if any(v <= 0 for v in mapping.values()):
        raise InputError(f"label values must be positive (0 is background), got {mapping}")
    if len(set(mapping.values())) != len(mapping):
        raise InputError(f"two region names share one label value in {mapping}")
    return mapping


def _seg_sources(labels: Volume, reference: Any, uid_seed: str | None, date: str) -> tuple[list[Any], str]:
    """The source images a SEG references (loaded, or one synthetic stand-in) and their FrameOfReferenceUID."""
    return derived_sources(labels, reference, uid_seed, date, role="seg", what="a SEG", noun="labels")


def write_seg(
    labels: Volume,
    path: str | os.PathLike[str],
    reference: Any,
    names: Mapping[str, int] | Sequence[str],
    *,
    deidentify: bool = True,
    patient_id: str | None = None,
    uid_seed: str | None = None,
    timestamp: _dt.datetime | None = None,
    series_description: str = "ludl segmentation",
    series_number: int = 901,
) -> Path:
    """Write a label map as a DICOM SEG (BINARY, one segment per name), atomically.

    Args:
        labels: integer label map (unit ``"label"``) or boolean mask (unit ``"mask"``; one name).
        path: destination file.
        reference: source series (Datasets, file paths, or a folder) — preferred — or a Volume/mapping carrying
            ``FrameOfReferenceUID``/``StudyInstanceUID`` (see module docstring).
        names: region name → label value, or a list of names for values 1, 2, …; segment i+1 is the i-th name.
        deidentify: write no patient name, ID or birth date (only `patient_id`, a pseudonym, if given).
        patient_id: pseudonym written as PatientID and PatientName.
        uid_seed: derive every new UID from this string (with a fixed `timestamp`: byte-identical reruns).
        timestamp: content/series date and time (default: now).
        series_description: SeriesDescription.
        series_number: SeriesNumber.

    Returns:
        The destination path.
    """
    import highdicom as hd
    import pydicom

    if labels.unit not in ("label", "mask"):
        raise InputError(f"write_seg needs a label map (unit 'label' or 'mask'), got unit {labels.unit!r}")
    mapping = _names_mapping(names)
    array = np.asarray(labels.array)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise InputError(f"label map must hold integers, got dtype {array.dtype}")
    when = timestamp or _dt.datetime.now()
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    sources, frame_uid = _seg_sources(labels, reference, uid_seed, date)
    # Compact the caller's label values to segment numbers 1..n (highdicom's label-map style).
    lut_size = int(max(int(array.max(initial=0)), max(mapping.values()))) + 1
    lut = np.zeros(lut_size, dtype=np.uint16)
    for number, value in enumerate(mapping.values(), start=1):
        lut[value] = number
    clipped = np.clip(array.astype(np.int64), 0, lut_size - 1)
    compact = lut[clipped].astype(np.uint8 if len(mapping) < 256 else np.uint16)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=segment_codes(name)[0],
            segmented_property_type=segment_codes(name)[1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, name in enumerate(mapping, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=hd_volume(compact, labels, frame_uid),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=new_uid(uid_seed, "seg-series"),
        series_number=int(series_number),
        sop_instance_uid=new_uid(uid_seed, "seg-sop"),
        instance_number=1,
        **LUDL_EQUIPMENT,
        series_description=series_description[:64],
        # Empty planes are left out (a whole-body CT × 20 regions would otherwise be hundreds of MB); an all-empty
        # map keeps its planes because a SEG needs at least one frame.
        omit_empty_frames=bool(compact.any()),
    )
    pin_header(seg, role="seg", deidentify=deidentify, patient_id=patient_id, uid_seed=uid_seed, date=date, time=time)
    seg.walk(shorten_decimal_string)
    with atomic_write(path, suffix=".dcm") as tmp:
        pydicom.dcmwrite(tmp, seg, enforce_file_format=True)
    return Path(path)


@reads_dicom
def read_seg(
    path: str | os.PathLike[str], grid: Volume | None = None, *, names: Mapping[str, int] | None = None
) -> tuple[Volume, dict[str, int]]:
    """Read a DICOM SEG as a label `Volume` plus its region name → label value mapping.

    Args:
        path: SEG file.
        grid: optional Volume whose grid the labels are resampled onto (nearest neighbour). Without it the volume
            spans only the planes that hold a segment (empty planes are not stored); pass the source grid (e.g. the
            CT) to get its full extent.
        names: optional region name → label value to use in the output (e.g. the cohort's ``labels``);
            segments whose label is not in it raise `DicomError`. Default: the segment numbers.

    Raises:
        DicomError: not a SEG, overlapping segments, or a segment label missing from `names`.
    """
    import highdicom as hd

    src = Path(path)
    try:
        seg = hd.seg.segread(src)
    except Exception as exc:
        raise DicomError(f"{src} is not a readable DICOM SEG ({exc})") from exc
    numbers = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    try:
        hd_volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint16)
    except Exception as exc:
        raise DicomError(
            f"{src}: segments could not be combined into one label map ({exc}); overlapping segments are not "
            "supported — split them into one SEG per structure"
        ) from exc
    affine = np.asarray(hd_volume.affine, dtype=np.float64)
    array = np.asarray(hd_volume.array)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = np.column_stack([affine[:3, 2] / spacing[2], affine[:3, 1] / spacing[1], affine[:3, 0] / spacing[0]])
    if np.linalg.det(direction) < 0:
        # highdicom may stack frames against the plane normal; flip so the slice axis follows row × column.
        array = array[::-1]
        affine[:3, 3] = affine[:3, 3] + affine[:3, 0] * (array.shape[0] - 1)
        direction[:, 2] = -direction[:, 2]
    if names is None:
        mapping = {name: number for number, name in numbers.items()}
        out = array.astype(np.int32)
    else:
        missing = [name for name in numbers.values() if name not in names]
        if missing:
            raise DicomError(f"{src}: segments {missing} are not in the given names {sorted(names)}")
        lut = np.zeros(max(numbers) + 1, dtype=np.int32)
        for number, name in numbers.items():
            lut[number] = int(names[name])
        out = lut[array]
        mapping = {name: int(names[name]) for name in numbers.values()}
    meta = {"FrameOfReferenceUID": str(seg.FrameOfReferenceUID), "Modality": "SEG"}
    if "StudyInstanceUID" in seg:
        meta["StudyInstanceUID"] = str(seg.StudyInstanceUID)
    volume = Volume(
        array=out,
        spacing_zyx_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin_xyz_mm=tuple(float(v) for v in affine[:3, 3]),  # type: ignore[arg-type]
        direction=direction,
        unit="label",
        meta=meta,
    )
    if grid is not None:
        from ludl.imaging.resample import resample_to

        grid_frame = grid.meta.get("FrameOfReferenceUID")
        if grid_frame and str(grid_frame) != meta["FrameOfReferenceUID"]:
            raise GeometryError(
                f"{src}: the segmentation was drawn in frame of reference {meta['FrameOfReferenceUID']}, the image "
                f"it is read onto is in {grid_frame}; give the SEG of this image (or register and resample first)"
            )

        volume = resample_to(volume, grid)
    return volume, mapping
