"""Load one patient-cycle from a cohort: SPECT per time point (beds stitched, calibrated), CT, label map, activities.

Everything a conventional multi-time-point dosimetry needs comes from the manifest (DESIGN.md "Data formats"):
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

import numpy as np

from ludl.errors import InputError, LudlError, ManifestError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.cohort import CohortConfig, load_cohort_config
from ludl.io.manifest import Manifest, ManifestRow, load_manifest

__all__ = ["CycleData", "TimePoint", "load_cycle", "read_spect_row"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MBQ_PER_ML_TO_BQ_PER_ML = 1e6


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


def _where(manifest: Manifest, row: ManifestRow) -> str:
    return f"{row.role} {row.path!r} ({manifest.file.name} line {row.line})"


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def _read_nifti_as(path: Path, unit: str) -> Volume:
    from ludl.io.nifti import read_nifti

    try:
        return read_nifti(path)
    except UnitsError:
        return read_nifti(path, unit=unit)  # no ludl note in the file: the cohort's unit for the role applies


def _nifti_spect_bed(manifest: Manifest, config: CohortConfig, row: ManifestRow) -> Volume:
    """One NIfTI SPECT bed in Bq/mL, calibrated from counts when the cohort says the images are counts."""
    from ludl.io.nm import counts_to_bq_per_ml

    path = manifest.image_path(row)
    volume = _read_nifti_as(path, config.unit("spect"))
    values = np.asarray(volume.array, dtype=np.float64)
    if volume.unit == "Bq/mL":
        out = values
    elif volume.unit == "MBq/mL":
        out = values * _MBQ_PER_ML_TO_BQ_PER_ML
    elif volume.unit == "counts":
        sensitivity = row.sensitivity_cps_per_mbq or config.sensitivity_cps_per_mbq
        missing = [
            name
            for name, value in (("sensitivity_cps_per_mbq", sensitivity), ("acquisition_s", row.acquisition_s))
            if value is None
        ]
        if missing:
            raise UnitsError(
                f"{_where(manifest, row)} holds counts but has no {' and '.join(missing)}: give them in the manifest "
                "row (sensitivity may also be a cohort.yaml default) so the SPECT can be calibrated (PHYSICS.md §6)"
            )
        assert sensitivity is not None  # checked just above
        out = counts_to_bq_per_ml(
            values,
            volume.voxel_volume_ml,
            acquisition_s=row.acquisition_s,
            sensitivity_cps_per_mbq=sensitivity,
            deadtime_factor=row.deadtime_factor or 1.0,
        )
    else:
        raise UnitsError(f"{_where(manifest, row)} has unit {volume.unit!r}; a SPECT must be Bq/mL, MBq/mL or counts")
    return volume.with_array(out.astype(np.float32), unit="Bq/mL")


def _stitch_nifti(beds: Sequence[Volume], where: str) -> tuple[Volume, np.ndarray]:
    """Stitch NIfTI beds exactly as DICOM beds are stitched (`ludl.io.nm`): nearest bed centre wins an overlap."""
    from ludl.io.nm import stitch_beds  # one stitching rule for DICOM and NIfTI beds

    try:
        return stitch_beds(list(beds))
    except LudlError as err:
        raise type(err)(f"{where}: {err}") from err


def read_spect_row(
    manifest: Manifest, config: CohortConfig, rows: Sequence[ManifestRow], bed_times_h: Sequence[float]
) -> tuple[Volume, Volume]:
    """Read the SPECT bed rows of one time point; returns (Bq/mL volume, bed-index label volume on its grid)."""
    paths = [manifest.image_path(r) for r in rows]
    where = "; ".join(_where(manifest, r) for r in rows)
    for r, p in zip(rows, paths, strict=True):
        if not p.exists():
            raise InputError(f"{_where(manifest, r)}: file not found")
    if all(_is_nifti(p) for p in paths):
        beds = [_nifti_spect_bed(manifest, config, r) for r in rows]
        if len(beds) == 1:
            volume, bed_of_slice = beds[0], np.zeros(beds[0].shape[0], dtype=np.int64)
        else:
            volume, bed_of_slice = _stitch_nifti(beds, where)
    elif not any(_is_nifti(p) for p in paths):
        from ludl.io.nm import read_nm_beds

        first = rows[0]
        try:
            volume, index = read_nm_beds(
                paths,
                list(bed_times_h),
                sensitivity_cps_per_mbq=first.sensitivity_cps_per_mbq or config.sensitivity_cps_per_mbq,
                acquisition_s=_acquisition_s(rows),
                deadtime_factor=first.deadtime_factor or 1.0,
            )
        except LudlError as err:
            raise type(err)(f"{where}: {err}") from err
        bed_of_slice = np.asarray(index.array)[:, 0, 0].astype(np.int64)
    else:
        raise InputError(f"{where}: the beds of one time point mix NIfTI and DICOM; give them in one format")
    index_map = np.broadcast_to(bed_of_slice.astype(np.int16)[:, None, None], volume.shape).copy()
    return volume, volume.with_array(index_map, unit="label")


def _acquisition_s(rows: Sequence[ManifestRow]) -> list[float] | None:
    values = [r.acquisition_s for r in rows]
    return [float(v) for v in values if v is not None] if all(v is not None for v in values) else None


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
    from ludl.io.dicom_series import parse_dicom_datetime

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
    start = None if _is_nifti(path) else _dicom_start(_dicom_header(path))
    if start is None or injection is None:
        raise ManifestError(
            f"{_where(manifest, row)}: no time_h and no DICOM acquisition time with an injection_datetime; give time_h"
        )
    return (start.replace(tzinfo=None) - injection.replace(tzinfo=None)).total_seconds() / 3600.0


def _check_patient_ids(manifest: Manifest, rows: Sequence[ManifestRow]) -> None:
    """All DICOM images of a patient-cycle must carry the same PatientID (a folder of another patient is an error)."""
    seen: dict[str, ManifestRow] = {}
    for row in rows:
        path = manifest.image_path(row)
        if _is_nifti(path) or not path.exists():
            continue
        header = _dicom_header(path)
        pid = str(header.get("PatientID", "") or "") if header is not None else ""
        if not pid:
            continue
        if seen and pid not in seen:
            other_id, other = next(iter(seen.items()))
            raise InputError(
                f"{_where(manifest, row)} has DICOM PatientID {pid!r} but {_where(manifest, other)} has "
                f"{other_id!r}: images of two patients in one patient-cycle; fix the manifest path"
            )
        seen.setdefault(pid, row)


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
    from ludl.io.ct import read_ct
    from ludl.io.labels import read_labels

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

    timepoints: list[TimePoint] = []
    for tp in manifest.timepoints(patient_id, cycle, "spect"):
        spect_rows = sorted(
            (r for r in rows if r.role == "spect" and r.timepoint_h is not None and math.isclose(r.timepoint_h, tp)),
            key=lambda r: r.bed or 0,
        )
        ct_rows = [r for r in rows if r.role == "ct" and r.timepoint_h is not None and math.isclose(r.timepoint_h, tp)]
        if not ct_rows:
            raise ManifestError(f"{_where(manifest, spect_rows[0])}: no ct row at timepoint_h {tp:g}")
        bed_times = [_row_time_h(manifest, r, injection) for r in spect_rows]
        spect, bed_index = read_spect_row(manifest, config, spect_rows, bed_times)
        ct_row = ct_rows[0]
        ct_path = manifest.image_path(ct_row)
        try:
            ct = _read_nifti_as(ct_path, "HU") if _is_nifti(ct_path) else read_ct(ct_path)
        except (LudlError, FileNotFoundError) as err:
            raise InputError(f"{_where(manifest, ct_row)}: {err}") from err
        fwhm = spect_rows[0].fwhm_mm or config.fwhm_mm
        if fwhm is None:
            raise ManifestError(f"{_where(manifest, spect_rows[0])}: no fwhm_mm in the row nor in cohort.yaml defaults")
        timepoints.append(
            TimePoint(
                timepoint_h=float(tp),
                spect=spect,
                bed_index=bed_index,
                bed_times_h=tuple(bed_times),
                ct=ct,
                fwhm_mm=float(fwhm),
                spect_rows=tuple(spect_rows),
                ct_row=ct_row,
            )
        )

    mask_rows = [r for r in rows if r.role == "mask"]
    if not mask_rows:
        raise ManifestError(
            f"patient {patient_id} cycle {cycle} has no mask row in {manifest.file}; dosimetry needs a label map"
        )
    mask_row = mask_rows[0]
    mask_tp = float(mask_row.timepoint_h) if mask_row.timepoint_h is not None else timepoints[0].timepoint_h
    grid = next((t.ct for t in timepoints if math.isclose(t.timepoint_h, mask_tp)), timepoints[0].ct)
    try:
        labels, found = read_labels(
            manifest.image_path(mask_row),
            grid=None if _is_nifti(manifest.image_path(mask_row)) else grid,
            names=dict(config.labels) or None,
        )
    except (LudlError, FileNotFoundError) as err:
        raise InputError(f"{_where(manifest, mask_row)}: {err}") from err
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
