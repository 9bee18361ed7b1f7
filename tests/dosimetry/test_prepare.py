"""`run_prepare` on a tiny three-patient cohort: prepared cases, resumability, shards, failures, splits, configs.

Expected values come from the analytic cohort (`cohort_factory`): each time point's pose is a known whole-voxel shift,
so the ground truth mapped back onto a time point must sit where the analytic patient sits in that pose, and its
TIA integral must equal the reference-grid integral (the body lies inside every field of view). The STP table is
checked against the analytic kinetics (Hänscheid's A(t)·2t/ln2 over the exact TIA), against the cohort's truth table
and against `run_stp_baselines` computing the same cases from scratch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

import ludl.io.prepared as store
from ludl.dosimetry.baselines import (
    METHODS,
    STP_COLUMNS,
    STP_FILE,
    run_stp_baselines,
    stp_case,
)
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import compute_dosimetry
from ludl.dosimetry.prepare import (
    CASES_FOLDER,
    PrepareSummary,
    case_id,
    parse_shard,
    run_prepare,
    shard_cases,
)
from ludl.dosimetry.regions import expand_regions
from ludl.dosimetry.timepoints import load_cycle
from ludl.errors import InputError
from ludl.imaging import Volume
from ludl.imaging.resample import resample_spacing
from ludl.io.cohort import load_cohort_config, write_cohort_config
from ludl.io.manifest import ManifestRow, load_manifest, write_manifest
from ludl.io.nifti import read_nifti, write_nifti
from ludl.io.prepared import read_case
from ludl.io.prepared_dataset import DATASET_FILE, read_dataset_descriptor
from ludl.io.prepared_sidecar import StpCase
from ludl.io.provenance import OUTPUT_RECORD
from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.io.splits import read_splits
from ludl.io.truth import read_truth
from tests.dosimetry import cohort_factory as cf

TPS = (0, 1, 2, 3)  # 4, 24, 48 and 96 h: the prior's biexp_uptake region fits need 4 points
PET_SHIFT_MM = (9.6, -4.8, 4.8)  # the PET weeks earlier, in another pose
PET_SUV = {"body": 1.0, "kidney_left": 20.0, "kidney_right": 18.0, "liver": 8.0, "spleen": 9.0}
PET_SUV_LESION = 15.0
NON_RESPONSE = {"P01": 0, "P02": 1, "P03": 1}
UNLABELED = ("lacrimal_left", "lacrimal_right")  # cohort.yaml: classes this cohort did not contour
OWN_SPACING_MM = (6.0, 6.0, 6.0)


def _analytic_index(grid: Volume, shift_xyz_mm: tuple[float, float, float]) -> np.ndarray:
    """`cf.region_index` on any grid: 0 outside, 1 body, 2 + i for cf.REGIONS[i] (voxel centres)."""
    idx = np.argwhere(np.ones(grid.shape, dtype=bool)).astype(np.float64)
    p = grid.index_to_physical(idx).reshape(*grid.shape, 3) - np.asarray(shift_xyz_mm)

    def inside(centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
        return np.asarray(sum(((p[..., a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0)

    out = np.where(inside(cf.BODY.centre_xyz_mm, cf.BODY.radii_xyz_mm), 1, 0)
    for i, r in enumerate(cf.REGIONS):
        out[inside(r.centre_xyz_mm, r.radii_xyz_mm)] = 2 + i
    return out


def _pipeline_names() -> dict[str, cf.Region]:
    """Pipeline region name → the factory's region (the pipeline numbers lesions by connected component)."""
    regions = expand_regions(cf.label_map(), cf.LABELS)
    lesions = cf.lesion_names_by_truth(regions.labels, regions.values)
    by_name = {r.name: r for r in cf.REGIONS}
    return {name: by_name[lesions.get(name, name)] for name in regions.values if name != "body"}


def _truth_rows(true_dose: np.ndarray) -> list[dict[str, Any]]:
    """The analytic truth per region (reference pose), named as the pipeline names the regions."""
    index = cf.region_index()
    voxel_ml = cf.SPACING_MM**3 / 1e3
    rows = []
    for name, r in _pipeline_names().items():
        mask = index == 2 + cf.REGIONS.index(r)
        volume_ml = float(mask.sum()) * voxel_ml
        rows.append(
            {
                "region": name,
                "kind": "lesion" if name.startswith("lesion") else "organ",
                "volume_ml": volume_ml,
                "mean_dose_gy": float(true_dose[mask].mean()),
                "tia_mbq_h": cf.tia(r) * volume_ml,
                "t_eff_h": r.t_eff_h,
                "in_fov_fraction": 1.0,
            }
        )
    return rows


def _write_truth(root: Path, patients: Sequence[str], true_dose: np.ndarray) -> None:
    columns = ("patient_id", "cycle", "region", "kind", "volume_ml", "mean_dose_gy", "tia_mbq_h", "t_eff_h")
    lines = [",".join((*columns, "in_fov_fraction"))]
    for pid in patients:
        for row in _truth_rows(true_dose):
            cells = {**row, "patient_id": pid, "cycle": 1}
            lines.append(",".join(str(cells[c]) for c in (*columns, "in_fov_fraction")))
    (root / "truth").mkdir()
    (root / "truth" / "regions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _pet_suv(shift: tuple[float, float, float]) -> np.ndarray:
    table = np.array(
        [0.0, PET_SUV["body"], *(PET_SUV.get(r.name, PET_SUV_LESION) for r in cf.REGIONS)], dtype=np.float64
    )
    return np.asarray(table[cf.region_index(shift)])


def _write_pet(root: Path, pid: str) -> list[ManifestRow]:
    g = cf.grid()
    write_nifti(g.with_array(_pet_suv(PET_SHIFT_MM).astype(np.float32), unit="SUV"), root / "images/pet.nii.gz")
    write_nifti(g.with_array(cf.ct_hu(PET_SHIFT_MM), unit="HU"), root / "images/pet_ct.nii.gz")
    common: dict[str, Any] = {
        "patient_id": pid,
        "cycle": 1,
        "injected_mbq": cf.INJECTED_MBQ,
        "time_h": -240.0,
        "pet_tracer": "68Ga-PSMA-11",
        "pet_injected_mbq": 160.0,
        "weight_kg": 80.0,
    }
    return [
        ManifestRow(role="pet", path="images/pet.nii.gz", **common),
        ManifestRow(role="pet_ct", path="images/pet_ct.nii.gz", **common),
    ]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, true_dose: np.ndarray) -> Path:
    """P01: PET; P02: its 96 h SPECT on a 6 mm grid (a grid of its own); P03: a noise CT at 96 h (cannot register).

    ``truth/regions.csv`` holds the analytic truth, as a synthetic cohort's does.
    """
    root = tmp_path_factory.mktemp("cohort3")
    specs = {
        "P01": cf.CohortSpec(timepoint_indices=TPS, patient_id="P01"),
        "P02": cf.CohortSpec(timepoint_indices=TPS, patient_id="P02"),
        "P03": cf.CohortSpec(timepoint_indices=TPS, patient_id="P03", bad_ct_at=3),
    }
    rows: list[ManifestRow] = []
    for pid, spec in specs.items():
        sub = cf.write_cohort(root / pid, spec)
        own = [dataclasses.replace(r, line=0) for r in load_manifest(sub)]
        if pid == "P01":
            own += _write_pet(sub, pid)
        if pid == "P02":
            spect = sub / "images/spect_96h.nii.gz"
            write_nifti(resample_spacing(read_nifti(spect), OWN_SPACING_MM, kind="activity"), spect)
        rows += [dataclasses.replace(r, path=f"{pid}/{r.path}") for r in own]
    config = load_cohort_config(root / "P01")
    write_cohort_config(dataclasses.replace(config, unlabeled=UNLABELED), root)
    write_manifest(rows, root)
    lines = ["patient_id,psa_baseline,psa_week12,non_response"]
    lines += [f"{p},10,{8 if y else 2},{y}" for p, y in NON_RESPONSE.items()]
    (root / "outcomes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_truth(root, list(specs), true_dose)
    return root


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture(scope="module")
def prepared(cohort: Path, kernels: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PrepareSummary]:
    out = tmp_path_factory.mktemp("prepared")
    return out, run_prepare(cohort, out, workers=1, options=DosimetryOptions(kernel_cache_dir=kernels, pvc="none"))


Prepare = Callable[..., PrepareSummary]


@pytest.fixture
def prepare(cohort: Path, kernels: Path) -> Prepare:
    def run(out: Path, **kwargs: Any) -> PrepareSummary:
        options = DosimetryOptions(kernel_cache_dir=kernels, pvc="none")
        return run_prepare(cohort, out, workers=1, options=options, **kwargs)

    return run


def _case_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / CASES_FOLDER).iterdir())


# ------------------------------------------------------------------------------------------------ outcomes


def test_failing_case_is_reported_and_the_others_finish(prepared: tuple[Path, PrepareSummary]) -> None:
    out, summary = prepared
    assert (summary.n_done, summary.n_skipped, summary.n_failed) == (2, 0, 1)
    (failure,) = summary.failures
    assert failure.patient_id == "P03" and failure.error_type == "GeometryError"
    assert "ct_96h" in failure.reason  # names the file that cannot be registered
    assert _case_dirs(out) == ["P01_c1", "P02_c1"]  # nothing at all for the failed case
    written = json.loads((out / "prepare_summary.json").read_text())
    assert written["n_failed"] == 1 and written["cases"][2]["status"] == "failed"
    assert "P03" in summary.format() and "GeometryError" in summary.format()


def test_case_round_trip_arrays_and_sidecar(cohort: Path, prepared: tuple[Path, PrepareSummary]) -> None:
    out, _ = prepared
    case = read_case(out / CASES_FOLDER / "P01_c1")
    assert (case.patient_id, case.cycle) == ("P01", 1)
    assert [t.timepoint_h for t in case.timepoints] == [cf.TIMES_H[k] for k in TPS]
    side = case.sidecar
    assert side["injected_mbq"] == cf.INJECTED_MBQ and side["net_administered_mbq"] == cf.INJECTED_MBQ
    assert side["reference_timepoint_h"] == 24.0
    assert side["pet"]["tracer"] == "68Ga-PSMA-11"
    for k, tp in zip(TPS, case.timepoints, strict=True):
        assert tp.info["time_h"] == pytest.approx(cf.ACTUAL_H[k])
        # The SPECT is handed over exactly as the clinic wrote it (Bq/mL), memory-mapped.
        source = read_nifti(cohort / "P01" / f"images/spect_{cf.TIMES_H[k]:g}h.nii.gz")
        spect = tp.array("spect")
        assert isinstance(spect, np.memmap) or isinstance(spect.base, np.memmap)
        np.testing.assert_allclose(spect, np.asarray(source.array), rtol=1e-6)
        assert set(tp.channels) == {"spect", "density", "pet", "tia", "dose", "labels", "classes", "gt_fov"}
        # Soft tissue at 0 HU is water (1 g/mL); kidney at 35 HU lies on the soft-tissue branch, ≥ 1 and far below
        # bone (the exact slope is the physics module's business, tested there).
        index = cf.region_index(cf.SHIFTS_MM[k])
        density = tp.array("density")
        soft = (index == 1) & (cf.ct_hu(cf.SHIFTS_MM[k]) == 0.0)
        assert float(np.median(density[soft])) == pytest.approx(1.0, abs=1e-3)
        assert 1.0 < float(np.median(density[index == 2])) < 1.1
    names = {r["region"] for r in side["regions"]}
    assert {"kidney_left", "kidney_right", "liver", "spleen", "lesion_001", "lesion_002"} <= names
    assert set(case.region_values) <= names | {"body"}
    assert "PatientName" not in json.dumps(side)


def test_every_time_point_is_on_its_own_spect_grid(cohort: Path, prepared: tuple[Path, PrepareSummary]) -> None:
    out, _ = prepared
    case = read_case(out / CASES_FOLDER / "P02_c1")
    for k, tp in zip(TPS, case.timepoints, strict=True):
        source = read_nifti(cohort / "P02" / f"images/spect_{cf.TIMES_H[k]:g}h.nii.gz")
        for channel in tp.channels:
            assert tp.volume(channel).same_grid(source), (tp.timepoint_h, channel)
    assert case.timepoint(96.0).spacing_zyx_mm == OWN_SPACING_MM
    assert case.timepoint(24.0).info["shape_zyx"] == list(cf.SHAPE_ZYX)


def test_ground_truth_sits_in_each_time_points_pose_and_conserves_tia(prepared: tuple[Path, PrepareSummary]) -> None:
    out, _ = prepared
    for name in ("P01_c1", "P02_c1"):
        case = read_case(out / CASES_FOLDER / name)
        ref = case.timepoint(24.0)
        ref_total = float(np.asarray(ref.array("tia"), dtype=np.float64).sum()) * np.prod(ref.spacing_zyx_mm) / 1e3
        ref_kidney = float(np.median(ref.array("tia")[ndimage.binary_erosion(cf.region_index() == 2)]))
        # Mono-exponential fits of 3 points ignore the 1 h uptake: a few % above the exact bi-exponential TIA.
        assert ref_kidney == pytest.approx(cf.tia(cf.REGIONS[0]), rel=0.06)
        for k, tp in zip(TPS, case.timepoints, strict=True):
            tia = np.asarray(tp.array("tia"), dtype=np.float64)
            voxel_ml = float(np.prod(tp.spacing_zyx_mm)) / 1e3
            assert float(tia.sum()) * voxel_ml == pytest.approx(ref_total, rel=1e-5)
            # Where the analytic kidney is in this pose (not the reference pose), the TIA is the kidney's TIA on the
            # reference grid; a transform applied the wrong way round would move it by twice the shift.
            kidney = _analytic_index(tp.volume("tia"), cf.SHIFTS_MM[k]) == 2
            interior = ndimage.binary_erosion(kidney)  # edge voxels mix kidney and background on a coarser grid
            assert float(np.median(tia[interior])) == pytest.approx(ref_kidney, rel=0.01), (name, k)
            labels = np.asarray(tp.array("labels"))
            hit = np.mean(labels[interior] == case.region_values["kidney_left"])
            assert hit > 0.98, (name, k, hit)


def _canonical_index(region: str) -> int:
    """The class index of a region name, read from the class table (lesion instances → the lesion class)."""
    by_name = {c.name: c.index for c in SEGMENTATION_CLASSES}
    return by_name["lesion"] if region.startswith("lesion_") else by_name.get(region, 0)


def test_classes_channel_is_the_canonical_class_of_every_label(prepared: tuple[Path, PrepareSummary]) -> None:
    out, _ = prepared
    for name in ("P01_c1", "P02_c1"):
        case = read_case(out / CASES_FOLDER / name)
        values = case.sidecar["region_values"]
        assert values["body"] > 0 and values["lesion_001"] != values["lesion_002"]  # instances, per case
        for tp in case.timepoints:
            labels, classes = np.asarray(tp.array("labels")), np.asarray(tp.array("classes"))
            assert classes.dtype == np.uint8 and tp.volume("classes").unit == "label"
            expected = np.zeros(labels.shape, dtype=np.int64)
            for region, value in values.items():
                expected[labels == value] = _canonical_index(region)
            np.testing.assert_array_equal(classes, expected)
            assert set(np.unique(classes)) >= {0, _canonical_index("liver"), _canonical_index("lesion")}


def test_labelled_and_unlabeled_classes_reach_the_sidecar(prepared: tuple[Path, PrepareSummary]) -> None:
    out, _ = prepared
    meta = read_case(out / CASES_FOLDER / "P01_c1").meta
    # cohort.yaml labels kidney_left, kidney_right, liver, spleen, body and lesion: the classes it contours.
    assert meta.labelled_classes == ("kidney_left", "kidney_right", "liver", "spleen", "lesion")
    assert set(UNLABELED) <= set(meta.unlabeled)
    every = {c.name for c in SEGMENTATION_CLASSES if c.index > 0}
    assert set(meta.unlabeled) == every - set(meta.labelled_classes)
    assert set(meta.classes_present) == set(meta.labelled_classes)
    assert meta.dosimetry["pvc"] == "none" and "kernel_cache_dir" not in meta.dosimetry
    assert meta.stp_case is not None and meta.stp_case.patient_id == "P01"
    descriptor = read_dataset_descriptor(out)
    assert descriptor.unlabeled == meta.unlabeled and descriptor.labelled_classes == meta.labelled_classes


def _numpy_stats(values: np.ndarray) -> tuple[float, float, float, float, float]:
    low, mid, high = np.percentile(values, (0.5, 50.0, 99.5))
    return float(values.mean()), float(values.std()), float(low), float(mid), float(high)


def test_dataset_json_statistics_equal_numpy_over_the_written_arrays(
    prepared: tuple[Path, PrepareSummary], kernels: Path
) -> None:
    out, summary = prepared
    assert summary.dataset_file == out / DATASET_FILE
    descriptor = read_dataset_descriptor(out / DATASET_FILE)
    cases = [read_case(out / CASES_FOLDER / name) for name in ("P01_c1", "P02_c1")]  # P03 failed: left out
    assert (descriptor.n_cases, descriptor.n_patients, descriptor.case_ids) == (2, 2, ("P01_c1", "P02_c1"))
    assert descriptor.format_version == 2 and descriptor.channels["classes"]["dtype"] == "uint8"
    assert [(c["index"], c["name"], c["kind"]) for c in descriptor.classes] == [
        (c.index, c.name, c.kind) for c in SEGMENTATION_CLASSES
    ]
    assert descriptor.dosimetry == DosimetryOptions(kernel_cache_dir=kernels, pvc="none").settings()
    assert descriptor.timepoints_h == {f"{cf.TIMES_H[k]:g}": 2 for k in TPS}
    spacings = [tp.spacing_zyx_mm for c in cases for tp in c.timepoints]
    assert descriptor.median_spacing_zyx_mm == pytest.approx(tuple(np.median(np.asarray(spacings), axis=0)))
    # Body voxels: density above 0.1 g/mL, recomputed here from the stored density arrays.
    channels = {"spect": "spect", "density": "density", "tia": "tia", "dose": "dose"}
    pooled: dict[str, list[np.ndarray]] = {c: [] for c in (*channels, "spect_per_gbq", "pet")}
    per_tp: dict[str, list[tuple[float, ...]]] = {c: [] for c in pooled}
    for case in cases:
        for tp in case.timepoints:
            body = np.asarray(tp.array("density")) > 0.1
            values = {c: np.asarray(tp.array(c), dtype=np.float64)[body] for c in channels}
            values["spect_per_gbq"] = values["spect"] / (cf.INJECTED_MBQ / 1000.0)
            if "pet" in tp.channels:
                values["pet"] = np.asarray(tp.array("pet"), dtype=np.float64)[body]
            for c, v in values.items():
                pooled[c].append(v)
                per_tp[c].append(_numpy_stats(v))
                stored = tp.intensity[c]
                assert stored.n_voxels == v.size
                assert (stored.mean, stored.std, stored.p0_5, stored.p50, stored.p99_5) == pytest.approx(
                    _numpy_stats(v), rel=1e-9, abs=1e-12
                )
    assert set(descriptor.intensity) == set(channels) | {"spect_per_gbq"}
    assert set(descriptor.pet_intensity) == {"68Ga-PSMA-11"}  # P01's PET only
    for c in pooled:
        stats = descriptor.pet_intensity["68Ga-PSMA-11"] if c == "pet" else descriptor.intensity[c]
        everything = np.concatenate(pooled[c])
        assert stats.n_voxels == everything.size
        assert (stats.mean, stats.std) == pytest.approx((everything.mean(), everything.std()), rel=1e-9)
        medians = np.median(np.asarray(per_tp[c])[:, 2:], axis=0)  # percentiles: medians over the time points
        assert (stats.p0_5, stats.p50, stats.p99_5) == pytest.approx(tuple(medians), rel=1e-9, abs=1e-12)


def test_pet_is_registered_onto_every_time_point(prepared: tuple[Path, PrepareSummary]) -> None:
    out, _ = prepared
    case = read_case(out / CASES_FOLDER / "P01_c1")
    pet_total = float(_pet_suv(PET_SHIFT_MM).sum())  # same voxel size everywhere: compare voxel sums
    for k, tp in zip(TPS, case.timepoints, strict=True):
        suv = np.asarray(tp.array("pet"), dtype=np.float64)
        assert float(suv.sum()) == pytest.approx(pet_total, rel=0.01)
        kidney = cf.region_index(cf.SHIFTS_MM[k]) == 2
        assert float(np.median(suv[kidney])) == pytest.approx(PET_SUV["kidney_left"], rel=0.05)
    assert "pet" not in read_case(out / CASES_FOLDER / "P02_c1").timepoints[0].channels


def test_splits_are_written_patient_level(prepared: tuple[Path, PrepareSummary]) -> None:
    out, _ = prepared
    splits = read_splits(out / "splits.json")
    assert splits.patients == ("P01", "P02", "P03")  # the failed case's patient is still split
    assert splits.n_folds == 3 and splits.stratified_by == "non_response"
    assert sorted(len(f) for f in splits.folds) == [1, 1, 1]


# ------------------------------------------------------------------------------------------------ resuming


def test_second_run_skips_finished_cases(prepared: tuple[Path, PrepareSummary], prepare: Prepare) -> None:
    out, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in (out / CASES_FOLDER).rglob("*.npy")}
    table = (out / STP_FILE).read_text(encoding="utf-8")
    descriptor = (out / DATASET_FILE).read_bytes()
    (out / STP_FILE).unlink()
    (out / DATASET_FILE).unlink()
    again = prepare(out)
    assert (again.n_done, again.n_skipped, again.n_failed) == (0, 2, 1)
    assert {p: p.stat().st_mtime_ns for p in (out / CASES_FOLDER).rglob("*.npy")} == before
    # Nothing was prepared, yet the STP table and dataset.json are written again from the sidecars, identical.
    assert again.stp_file == out / STP_FILE
    assert (out / STP_FILE).read_text(encoding="utf-8") == table
    assert again.dataset_file == out / DATASET_FILE
    assert (out / DATASET_FILE).read_bytes() == descriptor


def test_crash_leaves_nothing_and_the_rerun_completes(
    tmp_path: Path, prepare: Prepare, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store._write_array
    calls = {"n": 0}

    def crash_on_third(path: Path, array: Any, dtype: str) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process is stopped in the middle of writing a case
        real(path, array, dtype)

    monkeypatch.setattr(store, "_write_array", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path, shard="0/3")  # P01 only
    assert list((tmp_path / CASES_FOLDER).iterdir()) == []
    monkeypatch.setattr(store, "_write_array", real)
    # A writer killed outright (no cleanup) leaves its temporary folder; the rerun removes it.
    stale = tmp_path / CASES_FOLDER / ".P01_c1.tmp-deadbeef"
    (stale / "tp_4h").mkdir(parents=True)
    summary = prepare(tmp_path, shard="0/3")
    assert summary.n_done == 1
    assert _case_dirs(tmp_path) == ["P01_c1"]
    assert read_case(tmp_path / CASES_FOLDER / "P01_c1").timepoint(4.0).array("dose").shape == cf.SHAPE_ZYX


def test_unexpected_error_is_recorded_with_traceback(
    tmp_path: Path, prepare: Prepare, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(store, "_write_array", broken)
    summary = prepare(tmp_path, shard="1/3")
    (failure,) = summary.failures
    assert failure.error_type == "ZeroDivisionError" and "boom" in failure.detail
    assert list((tmp_path / CASES_FOLDER).iterdir()) == []


# ------------------------------------------------------------------------------------------------ shards


def test_shards_partition_the_cases() -> None:
    cases = [(f"P{i:02d}", c) for i in range(1, 8) for c in (1, 2)]
    for n in (1, 2, 3, 5, 20):
        parts = [shard_cases(cases, i, n) for i in range(n)]
        flat = [c for part in parts for c in part]
        assert sorted(flat) == sorted(cases) and len(flat) == len(set(flat))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_shard_prepares_only_its_cases(tmp_path: Path, prepare: Prepare) -> None:
    summary = prepare(tmp_path, shard="1/2", n_folds=2)
    assert [c.case_id for c in summary.cases] == ["P02_c1"]
    assert _case_dirs(tmp_path) == ["P02_c1"]
    assert (tmp_path / "prepare_summary.shard-1-of-2.json").is_file()
    assert not (tmp_path / "prepare_summary.json").exists()


@pytest.mark.slow
def test_parallel_workers_give_the_same_cases(
    tmp_path: Path, cohort: Path, kernels: Path, prepared: tuple[Path, PrepareSummary]
) -> None:
    summary = run_prepare(
        cohort, tmp_path, workers=2, options=DosimetryOptions(kernel_cache_dir=kernels, pvc="none"), shard="0/2"
    )
    assert [c.status for c in summary.cases] == ["done", "failed"]  # P01, P03 in case order
    a = read_case(tmp_path / CASES_FOLDER / "P01_c1").timepoint(96.0).array("dose")
    b = read_case(prepared[0] / CASES_FOLDER / "P01_c1").timepoint(96.0).array("dose")
    np.testing.assert_allclose(a, b, rtol=1e-6)  # thread counts differ between the runs; the result must not


# ------------------------------------------------------------------------------------------------ STP baselines


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _num(cell: str) -> float:
    return float(cell) if cell else math.nan


def test_stp_table_from_the_sidecars(cohort: Path, prepared: tuple[Path, PrepareSummary]) -> None:
    out, summary = prepared
    assert summary.stp_file == out / STP_FILE
    assert any("P03_c1" in note and STP_FILE in note for note in summary.notes)  # the failed case is left out
    assert str(out / STP_FILE) in summary.format()
    assert json.loads((out / "prepare_summary.json").read_text())["stp_file"] == str(out / STP_FILE)
    with (out / STP_FILE).open(newline="", encoding="utf-8") as handle:
        assert tuple(next(csv.reader(handle))) == STP_COLUMNS
    rows = _read_csv(out / STP_FILE)
    splits = read_splits(out / "splits.json")
    truth = {(r["patient_id"], r["region"]): r for r in _read_csv(cohort / "truth" / "regions.csv")}
    expected = {(m, f"{cf.TIMES_H[k]:g}") for m in METHODS for k in TPS}
    combos: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for r in rows:
        combos.setdefault((r["patient_id"], r["region"]), set()).add((r["method"], r["timepoint_h"]))
        assert int(r["fold"]) == splits.fold_of(r["patient_id"])
        assert _num(r["gt_mean_dose_gy"]) > 0 and _num(r["gt_tia_mbq_h"]) > 0
        true = truth[(r["patient_id"], r["region"])]  # joined by region name, from the cohort's truth table
        assert _num(r["true_mean_dose_gy"]) == pytest.approx(float(true["mean_dose_gy"]), rel=1e-5)
        assert _num(r["true_tia_mbq_h"]) == pytest.approx(float(true["tia_mbq_h"]), rel=1e-5)
    organs = {"kidney_left", "kidney_right", "liver", "spleen", "lesion_001", "lesion_002"}
    assert {p for p, _ in combos} == {"P01", "P02"}
    for pid in ("P01", "P02"):
        assert {region for p, region in combos if p == pid} == organs
    assert all(c == expected for c in combos.values())  # every method at every time point, once per region
    assert len(rows) == 2 * len(organs) * len(expected)

    def pick(pid: str, method: str, region: str, t_h: float) -> dict[str, str]:
        (row,) = [r for r in rows if (r["patient_id"], r["method"], r["region"], _num(r["timepoint_h"])) ==
                  (pid, method, region, t_h)]  # fmt: skip
        return row

    # Each patient is in a fold of its own and P03 failed: a patient's Madsen T_eff is the other's kidney median.
    for pid, other in (("P01", "P02"), ("P02", "P01")):
        median = float(
            np.median(
                [_num(pick(other, "madsen", k, 24.0)["gt_t_eff_clearance_h"]) for k in ("kidney_left", "kidney_right")]
            )
        )
        assert _num(pick(pid, "madsen", "kidney_left", 24.0)["t_eff_used_h"]) == pytest.approx(median, rel=1e-5)
    # Hänscheid against the analytic kinetics: A(t)·2t/ln2 over the exact TIA, at the actual scan time; the dose
    # ratio carries it because the region dose per TIA is the same for the pipeline and the truth.
    names = _pipeline_names()
    for region in ("kidney_left", "liver", "lesion_001"):
        analytic = names[region]
        for k in TPS:
            row = pick("P01", "haenscheid", region, cf.TIMES_H[k])
            t = cf.ACTUAL_H[k]
            ratio = cf.curve(analytic, t) * 2 * t / math.log(2) / cf.tia(analytic)
            assert _num(row["time_h"]) == pytest.approx(t, abs=1e-3)
            # Noise-free, unblurred, 4 points of exact bi-exponential kinetics: the ground truth is the truth (a
            # swapped truth row would show here), and Hänscheid's ratio is exact but for rounding; the nominal
            # instead of the actual time (24 for 24.5 h) would be 2 % off.
            assert _num(row["gt_mean_dose_gy"]) / _num(row["true_mean_dose_gy"]) == pytest.approx(1.0, rel=0.01)
            assert _num(row["mean_dose_gy"]) / _num(row["true_mean_dose_gy"]) == pytest.approx(ratio, rel=0.005)
    # The prior-informed estimator has kidney and lesion priors from the other patient (two of each per patient), none
    # for the liver (one fit is no population).
    assert pick("P01", "prior", "liver", 24.0)["mean_dose_gy"] == ""
    for t in (4.0, 96.0):
        row = pick("P01", "prior", "kidney_left", t)
        assert _num(row["tia_sd_mbq_h"]) > 0
        assert _num(row["mean_dose_gy"]) / _num(row["gt_mean_dose_gy"]) == pytest.approx(1.0, abs=0.3)


def _cohort_without_p03(cohort: Path, root: Path) -> Path:
    """The same cohort files for P01 and P02 only (P03 cannot be registered: `run_stp_baselines` would raise)."""
    for name in ("P01", "P02", "truth"):
        shutil.copytree(cohort / name, root / name)
    for name in ("cohort.yaml", "outcomes.csv"):
        shutil.copy(cohort / name, root / name)
    rows = [dataclasses.replace(r, line=0) for r in load_manifest(cohort) if r.patient_id != "P03"]
    write_manifest(rows, root)
    return root


def test_sidecar_stp_case_and_table_match_a_direct_run(
    cohort: Path, kernels: Path, prepared: tuple[Path, PrepareSummary], tmp_path: Path
) -> None:
    out, _ = prepared
    sub = _cohort_without_p03(cohort, tmp_path / "cohort")
    entry = read_case(out / CASES_FOLDER / "P01_c1").sidecar["stp_case"]
    stored = StpCase.from_dict(entry)
    assert stored.to_dict() == entry  # round trip through the sidecar's JSON
    data = load_cycle(sub, "P01", 1)
    result = compute_dosimetry(data, DosimetryOptions(kernel_cache_dir=kernels, pvc="none"))
    direct = stp_case(data, result, read_truth(sub)[("P01", 1)])
    assert (stored.patient_id, stored.cycle, stored.timepoints_h) == (
        direct.patient_id,
        direct.cycle,
        direct.timepoints_h,
    )
    assert stored.injected_mbq == direct.injected_mbq
    assert [r["region"] for r in stored.regions] == [r["region"] for r in direct.regions]
    for a, b in zip(stored.regions, direct.regions, strict=True):
        assert set(a) == set(b)
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-6, nan_ok=True), (b["region"], key)
            else:
                assert a[key] == value, (b["region"], key)
    assert set(stored.curves) == set(direct.curves)
    for name, (t, act) in direct.curves.items():
        np.testing.assert_allclose(stored.curves[name][0], t, rtol=1e-9)
        np.testing.assert_allclose(stored.curves[name][1], act, rtol=1e-6)
    assert stored.truth == direct.truth
    assert set(stored.truth) == {"kidney_left", "kidney_right", "liver", "spleen", "lesion_001", "lesion_002"}
    # The whole table: from the sidecars (prepare) and from scratch (run_stp_baselines), same cases and splits.
    direct_rows = run_stp_baselines(
        sub,
        {("P01", 1): result},
        out / "splits.json",
        tmp_path / "stp",
        write_maps=False,
        options=DosimetryOptions(kernel_cache_dir=kernels, pvc="none"),
    )
    ours = _read_csv(out / STP_FILE)
    theirs = _read_csv(tmp_path / "stp" / STP_FILE)
    assert len(ours) == len(theirs) == len(direct_rows) > 0
    for a, b in zip(ours, theirs, strict=True):
        for column in STP_COLUMNS:
            if column in ("patient_id", "region", "kind", "region_class", "method", "fold"):
                assert a[column] == b[column]
            else:
                assert _num(a[column]) == pytest.approx(_num(b[column]), rel=1e-5, nan_ok=True), column


def test_stp_table_waits_for_every_shard_and_can_be_switched_off(
    tmp_path: Path, prepared: tuple[Path, PrepareSummary], prepare: Prepare
) -> None:
    out, _ = prepared
    (tmp_path / CASES_FOLDER).mkdir()
    shutil.copy(out / OUTPUT_RECORD, tmp_path / OUTPUT_RECORD)  # the folder belongs to this cohort
    shutil.copytree(out / CASES_FOLDER / "P01_c1", tmp_path / CASES_FOLDER / "P01_c1")  # shard 0/3's case, done
    off = prepare(tmp_path, shard="0/3", stp_baselines=False)
    assert off.n_skipped == 1 and off.stp_file is None and not (tmp_path / STP_FILE).exists()
    first = prepare(tmp_path, shard="0/3")  # P02 and P03 belong to shards that have not run
    assert first.stp_file is None and not (tmp_path / STP_FILE).exists()
    assert first.dataset_file is None and not (tmp_path / DATASET_FILE).exists()
    assert any("2 case(s) are not prepared" in note for note in first.notes)
    shutil.copytree(out / CASES_FOLDER / "P02_c1", tmp_path / CASES_FOLDER / "P02_c1")  # shard 1/3 finished
    last = prepare(tmp_path, shard="2/3")  # P03 fails here; every case is now settled
    assert last.n_failed == 1 and last.stp_file == tmp_path / STP_FILE
    assert (tmp_path / DATASET_FILE).read_bytes() == (out / DATASET_FILE).read_bytes()
    assert (tmp_path / STP_FILE).read_text(encoding="utf-8") == (out / STP_FILE).read_text(encoding="utf-8")
    # Shard 0/3 again: P03's failure is read from shard 2/3's summary, so it writes the same table.
    (tmp_path / STP_FILE).unlink()
    again = prepare(tmp_path, shard="0/3")
    assert again.stp_file == tmp_path / STP_FILE
    assert (tmp_path / STP_FILE).read_text(encoding="utf-8") == (out / STP_FILE).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ inputs


def test_shard_and_option_errors(tmp_path: Path, prepare: Prepare) -> None:
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)
    with pytest.raises(InputError, match="tia_mode"):
        DosimetryOptions(tia_mode="magic")
    with pytest.raises(InputError, match="unknown dosimetry option"):
        DosimetryOptions.from_mapping({"kernel": "x"})
    assert not (tmp_path / CASES_FOLDER).exists()  # refused before any work


def test_case_ids_are_safe_and_distinct() -> None:
    assert case_id("SYN0001", 2) == "SYN0001_c2"
    odd = [case_id(p, 1) for p in ("a/b", "a b", "a:b", "../x")]
    assert len(set(odd)) == 4
    assert all("/" not in c and " " not in c and not c.startswith(".") for c in odd)


def test_nifti_copies_on_request(tmp_path: Path, prepare: Prepare) -> None:
    prepare(tmp_path, shard="1/3", nifti=True)
    tp = read_case(tmp_path / CASES_FOLDER / "P02_c1").timepoint(96.0)
    copy = read_nifti(tp.folder / tp.info["files"]["tia"]["nifti"])
    assert copy.unit == "MBq*h/mL" and copy.same_grid(tp.volume("tia"))
    np.testing.assert_allclose(np.asarray(copy.array), tp.array("tia"), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ configs


def test_prepare_config_composes_with_each_launcher() -> None:
    # The launchers are the `sweep` extra's plugins (CI installs it); `ludl.cli` names the extra when one is missing.
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    from ludl.cli import CONFIG_MODULE
    from ludl.configs.schema import register_schemas

    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["cohort=/c", "out=/o", "shard=1/4"])
        expected = {"cohort", "out", "shard", "workers", "overwrite", "n_folds", "seed", "nifti", "stp_baselines"}
        assert expected <= set(cfg) and parse_shard(str(cfg.shard)) == (1, 4)
        assert cfg.stp_baselines is True
        assert cfg.dosimetry == compose(config_name="dosimetry").dosimetry  # one group, composed by both jobs
        for launcher, key in (("joblib", "n_jobs"), ("slurm", "tasks_per_node")):
            c = compose(config_name="prepare", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert key in c.hydra.launcher and c.hydra.launcher._target_.startswith("hydra_plugins.")
