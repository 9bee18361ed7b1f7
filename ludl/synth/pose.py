"""Patient pose at a scan: a rigid repositioning plus a slight smooth non-rigid deformation.

A `Pose` maps a point of the patient as it lies in the *reference* frame (the truth grid, the pose of the
reference time point) to where that point lies in the *scanner* frame of another scan:

    F(p) = y + u(y),   y = R (p − c) + c + t

with R a small rotation about the centre c, t the translation (the patient moved by t) and u a smooth displacement
field on a coarse control grid in the scanner frame (the slight non-rigid change of the repositioned patient).
Images of a scan are made by pulling the reference maps back through F⁻¹ (`apply_pose`); activity picks up the
Jacobian factor 1/det ∂F so that it is conserved.
docs/synthetic-cohort.md (SPECT/CT table, "pose"): rigid shifts of several mm, small rotations, slight non-rigid
deformation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import GeometryError, InputError
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume

__all__ = ["Pose", "PoseKind", "PoseSpec", "apply_pose", "grid_points_xyz", "random_pose", "rotation_matrix_xyz"]

FloatArray = npt.NDArray[np.float64]
FloatArray32 = npt.NDArray[np.float32]
PoseKind = Literal["linear", "nearest", "activity"]

# Output voxels handled per chunk when pulling images through a pose (bounds memory to a few hundred MB at most).
_CHUNK_VOXELS = 1 << 21


@dataclass(frozen=True)
class PoseSpec:
    """How patients are repositioned between scans (docs/synthetic-cohort.md, SPECT/CT "pose"; values: assumptions).

    Args:
        shift_sd_mm: standard deviation of the rigid shift per axis, mm ("rigid shifts of several mm").
        shift_max_mm: clip of the shift per axis, mm.
        rotation_sd_deg: standard deviation of each rotation angle, degrees.
        rotation_max_deg: clip of each rotation angle, degrees ("small rotations", ≤ 2–3°).
        deformation_rms_mm: rms length of the non-rigid displacement vector inside the field, mm (0 = rigid only).
        deformation_scale_mm: Gaussian correlation length (σ) of the displacement field, mm.
        control_spacing_mm: spacing of the control grid the displacement is stored on, mm.
    """

    shift_sd_mm: float = 4.0
    shift_max_mm: float = 12.0
    rotation_sd_deg: float = 1.0
    rotation_max_deg: float = 3.0
    deformation_rms_mm: float = 1.5
    deformation_scale_mm: float = 50.0
    control_spacing_mm: float = 20.0

    def __post_init__(self) -> None:
        for name in ("shift_sd_mm", "shift_max_mm", "rotation_sd_deg", "rotation_max_deg", "deformation_rms_mm"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"PoseSpec.{name} must be a finite number ≥ 0, got {value}")
        for name in ("deformation_scale_mm", "control_spacing_mm"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"PoseSpec.{name} must be > 0, got {value}")


def rotation_matrix_xyz(angles_deg: npt.ArrayLike) -> FloatArray:
    """3×3 rotation R = Rz·Ry·Rx for angles (about x, y, z) in degrees, acting on LPS (x, y, z) vectors."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64).reshape(3))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return np.asarray(rz @ ry @ rx)


@dataclass(frozen=True, eq=False)
class Pose:
    """Reference → scanner map F(p) = y + u(y), y = R(p − c) + c + t (see the module docstring).

    Args:
        rotation_deg_xyz: rotation angles about x, y, z in degrees (R = Rz·Ry·Rx).
        translation_xyz_mm: t, mm (a marker at p in the reference frame appears at p + t when R = I, u = 0).
        centre_xyz_mm: c, the rotation centre, mm.
        displacement_xyz_mm: u on the control grid (scanner frame), shape (3, nz, ny, nx), components in (x, y, z)
            order, mm; None for a rigid pose. Outside the control grid u is held at its border value.
        control_origin_xyz_mm: LPS position of control point [0, 0, 0], mm.
        control_spacing_mm: isotropic control-grid spacing, mm.
    """

    rotation_deg_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    centre_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    displacement_xyz_mm: FloatArray | None = None
    control_origin_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    control_spacing_mm: float = 20.0
    _jacobian: FloatArray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.displacement_xyz_mm is not None:
            disp = np.asarray(self.displacement_xyz_mm, dtype=np.float64)
            if disp.ndim != 4 or disp.shape[0] != 3 or min(disp.shape[1:]) < 2:
                raise GeometryError(f"displacement_xyz_mm must have shape (3, nz, ny, nx) with n ≥ 2, got {disp.shape}")
            object.__setattr__(self, "displacement_xyz_mm", disp)
            object.__setattr__(self, "_jacobian", _jacobian_det(disp, float(self.control_spacing_mm)))

    @classmethod
    def identity(cls) -> Pose:
        """The pose of the reference scan itself (F = identity)."""
        return cls()

    @property
    def rotation(self) -> FloatArray:
        """The 3×3 rotation matrix R."""
        return rotation_matrix_xyz(self.rotation_deg_xyz)

    @property
    def is_rigid(self) -> bool:
        """True when the pose has no non-rigid part."""
        return self.displacement_xyz_mm is None or not np.any(self.displacement_xyz_mm)

    @property
    def is_identity(self) -> bool:
        """True when F is the identity (no rotation, translation or deformation)."""
        return not np.any(self.rotation_deg_xyz) and not np.any(self.translation_xyz_mm) and self.is_rigid

    # -- point maps (points as (3, N) arrays in x, y, z order) ---------------------------------------------------
    def rigid(self, points_xyz_mm: npt.ArrayLike) -> FloatArray:
        """y = R(p − c) + c + t for (3, N) reference points."""
        p = np.asarray(points_xyz_mm, dtype=np.float64)
        c = np.asarray(self.centre_xyz_mm)[:, None]
        return np.asarray(self.rotation @ (p - c) + c + np.asarray(self.translation_xyz_mm)[:, None])

    def rigid_inverse(self, points_xyz_mm: npt.ArrayLike) -> FloatArray:
        """p = Rᵀ(y − c − t) + c for (3, N) points."""
        y = np.asarray(points_xyz_mm, dtype=np.float64)
        c = np.asarray(self.centre_xyz_mm)[:, None]
        return np.asarray(self.rotation.T @ (y - c - np.asarray(self.translation_xyz_mm)[:, None]) + c)

    def _control_index(self, points: FloatArray) -> FloatArray:
        origin = np.asarray(self.control_origin_xyz_mm)[:, None]
        return np.asarray(((points - origin) / float(self.control_spacing_mm))[::-1])  # (z, y, x) rows

    def displacement(self, points_xyz_mm: npt.ArrayLike) -> FloatArray:
        """u at (3, N) scanner-frame points (x, y, z rows), mm; zeros for a rigid pose."""
        points = np.asarray(points_xyz_mm, dtype=np.float64)
        if self.displacement_xyz_mm is None:
            return np.zeros_like(points)
        index = self._control_index(points)
        return np.stack([ndimage.map_coordinates(c, index, order=1, mode="nearest") for c in self.displacement_xyz_mm])

    def jacobian_det(self, points_xyz_mm: npt.ArrayLike) -> FloatArray:
        """det ∂F/∂p at (3, N) scanner points: the local volume change (1 for a rigid pose)."""
        points = np.asarray(points_xyz_mm, dtype=np.float64)
        if self._jacobian is None:
            return np.ones(points.shape[1])
        return np.asarray(ndimage.map_coordinates(self._jacobian, self._control_index(points), order=1, mode="nearest"))

    def forward(self, points_xyz_mm: npt.ArrayLike) -> FloatArray:
        """F(p): scanner-frame positions of (3, N) reference points (x, y, z rows), mm."""
        y = self.rigid(points_xyz_mm)
        return np.asarray(y + self.displacement(y))

    def inverse(self, points_xyz_mm: npt.ArrayLike, iterations: int = 2) -> FloatArray:
        """F⁻¹(x): reference positions of (3, N) scanner points, by fixed-point iteration on the smooth u."""
        x = np.asarray(points_xyz_mm, dtype=np.float64)
        y = x
        if not self.is_rigid:
            # y = x − u(y): u is smooth (gradient ≈ rms/scale ≈ 0.03), each iteration shrinks the error ≈ 30×.
            for _ in range(iterations):
                y = x - self.displacement(y)
        return self.rigid_inverse(y)

    # -- fast maps of whole axis-aligned grids ------------------------------------------------------------------
    def rigid_affine(self) -> FloatArray:
        """4×4 matrix of the rigid part y = R(p − c) + c + t on LPS (x, y, z, 1)."""
        r = self.rotation
        c = np.asarray(self.centre_xyz_mm)
        out = np.eye(4)
        out[:3, :3] = r
        out[:3, 3] = c - r @ c + np.asarray(self.translation_xyz_mm)
        return out

    def _u_on_grid(self, grid: Volume, z0: int, z1: int) -> list[npt.NDArray[np.float32]] | None:
        """u (x, y, z components) at the voxel centres of slices [z0, z1) of an axis-aligned grid; None if rigid."""
        if self.displacement_xyz_mm is None or self.is_rigid:
            return None
        step = float(self.control_spacing_mm)
        origin = np.asarray(self.control_origin_xyz_mm)[::-1]
        return [_separable_linear(c, origin, (step, step, step), grid, z0, z1) for c in self.displacement_xyz_mm]

    def index_map_from(self, output: Volume, source: Volume, z0: int = 0, z1: int | None = None) -> FloatArray32:
        """Continuous (z, y, x) indices on the reference-frame `source` of F⁻¹(x), x the voxel centres of slices
        [z0, z1) of the scanner-frame `output`; shape (3, nz, ny, nx), float32.

        F⁻¹(x) = Rig⁻¹(x − u(y)) with y ≈ x (one fixed-point step: the error |∇u|·|u| ≈ 0.03 · 1.5 mm).
        """
        z1 = output.shape[0] if z1 is None else z1
        matrix = np.linalg.inv(source.affine_xyz) @ np.linalg.inv(self.rigid_affine()) @ output.affine_xyz
        index = _affine_rows(matrix, (z1 - z0, output.shape[1], output.shape[2]), z0)
        if self.is_rigid:
            return index
        if _axis_aligned(output):
            u = self._u_on_grid(output, z0, z1)
            assert u is not None  # not rigid
        else:
            flat = self.displacement(grid_points_xyz(output, z0, z1))
            u = [c.reshape(index.shape[1:]).astype(np.float32) for c in flat]
        back = -(np.linalg.inv(source.affine_xyz[:3, :3]) @ self.rotation.T)  # xyz index per mm of u
        for row, axis in zip(range(3), (2, 1, 0), strict=True):  # index rows are (z, y, x)
            for comp in range(3):
                if back[axis, comp] != 0.0:
                    index[row] += np.float32(back[axis, comp]) * u[comp]
        return index

    def index_map_to(self, source: Volume, target: Volume, z0: int = 0, z1: int | None = None) -> FloatArray32:
        """Continuous (z, y, x) indices on the scanner-frame `target` of F(p), p the voxel centres of slices
        [z0, z1) of the reference-frame `source`; shape (3, nz, ny, nx), float32.

        u(y) at y = Rig(p) is evaluated exactly on a lattice of every few voxels and interpolated linearly in
        between (u ∘ Rig is as smooth as u), far cheaper than interpolating u at every voxel.
        """
        z1 = source.shape[0] if z1 is None else z1
        matrix = np.linalg.inv(target.affine_xyz) @ self.rigid_affine() @ source.affine_xyz
        index = _affine_rows(matrix, (z1 - z0, source.shape[1], source.shape[2]), z0)
        if self.is_rigid:
            return index
        if _axis_aligned(source):
            # u is smooth on the scale of deformation_scale_mm: linear interpolation from samples one control
            # spacing apart errs by ≈ h²/8·u″ ≈ 0.03 mm.
            stride = max(1, int(self.control_spacing_mm / min(source.spacing_zyx_mm)))
            lo = (z0 // stride) * stride
            hi = -(-(z1 - 1) // stride) * stride  # may pass the last slice: points there are only samples
            coarse = _strided_grid(source, stride, lo, hi)
            flat = self.displacement(self.rigid(grid_points_xyz(coarse)))
            origin = np.asarray(coarse.origin_xyz_mm)[::-1]
            u = [
                _separable_linear(c.reshape(coarse.shape), origin, coarse.spacing_zyx_mm, source, z0, z1) for c in flat
            ]
        else:
            flat = self.displacement(self.rigid(grid_points_xyz(source, z0, z1)))
            u = [c.reshape(index.shape[1:]).astype(np.float32) for c in flat]
        forward = np.linalg.inv(target.affine_xyz[:3, :3])
        for row, axis in zip(range(3), (2, 1, 0), strict=True):
            for comp in range(3):
                if forward[axis, comp] != 0.0:
                    index[row] += np.float32(forward[axis, comp]) * u[comp]
        return index

    def jacobian_grid(self, grid: Volume, z0: int = 0, z1: int | None = None) -> npt.NDArray[np.float32]:
        """det ∂F/∂p at the voxel centres of slices [z0, z1) of a scanner grid, shape (nz, ny, nx)."""
        z1 = grid.shape[0] if z1 is None else z1
        shape = (z1 - z0, grid.shape[1], grid.shape[2])
        if self._jacobian is None or self.is_rigid:
            return np.ones(shape, dtype=np.float32)
        if not _axis_aligned(grid):
            return self.jacobian_det(grid_points_xyz(grid, z0, z1)).astype(np.float32).reshape(shape)
        step = float(self.control_spacing_mm)
        origin = np.asarray(self.control_origin_xyz_mm)[::-1]
        return _separable_linear(self._jacobian, origin, (step, step, step), grid, z0, z1)

    def as_dict(self) -> dict[str, Any]:
        """Plain summary for truth/ files (hidden truth, never for images or the manifest)."""
        rms = 0.0 if self.displacement_xyz_mm is None else float(np.sqrt((self.displacement_xyz_mm**2).sum(0).mean()))
        return {
            "rotation_deg_xyz": [float(a) for a in self.rotation_deg_xyz],
            "translation_xyz_mm": [float(a) for a in self.translation_xyz_mm],
            "centre_xyz_mm": [float(a) for a in self.centre_xyz_mm],
            "deformation_rms_mm": rms,
        }


def _affine_rows(matrix: FloatArray, shape: tuple[int, int, int], z0: int) -> FloatArray32:
    """(3, nz, ny, nx) float32 rows (z, y, x) of matrix @ (i, j, k, 1) over slices z0.. of a grid of `shape`."""
    k = np.arange(z0, z0 + shape[0], dtype=np.float64)[:, None, None]
    j = np.arange(shape[1], dtype=np.float64)[None, :, None]
    i = np.arange(shape[2], dtype=np.float64)[None, None, :]
    out = np.empty((3, *shape), dtype=np.float32)
    for row, axis in zip(range(3), (2, 1, 0), strict=True):
        m = matrix[axis]
        # Sum the small broadcast terms in float64, then one float32 array of the full size.
        out[row] = (m[2] * k + m[3]) + (m[1] * j + m[0] * i)
    return out


def _axis_aligned(grid: Volume) -> bool:
    return bool(np.allclose(grid.direction, np.eye(3), atol=1e-9))


def _strided_grid(grid: Volume, stride: int, z_lo: int, z_hi: int) -> Volume:
    """Every `stride`-th voxel of an axis-aligned grid, slices z_lo..z_hi, always including the last y/x voxel."""
    ny = -(-(grid.shape[1] - 1) // stride) + 1
    nx = -(-(grid.shape[2] - 1) // stride) + 1
    nz = (z_hi - z_lo) // stride + 1
    origin = grid.index_to_physical([float(z_lo), 0.0, 0.0])
    return Volume(
        np.zeros((nz, ny, nx), dtype=np.uint8),
        (grid.spacing_zyx_mm[0] * stride, grid.spacing_zyx_mm[1] * stride, grid.spacing_zyx_mm[2] * stride),
        (float(origin[0]), float(origin[1]), float(origin[2])),
    )


def _lerp_axis(n_out: int, out_first: float, out_step: float, n_in: int, in_first: float, in_step: float) -> Any:
    pos = np.clip((out_first + out_step * np.arange(n_out) - in_first) / in_step, 0.0, n_in - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.intp), max(n_in - 2, 0))
    w = (pos - i0).astype(np.float32)
    return i0, np.minimum(i0 + 1, n_in - 1), w


def _separable_linear(
    values: npt.ArrayLike,
    origin_zyx_mm: npt.ArrayLike,
    step_zyx_mm: Any,
    grid: Volume,
    z0: int,
    z1: int,
) -> npt.NDArray[np.float32]:
    """Trilinear interpolation (clamped at the border) of a lattice field onto slices [z0, z1) of an aligned grid."""
    data = np.asarray(values, dtype=np.float32)
    origin = np.asarray(origin_zyx_mm, dtype=np.float64)
    first = np.asarray(grid.index_to_physical([float(z0), 0.0, 0.0]))[::-1]
    shape_out = (z1 - z0, grid.shape[1], grid.shape[2])
    for axis in (2, 1, 0):  # x and y first: they act on the small lattice, z last on the few slices needed
        i0, i1, w = _lerp_axis(
            shape_out[axis],
            float(first[axis]),
            grid.spacing_zyx_mm[axis],
            data.shape[axis],
            float(origin[axis]),
            float(step_zyx_mm[axis]),
        )
        view = [None, None, None]
        view[axis] = slice(None)  # type: ignore[call-overload]
        a = np.take(data, i0, axis=axis)
        b = np.take(data, i1, axis=axis)
        data = a + (b - a) * w[tuple(view)]
    return np.asarray(data, dtype=np.float32)


def _jacobian_det(disp: FloatArray, spacing_mm: float) -> FloatArray:
    """det(I + ∇u) on the control grid."""
    # np.gradient gives derivatives along the array axes (z, y, x); reorder to ∂u_i/∂x_j in (x, y, z).
    jac = np.empty((*disp.shape[1:], 3, 3))
    for i in range(3):
        gz, gy, gx = np.gradient(disp[i], spacing_mm)
        jac[..., i, 0], jac[..., i, 1], jac[..., i, 2] = gx, gy, gz
    jac += np.eye(3)
    return np.asarray(np.linalg.det(jac))


def random_pose(rng: np.random.Generator, spec: PoseSpec, reference: Volume) -> Pose:
    """Draw a repositioning of the patient lying on `reference` (the truth grid: centre and deformation domain).

    Args:
        rng: random generator of this patient.
        spec: pose distribution.
        reference: the truth grid (only its geometry is used).

    Returns:
        A `Pose` with rotation about the grid centre, a clipped Gaussian shift and (if configured) a smooth
        zero-mean displacement field of rms length `spec.deformation_rms_mm`.
    """
    shape = np.asarray(reference.shape, dtype=np.float64)
    corners = reference.index_to_physical(np.array([[0.0, 0.0, 0.0], shape - 1.0]))
    centre = reference.index_to_physical((shape - 1.0) / 2.0)
    angles = np.clip(rng.normal(0.0, spec.rotation_sd_deg, 3), -spec.rotation_max_deg, spec.rotation_max_deg)
    shift = np.clip(rng.normal(0.0, spec.shift_sd_mm, 3), -spec.shift_max_mm, spec.shift_max_mm)
    disp = None
    step = float(spec.control_spacing_mm)
    lo = corners.min(axis=0) - 2 * step
    hi = corners.max(axis=0) + 2 * step
    n_xyz = np.ceil((hi - lo) / step).astype(int) + 1
    if spec.deformation_rms_mm > 0:
        sigma = spec.deformation_scale_mm / step
        field_zyx = rng.standard_normal((3, int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0])))
        field_zyx = np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in field_zyx])
        field_zyx -= field_zyx.mean(axis=(1, 2, 3), keepdims=True)  # the mean shift belongs to the rigid part
        rms = float(np.sqrt((field_zyx**2).sum(axis=0).mean()))
        disp = field_zyx * (spec.deformation_rms_mm / rms) if rms > 0 else None
    return Pose(
        rotation_deg_xyz=(float(angles[0]), float(angles[1]), float(angles[2])),
        translation_xyz_mm=(float(shift[0]), float(shift[1]), float(shift[2])),
        centre_xyz_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        displacement_xyz_mm=disp,
        control_origin_xyz_mm=(float(lo[0]), float(lo[1]), float(lo[2])),
        control_spacing_mm=step,
    )


def grid_points_xyz(grid: Volume, z_start: int = 0, z_stop: int | None = None) -> FloatArray:
    """LPS (3, N) positions of the voxel centres of slices [z_start, z_stop) of `grid`, C order over (z, y, x)."""
    z_stop = grid.shape[0] if z_stop is None else z_stop
    k = np.arange(z_start, z_stop, dtype=np.float64)
    j = np.arange(grid.shape[1], dtype=np.float64)
    i = np.arange(grid.shape[2], dtype=np.float64)
    m = grid.direction @ np.diag(grid.spacing_xyz_mm)
    origin = np.asarray(grid.origin_xyz_mm)
    out = np.empty((3, k.size * j.size * i.size))
    for row in range(3):  # three broadcast sums instead of an (N, 3) index array: less memory
        value = origin[row] + m[row, 0] * i[None, None, :] + m[row, 1] * j[None, :, None] + m[row, 2] * k[:, None, None]
        out[row] = value.ravel()
    return out


def _slab_rows(grid: Volume) -> int:
    return max(1, _CHUNK_VOXELS // max(1, grid.shape[1] * grid.shape[2]))


def _inside(index_zyx: FloatArray32, shape: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    ok = np.ones(index_zyx.shape[1:], dtype=bool)
    for axis in range(3):
        ok &= (index_zyx[axis] >= -0.5) & (index_zyx[axis] < shape[axis] - 0.5)
    return ok


def apply_pose(
    volume: Volume,
    pose: Pose,
    reference_grid: Volume,
    kind: PoseKind = "linear",
    *,
    default: float = 0.0,
) -> Volume:
    """The reference-frame `volume` as a scan in `pose` shows it, on the scanner-frame `reference_grid`.

    Args:
        volume: a map in the reference frame (truth grid or any grid in that frame).
        pose: reference → scanner map.
        reference_grid: any Volume on the output grid (scanner frame; only its geometry is used).
        kind: ``"linear"`` (images), ``"nearest"`` (labels, masks; dtype kept) or ``"activity"`` (concentrations:
            linear interpolation × 1/det ∂F, then one factor so that ∫ value dV over the output equals the integral
            of `volume` over the part of it that lands inside the output grid).
        default: value where the pulled-back point falls outside `volume`.

    Returns:
        A Volume on `reference_grid` with `volume`'s unit and meta.
    """
    if kind not in ("linear", "nearest", "activity"):
        raise InputError(f"kind must be 'linear', 'nearest' or 'activity', got {kind!r}")
    if pose.is_identity:
        return resample_to(volume, reference_grid, kind=kind, default=default)
    source = volume.array
    is_bool = source.dtype == np.bool_
    if kind != "nearest":
        source = source.astype(np.float32 if source.dtype != np.float64 else np.float64, copy=False)
    elif is_bool:
        source = source.astype(np.uint8)
    out = np.empty(reference_grid.shape, dtype=source.dtype)
    order = 0 if kind == "nearest" else 1
    rows = _slab_rows(reference_grid)
    for z0 in range(0, reference_grid.shape[0], rows):  # a loop over slabs of slices (memory), not voxels
        z1 = min(z0 + rows, reference_grid.shape[0])
        index = pose.index_map_from(reference_grid, volume, z0, z1)
        values = ndimage.map_coordinates(source, index, order=order, mode="constant", cval=default, prefilter=False)
        if kind == "activity" and not pose.is_rigid:
            values = values / pose.jacobian_grid(reference_grid, z0, z1)
        out[z0:z1] = values
    if kind == "activity":
        inside_total = _inside_total(volume, pose, reference_grid)
        out_total = float(out.sum(dtype=np.float64)) * reference_grid.voxel_volume_ml
        if out_total > 0 and inside_total > 0:
            out *= np.asarray(inside_total / out_total, dtype=out.dtype)
    if is_bool:
        out = out.astype(np.bool_)
    return Volume(
        array=out,
        spacing_zyx_mm=reference_grid.spacing_zyx_mm,
        origin_xyz_mm=reference_grid.origin_xyz_mm,
        direction=reference_grid.direction,
        unit=volume.unit,
        meta=dict(volume.meta),
    )


def _inside_total(volume: Volume, pose: Pose, reference_grid: Volume) -> float:
    """∫ value dV over the voxels of `volume` whose centres F maps inside `reference_grid`."""
    total = 0.0
    rows = _slab_rows(volume)
    nonzero_slices = np.nonzero(volume.array.reshape(volume.shape[0], -1).any(axis=1))[0]
    if nonzero_slices.size == 0:
        return 0.0
    for z0 in range(int(nonzero_slices[0]), int(nonzero_slices[-1]) + 1, rows):
        z1 = min(z0 + rows, int(nonzero_slices[-1]) + 1)
        index = pose.index_map_to(volume, reference_grid, z0, z1)
        total += float(volume.array[z0:z1][_inside(index, reference_grid.shape)].sum(dtype=np.float64))
    return total * volume.voxel_volume_ml
