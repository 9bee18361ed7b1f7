"""The clinical report of a multi-time-point dosimetry run: `ReportContent` built from a `DosimetryResult`.

`ludl.report.write_report` renders it (HTML + PDF); this module only gathers the case's numbers, curves and images.
No patient identifier enters the content: the report is labelled with the output folder's name (the caller names
it), and region names stay canonical in the page's hover text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ludl.dosimetry.timepoints import CycleData
from ludl.imaging.volume import Volume
from ludl.physics.kinetics import TacFit
from ludl.report import RegionDose, ReportContent, ReportHeader, ReportImages, TimeActivityCurve, write_report

if TYPE_CHECKING:
    from ludl.dosimetry.pipeline import DosimetryResult

__all__ = [
    "MARROW_CAUTION",
    "RegionKinetics",
    "dosimetry_report_content",
    "region_kinetics",
    "terminal_half_life_h",
    "write_dosimetry_report",
]

LN2 = math.log(2.0)
# docs/physics.md §5: the image-based marrow region reads +21…+101 % (median) on the synthetic cohort.
MARROW_CAUTION = (
    "spill-in from nearby bone lesions can dominate this image-based dose (synthetic cohort: median +21 to +101 %); "
    "use blood-based marrow dosimetry for decisions"
)
_CURVE_POINTS = 160
# Pipeline notes that describe the method rather than warn (shown under "Method", not in the warnings box).
_METHOD_NOTE_STARTS = ("several bed positions",)
_REGION_NOTE = re.compile(r"^region (\S+): (.*)$", re.S)
_TIA_MODES = {"voxel": "voxel-wise fits", "region": "region fits spread by the reference image"}
_DOSE_METHODS = {"dvk": "177Lu voxel S kernel with CT density correction", "ldm": "local energy deposition"}
_PVC = {"none": "none", "rc": "recovery coefficients", "gtm": "geometric transfer matrix (GTM) per time point"}


@dataclass(frozen=True, eq=False)
class RegionKinetics:
    """Region time-activity curves measured in the images (time h, activity MBq) and their fits."""

    fits: Mapping[str, TacFit | None]
    curves: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]


def region_kinetics(result: DosimetryResult, data: CycleData, ref_index: int) -> RegionKinetics:
    """The result's region curves and fits (read-only): taken from the result when it carries them, else refitted.

    Refitting repeats the pipeline's own steps (`on_reference_grid`, `region_fits`) with the result's registrations,
    so the curves are the ones the pipeline fitted before partial-volume correction.
    """
    fits = getattr(result, "region_fits", None)
    curves = getattr(result, "region_curves", None)
    if fits and curves:  # fields the pipeline may carry (see docs/report.md); empty or absent: refit
        return RegionKinetics(fits, curves)
    from ludl.dosimetry.pipeline import on_reference_grid
    from ludl.dosimetry.tia import region_fits

    grid = on_reference_grid(data, result.registrations, ref_index)
    model = str(result.settings.get("model", "auto"))
    fitted, measured, _ = region_fits(grid.aligned, grid.regions, model, grid.grid.voxel_volume_ml)
    return RegionKinetics(fitted, measured)


def terminal_half_life_h(fit: TacFit | None) -> float | None:
    """Effective half-life (h) of the fit's slowest clearance phase (λ1 is the terminal rate in every model)."""
    if fit is None:
        return None
    rate = fit.params.get("lambda1_per_h", fit.params.get("lambda_tail_per_h", math.nan))
    return LN2 / rate if math.isfinite(rate) and rate > 0 else None


def _finite(value: Any) -> float | None:
    v = float(value) if value not in (None, "") else math.nan
    return v if math.isfinite(v) else None


def _region_notes(notes: Sequence[str], names: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The pipeline's notes split into case-level warnings and per-region flags (``region NAME: …`` notes)."""
    general: list[str] = []
    per_region: dict[str, list[str]] = {}
    for note in notes:
        match = _REGION_NOTE.match(note)
        if match and match[1] in names:
            per_region.setdefault(match[1], []).append(match[2])
        elif not note.startswith(_METHOD_NOTE_STARTS):
            general.append(note)
    return general, per_region


def _region_dose(row: Mapping[str, Any], fit: TacFit | None, notes: Sequence[str]) -> RegionDose:
    scored = bool(row["scored"])
    flags = (*((MARROW_CAUTION,) if row["kind"] == "marrow" else ()), *notes)
    if not scored:  # the only thing to say about a lesion without dose
        share = 100 * float(row["in_fov_fraction"])
        flags = (f"outside the field of view at some time point (at worst {share:.0f} % inside)",)
    return RegionDose(
        name=row["region"], kind=row["kind"], volume_ml=float(row["volume_ml"]),
        mean_dose_gy=float(row["mean_dose_gy"]), voxel_mean_dose_gy=float(row["mean_dose_uncorrected_gy"]),
        median_dose_gy=float(row["median_dose_gy"]), max_dose_gy=float(row["max_dose_gy"]),
        d2_gy=float(row["d2_gy"]), d50_gy=float(row["d50_gy"]), d98_gy=float(row["d98_gy"]),
        tia_mbq_h=float(row["tia_mbq_h"]), scored=scored,
        t_eff_h=terminal_half_life_h(fit) if scored else None, bed_gy=_finite(row["bed_gy"]),
        correction_factor=_finite(row["pvc_factor"]), flags=flags,
    )  # fmt: skip


def _curves(result: DosimetryResult, kinetics: RegionKinetics) -> tuple[TimeActivityCurve, ...]:
    """Measured points and fitted curves of every scored organ and lesion (not the body, bladder or rest)."""
    out = []
    for row in result.regions:
        name = row["region"]
        fit = kinetics.fits.get(name)
        skip = row["kind"] == "body" or name == "bladder" or not row["scored"]
        if skip or fit is None or name not in kinetics.curves:
            continue
        times, activity = kinetics.curves[name]
        dense = np.linspace(0.0, 1.15 * float(np.max(times)), _CURVE_POINTS)
        predicted = np.clip(fit.predict(dense), 0.0, None)
        out.append(
            TimeActivityCurve(
                name,
                tuple(map(float, times)),
                tuple(map(float, activity)),
                tuple(map(float, dense)),
                tuple(map(float, predicted)),
                fit.model,
            )
        )
    return tuple(out)


def _scan_dates(data: CycleData) -> tuple[str, ...]:
    """Calendar date of each scan from the injection date and time (empty where the manifest has none)."""
    from datetime import timedelta

    dates = []
    for tp in data.timepoints:
        injected = tp.spect_rows[0].injection_datetime
        dates.append("" if injected is None else (injected + timedelta(hours=tp.time_h)).date().isoformat())
    return tuple(dates)


def _baseline_pet(data: CycleData) -> tuple[Volume | None, str]:
    """The patient's pre-therapy PET (this cycle's, else the latest earlier one) in SUV for the MIP, or a note.

    Only its projection is shown, on its own grid, so it is not registered; a PET that cannot be read is left out
    with a note and never fails the report.
    """
    from ludl.errors import LudlError
    from ludl.io.cohort_images import read_pet_suv_row

    rows = [r for r in data.manifest.select(patient_id=data.patient_id, role="pet") if r.cycle <= data.cycle]
    if not rows:
        return None, ""
    try:
        return read_pet_suv_row(data.manifest, data.config, max(rows, key=lambda r: r.cycle)), ""
    except (LudlError, OSError) as err:
        return None, f"PET maximum-intensity projection left out: {err}"


def _method_notes(result: DosimetryResult, data: CycleData) -> tuple[str, ...]:
    s = result.settings
    share = ", ".join(
        f"{t.timepoint_h:g} h {100 * a / result.net_administered_mbq:.0f} %"
        for t, a in zip(data.timepoints, result.activity_in_fov_mbq, strict=False)
    )
    return (
        f"Time-integrated activity: {_TIA_MODES.get(s['tia_mode'], s['tia_mode'])}, kinetic model {s['model']}; "
        f"time points {s['timepoints_h']} h; reference time point {s['reference_timepoint_h']:g} h.",
        f"Dose: {_DOSE_METHODS.get(s['dose_method'], s['dose_method'])}; voxel {s['voxel_mm']} mm.",
        f"Partial-volume correction of region means: {_PVC.get(s['pvc'], s['pvc'])}, nominal resolution "
        f"{s['fwhm_mm']:g} mm FWHM.",
        f"Activity in the field of view, share of the net administered {result.net_administered_mbq:.0f} MBq: {share}.",
        "Time–activity curves: region activities measured in the images (before partial-volume correction).",
        *(n for n in result.notes if n.startswith(_METHOD_NOTE_STARTS)),
    )


def dosimetry_report_content(
    result: DosimetryResult,
    data: CycleData,
    ref_index: int,
    *,
    patient_label: str,
    kinetics: RegionKinetics | None = None,
) -> ReportContent:
    """The report content of one patient-cycle's multi-time-point dosimetry (`patient_label`: a pseudonym)."""
    from ludl import __version__

    kinetics = region_kinetics(result, data, ref_index) if kinetics is None else kinetics
    warnings, region_notes = _region_notes(result.notes, {row["region"] for row in result.regions})
    regions = tuple(
        _region_dose(row, kinetics.fits.get(row["region"]), region_notes.get(row["region"], ()))
        for row in result.regions
    )
    header = ReportHeader(
        patient_label=patient_label,
        cycle=data.cycle,
        scan_dates=_scan_dates(data),
        scan_times_h=tuple(t.time_h for t in data.timepoints),
        injected_mbq=data.injected_mbq,
        method=f"multi-time-point ({len(data.timepoints)} SPECT/CT, {result.settings['tia_mode']} fits)",
        code_version=__version__,
        administered_mbq=data.net_administered_mbq,
    )
    labels = result.regions_map
    pet, pet_note = _baseline_pet(data)
    if pet is not None:
        pet_note = "PET maximum-intensity projection: the pre-therapy PSMA PET as acquired (overview, not registered)."
    images = ReportImages(
        dose_gy=result.dose,
        labels=result.dose.with_array(labels.labels, unit="label"),
        label_names={v: n for n, v in labels.values.items()},
        ct_hu=data.timepoints[ref_index].ct,
        pet_suv=pet,
    )
    return ReportContent(
        title="Multi-time-point dosimetry (177Lu)",
        header=header,
        regions=regions,
        images=images,
        curves=_curves(result, kinetics),
        warnings=(*data.notes, *warnings),
        notes=(*_method_notes(result, data), *((pet_note,) if pet_note else ())),
        registration_rows=tuple(r.as_row() for r in result.registrations),
    )


def write_dosimetry_report(
    result: DosimetryResult, data: CycleData, ref_index: int, out: Path, *, pdf: bool = True
) -> dict[str, Path]:
    """Write ``summary.html``, ``summary.pdf`` (the report) and ``dvh.png`` into `out`, labelled by the folder name."""
    from ludl.io.atomic import atomic_write
    from ludl.report.figures import dvh_figure, png_bytes

    label = Path(out).resolve().name
    content = dosimetry_report_content(result, data, ref_index, patient_label=label)
    files = write_report(content, Path(out), pdf=pdf, name="summary")
    out_files = {"summary_html": files["report_html"], **({"summary_pdf": files["report_pdf"]} if pdf else {})}
    figure = dvh_figure(content)
    if figure is not None:  # the DVHs on their own as well, for slides and letters
        with atomic_write(Path(out) / "dvh.png", suffix=".png") as tmp:
            tmp.write_bytes(png_bytes(figure))
        out_files["dvh_png"] = Path(out) / "dvh.png"
    return out_files
