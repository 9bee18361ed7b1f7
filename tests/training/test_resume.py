"""Resume from the last checkpoint continues the same run: same global step, same optimiser state; a corrupt
checkpoint is refused with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from ludl.errors import LudlError
from ludl.training.module import DoseLightningModule
from ludl.training.train import _check_resumable
from tests.training.standins import TINY_MODEL, StandInDataModule, quiet_cpu_trainer


class _Capture(pl.Callback):
    """The optimiser state and step as training (re)starts."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.step = trainer.global_step
        self.state = (
            {k: v.clone() for k, v in trainer.optimizers[0].state_dict()["state"][0].items()}
            if (trainer.optimizers[0].state_dict()["state"])
            else {}
        )


def _fit(root: Path, max_steps: int, ckpt_path: str | None) -> tuple[pl.Trainer, _Capture]:
    torch.manual_seed(0)
    module = DoseLightningModule(model=TINY_MODEL, optimizer={"_target_": "torch.optim.AdamW", "_partial_": True})
    capture = _Capture()
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = quiet_cpu_trainer(
        max_steps=max_steps, limit_val_batches=0, callbacks=[checkpoint, capture], default_root_dir=root
    )
    trainer.fit(module, datamodule=StandInDataModule(n=8, batch_size=2), ckpt_path=ckpt_path)
    return trainer, capture


def test_resume_continues_with_the_same_step_and_optimiser_state(tmp_path: Path) -> None:
    first, _ = _fit(tmp_path, 2, None)  # "crashes" after step 2
    last = tmp_path / "last.ckpt"
    saved: dict[str, Any] = torch.load(last, weights_only=True)  # plain hyperparameters: the safe loader reads it
    assert saved["global_step"] == 2 == first.global_step
    second, capture = _fit(tmp_path, 4, str(last))
    assert capture.step == 2  # resumed at the step it stopped
    for key, value in saved["optimizer_states"][0]["state"][0].items():
        assert torch.equal(capture.state[key], value), key  # Adam moments and step count restored
    assert second.global_step == 4


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(LudlError, match=r"last\.ckpt is truncated or corrupt.*delete it"):
        _check_resumable(bad)
