"""One road: `Predictor` on a held-out case of a trained artifact gives the region doses the training evaluation
wrote for the same case and scan time (predictions/regions.csv), to the last bit — and hands the region kinetics
model the very features the training wrote beside them."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from typing import Any

import pytest

from tests.inference.conftest import TinyRun, held_out_inputs


def _key(features: Mapping[str, Any]) -> tuple[str, ...]:
    """Features as exact text ('' and NaN alike: unknown), order of `FEATURE_COLUMNS`."""
    from ludl.models.region_model import FEATURE_COLUMNS

    cells = [features.get(c, "") for c in FEATURE_COLUMNS]
    return tuple("" if c == "" or (isinstance(c, float) and math.isnan(c)) else repr(float(c)) for c in cells)


def test_predictor_region_doses_equal_the_training_evaluation(
    tiny_run: TinyRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ludl.inference.model import ModelSet
    from ludl.inference.predictor import Predictor

    seen: set[tuple[str, ...]] = set()
    original = ModelSet.region_factor

    def recording(self: ModelSet, region_class: str, time_h: float, features: Mapping[str, float]) -> float:
        seen.add(_key(features))
        return original(self, region_class, time_h, features)

    monkeypatch.setattr(ModelSet, "region_factor", recording)

    with (tiny_run.run_dir / "predictions" / "regions.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert written
    predictor = Predictor(tiny_run.artifact, roi_size_zyx=None)  # the tiny run's whole-volume setting
    checked = 0
    for case_id, timepoint_h in sorted(
        {(f"{r['patient_id']}_c{r['cycle']}", float(r["timepoint_h"])) for r in written}
    ):
        prediction = predictor.predict(held_out_inputs(tiny_run.prepared, case_id, timepoint_h))
        ours = {r["region"]: r for r in prediction.regions if r["source"] == "reference"}
        theirs = [
            r
            for r in written
            if f"{r['patient_id']}_c{r['cycle']}" == case_id and float(r["timepoint_h"]) == timepoint_h
        ]
        for row in theirs:
            if row["kind"] == "body":
                continue
            mine = ours[row["region"]]
            assert mine["voxel_mean_dose_gy"] == float(row["net_mean_dose_gy"]), (case_id, row["region"])
            if row["net_mean_dose_corrected_gy"]:
                assert mine["mean_dose_gy"] == float(row["net_mean_dose_corrected_gy"]), (case_id, row["region"])
            assert math.isclose(mine["volume_ml"], float(row["volume_ml"]), rel_tol=1e-9)
            assert _key(row) in seen, (case_id, row["region"])  # the same features, to the last bit
            checked += 1
    assert checked >= 5
