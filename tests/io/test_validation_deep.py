"""`validate_cohort(deep=…)`: pixel data read and checked; the two validator messages of issue 13 item 6."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ludl.io.manifest import validate_cohort
from tests.io.test_manifest import _make_cohort


def _rewrite(path: Path, array: np.ndarray) -> None:
    spacing = sitk.ReadImage(str(path)).GetSpacing()
    out = sitk.GetImageFromArray(array.astype(np.float32))
    out.SetSpacing(spacing)
    sitk.WriteImage(out, str(path))


def test_truncated_gzip_found_only_by_the_deep_check(tmp_path: Path) -> None:
    root = _make_cohort(tmp_path / "c")
    spect = root / "P1" / "spect_24h.nii.gz"
    _rewrite(spect, np.random.default_rng(0).random((40, 40, 40)))
    data = spect.read_bytes()
    spect.write_bytes(data[: len(data) // 2])
    shallow = validate_cohort(root, deep=False)
    assert shallow.ok, shallow.format()  # the header is intact: a header-only check cannot see the cut
    deep = validate_cohort(root)  # a few kB of images: deep by default
    assert not deep.ok
    (problem,) = deep.problems
    assert problem.row == 6 and "spect_24h.nii.gz" in problem.message and "truncated" in problem.message


def test_nan_inf_and_empty_images_are_reported_per_row(tmp_path: Path) -> None:
    root = _make_cohort(tmp_path / "c")
    values = np.ones((3, 4, 5))
    values[1, 2, 3], values[2, 0, 0] = np.nan, np.inf
    _rewrite(root / "P1" / "spect_4h.nii.gz", values)  # line 4
    _rewrite(root / "P1" / "spect_96h.nii.gz", np.zeros((3, 4, 5)))  # line 8
    _rewrite(root / "P1" / "mask_24h.nii.gz", np.zeros((3, 4, 5)))  # line 10
    report = validate_cohort(root, deep=True)
    found = {p.row: p.message for p in report.problems}
    assert set(found) == {4, 8, 10}, report.format()
    assert "1 NaN and 1 infinite" in found[4]
    assert "every voxel is zero" in found[8]
    assert "no labelled voxel" in found[10]


def test_misplaced_default_key_names_where_it_belongs(tmp_path: Path) -> None:
    root = _make_cohort(tmp_path / "c")
    (root / "cohort.yaml").write_text((root / "cohort.yaml").read_text() + "fwhm_mm: 10.5\n")
    (problem,) = validate_cohort(root).problems
    assert problem.file == "cohort.yaml" and "'fwhm_mm' belongs under 'defaults:'" in problem.message


def test_missing_timepoint_column_is_one_error(tmp_path: Path) -> None:
    root = _make_cohort(tmp_path / "c")
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    columns = [c for c in rows[0] if c != "timepoint_h"]
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    report = validate_cohort(root)
    assert [p.message for p in report.problems] == ["required column 'timepoint_h' is missing"], report.format()
