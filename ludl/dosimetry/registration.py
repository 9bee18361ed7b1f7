"""Bring every time point of a patient-cycle into the reference pose through its CT, conserving activity.

Each time point's CT is registered rigidly to the reference CT (`ludl.imaging.register_rigid`, SimpleITK, Mattes
mutual information). The transform maps reference points to that time point's points, so its SPECT is resampled
onto the reference SPECT grid with ``kind="activity"`` (∫ C dV conserved inside the field of view), its bed map and
field-of-view mask by nearest neighbour. Two outcomes are told apart:

- the CT *cannot* be registered (registration fails, or HU correlation below `min_correlation_fail`, or less than
  half of the body overlaps): `GeometryError` naming the CT file and manifest line — no dose from a wrong pose;
- the rigid fit is fine but anatomy moved in ways a rigid transform cannot explain (arms, bladder, bowel): the
  quality report's flags are kept in `TimepointRegistration.flags` and shown in the summary (the residual).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ludl.dosimetry.timepoints import CycleData, TimePoint
from ludl.errors import GeometryError, LudlError
from ludl.imaging.registration import RegistrationQuality, RigidResult, register_rigid
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume
from ludl.physics.units import MBQ_PER_BQ

__all__ = [
    "MIN_CORRELATION_FAIL",
    "MIN_OVERLAP_FAIL",
    "AlignedTimePoint",
    "TimepointRegistration",
    "align_timepoints",
    "register_timepoints",
    "require_registered",
    "resample_errors",
]

# Below this HU correlation after registration the two CTs do not show the same anatomy in any pose (an empty or
# noise CT gives ≈ 0; real repositioning with non-rigid motion keeps ≳ 0.8 in the body, see registration_quality).
MIN_CORRELATION_FAIL = 0.5
MIN_OVERLAP_FAIL = 0.5


def require_registered(result: RigidResult, where: str, ref_where: str) -> None:
    """Raise `GeometryError` when a rigid registration found no common anatomy (empty, noise or another CT)."""
    q = result.quality
    corr = q.correlation
    if not (math.isfinite(corr) and corr >= MIN_CORRELATION_FAIL) or q.overlap_fraction < MIN_OVERLAP_FAIL:
        raise GeometryError(
            f"{where} cannot be registered to the {ref_where}: HU correlation {corr:.2f} (need ≥ "
            f"{MIN_CORRELATION_FAIL}), body overlap {100 * q.overlap_fraction:.0f} %; "
            f"{'; '.join(q.reasons) or 'no usable anatomy'} — check that the file is this patient's CT in HU"
        )


@dataclass(frozen=True)
class TimepointRegistration:
    """Registration of one time point's CT to the reference CT.

    Attributes:
        timepoint_h: nominal time point.
        is_reference: True for the reference time point (identity transform).
        translation_mm: transform translation (x, y, z), reference → this time point, mm.
        rotation_deg: Euler angles (x, y, z), degrees.
        quality: residual after the rigid fit (None for the reference).
        flags: what the rigid transform could not explain (empty when the residual is within limits).
        transform: SimpleITK transform (reference points → this time point's points), None for the reference.
    """

    timepoint_h: float
    is_reference: bool
    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    quality: RegistrationQuality | None
    flags: tuple[str, ...]
    transform: Any = None

    def as_row(self) -> dict[str, Any]:
        """Flat dictionary for CSV and HTML."""
        q = self.quality
        return {
            "timepoint_h": self.timepoint_h,
            "reference": self.is_reference,
            "tx_mm": self.translation_mm[0],
            "ty_mm": self.translation_mm[1],
            "tz_mm": self.translation_mm[2],
            "rx_deg": self.rotation_deg[0],
            "ry_deg": self.rotation_deg[1],
            "rz_deg": self.rotation_deg[2],
            "hu_correlation": q.correlation if q else 1.0,
            "mean_abs_diff_hu": q.mean_abs_diff_hu if q else 0.0,
            "large_diff_fraction": q.large_diff_fraction if q else 0.0,
            "flags": "; ".join(self.flags),
        }


@dataclass(frozen=True, eq=False)
class AlignedTimePoint:
    """One time point on the reference SPECT grid.

    Attributes:
        timepoint_h: nominal time point.
        activity: concentration (Bq/mL) on the reference grid, in the reference pose.
        time_h_map: acquisition time (h) of every voxel (its bed's start time); NaN outside the field of view.
        fov: boolean map, True where this time point's SPECT covers the reference voxel.
        total_before_mbq, total_after_mbq: activity in the field of view before and after resampling.
    """

    timepoint_h: float
    activity: Volume
    time_h_map: np.ndarray
    fov: np.ndarray
    total_before_mbq: float
    total_after_mbq: float


def register_timepoints(
    data: CycleData, reference_index: int, *, threads: int = 1
) -> tuple[TimepointRegistration, ...]:
    """Register every time point's CT to the reference time point's CT; raise for a CT that cannot be registered."""
    ref = data.timepoints[reference_index]
    out: list[TimepointRegistration] = []
    for index, tp in enumerate(data.timepoints):
        if index == reference_index:
            out.append(TimepointRegistration(tp.timepoint_h, True, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), None, ()))
            continue
        out.append(_register_one(data, ref, tp, threads=threads))
    return tuple(out)


def _register_one(data: CycleData, ref: TimePoint, tp: TimePoint, *, threads: int) -> TimepointRegistration:
    where = f"ct {tp.ct_row.path!r} ({data.manifest.file.name} line {tp.ct_row.line})"
    ref_where = f"reference ct {ref.ct_row.path!r} (line {ref.ct_row.line})"
    try:
        result = register_rigid(ref.ct, tp.ct, initial="none", threads=threads)
    except LudlError as err:
        raise GeometryError(f"{where} cannot be registered to the {ref_where}: {err}") from err
    except RuntimeError as err:  # SimpleITK reports its failures as RuntimeError: name the file instead of a traceback
        raise GeometryError(
            f"{where} cannot be registered to the {ref_where}: SimpleITK failed "
            f"({_last_line(err)}); check the CT's spacing, direction and field of view"
        ) from err
    require_registered(result, where, ref_where)
    q = result.quality
    return TimepointRegistration(
        timepoint_h=tp.timepoint_h,
        is_reference=False,
        translation_mm=result.translation_mm,
        rotation_deg=result.rotation_deg,
        quality=q,
        flags=q.reasons,
        transform=result.transform,
    )


@contextmanager
def resample_errors(data: CycleData, role: str, timepoint_h: float | None = None) -> Iterator[None]:
    """Turn a SimpleITK failure (RuntimeError) while resampling an image into a `GeometryError` naming its file."""
    try:
        yield
    except RuntimeError as err:
        rows = [r for r in data.manifest.rows if r.role == role and r.patient_id == data.patient_id]
        rows = [r for r in rows if r.cycle == data.cycle]
        if timepoint_h is not None:
            rows = [r for r in rows if r.timepoint_h is not None and math.isclose(r.timepoint_h, timepoint_h)]
        where = ", ".join(f"{r.path!r} ({data.manifest.file.name} line {r.line})" for r in rows) or role
        raise GeometryError(
            f"{role} {where} could not be resampled onto the reference SPECT grid: SimpleITK failed ({_last_line(err)})"
            "; check its spacing, direction and field of view"
        ) from err


def _last_line(err: BaseException) -> str:
    """The last non-empty line of an exception message (SimpleITK's carry a C++ trace before it)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def align_timepoints(
    data: CycleData, registrations: tuple[TimepointRegistration, ...], reference_grid: Volume
) -> tuple[AlignedTimePoint, ...]:
    """Resample every time point's SPECT (activity-conserving), bed times and field of view onto `reference_grid`."""
    out: list[AlignedTimePoint] = []
    for tp, reg in zip(data.timepoints, registrations, strict=True):
        spect = tp.spect
        before = float(np.asarray(spect.array, dtype=np.float64).sum()) * spect.voxel_volume_ml * MBQ_PER_BQ
        ones = spect.with_array(np.ones(spect.shape, dtype=np.uint8), unit="label")
        if reg.transform is None and spect.same_grid(reference_grid):
            activity, bed, fov = spect, np.asarray(tp.bed_index.array), np.ones(spect.shape, dtype=bool)
        else:
            try:
                activity = resample_to(spect, reference_grid, transform=reg.transform)
                # Bed index shifted by one so that 0 marks "outside this SPECT's field of view".
                shifted = tp.bed_index.with_array(np.asarray(tp.bed_index.array, dtype=np.int16) + 1)
                bed = np.asarray(resample_to(shifted, reference_grid, transform=reg.transform).array) - 1
                fov = np.asarray(resample_to(ones, reference_grid, transform=reg.transform).array) > 0
            except RuntimeError as err:
                raise GeometryError(
                    f"spect {tp.where(data.manifest)} could not be resampled onto the reference SPECT grid: "
                    f"SimpleITK failed ({_last_line(err)}); check its spacing, direction and field of view"
                ) from err
        times = np.asarray(tp.bed_times_h, dtype=np.float64)
        time_map = np.where(fov, times[np.clip(bed, 0, times.size - 1)], np.nan)
        after = float(np.asarray(activity.array, dtype=np.float64).sum()) * reference_grid.voxel_volume_ml * MBQ_PER_BQ
        out.append(AlignedTimePoint(tp.timepoint_h, activity, time_map, fov, before, after))
    return tuple(out)
