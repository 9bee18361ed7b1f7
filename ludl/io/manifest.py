"""The cohort manifest (`manifest.csv`): one row per image, loading, queries and whole-cohort validation.

DESIGN.md "Data formats" is the contract: columns `MANIFEST_COLUMNS`, empty cell = "not applicable / use the
default". `load_manifest` parses and checks the CSV alone and raises one `ManifestError` listing every problem;
`validate_cohort` checks the whole folder (cohort.yaml, manifest, image headers, DICOM series completeness,
outcomes.csv) without reading any pixel data, and returns a `ValidationReport` instead of raising.

Row numbers in problems are *line numbers of the file* (1-based; the CSV header is line 1, so the first data row
is line 2), which is what an editor or `grep -n` shows.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import SimpleITK as sitk

from ludl.errors import LudlError, ManifestError
from ludl.io.atomic import atomic_write_text
from ludl.io.cohort import ROLES, CohortConfig, check_cohort_config

__all__ = [
    "MANIFEST_COLUMNS",
    "OUTCOME_COLUMNS",
    "REQUIRED_COLUMNS",
    "CohortSummary",
    "Manifest",
    "ManifestRow",
    "Problem",
    "ValidationReport",
    "cohort_summary",
    "load_manifest",
    "validate_cohort",
    "write_manifest",
]

MANIFEST_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "cycle",
    "role",
    "timepoint_h",
    "time_h",
    "bed",
    "path",
    "injected_mbq",
    "residual_mbq",
    "extravasated_mbq",
    "injection_datetime",
    "acquisition_s",
    "sensitivity_cps_per_mbq",
    "fwhm_mm",
    "deadtime_factor",
    "pet_tracer",
    "pet_injected_mbq",
    "weight_kg",
)
# Columns that must be in the header; the others may be left out (= empty on every row).
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "cycle", "role", "timepoint_h", "time_h", "path", "injected_mbq")
OUTCOME_COLUMNS: tuple[str, ...] = ("patient_id", "psa_baseline", "psa_week12", "non_response")

MANIFEST_FILE = "manifest.csv"
COHORT_FILE = "cohort.yaml"
OUTCOMES_FILE = "outcomes.csv"

# Image files read through SimpleITK; anything else that is a file must be DICOM.
_ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# DICOM Modality expected for each role (RTSTRUCT or SEG for label maps).
_MODALITIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "spect": frozenset({"NM"}),
        "ct": frozenset({"CT"}),
        "pet": frozenset({"PT"}),
        "pet_ct": frozenset({"CT"}),
        "mask": frozenset({"RTSTRUCT", "SEG"}),
    }
)
_NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "SEG", "RTDOSE", "RTPLAN", "REG", "SR", "PR", "KO"})
_PET_ROLES = frozenset({"pet", "pet_ct"})
# Patient IDs become folder names downstream: keep them portable.
_PATIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Numeric columns: (comparison, bound, unit) — DESIGN.md "Data formats"; deadtime_factor = true/observed rate ≥ 1.
_NUMBER_RULES: Mapping[str, tuple[str, float, str]] = MappingProxyType(
    {
        "timepoint_h": ("any", 0.0, "h"),
        "time_h": ("any", 0.0, "h"),
        "injected_mbq": (">", 0.0, "MBq"),
        "residual_mbq": (">=", 0.0, "MBq"),
        "extravasated_mbq": (">=", 0.0, "MBq"),
        "acquisition_s": (">", 0.0, "s"),
        "sensitivity_cps_per_mbq": (">", 0.0, "cps/MBq"),
        "fwhm_mm": (">", 0.0, "mm"),
        "deadtime_factor": (">=", 1.0, "true/observed count rate"),
        "pet_injected_mbq": (">", 0.0, "MBq"),
        "weight_kg": (">", 0.0, "kg"),
    }
)
# Values written as text by different tools (7400 vs 7400.0) must still agree within a patient-cycle.
_REL_TOL = 1e-6


@dataclass(frozen=True)
class Problem:
    """One problem found in a cohort.

    Attributes:
        file: the file the problem is in, relative to the cohort folder (``manifest.csv``, ``cohort.yaml``, …).
        row: 1-based line number in that file (the CSV header is line 1); None for whole-file problems.
        message: what is wrong and what to do; image problems name the image path.
    """

    file: str
    row: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.message}" if self.row is not None else f"{self.file}: {self.message}"


@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    """One image of the cohort (DESIGN.md "Data formats"); empty cells are None.

    Attributes:
        patient_id, cycle, role: which patient, therapy cycle (≥ 1) and kind of image (`ROLES`).
        timepoint_h: nominal time point (4, 24, …); None allowed for PET rows.
        time_h: actual acquisition start after this cycle's 177Lu injection (PET: negative); overrides DICOM times.
        bed: bed position (≥ 1) when a time point has several; None for a single bed.
        path: DICOM folder, DICOM file or NIfTI image, relative to the cohort folder.
        injected_mbq, residual_mbq, extravasated_mbq: this cycle's 177Lu activity, the part left in syringe and
            lines (subtracted), the part left at the injection site (still in the patient).
        line: line of the row in `manifest.csv` (header = line 1).
    """

    patient_id: str
    cycle: int
    role: str
    timepoint_h: float | None = None
    time_h: float | None = None
    bed: int | None = None
    path: str
    injected_mbq: float
    residual_mbq: float | None = None
    extravasated_mbq: float | None = None
    injection_datetime: datetime | None = None
    acquisition_s: float | None = None
    sensitivity_cps_per_mbq: float | None = None
    fwhm_mm: float | None = None
    deadtime_factor: float | None = None
    pet_tracer: str | None = None
    pet_injected_mbq: float | None = None
    weight_kg: float | None = None
    line: int = field(default=0, compare=False)

    @property
    def net_administered_mbq(self) -> float:
        """Injected minus residual activity (MBq): what entered the patient, extravasation included."""
        return self.injected_mbq - (self.residual_mbq or 0.0)


def _natural_key(text: str) -> tuple[Any, ...]:
    # "P2" before "P10", as people number patients.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


@dataclass(frozen=True)
class Manifest:
    """The rows of a valid `manifest.csv` plus the folder their paths are relative to."""

    rows: tuple[ManifestRow, ...]
    root: Path
    file: Path

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    @cached_property
    def _by_cycle(self) -> dict[tuple[str, int], tuple[ManifestRow, ...]]:
        # One pass instead of a scan per query: cohorts reach tens of thousands of rows.
        groups: dict[tuple[str, int], list[ManifestRow]] = defaultdict(list)
        for r in self.rows:
            groups[(r.patient_id, r.cycle)].append(r)
        ordered = sorted(groups, key=lambda pc: (_natural_key(pc[0]), pc[1]))
        return {key: tuple(groups[key]) for key in ordered}

    def patients(self) -> tuple[str, ...]:
        """Patient IDs in natural order (P2 before P10)."""
        return tuple(dict.fromkeys(p for p, _ in self._by_cycle))

    def cycles(self, patient_id: str) -> tuple[int, ...]:
        """Cycles of one patient, ascending."""
        found = tuple(c for p, c in self._by_cycle if p == patient_id)
        if not found:
            raise ManifestError(f"patient {patient_id!r} is not in {self.file}; patients: {', '.join(self.patients())}")
        return found

    def patient_cycles(self) -> tuple[tuple[str, int], ...]:
        """All (patient_id, cycle) pairs, patients in natural order."""
        return tuple(self._by_cycle)

    def select(
        self,
        *,
        patient_id: str | None = None,
        cycle: int | None = None,
        role: str | None = None,
        timepoint_h: float | None = None,
    ) -> tuple[ManifestRow, ...]:
        """Rows matching every given criterion, in file order."""
        if role is not None and role not in ROLES:
            raise ManifestError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        pool = (
            self._by_cycle.get((patient_id, cycle), ()) if patient_id is not None and cycle is not None else self.rows
        )
        return tuple(
            r
            for r in pool
            if (patient_id is None or r.patient_id == patient_id)
            and (cycle is None or r.cycle == cycle)
            and (role is None or r.role == role)
            and (timepoint_h is None or (r.timepoint_h is not None and _same_time(r.timepoint_h, timepoint_h)))
        )

    def rows_for_role(
        self, role: str, patient_id: str | None = None, cycle: int | None = None
    ) -> tuple[ManifestRow, ...]:
        """Rows of one role (optionally of one patient and cycle), in file order."""
        return self.select(patient_id=patient_id, cycle=cycle, role=role)

    def timepoints(self, patient_id: str, cycle: int, role: str = "spect") -> tuple[float, ...]:
        """Nominal time points (h) of a patient-cycle for `role`, ascending (beds counted once)."""
        rows = self._cycle_rows(patient_id, cycle)
        return tuple(sorted({r.timepoint_h for r in rows if r.role == role and r.timepoint_h is not None}))

    def injected_mbq(self, patient_id: str, cycle: int) -> float:
        """This cycle's injected 177Lu activity (MBq)."""
        return self._cycle_rows(patient_id, cycle)[0].injected_mbq

    def net_administered_mbq(self, patient_id: str, cycle: int) -> float:
        """Injected minus residual activity (MBq) of a patient-cycle."""
        rows = self._cycle_rows(patient_id, cycle)
        residual = next((r.residual_mbq for r in rows if r.residual_mbq is not None), 0.0)
        return rows[0].injected_mbq - residual

    def extravasated_mbq(self, patient_id: str, cycle: int) -> float:
        """Activity left at the injection site (MBq; 0 when not recorded): in the patient but not systemic."""
        rows = self._cycle_rows(patient_id, cycle)
        return next((r.extravasated_mbq for r in rows if r.extravasated_mbq is not None), 0.0)

    def injection_datetime(self, patient_id: str, cycle: int) -> datetime | None:
        """Injection date and time of a patient-cycle, when the manifest records it."""
        rows = self._cycle_rows(patient_id, cycle)
        return next((r.injection_datetime for r in rows if r.injection_datetime is not None), None)

    def image_path(self, row: ManifestRow) -> Path:
        """Absolute path of a row's image."""
        return self.root / row.path

    def _cycle_rows(self, patient_id: str, cycle: int) -> tuple[ManifestRow, ...]:
        rows = self.select(patient_id=patient_id, cycle=cycle)
        if not rows:
            raise ManifestError(
                f"no rows for patient {patient_id!r} cycle {cycle} in {self.file}; "
                f"patient-cycles: {', '.join(f'{p}/{c}' for p, c in self.patient_cycles())}"
            )
        return rows


def _same_time(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _time_key(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _fmt(value: float) -> str:
    return f"{value:g}"


# ---------------------------------------------------------------------------------------------------- parsing


class _RowParser:
    """Parses the cells of one CSV row, collecting problems instead of raising."""

    def __init__(self, cells: Mapping[str, str], line: int, problems: list[Problem], file: str) -> None:
        self.cells = cells
        self.line = line
        self.problems = problems
        self.file = file

    def problem(self, message: str) -> None:
        self.problems.append(Problem(self.file, self.line, message))

    def text(self, column: str) -> str | None:
        value = self.cells.get(column, "").strip()
        return value or None

    def number(self, column: str) -> float | None:
        raw = self.text(column)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            self.problem(f"{column} is {raw!r}: not a number")
            return None
        op, bound, unit = _NUMBER_RULES[column]
        if not math.isfinite(value):
            self.problem(f"{column} is {raw!r}: must be a finite number ({unit})")
            return None
        if (op == ">" and not value > bound) or (op == ">=" and not value >= bound):
            self.problem(f"{column} is {raw}: must be {op} {_fmt(bound)} ({unit})")
            return None
        return value

    def integer(self, column: str, minimum: int) -> int | None:
        raw = self.text(column)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        # Spreadsheets export whole numbers as "1.0": accept them.
        if not (math.isfinite(value) and value == int(value) and value >= minimum):
            self.problem(f"{column} is {raw!r}: must be a whole number ≥ {minimum}")
            return None
        return int(value)

    def timestamp(self, column: str) -> datetime | None:
        raw = self.text(column)
        if raw is None:
            return None
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            self.problem(f"{column} is {raw!r}: write it as ISO 8601, e.g. 2024-03-01T09:30:00")
            return None


def _parse_row(cells: Mapping[str, str], line: int, present: set[str], file: str) -> tuple[ManifestRow, list[Problem]]:
    """One row → ManifestRow (with stand-in values where a cell is invalid) and its own problems."""
    problems: list[Problem] = []
    p = _RowParser(cells, line, problems, file)

    patient_id = p.text("patient_id") or ""
    if "patient_id" in present:
        if not patient_id:
            p.problem("patient_id is empty")
        elif not _PATIENT_ID_RE.match(patient_id):
            p.problem(
                f"patient_id {patient_id!r} may hold only letters, digits, '.', '_' and '-' (used as folder name)"
            )
            patient_id = ""
    cycle = p.integer("cycle", 1)
    if cycle is None and "cycle" in present and p.text("cycle") is None:
        p.problem("cycle is empty; give the therapy cycle (1, 2, …)")
    role = p.text("role") or ""
    if "role" in present and role not in ROLES:
        p.problem(f"role is {role!r}; use one of {', '.join(ROLES)}" if role else "role is empty")
    timepoint_h = p.number("timepoint_h")
    time_h = p.number("time_h")
    bed = p.integer("bed", 1)
    path = p.text("path") or ""
    if "path" in present:
        if not path:
            p.problem("path is empty; give the image (DICOM folder or NIfTI file) relative to the cohort folder")
        elif os.path.isabs(path) or re.match(r"^[A-Za-z]:[\\/]", path):
            p.problem(f"path {path!r} is absolute; write it relative to the cohort folder so the cohort can move")
        elif os.path.normpath(path).split(os.sep)[0] == "..":
            p.problem(f"path {path!r} leaves the cohort folder; keep every image inside it")
    injected = p.number("injected_mbq")
    if injected is None and "injected_mbq" in present and p.text("injected_mbq") is None:
        p.problem("injected_mbq is empty; give this cycle's injected activity (MBq) on every row")
    residual = p.number("residual_mbq")
    extravasated = p.number("extravasated_mbq")
    row_values: dict[str, Any] = {
        "injection_datetime": p.timestamp("injection_datetime"),
        "pet_tracer": p.text("pet_tracer"),
    }
    for column in ("acquisition_s", "sensitivity_cps_per_mbq", "fwhm_mm", "deadtime_factor"):
        row_values[column] = p.number(column)
    for column in ("pet_injected_mbq", "weight_kg"):
        row_values[column] = p.number(column)

    # Checks within the row.
    if role in ("spect", "ct", "mask"):
        if timepoint_h is None and "timepoint_h" in present and p.text("timepoint_h") is None:
            p.problem(f"timepoint_h is empty; a {role} row needs its nominal time point (4, 24, … h)")
        elif timepoint_h is not None and timepoint_h < 0:
            p.problem(f"timepoint_h is {_fmt(timepoint_h)}: a {role} time point must be ≥ 0 h after injection")
        if time_h is not None and time_h < 0:
            p.problem(f"time_h is {_fmt(time_h)}: a {role} image is acquired after the injection (≥ 0 h)")
    if role in _PET_ROLES and time_h is not None and time_h >= 0:
        p.problem(
            f"time_h is {_fmt(time_h)} on a {role} row: the PET precedes therapy, give negative hours before "
            "this cycle's injection"
        )
    if role == "spect" and p.text("time_h") is None and p.text("injection_datetime") is None:
        p.problem("spect row has neither time_h nor injection_datetime: the scan time cannot be known")
    if role == "pet" and row_values["pet_tracer"] is None:
        p.problem("pet_tracer is empty; name the PET tracer (e.g. 68Ga-PSMA-11 or 18F-DCFPyL)")
    if injected is not None and residual is not None and residual >= injected:
        p.problem(f"residual_mbq {_fmt(residual)} ≥ injected_mbq {_fmt(injected)}: nothing would be administered")
    elif injected is not None and extravasated is not None and extravasated > injected - (residual or 0.0):
        p.problem(
            f"extravasated_mbq {_fmt(extravasated)} exceeds the administered activity "
            f"{_fmt(injected - (residual or 0.0))} MBq (injected − residual)"
        )

    row = ManifestRow(
        patient_id=patient_id,
        cycle=cycle if cycle is not None else 0,  # 0 = invalid stand-in, never leaves this module
        role=role,
        timepoint_h=timepoint_h,
        time_h=time_h,
        bed=bed,
        path=path,
        injected_mbq=injected if injected is not None else math.nan,
        residual_mbq=residual,
        extravasated_mbq=extravasated,
        line=line,
        **row_values,
    )
    return row, problems


def _read_manifest_rows(csv_path: Path, file: str) -> tuple[list[ManifestRow], list[Problem], bool]:
    """Parse the CSV: rows (stand-ins where invalid), problems, and whether the header was usable."""
    problems: list[Problem] = []
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheets add a byte-order mark
    except FileNotFoundError:
        return [], [Problem(file, None, "file not found; every cohort needs a manifest.csv (DESIGN.md)")], False
    except UnicodeDecodeError:
        return [], [Problem(file, None, "not UTF-8 text; save the manifest as UTF-8 CSV")], False
    except OSError as err:
        return [], [Problem(file, None, f"cannot read the file: {err.strerror or err}")], False
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    if "," not in first_line and (";" in first_line or "\t" in first_line):
        problems.append(Problem(file, 1, "columns are not separated by commas; save the manifest as comma-separated"))
        return [], problems, False

    reader = csv.reader(text.splitlines(keepends=True))
    header: list[str] | None = None
    rows: list[ManifestRow] = []
    previous_line = 0
    try:
        for cells in reader:
            line = previous_line + 1
            previous_line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                for column, count in Counter(header).items():
                    if count > 1:
                        problems.append(Problem(file, line, f"column {column!r} appears {count} times"))
                for column in header:
                    if column not in MANIFEST_COLUMNS:
                        problems.append(
                            Problem(
                                file,
                                line,
                                f"unknown column {column!r}; the manifest columns are {', '.join(MANIFEST_COLUMNS)}",
                            )
                        )
                for column in REQUIRED_COLUMNS:
                    if column not in header:
                        problems.append(Problem(file, line, f"required column {column!r} is missing"))
                continue
            if len(cells) != len(header):
                problems.append(Problem(file, line, f"row has {len(cells)} cells but the header has {len(header)}"))
            values = {name: value for name, value in zip(header, cells, strict=False) if name in MANIFEST_COLUMNS}
            row, row_problems = _parse_row(values, line, set(header), file)
            rows.append(row)
            problems += row_problems
    except csv.Error as err:
        problems.append(Problem(file, reader.line_num, f"cannot parse the CSV here: {err}"))
    if header is None:
        problems.append(Problem(file, None, "the file is empty; it needs a header row and one row per image"))
        return [], problems, False
    if not rows:
        problems.append(Problem(file, None, "the manifest has a header but no rows"))
    return rows, problems, True


# ------------------------------------------------------------------------------------------- cross-row checks


def _valid_group(row: ManifestRow) -> bool:
    return bool(row.patient_id) and row.cycle >= 1 and row.role in ROLES


class _Problems(list[Problem]):
    """Problems of one file, added by line."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def add(self, row: int | None, message: str) -> None:
        self.append(Problem(self.file, row, message))


def _order_problems(rows: Sequence[ManifestRow], out: _Problems) -> None:
    """Duplicate, unsorted and swapped time points per (patient, cycle, role, bed); unnumbered beds."""
    groups: dict[tuple[str, int, str, int | None], list[ManifestRow]] = defaultdict(list)
    by_timepoint: dict[tuple[str, int, str, float | None], list[ManifestRow]] = defaultdict(list)
    for r in rows:
        groups[(r.patient_id, r.cycle, r.role, r.bed)].append(r)
        by_timepoint[(r.patient_id, r.cycle, r.role, _time_key(r.timepoint_h))].append(r)
    for (patient, cycle, role, bed), members in groups.items():
        where = f"patient {patient} cycle {cycle} {role}" + (f" bed {bed}" if bed is not None else "")
        seen: dict[float | None, ManifestRow] = {}
        last: ManifestRow | None = None
        for r in members:
            key = _time_key(r.timepoint_h)
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
                        f"unsorted time points: {where} timepoint_h {_fmt(r.timepoint_h)} comes after "
                        f"{_fmt(last.timepoint_h)} (line {last.line}); list time points in increasing order",
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
                    f"time_h {_fmt(t1)} at timepoint_h {_fmt(tp1)} is not later than time_h {_fmt(t0)} "
                    f"at timepoint_h {_fmt(tp0)} (line {line0}); check for swapped rows",
                )
    for members in by_timepoint.values():
        if len(members) > 1 and any(r.bed is not None for r in members):
            for r in members:
                if r.bed is None:
                    out.add(
                        r.line,
                        f"bed is empty but other {r.role} rows of this time point have bed numbers; number every bed",
                    )


def _activity_problems(rows: Sequence[ManifestRow], out: _Problems) -> None:
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
                same = math.isclose(value, first, rel_tol=_REL_TOL) if isinstance(value, float) else value == first
                if not same:
                    out.add(
                        r.line,
                        f"{column} {_cell(value)} differs from {_cell(first)} on line {first_row.line}; "
                        f"patient {patient} cycle {cycle} has one value for all its rows",
                    )
        if not any(r.role == "spect" for r in members) and any(r.role in ROLES for r in members):
            out.add(
                members[0].line,
                f"patient {patient} cycle {cycle} has no spect row; every patient-cycle needs its post-therapy SPECT",
            )


def _pairing_problems(rows: Sequence[ManifestRow], out: _Problems) -> None:
    """SPECT needs a CT at its time point, a mask a SPECT time point, a PET its PET/CT's CT; one row per image."""
    index: dict[tuple[str, int, str, float | None], list[ManifestRow]] = defaultdict(list)
    for r in rows:
        index[(r.patient_id, r.cycle, r.role, _time_key(r.timepoint_h))].append(r)

    def at(r: ManifestRow, role: str) -> list[ManifestRow]:
        return index.get((r.patient_id, r.cycle, role, _time_key(r.timepoint_h)), [])

    for r in rows:
        if r.role == "spect" and r.timepoint_h is not None:
            # One CT may cover several beds (bed empty); otherwise the CT of the same bed is needed.
            if not any(ct.bed is None or ct.bed == r.bed for ct in at(r, "ct")):
                bed = f" bed {r.bed}" if r.bed is not None else ""
                out.add(
                    r.line,
                    f"spect at timepoint_h {_fmt(r.timepoint_h)}{bed} has no ct row at the same time "
                    "point (needed for attenuation, density and registration)",
                )
        elif r.role == "mask" and r.timepoint_h is not None and not at(r, "spect"):
            out.add(
                r.line,
                f"mask at timepoint_h {_fmt(r.timepoint_h)} has no spect at that time point; a label map "
                "belongs to the time point it was drawn on",
            )
        elif r.role == "pet" and not at(r, "pet_ct"):
            out.add(
                r.line, "pet row has no pet_ct row with the same timepoint_h; the PET's own CT is needed to register it"
            )


def _path_problems(rows: Sequence[ManifestRow], out: _Problems) -> None:
    by_path: dict[str, ManifestRow] = {}
    for r in rows:
        if r.path:
            key = os.path.normpath(r.path)
            if key in by_path:
                out.add(r.line, f"path {r.path!r} is already used on line {by_path[key].line}; one image, one row")
            else:
                by_path[key] = r


def _cross_row_problems(rows: Sequence[ManifestRow], file: str) -> list[Problem]:
    """Checks that need several rows: duplicates, order, activity consistency, pairing of images."""
    out = _Problems(file)
    valid = [r for r in rows if _valid_group(r)]
    _order_problems(valid, out)
    _activity_problems(rows, out)
    _pairing_problems(valid, out)
    _path_problems(rows, out)
    return out


def _config_row_problems(rows: Sequence[ManifestRow], config: CohortConfig, file: str) -> list[Problem]:
    """Row checks that need cohort.yaml: resolution and calibration defaults, PET units."""
    out = _Problems(file)
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
                        "time the reconstruction stands for (PHYSICS.md §6)",
                    )
        elif r.role == "pet" and config.unit("pet") == "Bq/mL" and r.path.lower().endswith(_ITK_SUFFIXES):
            missing = [c for c in ("pet_injected_mbq", "weight_kg") if getattr(r, c) is None]
            if missing:
                out.add(
                    r.line,
                    f"a PET image in Bq/mL without a DICOM header needs {' and '.join(missing)} to compute SUVbw",
                )
    return out


# ---------------------------------------------------------------------------------------------- image headers


@dataclass(frozen=True)
class _ImageInfo:
    spacing_zyx_mm: tuple[float, float, float] | None
    series_uids: tuple[str, ...] = ()
    modality: str | None = None


def _itk_error(err: Exception) -> str:
    text = str(err)
    match = re.search(r"Description:\s*(.+)", text)
    line = match.group(1) if match else text.strip().splitlines()[-1] if text.strip() else type(err).__name__
    return line.strip()


def _inspect_itk_file(path: Path) -> tuple[_ImageInfo | None, list[str]]:
    """Header-only check of a NIfTI/NRRD/MHA image: readable, 3-D, scalar, positive spacing, orthonormal axes."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        return None, [f"cannot read the image header ({_itk_error(err)}); re-export the image"]
    problems: list[str] = []
    dim = reader.GetDimension()
    size = reader.GetSize()
    spacing = reader.GetSpacing()
    if dim == 4 and size[3] == 1:  # a 3-D image saved with a singleton 4th axis
        dim, size, spacing = 3, size[:3], spacing[:3]
        direction = np.array(reader.GetDirection()).reshape(4, 4)[:3, :3]
    else:
        direction = np.array(reader.GetDirection()).reshape(dim, dim)
    if dim != 3:
        problems.append(f"image has {dim} dimensions {tuple(size)}; a 3-D volume is needed")
        return None, problems
    if reader.GetNumberOfComponents() != 1:
        problems.append(f"image has {reader.GetNumberOfComponents()} components per voxel; a scalar image is needed")
    if min(size) < 1:
        problems.append(f"image has an empty axis (size {tuple(size)})")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        problems.append(f"voxel spacing {tuple(spacing)} mm is not positive; fix the header")
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        problems.append("image axes are not orthonormal (sheared or scaled direction matrix); fix the header")
    spacing_zyx = (float(spacing[2]), float(spacing[1]), float(spacing[0]))
    return _ImageInfo(spacing_zyx_mm=spacing_zyx), problems


def _inspect_dicom(path: Path, role: str) -> tuple[_ImageInfo | None, list[str]]:
    """A DICOM folder or file through `inspect_dicom_folder`: exactly one complete series of the role's modality."""
    from ludl.io.dicom_series import inspect_dicom_folder

    try:
        report = inspect_dicom_folder(path)
    except LudlError as err:
        return None, [str(err)]
    if not report.series:
        if path.is_file() and not report.problems:
            return None, [f"is neither a NIfTI/NRRD/MHA image ({', '.join(_ITK_SUFFIXES)}) nor a DICOM file"]
        return None, list(report.problems) or ["holds no DICOM series"]
    problems = list(report.all_problems)
    expected = _MODALITIES.get(role)
    if expected is None:  # unknown role, reported already: no modality to compare with
        expected = frozenset(s.modality for s in report.series)
    matching = [s for s in report.series if s.modality in expected]
    # Contours or dose saved beside the images they belong to are common and harmless for an image row.
    ignored = _NON_IMAGE_MODALITIES if role != "mask" else frozenset()
    others = [s for s in report.series if s.modality not in expected and s.modality not in ignored]
    if not matching:
        found = ", ".join(f"{s.modality} ({s.description or 'no description'})" for s in report.series)
        problems.append(f"holds {found}; a {role} row expects {' or '.join(sorted(expected))}")
    elif others:
        found = ", ".join(f"{s.modality} ({s.description or 'no description'})" for s in others)
        problems.append(f"also holds {found}; put each series in its own folder and give it its own row")
    if len(matching) > 1 and not report.problems:  # inspect_dicom_folder reports image series mixed in one folder
        problems.append(f"holds {len(matching)} {matching[0].modality} series; one series per folder and row")
    chosen = matching[0] if matching else report.series[0]
    return (
        _ImageInfo(
            spacing_zyx_mm=chosen.spacing_zyx_mm,
            series_uids=tuple(s.series_uid for s in matching),
            modality=chosen.modality or "DICOM",
        ),
        problems,
    )


def _inspect_image(path: Path, role: str) -> tuple[_ImageInfo | None, list[str]]:
    if path.is_file() and path.name.lower().endswith(_ITK_SUFFIXES):
        return _inspect_itk_file(path)
    return _inspect_dicom(path, role)


def _image_problems(
    rows: Sequence[ManifestRow], root: Path, file: str
) -> tuple[list[Problem], dict[str, list[tuple[float, float, float]]]]:
    """Open every image header once; return problems and the voxel sizes (mm, z, y, x) per role."""
    out = _Problems(file)
    spacings: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    series_rows: dict[str, ManifestRow] = {}
    for r in rows:
        if not r.path or os.path.isabs(r.path):
            continue
        path = root / r.path
        if not path.exists():
            out.add(r.line, f"{r.role or 'image'} {r.path!r} not found in the cohort folder")
            continue
        info, messages = _inspect_image(path, r.role)
        for message in messages:
            out.add(r.line, f"{r.role or 'image'} {r.path!r}: {message}")
        if info is None:
            continue
        if r.role == "spect" and r.time_h is None and info.modality is None:
            out.add(r.line, f"spect {r.path!r} is not DICOM, so it carries no acquisition time; give time_h")
        for uid in info.series_uids:
            if uid in series_rows:
                first = series_rows[uid]
                out.add(
                    r.line,
                    f"{r.role} {r.path!r} holds DICOM series {uid}, which is also in {first.path!r} "
                    f"(line {first.line}); one series, one folder, one row",
                )
            else:
                series_rows[uid] = r
        if info.spacing_zyx_mm is not None and r.role in ROLES:
            spacings[r.role].append(info.spacing_zyx_mm)
    return out, spacings


# ---------------------------------------------------------------------------------------------------- outcomes


def _outcome_row(values: Mapping[str, str], line: int, out: _Problems) -> bool:
    """Check one outcomes row's numbers; True when it carries a valid non_response label."""
    psa: dict[str, float | None] = {}
    for column in ("psa_baseline", "psa_week12"):
        raw = values.get(column, "")
        psa[column] = None
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if math.isfinite(value) and value >= 0:
                psa[column] = value
            else:
                out.add(line, f"{column} is {raw!r}: must be a number ≥ 0 (ng/mL)")
    label = values.get("non_response", "")
    if not label:
        return False
    if label not in ("0", "1"):
        out.add(line, f"non_response is {label!r}: must be 0 or 1 (or empty when unknown)")
        return False
    baseline, week12 = psa["psa_baseline"], psa["psa_week12"]
    if baseline is not None and week12 is not None and baseline > 0:
        # PSA50 (PCWG3): response = decline ≥ 50 % from baseline at 12 weeks; non-response = not reaching it.
        expected = "0" if week12 <= 0.5 * baseline else "1"
        if label != expected:
            out.add(
                line,
                f"non_response {label} contradicts PSA {_fmt(baseline)} → {_fmt(week12)} ng/mL (PSA50: "
                f"a decline ≥ 50 % is a response), expected {expected}",
            )
    return True


def _outcome_problems(csv_path: Path, patients: set[str], file: str) -> tuple[list[Problem], int]:
    """Check outcomes.csv; returns problems and the number of patients with a non_response label."""
    out = _Problems(file)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        out.add(None, f"cannot read the file as UTF-8 text ({err})")
        return out, 0
    reader = csv.reader(text.splitlines(keepends=True))
    header: list[str] | None = None
    seen: dict[str, int] = {}
    labelled = 0
    previous_line = 0
    for cells in reader:
        line, previous_line = previous_line + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            for column in header:
                if column not in OUTCOME_COLUMNS:
                    out.add(line, f"unknown column {column!r}; the columns are {', '.join(OUTCOME_COLUMNS)}")
            for column in OUTCOME_COLUMNS:
                if column not in header:
                    out.add(line, f"required column {column!r} is missing")
            continue
        values = {k: v.strip() for k, v in zip(header, cells, strict=False)}
        patient = values.get("patient_id", "")
        if not patient:
            out.add(line, "patient_id is empty")
        elif patient in seen:
            out.add(line, f"patient {patient} is already on line {seen[patient]}")
        else:
            seen[patient] = line
            if patient not in patients:
                out.add(line, f"patient {patient} is not in manifest.csv")
        labelled += _outcome_row(values, line, out)
    if header is None:
        out.add(None, "the file is empty; it needs a header row")
    return out, labelled


# ----------------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class CohortSummary:
    """What a cohort holds (counts, time points, modalities, voxel sizes), for the validation screen."""

    name: str
    nuclide: str
    n_rows: int
    patients: tuple[str, ...]
    n_patient_cycles: int
    cycles: tuple[int, ...]
    spect_timepoints_h: tuple[float, ...]
    images_per_role: Mapping[str, int] = field(hash=False)
    voxel_sizes_mm: Mapping[str, tuple[tuple[tuple[float, float, float], int], ...]] = field(hash=False)
    max_beds: int = 1
    labels: tuple[str, ...] = ()
    unlabeled: tuple[str, ...] = ()
    n_outcomes: int | None = None

    @property
    def n_patients(self) -> int:
        """Number of patients."""
        return len(self.patients)

    def format(self) -> str:
        """A few lines of plain text."""

        def spacing_text(role: str) -> str:
            return ", ".join(f"{' × '.join(f'{v:.2f}' for v in s)} ({n})" for s, n in self.voxel_sizes_mm.get(role, ()))

        pts = ", ".join(_fmt(t) for t in self.spect_timepoints_h) or "-"
        patients = ", ".join(self.patients) if len(self.patients) <= 6 else f"{self.patients[0]} … {self.patients[-1]}"
        lines = [
            f"  patients          {self.n_patients} ({patients})",
            f"  patient-cycles    {self.n_patient_cycles} (cycles {', '.join(map(str, self.cycles)) or '-'})",
            f"  SPECT time points {pts} h" + (f"  (up to {self.max_beds} beds)" if self.max_beds > 1 else ""),
            "  images            " + ", ".join(f"{r} {n}" for r, n in self.images_per_role.items() if n),
        ]
        roles = [r for r in ROLES if self.voxel_sizes_mm.get(r)]
        if roles:
            lines.append("  voxel size z×y×x  " + f"{roles[0]}: {spacing_text(roles[0])}")
            lines += [f"                    {r}: {spacing_text(r)}" for r in roles[1:]]
        if self.labels or self.unlabeled:
            lines.append(
                f"  labels            {', '.join(self.labels) or '-'}"
                + (f"; unlabeled: {', '.join(self.unlabeled)}" if self.unlabeled else "")
            )
        lines.append(
            "  outcomes          "
            + ("none (outcomes.csv absent)" if self.n_outcomes is None else f"{self.n_outcomes} patients labelled")
        )
        return "\n".join(lines)


def cohort_summary(
    manifest: Manifest,
    config: CohortConfig | None = None,
    *,
    voxel_sizes_mm: Mapping[str, Sequence[tuple[float, float, float]]] | None = None,
    n_outcomes: int | None = None,
) -> CohortSummary:
    """Summarise a manifest: patients, cycles, SPECT time points, images per role, voxel sizes (mm, z×y×x)."""
    images = Counter(r.role for r in manifest.rows)
    sizes: dict[str, tuple[tuple[tuple[float, float, float], int], ...]] = {}
    for role, spacings in (voxel_sizes_mm or {}).items():
        counted = Counter(tuple(round(v, 3) for v in s) for s in spacings)
        sizes[role] = tuple(sorted(((s, n) for s, n in counted.items()), key=lambda item: -item[1]))  # type: ignore[misc]
    beds = Counter((r.patient_id, r.cycle, r.timepoint_h) for r in manifest.rows if r.role == "spect")
    return CohortSummary(
        name=config.name if config is not None else manifest.root.name,
        nuclide=config.nuclide if config is not None else "",
        n_rows=len(manifest),
        patients=manifest.patients(),
        n_patient_cycles=len(manifest.patient_cycles()),
        cycles=tuple(sorted({r.cycle for r in manifest.rows})),
        spect_timepoints_h=tuple(
            sorted({r.timepoint_h for r in manifest.rows if r.role == "spect" and r.timepoint_h is not None})
        ),
        images_per_role=MappingProxyType({role: images.get(role, 0) for role in ROLES}),
        voxel_sizes_mm=MappingProxyType(sizes),
        max_beds=max(beds.values(), default=1),
        labels=tuple(f"{k}={v}" for k, v in config.labels.items()) if config is not None else (),
        unlabeled=config.unlabeled if config is not None else (),
        n_outcomes=n_outcomes,
    )


@dataclass(frozen=True)
class ValidationReport:
    """Everything `validate_cohort` found: `.ok`, `.problems` (file, row, message), `.summary`, `.format()`."""

    cohort_dir: Path
    problems: tuple[Problem, ...]
    summary: CohortSummary | None = None

    @property
    def ok(self) -> bool:
        """True when the cohort has no problem at all."""
        return not self.problems

    def format(self) -> str:
        """One screen for a clean cohort; the full problem list otherwise."""
        if self.ok:
            head = f"cohort {self.cohort_dir}: OK"
            if self.summary is not None:
                nuclide = f", {self.summary.nuclide}" if self.summary.nuclide else ""
                head = (
                    f"cohort '{self.summary.name}'{nuclide} at {self.cohort_dir}: OK "
                    f"({self.summary.n_rows} manifest rows)"
                )
                return head + "\n" + self.summary.format()
            return head
        n = len(self.problems)
        lines = [f"cohort {self.cohort_dir}: {n} problem{'s' if n != 1 else ''}; fix them and validate again"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    def raise_if_invalid(self) -> None:
        """Raise `ManifestError` with the full problem list unless the cohort is clean."""
        if not self.ok:
            raise ManifestError(self.format())


# ------------------------------------------------------------------------------------------------ entry points


def _manifest_file(path: str | Path) -> Path:
    path = Path(path)
    return path / MANIFEST_FILE if path.is_dir() else path


def load_manifest(path: str | Path, config: CohortConfig | None = None) -> Manifest:
    """Load and check `manifest.csv` (the file or its cohort folder); every problem in one `ManifestError`.

    Args:
        path: `manifest.csv` or the cohort folder holding it; image paths are relative to its folder.
        config: the cohort's `CohortConfig`, to also check rows against its defaults (fwhm, sensitivity, units).
    """
    file = _manifest_file(path)
    rows, problems, _ = _read_manifest_rows(file, file.name)
    problems += _cross_row_problems(rows, file.name)
    if config is not None:
        problems += _config_row_problems(rows, config, file.name)
    if problems:
        problems.sort(key=lambda p: p.row or 0)
        raise ManifestError(
            f"{file}: {len(problems)} problem(s); fix them and retry:\n  " + "\n  ".join(map(str, problems))
        )
    return Manifest(rows=tuple(rows), root=file.parent, file=file)


def validate_cohort(cohort_dir: str | Path) -> ValidationReport:
    """Check a cohort folder completely before any heavy work and report every problem with file and row.

    Reads `cohort.yaml`, `manifest.csv`, every image *header* (NIfTI via SimpleITK's ReadImageInformation,
    DICOM folders via `ludl.io.dicom_series.inspect_dicom_folder`) and `outcomes.csv` when present; never pixel
    data. Never raises for a bad cohort: the problems are in the report.
    """
    root = Path(cohort_dir)
    if not root.is_dir():
        problem = Problem(
            str(root), None, "cohort folder not found; give the folder holding cohort.yaml and manifest.csv"
        )
        return ValidationReport(cohort_dir=root, problems=(problem,))

    problems: list[Problem] = []
    config, yaml_problems = check_cohort_config(root / COHORT_FILE)
    problems += [Problem(COHORT_FILE, None, m) for m in yaml_problems]

    rows, manifest_problems, header_ok = _read_manifest_rows(root / MANIFEST_FILE, MANIFEST_FILE)
    manifest_problems += _cross_row_problems(rows, MANIFEST_FILE)
    if config is not None:
        manifest_problems += _config_row_problems(rows, config, MANIFEST_FILE)
        if any(r.role == "mask" for r in rows) and not config.labels:
            problems.append(Problem(COHORT_FILE, None, "manifest.csv has mask rows but 'labels' is empty"))
    image_problems, spacings = _image_problems(rows, root, MANIFEST_FILE) if header_ok else ([], {})
    manifest_problems += image_problems
    manifest_problems.sort(key=lambda p: p.row or 0)  # stable: per row, parse → cross-row → image order
    problems += manifest_problems

    n_outcomes: int | None = None
    if (root / OUTCOMES_FILE).exists():
        outcome_problems, n_outcomes = _outcome_problems(
            root / OUTCOMES_FILE, {r.patient_id for r in rows if r.patient_id}, OUTCOMES_FILE
        )
        problems += outcome_problems

    valid_rows = [r for r in rows if _valid_group(r) and r.path]
    summary = None
    if valid_rows:
        manifest = Manifest(rows=tuple(valid_rows), root=root, file=root / MANIFEST_FILE)
        summary = cohort_summary(manifest, config, voxel_sizes_mm=spacings, n_outcomes=n_outcomes)
    return ValidationReport(cohort_dir=root, problems=tuple(problems), summary=summary)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # Whole numbers as integers (7400, not 7400.0); otherwise the shortest text that reads back exactly.
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def write_manifest(rows: Sequence[ManifestRow], path: str | Path) -> Path:
    """Write rows as `manifest.csv` (all columns, empty cells for None), atomically; `path`: file or folder."""
    file = _manifest_file(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    names = {f.name for f in fields(ManifestRow)}
    for r in rows:
        writer.writerow([_cell(getattr(r, c)) if c in names else "" for c in MANIFEST_COLUMNS])
    return atomic_write_text(file, buffer.getvalue())
