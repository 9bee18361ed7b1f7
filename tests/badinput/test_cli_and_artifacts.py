"""Bad input outside a cohort: typed command-line values, prepared cases and model artifacts of another version or
truncated, a pickle carrying code. Each ends in a `LudlError` (or the CLI's one-line error) naming the file or key.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from ludl.cli import main
from ludl.errors import LudlError
from ludl.io.prepared import FORMAT_NAME, FORMAT_VERSION, SIDECAR, read_case
from ludl.training.artifact import MODEL_FILE, WEIGHTS_FILE, load_artifact, save_artifact


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_typo_plus_n_patient(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    # Hydra's own hint after `presett=…` suggests a `+` prefix; `+n_patient=1` must not generate 20 patients
    assert _run(["synth", "preset=tiny", "+n_patient=1", f"out={out}"]) != 0
    err = capsys.readouterr().err
    assert "n_patient" in err and "Traceback" not in err
    assert not out.exists()


def test_cycle_not_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = _run(["dosimetry", f"cohort={tmp_path}", "patient=P01", "cycle=one", f"out={out}"])
    err = capsys.readouterr().err
    assert code == 2 and "cycle" in err and "one" in err and "Traceback" not in err
    assert not out.exists()


def test_prepared_case_of_another_version(tmp_path: Path) -> None:
    case = tmp_path / "P01_c1"
    case.mkdir()
    (case / SIDECAR).write_text(json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION - 1}))
    with pytest.raises(LudlError, match=rf"case\.json has format version {FORMAT_VERSION - 1}.*overwrite=true"):
        read_case(case)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return save_artifact(tmp_path / "model", {"w": torch.ones(64, 64)}, {"network": {"name": "tiny"}})


def test_checkpoint_truncated(artifact: Path) -> None:
    weights = artifact / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(LudlError, match=r"weights\.pt is truncated or corrupt.*copy the artifact again or retrain"):
        load_artifact(artifact)


def test_checkpoint_of_another_version(artifact: Path) -> None:
    document = json.loads((artifact / MODEL_FILE).read_text())
    (artifact / MODEL_FILE).write_text(json.dumps({**document, "format_version": 99}))
    with pytest.raises(LudlError, match=r"model\.json: artifact format version 99.*retrain"):
        load_artifact(artifact)


class _Payload:
    """A pickle that runs code when loaded (writes a marker file): what `weights_only=True` must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))  # plain pickle.load would call Path.touch(marker)


def test_checkpoint_pickle_with_code(artifact: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    with open(artifact / WEIGHTS_FILE, "wb") as handle:
        pickle.dump({"w": _Payload(marker)}, handle)
    with open(artifact / WEIGHTS_FILE, "rb") as handle:  # the payload works: an unsafe load runs it
        pickle.load(handle)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(LudlError, match=r"weights\.pt"):
        load_artifact(artifact)
    assert not marker.exists(), "the pickle's code ran"
