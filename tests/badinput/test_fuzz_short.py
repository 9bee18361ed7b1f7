"""CI's short fuzzing pass: every harness's seeds and fixed mutants replayed (always), and a few seconds of atheris
per harness when atheris is installed (``pip install 'ludl[fuzz]'``). Anything but a `LudlError` is a reader bug.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.replay import replay
from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_replay_of_seeds_and_mutants_raises_only_ludl_errors(target: str) -> None:
    count, failures = replay(target, n_mutations=60)
    assert count >= 61
    assert not failures, "\n".join(failures[:10])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed (extra 'fuzz')")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_harness_runs_a_few_seconds_without_a_crash(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    from fuzz.seeds import write_seeds

    write_seeds(target, corpus)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "fuzz" / f"fuzz_{target}.py"),
            "-max_total_time=3",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stderr
