"""cohort.yaml schema, manifest loading and whole-cohort validation on tiny cohorts written to tmp_path."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from ludl.errors import ManifestError
from ludl.io.cohort import CohortConfig, load_cohort_config, write_cohort_config
from ludl.io.manifest import (
    Manifest,
    ManifestRow,
    Problem,
    ValidationReport,
    cohort_summary,
    load_manifest,
    validate_cohort,
    write_manifest,
)
from ludl.io.regions import is_region_name, lesion_name, region_kind

# The columns as docs/architecture.md "Data formats" lists them (the contract, typed out here on purpose).
COLUMNS = [
    "patient_id",
    "cycle",
    "role",
    "timepoint_h",
    "time_h",
    "bed",
    "path",
    "injected_mbq",
    "residual_mbq",
    "extravasated_mbq",
    "injection_datetime",
    "acquisition_s",
    "sensitivity_cps_per_mbq",
    "fwhm_mm",
    "deadtime_factor",
    "pet_tracer",
    "pet_injected_mbq",
    "weight_kg",
]

COHORT_YAML = """\
name: tiny
nuclide: 177Lu
units: {spect: Bq/mL, ct: HU, pet: SUV, pet_ct: HU, mask: label}
defaults:
  sensitivity_cps_per_mbq: 9.4
  fwhm_mm: 12.0
labels:
  kidney_left: 1
  kidney_right: 2
  liver: 9
  red_marrow: 12
  lesion: 20
unlabeled: [lacrimal_left, lacrimal_right]
"""

SPECT_SPACING = (4.8, 4.8, 4.8)  # z, y, x mm
CT_SPACING = (2.5, 1.0, 1.0)
PET_SPACING = (3.0, 4.0, 4.0)


def _write_image(path: Path, spacing_zyx_mm: tuple[float, float, float], shape_zyx: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ones(shape_zyx, dtype=np.float32))
    image.SetSpacing(tuple(reversed(spacing_zyx_mm)))
    sitk.WriteImage(image, str(path))


def _row(patient: str, cycle: int, role: str, tp: float | None, t: float | None, path: str, **extra: Any) -> dict:
    injected = {("P1", 1): 7400.0, ("P2", 1): 6800.0, ("P2", 2): 7000.0}[(patient, cycle)]
    row = {
        "patient_id": patient,
        "cycle": cycle,
        "role": role,
        "timepoint_h": tp,
        "time_h": t,
        "path": path,
        "injected_mbq": injected,
    }
    row.update(extra)
    return row


def _clean_rows() -> list[dict]:
    """P1: PET/CT, SPECT/CT at 4, 24, 96 h, mask at 24 h; P2 cycle 1: 24 h on two beds, 168 h; P2 cycle 2: 24 h."""
    p1 = {"residual_mbq": 150.0, "extravasated_mbq": 20.0, "injection_datetime": "2024-03-01T09:30:00"}
    rows = [
        _row("P1", 1, "pet", None, -120.0, "P1/pet.nii.gz", pet_tracer="68Ga-PSMA-11", **p1),
        _row("P1", 1, "pet_ct", None, -120.0, "P1/pet_ct.nii.gz", **p1),
    ]
    for tp, t in ((4, 4.2), (24, 23.5), (96, 97.0)):
        rows.append(_row("P1", 1, "spect", tp, t, f"P1/spect_{tp}h.nii.gz", deadtime_factor=1.05, **p1))
        rows.append(_row("P1", 1, "ct", tp, t, f"P1/ct_{tp}h.nii.gz", **p1))
    rows.append(_row("P1", 1, "mask", 24, None, "P1/mask_24h.nii.gz", **p1))
    for bed in (1, 2):
        rows.append(_row("P2", 1, "spect", 24, 24.0 + 0.3 * bed, f"P2/spect_24h_bed{bed}.nii.gz", bed=bed))
    rows.append(_row("P2", 1, "ct", 24, 24.0, "P2/ct_24h.nii.gz"))
    rows.append(_row("P2", 1, "spect", 168, 166.0, "P2/spect_168h.nii.gz", fwhm_mm=14.0))
    rows.append(_row("P2", 1, "ct", 168, 166.0, "P2/ct_168h.nii.gz"))
    rows.append(_row("P2", 2, "spect", 24, 25.0, "P2/c2_spect_24h.nii.gz"))
    rows.append(_row("P2", 2, "ct", 24, 25.0, "P2/c2_ct_24h.nii.gz"))
    return rows


def _write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _write_images(root: Path, rows: list[dict]) -> None:
    spacing = {"spect": SPECT_SPACING, "ct": CT_SPACING, "mask": CT_SPACING, "pet": PET_SPACING, "pet_ct": CT_SPACING}
    for row in rows:
        _write_image(root / row["path"], spacing.get(row["role"], SPECT_SPACING), (3, 4, 5))


def _make_cohort(root: Path, rows: list[dict] | None = None, outcomes: str | None = None) -> Path:
    rows = _clean_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    (root / "cohort.yaml").write_text(COHORT_YAML)
    _write_images(root, rows)
    _write_csv(root / "manifest.csv", rows)
    if outcomes is not None:
        (root / "outcomes.csv").write_text(outcomes)
    return root


OUTCOMES = "patient_id,psa_baseline,psa_week12,non_response\nP1,40.0,12.0,0\nP2,25.0,30.0,1\n"


@pytest.fixture
def clean_cohort(tmp_path: Path) -> Path:
    return _make_cohort(tmp_path / "cohort", outcomes=OUTCOMES)


# ------------------------------------------------------------------------------------------------ cohort.yaml


def test_region_names_and_kinds() -> None:
    assert region_kind("kidney_left") == "organ"
    assert region_kind("submandibular_right") == "organ"
    assert region_kind("bladder") == "organ"
    assert region_kind("red_marrow") == "marrow"
    assert region_kind("body") == "body"
    assert region_kind("lesion_007") == "lesion"
    assert region_kind("lesion_1234") == "lesion"
    assert lesion_name(3) == "lesion_003"
    for bad in ("lesion_7", "lesion_000", "lesion_0007", "Kidney_left", "kidney"):
        assert not is_region_name(bad)
        with pytest.raises(ManifestError, match="unknown region"):
            region_kind(bad)


def test_load_cohort_config_reads_every_field(tmp_path: Path) -> None:
    (tmp_path / "cohort.yaml").write_text(COHORT_YAML)
    config = load_cohort_config(tmp_path)  # the folder is enough
    assert config.name == "tiny"
    assert config.nuclide == "Lu-177"  # canonical spelling of "177Lu"
    assert config.unit("spect") == "Bq/mL" and config.unit("pet") == "SUV"
    assert config.sensitivity_cps_per_mbq == 9.4 and config.fwhm_mm == 12.0
    assert config.labels["liver"] == 9 and config.label_names[20] == "lesion"
    assert config.unlabeled == ("lacrimal_left", "lacrimal_right")
    assert config.is_labeled("lesion_004")  # individual lesions live under the 'lesion' class
    assert not config.is_labeled("lacrimal_left") and not config.is_labeled("spleen")
    with pytest.raises(TypeError):
        config.labels["spleen"] = 3  # type: ignore[index]


def test_cohort_config_round_trip(tmp_path: Path) -> None:
    config = CohortConfig(
        name="rt",
        nuclide="Lu-177",
        units={"spect": "counts"},
        sensitivity_cps_per_mbq=7.1,
        fwhm_mm=11.0,
        labels={"kidney_left": 1, "lesion_001": 30, "lesion_002": 31},
        unlabeled=("spleen",),
    )
    write_cohort_config(config, tmp_path)
    again = load_cohort_config(tmp_path / "cohort.yaml")
    assert again == config
    assert again.unit("ct") == "HU"  # roles not given take the defaults


def test_load_cohort_config_reports_every_problem(tmp_path: Path) -> None:
    (tmp_path / "cohort.yaml").write_text(
        "name: 12\n"  # wrong type
        "nuclide: Xx-999\n"  # unknown nuclide
        "colour: blue\n"  # unknown key
        "units: {spect: Gy}\n"  # wrong unit for the role
        "defaults: {fwhm_mm: -3, sensitivity: 9}\n"  # negative value, unknown key
        "labels:\n"
        "  kidney_left: 1\n"
        "  kidney_right: 1\n"  # duplicate value
        "  liver: 0\n"  # background value
        "  spleen: two\n"  # wrong type
        "  prostate: 5\n"  # unknown region
        "  kidney_left: 3\n"  # duplicate key, line 12
        "unlabeled: [liver, liver]\n"
    )
    with pytest.raises(ManifestError) as info:
        load_cohort_config(tmp_path / "cohort.yaml")
    text = str(info.value)
    assert "line 12" in text and "'kidney_left'" in text  # PyYAML would silently keep the last one
    # YAML problems block the schema check; fix the duplicate key and every other problem shows at once.
    (tmp_path / "cohort.yaml").write_text((tmp_path / "cohort.yaml").read_text().replace("  kidney_left: 3\n", ""))
    with pytest.raises(ManifestError) as info:
        load_cohort_config(tmp_path / "cohort.yaml")
    text = str(info.value)
    for needle in (
        "'name' must be text",
        "'nuclide'",
        "unknown key 'colour'",
        "'units.spect' is 'Gy'",
        "'defaults.fwhm_mm' must be a positive number",
        "unknown key 'sensitivity'",
        "share the value 1",
        "'labels.liver' is 0",
        "'labels.spleen' must be an integer",
        "unknown region 'prostate'",
        "lists 'liver' twice",
        "'liver' is both in 'labels' and in 'unlabeled'",
    ):
        assert needle in text, needle


def test_cohort_config_constructor_validates() -> None:
    with pytest.raises(ManifestError, match="share the value 4"):
        CohortConfig(name="x", labels={"liver": 4, "spleen": 4})
    with pytest.raises(ManifestError, match="nuclide"):
        CohortConfig(name="x", nuclide="Unobtainium")


# --------------------------------------------------------------------------------------------------- manifest


def test_load_manifest_queries(clean_cohort: Path) -> None:
    manifest = load_manifest(clean_cohort)
    assert isinstance(manifest, Manifest) and len(manifest) == len(_clean_rows())
    assert manifest.patients() == ("P1", "P2")
    assert manifest.cycles("P2") == (1, 2)
    assert manifest.patient_cycles() == (("P1", 1), ("P2", 1), ("P2", 2))
    assert manifest.timepoints("P1", 1) == (4.0, 24.0, 96.0)
    assert manifest.timepoints("P2", 1) == (24.0, 168.0)  # two beds, one time point
    assert manifest.timepoints("P1", 1, role="mask") == (24.0,)
    assert [r.bed for r in manifest.select(patient_id="P2", cycle=1, role="spect", timepoint_h=24)] == [1, 2]
    assert len(manifest.rows_for_role("ct")) == 6
    assert manifest.injected_mbq("P1", 1) == 7400.0
    assert manifest.net_administered_mbq("P1", 1) == pytest.approx(7400.0 - 150.0)
    assert manifest.net_administered_mbq("P2", 1) == 6800.0  # no residual recorded
    assert manifest.extravasated_mbq("P1", 1) == 20.0
    assert manifest.injection_datetime("P1", 1) == datetime(2024, 3, 1, 9, 30)
    pet = manifest.rows_for_role("pet")[0]
    assert pet.time_h == -120.0 and pet.pet_tracer == "68Ga-PSMA-11" and pet.timepoint_h is None
    assert pet.net_administered_mbq == pytest.approx(7250.0)
    spect = manifest.select(patient_id="P2", cycle=1, role="spect", timepoint_h=168)[0]
    assert spect.fwhm_mm == 14.0 and spect.deadtime_factor is None and spect.line == 14  # header is line 1
    assert manifest.image_path(spect) == clean_cohort / "P2" / "spect_168h.nii.gz"
    with pytest.raises(ManifestError, match="no rows for patient 'P3'"):
        manifest.net_administered_mbq("P3", 1)


def test_patients_sort_naturally(tmp_path: Path) -> None:
    rows = []
    for patient in ("P10", "P2", "P1"):
        rows.append({**_row("P1", 1, "spect", 24, 24.0, f"{patient}/s.nii.gz"), "patient_id": patient})
        rows.append({**_row("P1", 1, "ct", 24, 24.0, f"{patient}/c.nii.gz"), "patient_id": patient})
    _write_csv(tmp_path / "manifest.csv", rows)
    assert load_manifest(tmp_path / "manifest.csv").patients() == ("P1", "P2", "P10")


def test_write_manifest_round_trip(clean_cohort: Path, tmp_path: Path) -> None:
    manifest = load_manifest(clean_cohort / "manifest.csv")
    out = tmp_path / "copy"
    out.mkdir()
    write_manifest(manifest.rows, out)
    again = load_manifest(out)
    assert again.rows == manifest.rows
    assert [r.line for r in again.rows] == list(range(2, 2 + len(manifest)))


def test_missing_optional_columns_are_empty(tmp_path: Path) -> None:
    columns = ["patient_id", "cycle", "role", "timepoint_h", "time_h", "path", "injected_mbq"]
    _write_csv(
        tmp_path / "manifest.csv",
        [_row("P1", 1, "spect", 4, 4.0, "a.nii"), _row("P1", 1, "ct", 4, 4.0, "b.nii")],
        columns,
    )
    row = load_manifest(tmp_path).rows[0]
    assert row.bed is None and row.residual_mbq is None and row.weight_kg is None


def test_load_manifest_raises_with_every_problem(tmp_path: Path) -> None:
    rows = _clean_rows()
    rows[2]["deadtime_factor"] = 0.8  # line 4
    rows[5]["injected_mbq"] = 7000.0  # line 7
    _write_csv(tmp_path / "manifest.csv", rows)
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert "manifest.csv:4: deadtime_factor is 0.8" in str(info.value)
    assert "manifest.csv:7: injected_mbq 7000 differs from 7400 on line 2" in str(info.value)


# ------------------------------------------------------------------------------------------------- validation


def test_clean_cohort_passes_with_the_right_summary(clean_cohort: Path) -> None:
    report = validate_cohort(clean_cohort)
    assert isinstance(report, ValidationReport)
    assert report.ok, report.format()
    s = report.summary
    assert s is not None
    assert s.name == "tiny" and s.nuclide == "Lu-177"
    assert s.n_patients == 2 and s.patients == ("P1", "P2")
    assert s.n_patient_cycles == 3 and s.cycles == (1, 2)
    assert s.spect_timepoints_h == (4.0, 24.0, 96.0, 168.0)
    assert dict(s.images_per_role) == {"spect": 7, "ct": 6, "pet": 1, "pet_ct": 1, "mask": 1}
    assert s.max_beds == 2
    assert s.voxel_sizes_mm["spect"] == ((SPECT_SPACING, 7),)
    assert s.voxel_sizes_mm["ct"] == ((CT_SPACING, 6),)
    assert s.voxel_sizes_mm["pet"] == ((PET_SPACING, 1),)
    assert s.n_outcomes == 2
    text = report.format()
    assert "OK" in text and "4, 24, 96, 168 h" in text and "4.80 × 4.80 × 4.80 (7)" in text
    assert len(text.splitlines()) <= 25  # one screen


def test_pet_masks_and_outcomes_are_optional(tmp_path: Path) -> None:
    rows = [r for r in _clean_rows() if r["role"] in ("spect", "ct")]
    report = validate_cohort(_make_cohort(tmp_path / "c", rows))
    assert report.ok, report.format()
    assert report.summary is not None and report.summary.n_outcomes is None
    assert report.summary.images_per_role["pet"] == 0


def test_cohort_summary_from_a_manifest(clean_cohort: Path) -> None:
    manifest = load_manifest(clean_cohort)
    summary = cohort_summary(manifest, load_cohort_config(clean_cohort))
    assert summary.n_patients == 2 and summary.n_rows == 16 and summary.voxel_sizes_mm == {}


def _problems_by_line(report: ValidationReport, file: str = "manifest.csv") -> dict[int | None, list[str]]:
    out: dict[int | None, list[str]] = {}
    for p in report.problems:
        if p.file == file:
            out.setdefault(p.row, []).append(p.message)
    return out


def test_broken_cohort_reports_every_problem_with_file_and_row(tmp_path: Path) -> None:
    rows = _clean_rows()
    # Data rows are lines 2.. in the CSV (header = line 1): rows[i] is on line i + 2.
    rows[0]["pet_tracer"] = ""  # line 2: PET without tracer
    rows[1]["time_h"] = 5.0  # line 3: PET/CT after the injection
    rows[2]["residual_mbq"] = -1.0  # line 4: negative number
    rows[4]["injected_mbq"] = 7300.0  # line 6: inconsistent within P1 cycle 1
    rows[5]["weight_kg"] = "nan"  # line 7: NaN
    rows[6]["time_h"] = 20.0  # line 8: the 96 h SPECT acquired before the 24 h one (swapped rows?)
    rows[7]["deadtime_factor"] = 0.9  # line 9: dead-time factor < 1
    rows[8]["role"] = "mri"  # line 10: unknown role
    rows[9]["path"] = "P2/missing.nii.gz"  # line 11: image file missing
    # line 13: P2's 24 h CT is not an image (written below)
    rows.append(_row("P2", 1, "spect", 168, 166.5, "P2/spect_168h_again.nii.gz"))  # line 18: duplicate time point
    rows.append(_row("P2", 1, "mask", 96, None, "P2/mask_96h.nii.gz"))  # line 19: mask without SPECT
    rows.append(_row("P2", 2, "spect", 4, 4.0, "P2/c2_spect_4h.nii.gz"))  # line 20: unsorted, and no CT at 4 h
    outcomes = "patient_id,psa_baseline,psa_week12,non_response\nP1,40,30,0\nP9,1,1,1\n"
    root = _make_cohort(tmp_path / "broken", rows, outcomes=outcomes)
    (root / "P2" / "missing.nii.gz").unlink()
    (root / "P2" / "ct_24h.nii.gz").write_bytes(b"not an image")
    (root / "cohort.yaml").write_text(COHORT_YAML.replace("liver: 9", "liver: 2"))  # duplicate label value

    report = validate_cohort(root)
    assert not report.ok
    by_line = _problems_by_line(report)
    expected = {
        2: "pet_tracer is empty",
        3: "time_h is 5 on a pet_ct row",
        4: "residual_mbq is -1.0",
        6: "injected_mbq 7300 differs from 7400 on line 2",
        7: "weight_kg is 'nan'",
        8: "time_h 20 at timepoint_h 96 is not later than time_h 23.5",
        9: "deadtime_factor is 0.9",
        10: "role is 'mri'",
        11: "'P2/missing.nii.gz' not found",
        13: "not a NIfTI image, copy or export it again",  # 12 bytes of junk: the integrity check explains
        18: "duplicate time point",
        19: "mask at timepoint_h 96 has no spect",
        20: "unsorted time points",
    }
    for line, needle in expected.items():
        assert any(needle in m for m in by_line.get(line, [])), (line, needle, by_line.get(line))
    assert any("has no ct row" in m for m in by_line[20])
    yaml_problems = _problems_by_line(report, "cohort.yaml")[None]
    assert any("share the value 2" in m for m in yaml_problems)
    outcome_problems = _problems_by_line(report, "outcomes.csv")
    assert any("contradicts PSA 40 → 30" in m for m in outcome_problems[2])
    assert any("P9 is not in manifest.csv" in m for m in outcome_problems[3])
    # No problem on rows that are fine: the checks are specific.
    assert set(by_line) <= set(expected) | {None}
    text = report.format()
    assert f"{len(report.problems)} problems" in text
    assert "manifest.csv:10: role is 'mri'" in text
    assert all(str(p) in text for p in report.problems)


@pytest.mark.parametrize(
    ("mutate", "line", "needle"),
    [
        # rows[2] is P1's 4 h SPECT (line 4), rows[3] its CT (line 5).
        (lambda rows: rows[3].update(injected_mbq=""), 5, "injected_mbq is empty"),
        (lambda rows: rows[2].update(time_h="", injection_datetime=""), 4, "neither time_h nor injection_datetime"),
        (lambda rows: rows[3].update(path="/data/x.nii.gz"), 5, "is absolute"),
        (lambda rows: rows[3].update(path="../x.nii.gz"), 5, "leaves the cohort folder"),
        (lambda rows: rows[3].update(path="P1/spect_4h.nii.gz"), 5, "already used on line 4"),
        (lambda rows: rows[3].update(cycle="0"), 5, "cycle is '0'"),
        (lambda rows: rows[3].update(patient_id="P 1"), 5, "patient_id 'P 1'"),
        (lambda rows: rows[3].update(injection_datetime="1 March"), 5, "ISO 8601"),
        (lambda rows: rows[3].update(extravasated_mbq=8000), 5, "exceeds the administered activity"),
        (lambda rows: rows[3].update(residual_mbq=7400), 5, "nothing would be administered"),
        (lambda rows: rows[3].update(timepoint_h=""), 5, "timepoint_h is empty"),
        (lambda rows: rows[3].update(timepoint_h=-4), 5, "must be ≥ 0 h"),
        (lambda rows: rows[3].update(bed="1.5"), 5, "bed is '1.5'"),
        (lambda rows: rows[3].update(injection_datetime="2024-03-02T09:30:00"), 5, "injection_datetime 2024-03-02"),
        (lambda rows: rows[10].update(bed=""), 12, "bed is empty but other spect rows"),  # P2 24 h, 2nd bed
        (lambda rows: rows.pop(1), 2, "pet row has no pet_ct"),
        (lambda rows: rows.pop(14), 16, "patient P2 cycle 2 has no spect row"),
    ],
)
def test_single_row_problems(tmp_path: Path, mutate: Callable[[list[dict]], Any], line: int, needle: str) -> None:
    rows = _clean_rows()
    mutate(rows)
    report = validate_cohort(_make_cohort(tmp_path / "c", rows))
    messages = [p.message for p in report.problems if p.file == "manifest.csv" and p.row == line]
    assert any(needle in m for m in messages), (needle, [str(p) for p in report.problems])


def test_header_problems(tmp_path: Path) -> None:
    rows = _clean_rows()
    columns = [c for c in COLUMNS if c != "injected_mbq"] + ["notes"]
    root = _make_cohort(tmp_path / "c", rows)
    _write_csv(root / "manifest.csv", [{**r, "notes": "x"} for r in rows], columns)
    messages = _problems_by_line(validate_cohort(root))[1]
    assert any("unknown column 'notes'" in m for m in messages)
    assert any("required column 'injected_mbq' is missing" in m for m in messages)


def test_semicolon_csv_is_reported(tmp_path: Path) -> None:
    root = _make_cohort(tmp_path / "c")
    text = (root / "manifest.csv").read_text().replace(",", ";")
    (root / "manifest.csv").write_text(text)
    assert "not separated by commas" in validate_cohort(root).format()


def test_config_dependent_row_checks(tmp_path: Path) -> None:
    rows = [r for r in _clean_rows() if r["role"] in ("spect", "ct")]
    root = _make_cohort(tmp_path / "c", rows)
    # SPECT in counts needs acquisition_s and a sensitivity; without a default fwhm every SPECT row needs one.
    (root / "cohort.yaml").write_text("name: counts\nnuclide: Lu-177\nunits: {spect: counts}\nlabels: {liver: 1}\n")
    by_line = _problems_by_line(validate_cohort(root))
    spect_lines = [i + 2 for i, r in enumerate(rows) if r["role"] == "spect"]
    for line in spect_lines:
        text = " ".join(by_line[line])
        assert "acquisition_s is empty" in text and "sensitivity_cps_per_mbq is empty" in text
        if rows[line - 2].get("fwhm_mm") is None:
            assert "fwhm_mm is empty" in text
        else:
            assert "fwhm_mm" not in text


def test_nifti_header_checks(tmp_path: Path) -> None:
    rows = [r for r in _clean_rows() if r["role"] in ("spect", "ct") and r["patient_id"] == "P1"]
    root = _make_cohort(tmp_path / "c", rows)
    sitk.WriteImage(sitk.Image([5, 4, 3, 2], sitk.sitkFloat32), str(root / rows[0]["path"]))  # 4-D
    vector = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), dtype=np.float32), isVector=True)
    sitk.WriteImage(vector, str(root / rows[1]["path"]))
    by_line = _problems_by_line(validate_cohort(root))
    assert any("4 dimensions" in m for m in by_line[2])
    assert any("3 components per voxel" in m for m in by_line[3])


def test_missing_and_empty_cohort(tmp_path: Path) -> None:
    report = validate_cohort(tmp_path / "nowhere")
    assert not report.ok and len(report.problems) == 1 and "not found" in report.problems[0].message
    (tmp_path / "empty").mkdir()
    report = validate_cohort(tmp_path / "empty")
    files = {p.file for p in report.problems}
    assert files == {"cohort.yaml", "manifest.csv"}
    assert report.summary is None


def test_problem_text_names_file_and_line() -> None:
    assert str(Problem("manifest.csv", 7, "x")) == "manifest.csv:7: x"
    assert str(Problem("cohort.yaml", None, "y")) == "cohort.yaml: y"


def test_manifest_row_values_are_typed(clean_cohort: Path) -> None:
    row = load_manifest(clean_cohort).rows[2]
    assert isinstance(row, ManifestRow)
    assert isinstance(row.cycle, int) and isinstance(row.timepoint_h, float) and isinstance(row.injected_mbq, float)
    assert isinstance(row.injection_datetime, datetime)
    assert not math.isnan(row.injected_mbq)


# ------------------------------------------------------------------------------------------------------ DICOM


BQML = ("BQML", 1.0, 0.0)  # (units, slope, intercept) of the NM Real World Value Mapping
CT_FRAME = "1.2.826.0.1.3680043.8.498.1"  # the frame of reference the test CTs and their contours share


def _dicom_cohort(root: Path) -> tuple[Path, list[dict]]:
    """P1 with SPECT (multi-frame NM file in a folder) and CT (slice series) at 4 h and 24 h; DICOM times only."""
    from tests.io.dicom_factory import write_image_series, write_nm_multiframe

    common = {"injection_datetime": "2025-01-01T06:00:00"}
    rows = []
    for tp in (4, 24):
        (root / f"spect_{tp}h").mkdir(parents=True)
        # Bq/mL through the Real World Value Mapping: a complete SPECT that deep validation reads without calibration
        write_nm_multiframe(root / f"spect_{tp}h" / "nm.dcm", np.ones((4, 4, 4), dtype=np.uint16), rwvm=BQML)
        write_image_series(
            root / f"ct_{tp}h",
            np.zeros((5, 4, 4), dtype=np.int16),
            spacing_zyx_mm=(2.0, 1.0, 1.0),
            extra={"FrameOfReferenceUID": CT_FRAME},
        )
        rows.append(_row("P1", 1, "spect", tp, None, f"spect_{tp}h", **common))
        rows.append(_row("P1", 1, "ct", tp, None, f"ct_{tp}h", **common))
    (root / "cohort.yaml").write_text(COHORT_YAML)
    _write_csv(root / "manifest.csv", rows)
    return root, rows


def test_clean_dicom_cohort(tmp_path: Path) -> None:
    from tests.io.dicom_factory import write_rtstruct

    root, rows = _dicom_cohort(tmp_path / "d")
    # An RT Structure Set saved beside its CT (a common export layout) is the 24 h label map.
    square = np.array([[0.0, 0.0, 4.0], [2.0, 0.0, 4.0], [2.0, 2.0, 4.0], [0.0, 2.0, 4.0]])
    write_rtstruct(root / "ct_24h" / "rs.dcm", {"liver": [square]}, frame_of_reference_uid=CT_FRAME)
    rows.append(_row("P1", 1, "mask", 24, None, "ct_24h/rs.dcm"))
    _write_csv(root / "manifest.csv", rows)
    report = validate_cohort(root)
    assert report.ok, report.format()
    assert report.summary is not None and report.summary.images_per_role["mask"] == 1
    assert report.summary.voxel_sizes_mm["spect"] == (((4.8, 4.8, 4.8), 2),)
    assert report.summary.voxel_sizes_mm["ct"] == (((2.0, 1.0, 1.0), 2),)


def test_dicom_series_problems(tmp_path: Path) -> None:
    from tests.io.dicom_factory import write_image_series, write_nm_multiframe

    root, rows = _dicom_cohort(tmp_path / "d")
    # Line 3 (CT 4 h): a slice missing and a second CT series mixed into the folder.
    for path in (root / "ct_4h").iterdir():
        path.unlink()
    write_image_series(root / "ct_4h", np.zeros((6, 4, 4), dtype=np.int16), spacing_zyx_mm=(2.0, 1.0, 1.0), skip=[2])
    write_image_series(root / "ct_4h", np.zeros((3, 4, 4), dtype=np.int16), prefix="other")
    # Line 4 (SPECT 24 h): a CT folder given as SPECT.
    for path in (root / "spect_24h").iterdir():
        path.unlink()
    write_image_series(root / "spect_24h", np.zeros((3, 4, 4), dtype=np.int16))
    # Line 5 (CT 24 h): its series continues in another folder, which line 7 points to.
    for path in (root / "ct_24h").iterdir():
        path.unlink()
    write_image_series(root / "ct_24h", np.zeros((6, 4, 4), dtype=np.int16), series_uid="1.2.3.4", skip=[3, 4, 5])
    write_image_series(root / "ct_24h_b", np.zeros((6, 4, 4), dtype=np.int16), series_uid="1.2.3.4", skip=[0, 1, 2])
    # Line 6: an NM file and a CT series in one folder.
    (root / "spect_mixed").mkdir()
    write_nm_multiframe(root / "spect_mixed" / "nm.dcm", np.ones((4, 4, 4), dtype=np.uint16))
    write_image_series(root / "spect_mixed", np.zeros((3, 4, 4), dtype=np.int16))
    rows.append(_row("P2", 1, "spect", 24, 24.0, "spect_mixed"))
    rows.append(_row("P2", 1, "ct", 24, None, "ct_24h_b"))
    _write_csv(root / "manifest.csv", rows)

    by_line = _problems_by_line(validate_cohort(root))
    assert any("slice(s) missing" in m for m in by_line[3]), by_line.get(3)
    assert any("mixed in one folder" in m for m in by_line[3]), by_line.get(3)
    assert any("a spect row expects NM" in m for m in by_line[4]), by_line.get(4)
    assert any("also holds CT" in m for m in by_line[6]), by_line.get(6)
    assert any("DICOM series 1.2.3.4, which is also in 'ct_24h'" in m for m in by_line[7]), by_line.get(7)
    assert set(by_line) == {3, 4, 6, 7}
