"""Losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ludl.errors import InputError
from ludl.io.regions import class_index
from ludl.training.losses import (
    dose_weight_map,
    focal_bce,
    masked_dice_ce,
    region_mean_dose_loss,
    relative_dose_loss,
)


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# Two voxels, three classes (0 background, 1, 2). Voxel 0 is background, voxel 1 class 1.
LOGITS = torch.tensor([[[1.0, 0.5], [0.2, 2.0], [1.5, -1.0]]]).reshape(1, 3, 2, 1, 1)
TARGET = torch.tensor([0, 1]).reshape(1, 2, 1, 1)
P = [_softmax([1.0, 0.2, 1.5]), _softmax([0.5, 2.0, -1.0])]  # per voxel, per class


def test_ce_all_labelled_is_plain_cross_entropy() -> None:
    loss = masked_dice_ce(LOGITS, TARGET, dice_weight=0.0)
    expected = -(math.log(P[0][0]) + math.log(P[1][1])) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(loss) == pytest.approx(float(F.cross_entropy(LOGITS, TARGET)), rel=1e-6)


def test_unlabelled_class_merges_with_background() -> None:
    labelled = torch.tensor([[True, True, False]])  # class 2 not contoured in this sample
    ce = masked_dice_ce(LOGITS, TARGET, labelled, dice_weight=0.0)
    expected = -(math.log(P[0][0] + P[0][2]) + math.log(P[1][1])) / 2
    assert float(ce) == pytest.approx(expected, rel=1e-6)
    # Dice over labelled foreground only: class 1, soft Dice = 2 Σ p·g / (Σ p + Σ g).
    dice = masked_dice_ce(LOGITS, TARGET, labelled, ce_weight=0.0, smooth=0.0)
    p1 = [P[0][1], P[1][1]]
    assert float(dice) == pytest.approx(1 - 2 * p1[1] / (sum(p1) + 1), rel=1e-6)
    # With class 2 labelled, Dice also scores it (absent from the target, so its Dice is 0 without smoothing).
    both = masked_dice_ce(LOGITS, TARGET, ce_weight=0.0, smooth=0.0)
    assert float(both) == pytest.approx(((1 - 2 * p1[1] / (sum(p1) + 1)) + 1.0) / 2, rel=1e-6)


def test_predicting_an_unlabelled_class_on_background_is_not_penalised() -> None:
    logits = torch.tensor([[-5.0], [-5.0], [5.0]]).reshape(1, 3, 1, 1, 1)  # confident class 2 on a background voxel
    target = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    penalised = masked_dice_ce(logits, target, dice_weight=0.0)
    free = masked_dice_ce(logits, target, torch.tensor([[True, True, False]]), dice_weight=0.0)
    assert float(penalised) > 9.0 and float(free) < 1e-3


def test_relative_dose_loss_hand_computed() -> None:
    pred = torch.tensor([1.1, 0.5, 11.0]).reshape(1, 1, 3, 1, 1)
    target = torch.tensor([1.0, 0.1, 10.0]).reshape(1, 1, 3, 1, 1)
    weights = torch.tensor([1.0, 1.0, 2.0]).reshape(1, 1, 3, 1, 1)
    # errors: 0.1/1 (relative), 0.4/1 (below the floor: absolute in floor units), 1/10 (relative)
    loss = relative_dose_loss(pred, target, weights, floor_gy=1.0)
    assert float(loss) == pytest.approx((0.1 + 0.4 + 2 * 0.1) / 4, rel=1e-6)
    assert float(relative_dose_loss(pred, target, floor_gy=1.0)) == pytest.approx((0.1 + 0.4 + 0.1) / 3, rel=1e-6)
    with pytest.raises(InputError):
        relative_dose_loss(pred, target[..., :2, :, :])


def test_dose_weight_map_by_kind() -> None:
    labels = torch.tensor([0, class_index("liver"), class_index("lesion"), class_index("red_marrow"), 0])
    labels = labels.reshape(1, 5, 1, 1)
    body = torch.tensor([1, 1, 1, 1, 0]).reshape(1, 5, 1, 1)
    w = dose_weight_map(labels, body, body=1.0, organ=4.0, marrow=3.0, lesion=8.0, outside=0.1)
    assert w.flatten().tolist() == pytest.approx([1.0, 4.0, 8.0, 3.0, 0.1])


def test_region_mean_dose_loss_hand_computed() -> None:
    pred = torch.tensor([2.0, 4.0, 30.0, 0.0]).reshape(1, 1, 4, 1, 1)
    masks = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).reshape(1, 3, 4, 1, 1)
    target = torch.tensor([[2.5, 25.0, 7.0]])
    # region 0: mean 3 vs 2.5 → 0.2; region 1: 30 vs 25 → 0.2; region 2 is empty and not scored.
    loss = region_mean_dose_loss(pred, target, masks)
    assert float(loss) == pytest.approx(0.2, rel=1e-6)
    only_first = region_mean_dose_loss(pred, target, masks, torch.tensor([[True, False, True]]))
    assert float(only_first) == pytest.approx(0.2, rel=1e-6)
    low = region_mean_dose_loss(pred, torch.tensor([[0.5, 25.0, 7.0]]), masks, torch.tensor([[True, False, False]]))
    assert float(low) == pytest.approx((3.0 - 0.5) / 1.0, rel=1e-6)  # floor 1 Gy


def test_focal_bce_hand_computed() -> None:
    logits = torch.tensor([1.0, -2.0])
    targets = torch.tensor([1.0, 0.0])
    p = [1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(2.0))]
    bce = -(math.log(p[0]) + math.log(1 - p[1])) / 2
    assert float(focal_bce(logits, targets, gamma=0.0)) == pytest.approx(bce, rel=1e-6)
    focal = -((1 - p[0]) ** 2 * math.log(p[0]) + p[1] ** 2 * math.log(1 - p[1])) / 2
    assert float(focal_bce(logits, targets, gamma=2.0)) == pytest.approx(focal, rel=1e-6)
    weighted = -(0.25 * (1 - p[0]) ** 2 * math.log(p[0]) + 0.75 * p[1] ** 2 * math.log(1 - p[1])) / 2
    assert float(focal_bce(logits, targets, gamma=2.0, alpha=0.25)) == pytest.approx(weighted, rel=1e-6)
