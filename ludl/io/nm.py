"""Read quantitative SPECT (DICOM NM, RECON TOMO) as activity concentration in Bq/mL, bed by bed.

Values: a RealWorldValueMappingSequence item is preferred over RescaleSlope/Intercept because it states its
units (UCUM code); Bq/mL-type units are used as they are, counts are calibrated (docs/physics.md §6):
A[MBq] = C / (t_acq · S), concentration = A / V_voxel · 1e6 Bq/MBq · deadtime factor. Nothing is guessed: counts
without `sensitivity_cps_per_mbq` and `acquisition_s` raise `UnitsError`, missing geometry `GeometryError`.
Geometry comes from `ludl.io.dicom_geometry` (DetectorInformationSequence, signed SpacingBetweenSlices, SliceVector),
never from SimpleITK, which defaults a missing spacing to 1 mm and ignores the value mapping.

Several bed positions (a list of paths, or several multi-frame files in one series) are calibrated each with its
own acquisition time and stitched along the slice normal; where beds overlap, each slice is taken from the bed
whose axial centre is nearest (sensitivity falls towards a bed's edges). `Volume.meta["bed_index_per_slice"]`
records the bed (index into the given paths or sorted files) every z-slice came from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import DicomError, GeometryError, InputError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.dicom_file import NM_IMAGE_STORAGE, SECONDARY_CAPTURE_SOP_CLASSES, read_dicom_file, reads_dicom
from ludl.io.dicom_geometry import SeriesGeometry, multiframe_geometry
from ludl.io.dicom_series import inspect_dicom_folder, load_series, select_series
from ludl.io.dicom_tags import link_meta, parse_dicom_datetime
from ludl.physics.units import BQ_PER_MBQ

__all__ = ["counts_to_bq_per_ml", "read_nm", "read_nm_beds", "stitch_beds"]

log = logging.getLogger(__name__)

# UCUM codes (and common vendor spellings) for activity concentration → factor to Bq/mL.
_CONCENTRATION_UNITS = {
    "bq/ml": 1.0,
    "bq/cm3": 1.0,
    "bqml": 1.0,
    "kbq/ml": 1e3,
    "kbq/cm3": 1e3,
    "mbq/ml": BQ_PER_MBQ,
    "mbq/cm3": BQ_PER_MBQ,
}
_COUNT_UNITS = frozenset({"{counts}", "{count}", "{cnts}", "counts", "cnts", "{counts}/{voxel}", "{events}"})
_RATE_UNITS = frozenset({"{counts}/s", "{cnts}/s", "/s", "cps", "{cps}", "1/s"})
# ImageType value 3 (PS3.3 C.8.4.8.1.1): only a reconstructed, ungated tomographic volume is an activity map.
_ACCEPTED_IMAGE_TYPE = "RECON TOMO"
_REFUSED_IMAGE_TYPES = {
    "RECON GATED TOMO": "a gated reconstruction; sum the gates or export the ungated reconstruction",
    "TOMO": "raw projections; reconstruct them first",
    "GATED TOMO": "raw gated projections; reconstruct them first",
    "STATIC": "a planar image, not a tomographic volume",
    "WHOLE BODY": "a planar whole-body scan, not a tomographic volume",
    "DYNAMIC": "a planar dynamic acquisition, not a tomographic volume",
    "GATED": "a planar gated acquisition, not a tomographic volume",
}


def counts_to_bq_per_ml(
    counts: npt.ArrayLike,
    voxel_volume_ml: float,
    *,
    acquisition_s: float | None,
    sensitivity_cps_per_mbq: float,
    deadtime_factor: float = 1.0,
) -> npt.NDArray[np.float64]:
    """Reconstructed counts (or count rates when `acquisition_s` is None) per voxel → activity concentration, Bq/mL.

    Args:
        counts: counts per voxel over the acquisition (cps per voxel when `acquisition_s` is None).
        voxel_volume_ml: volume of one voxel, mL.
        acquisition_s: acquisition time the reconstruction stands for, s (docs/physics.md §6: a manifest field).
        sensitivity_cps_per_mbq: system volume sensitivity S, cps/MBq.
        deadtime_factor: true/observed count rate, ≥ 1.
    """
    if not (np.isfinite(sensitivity_cps_per_mbq) and sensitivity_cps_per_mbq > 0):
        raise InputError(f"sensitivity_cps_per_mbq must be > 0, got {sensitivity_cps_per_mbq}")
    if acquisition_s is not None and not (np.isfinite(acquisition_s) and acquisition_s > 0):
        raise InputError(f"acquisition_s must be > 0 s, got {acquisition_s}")
    if not (np.isfinite(deadtime_factor) and deadtime_factor >= 1.0):
        raise InputError(f"deadtime_factor is true/observed count rate and must be ≥ 1, got {deadtime_factor}")
    if not voxel_volume_ml > 0:
        raise InputError(f"voxel_volume_ml must be > 0, got {voxel_volume_ml}")
    rate_cps = np.asarray(counts, dtype=np.float64) / (1.0 if acquisition_s is None else acquisition_s)
    activity_mbq = rate_cps / sensitivity_cps_per_mbq
    return activity_mbq * (BQ_PER_MBQ / voxel_volume_ml) * deadtime_factor


@dataclass(frozen=True)
class _Values:
    real: npt.NDArray[np.float64]  # (frames, rows, cols) in file frame order
    kind: str  # "concentration", "counts" or "rate"
    to_bq_per_ml: float  # factor when kind == "concentration"
    source: str  # where the mapping came from, for meta


def _units_code(item: Any) -> str | None:
    seq = item.get("MeasurementUnitsCodeSequence")
    if seq:
        value = seq[0].get("CodeValue")
        return str(value).strip() if value is not None else None
    return None


def _classify(units: str, name: str, where: str) -> tuple[str, float]:
    key = units.strip().lower().replace(" ", "")
    if key in _CONCENTRATION_UNITS:
        return "concentration", _CONCENTRATION_UNITS[key]
    if key in _COUNT_UNITS:
        return "counts", 1.0
    if key in _RATE_UNITS:
        return "rate", 1.0
    raise UnitsError(
        f"{name}: {where} units {units!r} are neither an activity concentration (Bq/ml, kBq/ml, MBq/ml) nor counts; "
        "ludl cannot convert them: re-export the reconstruction in counts or Bq/ml"
    )


def _check_slope(slope: float, intercept: float, name: str, tag: str) -> None:
    """A value mapping must be finite and increasing: a zero or negative slope makes every activity 0 or < 0."""
    if not (np.isfinite(slope) and slope > 0 and np.isfinite(intercept)):
        raise UnitsError(
            f"{name}: {tag} is {slope:g} (intercept {intercept:g}); a value mapping needs a positive, finite slope: "
            "re-export the reconstruction"
        )


def _values(ds: Any, name: str) -> _Values:
    stored = np.asarray(ds.pixel_array, dtype=np.float64)
    if stored.ndim == 2:
        stored = stored[None]
    if stored.ndim != 3:
        raise DicomError(f"{name}: pixel data of shape {stored.shape} is not a stack of grey-level frames")
    items = list(ds.get("RealWorldValueMappingSequence") or [])
    if items:
        classified = []
        for item in items:
            units = _units_code(item)
            if units is None:
                continue
            kind, factor = _classify(units, name, "RealWorldValueMapping")
            classified.append((kind, factor, units, item))
        if not classified:
            raise UnitsError(
                f"{name}: RealWorldValueMappingSequence has no MeasurementUnitsCodeSequence; its values have no "
                "stated unit: re-export with units or remove the mapping"
            )
        # An activity-concentration mapping wins over a counts one: it carries the vendor's own calibration.
        rank = {"concentration": 0, "counts": 1, "rate": 2}
        kind, factor, units, item = min(classified, key=lambda c: rank[c[0]])
        if "RealWorldValueLUTData" in item and "RealWorldValueSlope" not in item:
            raise UnitsError(f"{name}: RealWorldValueMapping by lookup table is not supported; use slope/intercept")
        slope = float(item.get("RealWorldValueSlope", 1.0))
        intercept = float(item.get("RealWorldValueIntercept", 0.0))
        _check_slope(slope, intercept, name, "RealWorldValueSlope (0040,9225)")
        return _Values(stored * slope + intercept, kind, factor, f"RealWorldValueMapping ({units})")
    slope = float(ds.get("RescaleSlope", 1.0) if ds.get("RescaleSlope") not in (None, "") else 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    _check_slope(slope, intercept, name, "RescaleSlope (0028,1053)")
    units_tag = ds.get("Units")
    if units_tag:
        kind, factor = _classify(str(units_tag), name, "Units (0054,1001)")
        return _Values(stored * slope + intercept, kind, factor, f"Rescale slope/intercept, Units {units_tag}")
    # The NM IOD defines pixel values as counts unless a mapping says otherwise.
    return _Values(stored * slope + intercept, "counts", 1.0, "stored values (NM counts)")


def _check_nm(ds: Any, name: str) -> None:
    sop = str(ds.get("SOPClassUID", ""))
    if sop in SECONDARY_CAPTURE_SOP_CLASSES:
        raise DicomError(
            f"{name}: Secondary Capture image (SOP class {sop}), though Modality is {ds.get('Modality')!r} — a "
            "screenshot without counts or 3D geometry, not a SPECT reconstruction; export the NM RECON TOMO series"
        )
    if sop != NM_IMAGE_STORAGE:
        raise DicomError(f"{name}: SOP class {sop} is not NM Image Storage ({NM_IMAGE_STORAGE}); not a SPECT image")
    image_type = list(ds.get("ImageType") or [])
    value3 = str(image_type[2]).strip().upper() if len(image_type) > 2 else ""
    if value3 in _REFUSED_IMAGE_TYPES:
        raise DicomError(f"{name}: ImageType {value3!r} is {_REFUSED_IMAGE_TYPES[value3]}")
    if value3 and value3 != _ACCEPTED_IMAGE_TYPE:
        raise DicomError(f"{name}: ImageType {value3!r} is not a reconstructed SPECT volume (RECON TOMO)")


def _bed_volume(
    ds: Any,
    geometry: SeriesGeometry,
    name: str,
    *,
    sensitivity_cps_per_mbq: float | None,
    acquisition_s: float | None,
    deadtime_factor: float,
    frames: npt.NDArray[np.float64] | None = None,
) -> Volume:
    """One bed: values in Bq/mL on its own geometry; `frames` are already-stacked single-frame values."""
    if frames is None:
        values = _values(ds, name)
        real = values.real
        if geometry.frame_order is not None:
            real = real[list(geometry.frame_order)]
    else:
        values = _Values(frames, *_values_header_only(ds, name))
        real = frames
    voxel_ml = float(np.prod(geometry.spacing_zyx_mm)) / 1000.0
    meta: dict[str, Any] = {**link_meta(ds), "value_source": values.source}
    if values.kind == "concentration":
        concentration = real * values.to_bq_per_ml
        notes = []
        if deadtime_factor != 1.0:
            notes.append("deadtime_factor not applied: the values are already an activity concentration")
        if sensitivity_cps_per_mbq is not None or acquisition_s is not None:
            notes.append("sensitivity/acquisition time not used: the values are already an activity concentration")
        for note in notes:
            log.warning("%s: %s", name, note)
        meta["calibration"] = {"kind": "vendor Bq/mL", "notes": notes}
    else:
        missing = [
            label
            for label, value in (("sensitivity_cps_per_mbq", sensitivity_cps_per_mbq), ("acquisition_s", acquisition_s))
            if value is None and not (label == "acquisition_s" and values.kind == "rate")
        ]
        if missing:
            raise UnitsError(
                f"{name}: values are {values.kind} ({values.source}) and need calibration: set "
                f"{' and '.join(missing)} (cohort.yaml defaults or the manifest row)"
            )
        assert sensitivity_cps_per_mbq is not None  # checked just above
        concentration = counts_to_bq_per_ml(
            real,
            voxel_ml,
            acquisition_s=None if values.kind == "rate" else acquisition_s,
            sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
            deadtime_factor=deadtime_factor,
        )
        meta["calibration"] = {
            "kind": values.kind,
            "sensitivity_cps_per_mbq": float(sensitivity_cps_per_mbq),
            "acquisition_s": None if values.kind == "rate" else float(acquisition_s or 0.0),
            "deadtime_factor": float(deadtime_factor),
        }
    return geometry.to_volume(concentration.astype(np.float32), "Bq/mL", meta)


def _values_header_only(ds: Any, name: str) -> tuple[str, float, str]:
    """(kind, factor, source) of a single-frame slice's value mapping, without touching its pixels."""
    items = list(ds.get("RealWorldValueMappingSequence") or [])
    for item in items:
        units = _units_code(item)
        if units is not None:
            kind, factor = _classify(units, name, "RealWorldValueMapping")
            return kind, factor, f"RealWorldValueMapping ({units})"
    if ds.get("Units"):
        kind, factor = _classify(str(ds.Units), name, "Units (0054,1001)")
        return kind, factor, f"Rescale slope/intercept, Units {ds.Units}"
    return "counts", 1.0, "stored values (NM counts)"


def _slice_values(ds: Any, name: str) -> npt.NDArray[np.float64]:
    stored = np.asarray(ds.pixel_array, dtype=np.float64)
    items = [i for i in (ds.get("RealWorldValueMappingSequence") or []) if _units_code(i) is not None]
    if items:
        return stored * float(items[0].get("RealWorldValueSlope", 1.0)) + float(
            items[0].get("RealWorldValueIntercept", 0.0)
        )
    return stored * float(ds.get("RescaleSlope", 1.0) or 1.0) + float(ds.get("RescaleIntercept", 0.0) or 0.0)


def _per_bed(value: float | Sequence[float] | None, n_beds: int, label: str) -> list[float | None]:
    if value is None or isinstance(value, (int, float)):
        return [None if value is None else float(value)] * n_beds
    values = [float(v) for v in value]
    if len(values) != n_beds:
        raise InputError(f"{label} has {len(values)} values for {n_beds} bed position(s); give one per bed")
    return list(values)


def _bed_start_s(ds: Any) -> Any:
    return parse_dicom_datetime(
        ds.get("AcquisitionDate") or ds.get("SeriesDate"),
        ds.get("AcquisitionTime") or ds.get("SeriesTime"),
        ds.get("AcquisitionDateTime"),
    )


_Source = tuple[Any, SeriesGeometry, str, npt.NDArray[np.float64] | None]


def _read_source(path: Path, series_uid: str | None) -> list[_Source]:
    """(dataset, geometry, name, stacked values or None) per bed found at `path` (a file or folder)."""
    report = inspect_dicom_folder(path)
    summary = select_series(report, "NM", series_uid)
    if summary.sop_class_uid in SECONDARY_CAPTURE_SOP_CLASSES:
        _check_nm(read_dicom_file(summary.files[0], pixels=False), str(summary.files[0]))
    summary.raise_if_problems()
    first = read_dicom_file(summary.files[0], pixels=False)
    _check_nm(first, str(summary.files[0]))
    multi = summary.n_files == 1 or int(first.get("NumberOfFrames", 1) or 1) > 1
    if multi:
        beds: list[_Source] = []
        for file in summary.files:  # sorted along the normal by the summary
            ds = read_dicom_file(file)
            _check_nm(ds, str(file))
            beds.append((ds, multiframe_geometry(ds, file), str(file), None))
        return beds
    datasets, geometry = load_series(path, "NM", series_uid=summary.series_uid)
    for ds, file in zip(datasets, summary.files, strict=False):
        _check_nm(ds, str(file))
    kinds = {_values_header_only(ds, str(summary.files[0]))[:2] for ds in datasets}
    if len(kinds) > 1:
        raise UnitsError(f"{path}: slices of one NM series carry different value units {sorted(kinds)}")
    stacked = np.stack([_slice_values(ds, str(path)) for ds in datasets])
    return [(datasets[0], geometry, str(path), stacked)]


def stitch_beds(beds: list[Volume]) -> tuple[Volume, npt.NDArray[np.int64]]:
    """Stitch calibrated beds along their common normal; returns the volume and the bed index of each z-slice."""
    ref = beds[0]
    normal = ref.direction[:, 2]
    dz = ref.spacing_zyx_mm[0]
    for i, bed in enumerate(beds[1:], start=1):
        if bed.shape[1:] != ref.shape[1:] or not np.allclose(bed.spacing_zyx_mm, ref.spacing_zyx_mm, rtol=1e-4):
            raise GeometryError(
                f"bed {i} has shape {bed.shape}/spacing {bed.spacing_zyx_mm}, bed 0 {ref.shape}/{ref.spacing_zyx_mm}; "
                "beds must share their in-plane grid and slice spacing (resample them first)"
            )
        if not np.allclose(bed.direction, ref.direction, atol=1e-4):
            raise GeometryError(f"bed {i} has another orientation than bed 0; beds must be parallel")
        shift = np.asarray(bed.origin_xyz_mm) - np.asarray(ref.origin_xyz_mm)
        in_plane = shift - np.dot(shift, normal) * normal
        if np.linalg.norm(in_plane) > 0.01 * min(ref.spacing_zyx_mm[1:]):
            raise GeometryError(
                f"bed {i} is shifted {np.linalg.norm(in_plane):.3f} mm in-plane against bed 0; beds must line up"
            )
        steps = np.dot(shift, normal) / dz
        if abs(steps - round(steps)) > 0.01:
            raise GeometryError(
                f"bed {i} starts {np.dot(shift, normal):.3f} mm from bed 0 along the axis, not a whole number of "
                f"{dz} mm slices; resample the beds onto one grid first"
            )
    starts = [round(float(np.dot(np.asarray(b.origin_xyz_mm) - ref.origin_xyz_mm, normal)) / dz) for b in beds]
    lo = min(starts)
    hi = max(s + b.shape[0] for s, b in zip(starts, beds, strict=True))
    z = np.arange(lo, hi)
    centres = np.asarray([s + (b.shape[0] - 1) / 2.0 for s, b in zip(starts, beds, strict=True)])
    covered = np.stack([(z >= s) & (z < s + b.shape[0]) for s, b in zip(starts, beds, strict=True)])
    if not covered.any(axis=0).all():
        gap = z[~covered.any(axis=0)]
        raise GeometryError(
            f"the beds leave {gap.size} slice(s) ({gap.size * dz:.1f} mm) uncovered between them; the stitched volume "
            "would have a hole: give all bed positions"
        )
    distance = np.where(covered, np.abs(z[None, :] - centres[:, None]), np.inf)
    bed_of_slice = np.argmin(distance, axis=0)
    out = np.empty((z.size, *ref.shape[1:]), dtype=np.float32)
    for b, (start, bed) in enumerate(zip(starts, beds, strict=True)):  # a loop over beds, not voxels
        rows = np.nonzero(bed_of_slice == b)[0]
        out[rows] = bed.array[z[rows] - start]
    origin = np.asarray(ref.origin_xyz_mm) + lo * dz * normal
    origin_xyz_mm = (float(origin[0]), float(origin[1]), float(origin[2]))
    volume = Volume(out, ref.spacing_zyx_mm, origin_xyz_mm, ref.direction, unit="Bq/mL", meta=dict(ref.meta))
    return volume, bed_of_slice.astype(np.int64)


def _read(
    paths: Sequence[Path],
    *,
    sensitivity_cps_per_mbq: float | None,
    acquisition_s: float | Sequence[float] | None,
    deadtime_factor: float,
    series_uid: str | None,
) -> tuple[Volume, npt.NDArray[np.int64], list[Any]]:
    sources = []
    for path in paths:
        sources.extend(_read_source(path, series_uid))
    n_beds = len(sources)
    times = _per_bed(acquisition_s, n_beds, "acquisition_s")
    beds = [
        _bed_volume(
            ds,
            geometry,
            name,
            sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
            acquisition_s=t,
            deadtime_factor=deadtime_factor,
            frames=stacked,
        )
        for (ds, geometry, name, stacked), t in zip(sources, times, strict=True)
    ]
    starts = [_bed_start_s(ds) for ds, *_ in sources]
    if n_beds == 1:
        volume, bed_index = beds[0], np.zeros(beds[0].shape[0], dtype=np.int64)
    else:
        volume, bed_index = stitch_beds(beds)
    meta = dict(volume.meta)
    meta["n_beds"] = n_beds
    meta["bed_index_per_slice"] = [int(b) for b in bed_index]
    meta["bed_acquisition_s"] = times
    meta["bed_calibration"] = [b.meta.get("calibration") for b in beds]
    if all(s is not None for s in starts):
        first = min(starts)
        # Offsets, not dates: meta stays de-identified while keeping the per-bed timing.
        meta["bed_start_offset_s"] = [float((s - first).total_seconds()) for s in starts]
    return volume.with_array(volume.array, **meta), bed_index, starts


def _as_paths(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        return [Path(path)]
    paths = [Path(p) for p in path]
    if not paths:
        raise InputError("no NM paths given")
    return paths


@reads_dicom
def read_nm(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    sensitivity_cps_per_mbq: float | None = None,
    acquisition_s: float | Sequence[float] | None = None,
    deadtime_factor: float = 1.0,
    series_uid: str | None = None,
) -> Volume:
    """Read a SPECT reconstruction (DICOM NM) as activity concentration (Bq/mL).

    Args:
        path: a multi-frame NM file, a folder holding one NM series (single-frame slices or one multi-frame file
            per bed), or a list of such paths, one per bed position. Beds are numbered in the order given; the
            files of one series in the order of their position along the slice normal.
        sensitivity_cps_per_mbq: system volume sensitivity S (cps/MBq), needed for counts data.
        acquisition_s: acquisition time the reconstruction stands for (s), one value or one per bed; needed for
            counts data.
        deadtime_factor: true/observed count rate (≥ 1), multiplies counts-calibrated values.
        series_uid: choose the series when a folder holds several NM series.

    Returns:
        A Volume (z, y, x) in Bq/mL; ``meta["bed_index_per_slice"]`` gives each z-slice's bed.

    Raises:
        DicomError: not an NM reconstruction (e.g. Secondary Capture), unreadable or truncated files.
        GeometryError: position, orientation or spacing missing or inconsistent; beds that do not line up.
        UnitsError: counts without calibration, or units ludl cannot convert.
    """
    volume, _, _ = _read(
        _as_paths(path),
        sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
        acquisition_s=acquisition_s,
        deadtime_factor=deadtime_factor,
        series_uid=series_uid,
    )
    return volume


@reads_dicom
def read_nm_beds(
    paths: Sequence[str | os.PathLike[str]],
    times_h: Sequence[float] | None = None,
    *,
    sensitivity_cps_per_mbq: float | None = None,
    acquisition_s: float | Sequence[float] | None = None,
    deadtime_factor: float = 1.0,
    series_uid: str | None = None,
) -> tuple[Volume, Volume]:
    """Read and stitch SPECT bed positions; also return a label Volume giving each voxel's bed.

    Args:
        paths: one path per bed position (file or folder), in the order `times_h` and `acquisition_s` follow.
        times_h: acquisition start of each bed after injection, h (recorded per slice in meta as ``slice_time_h``).
        sensitivity_cps_per_mbq, acquisition_s, deadtime_factor, series_uid: as for `read_nm`.

    Returns:
        (activity concentration in Bq/mL, bed index map (int16, unit "label") on the same grid).
    """
    bed_paths = _as_paths(paths)
    volume, bed_index, _ = _read(
        bed_paths,
        sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
        acquisition_s=acquisition_s,
        deadtime_factor=deadtime_factor,
        series_uid=series_uid,
    )
    n_beds = int(volume.meta["n_beds"])
    if n_beds != len(bed_paths):
        raise InputError(f"{len(bed_paths)} paths held {n_beds} bed positions; give one path per bed")
    extra: dict[str, Any] = {}
    if times_h is not None:
        times = [float(t) for t in times_h]
        if len(times) != n_beds:
            raise InputError(f"times_h has {len(times)} values for {n_beds} bed position(s)")
        extra = {"bed_time_h": times, "slice_time_h": [times[int(b)] for b in bed_index]}
    volume = volume.with_array(volume.array, **extra)
    index_map = np.broadcast_to(bed_index.astype(np.int16)[:, None, None], volume.shape).copy()
    return volume, volume.with_array(index_map, unit="label", label_names={i: f"bed_{i}" for i in range(n_beds)})
