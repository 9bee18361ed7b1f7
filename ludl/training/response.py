"""The non-response head's second stage: fitted on frozen whole-volume outputs of the training patients.

Per patient, cycle 1, from the scan nearest `RESPONSE_TIMEPOINT_H`: `response_features` of the predicted dose
with the predicted lesion probability (instances = connected components of the predicted lesion mask) and the PET,
plus the backbone's pooled features → `ResponseHead`. A few hundred full-batch Adam steps: the patients are few and
the features fixed, so this takes seconds and cannot disturb the dose network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.heads import ResponseHead
from ludl.models.network import DoseNetOutput
from ludl.models.whole_volume import volume_response_features as whole_volume_response_features
from ludl.training.losses import focal_bce

__all__ = [
    "RESPONSE_TIMEPOINT_H",
    "fit_response_head",
    "nearest_timepoint_records",
    "predict_response",
    "volume_response_features",
]

# Scan whose prediction feeds the response head: 24 h is the most common single-scan protocol.
RESPONSE_TIMEPOINT_H = 24.0
_LESION_CLASS = next(c.index for c in SEGMENTATION_CLASSES if c.kind == "lesion")


def volume_response_features(batch: Mapping[str, Any], out: DoseNetOutput) -> torch.Tensor:
    """(1, n) features of one whole volume (`ludl.models.whole_volume.volume_response_features` with the lesion
    class): `response_features` of the prediction, then the pooled features."""
    return whole_volume_response_features(batch, out, _LESION_CLASS)


def nearest_timepoint_records(records: Sequence[Any], timepoint_h: float = RESPONSE_TIMEPOINT_H) -> list[Any]:
    """Cycle-1 case records reduced to their time point nearest `timepoint_h` (the response head's scan)."""
    out = []
    for record in records:
        if int(record.cycle) != 1 or not record.timepoints:
            continue
        tp = min(record.timepoints, key=lambda t: abs(float(t.timepoint_h) - timepoint_h))
        out.append(dataclasses.replace(record, timepoints=(tp,)))
    return out


def fit_response_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    hidden: int = 16,
    dropout: float = 0.1,
    weight_decay: float = 1e-3,
    gamma: float = 0.0,
    seed: int = 0,
) -> ResponseHead:
    """A `ResponseHead` fitted by full-batch Adam on (N, F) features and (N,) 0/1 labels (focal BCE, γ = 0: BCE)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the head's initial weights and dropout: same data → same head
    try:
        head = ResponseHead(int(features.shape[1]), hidden=hidden, dropout=dropout)
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
        x, y = features.float(), labels.float()
        head.train()
        for _ in range(int(steps)):
            opt.zero_grad()
            loss = focal_bce(head(x), y, gamma=gamma)
            loss.backward()
            opt.step()
    finally:
        torch.random.set_rng_state(generator_state)
    return head.eval()


def predict_response(head: ResponseHead, features: torch.Tensor) -> np.ndarray:
    """P(non-response) per row of `features`."""
    with torch.inference_mode():
        return torch.sigmoid(head(features.float())).cpu().numpy().astype(np.float64)
