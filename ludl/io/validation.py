"""Whole-cohort validation: `validate_cohort` checks cohort.yaml, the manifest, image headers and outcomes.csv,
and (``deep``, the default for small cohorts) reads every image's pixel data; it returns a `ValidationReport`
(every problem with file and row) and a summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ludl.errors import ManifestError
from ludl.io.cohort import ROLES, CohortConfig, check_cohort_config
from ludl.io.manifest import Manifest
from ludl.io.manifest_checks import config_row_problems, cross_row_problems
from ludl.io.manifest_images import image_problems
from ludl.io.manifest_parse import read_manifest_rows
from ludl.io.manifest_schema import COHORT_FILE, MANIFEST_FILE, ManifestRow, Problem, fmt_number, valid_group
from ludl.io.outcomes import OUTCOMES_FILE, outcome_problems

__all__ = ["DEEP_AUTO_MAX_BYTES", "CohortSummary", "ValidationReport", "cohort_summary", "validate_cohort"]

# `validate_cohort(deep=None)` reads pixel data when the cohort's image files hold at most this many bytes on disk
# (a few patients: seconds); larger cohorts are checked header-only unless deep=True is asked for.
DEEP_AUTO_MAX_BYTES = 2 * 1024**3


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

        pts = ", ".join(fmt_number(t) for t in self.spect_timepoints_h) or "-"
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


def _image_bytes(rows: Sequence[ManifestRow], root: Path, limit: int) -> int:
    """Bytes of the cohort's image files on disk, counting stops once above `limit`."""
    total = 0
    for r in rows:
        path = root / r.path if r.path and not Path(r.path).is_absolute() else None
        if path is None or not path.exists():
            continue
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        total += sum(f.stat().st_size for f in files)
        if total > limit:
            break
    return total


def validate_cohort(cohort_dir: str | Path, *, deep: bool | None = None) -> ValidationReport:
    """Check a cohort folder completely before any heavy work and report every problem with file and row.

    Reads `cohort.yaml`, `manifest.csv`, every image header (NIfTI via SimpleITK's ReadImageInformation, DICOM
    folders via `ludl.io.dicom_series.inspect_dicom_folder`) and `outcomes.csv` when present. With `deep` it also
    reads every image's pixel data (`ludl.io.validation_pixels`): truncated or corrupt files, NaN/inf, empty or
    all-zero images, pixel data that disagrees with the header. ``deep=None`` means deep for cohorts whose image
    files hold at most `DEEP_AUTO_MAX_BYTES`. Never raises for a bad cohort: the problems are in the report.
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

    rows, manifest_problems, header_ok = read_manifest_rows(root / MANIFEST_FILE, MANIFEST_FILE)
    manifest_problems += cross_row_problems(rows, MANIFEST_FILE)
    if config is not None:
        manifest_problems += config_row_problems(rows, config, MANIFEST_FILE)
        if any(r.role == "mask" for r in rows) and not config.labels:
            problems.append(Problem(COHORT_FILE, None, "manifest.csv has mask rows but 'labels' is empty"))
    header_problems, spacings = image_problems(rows, root, MANIFEST_FILE) if header_ok else ([], {})
    manifest_problems += header_problems
    if header_ok and (deep or (deep is None and _image_bytes(rows, root, DEEP_AUTO_MAX_BYTES) <= DEEP_AUTO_MAX_BYTES)):
        from ludl.io.validation_pixels import pixel_problems

        failed_lines = {p.row for p in header_problems}  # a row whose header failed is not read again
        unread = [r for r in rows if r.line not in failed_lines]
        manifest_problems += pixel_problems(unread, root, config, MANIFEST_FILE)
    manifest_problems.sort(key=lambda p: p.row or 0)  # stable: per row, parse → cross-row → image order
    problems += manifest_problems

    n_outcomes: int | None = None
    if (root / OUTCOMES_FILE).exists():
        outcomes_found, n_outcomes = outcome_problems(
            root / OUTCOMES_FILE, {r.patient_id for r in rows if r.patient_id}, OUTCOMES_FILE
        )
        problems += outcomes_found

    valid_rows = [r for r in rows if valid_group(r) and r.path]
    summary = None
    if valid_rows:
        manifest = Manifest(rows=tuple(valid_rows), root=root, file=root / MANIFEST_FILE)
        summary = cohort_summary(manifest, config, voxel_sizes_mm=spacings, n_outcomes=n_outcomes)
    return ValidationReport(cohort_dir=root, problems=tuple(problems), summary=summary)
