"""MONAI dict transforms of a training sample, on plain NumPy arrays (no MetaTensor: it costs ≈ 90× per call).

The sample dict a `ludl.data.dataset` hands in holds the time point (``_data``: `TimepointData`, ``_record``:
`TimepointRecord`); `LesionAwareCropd` turns it into the batch's image keys (`ludl.data.patches.IMAGE_KEYS`) and
``patch_start_zyx``. The random transforms then act on those keys:

- `RandSideFlipd`: mirror every image key together along an axis. Dose kernels are symmetric, so the mirrored
  activity gives the mirrored dose exactly and every sum (∑ activity, ∑ dose) is kept. Mirroring the patient's
  left-right axis turns a left kidney into a right one: the left/right classes are swapped so the labels stay
  anatomical. Nothing is transposed, so the spacing never needs permuting.
- `RandCountNoised`: the SPECT at a lower count level (`ludl.data.noise`); targets unchanged (the ground truth is
  multi-time-point, not this scan).

Small rotations are not offered: resampling activity on a rotated grid keeps ∑ activity only approximately (linear
interpolation smooths, the corners leave the patch) and labels need nearest-neighbour; a rotation would also have
to re-derive `valid` and the region lists. Flips and count noise keep the physics exact.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from monai.transforms import MapTransform, Randomizable

from ludl.data.cases import TimepointData, TimepointRecord
from ludl.data.noise import (
    DEFAULT_ACQUISITION_S,
    DEFAULT_SENSITIVITY_CPS_PER_MBQ,
    counts_per_mbq_per_ml,
    resample_counts,
)
from ludl.data.patches import IMAGE_KEYS, cut_patch, patch_start, valid_mask
from ludl.errors import InputError
from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.physics.units import ML_PER_MM3

__all__ = [
    "CROP_WEIGHTS",
    "SIDE_SWAP",
    "LesionAwareCropd",
    "RandCountNoised",
    "RandSideFlipd",
]

# Where a training patch is centred: on a lesion voxel, an organ (or marrow) voxel, or anywhere, with these odds.
# Lesions are < 1 % of the voxels but carry the doses that matter most; "anywhere" keeps background and body seen.
CROP_WEIGHTS: Mapping[str, float] = {"lesion": 0.4, "organ": 0.3, "anywhere": 0.3}
_GROUP_OF_KIND = {"lesion": "lesion", "organ": "organ", "marrow": "organ"}


def _side_swap() -> npt.NDArray[np.int64]:
    """Class index → its mirror class (``kidney_left`` ↔ ``kidney_right``), identity for the others."""
    index = {c.name: c.index for c in SEGMENTATION_CLASSES}
    table = np.arange(len(SEGMENTATION_CLASSES), dtype=np.int64)
    for name, i in index.items():
        if name.endswith("_left") and name[: -len("_left")] + "_right" in index:
            j = index[name[: -len("_left")] + "_right"]
            table[i], table[j] = j, i
    return table


SIDE_SWAP: npt.NDArray[np.int64] = _side_swap()


class LesionAwareCropd(Randomizable, MapTransform):
    """Cut a patch (or the whole volume) out of ``_data`` into the sample's image keys, centred lesion-aware.

    Args:
        patch_size_zyx: patch size in voxels; None: the whole volume (no random draw).
        border_voxels: voxels next to a cut face left out of ``valid``.
        weights: odds of centring on a ``lesion`` voxel, an ``organ``/marrow voxel or ``anywhere``
            (`CROP_WEIGHTS`); a group absent from the time point is dropped and the others renormalised.
    """

    def __init__(
        self,
        patch_size_zyx: Sequence[int] | None,
        border_voxels: int = 2,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        MapTransform.__init__(self, keys=["_data"])
        self.patch_size_zyx = None if patch_size_zyx is None else tuple(int(s) for s in patch_size_zyx)
        self.border_voxels = int(border_voxels)
        self.weights = dict(CROP_WEIGHTS if weights is None else weights)
        unknown = sorted(set(self.weights) - set(CROP_WEIGHTS))
        if unknown or any(w < 0 for w in self.weights.values()) or not sum(self.weights.values()) > 0:
            raise InputError(
                f"crop weights {self.weights} must be non-negative, not all 0, with keys among "
                f"{', '.join(CROP_WEIGHTS)}"
            )

    def randomize(self, data: Any = None) -> None:
        """Draws happen in `centre` (they depend on the time point)."""

    def centre(self, data: TimepointData, shape: Sequence[int]) -> tuple[int, ...]:
        """A patch centre: group by the weights, class uniformly within the group, voxel uniformly in the class."""
        groups: dict[str, list[int]] = {"lesion": [], "organ": [], "anywhere": []}
        for c in SEGMENTATION_CLASSES:
            if c.index in data.class_voxels and c.kind in _GROUP_OF_KIND:
                groups[_GROUP_OF_KIND[c.kind]].append(c.index)
        names = [g for g in groups if self.weights.get(g, 0) > 0 and (groups[g] or g == "anywhere")]
        odds = np.array([self.weights[g] for g in names], dtype=np.float64)
        group = names[int(self.R.choice(len(names), p=odds / odds.sum()))]
        if group == "anywhere":
            return tuple(int(self.R.randint(n)) for n in shape)
        cls = groups[group][int(self.R.randint(len(groups[group])))]
        voxels = data.class_voxels[cls]
        flat = int(voxels[int(self.R.randint(len(voxels)))])
        return tuple(int(i) for i in np.unravel_index(flat, tuple(shape)))

    def __call__(self, sample: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(sample)
        data: TimepointData = d.pop("_data")
        shape: tuple[int, ...] = tuple(int(n) for n in data.arrays["spect"].shape)
        start: tuple[int, ...]
        size: tuple[int, ...]
        if self.patch_size_zyx is None:
            start, size = (0, 0, 0), shape
        else:
            size = self.patch_size_zyx
            start = patch_start(self.centre(data, shape), shape, size)
        d.update(cut_patch(data.arrays, start, size))
        d["valid"] = valid_mask(d["gt_fov"], start, size, shape, self.border_voxels if self.patch_size_zyx else 0)
        d["patch_start_zyx"] = np.asarray(start, dtype=np.int64)
        return d


class RandSideFlipd(Randomizable, MapTransform):
    """Mirror every image key along each axis with its probability; left/right classes swapped on the L-R axis.

    Args:
        prob_zyx: flip probability per array axis (z, y, x).
    """

    def __init__(self, prob_zyx: Sequence[float] = (0.0, 0.0, 0.5)) -> None:
        MapTransform.__init__(self, keys=list(IMAGE_KEYS))
        self.prob_zyx = tuple(float(p) for p in prob_zyx)
        self._flip: tuple[bool, ...] = (False, False, False)

    def randomize(self, data: Any = None) -> None:
        """Draw which axes to flip."""
        draws = self.R.random_sample(3)
        self._flip = tuple(bool(u < p) for u, p in zip(draws, self.prob_zyx, strict=True))

    def __call__(self, sample: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(sample)
        self.randomize()
        record: TimepointRecord = d["_record"]
        axes = tuple(1 + a for a, flip in enumerate(self._flip) if flip)  # +1: channel first
        if not axes:
            return d
        for key in IMAGE_KEYS:
            d[key] = np.ascontiguousarray(np.flip(d[key], axis=axes))
        if self._flip[record.lr_axis]:
            d["classes"] = SIDE_SWAP[d["classes"]]
        d["flipped_zyx"] = np.asarray(self._flip, dtype=bool)
        return d


class RandCountNoised(Randomizable, MapTransform):
    """With probability `prob`, resample ``activity_mbq_per_ml`` at a count fraction drawn in `count_fraction_range`.

    Args:
        prob: chance a sample is resampled.
        count_fraction_range: (low, high) of the uniform draw of the kept count fraction f, 0 < low ≤ high ≤ 1.
        sensitivity_cps_per_mbq: system volume sensitivity for k (`ludl.data.noise`).
    """

    def __init__(
        self,
        prob: float = 0.5,
        count_fraction_range: Sequence[float] = (0.25, 1.0),
        sensitivity_cps_per_mbq: float = DEFAULT_SENSITIVITY_CPS_PER_MBQ,
    ) -> None:
        MapTransform.__init__(self, keys=["activity_mbq_per_ml"])
        low, high = (float(v) for v in count_fraction_range)
        if not 0.0 < low <= high <= 1.0:
            raise InputError(f"count_fraction_range {count_fraction_range} must satisfy 0 < low ≤ high ≤ 1")
        self.prob, self.low, self.high = float(prob), low, high
        self.sensitivity_cps_per_mbq = float(sensitivity_cps_per_mbq)
        self._fraction = 1.0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to resample and the count fraction."""
        apply = self.R.random_sample() < self.prob
        fraction = self.R.uniform(self.low, self.high)
        self._fraction = float(fraction) if apply else 1.0

    def __call__(self, sample: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(sample)
        self.randomize()
        d["count_fraction"] = np.float32(self._fraction)
        if self._fraction >= 1.0:
            return d
        record: TimepointRecord = d["_record"]
        voxel_ml = float(np.prod(record.spacing_zyx_mm)) * ML_PER_MM3
        k = counts_per_mbq_per_ml(voxel_ml, self.sensitivity_cps_per_mbq, record.acquisition_s or DEFAULT_ACQUISITION_S)
        rng = np.random.default_rng(int(self.R.randint(2**32, dtype=np.uint64)))  # Generator: 2× faster gamma draws
        d["activity_mbq_per_ml"] = resample_counts(d["activity_mbq_per_ml"], self._fraction, k, rng)
        return d
