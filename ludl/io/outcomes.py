"""``outcomes.csv``: its columns, its reader (`load_outcomes`) and its validation (`outcome_problems`).

One row per patient: ``patient_id, psa_baseline, psa_week12, non_response`` (docs/architecture.md "Data formats").
Optional, like PET: validation and dosimetry work without it; `ludl prepare` stratifies its folds by ``non_response``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

from ludl.errors import InputError
from ludl.io.manifest_schema import Problem, ProblemList, fmt_number

__all__ = ["OUTCOMES_FILE", "OUTCOME_COLUMNS", "load_outcomes", "outcome_problems"]

OUTCOME_COLUMNS: tuple[str, ...] = ("patient_id", "psa_baseline", "psa_week12", "non_response")
OUTCOMES_FILE = "outcomes.csv"


def load_outcomes(cohort_dir: str | Path) -> dict[str, int | None] | None:
    """``non_response`` per patient from the cohort's ``outcomes.csv`` (None when the file is absent)."""
    file = Path(cohort_dir) / OUTCOMES_FILE
    if not file.is_file():
        return None
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{file}: cannot read ({err}); run `ludl validate cohort=…` to check it") from err
    out: dict[str, int | None] = {}
    for line, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        patient = (row.get("patient_id") or "").strip()
        label = (row.get("non_response") or "").strip()
        if not patient:
            continue
        if label not in ("", "0", "1"):
            raise InputError(f"{file} line {line}: non_response is {label!r}; must be 0, 1 or empty")
        out[patient] = int(label) if label else None
    return out


def _outcome_row(values: Mapping[str, str], line: int, out: ProblemList) -> bool:
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
                f"non_response {label} contradicts PSA {fmt_number(baseline)} → {fmt_number(week12)} ng/mL (PSA50: "
                f"a decline ≥ 50 % is a response), expected {expected}",
            )
    return True


def outcome_problems(csv_path: Path, patients: set[str], file: str) -> tuple[list[Problem], int]:
    """Check outcomes.csv; returns problems and the number of patients with a non_response label."""
    out = ProblemList(file)
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
