"""Datasets over prepared cases: random training patches (one time point per sample) and whole evaluation volumes.

Seeding. Training sample ``i`` of epoch ``e`` draws everything — the case, its time point, the patch centre, the
flips, the count fraction and the noise — from ``np.random.default_rng((seed, e, i))`` (the MONAI transforms are
seeded from it). A sample is therefore the same whatever the number of workers, the order they run in, or a resume
that starts again at epoch ``e``. `EpochSampler` hands out the global index ``e·n + i`` (``n`` samples per epoch);
Lightning calls its ``set_epoch`` at the start of every epoch.

A sample is a dict of NumPy arrays and scalars (`collate_samples` makes the batch of tensors): the keys of the
training batch interface (what `ludl.training` and `ludl.models.network.DoseNet` read) plus ``patch_start_zyx``
(the patch's first voxel in the time point's grid; negative where padded), ``flipped_zyx`` and ``count_fraction``
(what augmentation did).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset, Sampler

from ludl.data.cases import CaseRecord, TimepointRecord
from ludl.data.noise import DEFAULT_SENSITIVITY_CPS_PER_MBQ
from ludl.data.patches import IMAGE_KEYS, PAD_VALUES, regions_inside
from ludl.data.store import TimepointStore
from ludl.data.transforms import CROP_WEIGHTS, LesionAwareCropd, RandCountNoised, RandSideFlipd
from ludl.errors import InputError

__all__ = [
    "Augmentation",
    "EpochSampler",
    "PatchDataset",
    "VolumeDataset",
    "collate_samples",
    "draw_timepoint",
]

_REGION_KEYS = ("region_values", "region_dose_gy", "region_dose_uncorrected_gy", "region_is_lesion")


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation settings.

    Attributes:
        flip_prob_zyx: flip probability per axis (z, y, x); the default mirrors left-right only (anatomy stays
            upright; left/right classes are swapped).
        noise_prob: chance of count-noise resampling; count_fraction_range: the kept count fraction's range.
        sensitivity_cps_per_mbq: system volume sensitivity of the count-noise model (`ludl.data.noise`).
        crop_weights: odds of centring a patch on lesion / organ / anywhere (`CROP_WEIGHTS`).
    """

    flip_prob_zyx: tuple[float, float, float] = (0.0, 0.0, 0.5)
    noise_prob: float = 0.5
    count_fraction_range: tuple[float, float] = (0.25, 1.0)
    sensitivity_cps_per_mbq: float = DEFAULT_SENSITIVITY_CPS_PER_MBQ
    crop_weights: Mapping[str, float] = field(default_factory=lambda: dict(CROP_WEIGHTS))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Augmentation:
        """From a config mapping (unknown keys refused)."""
        if values is None:
            return cls()
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(
                f"unknown data.augmentation key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = dict(values)
        for key in ("flip_prob_zyx", "count_fraction_range"):
            if key in kwargs:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        if "crop_weights" in kwargs:
            kwargs["crop_weights"] = {str(k): float(v) for k, v in kwargs["crop_weights"].items()}
        return cls(**kwargs)


def _case_sample(record: CaseRecord, tp: TimepointRecord) -> dict[Hashable, Any]:
    """The scalars of a sample (before its arrays are cut)."""
    return {
        "_record": tp,
        "time_h": np.float32(tp.time_h),
        "injected_gbq": np.float32(record.injected_gbq),
        "spacing_zyx_mm": np.asarray(tp.spacing_zyx_mm, dtype=np.float32),
        "has_pet": bool(tp.has_pet),
        "labelled": record.labelled.copy(),
        "case_id": record.case_id,
        "patient_id": record.patient_id,
        "cycle": int(record.cycle),
        "timepoint_h": np.float32(tp.timepoint_h),
        "flipped_zyx": np.zeros(3, dtype=bool),
        "count_fraction": np.float32(1.0),
    }


def _finish(transformed: Mapping[Hashable, Any], record: CaseRecord, boxes: Any) -> dict[str, Any]:
    """Add the regions wholly inside the sample that have a ground-truth dose, drop the private keys."""
    sample = {str(k): v for k, v in transformed.items()}
    values, dose, uncorrected, lesion = record.region_table()
    size = sample["activity_mbq_per_ml"].shape[1:]
    inside = regions_inside(boxes, values.tolist(), sample["patch_start_zyx"].tolist(), size)
    inside &= np.isfinite(dose) & np.isfinite(uncorrected)  # unscored regions (outside the FOV) have no truth
    sample["region_values"] = values[inside]
    sample["region_dose_gy"] = dose[inside]
    sample["region_dose_uncorrected_gy"] = uncorrected[inside]
    sample["region_is_lesion"] = lesion[inside]
    sample.pop("_record", None)
    return sample


class PatchDataset(Dataset[dict[str, Any]]):
    """Random training patches: each index draws a case, ONE of its time points and a lesion-aware patch.

    Args:
        records: the training cases.
        store: where their time points come from (`TimepointStore`).
        patch_size_zyx: patch size (voxels); None: whole volumes.
        samples_per_epoch: the dataset's length.
        seed: the root of every draw (module docstring).
        augment: apply `augmentation` (flips, count noise); False: crop only.
        border_voxels: see `ludl.data.patches.valid_mask`.
        timepoint_weights: relative odds of drawing each nominal scan time (h → weight, 1 for a time not listed);
            None: every time point of the drawn case equally likely.
    """

    def __init__(
        self,
        records: Sequence[CaseRecord],
        store: TimepointStore,
        *,
        patch_size_zyx: Sequence[int] | None,
        samples_per_epoch: int,
        seed: int = 0,
        augment: bool = True,
        augmentation: Augmentation | None = None,
        border_voxels: int = 2,
        timepoint_weights: Mapping[float, float] | None = None,
    ) -> None:
        if not records:
            raise InputError("no training case: the training split is empty")
        self.timepoint_weights = _checked_weights(timepoint_weights)
        self.records = tuple(records)
        self.store = store
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        aug = augmentation or Augmentation()
        transforms: list[Any] = [LesionAwareCropd(patch_size_zyx, border_voxels, aug.crop_weights)]
        if augment:
            transforms += [
                RandSideFlipd(aug.flip_prob_zyx),
                RandCountNoised(aug.noise_prob, aug.count_fraction_range, aug.sensitivity_cps_per_mbq),
            ]
        self.transform = Compose(transforms)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def draw(self, epoch: int, index: int) -> dict[str, Any]:
        """Sample `index` of `epoch` (deterministic in seed, epoch and index)."""
        rng = np.random.default_rng((self.seed, int(epoch), int(index)))
        record = self.records[int(rng.integers(len(self.records)))]
        tp = record.timepoints[draw_timepoint([t.timepoint_h for t in record.timepoints], self.timepoint_weights, rng)]
        data = self.store.get(tp)
        self.transform.set_random_state(seed=int(rng.integers(2**32)))
        sample = self.transform({**_case_sample(record, tp), "_data": data})
        return _finish(sample, record, data.region_boxes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, i = divmod(int(index), self.samples_per_epoch)
        return self.draw(epoch, i)


def _checked_weights(weights: Mapping[float, float] | None) -> dict[float, float] | None:
    """Scan-time odds as {h: weight}; refuses a negative or non-finite weight and all-zero odds."""
    if weights is None:
        return None
    out = {float(t): float(w) for t, w in dict(weights).items()}
    if any(not np.isfinite(w) or w < 0 for w in out.values()) or (out and not any(w > 0 for w in out.values())):
        raise InputError(
            f"data.timepoint_weights={out} must map scan times (h) to finite weights ≥ 0, at least one > 0; fix it "
            "in the data config or set it to null"
        )
    return out


def draw_timepoint(
    timepoints_h: Sequence[float], weights: Mapping[float, float] | None, rng: np.random.Generator
) -> int:
    """Index of the time point a training sample uses: uniform (None), else by the odds of its nominal scan time
    (1 for a time not listed; times matched to 1e-6 h). A case whose times all weigh 0 draws uniformly."""
    n = len(timepoints_h)
    if weights is None:
        return int(rng.integers(n))  # the unweighted draw: the same random stream as before weights existed
    odds = np.array([next((w for t, w in weights.items() if abs(t - float(h)) < 1e-6), 1.0) for h in timepoints_h])
    if not odds.sum() > 0:
        return int(rng.integers(n))
    return int(rng.choice(n, p=odds / odds.sum()))


class VolumeDataset(Dataset[dict[str, Any]]):
    """Whole volumes, every time point of every case, unaugmented (validation, test, prediction)."""

    def __init__(self, records: Sequence[CaseRecord], store: TimepointStore) -> None:
        self.items = tuple((r, tp) for r in records for tp in r.timepoints)
        self.store = store
        self.crop = LesionAwareCropd(None)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, tp = self.items[int(index)]
        data = self.store.get(tp)
        sample = self.crop({**_case_sample(record, tp), "_data": data})
        return _finish(sample, record, data.region_boxes)


class EpochSampler(Sampler[int]):
    """Yields ``epoch·n + i`` for i < n: the `PatchDataset` index that seeds sample i of this epoch.

    The epoch advances by one after each pass, and Lightning sets it (``set_epoch``) at every epoch start, so a
    resumed run draws what the interrupted one would have.
    """

    def __init__(self, samples_per_epoch: int, epoch: int = 0) -> None:
        self.samples_per_epoch = int(samples_per_epoch)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.samples_per_epoch
        self.epoch += 1
        return iter(range(base, base + self.samples_per_epoch))


def _pad_to(array: npt.NDArray[Any], shape: Sequence[int], value: Any) -> npt.NDArray[Any]:
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    out = np.full((array.shape[0], *shape), value, dtype=array.dtype)
    out[(slice(None), *(slice(0, n) for n in array.shape[1:]))] = array
    return out


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch samples: tensors stacked batch first; volumes of different sizes padded at the far end (outside
    ``valid``/``gt_fov``); region lists padded to the longest with value 0 (NaN doses); strings as lists."""
    batch: dict[str, Any] = {}
    shape = tuple(int(n) for n in np.max([s["activity_mbq_per_ml"].shape[1:] for s in samples], axis=0))
    for key in IMAGE_KEYS:
        batch[key] = torch.from_numpy(np.stack([_pad_to(s[key], shape, PAD_VALUES[key]) for s in samples]))
    n_regions = max(1, max(len(s["region_values"]) for s in samples))
    fill = dict(zip(_REGION_KEYS, (0, np.nan, np.nan, False), strict=True))
    for key in _REGION_KEYS:
        rows = []
        for s in samples:
            row = np.full(n_regions, fill[key], dtype=s[key].dtype)
            row[: len(s[key])] = s[key]
            rows.append(row)
        batch[key] = torch.from_numpy(np.stack(rows))
    for key in ("case_id", "patient_id"):
        batch[key] = [str(s[key]) for s in samples]
    done = {*IMAGE_KEYS, *_REGION_KEYS, "case_id", "patient_id"}
    for key in samples[0]:
        if key not in done:
            batch[key] = torch.as_tensor(np.stack([np.asarray(s[key]) for s in samples]))
    return batch
