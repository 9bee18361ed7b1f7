"""`DoseLightningModule`: DoseNet + the multi-task loss, optimiser/scheduler from config, whole-volume validation.

Every constructor argument is a plain mapping (the resolved config): Lightning saves them as hyperparameters, and a
checkpoint with plain hyperparameters loads with ``torch.load(weights_only=True)``. Objects (backbone, optimiser,
scheduler) are built from them with ``hydra.utils.instantiate`` (``_target_``; optimisers ``_partial_``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from ludl.errors import InputError
from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.build import build_dosenet as models_build_dosenet
from ludl.models.network import DoseNet, DoseNetOutput
from ludl.training.inference import VolumePredictor
from ludl.training.losses import dose_weight_map, masked_dice_ce, region_mean_dose_loss, relative_dose_loss
from ludl.training.metrics import region_errors, summarise_validation

__all__ = ["REGION_TARGETS", "DoseLightningModule", "LossConfig", "build_dosenet", "region_masks"]

REGION_TARGETS: tuple[str, ...] = ("uncorrected", "corrected")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the multi-task loss (``loss/`` group): segmentation, voxel dose, region mean dose.

    The voxel term is `relative_dose_loss` weighted by `dose_weight_map` (body/organ/marrow/lesion/outside) on the
    ``valid`` voxels; the region term is `region_mean_dose_loss` against the pipeline's region means:
    ``region_target="uncorrected"`` (default) the multi-TP dose map's own means, which the voxel term also fits —
    the single-scan partial-volume correction is then a GTM on the predicted TIA at prediction time (train.py's
    `RegionScoring.correct`); ``"corrected"`` the partial-volume-corrected means, for a network that reports
    corrected means by itself (then leave the GTM out: correcting twice over-states small regions).
    """

    segmentation: float = 1.0
    dose: float = 1.0
    region: float = 1.0
    dice: float = 1.0
    ce: float = 1.0
    body: float = 1.0
    organ: float = 4.0
    marrow: float = 4.0
    lesion: float = 8.0
    outside: float = 0.1
    floor_gy: float = 1.0
    region_target: str = "uncorrected"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> LossConfig:
        """From the ``loss`` config (unknown keys refused)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown loss key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        target = str(values.pop("region_target", "uncorrected"))
        if target not in REGION_TARGETS:
            raise InputError(f"unknown loss.region_target {target!r}; use one of {', '.join(REGION_TARGETS)}")
        return cls(**{k: float(v) for k, v in values.items()}, region_target=target)


def build_dosenet(config: Mapping[str, Any]) -> DoseNet:
    """A `DoseNet` from the ``model`` config (`ludl.models.build.build_dosenet`) with the canonical segmentation
    classes."""
    return models_build_dosenet(config, len(SEGMENTATION_CLASSES))


def region_masks(batch: Mapping[str, Any]) -> torch.Tensor:
    """(B, R, Z, Y, X) bool masks of the listed regions (value 0 = padding → empty)."""
    regions = batch["regions"]
    values = batch["region_values"].to(regions.device)
    view = (*values.shape, 1, 1, 1)
    return (regions == values.reshape(view)) & (values > 0).reshape(view)


def _to_plain(value: Any) -> Any:
    """OmegaConf containers as plain dicts/lists (hyperparameters must be plain for weights_only loading)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - hydra brings omegaconf
        pass
    return value


class DoseLightningModule(pl.LightningModule):
    """DoseNet trained on patches with the multi-task loss; validated on whole volumes with per-region metrics.

    Args:
        model: the ``model`` config (`build_dosenet`).
        loss: the ``loss`` config (`LossConfig`).
        optimizer: ``_target_`` + ``_partial_: true`` optimiser config (called with the parameters).
        scheduler: optional ``{scheduler: {_target_, _partial_}, interval, monitor}``; None for a constant rate.
        inference: whole-volume settings (`VolumePredictor`): ``roi_size_zyx`` (None: one forward),
            ``sw_batch_size``, ``overlap``, ``sw_device``, ``device``.
        time_lr_scale: learning-rate multiple of the scan-time MLP (FiLM): its last layer starts at 0 and must move
            τ by a factor of 2–10 between scan times within the few hundred steps of a CPU run.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        loss: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
        time_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        model, loss, optimizer, scheduler, inference = (
            _to_plain(v) for v in (model, loss, optimizer, scheduler, inference)
        )
        self.save_hyperparameters(
            {
                "model": model,
                "loss": loss,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "inference": inference,
                "time_lr_scale": float(time_lr_scale),
            }
        )
        self.time_lr_scale = float(time_lr_scale)
        self.net = build_dosenet(model)
        self.loss_config = LossConfig.from_mapping(loss)
        self.optimizer_config = dict(optimizer or {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.predictor = VolumePredictor(**dict(inference or {}))
        self._val_rows: list[dict[str, Any]] = []

    def _region_key(self) -> str:
        """The batch key of the region means the region term and validation score against."""
        return "region_dose_gy" if self.loss_config.region_target == "corrected" else "region_dose_uncorrected_gy"

    def forward(self, batch: Mapping[str, Any]) -> DoseNetOutput:
        """The network on a (patch) batch."""
        return self.net(batch)

    def losses(self, out: DoseNetOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Every loss term and their weighted sum (``loss``)."""
        c = self.loss_config
        seg = masked_dice_ce(
            out.seg_logits, batch["classes"], batch.get("labelled"), dice_weight=c.dice, ce_weight=c.ce
        )
        # Body = CT density above that of lung (≈ 0.3 g/mL): outside it (air, couch) dose is noise.
        body = batch["density_g_per_ml"] > 0.2
        weights = dose_weight_map(
            batch["classes"],
            body,
            body=c.body,
            organ=c.organ,
            marrow=c.marrow,
            lesion=c.lesion,
            outside=c.outside,
        )
        if "valid" in batch:
            weights = weights * batch["valid"].to(weights.dtype)
        dose = relative_dose_loss(out.dose_gy, batch["dose_gy"], weights, floor_gy=c.floor_gy)
        terms = {"seg": seg, "dose": dose}
        if c.region > 0 and "region_values" in batch:
            target = batch[self._region_key()].float()
            present = (batch["region_values"] > 0) & torch.isfinite(target)
            masks = region_masks(batch)
            terms["region"] = region_mean_dose_loss(
                out.dose_gy, torch.nan_to_num(target, nan=0.0), masks, present.to(masks.device), floor_gy=c.floor_gy
            )
        else:
            terms["region"] = out.dose_gy.sum() * 0.0
        terms["loss"] = c.segmentation * seg + c.dose * dose + c.region * terms["region"]
        return terms

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """One patch batch: the weighted multi-task loss."""
        terms = self.losses(self(batch), batch)
        bs = int(batch["dose_gy"].shape[0])
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items() if k != "loss"}, batch_size=bs)
        self.log("train/loss", terms["loss"].detach(), batch_size=bs, prog_bar=True)
        return terms["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """One whole volume: loss and the region mean-dose errors against the region term's ground truth."""
        out = self.predictor(self.net, batch)
        terms = self.losses(out, batch)
        self.log("val/loss", terms["loss"], batch_size=1, sync_dist=True)
        self._val_rows.extend(region_errors(out, batch, self._region_key()))

    def on_validation_epoch_end(self) -> None:
        """Bias and median |error| of region mean dose per region kind, Dice; ``val/region_mae`` is monitored."""
        summary = summarise_validation(self._val_rows)
        self._val_rows = []
        for key, value in summary.items():
            if math.isfinite(value):
                self.log(f"val/{key}", value, sync_dist=True)
        if "region_mae" not in summary or not math.isfinite(summary["region_mae"]):
            self.log("val/region_mae", 1e6, sync_dist=True)  # nothing scored: never the best checkpoint

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> DoseNetOutput:
        """A whole volume (sliding window over the network, physics on the whole volume)."""
        return self.predictor(self.net, batch)

    def configure_optimizers(self) -> Any:
        """Optimiser (and scheduler) from their ``_partial_`` configs."""
        film = list(self.net.film.parameters()) if self.net.film is not None else []
        if film and self.time_lr_scale != 1.0:
            lr = float(self.optimizer_config.get("lr", 1e-3))
            ids = {id(p) for p in film}
            rest = [p for p in self.parameters() if id(p) not in ids]
            params: Any = [{"params": rest}, {"params": film, "lr": lr * self.time_lr_scale}]
        else:
            params = self.parameters()
        optimizer = instantiate(self.optimizer_config)(params=params)
        if not self.scheduler_config:
            return optimizer
        cfg = dict(self.scheduler_config)
        scheduler = instantiate(cfg.pop("scheduler"))(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **cfg}}
