"""Blood samples of a cohort (docs/cohort-format.md "Blood samples"): whole-blood activity concentration over time.

Blood-based red-marrow dosimetry (`ludl.dosimetry.marrow`) needs a few venous samples per patient-cycle. They live
in ``blood.csv`` files: one in the cohort folder and/or one in a patient's folder (``<patient_id>/blood.csv``), with
the same columns; rows of both are read. Each row is one sample::

    patient_id,cycle,time_h,blood_bq_per_ml
    P001,1,0.5,41230
    P001,1,24.1,1820

``time_h``: draw time after this cycle's injection (h); ``blood_bq_per_ml``: measured whole-blood concentration at
the draw time (Bq/mL, not decay-corrected).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ludl.errors import ManifestError

__all__ = ["BLOOD_COLUMNS", "BLOOD_FILE", "BloodSamples", "blood_files", "load_blood_samples"]

BLOOD_FILE = "blood.csv"
BLOOD_COLUMNS: tuple[str, ...] = ("patient_id", "cycle", "time_h", "blood_bq_per_ml")


@dataclass(frozen=True, eq=False)
class BloodSamples:
    """The blood samples of one patient-cycle, in time order.

    Attributes:
        time_h: draw times after injection (h), ascending.
        bq_per_ml: measured whole-blood concentrations (Bq/mL, not decay-corrected).
        source: the file(s) they came from.
    """

    time_h: npt.NDArray[np.float64]
    bq_per_ml: npt.NDArray[np.float64]
    source: str


def blood_files(cohort_dir: str | Path, patient_id: str) -> list[Path]:
    """The ``blood.csv`` files that may hold a patient's samples: the cohort's and the patient folder's."""
    root = Path(cohort_dir)
    return [p for p in (root / BLOOD_FILE, root / patient_id / BLOOD_FILE) if p.is_file()]


def _number(text: str | None, column: str, where: str, positive: bool) -> float:
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ManifestError(
            f"{where}: {column} is {text!r}; give a {'positive' if positive else 'non-negative'} number"
        )
    return value


def _read_file(path: Path, patient_id: str, cycle: int) -> list[tuple[float, float]]:
    """(time h, Bq/mL) of the patient-cycle's rows of one file."""
    out: list[tuple[float, float]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in BLOOD_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}; the header must name "
                                f"{', '.join(BLOOD_COLUMNS)}")  # fmt: skip
        for line, row in enumerate(reader, start=2):
            if row["patient_id"] != patient_id:
                continue
            where = f"{path}:{line}"
            try:
                row_cycle = int(row["cycle"])
            except (TypeError, ValueError):
                raise ManifestError(f"{where}: cycle is {row['cycle']!r}; give the cycle number (1, 2, …)") from None
            if row_cycle != cycle:
                continue
            time_h = _number(row["time_h"], "time_h", where, positive=True)
            out.append((time_h, _number(row["blood_bq_per_ml"], "blood_bq_per_ml", where, positive=False)))
    return out


def load_blood_samples(cohort_dir: str | Path, patient_id: str, cycle: int) -> BloodSamples | None:
    """The patient-cycle's blood samples, or None when the cohort has none for it.

    Raises:
        ManifestError: a malformed file or row (file and line named), or two samples at the same time.
    """
    files = blood_files(cohort_dir, patient_id)
    samples: list[tuple[float, float]] = []
    for path in files:
        samples += _read_file(path, patient_id, int(cycle))
    if not samples:
        return None
    samples.sort()
    times = np.asarray([t for t, _ in samples], dtype=np.float64)
    if np.any(np.diff(times) <= 0):
        raise ManifestError(
            f"{', '.join(str(p) for p in files)}: patient {patient_id} cycle {cycle} has two blood samples at the "
            "same time; keep one"
        )
    return BloodSamples(times, np.asarray([c for _, c in samples], dtype=np.float64), ", ".join(map(str, files)))
