"""Training losses: segmentation with partly labelled classes, relative voxel dose, region mean dose, non-response.

All are pure functions of tensors (no module state) and return a scalar.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ludl.errors import InputError
from ludl.io.regions import SEGMENTATION_CLASSES

__all__ = [
    "DEFAULT_DOSE_FLOOR_GY",
    "dose_weight_map",
    "focal_bce",
    "masked_dice_ce",
    "region_mean_dose_loss",
    "relative_dose_loss",
]

# Below this dose an error counts as absolute (error / floor) rather than relative: background voxels get a few
# tenths of a Gy per cycle, kidneys and salivary glands 2–6 Gy, lesions 10–60 Gy; a 1 Gy floor keeps noise in
# low-dose background from dominating while every organ at risk is scored relatively.
DEFAULT_DOSE_FLOOR_GY = 1.0


def _labelled_mask(labelled: Any, batch: int, n_classes: int, device: torch.device) -> torch.Tensor:
    lab = torch.ones(batch, n_classes, dtype=torch.bool, device=device) if labelled is None else labelled
    lab = torch.as_tensor(lab, device=device).bool()
    if lab.shape != (batch, n_classes):
        raise InputError(
            f"labelled must be (batch, classes) = ({batch}, {n_classes}) booleans, got shape {tuple(lab.shape)}"
        )
    # Background is never "unlabelled": it is where unlabelled classes hide.
    return torch.cat([torch.ones_like(lab[:, :1]), lab[:, 1:]], dim=1)


def masked_dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    labelled: torch.Tensor | None = None,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice + cross-entropy where some classes are not contoured in some samples.

    A class that is unlabelled in a sample may sit anywhere its label map says "background" (0). So for that
    sample the background and every unlabelled class are merged into one outcome: its probability is the sum of
    theirs (the marginal loss of Shi et al. 2021, MedIA 70:101979). CE on background voxels scores
    log(p_bg + Σ p_unlabelled) — predicting an unlabelled organ there is neither penalised (as it would be if it
    counted as background) nor rewarded (as foreground). Dice is averaged over the labelled foreground classes
    only. Voxels whose target is an unlabelled class (should not happen) count as that merged outcome too.

    Args:
        logits: (B, C, Z, Y, X) class logits.
        target: (B, Z, Y, X) or (B, 1, Z, Y, X) class indices.
        labelled: (B, C) booleans, True where class c is contoured in sample b (None: all labelled). Entry 0
            (background) is ignored.
        dice_weight, ce_weight: weights of the two terms.
        smooth: Dice smoothing (a class absent from target and prediction scores Dice 1).
    """
    if target.ndim == logits.ndim:
        target = target[:, 0]
    b, c = logits.shape[:2]
    if target.shape != (b, *logits.shape[2:]):
        raise InputError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    lab = _labelled_mask(labelled, b, c, logits.device)
    target = target.long()
    log_p = F.log_softmax(logits.float(), dim=1)
    if bool(lab.all()):  # everything contoured: plain CE (skips a C-channel temporary on every step)
        ce = F.nll_loss(log_p, target)
    else:
        merged = ~lab  # (B, C): classes folded into background, plus background itself
        merged[:, 0] = True
        view = (b, c) + (1,) * (logits.ndim - 2)
        # log Σ_{c merged} p_c, via logsumexp over the merged classes only (−inf for the rest).
        log_merged = torch.logsumexp(log_p.masked_fill(~merged.view(view), float("-inf")), dim=1)
        log_target = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        target_is_merged = merged.gather(1, target.reshape(b, -1)).reshape(target.shape)
        ce = -torch.where(target_is_merged, log_merged, log_target).mean()
    probs = log_p.exp().reshape(b, c, -1)
    flat_target = target.reshape(b, 1, -1)
    # Σ_v p_c·[t_v = c] and Σ_v [t_v = c] by scatter-add: no one-hot tensor of C × voxels.
    inter = torch.zeros(b, c, dtype=probs.dtype, device=probs.device).scatter_add_(
        1, flat_target.squeeze(1), probs.gather(1, flat_target).squeeze(1)
    )
    counts = torch.zeros_like(inter).scatter_add_(
        1, flat_target.squeeze(1), torch.ones_like(flat_target.squeeze(1), dtype=probs.dtype)
    )
    dice = (2 * inter + smooth) / (probs.sum(dim=2) + counts + smooth)  # (B, C)
    scored = lab.clone()
    scored[:, 0] = False
    dice_loss = (1 - dice)[scored].sum() / scored.sum().clamp_min(1)  # no labelled foreground: 0
    return dice_weight * dice_loss + ce_weight * ce


def dose_weight_map(
    labels: torch.Tensor,
    body_mask: torch.Tensor | None = None,
    *,
    body: float = 1.0,
    organ: float = 4.0,
    marrow: float = 4.0,
    lesion: float = 8.0,
    outside: float = 0.1,
) -> torch.Tensor:
    """Voxel weights for `relative_dose_loss` from a label map of the canonical class table.

    Organs at risk and lesions decide treatment, so they weigh more than the rest of the body; outside the body
    (air, couch) dose is noise and weighs little. Without `body_mask` every voxel not in a class gets `body`.

    Args:
        labels: (B, Z, Y, X) or (B, 1, Z, Y, X) class indices (`ludl.io.regions.SEGMENTATION_CLASSES`).
        body_mask: optional body contour, same shape (non-zero inside).
        body, organ, marrow, lesion, outside: weights per kind.
    """
    if labels.ndim == 4:
        labels = labels[:, None]
    by_kind = {"background": body, "organ": organ, "marrow": marrow, "lesion": lesion}
    table = torch.tensor([by_kind[c.kind] for c in SEGMENTATION_CLASSES], dtype=torch.float32, device=labels.device)
    weights = table[labels.long().clamp(0, len(SEGMENTATION_CLASSES) - 1)]
    if body_mask is not None:
        if body_mask.ndim == 4:
            body_mask = body_mask[:, None]
        weights = torch.where((body_mask != 0) | (labels != 0), weights, torch.full_like(weights, outside))
    return weights


def relative_dose_loss(
    pred_gy: torch.Tensor,
    target_gy: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    floor_gy: float = DEFAULT_DOSE_FLOOR_GY,
) -> torch.Tensor:
    """Weighted mean relative absolute dose error: Σ w·|D̂ − D| / max(D, floor) / Σ w.

    Relative, because a 10 % error matters alike in a kidney at 4 Gy and a lesion at 40 Gy; the floor turns it into
    an absolute error (in units of the floor) where the target is near 0, so background noise does not dominate.

    Args:
        pred_gy, target_gy: dose maps (B, 1, Z, Y, X) in Gy.
        weights: voxel weights broadcastable to the maps (e.g. `dose_weight_map`), None for uniform.
        floor_gy: lower clip of the denominator.
    """
    if pred_gy.shape != target_gy.shape:
        raise InputError(f"predicted dose {tuple(pred_gy.shape)} and target {tuple(target_gy.shape)} differ in shape")
    if not floor_gy > 0:
        raise InputError(f"floor_gy must be positive, got {floor_gy}")
    pred = pred_gy.float()
    target = target_gy.float()
    err = (pred - target).abs() / target.clamp_min(floor_gy)
    if weights is None:
        return err.mean()
    w = torch.broadcast_to(weights.to(err.dtype), err.shape)
    return (w * err).sum() / w.sum().clamp_min(1e-12)


def region_mean_dose_loss(
    pred_gy: torch.Tensor,
    target_region_means_gy: torch.Tensor,
    region_masks: torch.Tensor,
    present: torch.Tensor | None = None,
    *,
    floor_gy: float = DEFAULT_DOSE_FLOOR_GY,
) -> torch.Tensor:
    """Mean relative error of region mean doses (what clinics report): |mean_R D̂ − D_R| / max(D_R, floor).

    The target means must be over the same voxels as the masks (a patch holds part of an organ: take the target
    dose map's mean over the mask, not the whole organ's mean from the truth table).

    Args:
        pred_gy: predicted dose (B, 1, Z, Y, X) in Gy.
        target_region_means_gy: (B, R) target mean dose per region.
        region_masks: (B, R, Z, Y, X) region masks or weights (≥ 0).
        present: (B, R) booleans of the regions to score (default: regions with a non-empty mask).
        floor_gy: lower clip of the denominator.
    """
    b, r = target_region_means_gy.shape
    if region_masks.shape[:2] != (b, r) or region_masks.shape[2:] != pred_gy.shape[2:]:
        raise InputError(
            f"region_masks {tuple(region_masks.shape)} must be (B, R, Z, Y, X) with (B, R) = ({b}, {r}) on the "
            f"dose grid {tuple(pred_gy.shape[2:])}"
        )
    masks = region_masks.float().reshape(b, r, -1)
    volume = masks.sum(dim=2)
    # Masked sums as one batched matrix-vector product: no R × voxels temporary.
    pred_sum = torch.bmm(masks, pred_gy.float().reshape(b, -1, 1)).squeeze(2)
    pred_mean = pred_sum / volume.clamp_min(1e-12)
    target = target_region_means_gy.float()
    scored = volume > 0 if present is None else present.bool() & (volume > 0)
    if not bool(scored.any()):
        return pred_mean.sum() * 0.0  # keeps the graph; nothing to score
    err = (pred_mean - target).abs() / target.clamp_min(floor_gy)
    return err[scored].mean()


def focal_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """Focal binary cross-entropy (Lin et al. 2017): mean of −α_t (1 − p_t)^γ log p_t; γ = 0, α = None is BCE.

    Args:
        logits: (B,) non-response logits.
        targets: (B,) 0/1 labels (1 = non-response).
        gamma: focusing exponent (≥ 0).
        alpha: weight of the positive class in [0, 1] (negatives get 1 − α), or None for none.
    """
    if logits.shape != targets.shape:
        raise InputError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    if gamma < 0 or (alpha is not None and not 0 <= alpha <= 1):
        raise InputError(f"focal_bce needs gamma ≥ 0 and alpha in [0, 1], got gamma={gamma}, alpha={alpha}")
    x = logits.float()
    y = targets.to(x.dtype)
    log_pt = -F.binary_cross_entropy_with_logits(x, y, reduction="none")
    loss = -log_pt
    if gamma > 0:
        loss = loss * (1 - log_pt.exp()) ** gamma
    if alpha is not None:
        loss = loss * (alpha * y + (1 - alpha) * (1 - y))
    return loss.mean()
