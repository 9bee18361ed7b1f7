"""Deep cohort validation: every manifest image's pixel data read once and checked (`ludl validate deep=true`).

What a header check cannot see: a NIfTI whose gzip stream is cut or corrupt, DICOM pixel data shorter than its
header announces or that cannot be decoded, values the role's reader refuses (NM without calibration or with a zero
slope, PET without dose or time, a CT not in HU, contours off the image …), NaN/inf voxels, an empty or all-zero
SPECT/PET, a label map without labels. Each problem names the manifest line and the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import LudlError
from ludl.io.cohort import CohortConfig
from ludl.io.manifest_schema import ITK_SUFFIXES, ManifestRow, Problem, ProblemList

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


def _ct_grid(rows: Sequence[ManifestRow], row: ManifestRow, root: Path) -> Any:
    """The CT a DICOM label map (RTSTRUCT/SEG) of `row` is read onto: the ct row of the same time point."""
    from ludl.io.cohort_images import read_nifti_in_unit
    from ludl.io.ct import read_ct

    for r in rows:
        if (r.patient_id, r.cycle, r.role, r.timepoint_h) == (row.patient_id, row.cycle, "ct", row.timepoint_h):
            path = root / r.path
            return read_nifti_in_unit(path, "HU") if path.name.lower().endswith((".nii", ".nii.gz")) else read_ct(path)
    raise LudlError("a DICOM label map needs the ct row of its time point to be read onto; add it to the manifest")


def _dicom_values(
    rows: Sequence[ManifestRow], row: ManifestRow, root: Path, config: CohortConfig | None
) -> np.ndarray | None:
    """The row's DICOM image read by the reader the pipelines use (so every value they check is checked here)."""
    path = root / row.path
    if row.role == "spect":
        from ludl.io.nm import read_nm

        volume = read_nm(
            path,
            sensitivity_cps_per_mbq=row.sensitivity_cps_per_mbq or (config.sensitivity_cps_per_mbq if config else None),
            acquisition_s=row.acquisition_s,
            deadtime_factor=row.deadtime_factor or 1.0,
        )
    elif row.role in ("ct", "pet_ct"):
        from ludl.io.ct import read_ct

        volume = read_ct(path)
    elif row.role == "pet":
        from ludl.io.pet import read_pet

        volume = read_pet(path, weight_kg=row.weight_kg, injected_mbq=row.pet_injected_mbq)
    elif row.role == "mask":
        from ludl.io.labels import read_labels

        names = dict(config.labels) if config is not None and config.labels else None
        volume, _ = read_labels(path, grid=_ct_grid(rows, row, root), names=names)
    else:
        return None
    return np.asarray(volume.array)


def pixel_problems(rows: Sequence[ManifestRow], root: Path, config: CohortConfig | None, file: str) -> list[Problem]:
    """Read every row's image as the pipelines do (NIfTI checked whole, DICOM through its role's reader); problems."""
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
                values = _dicom_values(rows, r, root, config)
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
