"""Every backbone option builds (also by a config's `_target_`) and maps a 32³ patch to F feature channels."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from ludl.errors import InputError
from ludl.models import backbones
from ludl.models.network import DoseNet


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("dynunet", {"filters": (8, 16, 32)}),
        ("unet", {"channels": (8, 16, 32), "num_res_units": 1}),
        ("segresnet", {"init_filters": 8}),
        ("swinunetr", {"feature_size": 12}),
    ],
)
def test_backbone_forward_32(name: str, kwargs: dict) -> None:
    net = backbones.BACKBONES[name](DoseNet.in_channels_for("channel"), 6, **kwargs)
    # SwinUNETR downsamples 32×: its instance norm needs a bottleneck of more than one voxel, so it gets 64³.
    size = 64 if name == "swinunetr" else 32
    with torch.no_grad():
        out = net(torch.randn(1, 4, size, size, size))
    assert out.shape == (1, 6, size, size, size)


def test_backbones_by_target() -> None:
    for target, extra in (
        ("ludl.models.backbones.dynunet", {"filters": [8, 16, 32]}),
        ("monai.networks.nets.SegResNet", {"spatial_dims": 3, "init_filters": 8}),
    ):
        net = instantiate({"_target_": target, "in_channels": 3, "out_channels": 4, **extra})
        with torch.no_grad():
            assert net(torch.randn(1, 3, 16, 16, 16)).shape == (1, 4, 16, 16, 16)


def test_bad_backbone_settings() -> None:
    with pytest.raises(InputError, match="filter"):
        backbones.dynunet(4, 8, filters=(8, 16))
    with pytest.raises(InputError, match=r"multiple of 12|einops"):
        backbones.swinunetr(4, 8, feature_size=16)
