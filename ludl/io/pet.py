"""Read PET (DICOM PT) as SUVbw, following the QIBA vendor-neutral SUV pseudo-code.

Source: QIBA FDG-PET/CT Technical Committee, "Vendor-neutral pseudo-code for SUV calculation" (QIBA wiki,
2013), extended as the IBSI/OncoRay SUV digital reference objects test it (docs/physics.md §6, testdata/suv_dro):

- Units BQML: SUV = C[Bq/mL] · weight[g] / decayed dose[Bq]; GML: the values already are SUVbw; CNTS (Philips):
  SUV = value · (7053,1000) SUV scale factor, or value · (7053,1009) activity scale factor → Bq/mL → as BQML.
- DecayCorrection START: the image is decay-corrected to the scan start, so the dose is decayed to that time;
  ADMIN: corrected to the administration time, so the dose is not decayed; NONE: each slice holds activity as
  measured, so the dose is decayed to that slice's own mean-count time (acquisition start + the time at which
  a decaying source emits its frame-average count rate).
- Scan start: SeriesDate/Time unless it is after the earliest AcquisitionDate/Time (a post-processed series
  re-stamped later); then GE's private scan time (0009,100D), else each frame's AcquisitionTime minus its
  FrameReferenceTime plus the mean-count time within the frame (the QIBA back-computation, "reliable in all
  cases"), else the earliest AcquisitionTime.
- Injection time: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the SeriesDate, moved back a
  day when it would fall after the scan (midnight crossing).
- RadionuclideTotalDose below 1e5 cannot be Bq for a diagnostic PET (≥ 10 MBq): it was entered in MBq.
- Half-life from RadionuclideHalfLife; RescaleSlope/Intercept applied per slice.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, InputError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.dicom_file import reads_dicom
from ludl.io.dicom_series import load_series
from ludl.io.dicom_tags import link_meta, parse_dicom_datetime
from ludl.physics.units import BQ_PER_MBQ, G_PER_KG

__all__ = ["read_pet", "read_pet_bqml", "suv_scale_factors"]

log = logging.getLogger(__name__)

_PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.128"
_ENHANCED_PET_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1"}
# A diagnostic PET injection is ≥ 10 MBq = 1e7 Bq; a number below 1e5 can only be MBq (IBSI SUV DRO_3_0).
_DOSE_IN_MBQ_BELOW = 1e5
_PHILIPS_SUV_FACTOR = (0x7053, 0x1000)
_PHILIPS_ACTIVITY_FACTOR = (0x7053, 0x1009)
_GE_SCAN_DATETIME = (0x0009, 0x100D)


@dataclass(frozen=True)
class _PetInfo:
    """Per-slice factors: SUV = rescaled · suv_factor; Bq/mL = rescaled · bqml_factor (NaN when unknown)."""

    suv_factor: npt.NDArray[np.float64]
    bqml_factor: npt.NDArray[np.float64]
    meta: dict[str, Any]


def _name(ds: Any) -> str:
    return str(getattr(ds, "filename", None) or "PET file")


def _private_float(ds: Any, tag: tuple[int, int], creator_word: str) -> float | None:
    """A private DS value, accepted when its block's creator names the vendor or is absent (anonymised data)."""
    creator = ds.get((tag[0], 0x0010))
    if creator is not None and creator_word.lower() not in str(creator.value).lower():
        return None
    item = ds.get(tag)
    if item is None or item.value in (None, ""):
        return None
    try:
        value = item.value
        if isinstance(value, bytes):
            value = value.decode("ascii", "ignore").strip("\0 ")
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number != 0.0 else None


def _radiopharmaceutical(ds: Any) -> Any:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise DicomError(
            f"{_name(ds)}: no RadiopharmaceuticalInformationSequence (injected dose, time, half-life); SUV cannot "
            "be computed: pass injected_mbq and injection_datetime or fix the export"
        )
    return seq[0]


def _mean_count_time_s(frame_duration_s: float, half_life_s: float) -> float:
    """Time after a frame's start at which a decaying source emits the frame-average count rate (QIBA)."""
    if frame_duration_s <= 0:
        return 0.0
    decay = math.log(2.0) / half_life_s * frame_duration_s
    return frame_duration_s * math.log(decay / -math.expm1(-decay)) / decay


def _acquisition_datetime(ds: Any) -> dt.datetime | None:
    return parse_dicom_datetime(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"), ds.get("AcquisitionDateTime"))


def _scan_start(datasets: Sequence[Any], half_life_s: float | None) -> tuple[list[dt.datetime], str]:
    """Per-slice scan reference time for DecayCorrection START (QIBA), and which rule gave it."""
    first = datasets[0]
    series = parse_dicom_datetime(first.get("SeriesDate"), first.get("SeriesTime"))
    acquisitions = [_acquisition_datetime(ds) for ds in datasets]
    known = [a for a in acquisitions if a is not None]
    earliest = min(known) if known else None
    n = len(datasets)
    if series is not None and (earliest is None or series <= earliest):
        return [series] * n, "SeriesDate/SeriesTime"
    if earliest is None:
        raise DicomError(
            f"{_name(first)}: neither SeriesDate/SeriesTime nor AcquisitionDate/AcquisitionTime is usable; the scan "
            "time is unknown"
        )
    ge = first.get(_GE_SCAN_DATETIME)
    creator = first.get((0x0009, 0x0010))
    if ge is not None and (creator is None or "GEMS_PETD" in str(creator.value)):
        value = ge.value.decode("ascii", "ignore") if isinstance(ge.value, bytes) else str(ge.value)
        ge_time = parse_dicom_datetime(datetime=value.strip("\0 "))
        if ge_time is not None:
            return [ge_time] * n, "GE private scan datetime (0009,100D)"
    back: list[dt.datetime] = []
    for ds, acquired in zip(datasets, acquisitions, strict=True):
        reference_ms = ds.get("FrameReferenceTime")
        duration_ms = ds.get("ActualFrameDuration")
        if acquired is None or not reference_ms or not duration_ms or half_life_s is None:
            break
        if float(reference_ms) <= 0 or float(duration_ms) <= 0:
            break
        offset_s = -float(reference_ms) / 1000.0 + _mean_count_time_s(float(duration_ms) / 1000.0, half_life_s)
        back.append(acquired + dt.timedelta(seconds=offset_s))
    if len(back) == n:
        return back, "AcquisitionTime - FrameReferenceTime + mean-count time (QIBA back-computation)"
    return [earliest] * n, "earliest AcquisitionDate/AcquisitionTime"


def _injection_time(ds: Any, scan: dt.datetime) -> tuple[dt.datetime, str]:
    rp = _radiopharmaceutical(ds)
    full = parse_dicom_datetime(datetime=rp.get("RadiopharmaceuticalStartDateTime"))
    if full is not None:
        return full, "RadiopharmaceuticalStartDateTime"
    day = ds.get("SeriesDate") or ds.get("AcquisitionDate") or ds.get("StudyDate")
    start = parse_dicom_datetime(day, rp.get("RadiopharmaceuticalStartTime"))
    if start is None:
        raise DicomError(
            f"{_name(ds)}: no RadiopharmaceuticalStartDateTime or RadiopharmaceuticalStartTime; the injection time "
            "is unknown: pass injection_datetime or fix the export"
        )
    if start > scan:  # injected before midnight, scanned after it
        start -= dt.timedelta(days=1)
        return start, "RadiopharmaceuticalStartTime (previous day: midnight crossing)"
    return start, "RadiopharmaceuticalStartTime on the SeriesDate"


def _checked_units(datasets: Sequence[Any], name: str) -> tuple[str, str]:
    """(Units, DecayCorrection) of the series, checked for consistency and for attenuation/decay correction."""
    first = datasets[0]
    units = str(first.get("Units", "") or "").strip().upper()
    for ds in datasets[1:]:
        if str(ds.get("Units", "") or "").strip().upper() != units:
            raise DicomError(f"{_name(ds)}: Units {ds.get('Units')!r} differs from {units!r} in {name}")
    if not units:
        raise UnitsError(f"{name}: PET Units (0054,1001) missing; ludl cannot tell Bq/mL from counts or SUV")
    if units not in ("BQML", "GML", "CNTS"):
        raise UnitsError(f"{name}: PET Units {units!r} cannot be converted to SUVbw (BQML, GML or Philips CNTS only)")
    decay_correction = str(first.get("DecayCorrection", "") or "").strip().upper()
    corrected = [str(v).upper() for v in (first.get("CorrectedImage") or [])]
    if corrected and "ATTN" not in corrected:
        raise DicomError(
            f"{name}: CorrectedImage {corrected} lacks ATTN: not attenuation-corrected, SUV is meaningless"
        )
    if corrected and decay_correction in ("START", "ADMIN") and "DECY" not in corrected:
        raise DicomError(f"{name}: DecayCorrection is {decay_correction} but CorrectedImage {corrected} lacks DECY")
    return units, decay_correction


def _weight(first: Any, name: str, weight_kg: float | None) -> tuple[float | None, str | None]:
    """(body weight in kg, the problem when it is missing or not positive)."""
    if weight_kg is None:
        raw_weight = first.get("PatientWeight")
        weight_kg = float(raw_weight) if raw_weight not in (None, "") else None
    if weight_kg is None or not (math.isfinite(weight_kg) and weight_kg > 0):
        return weight_kg, (
            f"{name}: PatientWeight (0010,1030) is missing or not positive ({weight_kg}); SUVbw needs the body "
            "weight: pass weight_kg (manifest column weight_kg) or fix the export"
        )
    return weight_kg, None


def _injected_bq(rp: Any | None, name: str, injected_mbq: float | None, meta: dict[str, Any]) -> float:
    """Injected activity (Bq): the override, else RadionuclideTotalDose (read as MBq when too small to be Bq)."""
    if injected_mbq is not None:
        return float(injected_mbq) * BQ_PER_MBQ
    assert rp is not None  # the caller reads the sequence whenever no override is given
    raw = rp.get("RadionuclideTotalDose")
    if raw in (None, "") or not float(raw) > 0:
        raise DicomError(
            f"{name}: RadionuclideTotalDose (0018,1074) is missing or not positive; the injected dose is "
            "unknown: pass injected_mbq (manifest column pet_injected_mbq) or fix the export"
        )
    dose_bq = float(raw)
    if dose_bq < _DOSE_IN_MBQ_BELOW:
        log.warning("%s: RadionuclideTotalDose %s read as MBq (below 1e5, cannot be Bq)", name, raw)
        meta["dose_read_as_mbq"] = True
        dose_bq *= BQ_PER_MBQ
    return dose_bq


def _scan_times(datasets: Sequence[Any], decay_correction: str, half_life_s: float) -> tuple[list[dt.datetime], str]:
    """The time each slice's activity is referred to (series start, or each slice's own mean-count time)."""
    if decay_correction == "START":
        return _scan_start(datasets, half_life_s)
    times = []
    for ds in datasets:
        acquired = _acquisition_datetime(ds)
        if acquired is None:
            raise DicomError(f"{_name(ds)}: DecayCorrection NONE needs each slice's AcquisitionTime")
        duration_ms = ds.get("ActualFrameDuration")
        mean_s = _mean_count_time_s(float(duration_ms) / 1000.0, half_life_s) if duration_ms else 0.0
        times.append(acquired + dt.timedelta(seconds=mean_s))
    return times, "each slice's AcquisitionTime + mean-count time within its frame (DecayCorrection NONE)"


def _decayed_dose_bq(
    datasets: Sequence[Any],
    injected_mbq: float | None,
    decay_correction: str,
    injection_datetime: dt.datetime | None,
    meta: dict[str, Any],
) -> npt.NDArray[np.float64]:
    """Injected dose decayed to each slice's reference time (Bq); `DicomError` naming what is missing."""
    first = datasets[0]
    name = _name(first)
    n = len(datasets)
    rp = _radiopharmaceutical(first) if injected_mbq is None or decay_correction != "ADMIN" else None
    dose_bq = _injected_bq(rp, name, injected_mbq, meta)
    meta["injected_bq"] = dose_bq
    if decay_correction == "ADMIN":
        meta["scan_time_rule"] = "not needed (decay-corrected to administration)"
        return np.full(n, dose_bq)
    if decay_correction not in ("START", "NONE"):
        raise DicomError(
            f"{name}: DecayCorrection {decay_correction!r} is none of START, ADMIN, NONE; SUV cannot be computed"
        )
    assert rp is not None
    raw_half = rp.get("RadionuclideHalfLife")
    if raw_half in (None, "") or not float(raw_half) > 0:
        raise DicomError(f"{name}: RadionuclideHalfLife (0018,1075) is missing; the dose cannot be decay-corrected")
    half_life_s = float(raw_half)
    meta["half_life_s"] = half_life_s
    times, rule = _scan_times(datasets, decay_correction, half_life_s)
    meta["scan_time_rule"] = rule
    if injection_datetime is not None:
        injected_at, injection_rule = injection_datetime, "given"
    else:
        injected_at, injection_rule = _injection_time(first, min(times))
    meta["injection_time_rule"] = injection_rule
    decay_s = np.asarray([(t - injected_at).total_seconds() for t in times])
    if (decay_s < 0).any():
        raise DicomError(
            f"{name}: the scan ({min(times).time()}) precedes the injection ({injected_at.time()}); check "
            "the radiopharmaceutical start time"
        )
    meta["uptake_s"] = float(decay_s.min())
    return np.asarray(dose_bq * np.exp2(-decay_s / half_life_s), dtype=np.float64)


def _stated_factors(
    datasets: Sequence[Any], units: str, name: str, meta: dict[str, Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(SUV, Bq/mL) factors the file states itself (Units, Philips private factors); NaN where it states none."""
    n = len(datasets)
    suv = np.full(n, np.nan)
    bqml = np.full(n, np.nan)
    if units == "BQML":
        bqml[:] = 1.0
    elif units == "CNTS":
        suv_private = [_private_float(ds, _PHILIPS_SUV_FACTOR, "philips") for ds in datasets]
        activity_private = [_private_float(ds, _PHILIPS_ACTIVITY_FACTOR, "philips") for ds in datasets]
        if all(v is not None for v in activity_private):
            bqml[:] = np.asarray(activity_private, dtype=np.float64)
        if all(v is not None for v in suv_private):
            suv[:] = np.asarray(suv_private, dtype=np.float64)
            meta["suv_source"] = "Philips SUV scale factor (7053,1000)"
        elif np.isnan(bqml).any():
            raise UnitsError(
                f"{name}: Units CNTS without the Philips SUV scale factor (7053,1000) or activity concentration "
                "scale factor (7053,1009); counts cannot be converted"
            )
    elif units == "GML":
        suv[:] = 1.0
        meta["suv_source"] = "Units GML (values are SUVbw)"
    return suv, bqml


def suv_scale_factors(
    datasets: Sequence[Any],
    *,
    weight_kg: float | None = None,
    injected_mbq: float | None = None,
    injection_datetime: dt.datetime | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], dict[str, Any]]:
    """Per-slice factors turning rescaled PET values into SUVbw and into Bq/mL (NaN where not derivable).

    Args:
        datasets: the slices of one PET series (headers suffice), in slice order.
        weight_kg: overrides PatientWeight (manifest ``weight_kg``).
        injected_mbq: overrides RadionuclideTotalDose (manifest ``pet_injected_mbq``).
        injection_datetime: overrides the radiopharmaceutical start time.

    Returns:
        (suv_factor, bqml_factor, meta), each factor of shape (n_slices,).
    """
    first = datasets[0]
    name = _name(first)
    units, decay_correction = _checked_units(datasets, name)
    meta: dict[str, Any] = {**link_meta(first), "units_in_file": units, "decay_correction": decay_correction}
    weight_kg, weight_problem = _weight(first, name, weight_kg)
    # Decayed injected dose per slice, Bq (needed for BQML and for Bq/mL ↔ SUV with GML).
    decayed_bq: npt.NDArray[np.float64] | None = None
    dose_problem: str | None = None
    try:
        decayed_bq = _decayed_dose_bq(datasets, injected_mbq, decay_correction, injection_datetime, meta)
    except DicomError as err:
        dose_problem = str(err)
    suv, bqml = _stated_factors(datasets, units, name, meta)
    # The SUV formula is written out here rather than through `ludl.physics.units.suv_bw`: the decayed dose differs
    # per slice (DecayCorrection NONE), where suv_bw takes one injected activity.
    if units == "GML":
        if decayed_bq is not None and weight_problem is None:
            assert weight_kg is not None
            bqml[:] = decayed_bq / (weight_kg * G_PER_KG)
    elif np.isnan(suv).any():
        # Bq/mL → SUVbw needs both the weight and the decayed dose: report what is missing, naming the file.
        if weight_problem is not None:
            raise DicomError(weight_problem)
        if dose_problem is not None:
            raise DicomError(dose_problem)
        assert decayed_bq is not None and weight_kg is not None
        suv = bqml * weight_kg * G_PER_KG / decayed_bq
        meta.setdefault("suv_source", "Bq/mL · weight / decayed dose (QIBA)")
    if weight_kg is not None:
        meta["weight_kg"] = float(weight_kg)
    return suv, bqml, meta


def _read(
    path: str | os.PathLike[str],
    unit: str,
    series_uid: str | None,
    weight_kg: float | None,
    injected_mbq: float | None,
    injection_datetime: dt.datetime | None,
) -> Volume:
    datasets, geometry = load_series(path, "PT", series_uid=series_uid)
    sop = str(datasets[0].get("SOPClassUID", ""))
    multi_frame = len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1
    if sop in _ENHANCED_PET_SOP_CLASSES or multi_frame:
        raise DicomError(f"{_name(datasets[0])}: enhanced/multi-frame PET is not supported; export classic PET slices")
    if sop != _PET_SOP_CLASS:
        raise DicomError(f"{_name(datasets[0])}: SOP class {sop} is not PET Image Storage ({_PET_SOP_CLASS})")
    suv_factor, bqml_factor, meta = suv_scale_factors(
        datasets, weight_kg=weight_kg, injected_mbq=injected_mbq, injection_datetime=injection_datetime
    )
    factor = suv_factor if unit == "SUV" else bqml_factor
    if np.isnan(factor).any():
        raise UnitsError(
            f"{_name(datasets[0])}: the file's values ({meta['units_in_file']}) cannot be turned into {unit}; "
            "the activity scale factor or the dose information is missing"
        )
    slopes = np.asarray([float(ds.get("RescaleSlope", 1.0) or 1.0) for ds in datasets])
    intercepts = np.asarray([float(ds.get("RescaleIntercept", 0.0) or 0.0) for ds in datasets])
    stored = np.stack([np.asarray(ds.pixel_array, dtype=np.float64) for ds in datasets])
    values = (stored * slopes[:, None, None] + intercepts[:, None, None]) * factor[:, None, None]
    if unit == "SUV":
        meta["bqml_available"] = bool(np.isfinite(bqml_factor).all())
    return geometry.to_volume(values.astype(np.float32), unit, meta)


@reads_dicom
def read_pet(
    path: str | os.PathLike[str],
    *,
    unit: str = "SUV",
    series_uid: str | None = None,
    weight_kg: float | None = None,
    injected_mbq: float | None = None,
    injection_datetime: dt.datetime | None = None,
) -> Volume:
    """Read a PET series as SUVbw (or activity concentration with ``unit="Bq/mL"``).

    Args:
        path: folder (or file) holding one PET series.
        unit: ``"SUV"`` (body-weight SUV, g/mL) or ``"Bq/mL"``.
        series_uid: choose the series when the folder holds several PET series.
        weight_kg: overrides PatientWeight, kg.
        injected_mbq: overrides RadionuclideTotalDose, MBq.
        injection_datetime: overrides the radiopharmaceutical start time (naive local time, like DICOM's).

    Raises:
        DicomError: missing PatientWeight, dose or times (naming the file), broken or mixed series.
        UnitsError: Units the QIBA pseudo-code cannot convert.
    """
    if unit not in ("SUV", "Bq/mL"):
        raise InputError(f"unit must be 'SUV' or 'Bq/mL', got {unit!r}")
    return _read(path, unit, series_uid, weight_kg, injected_mbq, injection_datetime)


@reads_dicom
def read_pet_bqml(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Volume:
    """Read a PET series as activity concentration (Bq/mL) — as stored, with the series' own decay correction."""
    return _read(path, "Bq/mL", series_uid, None, None, None)
