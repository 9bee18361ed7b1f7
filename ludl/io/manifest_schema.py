"""The manifest's schema: columns, numeric rules, `ManifestRow`, and `Problem` (what every cohort check reports).

docs/architecture.md "Data formats" is the contract: columns `MANIFEST_COLUMNS`, empty cell = "not applicable / use the
default". Row numbers in problems are *line numbers of the file* (1-based; the CSV header is line 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from ludl.io.cohort import ROLES

__all__ = [
    "ACTIVITY_REL_TOL",
    "COHORT_FILE",
    "ITK_SUFFIXES",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "NON_IMAGE_MODALITIES",
    "NUMBER_RULES",
    "PATIENT_ID_RE",
    "PET_ROLES",
    "REQUIRED_COLUMNS",
    "ROLE_MODALITIES",
    "ManifestRow",
    "Problem",
    "ProblemList",
    "fmt_number",
    "format_cell",
    "is_within",
    "same_time",
    "time_key",
    "valid_group",
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

MANIFEST_FILE = "manifest.csv"
COHORT_FILE = "cohort.yaml"

# Image files read through SimpleITK; anything else that is a file must be DICOM.
ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# DICOM Modality expected for each role (RTSTRUCT or SEG for label maps).
ROLE_MODALITIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "spect": frozenset({"NM"}),
        "ct": frozenset({"CT"}),
        "pet": frozenset({"PT"}),
        "pet_ct": frozenset({"CT"}),
        "mask": frozenset({"RTSTRUCT", "SEG"}),
    }
)
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "SEG", "RTDOSE", "RTPLAN", "REG", "SR", "PR", "KO"})
PET_ROLES = frozenset({"pet", "pet_ct"})
# Patient IDs become folder names downstream: keep them portable.
PATIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Numeric columns: (comparison, bound, unit) — docs/cohort-format.md; deadtime_factor = true/observed rate ≥ 1.
NUMBER_RULES: Mapping[str, tuple[str, float, str]] = MappingProxyType(
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
ACTIVITY_REL_TOL = 1e-6


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
    """One image of the cohort (docs/architecture.md "Data formats"); empty cells are None.

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


class ProblemList(list[Problem]):
    """Problems of one file, added by line."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def add(self, row: int | None, message: str) -> None:
        """Add a problem on `row` (a line of the file; None for the whole file)."""
        self.append(Problem(self.file, row, message))


def is_within(path: Path, root: Path) -> bool:
    """True when `path`, with every symlink followed, lies inside folder `root` (also resolved)."""
    return path.resolve().is_relative_to(root.resolve())


def valid_group(row: ManifestRow) -> bool:
    """True when a row names a patient, a cycle ≥ 1 and a known role (so it can be grouped with others)."""
    return bool(row.patient_id) and row.cycle >= 1 and row.role in ROLES


def same_time(a: float, b: float) -> bool:
    """Two nominal times (h) that are the same time point."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def time_key(value: float | None) -> float | None:
    """A nominal time (h) rounded for use as a dictionary key."""
    return None if value is None else round(value, 6)


def fmt_number(value: float) -> str:
    """A number as messages show it (``24``, ``0.5``)."""
    return f"{value:g}"


def format_cell(value: object) -> str:
    """A manifest cell as `write_manifest` writes it (empty for None, whole numbers without ``.0``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        # Whole numbers as integers (7400, not 7400.0); otherwise the shortest text that reads back exactly.
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
