"""Image-header checks of a cohort: every manifest image opened once, header only (never pixel data)."""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ludl.errors import LudlError
from ludl.io.cohort import ROLES
from ludl.io.manifest_schema import (
    ITK_SUFFIXES,
    NON_IMAGE_MODALITIES,
    ROLE_MODALITIES,
    ManifestRow,
    Problem,
    ProblemList,
    is_within,
)

__all__ = ["image_problems"]


@dataclass(frozen=True)
class _ImageInfo:
    spacing_zyx_mm: tuple[float, float, float] | None
    series_uids: tuple[str, ...] = ()
    modality: str | None = None
    dicom_patient_id: str | None = None  # PatientID in the DICOM header


def _itk_error(err: Exception) -> str:
    text = str(err)
    match = re.search(r"Description:\s*(.+)", text)
    line = match.group(1) if match else text.strip().splitlines()[-1] if text.strip() else type(err).__name__
    return line.strip()


def _inspect_itk_file(path: Path) -> tuple[_ImageInfo | None, list[str]]:
    """Header-only check of a NIfTI/NRRD/MHA image: readable, 3-D, scalar, positive spacing, orthonormal axes."""
    from ludl.io.nifti import check_nifti_integrity

    if path.name.lower().endswith(".nii"):  # cheap for an uncompressed file: its size against its header
        try:
            check_nifti_integrity(path)
        except LudlError as err:
            return None, [str(err).replace(f"{path}: ", "", 1)]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            try:  # a corrupt or cut file explains itself better than ITK's "unable to determine ImageIO"
                check_nifti_integrity(path, allow_nonfinite=True)
            except LudlError as integrity:
                return None, [str(integrity).replace(f"{path}: ", "", 1)]
        return None, [f"cannot read the image header ({_itk_error(err)}); re-export the image"]
    problems: list[str] = []
    dim = reader.GetDimension()
    size = reader.GetSize()
    spacing = reader.GetSpacing()
    if dim == 4 and size[3] == 1:  # a 3-D image saved with a singleton 4th axis
        dim, size, spacing = 3, size[:3], spacing[:3]
        direction = np.array(reader.GetDirection()).reshape(4, 4)[:3, :3]
    else:
        direction = np.array(reader.GetDirection()).reshape(dim, dim)
    if dim != 3:
        problems.append(f"image has {dim} dimensions {tuple(size)}; a 3-D volume is needed")
        return None, problems
    if reader.GetNumberOfComponents() != 1:
        problems.append(f"image has {reader.GetNumberOfComponents()} components per voxel; a scalar image is needed")
    if min(size) < 1:
        problems.append(f"image has an empty axis (size {tuple(size)})")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        problems.append(f"voxel spacing {tuple(spacing)} mm is not positive; fix the header")
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        problems.append("image axes are not orthonormal (sheared or scaled direction matrix); fix the header")
    spacing_zyx = (float(spacing[2]), float(spacing[1]), float(spacing[0]))
    return _ImageInfo(spacing_zyx_mm=spacing_zyx), problems


def _inspect_dicom(path: Path, role: str) -> tuple[_ImageInfo | None, list[str]]:
    """A DICOM folder or file through `inspect_dicom_folder`: exactly one complete series of the role's modality."""
    from ludl.io.dicom_series import inspect_dicom_folder

    try:
        report = inspect_dicom_folder(path)
    except LudlError as err:
        return None, [str(err)]
    if not report.series:
        if path.is_file() and not report.problems:
            return None, [f"is neither a NIfTI/NRRD/MHA image ({', '.join(ITK_SUFFIXES)}) nor a DICOM file"]
        return None, list(report.problems) or ["holds no DICOM series"]
    problems = list(report.all_problems)
    expected = ROLE_MODALITIES.get(role)
    if expected is None:  # unknown role, reported already: no modality to compare with
        expected = frozenset(s.modality for s in report.series)
    matching = [s for s in report.series if s.modality in expected]
    # Contours or dose saved beside the images they belong to are common and harmless for an image row.
    ignored = NON_IMAGE_MODALITIES if role != "mask" else frozenset()
    others = [s for s in report.series if s.modality not in expected and s.modality not in ignored]
    if not matching:
        found = ", ".join(f"{s.modality} ({s.description or 'no description'})" for s in report.series)
        problems.append(f"holds {found}; a {role} row expects {' or '.join(sorted(expected))}")
    elif others:
        found = ", ".join(f"{s.modality} ({s.description or 'no description'})" for s in others)
        problems.append(f"also holds {found}; put each series in its own folder and give it its own row")
    if len(matching) > 1 and not report.problems:  # inspect_dicom_folder reports image series mixed in one folder
        problems.append(f"holds {len(matching)} {matching[0].modality} series; one series per folder and row")
    chosen = matching[0] if matching else report.series[0]
    return (
        _ImageInfo(
            spacing_zyx_mm=chosen.spacing_zyx_mm,
            series_uids=tuple(s.series_uid for s in matching),
            modality=chosen.modality or "DICOM",
            dicom_patient_id=_header_patient_id(chosen.files[0]) if chosen.files else None,
        ),
        problems,
    )


def _header_patient_id(file: Path) -> str | None:
    from ludl.io.dicom_file import read_dicom_file

    try:
        value = str(read_dicom_file(file, pixels=False).get("PatientID", "") or "").strip()
    except LudlError:
        return None  # reported by the series check
    return value or None


def _patient_id_problems(found: Sequence[tuple[ManifestRow, str]], out: ProblemList) -> None:
    """One DICOM PatientID per manifest patient, and no DICOM PatientID shared by two manifest patients.

    The IDs may differ from the manifest's (pseudonymised data): only their agreement is checked, which catches a
    folder of another patient listed under this one. Messages never print the IDs (they identify people).
    """
    first_of_patient: dict[str, tuple[ManifestRow, str]] = {}
    owner: dict[str, ManifestRow] = {}
    for row, dicom_id in found:
        first = first_of_patient.setdefault(row.patient_id, (row, dicom_id))
        if dicom_id != first[1]:
            out.add(
                row.line,
                f"{row.role} {row.path!r} carries another DICOM PatientID than line {first[0].line} of patient "
                f"{row.patient_id}; check that the folder is this patient's (IDs not shown: they identify people)",
            )
            continue
        other = owner.setdefault(dicom_id, row)
        if other.patient_id != row.patient_id:
            out.add(
                row.line,
                f"{row.role} {row.path!r} carries the DICOM PatientID of patient {other.patient_id} (line "
                f"{other.line}); two manifest patients cannot share one patient's images",
            )


def _inspect_image(path: Path, role: str) -> tuple[_ImageInfo | None, list[str]]:
    if path.is_file() and path.name.lower().endswith(ITK_SUFFIXES):
        return _inspect_itk_file(path)
    return _inspect_dicom(path, role)


def image_problems(
    rows: Sequence[ManifestRow], root: Path, file: str
) -> tuple[list[Problem], dict[str, list[tuple[float, float, float]]]]:
    """Open every image header once; return problems and the voxel sizes (mm, z, y, x) per role."""
    out = ProblemList(file)
    spacings: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    series_rows: dict[str, ManifestRow] = {}
    patient_ids: list[tuple[ManifestRow, str]] = []
    for r in rows:
        if not r.path or os.path.isabs(r.path):
            continue
        path = root / r.path
        if not path.exists():
            out.add(r.line, f"{r.role or 'image'} {r.path!r} not found in the cohort folder")
            continue
        if not is_within(path, root):
            out.add(
                r.line,
                f"{r.role or 'image'} {r.path!r} is a link to {path.resolve()}, outside the cohort folder; copy the "
                "image into the cohort so it moves and is checked with it",
            )
            continue
        info, messages = _inspect_image(path, r.role)
        for message in messages:
            out.add(r.line, f"{r.role or 'image'} {r.path!r}: {message}")
        if info is None:
            continue
        if r.role == "spect" and r.time_h is None and info.modality is None:
            out.add(r.line, f"spect {r.path!r} is not DICOM, so it carries no acquisition time; give time_h")
        for uid in info.series_uids:
            if uid in series_rows:
                first = series_rows[uid]
                out.add(
                    r.line,
                    f"{r.role} {r.path!r} holds DICOM series {uid}, which is also in {first.path!r} "
                    f"(line {first.line}); one series, one folder, one row",
                )
            else:
                series_rows[uid] = r
        if info.dicom_patient_id is not None and r.patient_id:
            patient_ids.append((r, info.dicom_patient_id))
        if info.spacing_zyx_mm is not None and r.role in ROLES:
            spacings[r.role].append(info.spacing_zyx_mm)
    _patient_id_problems(patient_ids, out)
    return out, spacings
