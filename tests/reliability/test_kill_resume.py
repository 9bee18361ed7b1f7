"""Crash safety (issue 14, Build 6 and 3): a job killed outright (SIGKILL, as a cluster preempts it) or stopped with
Ctrl-C, then rerun, ends exactly where an uninterrupted run ends.

``ludl prepare`` runs as a user runs it (``python -m ludl prepare …`` in its own process); it is killed while a case
is being computed or written, rerun, and every file of every case, ``splits.json``, ``dataset.json`` and
``stp_regions.csv`` must equal those of an uninterrupted run byte for byte, with no temporary folder left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import ludl
from ludl.io.prepared import CASES_FOLDER, SIDECAR
from tests.reliability.conftest import write_cohort

_REPO = Path(ludl.__file__).resolve().parents[1]
# What a shell shows as status 130 after Ctrl-C: ludl exits 130, or — when the interrupt landed inside an extension
# module's own evaluation, which CPython then reports as unhandled at exit — the process ends by SIGINT itself.
_CTRL_C = (130, -signal.SIGINT)
_SECONDS = 240.0  # far above a run of these cohorts on a busy 2-core machine: only a hang reaches it


def _default_sigint() -> None:
    """Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &`) hands its children SIGINT
    ignored, and Python then keeps it ignored, so the job would finish instead of stopping."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """A ludl job in the background, its output captured, Ctrl-C as a terminal delivers it."""
    return subprocess.Popen(
        args,
        env=_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _env() -> dict[str, str]:
    """The subprocess imports this checkout's ludl (not an installed copy)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _ludl(*args: str) -> list[str]:
    return [sys.executable, "-m", "ludl", *args]


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + _SECONDS
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the job ended (status {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but Hydra's per-run logs and the run's own summary (it holds timings)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".ludl" not in p.parts and not p.name.startswith("prepare_summary")
    }


@pytest.fixture
def prepare_args(tmp_path: Path, kernels: Path) -> Callable[[Path], list[str]]:
    cohort = write_cohort(tmp_path / "cohort", patients=("P01", "P02", "P03"))

    def args(out: Path) -> list[str]:
        return _ludl(
            "prepare",
            f"cohort={cohort}",
            f"out={out}",
            "workers=1",
            "dosimetry.tia_mode=region",
            "dosimetry.pvc=none",
            f"paths.kernel_cache_dir={kernels}",
        )

    return args


@pytest.mark.parametrize("moment", ["computing", "writing"])
def test_sigkill_mid_case_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, prepare_args: Callable[[Path], list[str]], moment: str
) -> None:
    reference = tmp_path / "reference"
    done = subprocess.run(prepare_args(reference), env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    cases = out / CASES_FOLDER
    job = _start(prepare_args(out), tmp_path)
    _wait_for(lambda: (cases / "P01_c1" / SIDECAR).is_file(), job, "the first case")
    if moment == "writing":  # the second case's temporary folder exists: its arrays are being written
        _wait_for(lambda: any(cases.glob(".P02_c1.tmp-*")), job, "the second case's writer")
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=_SECONDS)
    assert job.returncode == -signal.SIGKILL
    assert not (cases / "P03_c1").exists()  # killed mid-way: the last case was never started
    for folder in (cases / "P02_c1",):  # never half a case under its own name
        assert not folder.exists() or (folder / SIDECAR).is_file()

    rerun = subprocess.run(prepare_args(out), env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(r"3 case\(s\): [12] done, [12] skipped", rerun.stdout), rerun.stdout
    assert _files(out) == _files(reference)  # byte for byte; no ".tmp-" folder left
    assert sorted(p.name for p in cases.iterdir()) == ["P01_c1", "P02_c1", "P03_c1"]


def test_ctrl_c_of_prepare_is_one_line_saying_what_is_kept(
    tmp_path: Path, prepare_args: Callable[[Path], list[str]]
) -> None:
    out = tmp_path / "prepared"
    job = _start(prepare_args(out), tmp_path)
    _wait_for(lambda: (out / CASES_FOLDER / "P01_c1" / SIDECAR).is_file(), job, "the first case")
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=_SECONDS)
    assert job.returncode in _CTRL_C, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"ludl prepare: interrupted; the [12] finished case\(s\) in {re.escape(str(out / CASES_FOLDER))} are kept "
        r"\(a case being written is discarded\): rerun the same command to resume, finished cases are skipped",
        last,
    ), last
    assert not list((out / CASES_FOLDER).glob(".*"))  # the interrupted writer removed its temporary folder


def test_ctrl_c_of_synth_and_dosimetry_says_what_a_rerun_does(tmp_path: Path, kernels: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort", patients=("P01",))
    jobs = {
        "synth": (
            _ludl("synth", "preset=tiny", "n_patients=4", "workers=1", f"out={tmp_path / 'synth'}"),
            lambda: (tmp_path / "synth" / "SYN0001").is_dir(),
            "rerun the same command, it writes the cohort again from the start",
        ),
        "dosimetry": (
            _ludl(
                "dosimetry",
                f"cohort={cohort}",
                "patient=P01",
                f"out={tmp_path / 'dosimetry'}",
                f"paths.kernel_cache_dir={kernels}",
            ),
            lambda: (tmp_path / "dosimetry" / ".ludl").is_dir(),
            "rerun the same command to compute the case again",
        ),
    }
    for job_name, (args, started, rerun) in jobs.items():
        job = _start(args, tmp_path)
        _wait_for(started, job, f"ludl {job_name} to start")
        time.sleep(0.5)  # inside the job's work, past Hydra's start-up
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=_SECONDS)
        assert job.returncode in _CTRL_C, (job_name, err)
        assert "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"ludl {job_name}: interrupted;") and rerun in last, last


def test_ctrl_c_during_a_compiled_import_counts_as_an_interrupt() -> None:
    # pybind11 turns a Ctrl-C inside a compiled module's initialisation into ImportError("initialization failed")
    # raised from the KeyboardInterrupt (a CI run caught `ludl dosimetry` there): the job must say "interrupted"
    from ludl.cli import _caused_by_ctrl_c

    def wrapped(cause: BaseException) -> ImportError:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise ImportError("initialization failed") from inner
        except ImportError as outer:
            return outer

    assert _caused_by_ctrl_c(wrapped(KeyboardInterrupt()))
    assert not _caused_by_ctrl_c(wrapped(OSError("libfoo.so: cannot open shared object file")))
    assert not _caused_by_ctrl_c(ImportError("no module named foo"))
