"""The physics layer: same dose as `ludl.physics.dose` for the same TIA, τ bounds, fp32 under autocast, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ludl.errors import InputError
from ludl.models.physics_layer import DosePhysicsLayer, TauBounds, bounded_tau
from ludl.physics.dose import dose_from_tia, voxel_tia_mbq_h
from ludl.physics.kernels import voxel_s_kernel

SHAPE = (10, 12, 9)


def _inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    activity = torch.rand((batch, 1, *SHAPE), generator=gen) * 0.5  # MBq/mL
    tau = 20.0 + 300.0 * torch.rand((batch, 1, *SHAPE), generator=gen)  # h
    density = 0.2 + 1.5 * torch.rand((batch, 1, *SHAPE), generator=gen)  # g/mL, some below the floor
    return activity, tau, density


def _numpy_dose(activity: np.ndarray, tau: np.ndarray, density: np.ndarray, spacing: tuple) -> np.ndarray:
    """The pipeline's road, in float64 NumPy: TIA map → voxel TIA → DVK dose with ρ_k/ρ_CT."""
    tia = voxel_tia_mbq_h(activity.astype(np.float64) * tau.astype(np.float64), spacing)
    return np.asarray(dose_from_tia(tia, voxel_s_kernel(spacing), density_g_per_ml=density.astype(np.float64)))


@pytest.mark.parametrize("spacing", [(4.8, 4.8, 4.8), (4.8, 4.42, 4.42)])
def test_dose_equals_numpy_pipeline_dose(spacing: tuple[float, float, float]) -> None:
    activity, tau, density = _inputs()
    out = DosePhysicsLayer()(activity, tau, density, spacing)
    expected = _numpy_dose(activity.numpy(), tau.numpy(), density.numpy(), spacing)
    assert out.dose_gy.dtype == torch.float32
    np.testing.assert_allclose(out.dose_gy.numpy(), expected, rtol=1e-5, atol=1e-6 * expected.max())
    np.testing.assert_allclose(out.tia_mbq_h_per_ml.numpy(), activity.numpy() * tau.numpy(), rtol=1e-6)


def test_per_sample_spacings_match_separate_calls() -> None:
    activity, tau, density = _inputs()
    spacings = [(4.8, 4.8, 4.8), (3.0, 4.42, 4.42)]
    out = DosePhysicsLayer()(activity, tau, density, torch.tensor(spacings))
    for i, spacing in enumerate(spacings):
        expected = _numpy_dose(activity[i : i + 1].numpy(), tau[i : i + 1].numpy(), density[i : i + 1].numpy(), spacing)
        np.testing.assert_allclose(out.dose_gy[i : i + 1].numpy(), expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_point_source_dose_is_kernel_times_tia() -> None:
    # 1 MBq/mL for τ = 10 h in one 4.8 mm voxel of soft tissue (ρ = ρ_k): D = K · TIA · 3600 s/h · 1e-3 Gy/mGy.
    spacing = (4.8, 4.8, 4.8)
    activity = torch.zeros(1, 1, 15, 15, 15)
    activity[0, 0, 7, 7, 7] = 1.0
    out = DosePhysicsLayer()(activity, torch.full_like(activity, 10.0), torch.full_like(activity, 1.04), spacing)
    kernel = voxel_s_kernel(spacing)
    tia_mbq_s = 1.0 * 10.0 * (4.8**3 / 1000.0) * 3600.0
    expected_center = kernel[5, 5, 5] * tia_mbq_s * 1e-3
    expected_face = kernel[6, 5, 5] * tia_mbq_s * 1e-3
    assert float(out.dose_gy[0, 0, 7, 7, 7]) == pytest.approx(expected_center, rel=1e-5)
    assert float(out.dose_gy[0, 0, 8, 7, 7]) == pytest.approx(expected_face, rel=1e-4)


def test_kernel_spectrum_is_cached_per_spacing_and_shape() -> None:
    layer = DosePhysicsLayer()
    activity, tau, density = _inputs()
    layer(activity, tau, density, (4.8, 4.8, 4.8))
    spec = layer.spectrum((4.8, 4.8, 4.8), SHAPE, activity.device)
    layer(activity[:1], tau[:1], density[:1], (4.8, 4.8, 4.8))  # other batch size, same patch: same spectrum
    assert len(layer._spectra) == 1 and layer.spectrum((4.8, 4.8, 4.8), SHAPE, activity.device) is spec
    assert layer.state_dict() == {}  # derived data stays out of checkpoints
    assert layer.border_voxels((4.8, 4.8, 4.8)) == (5, 5, 5)


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_tau_stays_within_bounds(scale: str) -> None:
    time_h = torch.tensor([4.0, 24.0, 168.0])
    raw = torch.tensor([-1e4, -30.0, -3.0, 0.0, 3.0, 30.0, 1e4]).repeat(3, 1)
    tau = bounded_tau(raw, time_h, 20_000.0, scale)  # type: ignore[arg-type]
    lower = math.e * time_h[:, None]
    assert torch.all(tau >= lower * (1 - 1e-6)) and torch.all(tau <= 20_000.0 * (1 + 1e-6))
    torch.testing.assert_close(tau[:, 0], lower[:, 0])
    torch.testing.assert_close(tau[:, -1], torch.full((3,), 20_000.0))
    assert torch.all(torch.diff(tau, dim=1) >= 0)  # monotone in the raw value
    mid = torch.sqrt(lower[:, 0] * 20_000.0) if scale == "log" else (lower[:, 0] + 20_000.0) / 2
    torch.testing.assert_close(tau[:, 3], mid)


def test_tau_bounds_reject_tau_max_below_e_t() -> None:
    with pytest.raises(InputError, match="tau_max_h"):
        bounded_tau(torch.zeros(1, 1, 2, 2, 2), 200.0, 500.0)  # e · 200 h = 544 h > 500 h
    with pytest.raises(InputError, match="time_h"):
        TauBounds(1000.0).check(-1.0)
    # Mono-exponential voxels: τ = e^{λt}/λ ≥ e·t for every λ, the reason for the lower bound.
    lam = np.logspace(-4, 0, 200)
    for t in (4.0, 24.0, 168.0):
        assert np.all(np.exp(lam * t) / lam >= math.e * t * (1 - 1e-12))


def test_bf16_autocast_keeps_dose_in_fp32() -> None:
    layer = DosePhysicsLayer()
    activity, tau, density = _inputs()
    reference = layer(activity, tau, density, (4.8, 4.42, 4.42)).dose_gy
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = layer(activity, tau, density, (4.8, 4.42, 4.42)).dose_gy
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    low = layer(activity.bfloat16(), tau.bfloat16(), density.bfloat16(), (4.8, 4.42, 4.42)).dose_gy
    assert low.dtype == torch.float32  # bf16 inputs are computed in fp32 too (only their rounding differs)
    torch.testing.assert_close(low, reference, rtol=2e-2, atol=1e-3 * float(reference.max()))


def test_gradcheck_through_the_physics_layer() -> None:
    layer = DosePhysicsLayer()
    gen = torch.Generator().manual_seed(1)
    activity = torch.rand((1, 1, 4, 5, 4), generator=gen, dtype=torch.float64)
    density = 0.9 + 0.3 * torch.rand((1, 1, 4, 5, 4), generator=gen, dtype=torch.float64)
    tau = (50.0 + 100.0 * torch.rand((1, 1, 4, 5, 4), generator=gen, dtype=torch.float64)).requires_grad_()

    def dose_of(t: torch.Tensor) -> torch.Tensor:
        return layer(activity, t, density, (4.8, 4.42, 4.42)).dose_gy

    assert torch.autograd.gradcheck(dose_of, (tau,), eps=1e-4, atol=1e-6, rtol=1e-4)


def test_shape_mismatch_names_the_fix() -> None:
    activity, tau, density = _inputs()
    with pytest.raises(InputError, match="resample the CT density"):
        DosePhysicsLayer()(activity, tau, density[..., :-1], (4.8, 4.8, 4.8))
    with pytest.raises(InputError, match="spacing_zyx_mm"):
        DosePhysicsLayer()(activity, tau, density, (4.8, 4.8))
