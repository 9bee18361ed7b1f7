"""`python train.py` end to end on a tiny prepared cohort: a run writes predictions and the artifact; a 2-process
CPU DDP run (gloo) finishes; a 2-trial Optuna sweep runs. Needs the data module (`ludl.data.module`)."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ludl.errors import LudlError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ludl.data.module") is None, reason="needs ludl.data.PreparedDataModule"
)


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-patient tiny cohort (one per fold) and its prepared folder."""
    from ludl.dosimetry.prepare import run_prepare
    from ludl.synth.cohort import run_synth

    root = tmp_path_factory.mktemp("tiny")
    cohort, prepared = root / "cohort", root / "prepared"
    run_synth("tiny", 3, 5, cohort, workers=1)
    summary = run_prepare(cohort, prepared, workers=1, n_folds=3, seed=0)
    assert summary.ok
    return cohort, prepared


def _train(tmp: Path, data: tuple[Path, Path], *extra: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    cohort, prepared = data
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    flags = [e for e in extra if e.startswith("-")]  # Hydra's flags (-m) before the overrides
    args = [
        sys.executable,
        str(REPO / "train.py"),
        *flags,
        "experiment=tiny",
        f"cohort={cohort}",
        f"prepared={prepared}",
    ]
    return subprocess.run(
        [*args, *(e for e in extra if not e.startswith("-"))],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_run_writes_predictions_and_artifact(tmp_path: Path, tiny_prepared: tuple[Path, Path]) -> None:
    from ludl.models.calibration import fit_calibration
    from ludl.models.region_model import fit_region_model
    from ludl.training.artifact import load_artifact

    float_columns = ("timepoint_h", "volume_ml", "gt_mean_dose_gy", "net_mean_dose_gy", "net_mean_dose_corrected_gy")

    out = tmp_path / "run"
    done = _train(tmp_path, tiny_prepared, f"out={out}", "evaluate=false")
    assert done.returncode == 0, done.stderr[-3000:]
    with (out / "predictions" / "regions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {r["fold"] for r in rows} == {"0"}
    kinds = {r["kind"] for r in rows}
    assert "lesion" in kinds and "organ" in kinds
    assert (out / "predictions" / "segmentation.csv").is_file() and (out / "predictions" / "patients.csv").is_file()
    artifact = load_artifact(out / "model")
    # the uncalibrated rows of the validation and training patients are written (calibration.fit_on: [val, train]),
    # never a held-out patient's, and the artifact's factors are refitted from them alone
    fitted: dict[str, list[dict[str, str]]] = {}
    for split in ("validation", "training"):
        with (out / "predictions" / f"{split}_regions.csv").open() as handle:
            fitted[split] = list(csv.DictReader(handle))
    patients = {split: {r["patient_id"] for r in split_rows} for split, split_rows in fitted.items()}
    assert fitted["validation"] and fitted["training"] and not patients["validation"] & patients["training"]
    assert not (patients["validation"] | patients["training"]) & {r["patient_id"] for r in rows}
    refit = fit_calibration(
        [{**r, **{k: float(r[k] or "nan") for k in float_columns}} for r in fitted["validation"] + fitted["training"]],
        by_patient=True,
    )
    stored = artifact.model["region_calibration"]
    assert set(stored) == set(refit)
    for cls, by_time in refit.items():
        assert stored[cls] == pytest.approx(by_time)
    # so is the region kinetics model, from the feature columns written beside them
    model = fit_region_model(fitted["validation"] + fitted["training"], alpha=0.3, min_volume_ml={"lesions": 4.0})
    assert artifact.model["region_model"] == model
    assert artifact.model["fold"] == 0 and artifact.model["training_cohort"]["n_patients"] == 3
    # rerunning the finished run resumes from last.ckpt and trains no further
    again = _train(tmp_path, tiny_prepared, f"out={out}", "evaluate=false")
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_artifact(out / "model").metrics["global_step"] == artifact.metrics["global_step"]


def test_two_process_cpu_ddp_run_finishes(tmp_path: Path, tiny_prepared: tuple[Path, Path]) -> None:
    out = tmp_path / "ddp"
    done = _train(
        tmp_path,
        tiny_prepared,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.max_steps=2",
        f"out={out}",
        "evaluate=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model" / "weights.pt").is_file()


def test_two_trial_optuna_sweep_runs(tmp_path: Path, tiny_prepared: tuple[Path, Path]) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    done = _train(
        tmp_path,
        tiny_prepared,
        "-m",
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_steps=2",
        "evaluate=false",
        f"paths.output_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = sorted((tmp_path / "train" / "tiny" / "sweep").glob("*/model/weights.pt"))
    assert len(trials) == 2  # one run folder per trial


def test_missing_prepared_folder_is_a_clear_error(tmp_path: Path) -> None:
    done = _train(tmp_path, (tmp_path / "no_cohort", tmp_path / "no_prepared"), f"out={tmp_path}/run")
    assert done.returncode != 0
    assert "no_prepared" in done.stderr
    assert LudlError.__name__  # the message is a LudlError's, printed as one line
