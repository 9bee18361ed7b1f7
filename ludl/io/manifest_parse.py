"""Parsing ``manifest.csv`` into `ManifestRow`s, with every problem of every row (line numbers of the file)."""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ludl.io.cohort import ROLES
from ludl.io.manifest_schema import (
    MANIFEST_COLUMNS,
    NUMBER_RULES,
    PATIENT_ID_RE,
    PET_ROLES,
    REQUIRED_COLUMNS,
    ManifestRow,
    Problem,
    fmt_number,
)

__all__ = ["read_manifest_rows"]


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
        op, bound, unit = NUMBER_RULES[column]
        if not math.isfinite(value):
            self.problem(f"{column} is {raw!r}: must be a finite number ({unit})")
            return None
        if (op == ">" and not value > bound) or (op == ">=" and not value >= bound):
            self.problem(f"{column} is {raw}: must be {op} {fmt_number(bound)} ({unit})")
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


def _within_row_problems(
    p: _RowParser, role: str, present: set[str], timepoint_h: float | None, time_h: float | None, pet_tracer: str | None
) -> None:
    """Time and tracer checks within one row."""
    if role in ("spect", "ct", "mask"):
        if timepoint_h is None and "timepoint_h" in present and p.text("timepoint_h") is None:
            p.problem(f"timepoint_h is empty; a {role} row needs its nominal time point (4, 24, … h)")
        elif timepoint_h is not None and timepoint_h < 0:
            p.problem(f"timepoint_h is {fmt_number(timepoint_h)}: a {role} time point must be ≥ 0 h after injection")
        if time_h is not None and time_h < 0:
            p.problem(f"time_h is {fmt_number(time_h)}: a {role} image is acquired after the injection (≥ 0 h)")
    if role in PET_ROLES and time_h is not None and time_h >= 0:
        p.problem(
            f"time_h is {fmt_number(time_h)} on a {role} row: the PET precedes therapy, give negative hours before "
            "this cycle's injection"
        )
    if role == "spect" and p.text("time_h") is None and p.text("injection_datetime") is None:
        p.problem("spect row has neither time_h nor injection_datetime: the scan time cannot be known")
    if role == "pet" and pet_tracer is None:
        p.problem("pet_tracer is empty; name the PET tracer (e.g. 68Ga-PSMA-11 or 18F-DCFPyL)")


def _activity_problems(
    p: _RowParser, injected: float | None, residual: float | None, extravasated: float | None
) -> None:
    """The row's activities must leave something administered, and no more extravasated than that."""
    if injected is not None and residual is not None and residual >= injected:
        p.problem(
            f"residual_mbq {fmt_number(residual)} ≥ injected_mbq {fmt_number(injected)}: nothing would be administered"
        )
    elif injected is not None and extravasated is not None and extravasated > injected - (residual or 0.0):
        p.problem(
            f"extravasated_mbq {fmt_number(extravasated)} exceeds the administered activity "
            f"{fmt_number(injected - (residual or 0.0))} MBq (injected − residual)"
        )


def _parse_row(cells: Mapping[str, str], line: int, present: set[str], file: str) -> tuple[ManifestRow, list[Problem]]:
    """One row → ManifestRow (with stand-in values where a cell is invalid) and its own problems."""
    problems: list[Problem] = []
    p = _RowParser(cells, line, problems, file)

    patient_id = p.text("patient_id") or ""
    if "patient_id" in present:
        if not patient_id:
            p.problem("patient_id is empty")
        elif not PATIENT_ID_RE.match(patient_id):
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

    _within_row_problems(p, role, present, timepoint_h, time_h, row_values["pet_tracer"])
    _activity_problems(p, injected, residual, extravasated)

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


def read_manifest_rows(csv_path: Path, file: str) -> tuple[list[ManifestRow], list[Problem], bool]:
    """Parse the CSV: rows (stand-ins where invalid), problems, and whether the header was usable."""
    problems: list[Problem] = []
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheets add a byte-order mark
    except FileNotFoundError:
        problem = Problem(file, None, "file not found; every cohort needs a manifest.csv (docs/cohort-format.md)")
        return [], [problem], False
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
