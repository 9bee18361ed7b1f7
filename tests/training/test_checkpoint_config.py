"""The default callbacks keep the run's latest state in last.ckpt even when validation gets worse (Lightning's own
``save_last`` writes it only when a best checkpoint is saved, so a resumed run would have restarted from the best)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from tests.training.standins import quiet_cpu_trainer


class _Worsening(pl.LightningModule):
    """One weight; its validation loss rises every epoch, so the first epoch stays the best."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (self.w - 1.0).pow(2).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)

    def val_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)


def test_last_checkpoint_follows_the_run_and_best_the_validation_loss(tmp_path: Path) -> None:
    from ludl.configs.schema import register_schemas

    register_schemas()
    with initialize_config_module(config_module="ludl.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["prepared=/x", f"out={tmp_path}", "callbacks=default"])
    callbacks = [instantiate(cfg.callbacks[k]) for k in ("model_checkpoint", "last_checkpoint", "early_stopping")]
    trainer = quiet_cpu_trainer(max_epochs=4, callbacks=callbacks, num_sanity_val_steps=0)
    trainer.fit(_Worsening())
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert best["global_step"] == 2  # epoch 0 (2 steps): the lowest validation loss
    assert last["global_step"] == 8 == trainer.global_step  # all 4 epochs, though validation only got worse
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
