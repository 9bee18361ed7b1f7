"""Typed sidecars of prepared cases round-trip through JSON; class maps, label coverage and pooled statistics."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from ludl.errors import InputError
from ludl.io.prepared_sidecar import CaseSidecar, GroundTruthInfo, PetInfo, StpCase, TimepointInfo
from ludl.io.prepared_stats import IntensityStats, class_map, classes_present, intensity_statistics, label_coverage
from ludl.io.regions import SEGMENTATION_CLASSES


def _through_json(document: dict[str, Any]) -> Any:
    return json.loads(json.dumps(document, allow_nan=False))


def _stp_case() -> StpCase:
    rows = (
        {"patient_id": "P1", "cycle": 1, "region": "liver", "kind": "organ", "scored": True, "tia_mbq_h": math.nan},
    )
    curves = {"liver": (np.array([4.2, 24.1]), np.array([300.0, 250.5]))}
    return StpCase("P1", 1, 7400.0, (4.0, 24.0), rows, curves, {"liver": (12000.0, 4.5)})


def _sidecar(pet: PetInfo | None) -> CaseSidecar:
    return CaseSidecar(
        ludl_version="0.1.0",
        patient_id="P1",
        cycle=2,
        nuclide="Lu-177",
        injected_mbq=7400.0,
        residual_mbq=100.0,
        extravasated_mbq=0.0,
        net_administered_mbq=7300.0,
        timepoints_h=(4.0, 24.0),
        reference_timepoint_h=24.0,
        mask_timepoint_h=24.0,
        ground_truth=GroundTruthInfo("multi-TP", {"pvc": "gtm"}, whole_body_tumour_dose_gy=None, seconds={"fit": 1.5}),
        dosimetry={"tia_mode": "voxel", "pvc": "gtm", "reference_timepoint": None},
        region_values={"liver": 9, "lesion_001": 101},
        region_kinds={"liver": "organ", "lesion_001": "lesion"},
        classes_present=("liver", "lesion"),
        labelled_classes=("liver", "lesion"),
        unlabeled=("lacrimal_left",),
        regions=({"region": "liver", "mean_dose_gy": 4.25, "volume_ml": 1500.0},),
        pet=pet,
        stp_case=_stp_case(),
        notes=("a note",),
    )


@pytest.mark.parametrize("pet", [None, PetInfo("68Ga-PSMA-11", -240.0, 160.0, 80.0, 1, {"hu_correlation": 0.9})])
def test_case_sidecar_round_trips_through_json(pet: PetInfo | None) -> None:
    sidecar = _sidecar(pet)
    document = _through_json(sidecar.to_dict())
    back = CaseSidecar.from_dict(document)
    assert back == sidecar  # every field but stp_case (NaN inside), compared next
    assert back.stp_case is not None and back.stp_case.to_dict() == _stp_case().to_dict()
    assert math.isnan(back.stp_case.regions[0]["tia_mbq_h"])
    assert back.to_dict() == document


def test_timepoint_info_round_trips_and_ignores_grid_keys() -> None:
    info = TimepointInfo(
        time_h=24.3,
        bed_times_h=(24.3, 24.6),
        acquisition_s=(900.0, None),
        fwhm_mm=12.0,
        is_reference=True,
        activity_in_fov_mbq=2500.0,
        registration={"flags": []},
        transform_from_reference=tuple(tuple(float(i == j) for j in range(4)) for i in range(4)),
        transform_to_reference=tuple(tuple(float(i == j) for j in range(4)) for i in range(4)),
        gt_tia_total_mbq_h=1.0e5,
        gt_tia_reference_total_mbq_h=1.0e5,
        gt_fov_fraction=1.0,
    )
    entry = {**_through_json(info.to_dict()), "folder": "tp_24h", "files": {}, "spacing_zyx_mm": [4.8, 4.8, 4.8]}
    assert TimepointInfo.from_dict(entry) == info


def test_unreadable_sidecars_are_refused_with_the_rerun_message() -> None:
    with pytest.raises(InputError, match="overwrite=true"):
        CaseSidecar.from_dict({"patient_id": "P1"})
    with pytest.raises(InputError, match="stp_case"):
        StpCase.from_dict({"patient_id": "P1", "cycle": 1})


def test_class_map_uses_the_canonical_indices() -> None:
    index = {c.name: c.index for c in SEGMENTATION_CLASSES}
    values = {"liver": 3, "lesion_001": 7, "lesion_002": 8, "body": 1, "kidney_left": 20}
    labels = np.array([[[0, 1, 3, 7, 8, 20, 99]]], dtype=np.int32)  # 99: a value no region names
    expected = [[[0, 0, index["liver"], index["lesion"], index["lesion"], index["kidney_left"], 0]]]
    np.testing.assert_array_equal(class_map(labels, values), np.array(expected, dtype=np.uint8))
    assert class_map(labels, values).dtype == np.uint8
    assert classes_present(labels[..., :4], values) == ("liver", "lesion")


def test_label_coverage_marks_what_the_cohort_did_not_contour() -> None:
    every = tuple(c.name for c in SEGMENTATION_CLASSES if c.index > 0)
    labelled, unlabeled = label_coverage(["kidney_left", "liver", "lesion_001", "body"], ["lacrimal_left"])
    assert labelled == ("kidney_left", "liver", "lesion")
    assert unlabeled == tuple(c for c in every if c not in labelled)
    assert "lacrimal_left" in unlabeled and "background" not in unlabeled
    # A class cohort.yaml calls unlabeled stays unknown even where a label value exists for it.
    assert label_coverage(["liver", "lesion"], ["lesion"])[0] == ("liver",)


def test_pooled_statistics_equal_those_of_all_voxels() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.gamma(2.0, 3.0, n) for n in (100, 250, 1)]
    stats = [intensity_statistics(p) for p in parts]
    pooled = IntensityStats.pooled(stats)
    everything = np.concatenate(parts)
    assert pooled.n_voxels == everything.size
    assert (pooled.mean, pooled.std) == pytest.approx((everything.mean(), everything.std()), rel=1e-12)
    assert pooled.p50 == pytest.approx(np.median([np.median(p) for p in parts]), rel=1e-12)
    assert IntensityStats.from_dict(_through_json(pooled.to_dict())) == pooled
    assert intensity_statistics(np.ones(3), np.zeros(3, dtype=bool)).n_voxels == 0
