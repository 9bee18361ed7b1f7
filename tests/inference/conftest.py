"""A tiny trained model (seconds on a CPU) on a 3-patient tiny cohort, and a held-out case as `ScanInputs`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class TinyRun:
    """The cohort, its prepared folder and a finished tiny training run (fold 0 held out)."""

    cohort: Path
    prepared: Path
    run_dir: Path

    @property
    def artifact(self) -> Path:
        return self.run_dir / "model"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Synthesise, prepare and train (experiment=tiny) once; the held-out evaluation scores with
    `ludl.inference.regions.correct_single_scan`, as the root train.py does."""
    from hydra import compose, initialize_config_module

    from ludl.configs.schema import register_schemas
    from ludl.dosimetry.baselines import region_class
    from ludl.dosimetry.prepare import run_prepare
    from ludl.inference.regions import correct_single_scan
    from ludl.synth.cohort import run_synth
    from ludl.training.predict import RegionScoring
    from ludl.training.train import train

    root = tmp_path_factory.mktemp("tiny_infer")
    cohort, prepared, run_dir = root / "cohort", root / "prepared", root / "run"
    run_synth("tiny", 3, 5, cohort, workers=1)
    assert run_prepare(cohort, prepared, workers=1, n_folds=3, seed=0).ok
    register_schemas()
    with initialize_config_module(config_module="ludl.configs", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=tiny",
                f"cohort={cohort}",
                f"prepared={prepared}",
                f"out={run_dir}",
                "evaluate=false",
                "data.num_workers=0",
            ],
        )
    train(cfg, RegionScoring(correct=correct_single_scan, region_class=region_class))
    return TinyRun(cohort, prepared, run_dir)


def held_out_inputs(prepared: Path, case_id: str, timepoint_h: float) -> Any:
    """A held-out prepared case's time point as `ScanInputs` (`held_out_scan_inputs`) with its reference regions
    narrowed to those training scores: a finite corrected and uncorrected ground truth."""
    from ludl.inference.calibration import held_out_scan_inputs
    from ludl.io.prepared import read_case

    inputs, _ = held_out_scan_inputs(prepared, case_id, timepoint_h)
    truth = {str(r["region"]): r for r in read_case(prepared / "cases" / case_id).sidecar.get("regions", ())}

    def finite(row: Any, key: str) -> bool:
        value = row.get(key)
        return value is not None and math.isfinite(float(value))

    reference = inputs.reference_labels
    values = {
        n: v
        for n, v in reference.values.items()
        if finite(truth[n], "mean_dose_gy") and finite(truth[n], "mean_dose_uncorrected_gy")
    }
    return dataclasses.replace(inputs, reference_labels=dataclasses.replace(reference, values=values))


@dataclass(frozen=True)
class DicomPatient:
    """One synthetic tiny patient with its SPECT as DICOM NM (CT, PET, labels NIfTI) and its manifest values."""

    folder: Path
    spect: Path
    ct: Path
    pet: Path
    pet_ct: Path
    labels: Path
    time_h: float
    injected_mbq: float
    fwhm_mm: float
    label_names: dict[str, int]


@pytest.fixture(scope="session")
def dicom_patient(tmp_path_factory: pytest.TempPathFactory) -> DicomPatient:
    """`ludl synth` tiny, one patient, image_format=dicom; the 24 h scan."""
    import csv

    from ludl.io.cohort import load_cohort_config
    from ludl.synth.cohort import run_synth

    root = tmp_path_factory.mktemp("dicom_patient") / "cohort"
    run_synth("tiny", 1, 5, root, workers=1, overrides={"image_format": "dicom"})
    with (root / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    spect = next(r for r in rows if r["role"] == "spect" and r["timepoint_h"] == "24")
    case = root / "SYN0001" / "c1"
    return DicomPatient(
        folder=case,
        spect=root / spect["path"],
        ct=case / "ct_24h.nii.gz",
        pet=case / "pet.nii.gz",
        pet_ct=case / "pet_ct.nii.gz",
        labels=case / "labels_24h.nii.gz",
        time_h=float(spect["time_h"]),
        injected_mbq=float(spect["injected_mbq"]) - float(spect["residual_mbq"]),
        fwhm_mm=float(spect["fwhm_mm"]),
        label_names={str(k): int(v) for k, v in load_cohort_config(root).labels.items()},
    )
