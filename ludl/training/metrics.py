"""Validation and prediction metrics: region mean-dose errors, Dice per class, lesion detection.

Region means are taken inside the REFERENCE region masks of the case (dose is scored apart from segmentation) and
compared with the pipeline's region means: the ones the region loss trains against (`LossConfig.region_target`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.network import DoseNetOutput
from ludl.models.whole_volume import region_means

__all__ = ["dice_per_class", "lesion_detection", "region_errors", "region_means", "summarise_validation"]

_LESION_CLASS = next(c.index for c in SEGMENTATION_CLASSES if c.kind == "lesion")


def region_errors(
    out: DoseNetOutput, batch: Mapping[str, Any], target_key: str = "region_dose_gy"
) -> list[dict[str, Any]]:
    """One row per (sample, region): relative error (%) of the predicted region mean vs the truth of `target_key`
    (``region_dose_gy`` corrected, ``region_dose_uncorrected_gy`` the dose map's), and a Dice row per sample (mean
    over labelled foreground classes present in the reference)."""
    rows: list[dict[str, Any]] = []
    pred_classes = out.seg_logits.argmax(dim=1)
    for b in range(out.dose_gy.shape[0]):
        values = batch["region_values"][b]
        means = region_means(out.dose_gy[b].detach(), batch["regions"][b], values).cpu()
        target = batch[target_key][b].double().cpu()
        lesion = batch["region_is_lesion"][b].cpu()
        for r in range(values.shape[0]):
            if int(values[r]) <= 0 or not math.isfinite(float(target[r])) or float(target[r]) <= 0:
                continue
            err = 100.0 * (float(means[r]) / float(target[r]) - 1.0)
            if math.isfinite(err):
                rows.append({"kind": "lesion" if bool(lesion[r]) else "organ", "error_pct": err})
        labelled = batch["labelled"][b].cpu().numpy() if "labelled" in batch else None
        dice = dice_per_class(pred_classes[b].cpu().numpy(), batch["classes"][b, 0].cpu().numpy(), labelled)
        if dice:
            rows.append({"kind": "dice", "dice": float(np.mean(list(dice.values())))})
    return rows


def summarise_validation(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``bias_<kind>_pct``, ``mae_<kind>_pct`` (median |error|) for organs and lesions, ``region_mae`` over both
    (the monitored value, %), ``dice``."""
    rows = list(rows)
    out: dict[str, float] = {}
    every: list[float] = []
    for kind in ("organ", "lesion"):
        errs = [float(r["error_pct"]) for r in rows if r["kind"] == kind]
        if errs:
            out[f"bias_{kind}_pct"] = float(np.median(errs))
            out[f"mae_{kind}_pct"] = float(np.median(np.abs(errs)))
            every += errs
    if every:
        out["region_mae"] = float(np.median(np.abs(every)))
    dice = [float(r["dice"]) for r in rows if r["kind"] == "dice"]
    if dice:
        out["dice"] = float(np.mean(dice))
    return out


def dice_per_class(
    pred: npt.NDArray[Any], reference: npt.NDArray[Any], labelled: Sequence[bool] | npt.NDArray[Any] | None = None
) -> dict[int, float]:
    """Dice of every labelled foreground class present in the reference (class index → Dice)."""
    n = len(SEGMENTATION_CLASSES)
    pred_counts = np.bincount(pred.reshape(-1).astype(np.int64), minlength=n)
    ref_counts = np.bincount(reference.reshape(-1).astype(np.int64), minlength=n)
    same = pred.reshape(-1) == reference.reshape(-1)
    inter = np.bincount(reference.reshape(-1)[same].astype(np.int64), minlength=n)
    out: dict[int, float] = {}
    for c in range(1, n):
        if ref_counts[c] == 0 or (labelled is not None and not bool(labelled[c])):
            continue
        out[c] = float(2.0 * inter[c] / (pred_counts[c] + ref_counts[c]))
    return out


def lesion_detection(
    pred_classes: npt.NDArray[Any], regions: npt.NDArray[Any], lesion_values: Sequence[int]
) -> tuple[int, int, int]:
    """(reference lesions, detected, false positives): a reference lesion is detected when a predicted lesion
    component overlaps it; a predicted component touching no reference lesion is a false positive."""
    from scipy import ndimage

    pred = pred_classes == _LESION_CLASS
    detected = sum(1 for v in lesion_values if bool(pred[regions == v].any()))
    components, n = ndimage.label(pred)
    if n == 0:
        return len(lesion_values), detected, 0
    in_lesion = np.isin(regions, np.asarray(list(lesion_values), dtype=regions.dtype))
    touching = np.unique(components[in_lesion & pred])
    false_positives = n - int(np.count_nonzero(touching))
    return len(lesion_values), detected, false_positives
