"""A label map drawn on a finer grid, put on a coarser image grid (SPECT) without moving its regions.

`majority_labels` gives each coarse voxel the label most of its fine voxels carry; `label_fractions` lists the
tissue fractions of the coarse voxels shared by several labels (for the partial-volume correction). Both count each
fine voxel in the coarse voxel its centre falls in, and need grids of the same direction (None otherwise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.imaging.volume import Volume

__all__ = ["label_fractions", "majority_labels"]


def _fine_label_counts(
    labels: Volume, grid: Volume
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """(coarse voxel, label value, fine-voxel count, fine voxels in that coarse voxel) of every labelled pair.

    Each fine voxel counts in the coarse voxel its centre falls in. None for grids of different direction.
    """
    if not np.allclose(labels.direction, grid.direction, atol=1e-6):
        return None
    lab = np.asarray(labels.array)
    fine_origin = grid.physical_to_index(labels.origin_xyz_mm)  # fine voxel (0,0,0) in coarse index units
    steps = np.asarray(labels.spacing_zyx_mm) / np.asarray(grid.spacing_zyx_mm)
    maps = [
        np.floor(fine_origin[k] + steps[k] * np.arange(lab.shape[k]) + 0.5).astype(np.int64) for k in range(3)
    ]  # coarse index of every fine slice/row/column: the map is separable for equal directions
    valid = [(m >= 0) & (m < n) for m, n in zip(maps, grid.shape, strict=True)]
    per_axis = [np.bincount(m[v], minlength=n) for m, v, n in zip(maps, valid, grid.shape, strict=True)]
    total = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
    z, y, x = np.nonzero(lab)
    keep = valid[0][z] & valid[1][y] & valid[2][x]
    z, y, x = z[keep], y[keep], x[keep]
    values, code = np.unique(lab[z, y, x], return_inverse=True)
    coarse = np.ravel_multi_index((maps[0][z], maps[1][y], maps[2][x]), grid.shape)
    pairs, counts = np.unique(coarse * values.size + code.ravel(), return_counts=True)
    voxel, label = np.divmod(pairs, values.size)
    return voxel, values[label], counts, total.ravel()[voxel]


def majority_labels(labels: Volume, grid: Volume) -> Volume | None:
    """Labels on a coarser grid by majority of the fine voxels whose centres fall in each coarse voxel.

    Nearest-neighbour sampling of a label map drawn on a 2× finer grid picks one of the 8 fine voxels that meet at
    each coarse centre, always the same corner: every region moves by half a fine voxel (1.5 mm at 3 mm) and small
    ones lose or gain volume. The majority keeps each region where its volume is. Only for grids with the same
    direction (the label map drawn on the scanner's frame); returns None otherwise (use nearest neighbour).
    """
    found = _fine_label_counts(labels, grid)
    if found is None:
        return None
    voxel, label_values, counts, total = found
    order = np.lexsort((counts, voxel))  # per coarse voxel, its most frequent label last
    last = np.r_[voxel[order][1:] != voxel[order][:-1], True]
    best_voxel, best_value, best_count = voxel[order][last], label_values[order][last], counts[order][last]
    labelled = np.bincount(voxel, weights=counts, minlength=grid.array.size)[best_voxel]
    unlabelled = total[order][last] - labelled
    out = np.zeros(grid.shape, dtype=np.asarray(labels.array).dtype)
    # A tie with the unlabelled share (4 of 8 at a flat boundary) goes to the region on every other voxel (a
    # checkerboard), so boundaries keep their volume on average instead of all ties going one way.
    parity = np.sum(np.unravel_index(best_voxel, grid.shape), axis=0) % 2 == 0
    win = (best_count > unlabelled) | ((best_count == unlabelled) & parity)
    out.ravel()[best_voxel[win]] = best_value[win]
    return grid.with_array(out, unit=labels.unit)


def label_fractions(
    labels: Volume, grid: Volume
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
    """Tissue fractions of a finer label map on `grid`: (flat voxel, label value, fraction) of every voxel shared.

    Only voxels not wholly inside one label are listed; the share no label claims is the rest (1 − Σ fractions).
    None for grids of different direction (the partial-volume correction then counts whole voxels).
    """
    found = _fine_label_counts(labels, grid)
    if found is None:
        return None
    voxel, label_values, counts, total = found
    fraction = counts / np.maximum(total, 1)
    whole = fraction >= 1.0 - 1e-9
    return voxel[~whole], np.asarray(label_values[~whole], dtype=np.int64), fraction[~whole]
