"""What `ludl prepare` computes from a case's arrays: canonical class maps and intensity statistics.

Labels: a case stores its region instances (``labels``, values in the sidecar's ``region_values``) and the
canonical segmentation classes (``classes``: `ludl.io.regions.SEGMENTATION_CLASSES` indices, every lesion → the
lesion class). `label_coverage` says which classes a cohort contours and which are unknown (never background).

Intensity statistics (`IntensityStats`) are taken per channel over the body voxels (`body_mask`) when a case is
written, so that ``dataset.json`` is aggregated from the sidecars without reading an array again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.prepared_sidecar import to_jsonable
from ludl.io.regions import BACKGROUND, SEGMENTATION_CLASSES, class_index, region_class_name

__all__ = [
    "BODY_DENSITY_G_PER_ML",
    "PERCENTILES",
    "IntensityStats",
    "body_mask",
    "class_map",
    "classes_present",
    "intensity_statistics",
    "label_coverage",
]

# Body voxels for intensity statistics: denser than air (0.0012 g/mL), lungs (≈ 0.2 g/mL) included.
BODY_DENSITY_G_PER_ML = 0.1
PERCENTILES = (0.5, 50.0, 99.5)
_NAN = float("nan")


def _number(value: Any) -> float:
    return _NAN if value is None else float(value)


# ------------------------------------------------------------------------------------------------ labels


def class_map(labels: npt.ArrayLike, region_values: Mapping[str, int]) -> npt.NDArray[np.uint8]:
    """The canonical class map (uint8, `SEGMENTATION_CLASSES` indices) of a region-instance label map.

    Every lesion instance becomes the lesion class; ``body`` and values no region names become background (0).
    """
    array = np.asarray(labels)
    lut_size = max([int(array.max(initial=0)), *region_values.values(), 0]) + 1
    lut = np.zeros(lut_size, dtype=np.uint8)
    for name, value in region_values.items():
        if region_class_name(name) is not None and value > 0:
            lut[int(value)] = class_index(name)
    return lut[np.clip(array, 0, None).astype(np.int64)]


def classes_present(labels: npt.ArrayLike, region_values: Mapping[str, int]) -> tuple[str, ...]:
    """Classes (not background) with at least one voxel in a region-instance label map, in class-table order."""
    present = {int(v) for v in np.unique(np.asarray(labels))}
    names = {region_class_name(n) for n, v in region_values.items() if int(v) in present}
    return tuple(c.name for c in SEGMENTATION_CLASSES if c.name in names and c.name != BACKGROUND)


def label_coverage(contoured: Iterable[str], unlabeled: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(labelled classes, unlabeled classes) of a cohort: what its ``labels`` contour, and everything else.

    Args:
        contoured: region names the cohort's label maps contour (cohort.yaml ``labels``, or the names found).
        unlabeled: cohort.yaml ``unlabeled`` (always unknown, even when a label value exists).
    """
    unknown = {region_class_name(n) for n in unlabeled} - {None}
    drawn = {region_class_name(n) for n in contoured} - {None} - unknown
    classes = [c.name for c in SEGMENTATION_CLASSES if c.name != BACKGROUND]
    return tuple(c for c in classes if c in drawn), tuple(c for c in classes if c not in drawn)


# ------------------------------------------------------------------------------------------------ statistics


def body_mask(density_g_per_ml: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Voxels inside the body: mass density above `BODY_DENSITY_G_PER_ML`."""
    return np.asarray(density_g_per_ml) > BODY_DENSITY_G_PER_ML


@dataclass(frozen=True)
class IntensityStats:
    """Intensity statistics of one channel over body voxels (float64 over the stored values).

    For one time point of one case they are exact; in ``dataset.json`` `mean` and `std` are pooled exactly over
    every voxel of every case and the percentiles are the medians of the per-time-point percentiles.
    """

    n_voxels: int
    mean: float
    std: float
    p0_5: float
    p50: float
    p99_5: float

    def scaled(self, factor: float) -> IntensityStats:
        """The statistics of the values times `factor` (> 0)."""
        return IntensityStats(
            self.n_voxels,
            self.mean * factor,
            self.std * factor,
            self.p0_5 * factor,
            self.p50 * factor,
            self.p99_5 * factor,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (NaN as None)."""
        return dict(to_jsonable({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> IntensityStats:
        """What `to_dict` wrote."""
        try:
            return cls(
                int(document["n_voxels"]), *(_number(document[k]) for k in ("mean", "std", "p0_5", "p50", "p99_5"))
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(
                f"not an intensity statistics document ({err}); rerun `ludl prepare … overwrite=true`"
            ) from err

    @classmethod
    def pooled(cls, parts: Sequence[IntensityStats]) -> IntensityStats:
        """Exact pooled mean and std of several voxel sets; percentiles: the medians of theirs."""
        used = [p for p in parts if p.n_voxels > 0]
        n = sum(p.n_voxels for p in used)
        if n == 0:
            return cls(0, _NAN, _NAN, _NAN, _NAN, _NAN)
        mean = sum(p.n_voxels * p.mean for p in used) / n
        second = sum(p.n_voxels * (p.std**2 + p.mean**2) for p in used) / n
        median = [float(np.median([getattr(p, k) for p in used])) for k in ("p0_5", "p50", "p99_5")]
        return cls(n, mean, math.sqrt(max(second - mean**2, 0.0)), *median)


def intensity_statistics(values: npt.ArrayLike, mask: npt.ArrayLike | None = None) -> IntensityStats:
    """`IntensityStats` of the values where `mask` is True (all voxels without a mask); NaN when none."""
    data = np.asarray(values, dtype=np.float64)
    if mask is not None:
        data = data[np.asarray(mask, dtype=bool)]
    data = data.ravel()
    if data.size == 0:
        return IntensityStats(0, _NAN, _NAN, _NAN, _NAN, _NAN)
    low, mid, high = np.percentile(data, PERCENTILES)
    return IntensityStats(int(data.size), float(data.mean()), float(data.std()), float(low), float(mid), float(high))
