"""Fill the clinical report's content (`ludl.report.ReportContent`) from one single-scan prediction.

The report package renders it (`ludl.report.write_report`, shared with ``ludl dosimetry``); nothing is formatted
here. Network regions are reported; a reference label map's regions appear as ``<name> (reference)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ludl.inference.outputs import pseudonym
from ludl.inference.predictor import Prediction
from ludl.report.content import (
    RegionDose,
    ReportContent,
    ReportHeader,
    ReportImages,
    ResponseEstimate,
    TimeActivityCurve,
)

__all__ = ["report_content"]

_CURVE_REGIONS = ("kidney_left", "kidney_right", "parotid_left", "parotid_right", "liver", "spleen")


def _finite_or_none(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _region(row: Mapping[str, Any]) -> RegionDose:
    lo, hi = row["mean_dose_lo90_gy"], row["mean_dose_hi90_gy"]
    name = row["region"] if row["source"] == "network" else f"{row['region']} (reference)"
    return RegionDose(
        name=name,
        kind=row["kind"],
        volume_ml=row["volume_ml"],
        mean_dose_gy=row["mean_dose_gy"],
        voxel_mean_dose_gy=row["voxel_mean_dose_gy"],
        median_dose_gy=row["median_dose_gy"],
        max_dose_gy=row["max_dose_gy"],
        d2_gy=row["d2_gy"],
        d50_gy=row["d50_gy"],
        d98_gy=row["d98_gy"],
        tia_mbq_h=row["tia_mbq_h"],
        scored=bool(row["scored"]),
        t_eff_h=_finite_or_none(row["t_eff_h"]),
        bed_gy=_finite_or_none(row["bed_gy"]),
        dose_interval_90_gy=(lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None,
        correction_factor=_finite_or_none(row["correction_factor"]),
        flags=(row["flags"],) if row["flags"] else (),
    )


def _curves(prediction: Prediction) -> tuple[TimeActivityCurve, ...]:
    """The scan's region activity and the mono-exponential curve the predicted TIA implies (single scan)."""
    inputs = prediction.inputs
    activity = np.asarray(inputs.spect.array, dtype=np.float64) / 1e6  # MBq/mL
    labels = np.asarray(prediction.labels.array)
    voxel_ml = inputs.spect.voxel_volume_ml
    curves = []
    for row in prediction.regions:
        if row["source"] != "network" or row["region"] not in _CURVE_REGIONS or not math.isfinite(row["t_eff_h"]):
            continue
        a_t = float(activity[labels == prediction.region_values[row["region"]]].sum()) * voxel_ml
        lam = math.log(2.0) / row["t_eff_h"]
        times = tuple(float(t) for t in np.linspace(0.0, max(7 * 24.0, 3 * inputs.time_h), 50))
        curve = tuple(a_t * math.exp(-lam * (t - inputs.time_h)) for t in times)
        curves.append(TimeActivityCurve(row["region"], (inputs.time_h,), (a_t,), times, curve, "predicted"))
    return tuple(curves)


def report_content(
    prediction: Prediction,
    *,
    keep_identifiers: bool = False,
    calibration: Mapping[str, Any] | None = None,
    cycle: int = 1,
) -> ReportContent:
    """The report's content for one prediction (identifiers only with `keep_identifiers`)."""
    from ludl import __version__

    inputs = prediction.inputs
    label = (inputs.patient_id or "unknown") if keep_identifiers else pseudonym(inputs.patient_id)
    header = ReportHeader(
        patient_label=label,
        cycle=int(cycle),
        scan_dates=(inputs.scan_date if keep_identifiers else "",),
        scan_times_h=(inputs.time_h,),
        injected_mbq=inputs.injected_mbq,
        method=f"single scan at {inputs.time_h:.1f} h"
        + (" + PSMA PET" if inputs.suv is not None else "")
        + f" (network, {prediction.n_members} member{'s' if prediction.n_members > 1 else ''})",
        model=prediction.model_description,
        code_version=__version__,
        sources=dict(inputs.sources),
    )
    response = None
    if prediction.p_non_response is not None:
        lo, hi = prediction.p_non_response_range or (prediction.p_non_response, prediction.p_non_response)
        measured = (calibration or {}).get("response")
        response = ResponseEstimate(
            probability=prediction.p_non_response,
            interval_90=(lo, hi),
            comparison=str(measured)
            if measured
            else "range over the ensemble/TTA members; held-out calibration not recorded in the model artifact",
        )
    names = {v: n for n, v in prediction.region_values.items()}
    notes = [
        "Dose from one SPECT/CT: a network predicts each voxel's effective integration time; the dose is the "
        "kernel convolution of the predicted time-integrated activity.",
        "Region intervals (90 %): member spread (ensemble, test-time flips) combined with the model's error for that "
        "kind of region at this scan time, learned on the training's validation patients.",
    ]
    notes.append(_coverage_note({**prediction.interval_coverage, **(calibration or {})}))
    return ReportContent(
        title="Single-scan dosimetry",
        header=header,
        regions=tuple(_region(r) for r in prediction.regions),
        images=ReportImages(
            dose_gy=prediction.dose,
            labels=prediction.labels,
            label_names=names,
            ct_hu=inputs.ct_hu,
            pet_suv=inputs.suv,
        ),
        curves=_curves(prediction),
        response=response,
        warnings=prediction.warnings,
        notes=tuple(notes),
        registration_rows=(_registration_row(inputs.registration),) if inputs.registration else (),
    )


def _coverage_note(coverage: Mapping[str, Any]) -> str:
    """What the stated 90 % intervals reached on patients the model never saw, in words."""
    if "coverage_90" not in coverage:
        return "The 90 % intervals' coverage was not measured for this model: treat them as indicative."
    parts = [
        f"{label} {100 * float(coverage[key]):.0f} %" + (f" of {int(coverage[n])}" if n in coverage else "")
        for label, key, n in (
            ("lesions", "coverage_90_lesion", "n_intervals_lesion"),
            ("organs", "coverage_90_organ", "n_intervals_organ"),
        )
        if key in coverage
    ]
    return f"Measured 90 % interval coverage on held-out patients: {100 * float(coverage['coverage_90']):.0f} %" + (
        f" ({'; '.join(parts)})." if parts else "."
    )


def _registration_row(info: Mapping[str, Any]) -> dict[str, object]:
    """The PET registration in the report's registration columns (shifts and rotations per axis, flags in words)."""
    tx, ty, tz = (float(v) for v in info["translation_mm"])
    rx, ry, rz = (float(v) for v in info["rotation_deg"])
    return {
        "image": "PET/CT → SPECT/CT",
        "tx_mm": tx,
        "ty_mm": ty,
        "tz_mm": tz,
        "rx_deg": rx,
        "ry_deg": ry,
        "rz_deg": rz,
        "hu_correlation": float(info["hu_correlation"]),
        "mean_abs_diff_hu": float(info["mean_abs_diff_hu"]),
        "flags": "; ".join(str(f) for f in info.get("flags", ())) or "none",
    }
