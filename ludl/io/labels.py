"""Read a label map from whatever an institution supplies: DICOM RTSTRUCT, DICOM SEG or NIfTI."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ludl.errors import DicomError, InputError, UnitsError
from ludl.imaging.volume import Volume

__all__ = ["read_labels"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")

Names = Sequence[str] | Mapping[str, int] | None


def _mapping(names: Names) -> dict[str, int] | None:
    if names is None:
        return None
    if isinstance(names, str):
        raise InputError("names must be a list of region names or a name → label value mapping, not one string")
    if isinstance(names, Mapping):
        mapping = {str(k): int(v) for k, v in names.items()}
    else:
        mapping = {str(n): i + 1 for i, n in enumerate(names)}
    if any(v <= 0 for v in mapping.values()) or len(set(mapping.values())) != len(mapping):
        raise InputError(f"label values must be positive and distinct (0 is background), got {mapping}")
    return mapping


def _compact(array: np.ndarray) -> np.ndarray:
    top = int(array.max()) if array.size else 0
    for dtype in (np.uint8, np.uint16, np.int32):
        if top <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise InputError(f"label values up to {top} do not fit a 32-bit label map")


def _on_grid(volume: Volume, grid: Volume | None) -> Volume:
    if grid is None or volume.same_grid(grid):
        return volume
    from ludl.imaging.resample import resample_to

    return resample_to(volume, grid)


def _read_nifti_labels(src: Path, grid: Volume | None, mapping: dict[str, int] | None) -> tuple[Volume, dict[str, int]]:
    from ludl.io.nifti import read_nifti

    try:
        volume = read_nifti(src)
    except UnitsError:  # a file not written by ludl carries no unit note: it is a label map by request
        volume = read_nifti(src, unit="label")
    values = np.asarray(volume.array)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise InputError(f"{src}: voxel values are not whole numbers; this is not a label map")
    if values.size and values.min() < 0:
        raise InputError(f"{src}: negative label values; labels are 0 (background) or positive integers")
    labels = _compact(np.asarray(values, dtype=np.int64))
    present = sorted(int(v) for v in np.unique(labels) if v != 0)
    if mapping is None:
        found = {f"label_{v}": v for v in present}
    else:
        unknown = sorted(set(present) - set(mapping.values()))
        if unknown:
            raise InputError(f"{src}: label values {unknown} are not in the given names {mapping}")
        found = {n: v for n, v in mapping.items() if v in present}
    meta = {**volume.meta, "label_names": {v: n for n, v in found.items()}}
    return _on_grid(volume.with_array(labels, unit="label", **meta), grid), found


def _modality(src: Path) -> str:
    from ludl.io.dicom_series import inspect_dicom_folder

    report = inspect_dicom_folder(src)
    kinds = sorted({s.modality for s in report.series if s.modality in ("RTSTRUCT", "SEG")})
    if len(kinds) != 1:
        found = ", ".join(f"{s.modality} ({s.n_files} files)" for s in report.series) or "no DICOM series"
        raise DicomError(f"{src}: expected one RTSTRUCT or SEG object, found {found}")
    return kinds[0]


def read_labels(
    path: str | os.PathLike[str], grid: Volume | None = None, *, names: Names = None
) -> tuple[Volume, dict[str, int]]:
    """Read a label map from an RTSTRUCT, a DICOM SEG or a NIfTI file, optionally onto `grid`.

    Args:
        path: RTSTRUCT or SEG file (or a folder holding exactly one), or a ``.nii``/``.nii.gz`` label map.
        grid: target grid (labels resampled by nearest neighbour); required for RTSTRUCT, whose contours have none.
        names: region names in label order, or region name → label value (e.g. cohort.yaml ``labels``). For
            RTSTRUCT and SEG the structures are matched by name; regions absent from the file are simply not in
            the returned mapping (institutions may label only some organs). Default: every structure, numbered in
            file order (NIfTI: values named ``label_<value>``).

    Returns:
        (label Volume, region name → label value of the regions present).

    Raises:
        DicomError: not a label object, unreadable file, structure names that do not match.
        GeometryError: contours or segments that cannot be placed on `grid`.
    """
    src = Path(path)
    mapping = _mapping(names)
    if src.name.lower().endswith(_NIFTI_SUFFIXES):
        return _read_nifti_labels(src, grid, mapping)
    if not src.exists():
        raise DicomError(f"{src}: no such file or folder; check the path")
    kind = _modality(src)
    if kind == "RTSTRUCT":
        from ludl.io.rtstruct import read_rtstruct_masks, rtstruct_roi_names

        if grid is None:
            raise InputError(
                f"{src}: an RTSTRUCT holds contours, not voxels; pass grid= (the image the contours were drawn on)"
            )
        if mapping is None:
            masks = read_rtstruct_masks(src, grid)
            mapping = {name: i + 1 for i, name in enumerate(masks)}
        else:
            available = {n.strip().lower(): n for n in rtstruct_roi_names(src)}
            wanted = [n for n in mapping if n.strip().lower() in available]
            if not wanted:
                structures = sorted(available.values())
                raise DicomError(f"{src}: none of {sorted(mapping)} is among its structures {structures}")
            masks = read_rtstruct_masks(src, grid, wanted)
            mapping = {n: mapping[n] for n in wanted}
        top = max(mapping.values())
        labels = np.zeros(grid.shape, dtype=np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)
        for name, mask in zip(mapping, masks.values(), strict=True):  # later structures win where they overlap
            labels[mask] = mapping[name]
        meta = {"Modality": "RTSTRUCT", "label_names": {v: n for n, v in mapping.items()}}
        if grid.meta.get("FrameOfReferenceUID"):
            meta["FrameOfReferenceUID"] = grid.meta["FrameOfReferenceUID"]
        volume = Volume(labels, grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit="label", meta=meta)
        return volume, mapping
    from ludl.io.seg import read_seg

    seg_file = src
    if src.is_dir():
        from ludl.io.dicom_series import inspect_dicom_folder, select_series

        summary = select_series(inspect_dicom_folder(src), "SEG")
        if summary.n_files != 1:
            raise DicomError(f"{src}: the SEG series has {summary.n_files} files; give the one file to read")
        seg_file = summary.files[0]
    volume, found = read_seg(seg_file, grid, names=mapping)
    labels_meta = {**volume.meta, "label_names": {v: n for n, v in found.items()}}
    return volume.with_array(_compact(np.asarray(volume.array)), **labels_meta), found
