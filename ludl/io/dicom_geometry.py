"""Geometry of a DICOM image series: multi-frame NM reconstructions and stacks of single-frame slices.

PixelSpacing is (row spacing = y, column spacing = x). Slices are sorted by the projection of ImagePositionPatient
on the normal, so the output z axis always runs along +normal (a right-handed direction matrix). Multi-frame NM
(RECON TOMO, PS3.3 C.8.4.15): frame k lies at IPP + (SliceVector[k] - SliceVector[0]) · SpacingBetweenSlices · normal,
and SpacingBetweenSlices is signed (negative: slices stacked against the normal).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, GeometryError, LudlError
from ludl.imaging.volume import Volume
from ludl.io.dicom_file import DicomHeader
from ludl.io.dicom_tags import direction_matrix, frame_count, image_orientation, image_position, tag_floats

__all__ = ["SeriesGeometry", "multiframe_geometry", "stack_geometry"]

_SLICE_VECTOR_TAG = 0x00540080
# Tolerances (mm unless stated): DS values carry ≤ 16 characters, so 1e-3 mm is far above rounding noise.
_DUPLICATE_MM = 1e-3
_GAP_FACTOR = 1.5  # a step > 1.5 × the median step means at least one missing slice
_UNEVEN_REL = 0.01  # steps differing by > 1 % from the median need resampling
_OFF_NORMAL_MM = 0.01  # slice origins off the normal line (gantry tilt, shear)
_ORIENTATION_TOL = 1e-4


@dataclass(frozen=True, eq=False)
class SeriesGeometry:
    """Geometry of a sorted series: the z axis runs along +normal.

    Attributes:
        shape_zyx: array shape (slices, rows, columns).
        spacing_zyx_mm: voxel size (slice step, row spacing, column spacing) in mm.
        origin_xyz_mm: LPS centre of the first voxel of the first sorted slice.
        direction: ITK 3×3 direction matrix (columns: row direction, column direction, normal).
        frame_order: for a multi-frame file, the frame numbers (0-based) in sorted slice order; None otherwise.
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: npt.NDArray[np.float64]
    frame_order: tuple[int, ...] | None = None

    def to_volume(self, array: npt.ArrayLike, unit: str, meta: dict[str, Any] | None = None) -> Volume:
        """A `Volume` holding `array` (z, y, x) on this geometry."""
        values = np.asarray(array)
        if tuple(values.shape) != self.shape_zyx:
            raise GeometryError(f"array shape {values.shape} does not match the series geometry {self.shape_zyx}")
        return Volume(values, self.spacing_zyx_mm, self.origin_xyz_mm, self.direction, unit=unit, meta=meta or {})


def _frame_offsets(
    ds: Any, name: str, n_frames: int, step_mm: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """(frame order along +normal, sorted frame offsets along the normal from the stated position, mm)."""
    slice_vector = ds.get("SliceVector")
    if slice_vector is not None and len(slice_vector) == n_frames:
        slices = np.asarray([int(v) for v in slice_vector], dtype=np.int64) - 1
    elif slice_vector is not None:
        raise GeometryError(f"{name}: SliceVector has {len(slice_vector)} entries for {n_frames} frames")
    else:
        slices = np.arange(n_frames, dtype=np.int64)
    if len(np.unique(slices)) != n_frames:
        raise GeometryError(f"{name}: SliceVector repeats slice numbers; frames would overlap")
    # Frame k lies (slice_k - slice_0) steps of the signed spacing along the normal from the stated position.
    offsets_mm = (slices - slices[0]).astype(np.float64) * step_mm
    order = np.argsort(offsets_mm, kind="stable")
    sorted_offsets = offsets_mm[order]
    if n_frames > 1:
        steps = np.diff(sorted_offsets)
        if not np.allclose(steps, abs(step_mm), rtol=1e-6, atol=1e-6):
            raise GeometryError(f"{name}: SliceVector leaves gaps between slices (steps {np.unique(steps)} mm)")
    return order, sorted_offsets


def multiframe_geometry(ds: Any, source: str | os.PathLike[str] = "") -> SeriesGeometry:
    """Geometry of a multi-frame NM reconstruction (RECON TOMO); `GeometryError` naming `source` if incomplete."""
    name = str(source) or "multi-frame DICOM file"
    detectors = ds.get("DetectorInformationSequence") or []
    if len(detectors) > 1:
        placements = {
            tuple(
                (tag_floats(d.get("ImagePositionPatient")) or []) + (tag_floats(d.get("ImageOrientationPatient")) or [])
            )
            for d in detectors
        }
        if len(placements) > 1:
            raise GeometryError(
                f"{name}: {len(detectors)} DetectorInformationSequence items place the volume differently; a "
                "reconstruction has one placement: export each reconstruction (bed) as its own file"
            )
    iop = image_orientation(ds)
    ipp = image_position(ds)
    spacing_2d = tag_floats(ds.get("PixelSpacing"))
    required = (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp), ("PixelSpacing", spacing_2d))
    missing = [tag for tag, value in required if value is None]
    n_frames = frame_count(ds)
    step = tag_floats(ds.get("SpacingBetweenSlices"))
    if n_frames > 1 and not step:
        missing.append("SpacingBetweenSlices")
    if missing:
        raise GeometryError(
            f"{name}: geometry incomplete, missing {', '.join(missing)} (looked at the top level and in "
            "DetectorInformationSequence); ludl never assumes a default spacing or position: re-export the "
            "reconstruction with full geometry"
        )
    assert iop is not None and ipp is not None and spacing_2d is not None  # for the type checker; checked above
    if len(spacing_2d) != 2 or min(spacing_2d) <= 0:
        raise GeometryError(f"{name}: PixelSpacing {spacing_2d} is not two positive numbers")
    if n_frames == 1 and not step:
        thickness = tag_floats(ds.get("SliceThickness"))
        step = thickness
        if not step:
            raise GeometryError(f"{name}: single frame without SpacingBetweenSlices or SliceThickness")
    assert step is not None
    step_mm = float(step[0])
    if step_mm == 0.0 or not np.isfinite(step_mm):
        raise GeometryError(f"{name}: SpacingBetweenSlices is {step_mm}; it must be a non-zero distance in mm")
    direction = direction_matrix(iop)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise GeometryError(f"{name}: ImageOrientationPatient {iop} is not two orthogonal unit vectors")
    pointers = ds.get("FrameIncrementPointer")
    pointer_list = [] if pointers is None else (list(pointers) if isinstance(pointers, Sequence) else [pointers])
    pointer_ints = [int(p) for p in pointer_list]
    if n_frames > 1 and pointer_ints and pointer_ints != [_SLICE_VECTOR_TAG]:
        raise GeometryError(
            f"{name}: frames step along {[f'({p >> 16:04X},{p & 0xFFFF:04X})' for p in pointer_ints]}, not "
            "only the Slice Vector (0054,0080): this is not a single reconstructed volume (gated, dynamic or "
            "multi-window data); export one ungated reconstruction"
        )
    order, sorted_offsets = _frame_offsets(ds, name, n_frames, step_mm)
    normal = direction[:, 2]
    origin = np.asarray(ipp, dtype=np.float64) + sorted_offsets[0] * normal
    rows, cols = int(ds.Rows), int(ds.Columns)
    return SeriesGeometry(
        shape_zyx=(n_frames, rows, cols),
        spacing_zyx_mm=(abs(step_mm), float(spacing_2d[0]), float(spacing_2d[1])),
        origin_xyz_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        frame_order=tuple(int(i) for i in order),
    )


_Problems = list[tuple[type[LudlError], str]]


def _common_plane(headers: Sequence[DicomHeader]) -> tuple[list[float], tuple[Any, Any], list[float]] | str:
    """(orientation, (rows, columns), pixel spacing) shared by every slice, or the first difference found."""
    first = headers[0]
    iop0 = image_orientation(first.ds)
    if iop0 is None:
        return f"{first.path}: no ImageOrientationPatient; cannot place the slices"
    for h in headers:
        iop = image_orientation(h.ds)
        if iop is None or not np.allclose(iop, iop0, atol=_ORIENTATION_TOL):
            return f"{h.path}: orientation {iop} differs from {iop0} in {first.path}; split the series"
    size0 = (first.ds.get("Rows"), first.ds.get("Columns"))
    spacing0 = tag_floats(first.ds.get("PixelSpacing"))
    if spacing0 is None or len(spacing0) != 2 or min(spacing0) <= 0:
        return f"{first.path}: PixelSpacing missing or invalid ({spacing0})"
    for h in headers:
        if (h.ds.get("Rows"), h.ds.get("Columns")) != size0:
            return (
                f"{h.path}: image size {h.ds.get('Rows')}×{h.ds.get('Columns')} differs from "
                f"{size0[0]}×{size0[1]} in {first.path}"
            )
        sp = tag_floats(h.ds.get("PixelSpacing"))
        if sp is None or not np.allclose(sp, spacing0, rtol=1e-4, atol=1e-5):
            return f"{h.path}: PixelSpacing {sp} differs from {spacing0} in {first.path}"
    return iop0, size0, spacing0


def _slice_step(
    sorted_headers: list[DicomHeader],
    pos: npt.NDArray[np.float64],
    along: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
) -> tuple[float | None, _Problems]:
    """The median slice step of a sorted stack (None: all duplicates) and its duplicates, gaps, uneven steps, shear."""
    problems: _Problems = []
    steps = np.diff(along)
    for i in np.nonzero(steps < _DUPLICATE_MM)[0]:
        problems.append(
            (
                DicomError,
                f"{sorted_headers[i + 1].path}: duplicate slice position {along[i + 1]:.3f} mm along the normal "
                f"(same as {sorted_headers[i].path}); remove the duplicate or split the series",
            )
        )
    real = steps[steps >= _DUPLICATE_MM]
    if real.size == 0:
        return None, problems
    step = float(np.median(real))
    for i in np.nonzero(steps > _GAP_FACTOR * step)[0]:
        missing = round(steps[i] / step) - 1
        problems.append(
            (
                DicomError,
                f"{sorted_headers[i].path} → {sorted_headers[i + 1].path}: gap of {steps[i]:.3f} mm where "
                f"slices are {step:.3f} mm apart (about {missing} slice(s) missing); re-export the full series",
            )
        )
    uneven = (steps >= _DUPLICATE_MM) & (steps <= _GAP_FACTOR * step) & (np.abs(steps - step) > _UNEVEN_REL * step)
    for i in np.nonzero(uneven)[0]:
        problems.append(
            (
                GeometryError,
                f"{sorted_headers[i + 1].path}: slice step {steps[i]:.4f} mm differs from the median "
                f"{step:.4f} mm; the series is unevenly spaced and needs resampling before use",
            )
        )
    off = pos - pos[0] - np.outer(along - along[0], normal)
    off_mm = np.linalg.norm(off, axis=1)
    if off_mm.max() > _OFF_NORMAL_MM:
        worst = int(np.argmax(off_mm))
        problems.append(
            (
                GeometryError,
                f"{sorted_headers[worst].path}: slice origin lies {off_mm[worst]:.3f} mm off the slice normal "
                "(gantry tilt or sheared stack); resample to an orthogonal grid first",
            )
        )
    return step, problems


def stack_geometry(
    headers: Sequence[DicomHeader],
) -> tuple[list[DicomHeader], SeriesGeometry | None, _Problems]:
    """Sort single-frame headers along the normal and check the stack; never raises.

    Returns:
        (headers sorted along +normal, geometry or None when it cannot be built, (error type, message) problems).
    """
    first = headers[0]
    plane = _common_plane(headers)
    if isinstance(plane, str):
        return list(headers), None, [(GeometryError, plane)]
    iop0, size0, spacing0 = plane
    positions = []
    for h in headers:
        ipp = image_position(h.ds)
        if ipp is None:
            return list(headers), None, [(GeometryError, f"{h.path}: no ImagePositionPatient; cannot place the slice")]
        positions.append(ipp)
    direction = direction_matrix(iop0)
    normal = direction[:, 2]
    pos = np.asarray(positions, dtype=np.float64)
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    sorted_headers = [headers[i] for i in order]
    pos, along = pos[order], along[order]
    n = len(sorted_headers)
    problems: _Problems = []
    if n == 1:
        step_values = tag_floats(first.ds.get("SpacingBetweenSlices")) or tag_floats(first.ds.get("SliceThickness"))
        if not step_values or step_values[0] <= 0:
            message = f"{first.path}: single slice without SpacingBetweenSlices or SliceThickness"
            return sorted_headers, None, [(GeometryError, message)]
        step = abs(float(step_values[0]))
    else:
        median_step, problems = _slice_step(sorted_headers, pos, along, normal)
        if median_step is None:
            return sorted_headers, None, problems
        step = median_step
    geometry = SeriesGeometry(
        shape_zyx=(n, int(size0[0]), int(size0[1])),
        spacing_zyx_mm=(step, float(spacing0[0]), float(spacing0[1])),
        origin_xyz_mm=(float(pos[0, 0]), float(pos[0, 1]), float(pos[0, 2])),
        direction=direction,
    )
    return sorted_headers, geometry, problems
