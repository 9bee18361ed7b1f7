"""Cohort images as Volumes in their unit: "manifest row → Volume" for SPECT (Bq/mL), CT (HU) and PET (SUV).

The one place that turns a manifest row into an image the pipelines can use, for `ludl dosimetry`, `ludl prepare`
and inference alike: NIfTI files carry their unit in a ludl note or take the cohort's unit for the role
(cohort.yaml ``units``); count images are calibrated with the row's ``sensitivity_cps_per_mbq`` (or the cohort
default), ``acquisition_s`` and ``deadtime_factor`` (docs/physics.md §6); nothing is guessed. Errors name the file and
the manifest line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ludl.errors import InputError, LudlError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.cohort import CohortConfig
from ludl.io.manifest import Manifest, ManifestRow
from ludl.physics.units import BQ_PER_MBQ, suv_bw

__all__ = [
    "NIFTI_SUFFIXES",
    "is_nifti",
    "read_ct_row",
    "read_mask_row",
    "read_nifti_in_unit",
    "read_pet_suv_row",
    "read_spect_row",
    "row_where",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` file name."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def row_where(manifest: Manifest, row: ManifestRow) -> str:
    """Human-readable origin of a row: role, path and manifest line."""
    return f"{row.role} {row.path!r} ({manifest.file.name} line {row.line})"


def read_nifti_in_unit(path: Path, unit: str, *, allow_nonfinite: bool = False) -> Volume:
    """A NIfTI image in the unit its ludl note names; without a note, in `unit` (the cohort's unit for the role)."""
    from ludl.io.nifti import read_nifti

    try:
        return read_nifti(path, allow_nonfinite=allow_nonfinite)
    except UnitsError:
        # a NIfTI written elsewhere: the cohort's unit for the role applies
        return read_nifti(path, unit=unit, allow_nonfinite=allow_nonfinite)


def _nifti_spect_bed(manifest: Manifest, config: CohortConfig, row: ManifestRow) -> Volume:
    """One NIfTI SPECT bed in Bq/mL, calibrated from counts when the cohort says the images are counts."""
    from ludl.io.nm import counts_to_bq_per_ml

    path = manifest.image_path(row)
    volume = read_nifti_in_unit(path, config.unit("spect"))
    values = np.asarray(volume.array, dtype=np.float64)
    if volume.unit == "Bq/mL":
        out = values
    elif volume.unit == "MBq/mL":
        out = values * BQ_PER_MBQ
    elif volume.unit == "counts":
        sensitivity = row.sensitivity_cps_per_mbq or config.sensitivity_cps_per_mbq
        if sensitivity is None or row.acquisition_s is None:
            missing = [
                name
                for name, value in (("sensitivity_cps_per_mbq", sensitivity), ("acquisition_s", row.acquisition_s))
                if value is None
            ]
            raise UnitsError(
                f"{row_where(manifest, row)} holds counts but has no {' and '.join(missing)}: give them in the "
                "manifest row (sensitivity may also be a cohort.yaml default) so the SPECT can be calibrated "
                "(docs/physics.md §6)"
            )
        out = counts_to_bq_per_ml(
            values,
            volume.voxel_volume_ml,
            acquisition_s=row.acquisition_s,
            sensitivity_cps_per_mbq=sensitivity,
            deadtime_factor=row.deadtime_factor or 1.0,
        )
    else:
        raise UnitsError(
            f"{row_where(manifest, row)} has unit {volume.unit!r}; a SPECT must be Bq/mL, MBq/mL or counts"
        )
    return volume.with_array(out.astype(np.float32), unit="Bq/mL")


def _stitch_nifti(beds: Sequence[Volume], where: str) -> tuple[Volume, np.ndarray]:
    """Stitch NIfTI beds exactly as DICOM beds are stitched (`ludl.io.nm`): nearest bed centre wins an overlap."""
    from ludl.io.nm import stitch_beds  # one stitching rule for DICOM and NIfTI beds

    try:
        return stitch_beds(list(beds))
    except LudlError as err:
        raise type(err)(f"{where}: {err}") from err


def _acquisition_s(rows: Sequence[ManifestRow]) -> list[float] | None:
    values = [r.acquisition_s for r in rows]
    return [float(v) for v in values if v is not None] if all(v is not None for v in values) else None


def read_spect_row(
    manifest: Manifest, config: CohortConfig, rows: Sequence[ManifestRow], bed_times_h: Sequence[float]
) -> tuple[Volume, Volume]:
    """Read the SPECT bed rows of one time point; returns (Bq/mL volume, bed-index label volume on its grid)."""
    paths = [manifest.image_path(r) for r in rows]
    where = "; ".join(row_where(manifest, r) for r in rows)
    for r, p in zip(rows, paths, strict=True):
        if not p.exists():
            raise InputError(f"{row_where(manifest, r)}: file not found")
    if all(is_nifti(p) for p in paths):
        beds = [_nifti_spect_bed(manifest, config, r) for r in rows]
        if len(beds) == 1:
            volume, bed_of_slice = beds[0], np.zeros(beds[0].shape[0], dtype=np.int64)
        else:
            volume, bed_of_slice = _stitch_nifti(beds, where)
    elif not any(is_nifti(p) for p in paths):
        from ludl.io.nm import read_nm_beds

        first = rows[0]
        try:
            volume, index = read_nm_beds(
                paths,
                list(bed_times_h),
                sensitivity_cps_per_mbq=first.sensitivity_cps_per_mbq or config.sensitivity_cps_per_mbq,
                acquisition_s=_acquisition_s(rows),
                deadtime_factor=first.deadtime_factor or 1.0,
            )
        except LudlError as err:
            raise type(err)(f"{where}: {err}") from err
        bed_of_slice = np.asarray(index.array)[:, 0, 0].astype(np.int64)
    else:
        raise InputError(f"{where}: the beds of one time point mix NIfTI and DICOM; give them in one format")
    index_map = np.broadcast_to(bed_of_slice.astype(np.int16)[:, None, None], volume.shape).copy()
    return volume, volume.with_array(index_map, unit="label")


def read_ct_row(manifest: Manifest, row: ManifestRow) -> Volume:
    """A CT row (``ct`` or ``pet_ct``) in HU; a missing or unreadable file raises `InputError` naming the row."""
    from ludl.io.ct import read_ct

    path = manifest.image_path(row)
    try:
        return read_nifti_in_unit(path, "HU") if is_nifti(path) else read_ct(path)
    except (LudlError, FileNotFoundError) as err:
        raise InputError(f"{row_where(manifest, row)}: {err}") from err


def read_mask_row(
    manifest: Manifest, config: CohortConfig, row: ManifestRow, grid: Volume
) -> tuple[Volume, dict[str, int]]:
    """A mask row's label map and its region name → value (cohort.yaml ``labels``, else the names in the file).

    A DICOM RTSTRUCT or SEG is rasterised onto `grid` (the CT it was drawn on); a NIfTI label map keeps its own grid.
    """
    from ludl.io.labels import read_labels

    path = manifest.image_path(row)
    try:
        labels, found = read_labels(path, grid=None if is_nifti(path) else grid, names=dict(config.labels) or None)
    except (LudlError, FileNotFoundError) as err:
        raise InputError(f"{row_where(manifest, row)}: {err}") from err
    return labels, dict(found)


def read_pet_suv_row(manifest: Manifest, config: CohortConfig, row: ManifestRow) -> Volume:
    """A PET row as body-weight SUV (float32, NaN/inf → 0), from DICOM (`read_pet`) or NIfTI in SUV or Bq/mL.

    A NIfTI PET in Bq/mL is taken as decay-corrected to injection (the PET norm) and needs the row's ``weight_kg``
    and ``pet_injected_mbq`` (`ludl.physics.units.suv_bw`). Errors keep their type and name the row.
    """
    from ludl.io.pet import read_pet

    path = manifest.image_path(row)
    try:
        if is_nifti(path):
            pet = read_nifti_in_unit(path, config.unit("pet"), allow_nonfinite=True)  # NaN/inf → 0 below
            if pet.unit == "Bq/mL":
                if row.weight_kg is None or row.pet_injected_mbq is None:
                    raise UnitsError(
                        f"{row_where(manifest, row)} is in Bq/mL: SUV needs weight_kg and pet_injected_mbq in the row"
                    )
                pet = pet.with_array(suv_bw(pet.array, row.weight_kg, row.pet_injected_mbq), unit="SUV")
            elif pet.unit != "SUV":
                raise UnitsError(f"{row_where(manifest, row)} has unit {pet.unit!r}; a PET must be SUV or Bq/mL")
        else:
            pet = read_pet(path, weight_kg=row.weight_kg, injected_mbq=row.pet_injected_mbq)
    except FileNotFoundError as err:
        raise InputError(f"{row_where(manifest, row)}: {err}") from err
    except LudlError as err:
        raise type(err)(f"{row_where(manifest, row)}: {err}") from err
    suv = np.nan_to_num(np.asarray(pet.array, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return pet.with_array(suv)
