"""A label map drawn on another grid (finer, or with thicker slices) put on an image grid (SPECT) by tissue fractions.

Every voxel of the label map is a box; its share of each image voxel is the exact volume of the two boxes'
intersection (`_axis_weights`: separable, one sparse matrix per axis, for grids of the same direction). From these
shares, `majority_labels` gives each image voxel the label that covers most of it, and `label_fractions` lists the
tissue fractions of the voxels shared by several labels (for the partial-volume correction and the region extents).
Exact overlaps, rather than counting each fine voxel in the image voxel its centre falls in, make the result a
continuous function of the two grids' positions: a 1e-5 mm shift of either grid (float32 origins) moves a fraction
by about 1e-5 mm / spacing, where counting centres moved whole planes of fine voxels from one image voxel to the
next when the grids' voxel edges lined up; and 5 mm label slices on a 4.8 mm grid leave no image slice empty.
Grids of different direction give None (callers then use nearest neighbour).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from ludl.imaging.volume import Volume

__all__ = ["label_fractions", "labels_with_fractions", "majority_labels"]

# A label and the unlabelled share of an image voxel closer than this (fraction of the voxel) count as a tie: the
# tie rule then decides, so that sub-voxel float noise in the grids' origins does not flip whole boundaries.
_TIE_FRACTION = 1e-4
# A voxel whose fractions sum to at least 1 − this is wholly inside one label (float sums of exact shares).
_WHOLE_TOL = 1e-6


def _axis_weights(first: float, step: float, n_fine: int, n_coarse: int) -> sp.csr_matrix:
    """(n_coarse, n_fine): share of coarse voxel i's length covered by fine voxel j (1D, coarse index units).

    Fine voxel j spans [first + step·j ∓ step/2]; coarse voxel i spans [i ∓ 0.5] (both in coarse index units).
    """
    centre = first + step * np.arange(n_fine, dtype=np.float64)
    lo, hi = centre - 0.5 * step, centre + 0.5 * step
    start = np.floor(lo + 0.5).astype(np.int64)
    rows, cols, vals = [], [], []
    for m in range(math.ceil(step) + 2):
        i = start + m
        length = np.minimum(hi, i + 0.5) - np.maximum(lo, i - 0.5)
        keep = (length > 0) & (i >= 0) & (i < n_coarse)
        rows.append(i[keep])
        cols.append(np.flatnonzero(keep))
        vals.append(length[keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_coarse, n_fine))


def _contract(weights: list[sp.csr_matrix], block: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Apply per-axis weights (z, y, x) to a 3-D block: Σ_fine W_z W_y W_x · block."""
    out = block
    for axis in (2, 1, 0):
        moved = np.moveaxis(out, axis, 0)
        rest = moved.shape[1:]
        out = np.moveaxis(np.asarray(weights[axis] @ moved.reshape(moved.shape[0], -1)).reshape(-1, *rest), 0, axis)
    return np.asarray(out)


def _label_overlaps(
    labels: Volume, grid: Volume
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """(image voxel, label value, share of the voxel's volume, share covered by the label map's field) per pair.

    None for grids of different direction.
    """
    from scipy import ndimage

    if not np.allclose(labels.direction, grid.direction, atol=1e-6):
        return None
    lab = np.asarray(labels.array)
    first = grid.physical_to_index(labels.origin_xyz_mm)  # label voxel (0,0,0) in image index units (z, y, x)
    steps = np.asarray(labels.spacing_zyx_mm) / np.asarray(grid.spacing_zyx_mm)
    weights = [_axis_weights(float(first[k]), float(steps[k]), lab.shape[k], grid.shape[k]) for k in range(3)]
    per_axis = [np.asarray(w.sum(axis=1)).ravel() for w in weights]
    covered = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
    values = np.unique(lab[lab != 0]) if lab.size else np.zeros(0, dtype=lab.dtype)
    voxels, owners, shares = [], [], []
    positive = values[values > 0]
    boxes = ndimage.find_objects(np.where(lab > 0, lab, 0).astype(np.int64)) if positive.size else []
    for value in values:
        if value > 0 and boxes[int(value) - 1] is not None:
            box = boxes[int(value) - 1]
        else:  # negative label values (rare): the whole map
            box = tuple(slice(0, n) for n in lab.shape)
        part = [w[:, b] for w, b in zip(weights, box, strict=True)]
        rows = [np.unique(p.nonzero()[0]) for p in part]
        if any(r.size == 0 for r in rows):
            continue
        share = _contract([p[r] for p, r in zip(part, rows, strict=True)], (lab[box] == value).astype(np.float64))
        z, y, x = np.nonzero(share > 0)
        voxels.append(np.ravel_multi_index((rows[0][z], rows[1][y], rows[2][x]), grid.shape))
        owners.append(np.full(z.size, value, dtype=lab.dtype))
        shares.append(share[z, y, x])
    if not voxels:
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(0, dtype=lab.dtype), np.zeros(0), np.zeros(0)
    voxel = np.concatenate(voxels)
    return voxel, np.concatenate(owners), np.concatenate(shares), covered.ravel()[voxel]


def majority_labels(labels: Volume, grid: Volume) -> Volume | None:
    """Labels on an image grid: each voxel gets the label covering most of it, if more than the unlabelled part.

    Nearest-neighbour sampling of a label map drawn on a 2× finer grid picks one of the 8 fine voxels that meet at
    each coarse centre, always the same corner: every region moves by half a fine voxel (1.5 mm at 3 mm) and small
    ones lose or gain volume; with thicker label slices than image slices it leaves gaps. The majority of the exact
    overlaps keeps each region where its volume is. Only for grids with the same direction (the label map drawn on
    the scanner's frame); returns None otherwise (use nearest neighbour).
    """
    found = _label_overlaps(labels, grid)
    return None if found is None else _majority(labels, grid, found)


def _majority(labels: Volume, grid: Volume, found: tuple[Any, ...]) -> Volume:
    """`majority_labels` from the overlaps."""
    voxel, label_values, share, covered = found
    out = np.zeros(grid.shape, dtype=np.asarray(labels.array).dtype)
    if voxel.size == 0:
        return grid.with_array(out, unit=labels.unit)
    order = np.lexsort((share, voxel))  # per image voxel, its largest share last
    last = np.r_[voxel[order][1:] != voxel[order][:-1], True]
    best_voxel, best_value, best_share = voxel[order][last], label_values[order][last], share[order][last]
    labelled = np.bincount(voxel, weights=share, minlength=grid.array.size)[best_voxel]
    unlabelled = covered[order][last] - labelled
    # A tie with the unlabelled share (half of the voxel at a flat boundary) goes to the region on every other voxel
    # (a checkerboard), so boundaries keep their volume on average instead of all ties going one way.
    parity = np.sum(np.unravel_index(best_voxel, grid.shape), axis=0) % 2 == 0
    tie = np.abs(best_share - unlabelled) <= _TIE_FRACTION
    win = (~tie & (best_share > unlabelled)) | (tie & parity)
    out.ravel()[best_voxel[win]] = best_value[win]
    return grid.with_array(out, unit=labels.unit)


def label_fractions(
    labels: Volume, grid: Volume
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
    """Tissue fractions of a finer label map on `grid`: (flat voxel, label value, fraction) of every voxel shared.

    Only voxels not wholly inside one label are listed; the share no label claims is the rest (1 − Σ fractions).
    None for grids of different direction (the partial-volume correction then counts whole voxels).
    """
    found = _label_overlaps(labels, grid)
    return None if found is None else _fractions(found)


def _fractions(found: tuple[Any, ...]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """`label_fractions` from the overlaps."""
    voxel, label_values, share, covered = found
    # Fractions of the part of the voxel the label map covers (a voxel half outside the map counts its inside).
    fraction = np.minimum(share / np.maximum(covered, 1e-12), 1.0)
    # Whole: one label alone fills the voxel. A voxel 99.9999 % one label with a sliver of another stays listed
    # with both, or dropping the large share would leave the sliver standing for the whole voxel.
    alone = np.bincount(voxel, minlength=int(voxel.max()) + 1 if voxel.size else 0)[voxel] == 1
    whole = alone & (fraction >= 1.0 - _WHOLE_TOL)
    return voxel[~whole], np.asarray(label_values[~whole], dtype=np.int64), fraction[~whole]


def labels_with_fractions(
    labels: Volume, grid: Volume
) -> tuple[Volume, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]] | None:
    """`majority_labels` and `label_fractions` together (the overlaps computed once); None for other directions."""
    found = _label_overlaps(labels, grid)
    return None if found is None else (_majority(labels, grid, found), _fractions(found))
