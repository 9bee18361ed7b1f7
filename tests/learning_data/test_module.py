"""`PreparedDataModule`: patient-level splits, loaders, caching, workers, and the bad-input messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ludl.data import PreparedDataModule
from ludl.errors import LudlError
from tests.learning_data.cohort import TIMEPOINTS_H, make_prepared

PATCH = (12, 16, 16)


def _copy(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "prepared"))


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_a_patient_is_never_in_two_splits(prepared: Path, fold: int) -> None:
    folds = [f["test"] for f in json.loads((prepared / "splits.json").read_text())["folds"]]
    dm = PreparedDataModule(prepared, fold=fold, patch_size_zyx=PATCH, cache="none")
    dm.setup()
    patients = {name: {r.patient_id for r in records} for name, records in dm.records.items()}
    assert patients["test"] == set(folds[fold]) and patients["val"] == set(folds[(fold + 1) % 3])
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    assert patients["train"] | patients["val"] | patients["test"] == {f"P{i:02d}" for i in range(1, 7)}
    seen = {
        name: {b["patient_id"][0] for b in loader}
        for name, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader()))
    }
    assert seen["val"] == patients["val"] and seen["test"] == patients["test"]
    assert {p for b in dm.train_dataloader() for p in b["patient_id"]} <= patients["train"]


def test_evaluation_loaders_give_every_time_point_as_a_whole_volume(prepared: Path) -> None:
    dm = PreparedDataModule(prepared, fold=0, patch_size_zyx=PATCH, cache="none")
    batches = list(dm.test_dataloader())
    assert len(batches) == len(dm.records["test"]) * len(TIMEPOINTS_H)
    per_case: dict[str, list[float]] = {}
    for b in batches:
        per_case.setdefault(b["case_id"][0], []).append(float(b["timepoint_h"][0]))
    assert all(sorted(ts) == list(TIMEPOINTS_H) for ts in per_case.values())
    for b in batches:
        assert b["activity_mbq_per_ml"].shape[0] == 1 and b["activity_mbq_per_ml"].shape[2:] in (
            (20, 24, 26),
            (20, 24, 28),
        )
    assert [float(b["timepoint_h"][0]) for b in dm.predict_dataloader()] == [
        float(b["timepoint_h"][0]) for b in batches
    ]
    assert dm.descriptor.n_patients == 6


def test_same_seed_same_batches_with_or_without_workers_and_epochs_differ(prepared: Path, tmp_path: Path) -> None:
    kwargs = {"batch_size": 2, "patch_size_zyx": PATCH, "samples_per_epoch": 6, "seed": 3}
    serial = PreparedDataModule(prepared, num_workers=0, cache="memory", **kwargs)
    workers = PreparedDataModule(prepared, num_workers=2, cache="disk", cache_dir=tmp_path / "cache", **kwargs)
    loaders = serial.train_dataloader(), workers.train_dataloader()
    epoch0 = [list(loader) for loader in loaders]
    for a, b in zip(*epoch0, strict=True):
        for key in ("activity_mbq_per_ml", "classes", "valid", "region_values", "time_h"):
            assert torch.equal(a[key], b[key]), key
    assert list((tmp_path / "cache").rglob("*.npz"))  # the disk cache wrote its index
    epoch1 = list(loaders[0])  # the sampler moved on to epoch 1
    assert any(
        not torch.equal(a["activity_mbq_per_ml"], b["activity_mbq_per_ml"])
        for a, b in zip(epoch0[0], epoch1, strict=True)
    )
    loaders[0].sampler.set_epoch(0)  # type: ignore[attr-defined]  # as Lightning does on a resume
    for a, b in zip(epoch0[0], loaders[0], strict=True):
        assert torch.equal(a["activity_mbq_per_ml"], b["activity_mbq_per_ml"])
    # A second disk-cached module reads the index back and draws the same.
    again = PreparedDataModule(prepared, num_workers=0, cache="disk", cache_dir=tmp_path / "cache", **kwargs)
    assert torch.equal(next(iter(again.train_dataloader()))["activity_mbq_per_ml"], epoch0[0][0]["activity_mbq_per_ml"])


def test_too_few_patients_for_the_folds_names_splits_json_and_the_fix(tmp_path: Path) -> None:
    small = make_prepared(tmp_path / "small", n_patients=2, n_folds=2)
    with pytest.raises(LudlError, match=r"splits\.json: 2 fold\(s\) over 2 patient\(s\).*n_folds=3"):
        PreparedDataModule(small, patch_size_zyx=PATCH).setup()


def test_a_missing_prepared_folder_names_it_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(LudlError, match=r"nowhere does not exist; run `ludl prepare"):
        PreparedDataModule(missing).setup()
    with pytest.raises(LudlError, match="nowhere does not exist"):
        _ = PreparedDataModule(missing).descriptor


def test_a_case_of_another_format_version_reaches_the_user_with_the_rerun_message(
    prepared: Path, tmp_path: Path
) -> None:
    copy = _copy(prepared, tmp_path)
    sidecar = copy / "cases" / "P03_c1" / "case.json"
    document = json.loads(sidecar.read_text())
    document["format_version"] = 1
    sidecar.write_text(json.dumps(document))
    before = sidecar.read_bytes()
    with pytest.raises(LudlError, match=r"P03_c1/case\.json has format version 1.*rerun `ludl prepare"):
        PreparedDataModule(copy, patch_size_zyx=PATCH).setup()
    assert sidecar.read_bytes() == before  # nothing overwritten


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_an_input_channel_names_case_time_point_and_channel(
    prepared: Path, tmp_path: Path, value: float
) -> None:
    copy = _copy(prepared, tmp_path)
    file = copy / "cases" / "P02_c1" / "tp_24h" / "pet_suv.npy"
    pet = np.load(file)
    pet[3, 4, 5] = value
    np.save(file, pet)
    with pytest.raises(LudlError, match=r"case P02_c1, time point 24 h: 1 NaN/inf voxel\(s\) in input channel 'pet'"):
        PreparedDataModule(copy, patch_size_zyx=PATCH, cache="none").setup()


def test_bad_settings_are_refused(prepared: Path) -> None:
    with pytest.raises(LudlError, match="cache='ram'"):
        PreparedDataModule(prepared, cache="ram")
    with pytest.raises(LudlError, match="patch_size_zyx"):
        PreparedDataModule(prepared, patch_size_zyx=(16, 16))
    with pytest.raises(LudlError, match="fold=7 does not exist"):
        PreparedDataModule(prepared, fold=7).setup()
    with pytest.raises(LudlError, match=r"unknown data\.augmentation key"):
        PreparedDataModule(prepared, augmentation={"rotate": 10})


def test_timepoints_h_keeps_only_those_time_points(prepared: Path) -> None:
    dm = PreparedDataModule(prepared, patch_size_zyx=PATCH, samples_per_epoch=8, timepoints_h=[24.0], cache="none")
    assert {float(t) for b in dm.train_dataloader() for t in b["timepoint_h"]} == {24.0}
    assert {float(b["timepoint_h"][0]) for b in dm.val_dataloader()} == {24.0}
    with pytest.raises(LudlError, match="none of the time points 12 h"):
        PreparedDataModule(prepared, timepoints_h=[12.0]).setup()
