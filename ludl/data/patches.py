"""Cutting a sample out of a time point: patch placement, the batch's channels in their units, `valid`, regions inside.

Pure functions on NumPy arrays. A patch is given by its start (z, y, x) in the time point's voxel indices and its
size; a start below 0 or a patch reaching past the volume is padded (a volume smaller than the patch is centred in
it). Padding values are what is physically there outside a scan: no activity, no dose, air density, background
class, no region, outside the ground truth's field of view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.physics.dose import AIR_DENSITY_G_PER_ML
from ludl.physics.units import MBQ_PER_BQ

__all__ = [
    "IMAGE_KEYS",
    "PAD_VALUES",
    "cut_patch",
    "patch_start",
    "regions_inside",
    "valid_mask",
]

# batch key → (prepared channel, dtype, scale to the batch unit). ``suv`` is zeros when a case has no PET.
_CHANNEL_OF: dict[str, tuple[str, Any, float]] = {
    "activity_mbq_per_ml": ("spect", np.float32, MBQ_PER_BQ),
    "suv": ("pet", np.float32, 1.0),
    "density_g_per_ml": ("density", np.float32, 1.0),
    "dose_gy": ("dose", np.float32, 1.0),
    "tia_mbq_h_per_ml": ("tia", np.float32, 1.0),
    "classes": ("classes", np.int64, 1.0),
    "regions": ("labels", np.int32, 1.0),
    "gt_fov": ("gt_fov", np.bool_, 1.0),
}
IMAGE_KEYS: tuple[str, ...] = (*_CHANNEL_OF, "valid")
PAD_VALUES: Mapping[str, float | bool] = {
    "activity_mbq_per_ml": 0.0,
    "suv": 0.0,
    "density_g_per_ml": AIR_DENSITY_G_PER_ML,
    "dose_gy": 0.0,
    "tia_mbq_h_per_ml": 0.0,
    "classes": 0,
    "regions": 0,
    "gt_fov": False,
    "valid": False,
}


def patch_start(centre_zyx: Sequence[int], shape_zyx: Sequence[int], size_zyx: Sequence[int]) -> tuple[int, ...]:
    """Start of a patch of `size_zyx` centred on a voxel, moved to lie inside the volume (centred where it cannot)."""
    start = []
    for c, n, s in zip(centre_zyx, shape_zyx, size_zyx, strict=True):
        if s >= n:
            start.append(-((s - n) // 2))  # the volume is smaller: centre it in the patch, padding both sides
        else:
            start.append(int(min(max(int(c) - s // 2, 0), n - s)))
    return tuple(start)


def _window(start: Sequence[int], size: Sequence[int], shape: Sequence[int]) -> tuple[tuple[slice, ...], ...]:
    """Source slices in the volume and destination slices in the patch of their overlap."""
    src, dst = [], []
    for a, s, n in zip(start, size, shape, strict=True):
        lo, hi = max(a, 0), min(a + s, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    return tuple(src), tuple(dst)


def cut_patch(
    arrays: Mapping[str, npt.NDArray[Any]],
    start_zyx: Sequence[int],
    size_zyx: Sequence[int],
) -> dict[str, npt.NDArray[Any]]:
    """The image keys of a sample (channel first, batch units) from a time point's stored channels.

    Reads only the patch's voxels (the arrays may be memory-mapped). ``valid`` is not made here (`valid_mask`).
    """
    shape = arrays["spect"].shape
    src, dst = _window(start_zyx, size_zyx, shape)
    out: dict[str, npt.NDArray[Any]] = {}
    for key, (channel, dtype, scale) in _CHANNEL_OF.items():
        patch = np.full(tuple(size_zyx), PAD_VALUES[key], dtype=dtype)
        if channel in arrays:
            values = np.asarray(arrays[channel][src])
            patch[dst] = values * dtype(scale) if scale != 1.0 else values
        out[key] = patch[None]
    return out


def valid_mask(
    gt_fov: npt.NDArray[np.bool_],
    start_zyx: Sequence[int],
    size_zyx: Sequence[int],
    shape_zyx: Sequence[int],
    border_voxels: int,
) -> npt.NDArray[np.bool_]:
    """`gt_fov` without the `border_voxels` next to each patch face that cuts through the volume.

    Dose near a cut face lacks the cross-dose from activity beyond it, which the patch does not show; a face on or
    beyond the volume's own edge cuts nothing (the ground truth saw no activity there either).
    """
    valid = np.array(gt_fov, dtype=bool, copy=True)
    if border_voxels <= 0:
        return valid
    for axis, (a, s, n) in enumerate(zip(start_zyx, size_zyx, shape_zyx, strict=True)):
        index: list[slice] = [slice(None)] * valid.ndim
        if a > 0:
            index[axis + valid.ndim - 3] = slice(0, border_voxels)
            valid[tuple(index)] = False
        if a + s < n:
            index[axis + valid.ndim - 3] = slice(s - border_voxels, s)
            valid[tuple(index)] = False
    return valid


def regions_inside(
    region_boxes: Mapping[int, tuple[tuple[int, int, int], tuple[int, int, int]]],
    region_values: Sequence[int],
    start_zyx: Sequence[int],
    size_zyx: Sequence[int],
) -> npt.NDArray[np.bool_]:
    """For each region value: True when all its voxels on this grid lie inside the patch (False when it has none)."""
    inside = np.zeros(len(region_values), dtype=bool)
    for i, value in enumerate(region_values):
        box = region_boxes.get(int(value))
        if box is None:
            continue
        lo, hi = box
        axes = zip(lo, hi, start_zyx, size_zyx, strict=True)
        inside[i] = all(a <= low and high <= a + s - 1 for low, high, a, s in axes)
    return inside
