"""Training data over prepared cases: the MONAI transforms, the Datasets and the Lightning DataModule.

Modules: `cases` (a case's sidecar as `CaseRecord`, a time point's arrays and sampling index), `patches` (cutting
a sample: patch placement, batch units, `valid`, regions inside), `noise` (count-noise resampling), `transforms`
(MONAI dict transforms: lesion-aware crop, left-right-aware flips, count noise), `store` (caching: none, memory,
disk), `dataset` (`PatchDataset`, `VolumeDataset`, `EpochSampler`, `collate_samples`), `module`
(`PreparedDataModule`). The prepared-case format itself (`ludl.io.prepared`, ``dataset.json``) and the splits
(`ludl.io.splits`) live in `ludl.io`, so that `ludl prepare` and the dosimetry never import torch or Lightning.
The public names load their module on first use.
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
    "CaseRecord": "ludl.data.cases",
    "TimepointRecord": "ludl.data.cases",
    "TimepointData": "ludl.data.cases",
    "read_records": "ludl.data.cases",
    "load_timepoint": "ludl.data.cases",
    "cut_patch": "ludl.data.patches",
    "valid_mask": "ludl.data.patches",
    "regions_inside": "ludl.data.patches",
    "resample_counts": "ludl.data.noise",
    "count_noise_variance": "ludl.data.noise",
    "LesionAwareCropd": "ludl.data.transforms",
    "RandSideFlipd": "ludl.data.transforms",
    "RandCountNoised": "ludl.data.transforms",
    "TimepointStore": "ludl.data.store",
    "CACHE_MODES": "ludl.data.store",
    "Augmentation": "ludl.data.dataset",
    "PatchDataset": "ludl.data.dataset",
    "VolumeDataset": "ludl.data.dataset",
    "EpochSampler": "ludl.data.dataset",
    "collate_samples": "ludl.data.dataset",
    "PreparedDataModule": "ludl.data.module",
    "split_patients": "ludl.data.module",
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
