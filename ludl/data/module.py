"""`PreparedDataModule`: the Lightning data module over a prepared folder, with the folds of its ``splits.json``.

Split rule for ``fold=k`` of n folds: test = the patients of fold k, validation = those of fold (k + 1) mod n,
training = every other fold. Splits are by patient, so a patient's cycles never sit in two splits. It needs
n ≥ 3 folds (each with a patient); ``ludl prepare n_folds=…`` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from ludl.data.cases import CaseRecord, cases_folder, read_records
from ludl.data.dataset import Augmentation, EpochSampler, PatchDataset, VolumeDataset, collate_samples
from ludl.data.store import CACHE_MODES, TimepointStore
from ludl.errors import InputError
from ludl.io.prepared_dataset import DatasetDescriptor, read_dataset_descriptor
from ludl.io.splits import SPLITS_FILE, Splits, read_splits

__all__ = ["MIN_FOLDS", "PreparedDataModule", "split_patients"]

MIN_FOLDS = 3  # test, validation and at least one training fold


def split_patients(splits: Splits, fold: int, *, file: Path | str = SPLITS_FILE) -> dict[str, tuple[str, ...]]:
    """``train`` / ``val`` / ``test`` patients of `fold` (module docstring); refuses too few folds or patients."""
    n = splits.n_folds
    n_patients = len(splits.patients)
    if n < MIN_FOLDS or n_patients < MIN_FOLDS:
        raise InputError(
            f"{file}: {n} fold(s) over {n_patients} patient(s), but training needs at least {MIN_FOLDS} folds "
            f"(test, validation, training) with a patient each; rerun `ludl prepare … n_folds={MIN_FOLDS}` or more "
            f"on a cohort of at least {MIN_FOLDS} patients"
        )
    if not 0 <= fold < n:
        raise InputError(f"fold={fold} does not exist in {file}: folds are 0 … {n - 1}; set data.fold")
    val_fold = (fold + 1) % n
    out = {
        "test": tuple(splits.folds[fold]),
        "val": tuple(splits.folds[val_fold]),
        "train": tuple(sorted(p for k, f in enumerate(splits.folds) if k not in (fold, val_fold) for p in f)),
    }
    empty = [name for name, patients in out.items() if not patients]
    if empty:
        raise InputError(
            f"{file}: fold={fold} leaves the {', '.join(empty)} split(s) without a patient ({n} folds over "
            f"{n_patients} patients); rerun `ludl prepare … n_folds=…` with fewer folds or add patients"
        )
    return out


class PreparedDataModule(pl.LightningDataModule):
    """Training patches and evaluation volumes from a prepared folder (``ludl prepare``'s output).

    Args:
        prepared_dir: the prepared folder (``cases/``, ``dataset.json``, ``splits.json``).
        fold: the held-out (test) fold; validation is fold (fold + 1) mod n.
        batch_size: training batch size (evaluation loaders use 1: whole volumes differ in size).
        patch_size_zyx: training patch (voxels); None: whole volumes.
        samples_per_epoch: training samples per epoch; None: 8 per training case, at least ``batch_size``.
        num_workers: DataLoader worker processes.
        cache: ``memory``, ``disk`` or ``none`` (`ludl.data.store`); cache_dir: the disk cache's folder
            (default ``<prepared_dir>/data_cache``).
        timepoints_h: keep only these nominal time points (None: all).
        timepoint_weights: relative odds of each nominal scan time in the training draw (h → weight; None:
            uniform); validation and prediction always see every time point.
        augment: flips and count noise on training samples; augmentation: their settings (`Augmentation` or a
            mapping of its fields).
        seed: the root of every random draw (`ludl.data.dataset`).
        border_voxels: voxels next to a cut patch face left out of ``valid``.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        fold: int = 0,
        batch_size: int = 2,
        patch_size_zyx: Sequence[int] | None = (64, 64, 64),
        samples_per_epoch: int | None = None,
        num_workers: int = 0,
        cache: str = "memory",
        timepoints_h: Sequence[float] | None = None,
        augment: bool = True,
        seed: int = 0,
        border_voxels: int = 2,
        cache_dir: str | Path | None = None,
        augmentation: Augmentation | Mapping[str, Any] | None = None,
        timepoint_weights: Mapping[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        if cache not in CACHE_MODES:
            raise InputError(f"cache={cache!r} is not one of {', '.join(CACHE_MODES)}; set data.cache")
        if batch_size < 1 or num_workers < 0 or border_voxels < 0:
            raise InputError(
                f"batch_size ≥ 1, num_workers ≥ 0 and border_voxels ≥ 0 needed, got {batch_size}, {num_workers}, "
                f"{border_voxels}; fix the data config"
            )
        if patch_size_zyx is not None and (len(patch_size_zyx) != 3 or min(patch_size_zyx) < 1):
            raise InputError(f"patch_size_zyx={patch_size_zyx} must be three positive sizes (z, y, x) or null")
        self.fold = int(fold)
        self.batch_size = int(batch_size)
        self.patch_size_zyx = None if patch_size_zyx is None else tuple(int(s) for s in patch_size_zyx)
        self.samples_per_epoch = samples_per_epoch
        self.num_workers = int(num_workers)
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.prepared_dir / "data_cache"
        self.timepoints_h = None if timepoints_h is None else tuple(float(t) for t in timepoints_h)
        self.timepoint_weights = None if timepoint_weights is None else dict(timepoint_weights)
        self.augment = bool(augment)
        self.augmentation = (
            augmentation if isinstance(augmentation, Augmentation) else Augmentation.from_mapping(augmentation)
        )
        self.seed = int(seed)
        self.border_voxels = int(border_voxels)
        self.records: dict[str, tuple[CaseRecord, ...]] = {}
        self.patients: dict[str, tuple[str, ...]] = {}
        self._store: TimepointStore | None = None
        self._descriptor: DatasetDescriptor | None = None
        self._sampler: EpochSampler | None = None

    @property
    def descriptor(self) -> DatasetDescriptor:
        """The ``dataset.json`` descriptor of the prepared folder."""
        if self._descriptor is None:
            cases_folder(self.prepared_dir)  # a missing folder gets its own message first
            self._descriptor = read_dataset_descriptor(self.prepared_dir)
        return self._descriptor

    def setup(self, stage: str | None = None) -> None:
        """Read the splits and the cases, split them by patient, fill the cache (once)."""
        if self.records:
            return
        records = read_records(self.prepared_dir, self.timepoints_h)
        file = self.prepared_dir / SPLITS_FILE
        splits = read_splits(file)
        self.patients = split_patients(splits, self.fold, file=file)
        unknown = sorted({r.patient_id for r in records} - set(splits.patients))
        if unknown:
            raise InputError(
                f"{file} does not list patient(s) {', '.join(unknown)} of the prepared cases; rerun `ludl prepare` "
                "to rewrite the splits"
            )
        self.records = {
            name: tuple(r for r in records if r.patient_id in set(patients)) for name, patients in self.patients.items()
        }
        empty = [name for name, recs in self.records.items() if not recs]
        if empty:
            raise InputError(
                f"{self.prepared_dir}: no prepared case for the {', '.join(empty)} split(s) of fold {self.fold} "
                f"({file}); prepare every patient of the cohort or pick another fold"
            )
        self._store = TimepointStore(self.cache, self.cache_dir if self.cache == "disk" else None)
        # Index (and for cache=memory read) every time point now: bad input fails here, and forked workers share it.
        self._store.fill([tp for recs in self.records.values() for r in recs for tp in r.timepoints])

    def _require_setup(self) -> TimepointStore:
        if self._store is None:
            self.setup()
        if self._store is None:  # setup always sets it; this narrows the type
            raise InputError("the data module could not be set up")
        return self._store

    def train_dataset(self) -> PatchDataset:
        """The training `PatchDataset`."""
        store = self._require_setup()
        train = self.records["train"]
        n = self.samples_per_epoch or max(self.batch_size, 8 * len(train))
        return PatchDataset(
            train,
            store,
            patch_size_zyx=self.patch_size_zyx,
            samples_per_epoch=n,
            seed=self.seed,
            augment=self.augment,
            augmentation=self.augmentation,
            border_voxels=self.border_voxels,
            timepoint_weights=self.timepoint_weights,
        )

    def _loader(self, dataset: Any, *, batch_size: int, sampler: Any = None) -> DataLoader[dict[str, Any]]:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            # Workers outlive an epoch: no fork per epoch. Safe for the seeding, which rides on the sampler's
            # indices (main process), not on worker state.
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next training pass draws. Lightning sets it through the sampler; under DDP its sampler
        wrapper hides ours, so a LightningModule that resumes under DDP calls this in ``on_train_epoch_start``."""
        if self._sampler is not None:
            self._sampler.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Random patches (one time point each), `batch_size` per batch, seeded per epoch and sample."""
        dataset = self.train_dataset()
        if self._sampler is None or self._sampler.samples_per_epoch != len(dataset):
            self._sampler = EpochSampler(len(dataset))
        return self._loader(dataset, batch_size=self.batch_size, sampler=self._sampler)

    def _volumes(self, split: str) -> DataLoader[dict[str, Any]]:
        return self.volume_dataloader(split)

    def volume_dataloader(self, split: str, records: Sequence[Any] | None = None) -> DataLoader[dict[str, Any]]:
        """Whole volumes, batch size 1, of a split's case records (or of `records`, e.g. one time point per case)."""
        store = self._require_setup()
        chosen = self.records[split] if records is None else records
        return self._loader(VolumeDataset(list(chosen), store), batch_size=1)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Whole volumes of the validation fold, every time point, batch size 1."""
        return self._volumes("val")

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Whole volumes of the test (held-out) fold, every time point, batch size 1."""
        return self._volumes("test")

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        """As `test_dataloader`: the held-out fold's whole volumes."""
        return self._volumes("test")
