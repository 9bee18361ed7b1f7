"""Rasterise DICOM RT Structure Set contours onto an image grid.

Each closed planar contour is mapped into the grid's continuous index space and filled by the even-odd rule,
pixel centres inside the polygon being in the structure (a centre exactly on a left/lower edge counts, on a
right/upper edge does not, so adjacent polygons never share a pixel). All contours of one structure on one
plane are filled together, so a contour inside another is a hole (the same as XOR, and as CLOSEDPLANAR_XOR).
A grid slice takes the contour plane nearest to it within half the larger of the slice and plane spacings (a
half-open slab), so a structure contoured every 2 slices fills the slices between, one contoured finer than the
grid is sampled, and the rasterised thickness stays (number of planes) × (plane spacing).
Contour planes must be parallel to the grid's slices (resample the grid otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, GeometryError, InputError
from ludl.imaging.volume import Volume
from ludl.io.dicom_file import reads_dicom

__all__ = ["fill_polygons", "read_rtstruct", "read_rtstruct_masks", "rtstruct_roi_names"]

_RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_CLOSED_TYPES = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")
# Contour points may wander off their plane by rounding only; a quarter slice means the planes are tilted.
_PLANE_TOLERANCE_SLICES = 0.25


def fill_polygons(polygons_xy: Sequence[npt.ArrayLike], shape_yx: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Even-odd fill of polygons given in continuous (x, y) index coordinates; pixel (j, i) has its centre at (i, j).

    Args:
        polygons_xy: closed polygons, each an (n, 2) array of (x, y) index coordinates (last point joins the first).
        shape_yx: output shape (rows, columns).

    Returns:
        Boolean (rows, columns) array, True where a pixel centre lies inside an odd number of polygons.
    """
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    toggles = np.zeros((ny, nx + 1), dtype=np.int32)
    for polygon in polygons_xy:  # a loop over contours; each is filled vectorised over its edges and rows
        pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            continue
        x0, y0 = pts[:, 0], pts[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        # Rows j with lo <= j < hi: half-open, so a vertex shared by two edges is counted once.
        first = np.maximum(np.ceil(lo), 0).astype(np.int64)
        last = np.minimum(np.ceil(hi) - 1, ny - 1).astype(np.int64)
        counts = np.maximum(last - first + 1, 0)
        total = int(counts.sum())
        if total == 0:
            continue
        edge = np.repeat(np.arange(len(pts)), counts)
        starts = np.cumsum(counts) - counts
        rows = first[edge] + (np.arange(total) - starts[edge])
        t = (rows - y0[edge]) / (y1[edge] - y0[edge])
        x_cross = x0[edge] + t * (x1[edge] - x0[edge])
        # Pixels at or right of the crossing flip inside/outside; cumulative parity along the row does the rest.
        cols = np.clip(np.ceil(x_cross), 0, nx).astype(np.int64)
        np.add.at(toggles, (rows, cols), 1)
    return np.asarray((np.cumsum(toggles, axis=1)[:, :nx] % 2) == 1)


def _read_structure_set(path: str | os.PathLike[str]) -> tuple[Any, Path]:
    import pydicom

    from ludl.io.dicom_series import inspect_dicom_folder, select_series

    src = Path(path)
    if src.is_dir():
        summary = select_series(inspect_dicom_folder(src), "RTSTRUCT")
        if summary.n_files != 1:
            raise DicomError(f"{src}: the RTSTRUCT series has {summary.n_files} files; give the one file to read")
        src = summary.files[0]
    if not src.is_file():
        raise DicomError(f"{src}: no such file; check the path")
    try:
        ds = pydicom.dcmread(src, force=True)
    except Exception as err:  # corrupt data can raise many types
        raise DicomError(f"{src}: unreadable or truncated DICOM file ({type(err).__name__}: {err})") from err
    if str(ds.get("SOPClassUID", "")) != _RTSTRUCT_SOP_CLASS and ds.get("Modality") != "RTSTRUCT":
        raise DicomError(f"{src}: not an RT Structure Set (Modality {ds.get('Modality')!r})")
    if "StructureSetROISequence" not in ds or "ROIContourSequence" not in ds:
        raise DicomError(f"{src}: RT Structure Set without StructureSetROISequence/ROIContourSequence (truncated?)")
    return ds, src


def _rois(ds: Any) -> dict[str, tuple[int, str | None]]:
    """ROI name → (ROI number, referenced frame of reference)."""
    out: dict[str, tuple[int, str | None]] = {}
    for roi in ds.StructureSetROISequence:
        name = str(roi.get("ROIName", "") or f"roi_{roi.ROINumber}").strip()
        frame = roi.get("ReferencedFrameOfReferenceUID")
        out.setdefault(name, (int(roi.ROINumber), str(frame) if frame else None))
    return out


def _closed_contours(ds: Any) -> dict[int, list[npt.NDArray[np.float64]]]:
    contours: dict[int, list[npt.NDArray[np.float64]]] = {}
    for item in ds.ROIContourSequence:
        number = int(item.ReferencedROINumber)
        for contour in item.get("ContourSequence") or []:
            if str(contour.get("ContourGeometricType", "")).upper() not in _CLOSED_TYPES:
                continue
            data = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64)
            if data.size % 3 or data.size < 9:
                continue
            contours.setdefault(number, []).append(data.reshape(-1, 3))
    return contours


@reads_dicom
def rtstruct_roi_names(path: str | os.PathLike[str]) -> list[str]:
    """Names of the structures in an RT Structure Set (all of them, contoured or not), in file order."""
    ds, _ = _read_structure_set(path)
    return list(_rois(ds))


def _match(wanted: Sequence[str], available: Sequence[str], src: Path) -> list[str]:
    folded = {a.strip().lower(): a for a in available}
    out = []
    for name in wanted:
        if name in available:
            out.append(name)
        elif name.strip().lower() in folded:
            out.append(folded[name.strip().lower()])
        else:
            raise DicomError(f"{src}: no structure named {name!r}; the file holds {list(available)}")
    return out


def _touches_grid(contours: list[npt.NDArray[np.float64]], grid: Volume) -> bool:
    """True when any contour point lies within the grid's extent (voxel edges included)."""
    upper = np.asarray(grid.shape, dtype=np.float64) - 0.5
    for points in contours:
        index = grid.physical_to_index(points)
        if np.any(np.all((index >= -0.5) & (index <= upper), axis=1)):
            return True
    return False


def _rasterise(contours: list[npt.NDArray[np.float64]], grid: Volume, src: Path, name: str) -> npt.NDArray[np.bool_]:
    nz, ny, nx = grid.shape
    planes: dict[float, list[npt.NDArray[np.float64]]] = {}
    for points in contours:
        index = grid.physical_to_index(points)  # (n, 3) continuous (z, y, x)
        z = index[:, 0]
        if float(np.ptp(z)) > _PLANE_TOLERANCE_SLICES:
            raise GeometryError(
                f"{src}: a contour of {name!r} spans {np.ptp(z):.2f} slices of the grid: its plane is not parallel to "
                "the grid's slices; resample the grid to the orientation the contours were drawn on"
            )
        key = round(float(z.mean()), 3)
        planes.setdefault(key, []).append(index[:, [2, 1]])  # (x, y) for the fill
    mask = np.zeros(grid.shape, dtype=bool)
    if not planes:
        return mask
    plane_z = np.asarray(sorted(planes))
    plane_step = float(np.median(np.diff(plane_z))) if len(plane_z) > 1 else 1.0
    # Each plane stands for a slab of ± half its spacing, half-open like the in-plane rule, so a structure's
    # rasterised thickness is (number of planes) × (plane spacing) whatever the grid's slice spacing.
    reach = 0.5 * max(1.0, plane_step)
    slices = np.arange(nz)
    # Ties (a slice midway between planes) go to the upper plane, matching the half-open slab below.
    nearest = np.abs(slices[:, None] - plane_z[None, :] + 1e-9).argmin(axis=1)
    offset = slices - plane_z[nearest]
    use = (offset >= -reach - 1e-6) & (offset < reach - 1e-6)
    filled: dict[int, npt.NDArray[np.bool_]] = {}
    for k in np.nonzero(use)[0]:  # a loop over slices; each slice is filled vectorised
        p = int(nearest[k])
        if p not in filled:
            filled[p] = fill_polygons(planes[float(plane_z[p])], (ny, nx))
        mask[k] = filled[p]
    return mask


@reads_dicom
def read_rtstruct_masks(
    path: str | os.PathLike[str], grid: Volume, names: Sequence[str] | None = None
) -> dict[str, npt.NDArray[np.bool_]]:
    """One boolean mask per structure on `grid` (structures may overlap here, unlike in a label map).

    Args:
        path: RTSTRUCT file, or a folder holding one.
        grid: any Volume on the target grid (e.g. the CT or SPECT the contours belong to).
        names: structures to read (missing ones raise `DicomError`); default every structure with closed contours.
    """
    ds, src = _read_structure_set(path)
    rois = _rois(ds)
    contours = _closed_contours(ds)
    if names is None:
        chosen = [n for n, (number, _) in rois.items() if number in contours]
        if not chosen:
            raise DicomError(f"{src}: no structure has closed planar contours; nothing to rasterise")
    else:
        if isinstance(names, str):
            raise InputError("names must be a list of structure names, not one string")
        chosen = _match(list(names), list(rois), src)
    grid_frame = grid.meta.get("FrameOfReferenceUID")
    masks = {}
    for name in chosen:
        number, frame = rois[name]
        if grid_frame and frame and str(grid_frame) != frame:
            raise GeometryError(
                f"{src}: structure {name!r} was drawn in frame of reference {frame}, the grid is in {grid_frame}; "
                "register the images and resample the grid first"
            )
        if number not in contours:
            raise DicomError(f"{src}: structure {name!r} has no closed planar contours (points or open contours only)")
        masks[name] = _rasterise(contours[number], grid, src, name)
        if not masks[name].any() and not _touches_grid(contours[number], grid):
            raise GeometryError(
                f"{src}: the contours of structure {name!r} lie outside the image they are read onto (no voxel "
                "inside them); check that the RTSTRUCT belongs to this image"
            )
    return masks


@reads_dicom
def read_rtstruct(
    path: str | os.PathLike[str], grid: Volume, names: Sequence[str] | None = None
) -> tuple[Volume, list[str]]:
    """Rasterise an RT Structure Set into a label map on `grid`: label i + 1 is ``names[i]``; 0 is background.

    Args:
        path: RTSTRUCT file, or a folder holding one.
        grid: any Volume on the target grid.
        names: structures to read, in label order; default every structure with closed contours, in file order.
            Where structures overlap, the later one in this order wins (list ``body`` first).

    Returns:
        (label Volume (uint16, unit "label", ``meta["label_names"]`` {value: name}), names in label order).
    """
    masks = read_rtstruct_masks(path, grid, names)
    order = list(masks)
    labels = np.zeros(grid.shape, dtype=np.uint16)
    for value, name in enumerate(order, start=1):  # a loop over structures, not voxels
        labels[masks[name]] = value
    meta: dict[str, Any] = {"Modality": "RTSTRUCT", "label_names": {i + 1: n for i, n in enumerate(order)}}
    if grid.meta.get("FrameOfReferenceUID"):
        meta["FrameOfReferenceUID"] = grid.meta["FrameOfReferenceUID"]
    volume = Volume(labels, grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit="label", meta=meta)
    return volume, order
