"""The `ludl` command: job dispatch, exit codes, and the jobs end to end on small inputs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from ludl.cli import main
from ludl.dosimetry.options import DosimetryOptions
from tests.io.test_manifest import _make_cohort


def _run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    code = exit_info.value.code
    return int(code) if code is not None else 0


def test_help_lists_every_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--help") == 0
    out = capsys.readouterr().out
    assert "validate" in out and "phantom" in out


def test_unknown_job_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("nonsense") == 2
    assert "unknown job" in capsys.readouterr().err


def test_validate_clean_cohort_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = _make_cohort(tmp_path / "cohort")
    assert _run("validate", f"cohort={cohort}") == 0
    assert "patients" in capsys.readouterr().out.lower()


def test_validate_broken_cohort_exits_1_and_names_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = _make_cohort(tmp_path / "cohort")
    manifest = cohort / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    rows[0]["role"] = "xray"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert _run("validate", f"cohort={cohort}") == 1
    out = capsys.readouterr().out
    assert "manifest.csv:2" in out and "xray" in out


def test_validate_without_cohort_exits_2() -> None:
    assert _run("validate") == 2


@pytest.mark.parametrize("noise_cv", [0.0, 0.10])
def test_phantom_job_small(tmp_path: Path, capsys: pytest.CaptureFixture[str], noise_cv: float) -> None:
    out_dir = tmp_path / "phantom"
    code = _run(
        "phantom",
        f"out={out_dir}",
        f"kernel_cache_dir={tmp_path / 'kernels'}",
        "phantom.shape_zyx=[40,56,72]",
        "phantom.spacing_zyx_mm=[6.0,6.0,6.0]",
        f"phantom.noise_cv={noise_cv}",
    )
    assert code == 0
    rows = list(csv.DictReader((out_dir / "regions.csv").open()))
    assert {row["region"] for row in rows} >= {"kidney_left", "liver", "lesion_001"}
    for row in rows:
        error = abs(float(row["error_percent"]))
        if noise_cv == 0.0:
            # Exact biexp_uptake curves fitted with biexp_uptake: only the fit's convergence remains.
            assert error < 0.5, row
        else:
            # 10 % correlated noise: organs average it out, a 4 mL lesion has ~20 voxels at 6 mm.
            assert error < (3.0 if row["kind"] == "organ" else 10.0), row
        if row["kind"] == "lesion":
            # The sphere model integrates the point kernel analytically over a sphere; the map convolves
            # the voxel kernel over a voxelised sphere: two integrations of the same physics agree.
            assert float(row["sphere_model_dose_gy"]) == pytest.approx(float(row["true_mean_dose_gy"]), rel=0.05)
    assert (out_dir / "dose_gy.nii.gz").is_file()
    assert "kidney_left" in capsys.readouterr().out


def test_python_dash_m_ludl_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "ludl", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "validate" in result.stdout


def test_dosimetry_job_runs_the_pipeline_with_the_given_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ludl.dosimetry.pipeline import run_dosimetry
    from tests.dosimetry import cohort_factory as cf

    cohort = cf.write_cohort(tmp_path / "cohort", cf.CohortSpec())
    kernels = tmp_path / "kernels"
    out_dir = tmp_path / "cli"
    code = _run(
        "dosimetry",
        f"cohort={cohort}",
        "patient=P01",
        "cycle=1",
        f"out={out_dir}",
        "dosimetry.tia_mode=region",
        "dosimetry.pvc=none",
        f"paths.kernel_cache_dir={kernels}",
    )
    assert code == 0
    cli_rows = {row["region"]: row for row in csv.DictReader((out_dir / "regions.csv").open())}
    api = run_dosimetry(
        cohort, "P01", 1, tmp_path / "api", DosimetryOptions(tia_mode="region", pvc="none", kernel_cache_dir=kernels)
    )
    for name in ("kidney_left", "liver", "lesion_001"):
        api_gy = api.region(name)["mean_dose_gy"]
        assert float(cli_rows[name]["mean_dose_gy"]) == pytest.approx(api_gy, rel=1e-5)  # the CSV keeps 6 digits
    assert (out_dir / "dose_rtdose.dcm").is_file() and (out_dir / "summary.html").is_file()
    assert "kidney_left" in capsys.readouterr().out


def test_dosimetry_job_names_an_unknown_patient(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.dosimetry import cohort_factory as cf

    cohort = cf.write_cohort(tmp_path / "cohort", cf.CohortSpec())
    assert _run("dosimetry", f"cohort={cohort}", "patient=P99", f"out={tmp_path / 'out'}") == 1
    assert "P99" in capsys.readouterr().err


def test_prepare_job_writes_cases_and_splits_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tests.dosimetry import cohort_factory as cf

    cohort = cf.write_cohort(tmp_path / "cohort", cf.CohortSpec())
    out_dir = tmp_path / "prepared"
    args = ("prepare", f"cohort={cohort}", f"out={out_dir}", "workers=1", f"paths.kernel_cache_dir={tmp_path / 'k'}")
    assert _run(*args) == 0
    cases = sorted((out_dir / "cases").iterdir())
    assert [case.name for case in cases] == ["P01_c1"]
    assert (cases[0] / "case.json").is_file()
    splits = json.loads((out_dir / "splits.json").read_text())
    assert "P01" in json.dumps(splits)
    capsys.readouterr()
    assert _run(*args) == 0  # second run: the finished case is skipped
    assert "skipped" in capsys.readouterr().out.lower()
