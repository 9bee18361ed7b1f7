"""DoseLightningModule: the multi-task loss falls on a fixed batch; validation metrics; plain hyperparameters."""

from __future__ import annotations

import math

import pytest
import torch

from ludl.errors import InputError
from ludl.training.module import DoseLightningModule, LossConfig, region_masks
from tests.training.standins import TINY_MODEL, make_batch


def _module(**kwargs: object) -> DoseLightningModule:
    torch.manual_seed(0)
    return DoseLightningModule(
        model=TINY_MODEL, optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3}, **kwargs
    )


def test_training_steps_lower_the_loss_on_a_fixed_batch() -> None:
    module = _module()
    batch = make_batch()
    optimizer = module.configure_optimizers()
    first: dict[str, float] = {}
    for _ in range(15):
        optimizer.zero_grad()
        terms = module.losses(module(batch), batch)
        terms["loss"].backward()
        optimizer.step()
        first = first or {k: float(v.detach()) for k, v in terms.items()}
    with torch.no_grad():
        final = {k: float(v) for k, v in module.losses(module(batch), batch).items()}
    assert final["loss"] < 0.95 * first["loss"], (first, final)
    assert final["seg"] < first["seg"] and final["dose"] < first["dose"], (first, final)


def test_region_term_scores_the_chosen_region_means() -> None:
    """A prediction equal to the (uncorrected) target dose map: region term 0 against the uncorrected means (the
    default: the GTM corrects at prediction), the 10 % correction against the corrected ones."""
    batch = make_batch()
    module = _module(loss={"segmentation": 0.0, "dose": 0.0})
    out = module(batch)._replace(dose_gy=batch["dose_gy"])
    assert float(module.losses(out, batch)["region"]) == pytest.approx(0.0, abs=1e-6)
    module = _module(loss={"segmentation": 0.0, "dose": 0.0, "region_target": "corrected"})
    region = float(module.losses(out, batch)["region"])
    # region_dose_gy = 1.1 × the map's mean: |m − 1.1 m| / (1.1 m) = 1/11 (both regions above the 1 Gy floor?)
    means = batch["region_dose_uncorrected_gy"]
    expected = torch.where(1.1 * means >= 1.0, (0.1 * means) / (1.1 * means), 0.1 * means).mean()
    assert region == pytest.approx(float(expected), rel=1e-4)
    masks = region_masks(batch)
    assert masks.shape == (2, 2, 16, 16, 16) and bool(masks.any(dim=(2, 3, 4)).all())
    with pytest.raises(InputError, match="region_target"):
        LossConfig.from_mapping({"region_target": "pvc"})


def test_validation_logs_region_errors_and_hparams_are_plain() -> None:
    module = _module()
    batch = make_batch(1)
    module.validation_step(batch, 0)
    kinds = {r["kind"] for r in module._val_rows}
    assert {"organ", "lesion", "dice"} <= kinds
    assert all(math.isfinite(r.get("error_pct", 0.0)) for r in module._val_rows)
    # plain containers only: a checkpoint of them loads with weights_only=True
    assert isinstance(module.hparams["model"], dict) and isinstance(module.hparams["optimizer"], dict)


def test_unknown_loss_key_is_refused() -> None:
    with pytest.raises(InputError, match="unknown loss key"):
        LossConfig.from_mapping({"dose_weight": 1.0})


def test_sliding_window_runs_the_physics_on_the_whole_volume() -> None:
    """Windows over the network part; the dose is the whole-volume physics of the stitched τ (no patch edges)."""
    from ludl.training.inference import VolumePredictor

    module = _module()
    batch = make_batch(1, shape=(24, 20, 20))
    predictor = VolumePredictor(roi_size_zyx=(16, 16, 16), overlap=0.25)
    with torch.inference_mode():
        out = predictor(module.net, batch)
        assert out.tau_h is not None and out.residual_gy is not None
        whole = module.net.physics(
            batch["activity_mbq_per_ml"], out.tau_h, batch["density_g_per_ml"], batch["spacing_zyx_mm"]
        )
    assert out.dose_gy.shape == batch["dose_gy"].shape and out.seg_logits.shape[2:] == (24, 20, 20)
    torch.testing.assert_close(out.dose_gy, (whole.dose_gy + out.residual_gy).clamp_min(0.0))
    # τ within its bounds [e·t, τ_max]
    assert float(out.tau_h.min()) >= math.e * 24.0 * (1 - 1e-5) and float(out.tau_h.max()) <= 20_000.0


def test_the_scan_time_mlp_learns_at_its_own_rate() -> None:
    module = DoseLightningModule(
        model={**TINY_MODEL, "time_conditioning": "film"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3},
        time_lr_scale=10.0,
    )
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([3e-3, 3e-2])
    assert module.net.film is not None
    film = {id(p) for p in module.net.film.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == film
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(module.parameters()))
