"""`evaluate` end to end on fake CSVs: written files, the page's tables, self-containment and a headless render."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ludl.evaluation import EvaluationResult, coronal_slice, evaluate
from tests.evaluation.fakes import write_fake_response, write_fake_run

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> EvaluationResult:
    root = tmp_path_factory.mktemp("evaluation")
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(12, 10, 5))
    run, prepared, cohort = write_fake_run(
        root,
        12,
        network=lambda p, r, t: 0.1 * noise[p, r, t],
        stp={"haenscheid": lambda p, r, t: 0.3 * noise[p, r, t] + 0.1, "madsen": lambda p, r, t: 0.2 * noise[p, r, t]},
        gt_vs_truth=lambda p, r, t: 0.03,
    )
    write_fake_response(run, cohort, prepared, 12)
    (cohort / "truth" / "single_scan_bound.csv").write_text(
        "region_class,timepoint_h,median_abs_error_pct\nkidneys,24,6.0\nlesions,24,15.0\n"
    )
    z, y, x = np.mgrid[0:30, 0:20, 0:20]
    gt = 4.0 * np.exp(-((z - 15) ** 2 + (y - 10) ** 2 + (x - 8) ** 2) / 20.0)
    slices = [coronal_slice("P01_c1", 24.0, gt * 1.1, gt, (4.0, 4.0, 4.0))]
    return evaluate(run, prepared, cohort, 0, dose_slices=slices, n_boot=200)


def test_files_and_terminal_text(result: EvaluationResult) -> None:
    for name in ("comparison", "paired", "reference", "dice", "detection", "response", "calibration", "text", "page"):
        assert result.files[name].is_file(), name
    text = result.format()
    for needle in (
        "Hänscheid",
        "Madsen",
        "Kidneys 24 h",
        "Paired difference",
        "ROC AUC",
        "Dice",
        "single-scan reference",
    ):
        assert needle in text
    assert "PET-only" not in text  # the fake has no prepared cases to take PET features from


def _visible_text(page: str) -> str:
    return re.sub(r'src="data:image/png;base64,[^"]*"', "", page)


def test_page_holds_every_table_and_nothing_external(result: EvaluationResult) -> None:
    assert result.page_path is not None
    page = result.page_path.read_text(encoding="utf-8")
    for heading in (
        "Against the multi-time-point ground truth",
        "Against the synthetic truth",
        "Median |error| vs scan time",
        "Paired differences",
        "single-scan reference",
        "All error statistics",
        "Segmentation",
        "Lesion detection",
        "Non-response after cycle 1",
        "Calibration",
        "Dose slices of held-out cases",
    ):
        assert heading in page, heading
    assert page.count("<table>") >= 10
    assert page.count('src="data:image/png;base64,') == 2  # error vs scan time, dose slices
    visible = _visible_text(page)
    assert not re.search(r"https?://|<link|<script|@import|url\(", visible)
    assert not re.search(r"\d[eE][+-]?\d", visible), "scientific notation on the page"
    assert "nan" not in re.sub(r"<[^>]+>", " ", visible).lower().split()


def _browser() -> str | None:
    return next((path for name in _BROWSERS if (path := shutil.which(name))), None)


def test_chromium_renders_the_page_without_console_errors(result: EvaluationResult, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium on the CI runner: install it (apt-get install -y chromium)")
        pytest.skip("Chromium is not installed")
    assert result.page_path is not None
    shot = tmp_path / "page.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", f"--screenshot={shot}", "--window-size=1400,2400", result.page_path.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 50_000
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "net::ERR" in line]
    assert not console, console


def test_numbers_are_fixed_point_without_negative_zero() -> None:
    from ludl.evaluation.page import fmt

    assert fmt(-0.04) == "0.0"
    assert fmt(1234567.891, 1) == "1 234 567.9"
    assert fmt(1e-7, 3) == "0.000"
    assert fmt(float("nan")) == "–"
