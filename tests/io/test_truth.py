"""The region truth table: the writer gives the bytes `ludl synth` always wrote; the readers give back the values."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from ludl.errors import InputError
from ludl.io.truth import TRUTH_REGION_COLUMNS, read_truth, read_truth_rows, truth_regions_file, write_truth_regions
from ludl.synth.truth import REGION_COLUMNS, RegionTruth

ROWS = [
    RegionTruth("SYN0001", 1, "liver", "organ", 1500.0, 4.25, 12000.0, 60.5, 1.0),
    RegionTruth("SYN0001", 1, "lesion_001", "lesion", 2.5, 30.125, 400.0, 80.0, None),
    RegionTruth("SYN0002", 2, "kidney_left", "organ", 150.0, math.nan, 2000.0, 40.0, 0.5),
]


def _reference_csv(header: tuple[str, ...], rows: list[list[str]]) -> str:
    """CSV as the standard library writes it with Unix line ends (how the synthetic cohort writer did it)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def test_writer_gives_the_bytes_of_the_synthetic_cohort_writer(tmp_path: Path) -> None:
    assert REGION_COLUMNS == TRUTH_REGION_COLUMNS  # one table of columns, in io
    cells = [r.cells() for r in ROWS]
    file = write_truth_regions(cells, truth_regions_file(tmp_path))
    assert file == tmp_path / "truth" / "regions.csv"
    assert file.read_bytes() == _reference_csv(REGION_COLUMNS, cells).encode("utf-8")


def test_readers_give_back_the_values(tmp_path: Path) -> None:
    assert read_truth(tmp_path) == {} and read_truth_rows(tmp_path) == {}  # a cohort without truth
    write_truth_regions([r.cells() for r in ROWS], truth_regions_file(tmp_path))
    truth = read_truth(tmp_path)
    assert truth[("SYN0001", 1)] == {"liver": (12000.0, 4.25), "lesion_001": (400.0, 30.125)}
    tia, dose = truth[("SYN0002", 2)]["kidney_left"]
    assert tia == 2000.0 and math.isnan(dose)
    assert read_truth_rows(tmp_path)[("SYN0001", 1, "lesion_001")]["in_fov_fraction"] == ""


def test_broken_tables_name_the_file(tmp_path: Path) -> None:
    file = truth_regions_file(tmp_path)
    file.parent.mkdir()
    file.write_text("patient_id,region\nP1,liver\n", encoding="utf-8")
    with pytest.raises(InputError, match="lacks the column"):
        read_truth(tmp_path)
    file.write_text("patient_id,cycle,region,tia_mbq_h,mean_dose_gy\nP1,1,liver,lots,2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"regions\.csv.*tia_mbq_h"):
        read_truth(tmp_path)
