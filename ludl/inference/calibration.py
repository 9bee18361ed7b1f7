"""Is the stated 90 % interval of a region's mean dose right? Coverage on held-out patients with a known answer.

For each held-out prepared case (patients the model never trained on) the scan at a chosen time is predicted with
the case's reference regions, and each region's interval [lo, hi] is compared with the multi-time-point
(partial-volume-corrected) mean dose of the pipeline — the reference the network was trained towards. A calibrated
interval contains it in about 90 % of regions; the measured share is what summary.json and the report state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.inference.inputs import ReferenceLabels, ScanInputs
from ludl.inference.predictor import Predictor

__all__ = ["held_out_scan_inputs", "interval_coverage", "measure_coverage"]


def interval_coverage(rows: Iterable[Mapping[str, Any]], reference_gy: Mapping[str, float]) -> dict[str, Any]:
    """Share of regions whose [mean_dose_lo90_gy, mean_dose_hi90_gy] contains the reference mean dose, overall and
    per kind group (lesion / organ), over the regions with a finite reference."""
    hits: dict[str, list[bool]] = {"all": [], "lesion": [], "organ": []}
    for row in rows:
        truth = reference_gy.get(row["region"])
        if truth is None or not math.isfinite(truth) or row["kind"] == "body":
            continue
        inside = row["mean_dose_lo90_gy"] <= truth <= row["mean_dose_hi90_gy"]
        hits["all"].append(inside)
        hits["lesion" if row["kind"] == "lesion" else "organ"].append(inside)
    return {
        f"coverage_90{'' if k == 'all' else '_' + k}": (float(np.mean(v)) if v else math.nan) for k, v in hits.items()
    } | {f"n_regions{'' if k == 'all' else '_' + k}": len(v) for k, v in hits.items()}


def held_out_scan_inputs(prepared: str | Path, case_id: str, timepoint_h: float) -> tuple[ScanInputs, dict[str, float]]:
    """A prepared case's scan as `ScanInputs` with its scored reference regions, and their reference mean doses."""
    from ludl.io.prepared import read_case

    case = read_case(Path(prepared) / "cases" / case_id)
    tp = case.timepoint(timepoint_h)
    truth = {
        str(r["region"]): float(r["mean_dose_gy"])
        for r in case.sidecar.get("regions", ())
        if r.get("mean_dose_gy") is not None and math.isfinite(float(r["mean_dose_gy"]))
    }
    values = {n: v for n, v in case.region_values.items() if n in truth}
    labels = tp.volume("labels", mmap=False)
    inputs = ScanInputs(
        spect=tp.volume("spect", mmap=False),
        density=tp.volume("density", mmap=False),
        suv=tp.volume("pet", mmap=False) if "pet" in tp.channels else None,
        time_h=float(tp.info.get("time_h", timepoint_h)),
        injected_mbq=float(case.sidecar["net_administered_mbq"]),
        fwhm_mm=float(tp.meta.fwhm_mm),
        reference_labels=ReferenceLabels(
            labels.with_array(np.asarray(labels.array, dtype=np.int32)),
            values,
            {n: str(k) for n, k in case.meta.region_kinds.items()},
        ),
    )
    return inputs, truth


def measure_coverage(
    predictor: Predictor, prepared: str | Path, case_ids: Sequence[str], timepoint_h: float
) -> dict[str, Any]:
    """Interval coverage of `predictor` on the held-out `case_ids` of a prepared cohort at `timepoint_h`."""
    rows: list[dict[str, Any]] = []
    truth: dict[str, float] = {}
    for case in case_ids:
        inputs, reference = held_out_scan_inputs(prepared, case, timepoint_h)
        prediction = predictor.predict(inputs)
        for row in prediction.regions:
            if row["source"] == "reference":
                rows.append({**row, "region": f"{case}/{row['region']}"})
        truth.update({f"{case}/{k}": v for k, v in reference.items()})
    return {**interval_coverage(rows, truth), "cases": list(case_ids), "timepoint_h": float(timepoint_h)}
