"""DoseNet end to end: gradients through the physics layer, a few Adam steps lower the loss, modes and options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ludl.errors import InputError
from ludl.io.regions import SEGMENTATION_CLASSES, class_index
from ludl.models.backbones import dynunet
from ludl.models.network import DoseNet
from ludl.physics.dose import dose_from_tia, voxel_tia_mbq_h
from ludl.physics.kernels import voxel_s_kernel
from ludl.training.losses import dose_weight_map, masked_dice_ce, relative_dose_loss

N_CLASSES = len(SEGMENTATION_CLASSES)
SPACING = (4.8, 4.8, 4.8)
PATCH = 24


def _blob(center: tuple[float, float, float], radius: float) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(PATCH, dtype=np.float64),) * 3, indexing="ij")
    r2 = (z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2
    return np.exp(-r2 / (2 * radius**2))


@pytest.fixture(scope="module")
def batch() -> dict:
    """Two patches: a liver-like blob and a lesion blob in background; target dose from a known τ per region."""
    time_h = np.array([24.0, 96.0])
    injected_gbq = np.array([7.4, 6.0])
    activity, target, labels = [], [], []
    for i, t in enumerate(time_h):
        organ = _blob((8, 10, 12 + 2 * i), 4.0)
        lesion = _blob((16, 15, 8), 2.0)
        a = (0.01 + 0.2 * organ + 1.0 * lesion) * injected_gbq[i] / 7.4  # MBq/mL
        # True τ: organ clears with T_eff 40 h, lesion 120 h, background 20 h (mono-exponential: e^{λt}/λ).
        tau = np.full(a.shape, 0.0)
        for mask_w, t_eff in ((1.0, 20.0), (organ, 40.0), (lesion, 120.0)):
            lam = np.log(2) / t_eff
            tau = tau * (1 - mask_w) + mask_w * np.exp(lam * t) / lam
        tia = voxel_tia_mbq_h(a * tau, SPACING)
        target.append(dose_from_tia(tia, voxel_s_kernel(SPACING), density_g_per_ml=np.ones_like(a)))
        lab = np.zeros(a.shape, dtype=np.int64)
        lab[organ > 0.5] = class_index("liver")
        lab[lesion > 0.5] = class_index("lesion")
        activity.append(a)
        labels.append(lab)
    as_t = lambda xs: torch.tensor(np.stack(xs)[:, None], dtype=torch.float32)  # noqa: E731
    act = as_t(activity)
    return {
        "activity_mbq_per_ml": act,
        "suv": 1.0 + 20.0 * act,
        "density_g_per_ml": torch.ones_like(act),
        "time_h": torch.tensor(time_h, dtype=torch.float32),
        "injected_gbq": torch.tensor(injected_gbq, dtype=torch.float32),
        "spacing_zyx_mm": SPACING,
        "target_dose_gy": as_t(target),
        "labels": torch.tensor(np.stack(labels)),
    }


def _net(**kwargs: object) -> DoseNet:
    torch.manual_seed(0)
    conditioning = str(kwargs.get("time_conditioning", "film"))
    backbone = dynunet(DoseNet.in_channels_for(conditioning), 8, filters=(8, 16, 32))
    return DoseNet(backbone, 8, N_CLASSES, **kwargs)  # type: ignore[arg-type]


def test_gradients_reach_kinetics_head_and_backbone_through_the_physics_layer(batch: dict) -> None:
    net = _net(residual=False)
    # The τ row starts at 0 (τ = prior), which blocks the backbone's gradient for the first step only.
    with torch.no_grad():
        net.heads.conv.weight[N_CLASSES:].normal_(std=0.01)
    out = net(batch)
    relative_dose_loss(out.dose_gy, batch["target_dose_gy"]).backward()
    grad = net.heads.conv.weight.grad
    last = None if grad is None else grad[N_CLASSES:]
    first_conv = next(iter(net.backbone.parameters())).grad
    assert last is not None and float(last.abs().sum()) > 0
    assert first_conv is not None and float(first_conv.abs().sum()) > 0
    assert out.tau_h is not None and torch.all(out.tau_h >= np.e * 24.0 * (1 - 1e-6))


def test_initial_tau_is_haenscheid(batch: dict) -> None:
    with torch.no_grad():
        out = _net()(batch)
    assert out.tau_h is not None and out.tia_mbq_h_per_ml is not None
    expected = 2.0 * batch["time_h"] / np.log(2.0)
    torch.testing.assert_close(out.tau_h.amin(dim=(1, 2, 3, 4)), expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(out.tau_h.amax(dim=(1, 2, 3, 4)), expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(out.tia_mbq_h_per_ml, batch["activity_mbq_per_ml"] * out.tau_h)


@pytest.mark.parametrize("mode", ["tau", "direct"])
def test_adam_steps_lower_the_loss(batch: dict, mode: str) -> None:
    net = _net(dose_mode=mode)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    weights = dose_weight_map(batch["labels"])
    dose_losses, total = [], []
    for _ in range(16):
        opt.zero_grad()
        out = net(batch)
        dose_loss = relative_dose_loss(out.dose_gy, batch["target_dose_gy"], weights)
        loss = 20.0 * dose_loss + masked_dice_ce(out.seg_logits, batch["labels"])
        loss.backward()
        opt.step()
        dose_losses.append(float(dose_loss.detach()))
        total.append(float(loss.detach()))
    assert total[-1] < 0.75 * total[0], total
    assert dose_losses[-1] < 0.85 * dose_losses[0], dose_losses


def test_film_conditioning_and_bf16_autocast(batch: dict) -> None:
    net = _net(time_conditioning="film")
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = net(batch)
    assert out.dose_gy.dtype == torch.float32 and out.tau_h is not None and out.tau_h.dtype == torch.float32
    assert torch.all(torch.isfinite(out.dose_gy)) and float(out.dose_gy.amax()) > 0


def test_bad_options_and_batches(batch: dict) -> None:
    with pytest.raises(InputError, match="dose_mode"):
        _net(dose_mode="voxel")
    with pytest.raises(InputError, match="lacks suv"):
        _net()({k: v for k, v in batch.items() if k != "suv"})


def test_film_moves_tau_with_the_scan_time(batch: dict) -> None:
    """FiLM's τ-logit offset is a function of log t: τ = e·t·(τ_max/(e·t))^sigmoid(prior logit + offset(t))."""
    net = _net(time_conditioning="film")
    assert net.film is not None
    with torch.no_grad():
        last = net.film[2]
        last.weight.zero_()
        last.bias.zero_()
        first = net.film[0]
        first.weight.fill_(1.0)  # hidden = SiLU(log(t/24) + b): differs between the 24 h and the 96 h sample
        last.weight[-1, 0] = 1.0
        out = net(batch)
        t = batch["time_h"].double()
        log_t = torch.log(t / 24.0).reshape(-1, 1)
        offset = torch.nn.functional.silu(log_t * first.weight[0, 0].double() + first.bias[0].double())[:, 0]
        lower, tau_max = np.e * t, 20000.0
        prior = 2.0 * t / np.log(2.0)
        frac = (torch.log(prior) - torch.log(lower)) / (np.log(tau_max) - torch.log(lower))
        expected = lower * (tau_max / lower) ** torch.sigmoid(torch.logit(frac) + offset)
    assert out.tau_h is not None
    assert float((offset[0] - offset[1]).abs()) > 0.1
    torch.testing.assert_close(out.tau_h.double().amin(dim=(1, 2, 3, 4)), expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(out.tau_h.double().amax(dim=(1, 2, 3, 4)), expected, rtol=1e-4, atol=0)


def test_softplus_tau_starts_at_haenscheid_moves_log_tau_one_for_one_and_keeps_its_bounds(batch: dict) -> None:
    """τ = e·t·exp(softplus₅₀(raw)) ∈ [e·t, τ_max]: starts at 2t/ln 2, and near it log τ follows the head ≈ 1:1
    (the "log" scale moves it by ≈ 0.06 per unit there: span log(τ_max/(e·t)) × sigmoid slope at the prior)."""
    net = _net(tau_scale="softplus", residual=False)
    t = batch["time_h"]
    with torch.no_grad():
        tau0 = net(batch).tau_h
        assert tau0 is not None
        torch.testing.assert_close(tau0.amax(dim=(1, 2, 3, 4)), 2.0 * t / np.log(2.0), rtol=1e-4, atol=0)
        bias = net.heads.conv.bias
        assert bias is not None
        bias[N_CLASSES] = 0.1  # + 0.1 on the head output: τ × ≈ e^(0.1·0.95) (β = 50: slope sigmoid(2.93) = 0.95)
        ratio = net(batch).tau_h / tau0  # type: ignore[operator]
        assert float(ratio.amin()) == pytest.approx(float(np.exp(0.1 * 0.95)), rel=0.01)
        log_net = _net(tau_scale="log", residual=False)
        log_net.heads.conv.bias[N_CLASSES] = 0.1  # type: ignore[index]
        log_ratio = float((log_net(batch).tau_h / tau0).amin())  # type: ignore[operator]
        assert 1.0 < log_ratio < np.exp(0.1 * 0.1)  # ≤ 0.1 × the softplus slope
        for value, lo, hi in ((-50.0, np.e, np.e * 1.001), (50.0, 20000.0, 20000.0)):
            bias[N_CLASSES] = value  # far below: τ rests on e·t; far above: on τ_max
            tau = net(batch).tau_h
            assert tau is not None
            per_t = t.reshape(-1, 1, 1, 1, 1)
            bound_lo, bound_hi = (lo * per_t, hi * per_t) if value < 0 else (lo, hi)
            assert torch.all(tau >= bound_lo * (1 - 1e-5)) and torch.all(tau <= bound_hi * (1 + 1e-5))


def test_softplus_tau_unknown_scale_is_refused() -> None:
    with pytest.raises(InputError, match="tau_scale"):
        _net(tau_scale="sqrt")


@pytest.mark.parametrize("scale", ["log", "softplus"])
def test_population_prior_starts_at_a_mono_exponentials_tau(batch: dict, scale: str) -> None:
    """τ starts at (T/ln 2)·e^(ln 2·t/T), the TIA / A(t) of a mono-exponential with the population T_eff: written
    out here, not taken from the code under test."""
    t_eff_h = 40.0
    net = _net(tau_scale=scale, residual=False, tau_prior="population", tau_prior_t_eff_h=t_eff_h)
    t = batch["time_h"].double()
    expected = t_eff_h / np.log(2.0) * torch.exp(np.log(2.0) * t / t_eff_h)
    with torch.no_grad():
        tau0 = net(batch).tau_h
    assert tau0 is not None
    torch.testing.assert_close(tau0.amax(dim=(1, 2, 3, 4)).double(), expected, rtol=1e-3, atol=0)
    assert torch.all(expected >= np.e * t)  # a mono-exponential's τ is never below the bound e·t


def test_population_prior_needs_a_positive_t_eff() -> None:
    with pytest.raises(InputError, match="tau_prior_t_eff_h"):
        _net(tau_prior="population", tau_prior_t_eff_h=0.0)
    with pytest.raises(InputError, match="tau_prior"):
        _net(tau_prior="exponential")
