"""`python infer.py` end to end: one DICOM scan, and a batch over a cohort manifest; errors are one line + exit 1.

The report is left out here (``report=false``): it is the report package's rendering, tested there; the content
`infer.py` hands it is tested in test_outputs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.inference.conftest import DicomPatient, TinyRun

REPO = Path(__file__).resolve().parents[2]


def _infer(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "infer.py"), *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_one_dicom_scan_writes_every_output(tmp_path: Path, tiny_run: TinyRun, dicom_patient: DicomPatient) -> None:
    p = dicom_patient
    out = tmp_path / "out"
    done = _infer(
        tmp_path,
        f"spect={p.spect}",
        f"ct={p.ct}",
        f"pet={p.pet}",
        f"pet_ct={p.pet_ct}",
        f"model={tiny_run.artifact}",
        f"out={out}",
        f"time_h={p.time_h}",
        f"injected_mbq={p.injected_mbq}",
        "report=false",
        "inference.roi_size_zyx=[32,32,32]",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = {f.name for f in out.iterdir()}
    assert {"dose.nii.gz", "tia.nii.gz", "labels.nii.gz", "rtdose.dcm", "seg.dcm", "regions.csv"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["injected_mbq"].startswith("command line")
    assert any("fwhm_mm" in w for w in summary["warnings"])  # no resolution given: uncorrected means, said so


def test_missing_scan_time_is_one_clear_line(tmp_path: Path, tiny_run: TinyRun, dicom_patient: DicomPatient) -> None:
    p = dicom_patient
    done = _infer(
        tmp_path, f"spect={p.spect}", f"ct={p.ct}", f"model={tiny_run.artifact}", f"out={tmp_path}/o", "report=false"
    )
    assert done.returncode == 1
    assert "time_h=" in done.stderr and str(p.spect) in done.stderr
    assert "Traceback" not in done.stderr


def test_batch_over_a_cohort_manifest(tmp_path: Path, tiny_run: TinyRun) -> None:
    out = tmp_path / "batch"
    done = _infer(
        tmp_path,
        f"cohort={tiny_run.cohort}",
        "patient=all",
        "timepoint_h=24",
        f"model={tiny_run.artifact}",
        f"out={out}",
        "report=false",
        "dicom=false",
        "inference.roi_size_zyx=null",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "batch_summary.json").read_text())
    assert len(summary["written"]) == 3 and not summary["failed"]
    for folder in summary["written"].values():
        assert (Path(folder) / "regions.csv").is_file()
    assert "infer: 3/3" in done.stderr  # the progress lines
