"""`DoseNet`: a backbone, the voxel heads and the physics layer — one scan (SPECT at t, PET, CT) in, dose out.

Inputs on the SPECT grid, as a batch mapping (the keys of `BATCH_KEYS`):
``activity_mbq_per_ml`` A(t) (B, 1, Z, Y, X); ``suv`` PET SUV; ``density_g_per_ml`` CT density; ``time_h`` (B,)
scan time after injection; ``injected_gbq`` (B,); ``spacing_zyx_mm`` (3,) or (B, 3).

The network sees the SPECT per injected GBq (dose scales with activity; the input should not tell patients apart by
it), the physics layer needs A(t) in MBq/mL: it gets the batch's activity itself, so the scaling back is exact.
Dose-like head outputs are per GBq and are multiplied by ``injected_gbq``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from ludl.errors import InputError
from ludl.models.heads import VoxelHeadOutput, VoxelHeads
from ludl.models.physics_layer import (
    DEFAULT_TAU_MAX_H,
    DosePhysicsLayer,
    TauBounds,
    bounded_tau,
    haenscheid_tau_h,
    population_tau_h,
)

__all__ = [
    "BATCH_KEYS",
    "DOSE_MODES",
    "POPULATION_T_EFF_H",
    "TAU_PRIORS",
    "TAU_SCALES",
    "TIME_CONDITIONINGS",
    "DoseNet",
    "DoseNetOutput",
    "InputNormalisation",
]

BATCH_KEYS: tuple[str, ...] = (
    "activity_mbq_per_ml",
    "suv",
    "density_g_per_ml",
    "time_h",
    "injected_gbq",
    "spacing_zyx_mm",
)
DOSE_MODES: tuple[str, ...] = ("tau", "direct")
# How the network learns the scan time t. "film" (default): a small MLP of log(t / 24 h) gives a per-channel scale and
# shift of the backbone's features and an offset of the τ logit, per sample. "channel": log(t / 24 h) as a constant
# input channel — NOT seen by an instance-normalised backbone (DynUNet, UNet, SegResNet normalise every feature map
# per sample: the first normalisation subtracts the constant the time channel adds, so τ came out the same for a
# 4 h and a 168 h scan and only 24 h, the scan the prior fits best, was right); kept for backbones without it.
TIME_CONDITIONINGS: tuple[str, ...] = ("channel", "film")
_FILM_HIDDEN = 32  # hidden width of the time MLP
TAU_SCALES: tuple[str, ...] = ("softplus", "log", "linear")
# "softplus": log τ = log(e·t) + softplus_β(raw), clamped at τ_max. The head moves log τ one for one (slope ≈ 0.95 at
# Hänscheid's τ), and only voxels pushed below e·t saturate. On the "log" scale (`bounded_tau`) Hänscheid's τ sits
# 6 % above e·t, where log τ moves by 0.06 per unit of head output and by 0.008 once pushed to 0.95 × 2t/ln 2: the
# demo's τ head ended there for every region and scan time (the voxel targets at ≥ 48 h lie below e·t in 20–60 % of
# the lesion and kidney activity), and the residual, which the single-scan GTM does not see, carried the kinetics.
# Where τ starts. "haenscheid" (2t/ln 2) is 4–13 × too short for a 4 h scan, so the time MLP's τ offset learned +1.4
# at 4 h and, near-linear in log t, tilted later scans down onto the e·t bound, where no gradient brings them back
# (docs/training.md "Lesions at 48 h"). "population" starts each scan time at a mono-exponential's τ with one
# population T_eff, which is about right at every scan time, so the offset need not tilt.
TAU_PRIORS: tuple[str, ...] = ("haenscheid", "population", "none")
# Population T_eff of the "population" prior: between the synthetic kidneys' ≈ 35 h and lesions' ≈ 70 h medians
# (docs/synthetic-cohort.md); an assumption, `model.tau_prior_t_eff_h` sets it.
POPULATION_T_EFF_H = 50.0
_SOFTPLUS_BETA = 50.0  # sharpness of the lower bound: the slope falls to ½ at 0.014 in log τ above e·t
_N_IMAGE_CHANNELS = 3  # SPECT/GBq, PET SUV, CT density


@dataclass(frozen=True)
class InputNormalisation:
    """How the raw channels become network inputs (saved with the model: inference must do the same).

    SPECT: log1p(A(t)/GBq × `activity_scale`), A/GBq in MBq/mL per GBq (kidney at 24 h ≈ 0.03, a lesion ≈ 0.1–1).
    PET: log1p(SUV) (background ≈ 1, lesions 10–100). CT: ρ − 1 (water 0, air −1, bone ≈ +0.9).
    Time: log(t / `time_ref_h`).
    """

    activity_scale: float = 100.0
    time_ref_h: float = 24.0

    def to_dict(self) -> dict[str, float]:
        """Plain dict for the model artifact."""
        return asdict(self)


class DoseNetOutput(NamedTuple):
    """What `DoseNet.forward` returns; maps are (B, C, Z, Y, X), dose in Gy.

    Attributes:
        seg_logits: class logits (B, n_classes, …).
        dose_gy: the dose of the chosen mode (physics + residual, or direct), ≥ 0.
        tau_h: effective integration time τ (tau mode; None in direct mode).
        tia_mbq_h_per_ml: TIA map A(t)·τ (tau mode; None in direct mode).
        physics_dose_gy: dose of the TIA through the kernel, before the residual (tau mode).
        residual_gy: residual dose term (tau mode with a residual head; else None).
        pooled_features: backbone features averaged over the patch (B, F), for the non-response head.
    """

    seg_logits: torch.Tensor
    dose_gy: torch.Tensor
    tau_h: torch.Tensor | None
    tia_mbq_h_per_ml: torch.Tensor | None
    physics_dose_gy: torch.Tensor | None
    residual_gy: torch.Tensor | None
    pooled_features: torch.Tensor


def _per_sample(value: Any, like: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar or (B,) value as a (B, 1, 1, 1, 1) tensor on `like`'s device and dtype."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.shape != (like.shape[0],):
        raise InputError(f"{name} must be a scalar or one value per sample ({like.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, 1, 1, 1, 1)


class DoseNet(nn.Module):
    """Backbone + segmentation, kinetics (τ) / residual or direct-dose heads + the physics layer.

    Args:
        backbone: module mapping (B, C_in, Z, Y, X) → (B, F, Z, Y, X); C_in = `DoseNet.in_channels_for(...)`.
        feature_channels: F.
        n_classes: segmentation classes (the canonical class table, background included).
        dose_mode: "tau" (kinetics head + physics layer + residual) or "direct" (direct-dose head).
        time_conditioning: "film" or "channel" (see `TIME_CONDITIONINGS`).
        tau_max_h: upper bound of τ.
        tau_scale: "softplus" (log τ above e·t, see `TAU_SCALES`), "log" or "linear" interpolation of τ between its
            bounds (`bounded_tau`).
        tau_prior: "haenscheid" starts τ at 2t/ln 2 (the head learns a correction), "population" at the τ of a
            mono-exponential with `tau_prior_t_eff_h` (`population_tau_h`: right at early scans too), "none" at the
            bounds' middle.
        tau_prior_t_eff_h: the population T_eff of the "population" prior (h).
        residual: add the residual dose head in tau mode.
        residual_max_gy_per_gbq: bound of the residual.
        physics: the physics layer (default: soft-tissue 177Lu kernels).
        normalisation: input normalisation.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_channels: int,
        n_classes: int,
        *,
        dose_mode: Literal["tau", "direct"] = "tau",
        time_conditioning: Literal["channel", "film"] = "film",
        tau_max_h: float = DEFAULT_TAU_MAX_H,
        tau_scale: Literal["softplus", "log", "linear"] = "log",
        tau_prior: Literal["haenscheid", "population", "none"] = "haenscheid",
        tau_prior_t_eff_h: float = POPULATION_T_EFF_H,
        residual: bool = True,
        residual_max_gy_per_gbq: float = 0.5,
        physics: DosePhysicsLayer | None = None,
        normalisation: InputNormalisation | None = None,
    ) -> None:
        super().__init__()
        for value, allowed, name in (
            (dose_mode, DOSE_MODES, "dose_mode"),
            (time_conditioning, TIME_CONDITIONINGS, "time_conditioning"),
            (tau_scale, TAU_SCALES, "tau_scale"),
            (tau_prior, TAU_PRIORS, "tau_prior"),
        ):
            if value not in allowed:
                raise InputError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        self.backbone = backbone
        self.feature_channels = int(feature_channels)
        self.dose_mode = dose_mode
        self.time_conditioning = time_conditioning
        self.tau_bounds = TauBounds(float(tau_max_h))
        self.tau_scale = tau_scale
        self.tau_prior = tau_prior
        if not (math.isfinite(tau_prior_t_eff_h) and tau_prior_t_eff_h > 0):
            raise InputError(f"tau_prior_t_eff_h must be a positive number of hours, got {tau_prior_t_eff_h}")
        self.tau_prior_t_eff_h = float(tau_prior_t_eff_h)
        self.normalisation = normalisation or InputNormalisation()
        # The heads read the backbone's (linear) output directly, as a MONAI net's own output layer would: a
        # nonlinearity between them would cost three full-resolution F-channel passes per step for little.
        # FiLM: log t → hidden → (scale, shift) of the F features + the τ-logit offset. The last layer starts at 0,
        # so the network starts as the identity (scale 1, shift 0, τ at the prior) and learns how τ moves with t.
        self.film: nn.Sequential | None = None
        if time_conditioning == "film":
            last = nn.Linear(_FILM_HIDDEN, 2 * feature_channels + 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.film = nn.Sequential(nn.Linear(1, _FILM_HIDDEN), nn.SiLU(), last)
        self.heads = VoxelHeads(feature_channels, n_classes, dose_mode, residual, residual_max_gy_per_gbq)
        self.physics = (physics or DosePhysicsLayer()) if dose_mode == "tau" else None

    @staticmethod
    def in_channels_for(time_conditioning: str = "film") -> int:
        """Input channels the backbone must take: SPECT, PET, CT (+ the time channel)."""
        return _N_IMAGE_CHANNELS + (1 if time_conditioning == "channel" else 0)

    def network_input(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The normalised input channels (B, C_in, Z, Y, X)."""
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise InputError(f"DoseNet batch lacks {', '.join(missing)}; a batch holds {', '.join(BATCH_KEYS)}")
        activity = batch["activity_mbq_per_ml"]
        gbq = _per_sample(batch["injected_gbq"], activity, "injected_gbq")
        norm = self.normalisation
        channels = [
            torch.log1p(activity.clamp_min(0) / gbq * norm.activity_scale),
            torch.log1p(batch["suv"].to(activity.dtype).clamp_min(0)),
            batch["density_g_per_ml"].to(activity.dtype) - 1.0,
        ]
        if self.time_conditioning == "channel":
            log_t = torch.log(_per_sample(batch["time_h"], activity, "time_h") / norm.time_ref_h)
            channels.append(log_t.expand_as(activity))
        return torch.cat(channels, dim=1)

    def _tau_prior_logit(self, time_h: torch.Tensor) -> torch.Tensor:
        """The raw value at which `bounded_tau` gives the prior τ for each scan time (0 without a prior).

        The head's output is added to it. On the log scale, τ = e·t·exp(span·sigmoid(raw)) and Hänscheid's τ sits
        6 % above e·t where sigmoid ≈ exp: the head output then acts as log(d / d_prior) with d = log(τ / (e·t)),
        the log-distance from the bound — O(±3) for real kinetics (τ from 1.02 to 20 × e·t), well conditioned and
        stable. (Dividing by the sigmoid's slope to make the head predict log τ directly was tried: the map becomes
        doubly exponential and one Adam step could throw τ across three decades.)
        """
        if self.tau_prior == "none":
            return torch.zeros_like(time_h)
        lower = self.tau_bounds.lower_h(time_h)
        if self.tau_prior == "population":
            prior = torch.clamp(population_tau_h(time_h, self.tau_prior_t_eff_h), max=0.5 * self.tau_bounds.tau_max_h)
        else:
            prior = haenscheid_tau_h(time_h)
        if self.tau_scale == "softplus":  # softplus_β(raw) = log(prior / e·t)
            b = _SOFTPLUS_BETA
            return torch.log(torch.expm1(b * (torch.log(prior) - torch.log(lower)))) / b
        tau_max = self.tau_bounds.tau_max_h
        if self.tau_scale == "log":
            frac = (torch.log(prior) - torch.log(lower)) / (math.log(tau_max) - torch.log(lower))
        else:
            frac = (prior - lower) / (tau_max - lower)
        return torch.logit(frac.clamp(1e-6, 1 - 1e-6))

    def _tau_h(self, raw: torch.Tensor, time_h: torch.Tensor) -> torch.Tensor:
        """τ (h) in [e·t, τ_max] of the raw kinetics value (prior logit + head + scan-time offset), per sample t."""
        tau_max = self.tau_bounds.tau_max_h
        if self.tau_scale != "softplus":
            return bounded_tau(raw, time_h, tau_max, self.tau_scale)
        self.tau_bounds.check(time_h)
        log_lower = torch.log(self.tau_bounds.lower_h(time_h)).reshape(-1, *([1] * (raw.ndim - 1)))
        log_tau = log_lower + torch.nn.functional.softplus(raw, beta=_SOFTPLUS_BETA)
        return torch.exp(torch.clamp(log_tau, max=math.log(tau_max)))

    def forward(self, batch: Mapping[str, Any]) -> DoseNetOutput:
        """Segmentation logits, τ, TIA and dose of a batch (see the module docstring for its keys)."""
        x = self.network_input(batch)  # checks the keys
        time_h = self.scan_time_h(batch)
        features = self.features(x, time_h)
        return self.outputs(self.heads(features), features.mean(dim=(2, 3, 4)), batch, time_h)

    def scan_time_h(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The batch's scan times (B,), h."""
        return _per_sample(batch["time_h"], batch["activity_mbq_per_ml"], "time_h")

    def _film(self, time_h: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """The time MLP's output (B, 2F + 1): feature scale, feature shift, τ-logit offset (None without FiLM)."""
        if self.film is None:
            return None
        log_t = torch.log(time_h.reshape(-1, 1).float().to(device) / self.normalisation.time_ref_h)
        out: torch.Tensor = self.film(log_t)
        return out

    def features(self, x: torch.Tensor, time_h: torch.Tensor) -> torch.Tensor:
        """The network part on normalised inputs (or a window of them): backbone features, FiLM-conditioned on t."""
        features = self.backbone(x)
        film = self._film(time_h, features.device)
        if film is not None:
            f = self.feature_channels
            gamma, beta = film[:, :f, None, None, None], film[:, f : 2 * f, None, None, None]
            features = features * (1 + gamma.to(features.dtype)) + beta.to(features.dtype)
        return features

    def outputs(
        self, heads: VoxelHeadOutput, pooled: torch.Tensor, batch: Mapping[str, Any], time_h: torch.Tensor
    ) -> DoseNetOutput:
        """The tail on whole volumes: head outputs → τ → TIA → dose through the physics layer (or the direct dose).

        Split from `forward` so a sliding-window predictor can run the network part by windows and this tail once
        on the whole volume (the dose convolution then sees every source, no window edge).
        """
        activity = batch["activity_mbq_per_ml"]
        gbq = _per_sample(batch["injected_gbq"], activity, "injected_gbq")
        if heads.direct_gy_per_gbq is not None:
            dose = heads.direct_gy_per_gbq.float() * gbq.float()
            return DoseNetOutput(heads.seg_logits, dose, None, None, None, None, pooled)
        if heads.raw_tau is None or self.physics is None:
            raise RuntimeError("DoseNet in tau mode was built without its kinetics head or physics layer")
        # τ in fp32 even under autocast: bf16 would round it (and so the dose) by up to 0.4 %.
        raw = self._tau_prior_logit(time_h.float()) + heads.raw_tau.float()
        film = self._film(time_h, raw.device)
        if film is not None:  # the scan-time offset of the τ logit: how far a typical voxel's τ is from the prior
            raw = raw + film[:, -1].reshape(-1, 1, 1, 1, 1)
        tau = self._tau_h(raw, time_h.reshape(-1).float())
        phys = self.physics(activity, tau, batch["density_g_per_ml"], batch["spacing_zyx_mm"])
        residual = None
        dose = phys.dose_gy
        if heads.residual_gy_per_gbq is not None:
            residual = heads.residual_gy_per_gbq.float() * gbq.float()
            dose = (dose + residual).clamp_min(0.0)
        return DoseNetOutput(heads.seg_logits, dose, tau, phys.tia_mbq_h_per_ml, phys.dose_gy, residual, pooled)
