"""Heads: shapes, starting values, the response features against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from ludl.errors import InputError
from ludl.models.heads import (
    RESPONSE_FEATURES,
    ResponseHead,
    VoxelHeads,
    response_features,
    signed_log1p,
)

SPACING = (2.0, 2.0, 2.0)  # 8 mm³ = 0.008 mL per voxel
VOXEL_ML = 0.008


def _column(features: torch.Tensor, name: str) -> torch.Tensor:
    return features[:, RESPONSE_FEATURES.index(name)]


def test_voxel_heads_shapes_and_starting_values() -> None:
    feats = torch.randn(2, 8, 4, 5, 6)
    tau_heads = VoxelHeads(8, 15, "tau", residual=True, residual_max_gy_per_gbq=0.5)
    out = tau_heads(feats)
    assert out.seg_logits.shape == (2, 15, 4, 5, 6) and out.direct_gy_per_gbq is None
    assert out.raw_tau is not None and torch.all(out.raw_tau == 0)  # starts at the τ prior
    assert out.residual_gy_per_gbq is not None and torch.all(out.residual_gy_per_gbq == 0)
    with torch.no_grad():
        tau_heads.conv.weight[15:] = 10.0
    residual = tau_heads(feats).residual_gy_per_gbq
    assert residual is not None and float(residual.abs().max()) <= 0.5  # bounded by residual_max_gy_per_gbq
    direct = VoxelHeads(8, 15, "direct")(feats)
    assert direct.raw_tau is None and direct.residual_gy_per_gbq is None
    assert direct.direct_gy_per_gbq is not None and direct.direct_gy_per_gbq.shape == (2, 1, 4, 5, 6)
    assert torch.all(direct.direct_gy_per_gbq >= 0)
    assert VoxelHeads(8, 15, "tau", residual=False)(feats).residual_gy_per_gbq is None
    with pytest.raises(InputError, match="dose_mode"):
        VoxelHeads(8, 15, "voxel")


def _two_lesion_case() -> tuple[torch.Tensor, ...]:
    dose = torch.zeros(1, 1, 2, 2, 3)
    mask = torch.zeros_like(dose)
    inst = torch.zeros_like(dose, dtype=torch.long)
    suv = torch.ones_like(dose)
    # lesion 1: two voxels at 10 and 20 Gy, SUV 8 and 12; lesion 2: one voxel at 4 Gy, SUV 30; background 1 Gy.
    dose[..., :] = 1.0
    for (z, y, x), d, s, i in (((0, 0, 0), 10.0, 8.0, 1), ((0, 0, 1), 20.0, 12.0, 1), ((1, 1, 2), 4.0, 30.0, 2)):
        dose[0, 0, z, y, x] = d
        suv[0, 0, z, y, x] = s
        mask[0, 0, z, y, x] = 1.0
        inst[0, 0, z, y, x] = i
    return dose, mask, inst, suv


def test_response_features_hand_computed() -> None:
    dose, mask, inst, suv = _two_lesion_case()
    f = response_features(dose, mask, suv, SPACING, lesion_instances=inst, low_dose_gy=10.0, low_dose_width_gy=0.0)
    assert f.shape == (1, len(RESPONSE_FEATURES))
    expected = {
        "wb_tumour_dose_gy": (10 + 20 + 4) / 3,
        "min_lesion_dose_gy": 4.0,  # lesion means 15 and 4
        "median_lesion_dose_gy": (15 + 4) / 2,
        "tumour_volume_ml": 3 * VOXEL_ML,
        "tumour_volume_below_ml": 1 * VOXEL_ML,  # only the 4 Gy voxel is below 10 Gy (10 is not below)
        "tumour_fraction_below": 1 / 3,
        "lesion_count": 2.0,
        "pet_suv_mean": (8 + 12 + 30) / 3,
        "pet_suv_max": 30.0,
        "pet_total_lesion_uptake": (8 + 12 + 30) / 3 * 3 * VOXEL_ML,
    }
    for name, value in expected.items():
        assert float(_column(f, name)[0]) == pytest.approx(value, rel=1e-6), name


def test_response_features_without_instances_and_without_lesions() -> None:
    dose, mask, _, suv = _two_lesion_case()
    f = response_features(dose, mask, suv, SPACING, low_dose_width_gy=0.0)
    wb = (10 + 20 + 4) / 3
    assert float(_column(f, "min_lesion_dose_gy")[0]) == pytest.approx(wb)  # one lesion: the whole mask
    assert float(_column(f, "median_lesion_dose_gy")[0]) == pytest.approx(wb)
    assert float(_column(f, "lesion_count")[0]) == 1.0
    empty = response_features(dose, torch.zeros_like(mask), suv, SPACING)
    assert torch.all(empty == 0) and torch.all(torch.isfinite(empty))


def test_soft_low_dose_volume_is_differentiable_and_tends_to_the_count() -> None:
    dose, mask, inst, suv = _two_lesion_case()
    dose = dose.clone().requires_grad_()
    soft = response_features(dose, mask, suv, SPACING, lesion_instances=inst, low_dose_gy=9.0, low_dose_width_gy=1e-3)
    assert float(_column(soft, "tumour_volume_below_ml")[0].detach()) == pytest.approx(VOXEL_ML, rel=1e-6)
    wide = response_features(dose, mask, suv, SPACING, lesion_instances=inst, low_dose_width_gy=2.0)
    _column(wide, "tumour_volume_below_ml").sum().backward()
    assert dose.grad is not None and float(dose.grad[0, 0, 1, 1, 2]) < 0  # more dose → less volume below


def test_response_head() -> None:
    head = ResponseHead(len(RESPONSE_FEATURES) + 4)
    logits = head(torch.randn(3, len(RESPONSE_FEATURES) + 4))
    assert logits.shape == (3,)
    with pytest.raises(InputError, match="ResponseHead expects"):
        head(torch.randn(3, 2))
    assert float(signed_log1p(torch.tensor(-(math.e - 1)))) == pytest.approx(-1.0)
