"""Backbone factories: MONAI 3D encoder–decoders with sensible defaults, each reachable by a config's `_target_`.

A backbone is any `nn.Module` mapping (B, C_in, Z, Y, X) → (B, F, Z, Y, X) features; `DoseNet` puts the heads
on those F channels. DynUNet is the default (`ludl.models.backbones.dynunet`); the others can also be targeted
directly as MONAI classes (``_target_: monai.networks.nets.SegResNet`` with ``out_channels: F``).

Patch sizes must be divisible by the total down-sampling: 2^(levels−1) for `dynunet`/`unet`, 8 for `segresnet`,
32 for `swinunetr`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from monai.networks.nets import DynUNet, SegResNet, SwinUNETR, UNet

from ludl.errors import InputError

__all__ = ["BACKBONES", "dynunet", "segresnet", "swinunetr", "unet"]


def _check_levels(filters: Sequence[int], name: str, min_levels: int = 2) -> list[int]:
    out = [int(f) for f in filters]
    if len(out) < min_levels or any(f < 1 for f in out):
        raise InputError(
            f"{name} needs at least {min_levels} positive filter counts (one per level), got {list(filters)}"
        )
    return out


def dynunet(
    in_channels: int,
    out_channels: int,
    filters: Sequence[int] = (16, 32, 64, 128),
    kernel_size: int = 3,
    res_block: bool = False,
    norm_name: str = "instance",
) -> DynUNet:
    """MONAI DynUNet (nnU-Net-style) with one level per filter count: 3³ kernels, stride 1 then 2 per level.

    Args:
        in_channels: input channels (SPECT, PET, CT, time).
        out_channels: feature channels handed to the heads.
        filters: channels per level, shallow to deep; the patch must be divisible by 2^(len(filters) − 1).
        kernel_size: isotropic convolution kernel size.
        res_block: residual blocks instead of plain conv blocks.
        norm_name: MONAI norm name (instance norm suits batches of 1–2 patches).

    Example:
        >>> net = dynunet(4, 16, filters=(8, 16, 32))
        >>> net(torch.zeros(1, 4, 16, 16, 16)).shape  # doctest: +SKIP
        torch.Size([1, 16, 16, 16, 16])
    """
    levels = _check_levels(filters, "dynunet", min_levels=3)  # DynUNet's own minimum
    strides = [1] + [2] * (len(levels) - 1)
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[kernel_size] * len(levels),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=levels,
        norm_name=norm_name,
        res_block=res_block,
    )


def unet(
    in_channels: int, out_channels: int, channels: Sequence[int] = (16, 32, 64, 128), num_res_units: int = 2
) -> UNet:
    """MONAI residual UNet with stride-2 down-sampling between levels."""
    levels = _check_levels(channels, "unet")
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=levels,
        strides=[2] * (len(levels) - 1),
        num_res_units=num_res_units,
    )


def segresnet(in_channels: int, out_channels: int, init_filters: int = 16) -> SegResNet:
    """MONAI SegResNet (3 down-samplings)."""
    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, init_filters=init_filters)


def swinunetr(in_channels: int, out_channels: int, feature_size: int = 12) -> SwinUNETR:
    """MONAI SwinUNETR; feature_size must be a multiple of 12 (its 3/6/12/24 attention heads)."""
    if feature_size % 12:
        raise InputError(f"swinunetr feature_size must be a multiple of 12, got {feature_size}")
    if importlib.util.find_spec("einops") is None:
        # MONAI imports it only inside forward(); fail here, with the fix, instead of at the first step.
        raise InputError("the swinunetr backbone needs the einops package: pip install einops")
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, spatial_dims=3)


# Names a config may give instead of a `_target_` path.
BACKBONES = {"dynunet": dynunet, "unet": unet, "segresnet": segresnet, "swinunetr": swinunetr}
