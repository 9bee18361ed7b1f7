"""From time-integrated activity (TIA) to absorbed dose: units, FFT convolution, LDM, density, sphere model.

Conventions (docs/architecture.md "Units inside ludl", docs/physics.md §4):
- TIA *maps* hold MBq·h/mL; the functions here take per-voxel TIA in MBq·h (`voxel_tia_mbq_h` converts).
- Published dose-voxel kernels are in mGy/(MBq·s); `MGY_PER_MBQ_S_TO_GY_PER_MBQ_H` is the one place the
  unit change happens. Doses come out in Gy.
- Arrays are (z, y, x); a kernel is centred (odd size on every axis, the source voxel in the middle).

NumPy inputs run on scipy.fft; torch tensors run on torch.fft and stay differentiable (the network's
physics layer). Low-precision tensors (fp16/bf16) are computed in fp32: FFTs reject bf16 and fp16 is too
coarse for the kernel's 4 decades of dynamic range.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import numpy.typing as npt
import scipy.fft

from ludl.errors import InputError, KernelError
from ludl.physics.nuclides import get_nuclide

if TYPE_CHECKING:
    import torch

__all__ = [
    "AIR_DENSITY_G_PER_ML",
    "DENSITY_FLOOR_G_PER_ML",
    "MGY_PER_MBQ_S_TO_GY_PER_MBQ_H",
    "SOFT_TISSUE_DENSITY_G_PER_ML",
    "KernelSpectrum",
    "density_from_hu",
    "dose_from_tia",
    "fft_convolve",
    "kernel_gy_per_mbq_h",
    "kernel_spectrum",
    "ldm_dose",
    "sphere_model_dose",
    "voxel_tia_mbq_h",
]

# 1 mGy/(MBq·s) × 3600 s/h × 1e-3 Gy/mGy = 3.6 Gy/(MBq·h). The only kernel-unit conversion in ludl.
MGY_PER_MBQ_S_TO_GY_PER_MBQ_H = 3.6

# ICRU Report 44 soft tissue, the medium dose-voxel kernels are made for (docs/physics.md §4).
SOFT_TISSUE_DENSITY_G_PER_ML = 1.04
# Dry air near sea level, ICRU Report 37/NIST (1.205e-3 g/cm³), rounded as in GATE's Schneider table.
AIR_DENSITY_G_PER_ML = 0.0012
# Density scaling ρ_k/ρ_CT is clipped at this floor. Just below ICRU 44 inflated lung (0.26 g/cm³), so
# nominal lung still gets its local E/m dose; below it a SPECT-sized voxel is mostly air (outside the body,
# trachea, bowel gas, emphysema) where β energy escapes the voxel and activity is spill-over from
# partial volume, so 1/ρ would blow dose up ×870 in air (PyTheranostics issue #41). With the floor a
# voxel can get at most ρ_k/0.25 ≈ 4.2 × its soft-tissue dose; mask dose outside the body with the body
# contour where it matters.
DENSITY_FLOOR_G_PER_ML = 0.25

_SECONDS_PER_HOUR = 3600.0
_GRAMS_PER_KG = 1000.0
_ML_PER_MM3 = 1e-3
# Densest element (osmium) is 22.6 g/cm³: anything above is not a density map (probably HU).
_MAX_DENSITY_G_PER_ML = 25.0

# Bilinear HU → density (g/mL). Below water: the air–water line ρ = 1 + HU/1000. Above water: one line
# through water (0 HU, 1.0) and 1000 HU → 1.63838 g/cm³, the Schneider et al. 2000 calibration
# (Phys Med Biol 45:459, as tabulated in GATE's Schneider2000DensitiesTable) — within 3 % of that table
# from 0 to 3000 HU except near the soft-tissue/bone knee (≈ 100–200 HU, 3 % low), and 1.89 g/mL at
# 1400 HU, near ICRU 46 cortical bone (1.85–1.92 g/cm³).
_HU_BONE_SLOPE_G_PER_ML_PER_HU = 0.63838e-3


def _torch_module() -> Any:
    return sys.modules.get("torch")


def _is_tensor(x: object) -> bool:
    # torch is imported lazily: if nobody imported it, x cannot be a tensor and NumPy users never pay for it.
    torch_mod = _torch_module()
    return torch_mod is not None and isinstance(x, torch_mod.Tensor)


@dataclass(frozen=True)
class KernelSpectrum:
    """A kernel's real FFT on the padded grid of one image shape, for reuse over many convolutions.

    Attributes:
        spectrum: rfftn of the kernel zero-padded to `fft_shape` (NumPy complex array or torch complex tensor).
        kernel_shape: shape of the centred kernel (odd sizes).
        image_shape: trailing (spatial) image shape this spectrum was made for.
        fft_shape: padded FFT shape, ≥ image + kernel half-width on every axis (no wrap-around).
    """

    spectrum: Any
    kernel_shape: tuple[int, ...]
    image_shape: tuple[int, ...]
    fft_shape: tuple[int, ...]


def kernel_gy_per_mbq_h(kernel_mgy_per_mbq_s: Any) -> Any:
    """Convert a dose-voxel kernel from mGy/(MBq·s) to Gy/(MBq·h) (NumPy array, tensor or scalar)."""
    if _is_tensor(kernel_mgy_per_mbq_s):
        return kernel_mgy_per_mbq_s * MGY_PER_MBQ_S_TO_GY_PER_MBQ_H
    return np.asarray(kernel_mgy_per_mbq_s, dtype=np.float64) * MGY_PER_MBQ_S_TO_GY_PER_MBQ_H


def voxel_tia_mbq_h(tia_map_mbq_h_per_ml: Any, spacing_zyx_mm: Sequence[float]) -> Any:
    """Per-voxel TIA in MBq·h from a TIA map in MBq·h/mL.

    Args:
        tia_map_mbq_h_per_ml: TIA concentration map, (..., z, y, x), NumPy or torch.
        spacing_zyx_mm: voxel spacing (z, y, x) in mm.
    """
    voxel_ml = _voxel_volume_ml(spacing_zyx_mm)
    if _is_tensor(tia_map_mbq_h_per_ml):
        return tia_map_mbq_h_per_ml * voxel_ml
    return np.asarray(tia_map_mbq_h_per_ml, dtype=np.float64) * voxel_ml


def _voxel_volume_ml(spacing_zyx_mm: Sequence[float]) -> float:
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64).ravel()
    if spacing.size != 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"spacing_zyx_mm must be three positive finite numbers (z, y, x) in mm, got {spacing_zyx_mm}")
    return float(np.prod(spacing)) * _ML_PER_MM3


def _check_kernel_shape(kernel_shape: tuple[int, ...], image_ndim: int) -> None:
    if len(kernel_shape) == 0 or len(kernel_shape) > image_ndim:
        raise KernelError(
            f"kernel has {len(kernel_shape)} dimensions, the image {image_ndim}; "
            "give a kernel with one axis per spatial image axis (e.g. a 3-D voxel S kernel for a (z, y, x) map)"
        )
    if any(n % 2 == 0 or n < 1 for n in kernel_shape):
        raise KernelError(
            f"kernel shape {kernel_shape} has an even (or empty) axis; a centred dose-voxel kernel needs an odd "
            "size on every axis so the source voxel sits in the middle"
        )


def _fft_shape(image_shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> tuple[int, ...]:
    # A circular convolution of length L equals the linear one on the cropped 'same' window when
    # L ≥ N + (K−1)/2 (derivation: a wrapped tap would need |n−m| ≥ L − c, but |n−m| ≤ N−1); smaller than
    # the textbook N + K − 1, which saves memory on whole-body maps. L ≥ K keeps the kernel from folding.
    return tuple(
        scipy.fft.next_fast_len(max(n + (k - 1) // 2, k), real=True)
        for n, k in zip(image_shape, kernel_shape, strict=True)
    )


def kernel_spectrum(kernel: Any, image_shape: Sequence[int]) -> KernelSpectrum:
    """Precompute a kernel's FFT for images of a given spatial shape (reuse it across time points/patients).

    Args:
        kernel: centred kernel, odd size per axis (NumPy or torch; the spectrum follows its type and dtype).
        image_shape: spatial shape of the images it will convolve (the trailing `kernel.ndim` axes).
    """
    shape = tuple(int(n) for n in image_shape)
    kshape = tuple(int(n) for n in kernel.shape)
    _check_kernel_shape(kshape, len(shape))
    shape = shape[len(shape) - len(kshape) :]
    fshape = _fft_shape(shape, kshape)
    if _is_tensor(kernel):
        torch_mod = _torch_module()
        k = kernel if kernel.dtype in (torch_mod.float32, torch_mod.float64) else kernel.float()
        spec = torch_mod.fft.rfftn(k, s=fshape, dim=tuple(range(k.ndim)))
    else:
        k_np = np.asarray(kernel)
        if k_np.dtype not in (np.float32, np.float64):
            k_np = k_np.astype(np.float64)
        spec = scipy.fft.rfftn(k_np, s=fshape)
    return KernelSpectrum(spectrum=spec, kernel_shape=kshape, image_shape=shape, fft_shape=fshape)


@overload
def fft_convolve(
    image: npt.NDArray[Any], kernel: npt.NDArray[Any] | KernelSpectrum, *, workers: int | None = ...
) -> npt.NDArray[np.floating[Any]]: ...


@overload
def fft_convolve(image: torch.Tensor, kernel: Any, *, workers: int | None = ...) -> torch.Tensor: ...


def fft_convolve(image: Any, kernel: Any, *, workers: int | None = -1) -> Any:
    """Linear ('same', zero-padded, no wrap-around) convolution of `image` with a centred kernel via real FFTs.

    out[n] = Σ_m image[m] · kernel[n − m + c], c = (K − 1)/2: a source in voxel m deposits kernel[c + d] at m + d.
    The kernel acts on the trailing `kernel.ndim` axes; leading axes (batch, channel) are independent.

    Args:
        image: (..., z, y, x) NumPy array (scipy.fft) or torch tensor (torch.fft, differentiable).
        kernel: centred kernel with odd sizes, or a `KernelSpectrum` from `kernel_spectrum`.
        workers: scipy.fft threads for NumPy inputs (−1: all CPUs); torch uses its own thread setting.

    Returns:
        Same shape as `image`; float32 for float32 (and fp16/bf16 tensor) input, else float64.
    """
    if _is_tensor(image):
        return _fft_convolve_torch(image, kernel)
    return _fft_convolve_numpy(np.asarray(image), kernel, workers)


def _resolve_spectrum(image_shape: tuple[int, ...], kernel: Any) -> KernelSpectrum:
    if isinstance(kernel, KernelSpectrum):
        spatial = image_shape[len(image_shape) - len(kernel.kernel_shape) :] if kernel.kernel_shape else ()
        if len(kernel.kernel_shape) > len(image_shape) or spatial != kernel.image_shape:
            raise InputError(
                f"kernel spectrum was made for images of spatial shape {kernel.image_shape}, got an image of shape "
                f"{image_shape}; call kernel_spectrum(kernel, image_shape) for this shape"
            )
        return kernel
    return kernel_spectrum(kernel, image_shape)


def _same_window(image_shape: tuple[int, ...], spec: KernelSpectrum) -> tuple[slice, ...]:
    lead = len(image_shape) - len(spec.kernel_shape)
    crop = tuple(
        slice((k - 1) // 2, (k - 1) // 2 + n) for n, k in zip(spec.image_shape, spec.kernel_shape, strict=True)
    )
    return (slice(None),) * lead + crop


def _fft_convolve_numpy(image: npt.NDArray[Any], kernel: Any, workers: int | None) -> npt.NDArray[np.floating[Any]]:
    if _is_tensor(kernel):
        raise InputError("fft_convolve got a NumPy image and a torch kernel; pass both as NumPy or both as torch")
    if image.dtype not in (np.float32, np.float64):
        if np.iscomplexobj(image):
            raise InputError("fft_convolve takes a real image; got a complex array")
        image = image.astype(np.float64)
    if isinstance(kernel, KernelSpectrum) and _is_tensor(kernel.spectrum):
        raise InputError("kernel spectrum holds a torch tensor; make it from a NumPy kernel for NumPy images")
    spec = _resolve_spectrum(image.shape, kernel)
    axes = tuple(range(image.ndim - len(spec.kernel_shape), image.ndim))
    complex_dtype = np.complex64 if image.dtype == np.float32 else np.complex128
    kspec = np.asarray(spec.spectrum).astype(complex_dtype, copy=False)
    # In-place product and a copied crop keep the peak at ≈ one padded real + one half-spectrum buffer.
    out_spec = scipy.fft.rfftn(image, s=spec.fft_shape, axes=axes, workers=workers)
    out_spec *= kspec
    full = scipy.fft.irfftn(out_spec, s=spec.fft_shape, axes=axes, workers=workers)
    del out_spec
    out: npt.NDArray[np.floating[Any]] = np.ascontiguousarray(full[_same_window(image.shape, spec)])
    return out.astype(image.dtype, copy=False)


def _fft_convolve_torch(image: torch.Tensor, kernel: Any) -> torch.Tensor:
    torch_mod = _torch_module()
    if image.is_complex():
        raise InputError("fft_convolve takes a real image; got a complex tensor")
    work_dtype = torch_mod.float64 if image.dtype == torch_mod.float64 else torch_mod.float32
    complex_dtype = torch_mod.complex128 if work_dtype == torch_mod.float64 else torch_mod.complex64
    # FFTs must not run under autocast: bf16 FFTs are rejected and fp16 ones lose the kernel tail.
    with torch_mod.autocast(device_type=image.device.type, enabled=False):
        x = image.to(work_dtype)
        if not isinstance(kernel, KernelSpectrum):
            k = kernel if _is_tensor(kernel) else torch_mod.from_numpy(np.asarray(kernel, dtype=np.float64))
            kernel = kernel_spectrum(k.to(device=x.device, dtype=work_dtype), tuple(image.shape))
        spec = _resolve_spectrum(tuple(image.shape), kernel)
        kspec = spec.spectrum if _is_tensor(spec.spectrum) else torch_mod.from_numpy(np.asarray(spec.spectrum))
        kspec = kspec.to(device=x.device, dtype=complex_dtype)
        dims = tuple(range(x.ndim - len(spec.kernel_shape), x.ndim))
        out_spec = torch_mod.fft.rfftn(x, s=spec.fft_shape, dim=dims) * kspec
        full = torch_mod.fft.irfftn(out_spec, s=spec.fft_shape, dim=dims)
        out: torch.Tensor = full[_same_window(tuple(image.shape), spec)].contiguous()
    return out


def _finite_nonnegative(x: Any, name: str, hint: str) -> None:
    """Raise InputError when x holds NaN/inf or negative values (NumPy or torch)."""
    if _is_tensor(x):
        torch_mod = _torch_module()
        bad_finite = bool((~torch_mod.isfinite(x.detach())).any())
        bad_sign = False if bad_finite else bool((x.detach() < 0).any())
    else:
        arr = np.asarray(x)
        bad_finite = not bool(np.all(np.isfinite(arr)))
        bad_sign = False if bad_finite else bool(np.any(arr < 0))
    if bad_finite:
        raise InputError(f"{name} contains NaN or infinite values; {hint}")
    if bad_sign:
        raise InputError(f"{name} contains negative values; {hint}")


def _check_density(density: Any, name: str) -> None:
    if _is_tensor(density):
        torch_mod = _torch_module()
        d = density.detach()
        bad = bool((~torch_mod.isfinite(d)).any()) or bool((d <= 0).any()) or bool((d > _MAX_DENSITY_G_PER_ML).any())
    else:
        arr = np.asarray(density, dtype=np.float64)
        bad = not bool(np.all(np.isfinite(arr))) or bool(np.any(arr <= 0)) or bool(np.any(arr > _MAX_DENSITY_G_PER_ML))
    if bad:
        raise InputError(
            f"{name} must be a mass density in g/mL, finite and in (0, {_MAX_DENSITY_G_PER_ML}]; a CT in HU must be "
            "converted first with density_from_hu"
        )


def _positive_scalar(value: float, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{name} must be a positive finite number, got {value}")
    return v


def _clipped_density_ratio(density: Any, kernel_density: float, floor: float, like: Any) -> Any:
    """ρ_k / max(ρ_CT, floor), in the backend and float dtype of `like`."""
    if _is_tensor(like):
        torch_mod = _torch_module()
        rho = density if _is_tensor(density) else torch_mod.as_tensor(np.asarray(density, dtype=np.float64))
        rho = rho.to(device=like.device, dtype=like.dtype)
        return kernel_density / torch_mod.clamp(rho, min=floor)
    rho_np = np.asarray(density, dtype=like.dtype)
    return (kernel_density / np.maximum(rho_np, floor)).astype(like.dtype, copy=False)


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in x.shape) if hasattr(x, "shape") else ()


def _broadcast_check(shape_a: tuple[int, ...], shape_b: tuple[int, ...], name_a: str, name_b: str) -> None:
    try:
        ok = np.broadcast_shapes(shape_a, shape_b) == shape_a
    except ValueError:
        ok = False
    if not ok:
        raise InputError(
            f"{name_b} has shape {shape_b}, which does not match {name_a} of shape {shape_a}; resample both onto "
            "the same grid first"
        )


def dose_from_tia(
    tia_mbq_h: Any,
    kernel_mgy_per_mbq_s: Any,
    *,
    density_g_per_ml: Any = None,
    kernel_density_g_per_ml: float = SOFT_TISSUE_DENSITY_G_PER_ML,
    density_floor_g_per_ml: float = DENSITY_FLOOR_G_PER_ML,
    check_values: bool = True,
    workers: int | None = -1,
) -> Any:
    """Absorbed dose (Gy) by dose-voxel-kernel convolution: D = (K ⊛ TIA) · 3.6 · ρ_k / max(ρ_CT, ρ_floor).

    The ρ_k/ρ_CT factor (not 1/ρ_CT, which counts density twice: ≈ 4 % low in soft tissue) turns the kernel
    medium's dose into dose to the local CT density (docs/physics.md §4); ρ_CT is clipped at the floor so air
    does not blow dose up (see DENSITY_FLOOR_G_PER_ML). Negative FFT round-off (≈ 1e-7 of the peak) is set to 0.

    Args:
        tia_mbq_h: per-voxel TIA in MBq·h, (..., z, y, x); NumPy or torch (differentiable).
        kernel_mgy_per_mbq_s: centred dose-voxel kernel in mGy/(MBq·s) for this grid's spacing, or its
            `KernelSpectrum` (still in mGy/(MBq·s)).
        density_g_per_ml: CT mass density on the same grid (broadcastable to the TIA), or None for none.
        kernel_density_g_per_ml: density of the medium the kernel was made for (ICRU 44 soft tissue 1.04).
        density_floor_g_per_ml: lower clip of ρ_CT.
        check_values: reject NaN/negative TIA and bad densities (set False in training loops to skip the syncs).
        workers: scipy.fft threads for NumPy inputs.
    """
    is_torch = _is_tensor(tia_mbq_h)
    tia: Any = tia_mbq_h if is_torch else np.asarray(tia_mbq_h)
    rho_k = _positive_scalar(kernel_density_g_per_ml, "kernel_density_g_per_ml")
    floor = _positive_scalar(density_floor_g_per_ml, "density_floor_g_per_ml")
    kernel = kernel_mgy_per_mbq_s
    if not isinstance(kernel, KernelSpectrum):
        if not is_torch:
            if _is_tensor(kernel):
                raise InputError(
                    "dose_from_tia got a NumPy TIA and a torch kernel; pass both as NumPy or both as torch"
                )
            kernel = np.asarray(kernel)
        _check_kernel_shape(tuple(kernel.shape), tia.ndim)
        if check_values:
            _finite_nonnegative(kernel, "kernel_mgy_per_mbq_s", "a dose-voxel kernel holds finite doses ≥ 0")
    if check_values:
        _finite_nonnegative(
            tia, "tia_mbq_h", "TIA is time-integrated activity (≥ 0); clamp fit noise or mask invalid voxels first"
        )
    if density_g_per_ml is not None:
        _broadcast_check(tuple(tia.shape), _shape_of(density_g_per_ml), "tia_mbq_h", "density_g_per_ml")
        if check_values:
            _check_density(density_g_per_ml, "density_g_per_ml")
    conv = fft_convolve(tia, kernel, workers=workers)
    dose: Any = conv * MGY_PER_MBQ_S_TO_GY_PER_MBQ_H
    if density_g_per_ml is not None:
        dose = dose * _clipped_density_ratio(density_g_per_ml, rho_k, floor, dose)
    if is_torch:
        return dose.clamp(min=0.0)
    return np.maximum(dose, 0.0, out=dose)


def ldm_dose(
    tia_mbq_h: Any,
    spacing_zyx_mm: Sequence[float],
    density_g_per_ml: Any = 1.0,
    nuclide: str = "Lu-177",
    *,
    density_floor_g_per_ml: float = DENSITY_FLOOR_G_PER_ML,
) -> Any:
    """Local energy deposition dose (Gy): every decay's electron energy stays in its voxel, D = TIA · E_e / m.

    Photons (35 keV per decay for 177Lu) mostly leave a voxel and are left out, as LDM conventionally
    deposits only non-penetrating radiation. 177Lu: 1 MBq·s in a 4.8 mm unit-density voxel → 0.2143 mGy.

    Args:
        tia_mbq_h: per-voxel TIA in MBq·h (NumPy or torch).
        spacing_zyx_mm: voxel spacing (z, y, x) in mm.
        density_g_per_ml: voxel mass density (scalar or array broadcastable to the TIA); default unit density.
        nuclide: nuclide name for the ICRP-107 electron energy per decay.
        density_floor_g_per_ml: lower clip of the density, as in `dose_from_tia`.
    """
    voxel_ml = _voxel_volume_ml(spacing_zyx_mm)
    floor = _positive_scalar(density_floor_g_per_ml, "density_floor_g_per_ml")
    # J per MBq·h of TIA → J/g per unit density: E[J/(MBq·s)] × 3600 s/h / (V[mL]·ρ[g/mL]) × 1000 g/kg = Gy.
    gy_per_mbq_h_unit_density = (
        get_nuclide(nuclide).electron_energy_j_per_mbq_s * _SECONDS_PER_HOUR / voxel_ml * _GRAMS_PER_KG
    )
    is_torch = _is_tensor(tia_mbq_h)
    tia: Any = tia_mbq_h if is_torch else np.asarray(tia_mbq_h, dtype=np.float64)
    _finite_nonnegative(tia, "tia_mbq_h", "TIA is time-integrated activity (≥ 0)")
    _broadcast_check(tuple(tia.shape), _shape_of(density_g_per_ml), "tia_mbq_h", "density_g_per_ml")
    _check_density(density_g_per_ml, "density_g_per_ml")
    if is_torch and not tia.is_floating_point():
        tia = tia.double()
    return tia * gy_per_mbq_h_unit_density * _clipped_density_ratio(density_g_per_ml, 1.0, floor, tia)


def density_from_hu(hu: Any, curve: Literal["bilinear", "linear"] = "bilinear") -> Any:
    """Mass density (g/mL) from CT numbers (HU); clipped below at air (0.0012 g/mL).

    "bilinear": ρ = 1 + HU/1000 for HU ≤ 0, ρ = 1 + 0.63838e-3·HU above (water to bone through the Schneider
    et al. 2000 calibration at 1000 HU, 1.638 g/mL). "linear": ρ = 1 + HU/1000 everywhere (the crude form).

    Args:
        hu: CT numbers, any shape (NumPy or torch).
        curve: "bilinear" (default) or "linear".
    """
    if curve not in ("bilinear", "linear"):
        raise InputError(f"unknown HU→density curve {curve!r}; use 'bilinear' or 'linear'")
    if _is_tensor(hu):
        torch_mod = _torch_module()
        h = hu if hu.is_floating_point() else hu.double()
        if bool((~torch_mod.isfinite(h.detach())).any()):
            raise InputError("hu contains NaN or infinite values; fill padding outside the CT field with -1000 HU")
        rho = 1.0 + h / 1000.0
        if curve == "bilinear":
            rho = torch_mod.where(h > 0, 1.0 + h * _HU_BONE_SLOPE_G_PER_ML_PER_HU, rho)
        return torch_mod.clamp(rho, min=AIR_DENSITY_G_PER_ML)
    h_np = np.asarray(hu, dtype=np.float64)
    if not np.all(np.isfinite(h_np)):
        raise InputError("hu contains NaN or infinite values; fill padding outside the CT field with -1000 HU")
    rho_np = 1.0 + h_np / 1000.0
    if curve == "bilinear":
        rho_np = np.where(h_np > 0, 1.0 + h_np * _HU_BONE_SLOPE_G_PER_ML_PER_HU, rho_np)
    return np.maximum(rho_np, AIR_DENSITY_G_PER_ML)


def sphere_model_dose(tia_mbq_h: Any, volume_ml: Any, medium: str = "soft_tissue") -> npt.NDArray[np.float64]:
    """Mean self-dose (Gy) of a uniformly filled sphere: D = TIA · S(V) · 3.6, S from the kernels module.

    Args:
        tia_mbq_h: the sphere's TIA in MBq·h (scalar or array).
        volume_ml: sphere volume in mL (broadcast against the TIA).
        medium: medium of the sphere S value (as `ludl.physics.kernels.sphere_s_value_mgy_per_mbq_s` accepts).
    """
    # Imported here: kernels is the heavier module (point-kernel tables), and only this function needs it.
    from ludl.physics.kernels import sphere_s_value_mgy_per_mbq_s

    tia = np.asarray(tia_mbq_h, dtype=np.float64)
    vol = np.asarray(volume_ml, dtype=np.float64)
    _finite_nonnegative(tia, "tia_mbq_h", "a sphere's TIA is ≥ 0 MBq·h")
    if not (np.all(np.isfinite(vol)) and np.all(vol > 0)):
        raise InputError(f"volume_ml must be positive and finite, got {volume_ml}")
    tia_b, vol_b = np.broadcast_arrays(tia, vol)
    s_flat = [float(sphere_s_value_mgy_per_mbq_s(float(v), medium=medium)) for v in vol_b.ravel()]
    s = np.asarray(s_flat, dtype=np.float64).reshape(vol_b.shape)
    result: npt.NDArray[np.float64] = tia_b * s * MGY_PER_MBQ_S_TO_GY_PER_MBQ_H
    return result
