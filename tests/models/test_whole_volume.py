"""The whole-volume helpers shared by training and inference: region means, mirrored batches and their outputs."""

from __future__ import annotations

import math

import numpy as np
import torch

from ludl.models.network import DoseNetOutput
from ludl.models.whole_volume import flipped_batch, region_means, unflip_output


def test_region_means_equal_numpy_means() -> None:
    rng = np.random.default_rng(0)
    dose = rng.random((6, 7, 8))
    regions = rng.integers(0, 4, (6, 7, 8)).astype(np.int32)
    got = region_means(torch.as_tensor(dose), torch.as_tensor(regions), torch.tensor([1, 3, 0, 9]))
    assert np.allclose(got[:2].numpy(), [dose[regions == 1].mean(), dose[regions == 3].mean()], rtol=1e-12)
    assert math.isnan(float(got[2])) and math.isnan(float(got[3]))  # value 0 (padding) and an absent region


def test_mirroring_twice_is_the_identity_and_classes_swap_back() -> None:
    volume = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 1, 2, 3, 4)
    batch = {"activity_mbq_per_ml": volume, "time_h": torch.tensor([24.0])}
    mirrored = flipped_batch(batch, (4,))
    assert torch.equal(mirrored["activity_mbq_per_ml"][0, 0, :, :, 0], volume[0, 0, :, :, -1])
    assert torch.equal(flipped_batch(mirrored, (4,))["activity_mbq_per_ml"], volume)
    assert torch.equal(mirrored["time_h"], batch["time_h"])
    # 3 classes, 1 ↔ 2 a left/right pair: the mirrored patient's class-1 logits are the real patient's class 2
    seg = torch.randn(1, 3, 2, 3, 4)
    swap = torch.tensor([0, 2, 1])
    mirrored_out = DoseNetOutput(
        torch.flip(seg[:, [0, 2, 1]], [4]), torch.flip(volume, [4]), None, None, None, None, torch.zeros(1, 4)
    )
    back = unflip_output(mirrored_out, (4,), swap)
    assert torch.equal(back.seg_logits, seg) and torch.equal(back.dose_gy, volume)
