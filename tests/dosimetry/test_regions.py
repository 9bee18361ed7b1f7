"""Region table: lesion splitting, statistics against hand-made dose maps, FOV rule, BED, CSV, DVH plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from ludl.dosimetry.regions import (
    REGION_COLUMNS,
    cumulative_kidney_bed,
    expand_regions,
    region_table,
    whole_body_tumour_dose_gy,
    write_regions_csv,
)
from ludl.physics.kinetics import fit_tac


def _labels() -> np.ndarray:
    labels = np.zeros((10, 12, 14), dtype=np.int16)
    labels[1:4, 1:5, 1:5] = 1  # kidney_left, 48 voxels
    labels[6:8, 2:4, 2:4] = 9  # lesion component, 8 voxels
    labels[6:9, 7:10, 8:12] = 9  # another lesion component, 36 voxels
    return labels


def test_lesion_class_is_split_into_components() -> None:
    regions = expand_regions(_labels(), {"kidney_left": 1, "lesion": 9})
    assert sorted(regions.values) == ["kidney_left", "lesion_001", "lesion_002"]
    assert regions.kinds == {"kidney_left": "organ", "lesion_001": "lesion", "lesion_002": "lesion"}
    sizes = sorted(int(regions.mask(n).sum()) for n in ("lesion_001", "lesion_002"))
    assert sizes == [8, 36]


def test_table_statistics_fov_rule_and_bed() -> None:
    regions = expand_regions(_labels(), {"kidney_left": 1, "lesion": 9})
    dose = np.zeros(regions.labels.shape)
    dose[regions.mask("kidney_left")] = np.linspace(1.0, 5.0, 48)
    big = "lesion_001" if regions.mask("lesion_001").sum() == 36 else "lesion_002"
    small = "lesion_002" if big == "lesion_001" else "lesion_001"
    dose[regions.mask(big)] = 30.0
    dose[regions.mask(small)] = 10.0
    tia = dose * 0.1
    times = np.array([4.0, 24.0, 48.0, 96.0, 168.0])
    kidney_fit = fit_tac(times, 10.0 * np.exp(-math.log(2) * times / 40.0), model="mono")
    rows = region_table(
        dose,
        tia,
        regions,
        0.1,
        kinetics={"kidney_left": kidney_fit},
        pvc="rc",
        pvc_factor={"kidney_left": 1.25, big: 2.0, small: 3.0},
        in_fov_fraction={"kidney_left": 1.0, big: 1.0, small: 0.9},
    )
    by = {r["region"]: r for r in rows}
    k = by["kidney_left"]
    assert k["mean_dose_uncorrected_gy"] == pytest.approx(3.0)
    assert k["mean_dose_gy"] == pytest.approx(3.75)
    assert k["max_dose_gy"] == pytest.approx(5.0) and k["volume_ml"] == pytest.approx(4.8)
    assert k["tia_uncorrected_mbq_h"] == pytest.approx(0.3 * 48 * 0.1)
    assert k["t_eff_h"] == pytest.approx(40.0, rel=1e-3)
    # Dale BED for mono-exponential clearance: G = λ/(λ + μ), kidney α/β 2.6 Gy, T_rep 2.8 h (docs/physics.md §5).
    lam, mu = math.log(2) / 40.0, math.log(2) / 2.8
    assert k["bed_gy"] == pytest.approx(3.75 * (1 + lam / (lam + mu) * 3.75 / 2.6), rel=1e-3)
    assert by[small]["scored"] is False and math.isnan(by[small]["mean_dose_gy"])  # 90 % < 95 % in the FOV
    assert by[big]["scored"] is True and by[big]["mean_dose_gy"] == pytest.approx(60.0)
    assert whole_body_tumour_dose_gy(rows) == pytest.approx(60.0)  # the unscored lesion does not count


def test_csv_bed_accumulation_and_report(tmp_path: Path) -> None:
    regions = expand_regions(_labels(), {"kidney_left": 1, "lesion": 9})
    dose = np.where(regions.labels > 0, 2.0, 0.0) + np.linspace(0, 1, regions.labels.size).reshape(regions.labels.shape)
    times = np.array([4.0, 24.0, 48.0, 96.0])
    fit = fit_tac(times, 5.0 * np.exp(-math.log(2) * times / 35.0), model="mono")
    rows = region_table(
        dose, dose, regions, 0.1, kinetics={"kidney_left": fit}, pvc="none", pvc_factor={}, in_fov_fraction={}
    )
    paths = [write_regions_csv(rows, tmp_path / f"cycle{c}.csv") for c in (1, 2)]
    with open(paths[0], encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == REGION_COLUMNS
        kidney = next(r for r in reader if r["region"] == "kidney_left")
    assert cumulative_kidney_bed(paths)["kidney_left"] == pytest.approx(2 * float(kidney["bed_gy"]), rel=1e-5)
