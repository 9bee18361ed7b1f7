"""A synthetic cohort's region truth table, ``truth/regions.csv``: its columns, its writer and its readers.

`ludl synth` writes it (`write_truth_regions`), `ludl prepare`, the STP baselines and the accuracy benchmarks read it
(`read_truth`, `read_truth_rows`). One row per patient, cycle and region: the true TIA (MBq·h) and mean dose (Gy) the
pipelines are scored against. Institutional cohorts have no such table; every reader then returns an empty mapping.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text

__all__ = [
    "TRUTH_FOLDER",
    "TRUTH_REGIONS_FILE",
    "TRUTH_REGION_COLUMNS",
    "read_truth",
    "read_truth_rows",
    "truth_regions_file",
    "write_truth_regions",
]

TRUTH_FOLDER = "truth"
TRUTH_REGIONS_FILE = "regions.csv"
TRUTH_REGION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "cycle",
    "region",
    "kind",
    "volume_ml",
    "mean_dose_gy",
    "tia_mbq_h",
    "t_eff_h",
    "in_fov_fraction",
)
_KEY_COLUMNS = ("patient_id", "cycle", "region")
_NAN = float("nan")


def truth_regions_file(cohort_dir: str | Path) -> Path:
    """``<cohort>/truth/regions.csv``."""
    return Path(cohort_dir) / TRUTH_FOLDER / TRUTH_REGIONS_FILE


def write_truth_regions(rows: Sequence[Sequence[str]], path: str | Path) -> Path:
    """Write region truth rows (cells already formatted, in `TRUTH_REGION_COLUMNS` order) as CSV, atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRUTH_REGION_COLUMNS)
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def read_truth_rows(cohort_dir: str | Path) -> dict[tuple[str, int, str], dict[str, str]]:
    """The raw rows of ``truth/regions.csv`` by (patient, cycle, region), cells as text; {} without the file."""
    file = truth_regions_file(cohort_dir)
    if not file.is_file():
        return {}
    out: dict[tuple[str, int, str], dict[str, str]] = {}
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _KEY_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise InputError(
                    f"{file} lacks the column(s) {', '.join(missing)}; a truth table needs patient_id, cycle, region, "
                    "tia_mbq_h, mean_dose_gy (or remove the file for a cohort without truth)"
                )
            for line, row in enumerate(reader, start=2):
                try:
                    out[(row["patient_id"], int(row["cycle"]), row["region"])] = row
                except ValueError as err:
                    raise InputError(f"{file} line {line}: {err}; cycle must be an integer") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{file}: cannot read ({err})") from err
    return out


def _number(file: Path, key: tuple[str, int, str], row: dict[str, str], column: str) -> float:
    value = row.get(column) or ""
    try:
        return float(value) if value.strip() else _NAN
    except ValueError as err:
        raise InputError(
            f"{file}: {column} of patient {key[0]} cycle {key[1]} region {key[2]} is {value!r}; must be a number"
        ) from err


def read_truth(cohort_dir: str | Path) -> dict[tuple[str, int], dict[str, tuple[float, float]]]:
    """A synthetic cohort's truth per (patient, cycle): region → (true TIA MBq·h, true mean dose Gy); {} without."""
    file = truth_regions_file(cohort_dir)
    out: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
    for key, row in read_truth_rows(cohort_dir).items():
        case = out.setdefault((key[0], key[1]), {})
        case[key[2]] = (_number(file, key, row, "tia_mbq_h"), _number(file, key, row, "mean_dose_gy"))
    return out
