"""Manifest checks that need several rows (order, activities, pairing, paths) or the cohort's configuration."""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from collections.abc import Sequence

from ludl.io.cohort import ROLES, CohortConfig
from ludl.io.manifest_schema import (
    ACTIVITY_REL_TOL,
    ITK_SUFFIXES,
    ManifestRow,
    Problem,
    ProblemList,
    fmt_number,
    format_cell,
    time_key,
    valid_group,
)

__all__ = ["config_row_problems", "cross_row_problems"]


def _order_problems(rows: Sequence[ManifestRow], out: ProblemList) -> None:
    """Duplicate, unsorted and swapped time points per (patient, cycle, role, bed); unnumbered beds."""
    groups: dict[tuple[str, int, str, int | None], list[ManifestRow]] = defaultdict(list)
    by_timepoint: dict[tuple[str, int, str, float | None], list[ManifestRow]] = defaultdict(list)
    for r in rows:
        groups[(r.patient_id, r.cycle, r.role, r.bed)].append(r)
        by_timepoint[(r.patient_id, r.cycle, r.role, time_key(r.timepoint_h))].append(r)
    for (patient, cycle, role, bed), members in groups.items():
        where = f"patient {patient} cycle {cycle} {role}" + (f" bed {bed}" if bed is not None else "")
        seen: dict[float | None, ManifestRow] = {}
        last: ManifestRow | None = None
        for r in members:
            key = time_key(r.timepoint_h)
            if key is None and role in ("spect", "ct", "mask"):
                continue  # a missing time point is reported once (missing column) or per row (empty cell) already
            if key in seen:
                hint = "; give each bed its own bed number" if bed is None else ""
                out.add(
                    r.line,
                    f"duplicate time point: {where} timepoint_h {r.timepoint_h} is also on line {seen[key].line}{hint}",
                )
                continue
            seen[key] = r
            if last is not None and r.timepoint_h is not None and last.timepoint_h is not None:
                if r.timepoint_h < last.timepoint_h:
                    out.add(
                        r.line,
                        f"unsorted time points: {where} timepoint_h {fmt_number(r.timepoint_h)} comes after "
                        f"{fmt_number(last.timepoint_h)} (line {last.line}); list time points in increasing order",
                    )
            last = r
        # Actual times must follow the nominal order, or two rows' images are swapped.
        timed = sorted(
            (r.timepoint_h, r.time_h, r.line)
            for r in seen.values()
            if r.timepoint_h is not None and r.time_h is not None
        )
        for (tp0, t0, line0), (tp1, t1, line1) in itertools.pairwise(timed):
            if t1 <= t0:
                out.add(
                    line1,
                    f"time_h {fmt_number(t1)} at timepoint_h {fmt_number(tp1)} is not later than "
                    f"time_h {fmt_number(t0)} at timepoint_h {fmt_number(tp0)} (line {line0}); check for swapped rows",
                )
    for (_, _, role, key), members in by_timepoint.items():
        if key is None and role in ("spect", "ct", "mask"):
            continue  # no time point at all: reported already, beds cannot be matched
        if len(members) > 1 and any(r.bed is not None for r in members):
            for r in members:
                if r.bed is None:
                    out.add(
                        r.line,
                        f"bed is empty but other {r.role} rows of this time point have bed numbers; number every bed",
                    )


def _activity_problems(rows: Sequence[ManifestRow], out: ProblemList) -> None:
    """One injected/residual/extravasated activity and one injection time per patient-cycle; SPECT present."""
    cycles: dict[tuple[str, int], list[ManifestRow]] = defaultdict(list)
    for r in rows:
        if r.patient_id and r.cycle >= 1:
            cycles[(r.patient_id, r.cycle)].append(r)
    for (patient, cycle), members in cycles.items():
        for column in ("injected_mbq", "residual_mbq", "extravasated_mbq", "injection_datetime"):
            given = [(r, getattr(r, column)) for r in members if getattr(r, column) is not None]
            given = [(r, v) for r, v in given if not isinstance(v, float) or math.isfinite(v)]
            for r, value in given[1:]:
                first_row, first = given[0]
                same = (
                    math.isclose(value, first, rel_tol=ACTIVITY_REL_TOL) if isinstance(value, float) else value == first
                )
                if not same:
                    out.add(
                        r.line,
                        f"{column} {format_cell(value)} differs from {format_cell(first)} on line {first_row.line}; "
                        f"patient {patient} cycle {cycle} has one value for all its rows",
                    )
        if not any(r.role == "spect" for r in members) and any(r.role in ROLES for r in members):
            out.add(
                members[0].line,
                f"patient {patient} cycle {cycle} has no spect row; every patient-cycle needs its post-therapy SPECT",
            )


def _pairing_problems(rows: Sequence[ManifestRow], out: ProblemList) -> None:
    """SPECT needs a CT at its time point, a mask a SPECT time point, a PET its PET/CT's CT; one row per image."""
    index: dict[tuple[str, int, str, float | None], list[ManifestRow]] = defaultdict(list)
    for r in rows:
        index[(r.patient_id, r.cycle, r.role, time_key(r.timepoint_h))].append(r)

    def at(r: ManifestRow, role: str) -> list[ManifestRow]:
        return index.get((r.patient_id, r.cycle, role, time_key(r.timepoint_h)), [])

    for r in rows:
        if r.role == "spect" and r.timepoint_h is not None:
            # One CT may cover several beds (bed empty); otherwise the CT of the same bed is needed.
            if not any(ct.bed is None or ct.bed == r.bed for ct in at(r, "ct")):
                bed = f" bed {r.bed}" if r.bed is not None else ""
                out.add(
                    r.line,
                    f"spect at timepoint_h {fmt_number(r.timepoint_h)}{bed} has no ct row at the same time "
                    "point (needed for attenuation, density and registration)",
                )
        elif r.role == "mask" and r.timepoint_h is not None and not at(r, "spect"):
            out.add(
                r.line,
                f"mask at timepoint_h {fmt_number(r.timepoint_h)} has no spect at that time point; a label map "
                "belongs to the time point it was drawn on",
            )
        elif r.role == "pet" and not at(r, "pet_ct"):
            out.add(
                r.line, "pet row has no pet_ct row with the same timepoint_h; the PET's own CT is needed to register it"
            )


def _path_problems(rows: Sequence[ManifestRow], out: ProblemList) -> None:
    by_path: dict[str, ManifestRow] = {}
    for r in rows:
        if r.path:
            key = os.path.normpath(r.path)
            if key in by_path:
                out.add(r.line, f"path {r.path!r} is already used on line {by_path[key].line}; one image, one row")
            else:
                by_path[key] = r


def cross_row_problems(rows: Sequence[ManifestRow], file: str) -> list[Problem]:
    """Checks that need several rows: duplicates, order, activity consistency, pairing of images."""
    out = ProblemList(file)
    valid = [r for r in rows if valid_group(r)]
    _order_problems(valid, out)
    _activity_problems(rows, out)
    _pairing_problems(valid, out)
    _path_problems(rows, out)
    return out


def config_row_problems(rows: Sequence[ManifestRow], config: CohortConfig, file: str) -> list[Problem]:
    """Row checks that need cohort.yaml: resolution and calibration defaults, PET units."""
    out = ProblemList(file)
    for r in rows:
        if r.role == "spect":
            if r.fwhm_mm is None and config.fwhm_mm is None:
                out.add(
                    r.line,
                    "fwhm_mm is empty and cohort.yaml has no defaults.fwhm_mm; give the nominal SPECT "
                    "resolution in one of them",
                )
            if config.unit("spect") == "counts":
                if r.sensitivity_cps_per_mbq is None and config.sensitivity_cps_per_mbq is None:
                    out.add(
                        r.line,
                        "spect images are in counts but sensitivity_cps_per_mbq is empty and cohort.yaml "
                        "has no defaults.sensitivity_cps_per_mbq",
                    )
                if r.acquisition_s is None:
                    out.add(
                        r.line,
                        "spect images are in counts but acquisition_s is empty; give the acquisition "
                        "time the reconstruction stands for (docs/physics.md §6)",
                    )
        elif r.role == "pet" and config.unit("pet") == "Bq/mL" and r.path.lower().endswith(ITK_SUFFIXES):
            missing = [c for c in ("pet_injected_mbq", "weight_kg") if getattr(r, c) is None]
            if missing:
                out.add(
                    r.line,
                    f"a PET image in Bq/mL without a DICOM header needs {' and '.join(missing)} to compute SUVbw",
                )
    return out
