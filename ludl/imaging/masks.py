"""Label-map and mask utilities: bounding boxes, crops, name → mask, connected components, region volumes.

Label maps are integer `Volume`s (unit ``"label"``) whose values the cohort's ``labels`` mapping names
(region name → integer, docs/architecture.md "Data formats"); masks are boolean `Volume`s (unit ``"mask"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import InputError
from ludl.imaging.volume import Volume

__all__ = [
    "bounding_box",
    "connected_components",
    "crop",
    "label_masks",
    "largest_component",
    "masks_to_labels",
    "present_labels",
    "region_volume_ml",
    "region_volumes_ml",
]

# scipy.ndimage structuring elements for 6-, 18- and 26-connectivity in 3D.
_CONNECTIVITY = {6: 1, 18: 2, 26: 3}


def _array(mask: Volume | npt.ArrayLike) -> npt.NDArray[Any]:
    return np.asarray(mask.array if isinstance(mask, Volume) else mask)


def bounding_box(mask: Volume | npt.ArrayLike, margin_voxels: int = 0) -> tuple[slice, slice, slice] | None:
    """(z, y, x) slices enclosing the non-zero voxels, grown by `margin_voxels` and clipped; None if empty."""
    array = _array(mask)
    if array.ndim != 3:
        raise InputError(f"bounding_box needs a 3D array, got shape {array.shape}")
    if margin_voxels < 0:
        raise InputError(f"margin_voxels must be ≥ 0, got {margin_voxels}")
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(array != 0, axis=other))
        if present.size == 0:
            return None
        start = max(0, int(present[0]) - margin_voxels)
        stop = min(array.shape[axis], int(present[-1]) + 1 + margin_voxels)
        slices.append(slice(start, stop))
    return (slices[0], slices[1], slices[2])


def crop(volume: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """The sub-volume `volume.array[box]` with its origin moved so every voxel keeps its physical position."""
    starts = [s.start or 0 for s in box]
    if any(s.step not in (None, 1) for s in box):
        raise InputError("crop takes contiguous slices (step 1) only")
    origin = volume.index_to_physical(np.asarray(starts, dtype=np.float64))
    return Volume(
        array=volume.array[box],
        spacing_zyx_mm=volume.spacing_zyx_mm,
        origin_xyz_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=volume.direction,
        unit=volume.unit,
        meta=volume.meta,
    )


def present_labels(labels: Volume | npt.ArrayLike) -> list[int]:
    """Sorted non-zero label values present in a label map."""
    values = np.unique(_array(labels))
    return [int(v) for v in values if v != 0]


def label_masks(labels: Volume, names: Mapping[str, int], *, missing: str = "empty") -> dict[str, Volume]:
    """One boolean mask Volume per region name (``labels == names[name]``).

    Args:
        labels: integer label map.
        names: region name → label value.
        missing: what to do for a name whose value is absent: ``"empty"`` (an all-False mask), ``"skip"``
            (leave it out — e.g. institutional cohorts that did not label that organ) or ``"error"``.
    """
    if missing not in ("empty", "skip", "error"):
        raise InputError(f"missing must be 'empty', 'skip' or 'error', got {missing!r}")
    array = np.asarray(labels.array)
    present = set(present_labels(array))
    out: dict[str, Volume] = {}
    for name, value in names.items():
        if int(value) not in present:
            if missing == "skip":
                continue
            if missing == "error":
                raise InputError(f"region {name!r} (label {value}) is absent from the label map; check the labels")
        out[name] = labels.with_array(array == int(value), unit="mask")
    return out


def masks_to_labels(masks: Mapping[str, Volume], names: Mapping[str, int], *, overlap: str = "error") -> Volume:
    """Combine named masks on one grid into a label map with the values of `names`.

    Args:
        masks: region name → boolean mask Volume (all on the same grid).
        names: region name → label value (> 0).
        overlap: ``"error"`` (a voxel claimed twice raises) or ``"last"`` (later masks win, in `masks` order).
    """
    if not masks:
        raise InputError("masks is empty; give at least one named mask")
    if overlap not in ("error", "last"):
        raise InputError(f"overlap must be 'error' or 'last', got {overlap!r}")
    unknown = [n for n in masks if n not in names]
    if unknown:
        raise InputError(f"masks {unknown} have no label value in names; add them to the labels mapping")
    first = next(iter(masks.values()))
    max_value = max(int(names[n]) for n in masks)
    dtype = np.uint8 if max_value < 256 else np.uint16 if max_value < 65536 else np.int32
    out = np.zeros(first.shape, dtype=dtype)
    for name, mask in masks.items():
        first.require_same_grid(mask, what=f"masks {next(iter(masks))!r} and {name!r}")
        m = np.asarray(mask.array, dtype=bool)
        if overlap == "error" and np.any(out[m] != 0):
            raise InputError(f"mask {name!r} overlaps an earlier mask in {int(np.count_nonzero(out[m]))} voxels")
        out[m] = int(names[name])
    return first.with_array(out, unit="label")


def connected_components(mask: Volume | npt.ArrayLike, connectivity: int = 26) -> tuple[npt.NDArray[np.int32], int]:
    """Label the connected components of a mask (6-, 18- or 26-connected); returns (component map, count)."""
    if connectivity not in _CONNECTIVITY:
        raise InputError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    structure = ndimage.generate_binary_structure(3, _CONNECTIVITY[connectivity])
    components, count = ndimage.label(_array(mask) != 0, structure=structure)
    return np.asarray(components, dtype=np.int32), int(count)


def largest_component(mask: Volume, connectivity: int = 26) -> Volume:
    """The mask reduced to its largest connected component (empty stays empty)."""
    components, count = connected_components(mask, connectivity)
    if count == 0:
        return mask.with_array(np.zeros(mask.shape, dtype=bool), unit="mask")
    sizes = np.bincount(components.ravel())[1:]
    return mask.with_array(components == int(np.argmax(sizes)) + 1, unit="mask")


def region_volume_ml(mask: Volume) -> float:
    """Volume of the non-zero voxels of a mask in mL (count × voxel volume)."""
    return float(np.count_nonzero(mask.array)) * mask.voxel_volume_ml


def region_volumes_ml(labels: Volume, names: Mapping[str, int]) -> dict[str, float]:
    """Volume in mL of every named region of a label map (0.0 for absent labels)."""
    array = np.asarray(labels.array)
    if array.size and array.min() < 0:
        raise InputError("label map has negative values; labels are non-negative integers")
    counts = np.bincount(array.ravel().astype(np.int64)) if array.size else np.zeros(1, dtype=np.int64)
    return {
        name: float(counts[int(v)]) * labels.voxel_volume_ml if int(v) < counts.size else 0.0
        for name, v in names.items()
    }
