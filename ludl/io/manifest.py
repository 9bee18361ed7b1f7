"""The cohort manifest (`manifest.csv`): one row per image; `load_manifest`, the `Manifest` queries, `write_manifest`.

docs/architecture.md "Data formats" is the contract (columns and `ManifestRow` in `ludl.io.manifest_schema`).
`load_manifest` parses and checks the CSV alone and raises one `ManifestError` listing every problem. The other jobs
live beside it:
parsing (`manifest_parse`), row checks (`manifest_checks`), image headers (`manifest_images`), outcomes
(`ludl.io.outcomes`) and whole-cohort validation (`ludl.io.validation`: `validate_cohort`, `ValidationReport`); their
public names stay importable from here.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from ludl.errors import ManifestError
from ludl.io.atomic import atomic_write_text
from ludl.io.cohort import ROLES, CohortConfig
from ludl.io.manifest_checks import config_row_problems, cross_row_problems
from ludl.io.manifest_parse import read_manifest_rows
from ludl.io.manifest_schema import (
    COHORT_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    REQUIRED_COLUMNS,
    ManifestRow,
    Problem,
    format_cell,
    is_within,
    same_time,
)

__all__ = [
    "COHORT_FILE",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "REQUIRED_COLUMNS",
    "Manifest",
    "ManifestRow",
    "Problem",
    "load_manifest",
    "write_manifest",
]

# Names that moved to their own modules, still importable from here (loaded on first use: validation imports this).
_MOVED = {
    "OUTCOME_COLUMNS": "ludl.io.outcomes",
    "OUTCOMES_FILE": "ludl.io.outcomes",
    "CohortSummary": "ludl.io.validation",
    "ValidationReport": "ludl.io.validation",
    "cohort_summary": "ludl.io.validation",
    "validate_cohort": "ludl.io.validation",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'ludl.io.manifest' has no attribute {name!r}")


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
            and (timepoint_h is None or (r.timepoint_h is not None and same_time(r.timepoint_h, timepoint_h)))
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
        """Absolute path of a row's image; `ManifestError` when it leaves the cohort folder (``..``, a symlink)."""
        path = self.root / row.path
        if os.path.isabs(row.path) or not is_within(path, self.root):
            raise ManifestError(
                f"{self.file.name} line {row.line}: {row.role} {row.path!r} resolves to {path.resolve()}, outside the "
                f"cohort folder {self.root}; copy the image into the cohort (no links out of it)"
            )
        return path

    def _cycle_rows(self, patient_id: str, cycle: int) -> tuple[ManifestRow, ...]:
        rows = self.select(patient_id=patient_id, cycle=cycle)
        if not rows:
            raise ManifestError(
                f"no rows for patient {patient_id!r} cycle {cycle} in {self.file}; "
                f"patient-cycles: {', '.join(f'{p}/{c}' for p, c in self.patient_cycles())}"
            )
        return rows


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
    rows, problems, _ = read_manifest_rows(file, file.name)
    problems += cross_row_problems(rows, file.name)
    if config is not None:
        problems += config_row_problems(rows, config, file.name)
    if problems:
        problems.sort(key=lambda p: p.row or 0)
        raise ManifestError(
            f"{file}: {len(problems)} problem(s); fix them and retry:\n  " + "\n  ".join(map(str, problems))
        )
    return Manifest(rows=tuple(rows), root=file.parent, file=file)


def write_manifest(rows: Sequence[ManifestRow], path: str | Path) -> Path:
    """Write rows as `manifest.csv` (all columns, empty cells for None), atomically; `path`: file or folder."""
    file = _manifest_file(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    names = {f.name for f in fields(ManifestRow)}
    for r in rows:
        writer.writerow([format_cell(getattr(r, c)) if c in names else "" for c in MANIFEST_COLUMNS])
    return atomic_write_text(file, buffer.getvalue())
