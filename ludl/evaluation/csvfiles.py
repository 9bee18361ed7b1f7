"""Reading the CSV tables evaluation consumes: rows as dicts, numbers as floats, errors that name the file."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text

__all__ = ["num", "read_rows", "write_rows"]


def read_rows(path: str | Path, required: Sequence[str] = (), *, producer: str = "") -> list[dict[str, str]]:
    """The rows of a CSV file; `required` columns must be present (the message says which job writes the file)."""
    file = Path(path)
    hint = f"; {producer} writes it" if producer else ""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise InputError(f"{file} not found{hint}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{file}: cannot read ({err}){hint}") from err
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in required if c not in (reader.fieldnames or ())]
    if missing:
        raise InputError(f"{file}: missing column(s) {', '.join(missing)}{hint}; rerun it with this ludl version")
    return [dict(row) for row in reader]


def num(value: Any) -> float:
    """A CSV cell as a float; empty, missing or unparsable cells are NaN."""
    if value is None:
        return math.nan
    try:
        return float(str(value).strip() or "nan")
    except ValueError:
        return math.nan


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write rows (dicts) with these columns atomically; NaN as an empty cell, floats with 6 significant digits."""
    lines = [",".join(columns)]
    for row in rows:
        cells = [_cell(row.get(c, "")) for c in columns]
        lines.append(",".join(f'"{c}"' if ("," in c or '"' in c) else c for c in cells))
    return atomic_write_text(path, "\n".join(lines) + "\n")
