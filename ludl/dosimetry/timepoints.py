"""Load one patient-cycle from a cohort: SPECT per time point (beds stitched, calibrated), CT, label map, activities.

Everything a conventional multi-time-point dosimetry needs comes from the manifest (docs/cohort-format.md):
SPECT rows (one per bed) with their own acquisition times, the CT of each time point, the label map (mask row) and
the cycle's activities. Calibration of count images uses the row's ``sensitivity_cps_per_mbq`` or the cohort
default, and the row's ``acquisition_s`` and ``deadtime_factor``; nothing is guessed (a count image without them
raises `UnitsError` naming the file and manifest line). Patient identity is checked across the DICOM images of the
cycle, so a folder of another patient is caught before any heavy work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ludl.errors import InputError, ManifestError
from ludl.imaging.volume import Volume
from ludl.io.cohort import CohortConfig, load_cohort_config
from ludl.io.cohort_images import is_nifti, read_ct_row, read_mask_row, read_spect_row, row_where
from ludl.io.manifest import Manifest, ManifestRow, load_manifest

__all__ = ["CycleData", "TimePoint", "load_cycle", "read_spect_row"]  # read_spect_row: from ludl.io.cohort_images


@dataclass(frozen=True, eq=False)
class TimePoint:
    """One SPECT/CT time point of a patient-cycle.

    Attributes:
        timepoint_h: nominal time point (4, 24, … h).
        spect: activity concentration (Bq/mL, not decay-corrected), beds stitched along z.
        bed_index: label Volume on the SPECT grid: the bed (index into `bed_times_h`) each voxel was acquired in.
        bed_times_h: actual acquisition start of each bed after injection, h.
        ct: CT of this time point (HU).
        fwhm_mm: nominal reconstructed SPECT resolution (row or cohort default).
        spect_rows: the manifest rows of the SPECT beds; ct_row: the CT row.
    """

    timepoint_h: float
    spect: Volume
    bed_index: Volume
    bed_times_h: tuple[float, ...]
    ct: Volume
    fwhm_mm: float
    spect_rows: tuple[ManifestRow, ...]
    ct_row: ManifestRow

    @property
    def time_h(self) -> float:
        """Acquisition start of the first bed, h after injection."""
        return self.bed_times_h[0]

    def where(self, manifest: Manifest) -> str:
        """Human-readable origin: file(s) and manifest line(s)."""
        return ", ".join(f"{manifest.file.name}:{r.line} ({r.path})" for r in self.spect_rows)


@dataclass(frozen=True, eq=False)
class CycleData:
    """A patient-cycle ready for dosimetry.

    Attributes:
        patient_id, cycle: which case.
        timepoints: SPECT/CT time points, ascending.
        labels: label map (unit "label") as read, on its own grid, in the pose of `mask_timepoint_h`.
        label_values: region name (cohort.yaml ``labels``) → label value, for the regions present.
        mask_timepoint_h: nominal time point the label map was drawn on.
        injected_mbq, residual_mbq, extravasated_mbq: the cycle's activities (MBq).
        config: the cohort configuration; manifest: the loaded manifest.
    """

    patient_id: str
    cycle: int
    timepoints: tuple[TimePoint, ...]
    labels: Volume
    label_values: dict[str, int]
    mask_timepoint_h: float
    injected_mbq: float
    residual_mbq: float
    extravasated_mbq: float
    config: CohortConfig
    manifest: Manifest
    notes: tuple[str, ...] = field(default=())

    @property
    def net_administered_mbq(self) -> float:
        """Injected minus residual activity (MBq)."""
        return self.injected_mbq - self.residual_mbq


def _dicom_header(path: Path) -> Any:
    import pydicom

    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for candidate in candidates:
        try:
            return pydicom.dcmread(candidate, stop_before_pixels=True)
        except Exception:  # non-DICOM files beside the series are skipped on purpose
            continue
    return None


def _dicom_start(header: Any) -> datetime | None:
    from ludl.io.dicom_tags import parse_dicom_datetime

    if header is None:
        return None
    start: datetime | None = parse_dicom_datetime(
        header.get("AcquisitionDate") or header.get("SeriesDate"),
        header.get("AcquisitionTime") or header.get("SeriesTime"),
        header.get("AcquisitionDateTime"),
    )
    return start


def _row_time_h(manifest: Manifest, row: ManifestRow, injection: datetime | None) -> float:
    """Actual acquisition start (h after injection): the manifest's time_h, else DICOM time − injection time."""
    if row.time_h is not None:
        return float(row.time_h)
    path = manifest.image_path(row)
    start = None if is_nifti(path) else _dicom_start(_dicom_header(path))
    if start is None or injection is None:
        raise ManifestError(
            f"{row_where(manifest, row)}: no time_h and no DICOM acquisition time with an injection_datetime; "
            "give time_h"
        )
    return (start.replace(tzinfo=None) - injection.replace(tzinfo=None)).total_seconds() / 3600.0


def _check_patient_ids(manifest: Manifest, rows: Sequence[ManifestRow]) -> None:
    """All DICOM images of a patient-cycle must carry the same PatientID (a folder of another patient is an error)."""
    seen: dict[str, ManifestRow] = {}
    for row in rows:
        path = manifest.image_path(row)
        if is_nifti(path) or not path.exists():
            continue
        header = _dicom_header(path)
        pid = str(header.get("PatientID", "") or "") if header is not None else ""
        if not pid:
            continue
        if seen and pid not in seen:
            other_id, other = next(iter(seen.items()))
            raise InputError(
                f"{row_where(manifest, row)} has DICOM PatientID {pid!r} but {row_where(manifest, other)} has "
                f"{other_id!r}: images of two patients in one patient-cycle; fix the manifest path"
            )
        seen.setdefault(pid, row)


def _read_timepoint(
    manifest: Manifest, config: CohortConfig, rows: Sequence[ManifestRow], tp: float, injection: datetime | None
) -> TimePoint:
    """The SPECT beds and the CT of one nominal time point of a patient-cycle's rows."""
    spect_rows = sorted(
        (r for r in rows if r.role == "spect" and r.timepoint_h is not None and math.isclose(r.timepoint_h, tp)),
        key=lambda r: r.bed or 0,
    )
    ct_rows = [r for r in rows if r.role == "ct" and r.timepoint_h is not None and math.isclose(r.timepoint_h, tp)]
    if not ct_rows:
        raise ManifestError(f"{row_where(manifest, spect_rows[0])}: no ct row at timepoint_h {tp:g}")
    bed_times = [_row_time_h(manifest, r, injection) for r in spect_rows]
    spect, bed_index = read_spect_row(manifest, config, spect_rows, bed_times)
    ct_row = ct_rows[0]
    ct = read_ct_row(manifest, ct_row)
    fwhm = spect_rows[0].fwhm_mm or config.fwhm_mm
    if fwhm is None:
        raise ManifestError(f"{row_where(manifest, spect_rows[0])}: no fwhm_mm in the row nor in cohort.yaml defaults")
    return TimePoint(
        timepoint_h=float(tp),
        spect=spect,
        bed_index=bed_index,
        bed_times_h=tuple(bed_times),
        ct=ct,
        fwhm_mm=float(fwhm),
        spect_rows=tuple(spect_rows),
        ct_row=ct_row,
    )


def load_cycle(
    cohort_dir: str | Path,
    patient_id: str,
    cycle: int,
    *,
    manifest: Manifest | None = None,
    config: CohortConfig | None = None,
) -> CycleData:
    """Read every SPECT/CT time point, the label map and the activities of one patient-cycle.

    Args:
        cohort_dir: cohort folder (cohort.yaml, manifest.csv).
        patient_id, cycle: the case; an unknown patient or cycle raises `ManifestError` listing what exists.
        manifest, config: already-loaded manifest and configuration (skip re-reading them).
    """
    root = Path(cohort_dir)
    config = config or load_cohort_config(root)
    manifest = manifest or load_manifest(root, config)
    if patient_id not in manifest.patients():
        raise ManifestError(
            f"patient {patient_id!r} is not in {manifest.file}; patients: {', '.join(manifest.patients())}"
        )
    if cycle not in manifest.cycles(patient_id):
        raise ManifestError(
            f"patient {patient_id!r} has no cycle {cycle} in {manifest.file}; "
            f"cycles: {', '.join(map(str, manifest.cycles(patient_id)))}"
        )
    rows = manifest.select(patient_id=patient_id, cycle=cycle)
    _check_patient_ids(manifest, rows)
    injection = manifest.injection_datetime(patient_id, cycle)

    timepoints = [
        _read_timepoint(manifest, config, rows, tp, injection) for tp in manifest.timepoints(patient_id, cycle, "spect")
    ]

    mask_rows = [r for r in rows if r.role == "mask"]
    if not mask_rows:
        raise ManifestError(
            f"patient {patient_id} cycle {cycle} has no mask row in {manifest.file}; dosimetry needs a label map"
        )
    mask_row = mask_rows[0]
    mask_tp = float(mask_row.timepoint_h) if mask_row.timepoint_h is not None else timepoints[0].timepoint_h
    grid = next((t.ct for t in timepoints if math.isclose(t.timepoint_h, mask_tp)), timepoints[0].ct)
    labels, found = read_mask_row(manifest, config, mask_row, grid)
    first = rows[0]
    residual = next((r.residual_mbq for r in rows if r.residual_mbq is not None), 0.0)
    extravasated = next((r.extravasated_mbq for r in rows if r.extravasated_mbq is not None), 0.0)
    return CycleData(
        patient_id=patient_id,
        cycle=cycle,
        timepoints=tuple(timepoints),
        labels=labels,
        label_values=dict(found),
        mask_timepoint_h=mask_tp,
        injected_mbq=float(first.injected_mbq),
        residual_mbq=float(residual),
        extravasated_mbq=float(extravasated),
        config=config,
        manifest=manifest,
    )
