"""The stated 90 % interval of a region's mean dose: coverage counted correctly, and measured on held-out patients."""

from __future__ import annotations

import csv
import math

from tests.inference.conftest import TinyRun


def test_interval_coverage_counts_regions_inside_their_interval() -> None:
    from ludl.inference.calibration import interval_coverage

    rows = [
        {"region": "a", "kind": "organ", "mean_dose_lo90_gy": 1.0, "mean_dose_hi90_gy": 2.0},
        {"region": "b", "kind": "organ", "mean_dose_lo90_gy": 1.0, "mean_dose_hi90_gy": 2.0},
        {"region": "lesion_001", "kind": "lesion", "mean_dose_lo90_gy": 5.0, "mean_dose_hi90_gy": 9.0},
        {"region": "c", "kind": "organ", "mean_dose_lo90_gy": 0.0, "mean_dose_hi90_gy": 1.0},  # no reference
    ]
    got = interval_coverage(rows, {"a": 1.5, "b": 2.5, "lesion_001": 9.0, "c": math.nan})
    assert got["coverage_90"] == 2 / 3 and got["n_regions"] == 3
    assert got["coverage_90_organ"] == 0.5 and got["coverage_90_lesion"] == 1.0


def test_measured_coverage_on_held_out_patients(tiny_run: TinyRun) -> None:
    from ludl.inference.calibration import measure_coverage
    from ludl.inference.predictor import Predictor

    with (tiny_run.run_dir / "predictions" / "regions.csv").open() as handle:
        cases = sorted({f"{r['patient_id']}_c{r['cycle']}" for r in csv.DictReader(handle)})
    predictor = Predictor(tiny_run.artifact, roi_size_zyx=None, tta=True)
    result = measure_coverage(predictor, tiny_run.prepared, cases, 24.0)
    print(f"\nmeasured 90 % interval coverage (tiny model, held-out {cases}, 24 h): {result}")
    assert result["n_regions"] >= 5
    assert 0.0 <= result["coverage_90"] <= 1.0
