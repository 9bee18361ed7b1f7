"""`train(cfg) -> TrainResult`: fit DoseNet on a prepared cohort, predict the held-out fold, write the artifact.

The config is the composed ``train.yaml`` (`ludl/configs/train.yaml`): data module, trainer, logger and callbacks
are built with ``hydra.utils.instantiate`` (``_target_``); the LightningModule gets plain dicts. A run folder holds
``checkpoints/`` (best + last), ``predictions/`` (regions.csv, segmentation.csv, patients.csv and the uncalibrated
rows the region calibration was fitted on: validation_regions.csv, and training_regions.csv where
``calibration.fit_on`` names the training patients) and ``model/`` (the artifact). Rerunning the same config in the same
run folder resumes from ``checkpoints/last.ckpt`` (same global step, same optimiser state); a finished run is not
trained again.

Scoring that needs the layers above training (the single-scan partial-volume correction of ``ludl.dosimetry``, the
region classes of the STP table) comes in as `RegionScoring` hooks; evaluation against the baselines is the
caller's (``train.py`` at the repository root calls ``ludl.evaluation.evaluate``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ludl.errors import LudlError
from ludl.io.outcomes import load_outcomes
from ludl.io.provenance import dataset_provenance
from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.calibration import fit_calibration
from ludl.models.network import DoseNet, DoseNetOutput
from ludl.models.region_model import calibrate_rows, fit_region_model
from ludl.models.uncertainty import fit_uncertainty, held_out_coverage
from ludl.training.artifact import save_artifact
from ludl.training.callbacks import EMA_KEY
from ludl.training.module import DoseLightningModule
from ludl.training.predict import (
    PATIENT_COLUMNS,
    REGION_COLUMNS,
    SEGMENTATION_COLUMNS,
    RegionScoring,
    predict_split,
    write_csv,
)
from ludl.training.response import (
    RESPONSE_TIMEPOINT_H,
    fit_response_head,
    nearest_timepoint_records,
    predict_response,
    volume_response_features,
)

__all__ = ["CheckpointError", "TrainResult", "plain", "train"]

CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
VALIDATION_REGIONS = "validation_regions.csv"  # the validation fold's uncalibrated region rows (calibration input)
TRAINING_REGIONS = "training_regions.csv"  # the training patients' uncalibrated rows (fit_on: [val, train])
CALIBRATION_SPLITS: tuple[str, ...] = ("val", "train")  # whose whole volumes calibration.fit_on may name


@dataclass(frozen=True)
class Calibration:
    """The single-scan path's region calibration: class factors and the region kinetics model over them."""

    factors: dict[str, dict[str, float]]
    region_model: dict[str, Any] | None

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows calibrated (as they are when nothing was fitted)."""
        return calibrate_rows(rows, self.factors, self.region_model) if self.factors or self.region_model else rows


class CheckpointError(LudlError):
    """A checkpoint that cannot be resumed from (truncated, corrupt, or not a ludl checkpoint)."""


@dataclass
class TrainResult:
    """What a training run produced (paths are None where a step did not run, e.g. on DDP ranks > 0)."""

    run_dir: Path
    global_step: int
    best_checkpoint: Path | None = None
    artifact_dir: Path | None = None
    predictions_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    dose_slices: list[dict[str, Any]] = field(default_factory=list)


def plain(node: Any) -> Any:
    """A config node as plain Python containers (resolved)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _check_resumable(path: Path) -> None:
    """Refuse a truncated or corrupt last checkpoint before Lightning tries it (it would fail obscurely)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError … for bad files
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(err).__name__}); delete it to start the run again, or restore "
            "it from a copy to resume"
        ) from err
    if not isinstance(state, dict) or "state_dict" not in state or "global_step" not in state:
        raise CheckpointError(f"{path} is not a ludl training checkpoint; delete it or point run_dir elsewhere")


def _build_trainer(cfg: Any, run_dir: Path) -> pl.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    logger_cfg = cfg.get("logger")
    loggers = [instantiate(c) for c in (logger_cfg or {}).values() if c is not None]
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir)
    )
    return trainer


def _best_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The module state of a checkpoint, the EMA average where one was kept."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = dict(state["state_dict"])
    weights.update(state.get(EMA_KEY) or {})
    return weights


def _device(trainer: pl.Trainer) -> torch.device:
    device = trainer.strategy.root_device
    return device if device.type != "cpu" else torch.device("cpu")


def _dose_slice(batch: Mapping[str, Any], out: DoseNetOutput, record: Any) -> dict[str, Any]:
    """Network and ground-truth dose volumes (z, y, x) of one scan, for the report page's slices."""
    return {
        "case_id": record.case_id,
        "patient_id": record.patient_id,
        "timepoint_h": float(batch["timepoint_h"][0]),
        "spacing_zyx_mm": [float(s) for s in batch["spacing_zyx_mm"].reshape(-1, 3)[0].tolist()],
        "network_gy": out.dose_gy[0, 0].float().cpu().numpy(),
        "ground_truth_gy": batch["dose_gy"][0, 0].float().cpu().numpy(),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median |error| and bias (%) of network region means vs the corrected ground truth, per scan time and kind."""
    out: dict[str, Any] = {}
    for key in sorted({(float(r["timepoint_h"]), "lesion" if r["kind"] == "lesion" else "organ") for r in rows}):
        errs = [
            100.0 * (r["net_mean_dose_gy"] / r["gt_mean_dose_gy"] - 1.0)
            for r in rows
            if (float(r["timepoint_h"]), "lesion" if r["kind"] == "lesion" else "organ") == key
            and math.isfinite(r["gt_mean_dose_gy"])
            and r["gt_mean_dose_gy"] > 0
        ]
        if errs:
            name = f"{key[0]:g}h_{key[1]}"
            out[f"held_out/mae_{name}_pct"] = float(np.median(np.abs(errs)))
            out[f"held_out/bias_{name}_pct"] = float(np.median(errs))
    return out


def _response_stage(
    net: DoseNet, module: DoseLightningModule, dm: Any, cfg: Any, test_features: dict[str, torch.Tensor], device: Any
) -> tuple[dict[str, float], dict[str, int | None], dict[str, torch.Tensor], dict[str, Any]]:
    """Fit the response head on the training patients' frozen whole-volume outputs; P(non-response) of the test."""
    settings = dict(plain(cfg.get("response")) or {})
    cohort = cfg.get("cohort")
    labels = (load_outcomes(Path(str(cohort))) if cohort else None) or {}
    if not settings.get("enabled", True) or not labels:
        return {}, labels, {}, {"response": "skipped: no outcomes.csv labels" if not labels else "disabled"}
    records = nearest_timepoint_records(dm.records["train"], RESPONSE_TIMEPOINT_H)
    loader = dm.volume_dataloader("train", records)
    feats, ys = [], []
    net.eval()
    with torch.inference_mode():
        for batch in loader:
            label = labels.get(str(batch["patient_id"][0]))
            if label is None:
                continue
            moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            feats.append(volume_response_features(moved, module.predictor(net, moved)))
            ys.append(float(label))
    if len(set(ys)) < 2:
        return {}, labels, {}, {"response": "skipped: the training patients hold one outcome class only"}
    head = fit_response_head(
        torch.cat(feats),
        torch.tensor(ys),
        steps=int(settings.get("steps", 300)),
        lr=float(settings.get("lr", 1e-2)),
        hidden=int(settings.get("hidden", 16)),
        gamma=float(settings.get("focal_gamma", 0.0)),
        seed=int(cfg.get("seed", 0)),
    )
    patients = sorted(test_features)
    probs: Any = predict_response(head, torch.cat([test_features[p] for p in patients])) if patients else []
    info = {"response": f"fitted on {len(ys)} training patients", "n_response_features": int(feats[0].shape[1])}
    state = {f"response.{k}": v for k, v in head.state_dict().items()}
    return dict(zip(patients, (float(p) for p in probs), strict=True)), labels, state, info


def _model_document(
    cfg: Any,
    dm: Any,
    module: DoseLightningModule,
    info: Mapping[str, Any],
    calibration: Calibration,
) -> dict[str, Any]:
    descriptor = dm.descriptor
    network = plain(cfg.model)
    return {
        "network": network,
        "normalisation": module.net.normalisation.to_dict(),
        "classes": [{"index": c.index, "name": c.name, "kind": c.kind} for c in SEGMENTATION_CLASSES],
        "training_timepoints_h": sorted(float(t) for t in descriptor.timepoints_h),
        "kernel": {
            "medium": (network.get("physics") or {}).get("medium", "soft_tissue"),
            "nuclide": (network.get("physics") or {}).get("nuclide", "Lu-177"),
            "spacings_zyx_mm": sorted({tuple(float(v) for v in s["spacing_zyx_mm"]) for s in descriptor.spacings}),
        },
        "training_cohort": descriptor.to_dict(),
        "fold": int(dm.fold),
        "response": dict(info),
        "response_timepoint_h": RESPONSE_TIMEPOINT_H,
        "region_calibration": calibration.factors,
        "region_model": calibration.region_model or None,
        "inference": plain(cfg.get("inference")),  # the whole-volume window the evaluation used: Predictor's default
        "provenance": dataset_provenance(
            dm.prepared_dir,
            {
                "model": network,
                "data": plain(cfg.data),
                "loss": plain(cfg.loss),
                "optim": plain(cfg.optim),
                "seed": int(cfg.seed),
                "fold": int(dm.fold),
            },
        ).to_dict(),
    }


def _calibration_splits(cfg: Any) -> tuple[str, ...]:
    """The splits ``calibration.fit_on`` names, checked before training starts (not hours later)."""
    fit_on = tuple(str(s) for s in ((cfg.get("calibration") or {}).get("fit_on") or ("val",)))
    unknown = sorted(set(fit_on) - set(CALIBRATION_SPLITS))
    if unknown:
        raise LudlError(f"calibration.fit_on names {unknown}; give a list of {list(CALIBRATION_SPLITS)}: [val, train]")
    return fit_on


def _calibration(
    net: DoseNet,
    module: DoseLightningModule,
    dm: Any,
    cfg: Any,
    fit_on: tuple[str, ...],
    fold: int,
    scoring: Any,
    device: Any,
) -> tuple[Calibration, dict[str, dict[str, float]], dict[str, list[dict[str, Any]]]]:
    """Region-mean factors per class and scan time (`ludl.models.calibration`; {} when disabled) and the region
    kinetics model (`ludl.models.region_model`; None when disabled) from the whole volumes of the splits
    ``calibration.fit_on`` names, the 90 % interval half-widths of the calibrated means (`ludl.models.uncertainty`,
    validation patients only: training errors are optimistic) and the uncalibrated rows per split; all empty
    without validation patients."""
    if not dm.records.get("val"):
        return Calibration({}, None), {}, {}
    settings = dict(plain(cfg.get("calibration")) or {})
    enabled = bool(settings.get("enabled", False))
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in ("val", *(s for s in fit_on if s != "val" and enabled)):
        loader = dm.volume_dataloader(split)
        rows[split] = predict_split(net, module.predictor, loader, dm.records[split], fold, scoring, None, device)[0]
    # A factor is a median over patients, one vote each (a patient's lesions share its kinetics; the pooled median
    # followed the patient with the most lesions). With 4 validation patients it carried ±10 % of patient sampling
    # (docs/training.md "Region calibration"); the training patients share the structural bias (τ, the single-scan
    # GTM), so fit_on: [val, train] lets them vote too.
    fit_rows = [row for split in fit_on for row in rows.get(split, [])]
    factors = (
        fit_calibration(
            fit_rows,
            by_patient=bool(settings["by_patient"]),
            shrink=bool(settings["shrink"]),
            min_volume_ml=settings["min_volume_ml"],
        )
        if enabled
        else {}
    )
    model_settings = settings["region_model"]
    region_model = (
        fit_region_model(fit_rows, alpha=float(model_settings["alpha"]), min_volume_ml=settings["min_volume_ml"])
        if enabled and model_settings["enabled"]
        else None
    )
    calibration = Calibration(factors, region_model)
    return calibration, fit_uncertainty(calibration.apply(rows["val"])), rows


def train(cfg: Any, scoring: RegionScoring | None = None) -> TrainResult:
    """Fit (or resume) the run of `cfg`, then — on rank 0 — predict the held-out fold and write the artifact."""
    fit_on = _calibration_splits(cfg)
    run_dir = Path(str(cfg.out))
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = instantiate(cfg.data)
    module = DoseLightningModule(
        model=plain(cfg.model),
        loss=plain(cfg.loss),
        optimizer=plain(cfg.optim.optimizer),
        scheduler=plain(cfg.optim.get("scheduler")),
        inference=plain(cfg.inference),
        time_lr_scale=float(cfg.optim.get("time_lr_scale", 1.0)),
    )
    trainer = _build_trainer(cfg, run_dir)
    last = run_dir / CHECKPOINTS / LAST_CHECKPOINT
    if last.is_file():
        _check_resumable(last)
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
    result = TrainResult(run_dir, int(trainer.global_step))
    if not trainer.is_global_zero:
        return result
    ckpt = trainer.checkpoint_callback
    best_path = str(getattr(ckpt, "best_model_path", "") or "")
    best = Path(best_path) if best_path else None
    if best is None or not best.is_file():
        best = last if last.is_file() else None
    if best is not None:
        module.load_state_dict(_best_state(best))
    result.best_checkpoint = best
    device = _device(trainer)
    net = module.net.to(device)
    fold = int(dm.fold)
    test_features: dict[str, tuple[float, torch.Tensor]] = {}
    slices: list[dict[str, Any]] = []

    def on_volume(batch: Mapping[str, Any], out: DoseNetOutput, record: Any) -> None:
        tp = float(batch["timepoint_h"][0])
        if len(slices) < int(cfg.get("n_dose_slices", 2)) and math.isclose(tp, RESPONSE_TIMEPOINT_H):
            slices.append(_dose_slice(batch, out, record))
        if int(record.cycle) == 1:
            gap = abs(tp - RESPONSE_TIMEPOINT_H)
            if record.patient_id not in test_features or gap < test_features[record.patient_id][0]:
                test_features[record.patient_id] = (gap, volume_response_features(batch, out))

    region_rows, seg_rows = predict_split(
        net, module.predictor, dm.test_dataloader(), dm.records["test"], fold, scoring, on_volume, device
    )
    calibration, uncertainty, uncalibrated = _calibration(net, module, dm, cfg, fit_on, fold, scoring, device)
    region_rows = calibration.apply(region_rows)
    probs, labels, response_state, info = _response_stage(
        net, module, dm, cfg, {p: f for p, (_, f) in test_features.items()}, device
    )
    predictions = run_dir / "predictions"
    write_csv(predictions / "regions.csv", region_rows, REGION_COLUMNS)
    write_csv(predictions / "segmentation.csv", seg_rows, SEGMENTATION_COLUMNS)
    # uncalibrated: what the factors were fitted on (refit offline without the held-out fold)
    for split, name in (("val", VALIDATION_REGIONS), ("train", TRAINING_REGIONS)):
        if uncalibrated.get(split):
            write_csv(predictions / name, uncalibrated[split], REGION_COLUMNS)
    patients = sorted({(r.patient_id, r.cycle) for r in dm.records["test"]})
    write_csv(
        predictions / "patients.csv",
        [
            {
                "patient_id": p,
                "cycle": c,
                "fold": fold,
                "p_non_response": probs.get(p, math.nan) if c == 1 else math.nan,
                "non_response": labels.get(p),
            }
            for p, c in patients
        ],
        PATIENT_COLUMNS,
    )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics.update(_summary(region_rows))
    metrics.update(held_out_coverage(region_rows, uncertainty))
    metrics["global_step"] = int(trainer.global_step)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update(response_state)
    document = _model_document(cfg, dm, module, info, calibration)
    document["region_uncertainty"] = uncertainty
    result.artifact_dir = save_artifact(run_dir / "model", state, document, metrics)
    result.predictions_dir = predictions
    result.metrics = metrics
    result.dose_slices = slices
    return result
