"""Deep cohort validation: every manifest image's pixel data read once and checked (`ludl validate deep=true`).

What a header check cannot see: a NIfTI whose gzip stream is cut or corrupt, DICOM pixel data shorter than its
header announces or that cannot be decoded, NaN/inf voxels, an empty or all-zero SPECT/PET, a label map without
labels. Each problem names the manifest line and the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import LudlError
from ludl.io.cohort import CohortConfig
from ludl.io.manifest_schema import ITK_SUFFIXES, ROLE_MODALITIES, ManifestRow, Problem, ProblemList

__all__ = ["array_problems", "pixel_problems"]

# Float-typed images whose units say "quantity" where all zeros can only mean a failed export.
_ACTIVITY_ROLES = frozenset({"spect", "pet"})
# PET exports mark voxels outside the field of view with NaN; the PET reader reads them as 0 (`read_pet_suv_row`).
_NONFINITE_TOLERATED = frozenset({"pet"})


def array_problems(values: np.ndarray, role: str) -> list[str]:
    """What is wrong with an image's voxel values for its role: empty, NaN/inf, all-zero activity, no labels."""
    array = np.asarray(values)
    if array.size == 0:
        return ["image holds no voxels; export it again"]
    problems: list[str] = []
    if np.issubdtype(array.dtype, np.floating) and role not in _NONFINITE_TOLERATED:
        n_nan = int(np.count_nonzero(np.isnan(array)))
        n_inf = int(np.count_nonzero(np.isinf(array)))
        if n_nan or n_inf:
            problems.append(
                f"{n_nan} NaN and {n_inf} infinite voxel value(s) of {array.size}; fix the export (ludl never "
                "guesses a value for them)"
            )
            return problems
    if role in _ACTIVITY_ROLES and not np.any(array):
        problems.append("every voxel is zero; the image is empty (failed export or wrong file?)")
    elif role == "mask" and not np.any(array):
        problems.append("the label map holds no labelled voxel; check the file or the labels in cohort.yaml")
    return problems


def _nifti_values(path: Path, role: str) -> np.ndarray:
    """A NIfTI/NRRD/MHA image's voxel values; NIfTI files are checked whole first (truncation, corrupt gzip)."""
    import SimpleITK as sitk

    from ludl.io.nifti import check_nifti_integrity

    if path.name.lower().endswith((".nii", ".nii.gz")):
        check_nifti_integrity(path, allow_nonfinite=role in _NONFINITE_TOLERATED)
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as err:
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise LudlError(f"cannot read the pixel data ({message}); export the image again") from err


def _dicom_values(path: Path, role: str) -> np.ndarray | None:
    """The stored pixel values of the row's series (every file decoded); None when it has no pixel data."""
    from ludl.io.dicom_file import read_dicom_file
    from ludl.io.dicom_series import inspect_dicom_folder

    report = inspect_dicom_folder(path)
    wanted = ROLE_MODALITIES.get(role, frozenset())
    series = [s for s in report.series if s.modality in wanted]
    if len(series) != 1:
        return None  # the header check reported it
    arrays: list[Any] = []
    for file in series[0].files:
        ds = read_dicom_file(file)  # decodes the pixel data: DicomError naming the file when cut or undecodable
        if "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
            slope = float(ds.get("RescaleSlope", 1) or 1)
            arrays.append(pixels * slope + float(ds.get("RescaleIntercept", 0) or 0))
    if not arrays:
        return None  # RTSTRUCT: contours, no pixels
    return np.concatenate([a.ravel() for a in arrays])


def pixel_problems(rows: Sequence[ManifestRow], root: Path, config: CohortConfig | None, file: str) -> list[Problem]:
    """Read every row's pixel data once (NIfTI whole-stream checked, DICOM decoded) and report what is wrong."""
    del config  # the checks depend on the role only; kept for a per-cohort policy (units) later
    out = ProblemList(file)
    seen: set[Path] = set()
    for r in rows:
        if not r.path or Path(r.path).is_absolute():
            continue
        path = root / r.path
        if not path.exists() or path in seen:
            continue
        seen.add(path)
        where = f"{r.role or 'image'} {r.path!r}"
        try:
            if path.is_file() and path.name.lower().endswith(ITK_SUFFIXES):
                values: np.ndarray | None = _nifti_values(path, r.role)
            else:
                values = _dicom_values(path, r.role)
        except LudlError as err:
            out.add(r.line, f"{where}: {err}")
            continue
        except (OSError, ValueError, MemoryError) as err:
            out.add(r.line, f"{where}: cannot read the pixel data ({type(err).__name__}: {err}); export it again")
            continue
        if values is not None:
            for message in array_problems(values, r.role):
                out.add(r.line, f"{where}: {message}")
    return out
