"""`ludl dosimetry` on a tiny analytic cohort writes the report; its tables match the dose map and the cohort truth."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import DosimetryResult, run_dosimetry
from ludl.dosimetry.report import terminal_half_life_h
from ludl.physics.kinetics import fit_tac
from tests.dosimetry import cohort_factory as cf
from tests.report.page_reading import images, number, shows, tables, visible_text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[DosimetryResult, str]:
    root = tmp_path_factory.mktemp("dosimetry_report")
    cohort = cf.write_cohort(root / "cohort", cf.CohortSpec())
    out = root / "SYN0001_c1"
    result = run_dosimetry(cohort, "P01", 1, out, DosimetryOptions(kernel_cache_dir=root / "kernels"))
    return result, result.files["summary_html"].read_text(encoding="utf-8")


def test_files_label_and_no_identifier(run: tuple[DosimetryResult, str]) -> None:
    result, page = run
    assert result.files["summary_html"].name == "summary.html"
    assert result.files["summary_pdf"].read_bytes()[:5] == b"%PDF-"
    assert result.files["dvh_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = {row[0]: row[1] for row in tables(page)["header"]}
    assert header["Patient"] == "SYN0001_c1"  # the output folder's name, never the cohort's patient ID
    text = visible_text(page)
    assert "P01" not in text
    assert not re.search(r"\d[eE][+-]?\d", text) and "nan" not in text.lower().split()
    assert header["Therapy cycle"] == "1"
    assert "7\u2009400 MBq" in header["Injected activity"]
    assert len(images(page)) == 4  # dose MIP (no PET here), dose on CT, time-activity curves, DVHs
    assert len(tables(page)["Registration of the time points"]) == 1 + len(cf.TIMES_H)


def test_lesion_and_organ_tables_equal_the_dose_map(run: tuple[DosimetryResult, str]) -> None:
    result, page = run
    dose = np.asarray(result.dose.array, dtype=np.float64)
    regions = result.regions_map
    voxel_ml = result.dose.voxel_volume_ml
    lesions = tables(page)["Lesions, highest dose first"]
    col = {name: i for i, name in enumerate(lesions[0])}
    assert len(lesions) - 1 == sum(1 for k in regions.kinds.values() if k == "lesion")
    for row in lesions[1:]:
        values = np.sort(dose[regions.mask(f"lesion_{int(row[0].split()[1]):03d}")])[::-1]
        assert shows(row[col["Volume (mL)"]], values.size * voxel_ml)
        assert shows(row[col["Voxel mean dose (Gy)"]], float(values.mean()))
        for x in (2, 50, 98):  # the ⌈x·n/100⌉-th highest voxel dose
            assert shows(row[col[f"D{x} (Gy)"]], float(values[math.ceil(x * values.size / 100 - 1e-9) - 1]))
    organs = {row[0]: row for row in tables(page)["Organs at risk"][1:]}
    ocol = {name: i for i, name in enumerate(tables(page)["Organs at risk"][0])}
    for label, name in (("Kidney, left", "kidney_left"), ("Liver", "liver")):
        values = dose[regions.mask(name)]
        assert shows(organs[label][ocol["Volume (mL)"]], values.size * voxel_ml)
        assert shows(organs[label][ocol["Mean dose (Gy)"]], result.region(name)["mean_dose_gy"])
        per_gbq = result.region(name)["mean_dose_gy"] / (result.net_administered_mbq / 1000.0)
        assert shows(organs[label][ocol["Dose per activity (Gy/GBq)"]], per_gbq)


def test_terminal_half_life_is_the_cohort_clearance(run: tuple[DosimetryResult, str]) -> None:
    _, page = run
    organs = tables(page)["Organs at risk"]
    col = organs[0].index("Terminal effective half-life (h)")
    shown = {row[0]: number(row[col]) for row in organs[1:]}
    truth = {r.name: r.t_eff_h for r in cf.REGIONS}  # the analytic clearance of each region
    for label, name in (("Kidney, left", "kidney_left"), ("Kidney, right", "kidney_right"), ("Liver", "liver")):
        assert shown[label] == pytest.approx(truth[name], rel=0.1), label


def test_terminal_half_life_is_the_slow_phase_of_a_biexponential() -> None:
    times = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
    fast, slow = 3.0, 60.0  # most of the early activity clears fast; the terminal phase is the slow one
    activity = 80.0 * np.exp(-math.log(2) * times / fast) + 20.0 * np.exp(-math.log(2) * times / slow)
    fit = fit_tac(times, activity, model="biexp")
    assert terminal_half_life_h(fit) == pytest.approx(slow, rel=0.02)
    assert terminal_half_life_h(None) is None
