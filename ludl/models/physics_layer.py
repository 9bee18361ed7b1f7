"""The differentiable physics layer: effective integration time τ → TIA map → absorbed dose, on the training patch.

τ = TIA / A(t) (hours) is what the kinetics head predicts per voxel; the layer turns it into dose with the same
function the multi-time-point pipeline uses (`ludl.physics.dose.dose_from_tia`), so the network and the ground
truth go one road: TIA map = A(t)·τ (MBq·h/mL), per-voxel TIA = map × voxel volume, dose = (K ⊛ TIA)·3.6·ρ_k/ρ_CT
with the voxel S kernel generated for the case's spacing (`ludl.physics.kernels.voxel_s_kernel`).

The FFTs run in float32 with autocast disabled (FFTs reject bf16; fp16 loses the kernel's 4-decade tail), and the
kernel spectrum is cached per (spacing, medium, patch shape, device), so a training step pays two FFTs per sample.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from ludl.errors import InputError
from ludl.physics.dose import DENSITY_FLOOR_G_PER_ML, KernelSpectrum, dose_from_tia, kernel_spectrum, voxel_tia_mbq_h
from ludl.physics.kernels import MEDIA, voxel_s_kernel
from ludl.physics.stp import madsen_tia

__all__ = [
    "DEFAULT_TAU_MAX_H",
    "DosePhysicsLayer",
    "PhysicsOutput",
    "TauBounds",
    "bounded_tau",
    "haenscheid_tau_h",
    "population_tau_h",
    "spacing_per_sample",
]

# Upper bound of τ. τ = e^{λt}/λ for mono-exponential clearance grows without bound for fast clearance at late
# scans (a lesion with T_eff 20 h seen at 168 h has τ ≈ 9,500 h, its remaining A(t) tiny); 20,000 h keeps such
# voxels expressible, and what remains beyond it is the residual head's job.
DEFAULT_TAU_MAX_H = 20_000.0

_TauScale = Literal["log", "linear"]


def _time_tensor(time_h: Any, like: torch.Tensor) -> torch.Tensor:
    """Scan time(s) as a float tensor broadcastable against `like` (B, …): a scalar or one value per sample."""
    t = torch.as_tensor(time_h, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise InputError(
            f"time_h must be a scalar or one time per sample (shape ({like.shape[0]},)), got shape {tuple(t.shape)}"
        )
    return t.reshape((-1,) + (1,) * (like.ndim - 1))


@dataclass(frozen=True)
class TauBounds:
    """Bounds of the effective integration time τ = TIA / A(t) for a scan at time t: [e·t, τ_max].

    Why e·t: for mono-exponential clearance A(s) = A₀e^{−λs}, τ = TIA/A(t) = e^{λt}/λ, which is smallest at λ = 1/t
    where it equals e·t; no mono-exponential voxel has τ below it. (Hänscheid's τ = 2t/ln 2 ≈ 2.885·t sits just
    above, the λ = ln 2/t case.) The upper bound τ_max is configured.

    Attributes:
        tau_max_h: upper bound of τ in hours; must exceed e·t for every scan time used.
    """

    tau_max_h: float = DEFAULT_TAU_MAX_H

    def lower_h(self, time_h: Any) -> Any:
        """The lower bound e·t (hours) for scan time(s) t (float, NumPy or torch)."""
        return math.e * time_h

    def check(self, time_h: Any) -> None:
        """Raise InputError unless 0 < e·t < τ_max for every scan time."""
        t = np.asarray(time_h.detach().cpu() if isinstance(time_h, torch.Tensor) else time_h, dtype=np.float64)
        if not (np.all(np.isfinite(t)) and np.all(t > 0)):
            raise InputError(f"scan time_h must be positive and finite, got {time_h}")
        if not (math.isfinite(self.tau_max_h) and np.all(math.e * t < self.tau_max_h)):
            raise InputError(
                f"tau_max_h = {self.tau_max_h} h is not above e·t = {float(math.e * t.max()):.1f} h for the latest "
                "scan; raise tau_max_h (model config) above e × the latest scan time"
            )


def bounded_tau(raw: torch.Tensor, time_h: Any, tau_max_h: float, scale: _TauScale = "log") -> torch.Tensor:
    """Map an unbounded head output to τ (hours) in [e·t, τ_max].

    "log" (default): log τ = log(e·t) + (log τ_max − log(e·t))·sigmoid(raw) — the head predicts log τ, as τ spans
    three decades across voxels and scan times and a relative error in τ is a relative error in dose.
    "linear": τ = e·t + (τ_max − e·t)·sigmoid(raw).

    Args:
        raw: head output, (B, 1, Z, Y, X) or any shape whose first axis is the batch.
        time_h: scan time in hours, a scalar or one per sample (B,).
        tau_max_h: upper bound in hours (> e·t).
        scale: "log" or "linear" interpolation between the bounds.
    """
    bounds = TauBounds(float(tau_max_h))
    bounds.check(time_h)
    t = _time_tensor(time_h, raw)
    lower = bounds.lower_h(t)
    frac = torch.sigmoid(raw)
    if scale == "log":
        log_lo = torch.log(lower)
        return torch.exp(log_lo + (math.log(bounds.tau_max_h) - log_lo) * frac)
    if scale == "linear":
        return lower + (bounds.tau_max_h - lower) * frac
    raise InputError(f"unknown tau scale {scale!r}; use 'log' or 'linear'")


def haenscheid_tau_h(time_h: Any) -> Any:
    """Hänscheid's effective integration time τ = 2t/ln 2 (T_eff = t), a prior the kinetics head starts from."""
    return 2.0 * time_h / math.log(2.0)


def population_tau_h(time_h: Any, t_eff_h: float) -> Any:
    """τ = TIA / A(t) of a mono-exponential with one population T_eff: (T_eff/ln 2)·e^(ln 2·t/T_eff), a prior the
    kinetics head starts from that is right at early scans too (4 h: ≈ 6.6 × Hänscheid's at T_eff 50 h; equal to it
    at t = T_eff ln 2 … ≈ 1.4 T_eff). Always ≥ e·t, the bound of `TauBounds`."""
    return madsen_tia(1.0, time_h, float(t_eff_h))  # Madsen's TIA per unit activity at t is this τ


class PhysicsOutput(NamedTuple):
    """What the physics layer returns: the TIA map (MBq·h/mL) and the absorbed dose (Gy), both (B, 1, Z, Y, X)."""

    tia_mbq_h_per_ml: torch.Tensor
    dose_gy: torch.Tensor


def spacing_per_sample(spacing_zyx_mm: Any, batch: int) -> list[tuple[float, float, float]]:
    """One (z, y, x) spacing in mm per sample, from one spacing for the batch (3,) or one per sample (B, 3)."""
    arr = np.asarray(
        spacing_zyx_mm.detach().cpu() if isinstance(spacing_zyx_mm, torch.Tensor) else spacing_zyx_mm, dtype=np.float64
    )
    if arr.shape == (3,):
        arr = np.broadcast_to(arr, (batch, 3))
    if arr.shape != (batch, 3) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(
            f"spacing_zyx_mm must be three positive sizes (z, y, x) in mm, or one such row per sample ({batch}, 3); "
            f"got shape {arr.shape}"
        )
    # Rounded to 1e-6 mm so the same grid read twice (float32 vs float64 metadata) hits one cache entry.
    return [tuple(round(float(v), 6) for v in row) for row in arr]  # type: ignore[misc]


class DosePhysicsLayer(nn.Module):
    """TIA = A(t)·τ and dose = (K ⊛ TIA)·ρ_k/ρ_CT, differentiable, in float32 outside autocast.

    Args:
        medium: kernel medium (``"soft_tissue"``, ρ_k = 1.04, as the pipeline uses).
        nuclide: nuclide of the kernel.
        kernel_size: kernel edge in voxels (None: `voxel_s_kernel`'s default, ≥ 11).
        kernel_cache_dir: disk cache folder handed to `voxel_s_kernel` (None: memory only).
        density_floor_g_per_ml: lower clip of ρ_CT (as in `dose_from_tia`).
        max_cached_spectra: how many (spacing, shape, device) kernel spectra to keep.

    Example:
        >>> layer = DosePhysicsLayer()
        >>> a = torch.rand(1, 1, 16, 16, 16)  # MBq/mL at t
        >>> out = layer(a, torch.full_like(a, 100.0), torch.ones_like(a), (4.8, 4.8, 4.8))
        >>> out.dose_gy.shape
        torch.Size([1, 1, 16, 16, 16])

    The patch sees no cross-dose from activity outside it: within ≈ the kernel half-width of the patch border the
    dose is low by up to the photon and β share that would come from outside (`border_voxels`); losses may crop it.
    """

    def __init__(
        self,
        medium: str = "soft_tissue",
        nuclide: str = "Lu-177",
        kernel_size: int | Sequence[int] | None = None,
        kernel_cache_dir: str | None = None,
        density_floor_g_per_ml: float = DENSITY_FLOOR_G_PER_ML,
        max_cached_spectra: int = 16,
    ) -> None:
        super().__init__()
        if medium not in MEDIA:
            raise InputError(f"unknown kernel medium {medium!r}; use one of {', '.join(MEDIA)}")
        self.medium = medium
        self.nuclide = nuclide
        self.kernel_size = kernel_size
        self.kernel_cache_dir = kernel_cache_dir
        self.kernel_density_g_per_ml = MEDIA[medium].density_g_per_ml
        self.density_floor_g_per_ml = float(density_floor_g_per_ml)
        self.max_cached_spectra = int(max_cached_spectra)
        # Derived data, not parameters: kept out of the state dict so checkpoints hold weights only.
        self._kernels: dict[tuple[float, float, float], np.ndarray] = {}
        self._spectra: OrderedDict[tuple[Any, ...], KernelSpectrum] = OrderedDict()

    def kernel_mgy_per_mbq_s(self, spacing_zyx_mm: tuple[float, float, float]) -> np.ndarray:
        """The voxel S kernel (mGy/(MBq·s)) for a spacing, generated once per spacing and kept."""
        kernel = self._kernels.get(spacing_zyx_mm)
        if kernel is None:
            kernel = voxel_s_kernel(
                spacing_zyx_mm,
                size=self.kernel_size,
                medium=self.medium,
                nuclide=self.nuclide,
                cache_dir=self.kernel_cache_dir,
            )
            self._kernels[spacing_zyx_mm] = kernel
        return kernel

    def border_voxels(self, spacing_zyx_mm: Sequence[float]) -> tuple[int, ...]:
        """Kernel half-width per axis: how far inside a patch its dose misses cross-dose from outside."""
        spacing = spacing_per_sample(spacing_zyx_mm, 1)[0]
        return tuple((n - 1) // 2 for n in self.kernel_mgy_per_mbq_s(spacing).shape)

    def spectrum(
        self, spacing_zyx_mm: tuple[float, float, float], image_shape: Sequence[int], device: torch.device
    ) -> KernelSpectrum:
        """The float32 kernel spectrum for one spacing and patch shape on `device` (cached, LRU)."""
        key = (spacing_zyx_mm, tuple(int(n) for n in image_shape), str(device))
        spec = self._spectra.get(key)
        if spec is not None:
            self._spectra.move_to_end(key)
            return spec
        kernel = torch.from_numpy(self.kernel_mgy_per_mbq_s(spacing_zyx_mm)).to(device=device, dtype=torch.float32)
        spec = kernel_spectrum(kernel, key[1])
        self._spectra[key] = spec
        while len(self._spectra) > self.max_cached_spectra:
            self._spectra.popitem(last=False)
        return spec

    def forward(
        self,
        activity_mbq_per_ml: torch.Tensor,
        tau_h: torch.Tensor,
        density_g_per_ml: torch.Tensor,
        spacing_zyx_mm: Any,
    ) -> PhysicsOutput:
        """TIA map and dose of a batch.

        Args:
            activity_mbq_per_ml: A(t), the SPECT activity concentration at the scan time, (B, 1, Z, Y, X), ≥ 0.
            tau_h: effective integration time τ in hours, same shape.
            density_g_per_ml: CT mass density, same shape.
            spacing_zyx_mm: one spacing (3,) for the batch, or one per sample (B, 3).

        Returns:
            `PhysicsOutput` in float32 (float64 for float64 inputs, for gradient checks).
        """
        if activity_mbq_per_ml.ndim != 5 or tau_h.shape != activity_mbq_per_ml.shape:
            raise InputError(
                f"activity (B, 1, Z, Y, X) and tau of the same shape expected, got {tuple(activity_mbq_per_ml.shape)} "
                f"and {tuple(tau_h.shape)}"
            )
        if density_g_per_ml.shape != activity_mbq_per_ml.shape:
            raise InputError(
                f"density_g_per_ml has shape {tuple(density_g_per_ml.shape)}, the activity "
                f"{tuple(activity_mbq_per_ml.shape)}; resample the CT density onto the SPECT grid"
            )
        spacings = spacing_per_sample(spacing_zyx_mm, activity_mbq_per_ml.shape[0])
        work = torch.float64 if activity_mbq_per_ml.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=activity_mbq_per_ml.device.type, enabled=False):
            tia_map = activity_mbq_per_ml.to(work) * tau_h.to(work)
            density = density_g_per_ml.to(work)
            groups: dict[tuple[float, float, float], list[int]] = {}
            for i, s in enumerate(spacings):
                groups.setdefault(s, []).append(i)
            if len(groups) == 1:
                dose = self._dose(tia_map, density, spacings[0])
            else:
                dose = torch.empty_like(tia_map)
                for spacing, rows in groups.items():
                    idx = torch.as_tensor(rows, device=tia_map.device)
                    part = self._dose(tia_map.index_select(0, idx), density.index_select(0, idx), spacing)
                    dose = dose.index_copy(0, idx, part)
        return PhysicsOutput(tia_mbq_h_per_ml=tia_map, dose_gy=dose)

    def _dose(self, tia_map: torch.Tensor, density: torch.Tensor, spacing: tuple[float, float, float]) -> torch.Tensor:
        kernel: Any = self.kernel_mgy_per_mbq_s(spacing)
        if tia_map.dtype == torch.float32:
            kernel = self.spectrum(spacing, tia_map.shape[-3:], tia_map.device)
        else:  # float64 (gradient checks): let dose_from_tia build a float64 spectrum
            kernel = torch.from_numpy(kernel).to(device=tia_map.device)
        dose: torch.Tensor = dose_from_tia(
            voxel_tia_mbq_h(tia_map, spacing),
            kernel,
            density_g_per_ml=density,
            kernel_density_g_per_ml=self.kernel_density_g_per_ml,
            density_floor_g_per_ml=self.density_floor_g_per_ml,
            check_values=False,  # no host syncs in the training step; inputs are checked by the data module
        )
        return dose
