"""The data module under a real Lightning Trainer: the per-epoch seeding reaches the sampler, loaders are used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from ludl.data import PreparedDataModule
from tests.training.standins import quiet_cpu_trainer


class _Recorder(pl.LightningModule):
    """Fits nothing; remembers what each step was given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.train_seen: list[tuple[int, torch.Tensor]] = []
        self.val_shapes: list[tuple[int, ...]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.train_seen.append((self.current_epoch, batch["activity_mbq_per_ml"].clone()))
        return (self.weight * batch["activity_mbq_per_ml"].mean()).sum()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_shapes.append(tuple(batch["activity_mbq_per_ml"].shape))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_trainer_draws_the_documented_samples_each_epoch(prepared: Path) -> None:
    dm = PreparedDataModule(prepared, batch_size=2, patch_size_zyx=(12, 16, 16), samples_per_epoch=4, seed=9)
    model = _Recorder()
    trainer = quiet_cpu_trainer(
        max_epochs=2, devices=1, enable_checkpointing=False, limit_val_batches=2, num_sanity_val_steps=0
    )
    trainer.fit(model, datamodule=dm)
    assert [e for e, _ in model.train_seen] == [0, 0, 1, 1]
    dataset = dm.train_dataset()
    for step, (epoch, activity) in enumerate(model.train_seen):
        expected = [dataset.draw(epoch, 2 * (step % 2) + j)["activity_mbq_per_ml"] for j in range(2)]
        assert torch.equal(activity, torch.from_numpy(np.stack(expected)))
    assert model.val_shapes and all(s[0] == 1 and s[2:] in ((20, 24, 26), (20, 24, 28)) for s in model.val_shapes)
