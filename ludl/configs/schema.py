"""Structured schemas of the job configs: the type of every key, so Hydra refuses unknown keys and wrong types.

Each job's primary YAML lists ``<job>_schema`` first in its defaults; the YAML files hold every value and its
comment (one place), these dataclasses only the types (`MISSING` until the YAML fills them). `register_schemas`
puts them in Hydra's ConfigStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

__all__ = ["JOB_SCHEMAS", "register_schemas"]


@dataclass
class PathsConf:
    """``paths/``: output root and kernel cache."""

    output_dir: str = MISSING
    kernel_cache_dir: str | None = MISSING


@dataclass
class DosimetryConf:
    """``dosimetry/``: the fields of `ludl.dosimetry.options.DosimetryOptions` (validated there)."""

    tia_mode: str = MISSING
    model: str = MISSING
    dose_method: str = MISSING
    pvc: str = MISSING
    reference_timepoint: float | None = MISSING
    kernel_cache_dir: str | None = MISSING


@dataclass
class ValidateConf:
    """``ludl validate``."""

    cohort: str | None = MISSING
    deep: bool | None = MISSING


@dataclass
class SynthOverridesConf:
    """``synth.yaml`` ``overrides``: shortcuts over the priors and the preset; free mappings for the rest."""

    shared_variance_fraction: float | None = MISSING
    timepoints_h: list[float] | None = MISSING
    activity_mbq: float | None = MISSING
    max_lesions: int | None = MISSING
    image_format: str | None = MISSING
    priors: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass
class SynthConf:
    """``ludl synth``; ``preset`` is the ``preset/`` group (its fields are checked by `SynthPreset`)."""

    paths: PathsConf = field(default_factory=PathsConf)
    preset: Any = MISSING
    n_patients: int = MISSING
    seed: int = MISSING
    out: str = MISSING
    images: bool = MISSING
    preview: bool = MISSING
    workers: int | None = MISSING
    overwrite: bool = MISSING
    overrides: SynthOverridesConf = field(default_factory=SynthOverridesConf)


@dataclass
class DosimetryJobConf:
    """``ludl dosimetry``."""

    paths: PathsConf = field(default_factory=PathsConf)
    dosimetry: DosimetryConf = field(default_factory=DosimetryConf)
    cohort: str | None = MISSING
    patient: str | None = MISSING
    cycle: int = MISSING
    out: str = MISSING
    overwrite: bool = MISSING


@dataclass
class PrepareConf:
    """``ludl prepare``."""

    paths: PathsConf = field(default_factory=PathsConf)
    dosimetry: DosimetryConf = field(default_factory=DosimetryConf)
    cohort: str | None = MISSING
    out: str = MISSING
    shard: str = MISSING
    workers: int | None = MISSING
    overwrite: bool = MISSING
    n_folds: int = MISSING
    seed: int = MISSING
    nifti: bool = MISSING
    stp_baselines: bool = MISSING


@dataclass
class PhantomGeometryConf:
    """``phantom.yaml`` ``phantom``: grid, frame times, activity and noise."""

    shape_zyx: list[int] = MISSING
    spacing_zyx_mm: list[float] = MISSING
    times_h: list[float] = MISSING
    injected_mbq: float = MISSING
    noise_cv: float = MISSING


@dataclass
class PhantomFitConf:
    """``phantom.yaml`` ``fit``."""

    model: str = MISSING


@dataclass
class PhantomConf:
    """``ludl phantom``."""

    paths: PathsConf = field(default_factory=PathsConf)
    seed: int = MISSING
    out: str = MISSING
    kernel_cache_dir: str | None = MISSING
    phantom: PhantomGeometryConf = field(default_factory=PhantomGeometryConf)
    fit: PhantomFitConf = field(default_factory=PhantomFitConf)


# job name → its schema (stored as "<job>_schema")
JOB_SCHEMAS: dict[str, type] = {
    "synth": SynthConf,
    "validate": ValidateConf,
    "dosimetry": DosimetryJobConf,
    "prepare": PrepareConf,
    "phantom": PhantomConf,
}


def register_schemas() -> None:
    """Store every job schema in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for job, schema in JOB_SCHEMAS.items():
        store.store(name=f"{job}_schema", node=schema)


@dataclass
class TrainDemoConf:
    """``train.yaml`` ``demo``: the embedded demo cohort."""

    preset: str = MISSING
    n_patients: int = MISSING
    seed: int = MISSING
    n_folds: int = MISSING
    workers: int | None = MISSING
    cache_dir: str = MISSING


@dataclass
class TrainInferenceConf:
    """``train.yaml`` ``inference``: whole-volume prediction (`ludl.training.inference.VolumePredictor`)."""

    roi_size_zyx: list[int] | None = MISSING
    sw_batch_size: int = MISSING
    overlap: float = MISSING
    sw_device: str | None = MISSING
    device: str | None = MISSING
    pad_multiple: int = MISSING


@dataclass
class TrainRegionModelConf:
    """``train.yaml`` ``calibration.region_model``: the region kinetics model (`ludl.models.region_model`)."""

    enabled: bool = MISSING
    alpha: float = MISSING


@dataclass
class TrainCalibrationConf:
    """``train.yaml`` ``calibration``: region-mean factors from the validation fold (`ludl.models.calibration`)."""

    enabled: bool = MISSING
    by_patient: bool = MISSING
    shrink: bool = MISSING
    min_volume_ml: dict[str, float] | None = MISSING
    fit_on: list[str] = MISSING
    region_model: TrainRegionModelConf = field(default_factory=TrainRegionModelConf)


@dataclass
class TrainResponseConf:
    """``train.yaml`` ``response``: the non-response head's second stage."""

    enabled: bool = MISSING
    steps: int = MISSING
    lr: float = MISSING
    hidden: int = MISSING
    focal_gamma: float = MISSING


@dataclass
class TrainConf:
    """``python train.py``; the groups (data, model, loss, optim, trainer, logger, callbacks) are ``_target_``
    configs checked where they are instantiated."""

    paths: PathsConf = field(default_factory=PathsConf)
    data: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    name: str = MISSING
    seed: int = MISSING
    cohort: str | None = MISSING
    prepared: str | None = MISSING
    out: str = MISSING
    evaluate: bool = MISSING
    n_boot: int = MISSING
    n_dose_slices: int = MISSING
    demo: TrainDemoConf = field(default_factory=TrainDemoConf)
    inference: TrainInferenceConf = field(default_factory=TrainInferenceConf)
    calibration: TrainCalibrationConf = field(default_factory=TrainCalibrationConf)
    response: TrainResponseConf = field(default_factory=TrainResponseConf)


JOB_SCHEMAS["train"] = TrainConf


@dataclass
class EvaluateConf:
    """``ludl evaluate``: re-score a training run's held-out predictions (`ludl.evaluation.job.run_evaluate`)."""

    run: str | None = MISSING
    prepared: str | None = MISSING
    cohort: str | None = MISSING
    fold: int | None = MISSING
    out: str | None = MISSING
    n_boot: int = MISSING
    seed: int = MISSING


JOB_SCHEMAS["evaluate"] = EvaluateConf


@dataclass
class InferInferenceConf:
    """``infer.yaml`` ``inference``: the network pass (`ludl.inference.Predictor`)."""

    roi_size_zyx: list[int] | None = MISSING
    sw_batch_size: int = MISSING
    overlap: float = MISSING
    device: str = MISSING
    sw_device: str | None = MISSING
    tta: bool = MISSING
    allow_time_extrapolation: bool = MISSING
    min_lesion_ml: float = MISSING


@dataclass
class InferConf:
    """``python infer.py``: single-scan inference with a model artifact (one scan or a cohort batch)."""

    paths: PathsConf = field(default_factory=PathsConf)
    artifact: Any = MISSING  # one model artifact folder or a list (fold ensemble)
    out: str = MISSING
    spect: Any = MISSING  # a folder/file, or a list of bed folders
    ct: str | None = MISSING
    pet: str | None = MISSING
    pet_ct: str | None = MISSING
    time_h: float | None = MISSING
    injected_mbq: float | None = MISSING
    fwhm_mm: float | None = MISSING
    labels: str | None = MISSING
    label_names: dict[str, int] | None = MISSING
    sensitivity_cps_per_mbq: float | None = MISSING
    acquisition_s: float | None = MISSING
    cycle: int = MISSING
    cohort: str | None = MISSING
    patient: str = MISSING
    timepoint_h: float = MISSING
    inference: InferInferenceConf = field(default_factory=InferInferenceConf)
    dicom: bool = MISSING
    report: bool = MISSING
    keep_identifiers: bool = MISSING


JOB_SCHEMAS["infer"] = InferConf
