"""Write one prediction: NIfTI maps, DICOM RT Dose and SEG on the SPECT's Frame of Reference, ``regions.csv``,
``summary.json`` and the clinical report.

Every image keeps the SPECT's grid (size, spacing, origin, direction). The DICOM objects reference the SPECT series
(its Study and Frame of Reference); a NIfTI SPECT has none, so one Frame of Reference is made up for both objects,
from the inputs' checksums (reruns write the same UIDs). Nothing identifies the patient unless
``keep_identifiers=True``: the DICOM objects then carry the SPECT's patient module and ``summary.json`` the ID.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.imaging.volume import Volume
from ludl.inference.predictor import Prediction
from ludl.inference.regions import REGION_TABLE_COLUMNS
from ludl.io.atomic import atomic_write_text

__all__ = ["OUTPUT_FILES", "pseudonym", "summary_document", "whole_body_tumour_dose", "write_outputs"]

OUTPUT_FILES: Mapping[str, str] = {
    "dose": "dose.nii.gz",
    "tia": "tia.nii.gz",
    "dose_sd": "dose_sd.nii.gz",
    "labels": "labels.nii.gz",
    "rtdose": "rtdose.dcm",
    "seg": "seg.dcm",
    "tia_pm": "tia_pm.dcm",
    "regions": "regions.csv",
    "summary": "summary.json",
}


def pseudonym(patient_id: str | None) -> str:
    """A stable pseudonym of a patient ID ("P-" + 8 hex digits of its SHA-256), "unknown" without one."""
    if not patient_id:
        return "unknown"
    return "P-" + hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:8]


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


def regions_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The region table as CSV text (floats at full precision, NaN as an empty cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REGION_TABLE_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in REGION_TABLE_COLUMNS])
    return buffer.getvalue()


def whole_body_tumour_dose(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Volume-weighted mean dose of the scored network lesions and what it covers (count and volume of all)."""
    lesions = [r for r in rows if r["kind"] == "lesion" and r["source"] == "network"]
    scored = [r for r in lesions if r["scored"] and math.isfinite(r["mean_dose_gy"])]
    volume = sum(r["volume_ml"] for r in scored)
    dose = sum(r["mean_dose_gy"] * r["volume_ml"] for r in scored) / volume if volume > 0 else None
    return {
        "dose_gy": dose,
        "lesions_scored": len(scored),
        "lesions_found": len(lesions),
        "volume_scored_ml": volume,
        "volume_found_ml": sum(r["volume_ml"] for r in lesions),
        "scored_lesions": [r["region"] for r in scored],
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def summary_document(
    prediction: Prediction,
    files: Mapping[str, Path],
    *,
    keep_identifiers: bool = False,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` document (identifiers only with `keep_identifiers`)."""
    from ludl import __version__

    inputs = prediction.inputs
    response = None
    if prediction.p_non_response is not None:
        response = {
            "probability": prediction.p_non_response,
            "member_range": list(prediction.p_non_response_range or ()),
            "members": prediction.n_members,
            "calibration": dict(calibration or {}) or "not measured for this model",
        }
    document: dict[str, Any] = {
        "patient": inputs.patient_id if keep_identifiers else pseudonym(inputs.patient_id),
        "identifiers_kept": bool(keep_identifiers),
        "scan_time_h": inputs.time_h,
        "injected_mbq": inputs.injected_mbq,
        "sources": dict(inputs.sources),
        "whole_body_tumour_dose": whole_body_tumour_dose(prediction.regions),
        "region_intervals": {
            "level": 0.9,
            "held_out_coverage": dict(prediction.interval_coverage) or "not measured for this model",
        },
        "p_non_response": response,
        "model": prediction.model_description,
        "members": prediction.n_members,
        "ludl_version": __version__,
        "inputs_sha256": dict(inputs.checksums),
        "outputs_sha256": {k: _sha256(p) for k, p in files.items() if p.is_file()},
        "registration": dict(inputs.registration) if inputs.registration else None,
        "warnings": list(prediction.warnings),
        "timings_s": dict(prediction.timings_s),
    }
    if keep_identifiers and inputs.scan_date:
        document["scan_date"] = inputs.scan_date
    return document


def _dicom_reference(prediction: Prediction) -> Any:
    """The SPECT series (DICOM input) or a made-up Study/Frame of Reference shared by RT Dose and SEG."""
    inputs = prediction.inputs
    if inputs.dicom_reference is not None:
        return inputs.dicom_reference
    meta = inputs.spect.meta
    if meta.get("FrameOfReferenceUID"):
        return inputs.spect
    from ludl.io.rtdose import new_uid

    seed = "ludl-infer-" + "-".join(sorted(inputs.checksums.values()))
    return {"FrameOfReferenceUID": new_uid(seed, "frame"), "StudyInstanceUID": new_uid(seed, "study")}


def _write_dicom(prediction: Prediction, out: Path, keep_identifiers: bool, seed: str) -> dict[str, Path]:
    from ludl.io.parametric_map import write_parametric_map
    from ludl.io.rtdose import write_rtdose
    from ludl.io.seg import write_seg

    inputs = prediction.inputs
    reference = _dicom_reference(prediction)
    who = {
        "deidentify": not keep_identifiers,
        "patient_id": inputs.patient_id if keep_identifiers else pseudonym(inputs.patient_id),
        "uid_seed": seed,
        "timestamp": dt.datetime(2000, 1, 1) if seed else None,
    }
    rtdose = write_rtdose(
        prediction.dose,
        out / OUTPUT_FILES["rtdose"],
        reference,
        dose_comment=f"ludl single scan at {inputs.time_h:.1f} h",
        **who,  # type: ignore[arg-type]
    )
    names = {n: v for n, v in sorted(prediction.region_values.items(), key=lambda kv: kv[1])}
    labels = prediction.labels.with_array(np.asarray(prediction.labels.array, dtype=np.int32))
    if isinstance(reference, Mapping):
        labels = labels.with_array(labels.array, FrameOfReferenceUID=reference["FrameOfReferenceUID"])
    seg = write_seg(labels, out / OUTPUT_FILES["seg"], reference, names, **who)  # type: ignore[arg-type]
    # The TIA is not a dose: RT Dose holds Gy only (a planning system would read it as one), so a Parametric Map.
    tia_pm = write_parametric_map(
        prediction.tia,
        out / OUTPUT_FILES["tia_pm"],
        reference,
        description=f"ludl TIA, single scan at {inputs.time_h:.1f} h",
        **who,  # type: ignore[arg-type]
    )
    return {"rtdose": rtdose, "seg": seg, "tia_pm": tia_pm}


def write_outputs(
    prediction: Prediction,
    out_dir: str | Path,
    *,
    dicom: bool = True,
    report: bool = True,
    keep_identifiers: bool = False,
    calibration: Mapping[str, Any] | None = None,
    cycle: int = 1,
) -> dict[str, Path]:
    """Write every output of `prediction` into `out_dir` (created); returns role → path.

    Args:
        dicom: write the RT Dose, SEG and TIA Parametric Map objects.
        report: write the clinical report (`ludl.report.write_report`).
        keep_identifiers: write the patient's ID (DICOM patient module, summary.json); default pseudonymised.
        calibration: the model's measured interval coverage (summary.json and the report).
        cycle: therapy cycle of the scan (the report's header).
    """
    from ludl.io.nifti import write_nifti

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for role, volume in (
        ("dose", prediction.dose),
        ("tia", prediction.tia),
        ("dose_sd", prediction.dose_sd),
        ("labels", prediction.labels),
    ):
        dtype = np.int32 if role == "labels" else np.float32
        files[role] = write_nifti(volume, out / OUTPUT_FILES[role], dtype=dtype)
    if dicom:
        seed = "ludl-infer-" + "-".join(sorted(prediction.inputs.checksums.values()))
        files.update(_write_dicom(prediction, out, keep_identifiers, seed))
    files["regions"] = atomic_write_text(out / OUTPUT_FILES["regions"], regions_csv_text(prediction.regions))
    if report:
        from ludl.inference.report import report_content
        from ludl.report import write_report

        content = report_content(prediction, keep_identifiers=keep_identifiers, calibration=calibration, cycle=cycle)
        files.update(write_report(content, out))  # report_html, report_pdf
    document = summary_document(prediction, files, keep_identifiers=keep_identifiers, calibration=calibration)
    files["summary"] = atomic_write_text(out / OUTPUT_FILES["summary"], json.dumps(_finite(document), indent=2))
    return files


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Volume):
        return None
    return value
