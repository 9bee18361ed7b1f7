"""Heads on the backbone's feature map, and the per-patient non-response head with its lesion-dose features.

The voxel heads (segmentation, kinetics τ, residual dose; or direct dose) are row groups of one pointwise
(1×1×1) convolution, `VoxelHeads`: the backbone already mixes space, a head only reads out. One fused
convolution instead of one small MLP per head, because on the CPU every full-resolution pass costs about as much as
a backbone layer (measured on 2 shared cores: a 16→16 pointwise layer's forward + backward on 2 × 64³ took
≈ 0.5 s, the whole bare DynUNet step ≈ 9 s); with separate two-layer heads (and a one-hot Dice) the ludl step
ran at 0.68 of the bare backbone's speed, fused at 0.86 (`benchmarks/train.py`).

Dose-like outputs are per injected GBq (the network sees SPECT / GBq, so a dose per GBq is what its input
determines); `DoseNet` multiplies by the injected activity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ludl.errors import InputError
from ludl.physics.dose import voxel_tia_mbq_h

__all__ = [
    "RESPONSE_FEATURES",
    "ResponseHead",
    "VoxelHeadOutput",
    "VoxelHeads",
    "response_features",
    "signed_log1p",
]


class VoxelHeadOutput(NamedTuple):
    """The voxel heads' outputs, (B, C, Z, Y, X); a head not built is None.

    Attributes:
        seg_logits: segmentation class logits (n_classes channels).
        raw_tau: kinetics head output (unbounded; `bounded_tau` maps prior logit + it into [e·t, τ_max]).
        residual_gy_per_gbq: signed residual dose, |r| ≤ `residual_max_gy_per_gbq`.
        direct_gy_per_gbq: direct dose ≥ 0.
    """

    seg_logits: torch.Tensor
    raw_tau: torch.Tensor | None
    residual_gy_per_gbq: torch.Tensor | None
    direct_gy_per_gbq: torch.Tensor | None


class VoxelHeads(nn.Module):
    """Segmentation + kinetics (+ residual) heads, or segmentation + direct-dose head: one 1×1×1 convolution.

    - Segmentation: `n_classes` logits (the canonical class table, background included).
    - Kinetics (dose_mode "tau"): one raw τ channel; its weights start at 0 so τ starts at the prior `DoseNet`
      adds (Hänscheid's 2t/ln 2) rather than at a random field around it.
    - Residual (tau mode, `residual=True`): signed, `residual_max_gy_per_gbq`·tanh, started at 0. Signed because
      what τ cannot express goes both ways: bladder and bowel contents move between the scan and later (A(t)·τ over-
      or under-states them), noise-dominated late voxels scatter around the truth. Bounded so it cannot take over
      the physics path: 0.5 Gy/GBq is about a kidney's whole dose per GBq but a tenth of a lesion's.
    - Direct (dose_mode "direct"): softplus, Gy per GBq. Softplus, not log-space: background voxels have doses
      near 0, where exp(x) needs x → −∞ and its gradient vanishes; softplus reaches 0 smoothly, and the relative
      dose loss already gives the dynamic range its due.

    Args:
        in_channels: feature channels F of the backbone.
        n_classes: segmentation classes.
        dose_mode: "tau" or "direct".
        residual: build the residual head (tau mode).
        residual_max_gy_per_gbq: bound of the residual.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        dose_mode: str = "tau",
        residual: bool = True,
        residual_max_gy_per_gbq: float = 0.5,
    ) -> None:
        super().__init__()
        if dose_mode not in ("tau", "direct"):
            raise InputError(f"unknown dose_mode {dose_mode!r}; use 'tau' or 'direct'")
        if not residual_max_gy_per_gbq > 0:
            raise InputError(f"residual_max_gy_per_gbq must be positive, got {residual_max_gy_per_gbq}")
        self.n_classes = int(n_classes)
        self.dose_mode = dose_mode
        self.residual = bool(residual) and dose_mode == "tau"
        self.residual_max_gy_per_gbq = float(residual_max_gy_per_gbq)
        extra = 1 + (1 if self.residual else 0)  # τ (+ residual), or the direct dose
        self.conv = nn.Conv3d(in_channels, self.n_classes + extra, kernel_size=1)
        if dose_mode == "tau":
            with torch.no_grad():
                self.conv.weight[self.n_classes :].zero_()
                if self.conv.bias is not None:
                    self.conv.bias[self.n_classes :].zero_()

    def forward(self, features: torch.Tensor) -> VoxelHeadOutput:
        """All voxel heads of a feature map (B, F, Z, Y, X)."""
        out = self.conv(features)
        seg = out[:, : self.n_classes]
        k = self.n_classes
        if self.dose_mode == "direct":
            return VoxelHeadOutput(seg, None, None, F.softplus(out[:, k : k + 1]))
        residual = None
        if self.residual:
            residual = self.residual_max_gy_per_gbq * torch.tanh(out[:, k + 1 : k + 2])
        return VoxelHeadOutput(seg, out[:, k : k + 1], residual, None)


# ------------------------------------------------------------------------------------------------ non-response

RESPONSE_FEATURES: tuple[str, ...] = (
    "wb_tumour_dose_gy",  # whole-body tumour dose: volume-weighted mean dose over all lesion voxels
    "min_lesion_dose_gy",  # lowest per-lesion mean dose
    "median_lesion_dose_gy",  # median per-lesion mean dose
    "tumour_volume_ml",
    "tumour_volume_below_ml",  # lesion volume whose voxel dose is below the threshold
    "tumour_fraction_below",  # the same as a share of the tumour volume
    "lesion_count",
    "pet_suv_mean",  # volume-weighted mean SUV over lesion voxels
    "pet_suv_max",
    "pet_total_lesion_uptake",  # SUV_mean × tumour volume (SUV·mL)
)


def _spatial(x: torch.Tensor, name: str) -> torch.Tensor:
    """(B, 1, Z, Y, X) or (B, Z, Y, X) → (B, Z·Y·X)."""
    if x.ndim == 5:
        if x.shape[1] != 1:
            raise InputError(f"{name} must have one channel, got shape {tuple(x.shape)}")
        x = x[:, 0]
    if x.ndim != 4:
        raise InputError(f"{name} must be (B, 1, Z, Y, X) or (B, Z, Y, X), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _lesion_doses(dose: torch.Tensor, weight: torch.Tensor, instances: torch.Tensor | None) -> list[torch.Tensor]:
    """Per sample: the mean dose of each lesion present (weights = lesion mask), as a 1-D tensor."""
    out = []
    for b in range(dose.shape[0]):
        if instances is None:
            vol = weight[b].sum()
            means = (weight[b] * dose[b]).sum().reshape(1) / vol.clamp_min(1e-12)
            out.append(means[vol.reshape(1) > 0])
            continue
        ids = instances[b].long()
        n = int(ids.max().item()) + 1 if ids.numel() else 1
        vol = torch.zeros(n, dtype=dose.dtype, device=dose.device).index_add(0, ids, weight[b])
        tot = torch.zeros(n, dtype=dose.dtype, device=dose.device).index_add(0, ids, weight[b] * dose[b])
        present = vol[1:] > 0  # id 0 is "no lesion"
        out.append(tot[1:][present] / vol[1:][present])
    return out


def response_features(
    dose_gy: torch.Tensor,
    lesion_mask: torch.Tensor,
    pet_suv: torch.Tensor,
    spacing_zyx_mm: Sequence[float],
    *,
    lesion_instances: torch.Tensor | None = None,
    low_dose_gy: float = 10.0,
    low_dose_width_gy: float = 1.0,
) -> torch.Tensor:
    """Per-patient features for the non-response head, from whole-volume maps: (B, len(RESPONSE_FEATURES)).

    Differentiable in the dose and a soft lesion mask (probabilities), except min/median (piecewise) and the
    counts. Without lesions every feature is 0.

    Args:
        dose_gy: predicted dose (Gy) of one cycle, (B, 1, Z, Y, X) or (B, Z, Y, X).
        lesion_mask: lesion probability or 0/1 mask, same shape (weights voxels in every statistic).
        pet_suv: PET SUV on the same grid.
        spacing_zyx_mm: voxel spacing (z, y, x) in mm.
        lesion_instances: optional integer map (0 = no lesion, 1…N = lesion id) for per-lesion statistics;
            without it the whole lesion mask counts as one lesion (min = median = whole-body tumour dose).
        low_dose_gy: threshold of "tumour volume below a dose".
        low_dose_width_gy: width of the soft step sigmoid((threshold − D)/width); 0 counts voxels with D < threshold.
    """
    dose = _spatial(dose_gy, "dose_gy")
    weight = _spatial(lesion_mask, "lesion_mask").to(dose.dtype)
    suv = _spatial(pet_suv, "pet_suv").to(dose.dtype)
    if weight.shape != dose.shape or suv.shape != dose.shape:
        raise InputError("dose_gy, lesion_mask and pet_suv must share one grid; resample them first")
    inst = None if lesion_instances is None else _spatial(lesion_instances, "lesion_instances")
    voxel_ml = float(voxel_tia_mbq_h(1.0, spacing_zyx_mm))  # 1 · voxel volume in mL
    vol_vox = weight.sum(dim=1)
    safe = vol_vox.clamp_min(1e-12)
    has = (vol_vox > 0).to(dose.dtype)
    wb_dose = (weight * dose).sum(dim=1) / safe
    if low_dose_width_gy > 0:
        below = torch.sigmoid((low_dose_gy - dose) / low_dose_width_gy)
    else:
        below = (dose < low_dose_gy).to(dose.dtype)
    vol_below_vox = (weight * below).sum(dim=1)
    suv_mean = (weight * suv).sum(dim=1) / safe
    suv_max = (suv * (weight > 0.5).to(dose.dtype)).amax(dim=1)
    per_lesion = _lesion_doses(dose, weight, inst)
    zero = dose.new_zeros(())
    min_dose = torch.stack([d.min() if d.numel() else zero for d in per_lesion])
    median_dose = torch.stack([d.quantile(0.5) if d.numel() else zero for d in per_lesion])
    count = torch.as_tensor([float(d.numel()) for d in per_lesion], dtype=dose.dtype, device=dose.device)
    columns = [
        wb_dose * has,
        min_dose,
        median_dose,
        vol_vox * voxel_ml,
        vol_below_vox * voxel_ml,
        vol_below_vox / safe,
        count,
        suv_mean * has,
        suv_max,
        suv_mean * vol_vox * voxel_ml,
    ]
    return torch.stack(columns, dim=1)


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1 + |x|): brings Gy, mL, SUV and pooled features to comparable ranges."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


class ResponseHead(nn.Module):
    """Per-patient feature vector → logit of P(non-response after cycle 1), (B,).

    The input is `response_features` (optionally concatenated with pooled backbone features); it is passed through
    `signed_log1p` first, since doses, volumes and SUVs span decades and a patient batch is too small to normalise.

    Args:
        n_features: length of the feature vector.
        hidden: hidden width of the MLP.
        dropout: dropout after the hidden layer (few patients: keep the head small and regularised).
    """

    def __init__(self, n_features: int, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        if n_features < 1:
            raise InputError(f"n_features must be ≥ 1, got {n_features}")
        self.n_features = int(n_features)
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Non-response logits, (B,)."""
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise InputError(f"ResponseHead expects features (B, {self.n_features}), got shape {tuple(features.shape)}")
        out: torch.Tensor = self.mlp(signed_log1p(features)).squeeze(1)
        return out
