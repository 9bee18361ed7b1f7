"""Whole-volume prediction: sliding window over the network part, then the physics layer on the WHOLE volume.

A patch's dose misses the cross-dose from activity outside it; running the kernel convolution on the stitched,
whole-volume TIA map keeps it. The network part (backbone, FiLM, voxel heads) runs window by window with cached
Gaussian blending weights (`monai.inferers.SlidingWindowInferer`); ``sw_device`` computes, ``device`` stitches, so
a whole-body volume fits where the GPU cannot hold it. A volume no larger than the window goes in one forward.

Shared by training (held-out prediction, `ludl.training.predict`) and `ludl.inference`: one road from a batch to
a dose map and its region means (`region_means`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ludl.models.heads import VoxelHeadOutput
from ludl.models.network import DoseNet, DoseNetOutput
from ludl.models.region_model import FeatureClasses, region_features, scan_features
from ludl.physics.units import MBQ_PER_GBQ, ML_PER_MM3

__all__ = [
    "FLIP_AXES",
    "CorrectionInput",
    "VolumePredictor",
    "flipped_batch",
    "region_means",
    "scored_region_features",
    "unflip_output",
    "volume_response_features",
]

# Test-time augmentation: the identity and mirrors along the patient's left-right (x) axis, as in training.
FLIP_AXES: tuple[tuple[int, ...], ...] = ((), (4,))


@dataclass(frozen=True)
class CorrectionInput:
    """What a single-scan partial-volume correction needs of one predicted volume (NumPy, z y x)."""

    tia_mbq_h_per_ml: np.ndarray
    dose_gy: np.ndarray
    labels: np.ndarray
    region_values: Mapping[str, int]
    region_kinds: Mapping[str, str]
    density_g_per_ml: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    fwhm_mm: float


class VolumePredictor:
    """Predict a whole volume (batch of 1 or more same-size volumes) with a `DoseNet`.

    Args:
        roi_size_zyx: sliding-window size (voxels); None: one forward of the whole volume.
        sw_batch_size: windows per forward.
        overlap: window overlap fraction.
        sw_device: where windows run (None: the batch's device); device: where the result is stitched.
        pad_multiple: a whole-volume forward pads the grid at its far end to a multiple of this (a U-Net's
            down-sampling needs sizes divisible by 2^(levels − 1)); outputs are cropped back. Zero activity in the
            padding adds no dose.
    """

    def __init__(
        self,
        roi_size_zyx: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        sw_device: str | None = None,
        device: str | None = None,
        pad_multiple: int = 16,
    ) -> None:
        self.roi_size_zyx = None if roi_size_zyx is None else tuple(int(s) for s in roi_size_zyx)
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.sw_device = sw_device
        self.device = device
        self.pad_multiple = max(1, int(pad_multiple))
        self._inferer: Any = None

    def _window(self) -> Any:
        if self._inferer is None:
            from monai.inferers import SlidingWindowInferer

            self._inferer = SlidingWindowInferer(
                roi_size=self.roi_size_zyx,  # type: ignore[arg-type]
                sw_batch_size=self.sw_batch_size,
                overlap=self.overlap,
                mode="gaussian",
                sw_device=self.sw_device,
                device=self.device,
                cache_roi_weight_map=True,  # one Gaussian weight map for every window and volume
            )
        return self._inferer

    def __call__(self, net: DoseNet, batch: Mapping[str, Any]) -> DoseNetOutput:
        """The network's outputs on the whole volume(s) of `batch`."""
        shape = tuple(batch["activity_mbq_per_ml"].shape[2:])
        if self.roi_size_zyx is None or all(s <= r for s, r in zip(shape, self.roi_size_zyx, strict=True)):
            return self._padded(net, batch, shape)
        return self._sliding(net, batch)

    def _padded(self, net: DoseNet, batch: Mapping[str, Any], shape: tuple[int, ...]) -> DoseNetOutput:
        """One forward on the volume padded to `pad_multiple`, outputs cropped back to `shape`."""
        m = self.pad_multiple
        pad = [(-s) % m for s in shape]
        if not any(pad):
            return net(batch)
        # F.pad takes (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)
        widths = (0, pad[2], 0, pad[1], 0, pad[0])
        padded = {
            k: torch.nn.functional.pad(v, widths)
            if isinstance(v, torch.Tensor) and v.ndim == 5 and tuple(v.shape[2:]) == shape
            else v
            for k, v in batch.items()
        }
        out = net(padded)
        crop = (slice(None), slice(None), slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
        return DoseNetOutput(*(v[crop] if isinstance(v, torch.Tensor) and v.ndim == 5 else v for v in out))

    def _sliding(self, net: DoseNet, batch: Mapping[str, Any]) -> DoseNetOutput:
        """Windows over the network part, the τ → TIA → dose tail of `DoseNet.forward` on the whole volume."""
        activity = batch["activity_mbq_per_ml"]
        x = net.network_input(batch)
        time_h = net.scan_time_h(batch)
        n_classes = net.heads.n_classes
        f = net.feature_channels

        def network_part(window: torch.Tensor) -> torch.Tensor:
            features = net.features(window, time_h)
            heads = net.heads(features)
            parts = [heads.seg_logits.float(), features.float()]
            for extra in (heads.raw_tau, heads.residual_gy_per_gbq, heads.direct_gy_per_gbq):
                if extra is not None:
                    parts.append(extra.float())
            return torch.cat(parts, dim=1)

        if x.shape[0] > 1:  # FiLM needs one time per window batch: run the samples one by one
            outs = [self._sliding(net, {k: _index(v, i) for k, v in batch.items()}) for i in range(x.shape[0])]
            return DoseNetOutput(*(_cat([o[j] for o in outs]) for j in range(len(DoseNetOutput._fields))))
        stitched = self._window()(x, network_part).to(activity.device)
        seg, features, rest = (
            stitched[:, :n_classes],
            stitched[:, n_classes : n_classes + f],
            stitched[:, n_classes + f :],
        )
        pooled = features.mean(dim=(2, 3, 4))
        if net.dose_mode == "direct":
            heads = VoxelHeadOutput(seg, None, None, rest[:, :1])
        else:
            heads = VoxelHeadOutput(seg, rest[:, :1], rest[:, 1:2] if rest.shape[1] > 1 else None, None)
        return net.outputs(heads, pooled, batch, time_h)


def _index(value: Any, i: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return value[i : i + 1]
    if isinstance(value, list):
        return value[i : i + 1]
    return value


def _cat(values: list[Any]) -> Any:
    return None if values[0] is None else torch.cat(values, dim=0)


def region_means(dose_gy: torch.Tensor, regions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(R,) mean dose inside each region value of one volume (NaN for an empty region or value 0), in float64."""
    flat_dose = dose_gy.reshape(-1).double()
    flat_regions = regions.reshape(-1).long()
    n = int(max(int(values.max().item()) if values.numel() else 0, int(flat_regions.max().item()))) + 1
    sums = torch.zeros(n, dtype=torch.float64, device=flat_dose.device).index_add_(0, flat_regions, flat_dose)
    counts = torch.bincount(flat_regions, minlength=n).double()
    idx = values.long().clamp_min(0)
    means = sums[idx] / counts[idx]
    return torch.where((values > 0) & (counts[idx] > 0), means, torch.full_like(means, math.nan))


def scored_region_features(
    batch: Mapping[str, Any],
    classes: torch.Tensor,
    labels: torch.Tensor,
    values: Mapping[str, int],
    indices: FeatureClasses,
) -> dict[str, dict[str, float]]:
    """The region kinetics model's features (`ludl.models.region_model`) of the regions `values` names in `labels`,
    from a whole-volume batch of one (its activity, PET, injected activity) and the network's class map (z y x, same
    grid): the function both the training evaluation and ``infer.py`` compute them with."""
    activity = batch["activity_mbq_per_ml"][0, 0].cpu().numpy()
    suv = batch["suv"][0, 0].cpu().numpy() if "suv" in batch else None
    spacing = [float(s) for s in batch["spacing_zyx_mm"].reshape(-1, 3)[0].tolist()]
    voxel_ml = float(np.prod(spacing)) * ML_PER_MM3
    injected_mbq = float(batch["injected_gbq"].reshape(-1)[0]) * MBQ_PER_GBQ
    scan = scan_features(activity, suv, classes.cpu().numpy(), voxel_ml, injected_mbq, indices)
    return region_features(activity, suv, labels.cpu().numpy(), values, voxel_ml, injected_mbq, scan)


def flipped_batch(batch: Mapping[str, Any], dims: Sequence[int]) -> dict[str, Any]:
    """The batch with every volume (5-D tensor) mirrored along `dims` (tensor dims, 2–4 = z, y, x)."""
    if not dims:
        return dict(batch)
    return {
        k: torch.flip(v, list(dims)) if isinstance(v, torch.Tensor) and v.ndim == 5 else v for k, v in batch.items()
    }


def unflip_output(out: DoseNetOutput, dims: Sequence[int], side_swap: torch.Tensor | None = None) -> DoseNetOutput:
    """Outputs of a mirrored batch mapped back: maps flipped back; class channels re-ordered by `side_swap`
    (class index → its mirror class) when the mirror runs along the left-right axis."""
    if not dims:
        return out
    maps: list[Any] = [torch.flip(v, list(dims)) if isinstance(v, torch.Tensor) and v.ndim == 5 else v for v in out]
    if side_swap is not None:
        # channel c of the mirrored prediction holds class c of the mirrored patient = class swap[c] of the real one
        seg: torch.Tensor = maps[0]
        maps[0] = seg[:, torch.argsort(side_swap.to(seg.device))]
    return DoseNetOutput(*maps)


def volume_response_features(batch: Mapping[str, Any], out: DoseNetOutput, lesion_class: int) -> torch.Tensor:
    """(1, n) non-response features of one whole volume: `response_features` of the predicted dose with the lesion
    probability of class `lesion_class` (instances = connected components of probability > 0.5) and the PET, then
    the backbone's pooled features — what the response head was fitted on."""
    from scipy import ndimage

    from ludl.models.heads import response_features

    prob = torch.softmax(out.seg_logits.float(), dim=1)[:, lesion_class : lesion_class + 1]
    instances, _ = ndimage.label((prob[0, 0] > 0.5).cpu().numpy())
    spacing = [float(s) for s in batch["spacing_zyx_mm"].reshape(-1, 3)[0].tolist()]
    feats = response_features(
        out.dose_gy.float(),
        prob,
        batch["suv"].float(),
        spacing,
        lesion_instances=torch.as_tensor(instances, device=prob.device)[None, None],
    )
    return torch.cat([feats, out.pooled_features.float()], dim=1).detach().cpu()
