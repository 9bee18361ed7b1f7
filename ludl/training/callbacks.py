"""Training callbacks: exponential moving average of the weights (optional), image/table logging to wandb."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

__all__ = ["EMA_KEY", "EmaCallback", "SliceImages"]

EMA_KEY = "ema_state_dict"  # the averaged weights in a checkpoint (tensors only: weights_only loading works)


class EmaCallback(pl.Callback):
    """Keeps an exponential moving average of the module's floating-point weights; validates with it.

    The raw weights stay in the checkpoint's ``state_dict`` (so a resume continues the same run) and the averaged
    ones go under `EMA_KEY`; prediction after training uses the averaged weights when present.

    Args:
        decay: weight of the past per step (0.999: an average over ≈ 1,000 steps).
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {}
        self._backup: dict[str, torch.Tensor] = {}

    def _floating(self, module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v for k, v in module.state_dict().items() if v.is_floating_point()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Fold the new weights into the average."""
        with torch.no_grad():
            for key, value in self._floating(pl_module).items():
                if key not in self.shadow:
                    self.shadow[key] = value.detach().clone()
                else:
                    self.shadow[key].lerp_(value.detach(), 1.0 - self.decay)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validate with the averaged weights."""
        if self.shadow:
            self._backup = {k: v.detach().clone() for k, v in self._floating(pl_module).items()}
            pl_module.load_state_dict(self.shadow, strict=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Back to the raw weights for training."""
        if self._backup:
            pl_module.load_state_dict(self._backup, strict=False)
            self._backup = {}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Store the average beside the raw weights."""
        if self.shadow:
            checkpoint[EMA_KEY] = {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Resume the average."""
        saved = checkpoint.get(EMA_KEY)
        if saved:
            self.shadow = {k: v.clone().to(pl_module.device) for k, v in saved.items()}


class SliceImages(pl.Callback):
    """Logs a coronal slice of predicted vs ground-truth dose and segmentation of the first validation volume to
    wandb (when the logger is a `WandbLogger`; nothing otherwise).

    Args:
        every_n_epochs: how often.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        super().__init__()
        self.every_n_epochs = max(1, int(every_n_epochs))

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Mapping[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Slice images of the epoch's first validation volume."""
        from pytorch_lightning.loggers import WandbLogger

        logger = trainer.logger
        if batch_idx != 0 or not isinstance(logger, WandbLogger) or trainer.sanity_checking:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        with torch.inference_mode():
            module: Any = pl_module  # a DoseLightningModule: its predictor and net
            out = module.predictor(module.net, batch)
        y = batch["dose_gy"].shape[3] // 2
        ref = batch["dose_gy"][0, 0, :, y].float().cpu().numpy()
        pred = out.dose_gy[0, 0, :, y].float().cpu().numpy()
        vmax = float(max(ref.max(), 1e-6))
        seg = out.seg_logits[0].argmax(0)[:, y].cpu().numpy().astype("float32")
        ref_seg = batch["classes"][0, 0, :, y].cpu().numpy().astype("float32")
        logger.log_image(
            key="val/slices",
            images=[
                pred[::-1] / vmax,
                ref[::-1] / vmax,
                seg[::-1] / max(seg.max(), 1.0),
                ref_seg[::-1] / max(ref_seg.max(), 1.0),
            ],
            caption=["dose (network)", "dose (multi-TP)", "segmentation (network)", "segmentation (reference)"],
        )
