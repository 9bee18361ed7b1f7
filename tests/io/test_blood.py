"""Blood samples (docs/cohort-format.md "Blood samples"): cohort and patient files, problems named with file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ludl.errors import ManifestError
from ludl.io.blood import BLOOD_COLUMNS, load_blood_samples

HEADER = ",".join(BLOOD_COLUMNS) + "\n"


def test_samples_of_both_files_are_merged_in_time_order(tmp_path: Path) -> None:
    (tmp_path / "blood.csv").write_text(HEADER + "P1,1,24,1800\nP2,1,1,9\nP1,2,1,5\n", encoding="utf-8")
    (tmp_path / "P1").mkdir()
    (tmp_path / "P1" / "blood.csv").write_text(HEADER + "P1,1,0.5,41230\n", encoding="utf-8")
    samples = load_blood_samples(tmp_path, "P1", 1)
    assert samples is not None
    assert np.array_equal(samples.time_h, [0.5, 24.0])
    assert np.array_equal(samples.bq_per_ml, [41230.0, 1800.0])
    assert load_blood_samples(tmp_path, "P3", 1) is None
    assert load_blood_samples(tmp_path / "none", "P1", 1) is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("P1,1,abc,5\n", "blood.csv:2: time_h"),
        ("P1,1,2,-5\n", "blood.csv:2: blood_bq_per_ml"),
        ("P1,one,2,5\n", "blood.csv:2: cycle"),
        ("P1,1,2,5\nP1,1,2,6\n", "same time"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path: Path, body: str, fragment: str) -> None:
    (tmp_path / "blood.csv").write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(ManifestError, match=fragment):
        load_blood_samples(tmp_path, "P1", 1)


def test_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "blood.csv").write_text("patient_id,cycle,time_h\nP1,1,2\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="blood_bq_per_ml"):
        load_blood_samples(tmp_path, "P1", 1)
