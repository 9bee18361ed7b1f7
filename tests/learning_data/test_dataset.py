"""Training samples against the prepared arrays read back here with NumPy: values, time points, flips, regions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ludl.data import Augmentation, PatchDataset, PreparedDataModule, TimepointStore, VolumeDataset, read_records
from ludl.io.regions import class_index
from tests.learning_data.cohort import NET_MBQ, TIMEPOINTS_H, UNLABELED_FIRST

# The batch interface (ludl.models.network.BATCH_KEYS and the training targets), spelled out as the contract.
INTERFACE_KEYS = {
    "activity_mbq_per_ml": (np.float32, 5),
    "suv": (np.float32, 5),
    "density_g_per_ml": (np.float32, 5),
    "time_h": (np.float32, 1),
    "injected_gbq": (np.float32, 1),
    "spacing_zyx_mm": (np.float32, 2),
    "has_pet": (np.bool_, 1),
    "dose_gy": (np.float32, 5),
    "tia_mbq_h_per_ml": (np.float32, 5),
    "classes": (np.int64, 5),
    "labelled": (np.bool_, 2),
    "gt_fov": (np.bool_, 5),
    "valid": (np.bool_, 5),
    "regions": (np.int32, 5),
    "region_values": (np.int32, 2),
    "region_dose_gy": (np.float32, 2),
    "region_dose_uncorrected_gy": (np.float32, 2),
    "region_is_lesion": (np.bool_, 2),
    "cycle": (np.int64, 1),
    "timepoint_h": (np.float32, 1),
}
PATCH = (12, 16, 16)


def _channel(prepared: Path, case_id: str, timepoint_h: float, stem: str) -> np.ndarray:
    return np.load(prepared / "cases" / case_id / f"tp_{timepoint_h:g}h" / f"{stem}.npy")


def _window(array: np.ndarray, start: np.ndarray, size: tuple[int, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The part of a patch inside the volume: the volume's voxels and where they sit in the patch."""
    src = tuple(slice(max(a, 0), min(a + s, n)) for a, s, n in zip(start, size, array.shape, strict=True))
    dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, start, strict=True))
    return array[src], dst


def _dataset(prepared: Path, *, augment: bool = False, seed: int = 0, **aug: Any) -> PatchDataset:
    records = read_records(prepared)
    return PatchDataset(
        records,
        TimepointStore("none"),
        patch_size_zyx=PATCH,
        samples_per_epoch=64,
        seed=seed,
        augment=augment,
        augmentation=Augmentation(**aug) if aug else None,
    )


def test_batch_keys_shapes_and_dtypes(prepared: Path) -> None:
    dm = PreparedDataModule(prepared, batch_size=3, patch_size_zyx=PATCH, cache="memory")
    batch = next(iter(dm.train_dataloader()))
    for key, (dtype, ndim) in INTERFACE_KEYS.items():
        value = batch[key]
        assert value.numpy().dtype == dtype, key
        assert value.ndim == ndim and value.shape[0] == 3, key
    for key in ("activity_mbq_per_ml", "dose_gy", "classes", "valid"):
        assert tuple(batch[key].shape) == (3, 1, *PATCH)
    assert batch["labelled"].shape == (3, 14) and batch["spacing_zyx_mm"].shape == (3, 3)
    assert len(batch["case_id"]) == 3 and len(batch["patient_id"]) == 3
    np.testing.assert_allclose(batch["injected_gbq"].numpy(), NET_MBQ / 1000.0)
    np.testing.assert_allclose(batch["spacing_zyx_mm"].numpy(), 4.0)


def test_time_point_drawn_varies_and_covers_all(prepared: Path) -> None:
    dataset = _dataset(prepared)
    drawn = [(s["case_id"], float(s["timepoint_h"]), float(s["time_h"])) for s in (dataset[i] for i in range(48))]
    assert {t for _, t, _ in drawn} == set(TIMEPOINTS_H)
    per_case: dict[str, set[float]] = {}
    for case_id, t, time_h in drawn:
        per_case.setdefault(case_id, set()).add(t)
        assert time_h == pytest.approx(t + 0.5 * TIMEPOINTS_H.index(t))  # the actual scan time of that time point
    assert any(len(ts) > 1 for ts in per_case.values())


def test_patch_holds_the_prepared_arrays_at_its_voxels(prepared: Path) -> None:
    dataset = _dataset(prepared)
    big = PatchDataset(
        read_records(prepared), TimepointStore("none"), patch_size_zyx=(12, 16, 32), samples_per_epoch=4, augment=False
    )
    for sample in [dataset[i] for i in range(6)] + [big[i] for i in range(2)]:
        case_id, t, start = sample["case_id"], float(sample["timepoint_h"]), sample["patch_start_zyx"]
        size = sample["activity_mbq_per_ml"].shape[1:]
        spect, dst = _window(_channel(prepared, case_id, t, "spect_bq_per_ml"), start, size)
        np.testing.assert_allclose(sample["activity_mbq_per_ml"][0][dst], spect * 1e-6, rtol=1e-6)
        for key, stem in (("dose_gy", "dose_gy"), ("classes", "classes"), ("gt_fov", "gt_fov"), ("regions", "labels")):
            np.testing.assert_array_equal(
                sample[key][0][dst], _window(_channel(prepared, case_id, t, stem), start, size)[0]
            )
        outside = np.ones(size, bool)
        outside[dst] = False
        assert not sample["activity_mbq_per_ml"][0][outside].any() and not sample["valid"][0][outside].any()
        if case_id == "P01_c1":  # no PET: zeros and has_pet False
            assert not sample["has_pet"] and not sample["suv"].any()
        else:
            assert sample["has_pet"]
            np.testing.assert_array_equal(
                sample["suv"][0][dst], _window(_channel(prepared, case_id, t, "pet_suv"), start, size)[0]
            )


def test_region_lists_hold_exactly_the_regions_wholly_inside(prepared: Path) -> None:
    dataset = _dataset(prepared)
    seen_partial = seen_unscored = False
    for i in range(60):
        sample = dataset[i]
        case_id, t, start = sample["case_id"], float(sample["timepoint_h"]), sample["patch_start_zyx"]
        labels = _channel(prepared, case_id, t, "labels")
        inside_part, _ = _window(labels, start, sample["regions"].shape[1:])
        sidecar = json.loads((prepared / "cases" / case_id / "case.json").read_text())
        by_value = {sidecar["region_values"][r["region"]]: r for r in sidecar["regions"]}
        expected = {
            int(v)
            for v in np.unique(labels[labels > 0])
            if np.count_nonzero(inside_part == v) == np.count_nonzero(labels == v)
        }
        seen_partial |= bool(set(np.unique(inside_part[inside_part > 0]).tolist()) - expected)
        unscored = {v for v in expected if by_value[v]["mean_dose_gy"] is None}  # no ground truth: not listed
        seen_unscored |= bool(unscored)
        assert set(sample["region_values"].tolist()) == expected - unscored
        for value, dose, uncorrected, lesion in zip(
            sample["region_values"],
            sample["region_dose_gy"],
            sample["region_dose_uncorrected_gy"],
            sample["region_is_lesion"],
            strict=True,
        ):
            row = by_value[int(value)]
            assert dose == pytest.approx(row["mean_dose_gy"], rel=1e-6)
            assert uncorrected == pytest.approx(row["mean_dose_uncorrected_gy"], rel=1e-6)
            assert bool(lesion) == row["region"].startswith("lesion_")
    assert seen_partial and seen_unscored  # some patch cut a region, one held the unscored lesion


def test_flips_mirror_every_channel_keep_sums_and_swap_left_right(prepared: Path) -> None:
    plain = _dataset(prepared)
    flipped = _dataset(prepared, augment=True, flip_prob_zyx=(1.0, 1.0, 1.0), noise_prob=0.0)
    left, right = class_index("kidney_left"), class_index("kidney_right")
    for i in range(6):
        a, b = plain[i], flipped[i]
        assert a["case_id"] == b["case_id"] and (a["patch_start_zyx"] == b["patch_start_zyx"]).all()
        assert b["flipped_zyx"].all()
        for key in (
            "activity_mbq_per_ml",
            "dose_gy",
            "tia_mbq_h_per_ml",
            "density_g_per_ml",
            "gt_fov",
            "valid",
            "regions",
        ):
            np.testing.assert_array_equal(b[key], a[key][:, ::-1, ::-1, ::-1])
        for key in ("activity_mbq_per_ml", "dose_gy", "tia_mbq_h_per_ml"):
            assert b[key].sum(dtype=np.float64) == pytest.approx(a[key].sum(dtype=np.float64), rel=1e-9)
        mirrored = a["classes"][:, ::-1, ::-1, ::-1]
        swapped = np.where(mirrored == left, right, np.where(mirrored == right, left, mirrored))
        np.testing.assert_array_equal(b["classes"], swapped)
        assert set(b["region_values"].tolist()) == set(a["region_values"].tolist())


def test_count_noise_changes_only_the_spect_and_keeps_its_sum_on_average(prepared: Path) -> None:
    plain = _dataset(prepared)
    noisy = _dataset(
        prepared, augment=True, flip_prob_zyx=(0.0, 0.0, 0.0), noise_prob=1.0, count_fraction_range=(0.3, 0.3)
    )
    ratios = []
    for i in range(12):
        a, b = plain[i], noisy[i]
        assert float(b["count_fraction"]) == pytest.approx(0.3)
        np.testing.assert_array_equal(a["dose_gy"], b["dose_gy"])
        assert not np.array_equal(a["activity_mbq_per_ml"], b["activity_mbq_per_ml"])
        assert ((a["activity_mbq_per_ml"] == 0) == (b["activity_mbq_per_ml"] == 0)).all()
        ratios.append(b["activity_mbq_per_ml"].sum(dtype=np.float64) / a["activity_mbq_per_ml"].sum(dtype=np.float64))
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.01)


def test_lesion_weight_one_centres_every_patch_on_a_lesion(prepared: Path) -> None:
    dataset = _dataset(prepared, augment=True, crop_weights={"lesion": 1.0}, noise_prob=0.0)
    for i in range(12):
        assert (dataset[i]["classes"] == class_index("lesion")).any()


def test_labelled_is_false_only_for_the_classes_a_cohort_left_unlabeled(prepared: Path) -> None:
    dataset = VolumeDataset(read_records(prepared), TimepointStore("none"))
    unlabeled = {class_index(name) for name in UNLABELED_FIRST}
    for i in range(len(dataset)):
        sample = dataset[i]
        labelled = sample["labelled"]
        assert labelled[0]  # background is always known
        if sample["patient_id"] == "P01":
            assert {int(c) for c in np.flatnonzero(~labelled)} == unlabeled
        else:
            assert labelled.all()


def test_whole_volumes_are_every_time_point_with_valid_equal_gt_fov(prepared: Path) -> None:
    dataset = VolumeDataset(read_records(prepared), TimepointStore("none"))
    assert len(dataset) == 6 * len(TIMEPOINTS_H)
    for i in (0, 4, 7):  # 7: P03 at 24 h
        sample = dataset[i]
        gt_fov = _channel(prepared, sample["case_id"], float(sample["timepoint_h"]), "gt_fov")
        np.testing.assert_array_equal(sample["valid"][0], gt_fov)
        assert sample["activity_mbq_per_ml"].shape[1:] == gt_fov.shape
        assert len(sample["region_values"]) == (4 if sample["patient_id"] == "P03" else 5)  # all but the unscored


def test_same_seed_same_samples_other_seed_or_epoch_other_samples(prepared: Path) -> None:
    a, b = _dataset(prepared, augment=True, seed=5), _dataset(prepared, augment=True, seed=5)
    for i in (0, 7, 70):  # 70: epoch 1
        for key in ("activity_mbq_per_ml", "classes", "valid"):
            np.testing.assert_array_equal(a[i][key], b[i][key])
    c = _dataset(prepared, augment=True, seed=6)
    assert any(not np.array_equal(a[i]["activity_mbq_per_ml"], c[i]["activity_mbq_per_ml"]) for i in range(4))
    assert any(not np.array_equal(a[i]["activity_mbq_per_ml"], a[64 + i]["activity_mbq_per_ml"]) for i in range(4))
