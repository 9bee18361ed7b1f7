"""Held-out predictions on whole volumes: ``predictions/regions.csv``, ``segmentation.csv`` (and the response
features the second stage needs).

Network region means are taken inside the REFERENCE region masks of the prepared case, so dose is scored apart
from segmentation, by `ludl.models.whole_volume.region_means` — the function `ludl.inference` scores a reference
label map with (one road: ``infer.py`` on a held-out case gives the numbers written here). The single-scan
partial-volume correction lives above training: the caller hands it in as `RegionScoring.correct` (the root
``train.py`` does, with `ludl.inference.regions.correct_single_scan`), else the corrected column is NaN.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ludl.io.prepared import read_case
from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.network import DoseNet, DoseNetOutput
from ludl.models.region_model import FEATURE_COLUMNS, FeatureClasses
from ludl.models.whole_volume import CorrectionInput, VolumePredictor, region_means, scored_region_features
from ludl.training.metrics import dice_per_class, lesion_detection

__all__ = [
    "PATIENT_COLUMNS",
    "REGION_COLUMNS",
    "SEGMENTATION_COLUMNS",
    "CorrectionInput",
    "RegionScoring",
    "predict_split",
    "whole_volume_outputs",
    "write_csv",
]

REGION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "cycle",
    "fold",
    "timepoint_h",
    "time_h",
    "region",
    "kind",
    "region_class",
    "volume_ml",
    "net_mean_dose_gy",
    "net_mean_dose_corrected_gy",
    "gt_mean_dose_gy",
    "gt_mean_dose_uncorrected_gy",
    "true_mean_dose_gy",
    *FEATURE_COLUMNS,  # what the region kinetics model reads (`ludl.models.region_model`)
)
SEGMENTATION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "cycle",
    "timepoint_h",
    "class",
    "dice",
    "lesions_reference",
    "lesions_detected",
    "false_positives",
)
PATIENT_COLUMNS: tuple[str, ...] = ("patient_id", "cycle", "fold", "p_non_response", "non_response")
_NAN = math.nan
_FEATURE_CLASSES = FeatureClasses.of(SEGMENTATION_CLASSES)


@dataclass(frozen=True)
class RegionScoring:
    """Hooks from the layers above training: `correct` → corrected region mean doses (region → Gy) of one
    predicted TIA map; `region_class` → the region class of (region, kind) as the STP table has it."""

    correct: Callable[[CorrectionInput], Mapping[str, float]] | None = None
    region_class: Callable[[str, str], str | None] | None = None


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Rows to CSV (NaN and None as empty cells), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cells = {
                k: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for k, v in row.items()
            }
            writer.writerow(cells)
    os.replace(tmp, path)
    return path


def whole_volume_outputs(
    net: DoseNet, predictor: VolumePredictor, loader: Iterable[Mapping[str, Any]], device: torch.device | str = "cpu"
) -> Iterator[tuple[Mapping[str, Any], DoseNetOutput]]:
    """(batch, outputs) of every whole volume of `loader`, in inference mode."""
    net.eval()
    with torch.inference_mode():
        for batch in loader:
            moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            yield moved, predictor(net, moved)


@dataclass
class _CaseMeta:
    kinds: dict[str, str]
    truth: dict[str, tuple[float, float]]
    fwhm_mm: dict[float, float]
    names: dict[int, str]


def _case_meta(record: Any) -> _CaseMeta:
    case = read_case(record.path)
    meta = case.meta
    truth = dict(meta.stp_case.truth) if meta.stp_case is not None else {}
    fwhm = {}
    for tp in case.timepoints:
        try:
            fwhm[float(tp.timepoint_h)] = float(tp.meta.fwhm_mm)
        except Exception:  # an older sidecar without it: no single-scan correction for this time point
            fwhm[float(tp.timepoint_h)] = _NAN
    names = {int(v): str(n) for n, v in record.region_values.items()}
    return _CaseMeta({str(k): str(v) for k, v in meta.region_kinds.items()}, truth, fwhm, names)


def _region_rows(
    batch: Mapping[str, Any], out: DoseNetOutput, record: Any, meta: _CaseMeta, fold: int, scoring: RegionScoring
) -> list[dict[str, Any]]:
    values = batch["region_values"][0]
    regions = batch["regions"][0, 0]
    means = region_means(out.dose_gy[0].float(), regions, values).cpu().numpy()
    spacing = tuple(float(s) for s in batch["spacing_zyx_mm"].reshape(-1, 3)[0].tolist())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = torch.bincount(regions.reshape(-1).long(), minlength=int(values.max()) + 1).cpu().numpy()
    timepoint_h = float(batch["timepoint_h"][0])
    corrected: Mapping[str, float] = {}
    if scoring.correct is not None and out.tia_mbq_h_per_ml is not None:
        corrected = scoring.correct(
            CorrectionInput(
                out.tia_mbq_h_per_ml[0, 0].double().cpu().numpy(),
                out.dose_gy[0, 0].double().cpu().numpy(),
                regions.cpu().numpy().astype(np.int32),
                {meta.names[int(v)]: int(v) for v in values.tolist() if int(v) > 0},
                meta.kinds,
                batch["density_g_per_ml"][0, 0].double().cpu().numpy(),
                (spacing[0], spacing[1], spacing[2]),
                meta.fwhm_mm.get(timepoint_h, _NAN),
            )
        )
    scored = {meta.names[v]: v for v in values.tolist() if v in meta.names}
    features = scored_region_features(batch, out.seg_logits[0].argmax(dim=0), regions, scored, _FEATURE_CLASSES)
    rows = []
    for r, value in enumerate(values.tolist()):
        if value <= 0 or value not in meta.names:
            continue
        name = meta.names[value]
        kind = meta.kinds.get(name, "")
        rows.append(
            {
                "patient_id": record.patient_id,
                "cycle": record.cycle,
                "fold": fold,
                "timepoint_h": timepoint_h,
                "time_h": float(batch["time_h"][0]),
                "region": name,
                "kind": kind,
                "region_class": scoring.region_class(name, kind) if scoring.region_class else "",
                "volume_ml": float(counts[value]) * voxel_ml if value < counts.shape[0] else 0.0,
                "net_mean_dose_gy": float(means[r]),
                "net_mean_dose_corrected_gy": float(corrected.get(name, _NAN)),
                "gt_mean_dose_gy": float(record.region_dose_gy.get(name, _NAN)),
                "gt_mean_dose_uncorrected_gy": float(record.region_dose_uncorrected_gy.get(name, _NAN)),
                "true_mean_dose_gy": float(meta.truth.get(name, (_NAN, _NAN))[1]),
                **features.get(name, {}),
            }
        )
    return rows


def _segmentation_rows(batch: Mapping[str, Any], out: DoseNetOutput, record: Any) -> list[dict[str, Any]]:
    pred = out.seg_logits[0].argmax(dim=0).cpu().numpy()
    reference = batch["classes"][0, 0].cpu().numpy()
    regions = batch["regions"][0, 0].cpu().numpy()
    lesion_values = [
        int(v)
        for v, les in zip(batch["region_values"][0].tolist(), batch["region_is_lesion"][0].tolist(), strict=True)
        if les and v > 0
    ]
    n_ref, detected, false_pos = lesion_detection(pred, regions, lesion_values)
    labelled = batch["labelled"][0].cpu().numpy() if "labelled" in batch else None
    base = {
        "patient_id": record.patient_id,
        "cycle": record.cycle,
        "timepoint_h": float(batch["timepoint_h"][0]),
        "lesions_reference": n_ref,
        "lesions_detected": detected,
        "false_positives": false_pos,
    }
    return [
        {**base, "class": SEGMENTATION_CLASSES[c].name, "dice": dice}
        for c, dice in dice_per_class(pred, reference, labelled).items()
    ]


def predict_split(
    net: DoseNet,
    predictor: VolumePredictor,
    loader: Iterable[Mapping[str, Any]],
    records: Iterable[Any],
    fold: int,
    scoring: RegionScoring | None = None,
    on_volume: Callable[[Mapping[str, Any], DoseNetOutput, Any], None] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Region rows and segmentation rows of every whole volume of `loader` (`on_volume` sees each, e.g. for the
    response features and the page's dose slices)."""
    scoring = scoring or RegionScoring()
    by_case = {r.case_id: r for r in records}
    metas: dict[str, _CaseMeta] = {}
    region_rows: list[dict[str, Any]] = []
    seg_rows: list[dict[str, Any]] = []
    for batch, out in whole_volume_outputs(net, predictor, loader, device):
        case_id = str(batch["case_id"][0])
        record = by_case[case_id]
        if case_id not in metas:
            metas[case_id] = _case_meta(record)
        region_rows += _region_rows(batch, out, record, metas[case_id], fold, scoring)
        seg_rows += _segmentation_rows(batch, out, record)
        if on_volume is not None:
            on_volume(batch, out, record)
    return region_rows, seg_rows
