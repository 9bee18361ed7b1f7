"""Resampling a `Volume` onto another grid: interpolation for images, nearest for labels, conservation for activity.

``kind="activity"`` treats the image as a piecewise-constant concentration (each voxel uniform over its box) and
returns, for every reference voxel, the mean concentration over that voxel's box. What is conserved, precisely:

- **Aligned grids** (the two grids' index axes are parallel up to order and sign, and the transform, if any, is a
  translation or axis permutation/flip): exact box-overlap weights, separable per axis. ∫ concentration dV over the
  intersection of the two fields of view is conserved to floating-point precision, for any spacings and offsets.
- **Rotated grids** (oblique direction or a rotating transform): each reference voxel is the mean of s³ sub-voxel
  samples of the moving image (midpoint rule), then the total is rescaled by one factor so that ∫ C dV equals the
  integral of the moving image over the part of it that maps inside the reference field of view. That integral is
  exact for moving voxels wholly inside or outside; voxels straddling the reference border count with their inside
  fraction estimated from 4³ sub-points. Local values carry the midpoint-rule error (largest at sharp edges).

Transforms follow SimpleITK: `transform` maps points of the *reference* (output) space to the *moving* (input)
space, as returned by `ludl.imaging.registration.register_rigid` with the reference as fixed image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from ludl.errors import GeometryError, InputError
from ludl.imaging.volume import ResampleKind, Volume

__all__ = ["ResampleKind", "grid_with_spacing", "hu_on_grid", "resample_spacing", "resample_to", "transform_affine"]

_KINDS = ("linear", "nearest", "activity")
# Entries of the index-to-index matrix below this (relative) size count as zero when deciding whether two grids are
# aligned; 1e-6 of a voxel over a 1000-voxel axis is far below any interpolation effect.
_ALIGN_TOL = 1e-6
# Sub-points per axis used to estimate the inside fraction of moving voxels straddling the reference border.
_BORDER_SUBPOINTS = 4
# Reference voxels handled per chunk in the rotated path (bounds memory: chunk × s³ samples).
_CHUNK_VOXELS = 1 << 16


def transform_affine(transform: Any | None) -> npt.NDArray[np.float64]:
    """4×4 affine (LPS mm → LPS mm) equal to a SimpleITK transform; `GeometryError` if it is not affine."""
    if transform is None:
        return np.eye(4)
    probe = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mapped = np.array([transform.TransformPoint(tuple(float(c) for c in p)) for p in probe])
    affine = np.eye(4)
    affine[:3, :3] = (mapped[1:] - mapped[0]).T
    affine[:3, 3] = mapped[0]
    # Affinity check far from the probes: a B-spline or displacement field would fail it.
    test = np.array([137.0, -91.0, 263.0])
    expected = affine[:3, :3] @ test + affine[:3, 3]
    if not np.allclose(transform.TransformPoint(tuple(float(c) for c in test)), expected, atol=1e-6):
        raise GeometryError(
            f"transform {type(transform).__name__} is not affine; activity-conserving resampling supports rigid and "
            "affine transforms only — use kind='linear' for deformable ones"
        )
    return affine


def _index_map(volume: Volume, reference: Volume, transform: Any | None) -> npt.NDArray[np.float64]:
    """4×4 map from reference continuous (x, y, z) index to moving continuous (x, y, z) index."""
    return np.asarray(np.linalg.inv(volume.affine_xyz) @ transform_affine(transform) @ reference.affine_xyz)


def _aligned_axes(matrix3: npt.NDArray[np.float64]) -> list[int] | None:
    """For each reference index axis, the moving index axis it runs along; None if the grids are rotated."""
    scale = float(np.abs(matrix3).max())
    nonzero = np.abs(matrix3) > _ALIGN_TOL * scale
    if not (nonzero.sum(axis=0) == 1).all() or not (nonzero.sum(axis=1) == 1).all():
        return None
    return [int(np.argmax(nonzero[:, a])) for a in range(3)]


def _overlap_weights(n_out: int, n_in: int, scale: float, offset: float) -> sp.csr_matrix:
    """Sparse (n_out, n_in) weights: share of output voxel i's length covered by input voxel j (1D, index units)."""
    edges = scale * (np.arange(n_out)[:, None] + np.array([-0.5, 0.5])[None, :]) + offset
    lo_out, hi_out = edges.min(axis=1), edges.max(axis=1)
    j = np.arange(n_in, dtype=np.float64)
    # Only input voxels in [floor(lo), ceil(hi)] can overlap; a dense matrix per axis is small (≤ ~10⁶ entries).
    length = np.minimum(hi_out[:, None], j[None, :] + 0.5) - np.maximum(lo_out[:, None], j[None, :] - 0.5)
    weights = np.clip(length, 0.0, None) / abs(scale)
    return sp.csr_matrix(weights)


def _apply_along(weights: sp.csr_matrix, array: npt.NDArray[np.float64], axis: int) -> npt.NDArray[np.float64]:
    moved = np.moveaxis(array, axis, 0)
    rest = moved.shape[1:]
    out = weights @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(np.asarray(out).reshape((weights.shape[0], *rest)), 0, axis)


def _activity_aligned(
    volume: Volume, reference: Volume, index_map: npt.NDArray[np.float64], axes: list[int], default: float
) -> npt.NDArray[np.float64]:
    ref_size_xyz = reference.shape[::-1]
    mov_size_xyz = volume.shape[::-1]
    array = np.asarray(volume.array, dtype=np.float64)
    weights: dict[int, sp.csr_matrix] = {}
    for a in range(3):
        b = axes[a]
        weights[a] = _overlap_weights(ref_size_xyz[a], mov_size_xyz[b], index_map[b, a], index_map[b, 3])
    # Contract the axis that shrinks most first: the intermediate arrays stay small when downsampling.
    for a in sorted(range(3), key=lambda a: ref_size_xyz[a] / mov_size_xyz[axes[a]]):
        array = _apply_along(weights[a], array, 2 - axes[a])
    # Array axis 2 - axes[a] now runs along reference axis a; reorder to the reference's (z, y, x).
    array = np.transpose(array, [2 - axes[2 - k] for k in range(3)])
    if default != 0.0:
        cov = [np.asarray(weights[a].sum(axis=1)).ravel() for a in range(3)]
        coverage = cov[2][:, None, None] * cov[1][None, :, None] * cov[0][None, None, :]
        array = array + default * (1.0 - coverage)
    return np.asarray(array)


def _inside_integral(volume: Volume, reference: Volume, index_map: npt.NDArray[np.float64]) -> float:
    """∫ C dV over the part of the moving image that maps inside the reference field of view (see module doc)."""
    inverse = np.linalg.inv(index_map)  # moving index → reference index
    values = np.asarray(volume.array, dtype=np.float64)
    nz = np.flatnonzero(values)
    if nz.size == 0:
        return 0.0
    n_ref = np.asarray(reference.shape[::-1], dtype=np.float64)
    half = 0.5 * np.abs(inverse[:3, :3]).sum(axis=1)
    sub = (np.arange(_BORDER_SUBPOINTS) + 0.5) / _BORDER_SUBPOINTS - 0.5
    offsets = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(-1, 3)
    total = 0.0
    for start in range(0, nz.size, 1 << 20):
        flat = nz[start : start + (1 << 20)]
        zyx = np.stack(np.unravel_index(flat, volume.shape), axis=-1).astype(np.float64)
        centre = zyx[:, ::-1] @ inverse[:3, :3].T + inverse[:3, 3]
        c = values.ravel()[flat]
        inside = ((centre - half >= -0.5) & (centre + half <= n_ref - 0.5)).all(axis=1)
        outside = ((centre + half < -0.5) | (centre - half > n_ref - 0.5)).any(axis=1)
        total += float(c[inside].sum())
        border = ~inside & ~outside
        if border.any():
            pts = centre[border][:, None, :] + (offsets @ inverse[:3, :3].T)[None, :, :]
            frac = ((pts >= -0.5) & (pts <= n_ref - 0.5)).all(axis=2).mean(axis=1)
            total += float((c[border] * frac).sum())
    return total * volume.voxel_volume_ml


def _activity_rotated(
    volume: Volume, reference: Volume, transform: Any | None, default: float, supersample: int | None
) -> npt.NDArray[np.float64]:
    import SimpleITK as sitk

    if supersample is None:
        # Sub-samples at most half a moving voxel apart along each reference axis, 2 to 6 per axis.
        ratio = np.asarray(reference.spacing_zyx_mm) / (0.5 * min(volume.spacing_zyx_mm))
        sub_zyx = np.clip(np.ceil(ratio), 2, 6).astype(int)
    else:
        if supersample < 1:
            raise InputError(f"supersample must be ≥ 1, got {supersample}")
        sub_zyx = np.full(3, int(supersample))
    moving = volume.with_array(np.asarray(volume.array, dtype=np.float64)).to_sitk()
    nz, ny, nx = reference.shape
    sz, sy, sx = (int(s) for s in sub_zyx)
    slab = max(1, _CHUNK_VOXELS // max(1, ny * nx))
    gathered = np.empty(reference.shape)
    covered = np.empty(reference.shape)
    filt = sitk.ResampleImageFilter()
    filt.SetInterpolator(sitk.sitkNearestNeighbor)
    filt.SetDefaultPixelValue(float("nan"))
    filt.SetOutputDirection(tuple(float(d) for d in reference.direction.ravel()))
    filt.SetOutputSpacing(tuple(float(s) for s in np.asarray(reference.spacing_xyz_mm) / np.array([sx, sy, sz])))
    filt.SetOutputPixelType(sitk.sitkFloat64)
    if transform is not None:
        filt.SetTransform(transform)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        first = (z0 - 0.5 + 0.5 / sz, -0.5 + 0.5 / sy, -0.5 + 0.5 / sx)
        filt.SetOutputOrigin(tuple(float(c) for c in reference.index_to_physical(first)))
        filt.SetSize((nx * sx, ny * sy, (z1 - z0) * sz))
        samples = sitk.GetArrayFromImage(filt.Execute(moving)).reshape(z1 - z0, sz, ny, sy, nx, sx)
        valid = np.isfinite(samples)
        gathered[z0:z1] = np.where(valid, samples, 0.0).sum(axis=(1, 3, 5)) / (sz * sy * sx)
        covered[z0:z1] = valid.mean(axis=(1, 3, 5))
    total = float(gathered.sum()) * reference.voxel_volume_ml
    wanted = _inside_integral(volume, reference, _index_map(volume, reference, transform))
    if total != 0.0 and wanted != 0.0:
        gathered *= wanted / total
    return np.asarray(gathered + default * (1.0 - covered))


def _check(volume: Volume, kind: str) -> None:
    if kind not in _KINDS:
        raise InputError(f"resampling kind must be one of {_KINDS}, got {kind!r}")
    if volume.unit in ("label", "mask") and kind != "nearest":
        raise InputError(f"a {volume.unit} image must be resampled with kind='nearest', not {kind!r}")
    if kind == "activity" and not np.isfinite(np.asarray(volume.array, dtype=np.float64)).all():
        raise InputError("activity-conserving resampling needs finite voxel values; replace NaN/inf first")


def _float_dtype(array: npt.NDArray[Any]) -> np.dtype[Any]:
    return np.result_type(array.dtype, np.float32) if array.dtype != np.bool_ else np.dtype(np.float32)


def resample_to(
    volume: Volume,
    reference: Volume,
    *,
    kind: ResampleKind | None = None,
    default: float | None = None,
    transform: Any | None = None,
    supersample: int | None = None,
) -> Volume:
    """Resample `volume` onto `reference`'s grid (shape, spacing, origin, direction).

    Args:
        volume: the moving image.
        reference: any Volume on the target grid (only its geometry is used).
        kind: ``"linear"`` (trilinear, images), ``"nearest"`` (labels, masks; dtype kept), ``"activity"``
            (conserves ∫ value dV; see the module docstring for exactly what is conserved); default: the one the
            unit asks for (`Volume.resample_kind`).
        default: value outside the moving image's field of view (for ``"activity"``: of the uncovered part);
            default: `Volume.fill_value` (−1000 for HU, else 0).
        transform: optional SimpleITK transform mapping reference physical points (mm) to moving ones.
        supersample: sub-samples per axis for ``"activity"`` on rotated grids (default: from the spacings).

    Returns:
        A Volume on the reference grid with `volume`'s unit and meta.
    """
    kind = volume.resample_kind if kind is None else kind
    default = volume.fill_value if default is None else float(default)
    _check(volume, kind)
    if kind == "activity":
        index_map = _index_map(volume, reference, transform)
        axes = _aligned_axes(index_map[:3, :3])
        if axes is not None:
            array = _activity_aligned(volume, reference, index_map, axes, default)
        else:
            array = _activity_rotated(volume, reference, transform, default, supersample)
        return Volume(
            array=array.astype(_float_dtype(volume.array)),
            spacing_zyx_mm=reference.spacing_zyx_mm,
            origin_xyz_mm=reference.origin_xyz_mm,
            direction=reference.direction,
            unit=volume.unit,
            meta=volume.meta,
        )
    import SimpleITK as sitk

    source = volume.array
    if kind == "linear":
        source = source.astype(_float_dtype(source), copy=False)
    image = volume.with_array(source).to_sitk()
    filt = sitk.ResampleImageFilter()
    filt.SetSize(tuple(int(n) for n in reference.shape[::-1]))
    filt.SetOutputSpacing(reference.spacing_xyz_mm)
    filt.SetOutputOrigin(reference.origin_xyz_mm)
    filt.SetOutputDirection(tuple(float(d) for d in reference.direction.ravel()))
    filt.SetInterpolator(sitk.sitkNearestNeighbor if kind == "nearest" else sitk.sitkLinear)
    filt.SetDefaultPixelValue(float(default))
    if transform is not None:
        filt.SetTransform(transform)
    array = sitk.GetArrayFromImage(filt.Execute(image))
    if volume.array.dtype == np.bool_:
        array = array.astype(np.bool_)
    return Volume(
        array=array,
        spacing_zyx_mm=reference.spacing_zyx_mm,
        origin_xyz_mm=reference.origin_xyz_mm,
        direction=reference.direction,
        unit=volume.unit,
        meta=volume.meta,
    )


def grid_with_spacing(volume: Volume, spacing_zyx_mm: tuple[float, float, float]) -> Volume:
    """An empty (uint8) Volume with the given spacing covering `volume`'s field of view, centred on it."""
    new_spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    if new_spacing.shape != (3,) or not (np.isfinite(new_spacing).all() and (new_spacing > 0).all()):
        raise InputError(f"spacing_zyx_mm must be three positive numbers, got {spacing_zyx_mm}")
    old_spacing = np.asarray(volume.spacing_zyx_mm)
    old_size = np.asarray(volume.shape)
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    # Keep the centre of the field of view fixed (in continuous old-index units, zyx order).
    centre_idx = (old_size - 1) / 2.0
    first_idx = centre_idx - (new_size - 1) / 2.0 * new_spacing / old_spacing
    origin = volume.index_to_physical(first_idx)
    return Volume(
        array=np.zeros(tuple(int(n) for n in new_size), dtype=np.uint8),
        spacing_zyx_mm=(float(new_spacing[0]), float(new_spacing[1]), float(new_spacing[2])),
        origin_xyz_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=volume.direction,
        unit="1",
    )


def resample_spacing(
    volume: Volume,
    spacing_zyx_mm: tuple[float, float, float],
    *,
    kind: ResampleKind | None = None,
    default: float | None = None,
) -> Volume:
    """Resample `volume` to a new voxel size covering the same field of view (centre kept, size rounded).

    Args:
        volume: image to resample.
        spacing_zyx_mm: new voxel size (z, y, x) in mm.
        kind: as in `resample_to` (default: from the unit).
        default: value outside the original field of view (default: from the unit).
    """
    return resample_to(volume, grid_with_spacing(volume, spacing_zyx_mm), kind=kind, default=default)


def hu_on_grid(ct: Volume, grid: Volume) -> Volume:
    """A CT's HU on an image grid (SPECT): trilinear where the CT is no finer than the grid, else each grid voxel's
    mean HU over its box (a 0.98 × 0.98 × 5 mm CT point-sampled at 4.8 mm would alias bone and air edges)."""
    finer = bool((np.asarray(ct.spacing_zyx_mm) < 0.75 * np.asarray(grid.spacing_zyx_mm)).any())
    box_mean = finer and not _nested_twice_finer(ct, grid)
    return resample_to(ct, grid, kind="activity" if box_mean else "linear")


def _nested_twice_finer(ct: Volume, grid: Volume) -> bool:
    """True when every grid voxel centre is the corner of 2×2×2 CT voxels (the synthetic 3 mm CT under 6 mm SPECT),
    where trilinear sampling already is the box mean (kept as is, bit for bit)."""
    if not np.allclose(ct.direction, grid.direction, atol=1e-6):
        return False
    ratio = np.asarray(grid.spacing_zyx_mm) / np.asarray(ct.spacing_zyx_mm)
    offset = ct.physical_to_index(grid.origin_xyz_mm)
    return bool(np.allclose(ratio, 2.0, atol=1e-6) and np.allclose(offset % 1.0, 0.5, atol=1e-4))
