"""Stand-ins for the training tests: interface batches (docs/architecture.md "The network") and a tiny data module.

Only the tests use these; the real data module is `ludl.data.PreparedDataModule`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ludl.io.regions import SEGMENTATION_CLASSES, class_index
from ludl.physics.dose import dose_from_tia, voxel_tia_mbq_h
from ludl.physics.kernels import voxel_s_kernel

SPACING = (6.0, 6.0, 6.0)
N_CLASSES = len(SEGMENTATION_CLASSES)
TINY_MODEL: dict[str, Any] = {
    "backbone": {"_target_": "ludl.models.backbones.dynunet", "filters": [4, 8, 8]},
    "feature_channels": 4,
    "dose_mode": "tau",
}


def _blob(shape: tuple[int, int, int], center: tuple[float, ...], radius: float) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return np.exp(-((z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2) / (2 * radius**2))


def make_sample(shape: tuple[int, int, int] = (16, 16, 16), time_h: float = 24.0, seed: int = 0) -> dict[str, Any]:
    """One sample: a kidney-like blob and a lesion in background; target dose from known mono-exponential τ."""
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-1.5, 1.5, 3)
    kidney = _blob(shape, tuple(np.array([5.0, 6.0, 6.0]) + shift), 2.5)
    lesion = _blob(shape, tuple(np.array([11.0, 10.0, 9.0]) - shift), 1.5)
    a = 0.01 + 0.2 * kidney + 1.0 * lesion
    tau = np.zeros(shape)
    for weight, t_eff in ((1.0, 20.0), (kidney, 40.0), (lesion, 120.0)):
        lam = np.log(2) / t_eff
        tau = tau * (1 - weight) + weight * np.exp(lam * time_h) / lam
    tia = a * tau
    dose = dose_from_tia(voxel_tia_mbq_h(tia, SPACING), voxel_s_kernel(SPACING), density_g_per_ml=np.ones(shape))
    classes = np.zeros(shape, dtype=np.int64)
    classes[kidney > 0.5] = class_index("kidney_left")
    classes[lesion > 0.5] = class_index("lesion")
    regions = np.zeros(shape, dtype=np.int32)
    regions[kidney > 0.5] = 1
    regions[lesion > 0.5] = 2
    means = [float(dose[regions == v].mean()) for v in (1, 2)]
    f32 = lambda x: torch.tensor(np.asarray(x)[None], dtype=torch.float32)  # noqa: E731
    return {
        "activity_mbq_per_ml": f32(a),
        "suv": f32(1.0 + 20.0 * a),
        "has_pet": torch.tensor(True),
        "density_g_per_ml": f32(np.ones(shape)),
        "time_h": torch.tensor(time_h, dtype=torch.float32),
        "injected_gbq": torch.tensor(7.4, dtype=torch.float32),
        "spacing_zyx_mm": torch.tensor(SPACING, dtype=torch.float32),
        "dose_gy": f32(dose),
        "tia_mbq_h_per_ml": f32(tia),
        "classes": torch.tensor(classes[None]),
        # an institution that contoured the left kidney and lesions only (masked Dice + CE)
        "labelled": torch.tensor(
            [c.index in (0, class_index("kidney_left"), class_index("lesion")) for c in SEGMENTATION_CLASSES]
        ),
        "gt_fov": torch.ones((1, *shape), dtype=torch.bool),
        "valid": torch.ones((1, *shape), dtype=torch.bool),
        "regions": torch.tensor(regions[None]),
        "region_values": torch.tensor([1, 2], dtype=torch.int32),
        "region_dose_gy": torch.tensor([m * 1.1 for m in means], dtype=torch.float32),  # "corrected": 10 % up
        "region_dose_uncorrected_gy": torch.tensor(means, dtype=torch.float32),
        "region_is_lesion": torch.tensor([False, True]),
        "case_id": f"P{seed:03d}_c1",
        "patient_id": f"P{seed:03d}",
        "cycle": torch.tensor(1),
        "timepoint_h": torch.tensor(time_h),
    }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors batch first; strings as lists."""
    return {
        k: [s[k] for s in samples] if isinstance(samples[0][k], str) else torch.stack([s[k] for s in samples])
        for k in samples[0]
    }


def make_batch(n: int = 2, shape: tuple[int, int, int] = (16, 16, 16)) -> dict[str, Any]:
    """A batch of `n` samples at 24 h and 96 h alternately."""
    return collate([make_sample(shape, (24.0, 96.0)[i % 2], seed=i) for i in range(n)])


class _Samples(Dataset[dict[str, Any]]):
    def __init__(self, n: int, shape: tuple[int, int, int]) -> None:
        self.samples = [make_sample(shape, (24.0, 48.0, 96.0)[i % 3], seed=i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


class StandInDataModule(pl.LightningDataModule):
    """Fixed samples as training patches and as validation volumes."""

    def __init__(self, n: int = 4, batch_size: int = 2, shape: tuple[int, int, int] = (16, 16, 16)) -> None:
        super().__init__()
        self.train_set = _Samples(n, shape)
        self.val_set = _Samples(2, shape)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, collate_fn=collate)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return DataLoader(self.val_set, batch_size=1, collate_fn=collate)


def quiet_cpu_trainer(**kwargs: Any) -> pl.Trainer:
    """A CPU Lightning trainer without logger, progress bar or model summary (tests); `kwargs` add or override."""
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(**{**settings, **kwargs})
