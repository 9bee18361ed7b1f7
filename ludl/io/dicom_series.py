"""Find, group, sort and check DICOM image series in a folder, reading headers only.

`inspect_dicom_folder` never raises on bad data: it returns a `FolderReport` whose series summaries list every
problem found (each naming the file), so the cohort validator can report them all at once. `load_series` is the
strict twin used by the readers: it raises on the first problem and returns the datasets sorted along the slice
normal with their `SeriesGeometry` (`ludl.io.dicom_geometry`). One file is read by `ludl.io.dicom_file`, its
attributes by `ludl.io.dicom_tags`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import DicomError, GeometryError, LudlError
from ludl.io.dicom_file import (
    NM_IMAGE_STORAGE,
    SECONDARY_CAPTURE_SOP_CLASSES,
    STACKABLE_SOP_CLASSES,
    DicomHeader,
    read_dicom_file,
    read_header,
    reads_dicom,
)
from ludl.io.dicom_geometry import SeriesGeometry, multiframe_geometry, stack_geometry
from ludl.io.dicom_tags import frame_count, sop_class_name

__all__ = [
    "FolderReport",
    "SeriesSummary",
    "inspect_dicom_folder",
    "load_series",
    "select_series",
]


@dataclass(frozen=True, eq=False)
class SeriesSummary:
    """What the headers of one series say, and every problem found in them.

    Attributes:
        series_uid: SeriesInstanceUID.
        modality: Modality (CT, PT, NM, RTSTRUCT, SEG, RTDOSE, …).
        sop_class_uid: SOP Class UID of the first file; `sop_class` its name.
        files: the files, sorted along the slice normal where geometry allows.
        n_files: number of files; `n_frames` total frames.
        shape: (z, y, x) of the assembled volume, when known.
        spacing_zyx_mm: voxel size in mm, when known.
        orientation: ImageOrientationPatient (6 direction cosines), when known.
        origin_xyz_mm: LPS centre of the first voxel, when known.
        frame_of_reference_uid, study_uid, description: from the headers.
        instance_range: smallest and largest InstanceNumber, when all files carry one.
        problems: one message per problem, each naming a file; empty when the series is usable.
        notes: facts worth reporting that are not errors (e.g. instance numbers not starting at 1).
    """

    series_uid: str
    modality: str
    sop_class_uid: str
    sop_class: str
    files: tuple[Path, ...]
    n_files: int
    n_frames: int
    shape: tuple[int, int, int] | None
    spacing_zyx_mm: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    origin_xyz_mm: tuple[float, float, float] | None
    frame_of_reference_uid: str | None
    study_uid: str | None
    description: str
    instance_range: tuple[int, int] | None
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    _error_types: tuple[type[LudlError], ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def raise_if_problems(self) -> None:
        """Raise the first problem as its error type (others are counted in the message)."""
        if not self.problems:
            return
        error = self._error_types[0] if self._error_types else DicomError
        more = f" (and {len(self.problems) - 1} more problem(s): run `ludl validate` to list them)"
        raise error(self.problems[0] + (more if len(self.problems) > 1 else ""))


@dataclass(frozen=True, eq=False)
class FolderReport:
    """Result of `inspect_dicom_folder`: the series found, the files skipped, and every problem.

    Attributes:
        path: the folder (or file) inspected.
        series: one summary per SeriesInstanceUID, ordered by modality then description.
        skipped: notes about non-DICOM files that were ignored.
        problems: folder-level problems (unreadable files, several series of one modality), each naming files.
    """

    path: Path
    series: tuple[SeriesSummary, ...]
    skipped: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def all_problems(self) -> tuple[str, ...]:
        """Folder problems followed by every series' problems."""
        return self.problems + tuple(p for s in self.series for p in s.problems)

    @property
    def ok(self) -> bool:
        """True when neither the folder nor any series has a problem."""
        return not self.all_problems


def _gather_files(root: Path, recursive: bool) -> list[Path]:
    if root.is_file():
        return [root]
    if recursive:
        files: list[Path] = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files.extend(Path(folder) / n for n in sorted(names))
        return files
    return sorted(p for p in root.iterdir() if p.is_file())


# (shape, spacing_zyx_mm, origin_xyz_mm, orientation) of a series, each None when unknown.
_Placement = tuple[
    tuple[int, int, int] | None,
    tuple[float, float, float] | None,
    tuple[float, float, float] | None,
    tuple[float, ...] | None,
]


def _orientation_of(direction: Any) -> tuple[float, ...]:
    """ImageOrientationPatient (row then column direction) of a direction matrix."""
    return tuple(float(v) for v in np.concatenate([direction[:, 0], direction[:, 1]]))


def _multiframe_placement(
    headers: list[DicomHeader], files: list[Path], errors: list[tuple[type[LudlError], str]], notes: list[str]
) -> tuple[list[Path], _Placement]:
    """Files sorted along the normal (beds) and (shape, spacing, origin, orientation) of multi-frame files."""
    geometries = []
    for h in headers:
        try:
            geometries.append(multiframe_geometry(h.ds, h.path))
        except GeometryError as err:
            errors.append((GeometryError, str(err)))
        except (AttributeError, TypeError, ValueError) as err:
            errors.append((DicomError, f"{h.path}: malformed geometry attributes ({err})"))
    if len(geometries) != len(headers) or not geometries:
        return files, (None, None, None, None)
    if len(geometries) > 1:
        normal = geometries[0].direction[:, 2]
        order = np.argsort([np.dot(g.origin_xyz_mm, normal) for g in geometries], kind="stable")
        geometries = [geometries[i] for i in order]
        files = [files[i] for i in order]
        notes.append(f"{len(headers)} multi-frame files in one series (bed positions?)")
    g = geometries[0]
    shape = g.shape_zyx if all(x.shape_zyx == g.shape_zyx for x in geometries) else None
    return files, (shape, g.spacing_zyx_mm, g.origin_xyz_mm, _orientation_of(g.direction))


def _instance_range(headers: list[DicomHeader], notes: list[str]) -> tuple[int, int] | None:
    """Smallest and largest InstanceNumber when all files carry one; a note when numbers suggest a split series."""
    numbers = [h.ds.get("InstanceNumber") for h in headers]
    if not all(v is not None and str(v).strip() for v in numbers):
        return None
    try:
        ints = [int(v) for v in numbers]
    except (TypeError, ValueError):
        return None
    if len(headers) > 1 and (min(ints) > 1 or max(ints) - min(ints) + 1 != len(ints)):
        notes.append(
            f"instance numbers run {min(ints)}–{max(ints)} over {len(ints)} files: part of the series may "
            "lie in another folder (split series?)"
        )
    return (min(ints), max(ints))


def _summarise(uid: str, headers: list[DicomHeader]) -> SeriesSummary:
    first = headers[0].ds
    modality = str(first.get("Modality", "") or "")
    sop = str(first.get("SOPClassUID", ""))
    errors: list[tuple[type[LudlError], str]] = []
    notes: list[str] = []
    for h in headers:
        if h.problem is not None:
            errors.append((DicomError, f"{h.path}: {h.problem}; re-export the file"))
        h_sop = str(h.ds.get("SOPClassUID", ""))
        if h_sop != sop:
            errors.append(
                (DicomError, f"{h.path}: SOP class {sop_class_name(h_sop)} differs from {sop_class_name(sop)}")
            )
    placement: _Placement = (None, None, None, None)
    files = [h.path for h in headers]
    n_frames = sum(frame_count(h.ds) for h in headers)
    multi = any(frame_count(h.ds) > 1 for h in headers) or (sop == NM_IMAGE_STORAGE and len(headers) == 1)
    if sop in SECONDARY_CAPTURE_SOP_CLASSES:
        # Modality may still say NM/PT/CT (pydicom's "NM" test files): flag it so it cannot pass for an image.
        errors.append(
            (
                DicomError,
                f"{headers[0].path}: Secondary Capture image (Modality {modality or 'unset'}) — a screenshot without "
                "quantitative values or 3D geometry; export the original image series",
            )
        )
    elif sop in STACKABLE_SOP_CLASSES and multi:
        files, placement = _multiframe_placement(headers, files, errors, notes)
    elif sop in STACKABLE_SOP_CLASSES:
        sorted_headers, geometry, stack_errors = stack_geometry(headers)
        errors.extend(stack_errors)
        files = [h.path for h in sorted_headers]
        if geometry is not None:
            g = geometry
            placement = (g.shape_zyx, g.spacing_zyx_mm, g.origin_xyz_mm, _orientation_of(g.direction))
    elif "Rows" in first:
        placement = ((n_frames, int(first.Rows), int(first.Columns)), None, None, None)
    instance_range = _instance_range(headers, notes)
    shape, spacing, origin, orientation = placement
    return SeriesSummary(
        series_uid=uid,
        modality=modality,
        sop_class_uid=sop,
        sop_class=sop_class_name(sop) if sop else "",
        files=tuple(files),
        n_files=len(headers),
        n_frames=n_frames,
        shape=shape,
        spacing_zyx_mm=spacing,
        orientation=orientation,
        origin_xyz_mm=origin,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID")) if "FrameOfReferenceUID" in first else None,
        study_uid=str(first.get("StudyInstanceUID")) if "StudyInstanceUID" in first else None,
        description=str(first.get("SeriesDescription", "") or ""),
        instance_range=instance_range,
        problems=tuple(msg for _, msg in errors),
        notes=tuple(notes),
        _error_types=tuple(cls for cls, _ in errors),
    )


def _scan(path: Path, recursive: bool) -> tuple[FolderReport, dict[str, list[DicomHeader]]]:
    if not path.exists():
        raise DicomError(f"{path}: no such file or folder; check the path")
    skipped: list[str] = []
    problems: list[str] = []
    groups: dict[str, list[DicomHeader]] = {}
    for file in _gather_files(path, recursive):
        header, skip, problem = read_header(file)
        if skip is not None:
            skipped.append(skip)
        if problem is not None:
            problems.append(problem)
        if header is not None:
            groups.setdefault(str(header.ds.SeriesInstanceUID), []).append(header)
    summaries = [_summarise(uid, headers) for uid, headers in groups.items()]
    summaries.sort(key=lambda s: (s.modality, s.description, s.series_uid))
    if not summaries and not problems:
        problems.append(f"{path}: no DICOM files found; check the path")
    by_modality: dict[str, list[SeriesSummary]] = {}
    for s in summaries:
        by_modality.setdefault(s.modality, []).append(s)
    for modality, group in by_modality.items():
        if len(group) > 1 and modality not in ("RTSTRUCT", "SEG", "SR", "PR", "REG"):
            listing = "; ".join(
                f"{s.series_uid} ({s.description or 'no description'}, {s.n_files} files)" for s in group
            )
            problems.append(
                f"{path}: {len(group)} {modality} series mixed in one folder: {listing}; give series_uid or put "
                "each series in its own folder"
            )
    report = FolderReport(path=path, series=tuple(summaries), skipped=tuple(skipped), problems=tuple(problems))
    return report, groups


def inspect_dicom_folder(path: str | os.PathLike[str], *, recursive: bool = True) -> FolderReport:
    """Scan a folder's DICOM headers (no pixel data) and report its series and every problem; never raises on data.

    Args:
        path: a folder (searched recursively by default) or a single DICOM file.
        recursive: also scan sub-folders.

    Returns:
        A `FolderReport`; `DicomError` only when `path` does not exist.
    """
    report, _ = _scan(Path(path), recursive)
    return report


def select_series(
    report: FolderReport, modality: str | Iterable[str] | None = None, series_uid: str | None = None
) -> SeriesSummary:
    """The one series of `report` matching `modality`/`series_uid`; `DicomError` when none or several match."""
    wanted = {modality} if isinstance(modality, str) else (set(modality) if modality is not None else None)
    candidates = [s for s in report.series if wanted is None or s.modality in wanted]
    if series_uid is not None:
        candidates = [s for s in candidates if s.series_uid == series_uid]
    what = f"{'/'.join(sorted(wanted)) if wanted else 'image'} series" + (f" {series_uid}" if series_uid else "")
    if not candidates:
        found = ", ".join(f"{s.modality} {s.series_uid}" for s in report.series) or "no DICOM series"
        extra = f"; {report.problems[0]}" if report.problems else ""
        raise DicomError(f"{report.path}: no {what} found (found: {found}){extra}")
    if len(candidates) > 1:
        listing = "; ".join(f"{s.series_uid} ({s.description or s.modality}, {s.n_files} files)" for s in candidates)
        raise DicomError(
            f"{report.path}: {len(candidates)} {what} mixed in one folder: {listing}; pass series_uid to choose one "
            "or put each series in its own folder"
        )
    chosen = candidates[0]
    unreadable = [p for p in report.problems if "mixed in one folder" not in p]
    if unreadable:
        raise DicomError(unreadable[0] + ("" if len(unreadable) == 1 else f" (and {len(unreadable) - 1} more)"))
    return chosen


@reads_dicom
def load_series(
    path: str | os.PathLike[str],
    modality: str | Iterable[str] | None = None,
    *,
    series_uid: str | None = None,
    recursive: bool = True,
) -> tuple[list[Any], SeriesGeometry]:
    """Load one image series (pixels included), sorted along the slice normal, and its geometry; strict.

    Args:
        path: a folder or a single DICOM file.
        modality: the Modality wanted (e.g. ``"CT"``); series of other modalities in the folder are ignored.
        series_uid: choose one series when the folder holds several of the wanted modality.
        recursive: also scan sub-folders.

    Returns:
        (datasets, geometry): single-frame slices sorted along +normal, or a one-element list holding a
        multi-frame file whose frames `geometry.frame_order` sorts.

    Raises:
        DicomError: no or several matching series, unreadable/truncated files, missing or duplicate slices.
        GeometryError: missing or inconsistent orientation, spacing or size.
    """
    report, groups = _scan(Path(path), recursive)
    summary = select_series(report, modality, series_uid)
    summary.raise_if_problems()
    if summary.sop_class_uid in SECONDARY_CAPTURE_SOP_CLASSES:
        raise DicomError(
            f"{summary.files[0]}: Secondary Capture image ({summary.sop_class_uid}) — a screenshot without "
            "quantitative values or 3D geometry; export the original image series"
        )
    if summary.sop_class_uid not in STACKABLE_SOP_CLASSES:
        raise DicomError(
            f"{summary.files[0]}: {summary.sop_class} ({summary.sop_class_uid}) is not an image series ludl can "
            "stack (CT, MR, PET or NM image storage)"
        )
    headers = groups[summary.series_uid]
    if summary.n_files > 1 and any(frame_count(h.ds) > 1 for h in headers):
        raise DicomError(
            f"{Path(path)}: series {summary.series_uid} holds {summary.n_files} multi-frame files (bed positions?); "
            "read it with ludl.io.nm.read_nm, which stitches beds"
        )
    datasets = [read_dicom_file(f) for f in summary.files]
    if len(datasets) == 1 and (frame_count(datasets[0]) > 1 or summary.sop_class_uid == NM_IMAGE_STORAGE):
        return datasets, multiframe_geometry(datasets[0], summary.files[0])
    by_path = {h.path: h for h in headers}
    _, geometry, errors = stack_geometry([by_path[f] for f in summary.files])
    if errors or geometry is None:  # pragma: no cover - summary.raise_if_problems already caught these
        cls, message = errors[0] if errors else (GeometryError, f"{path}: cannot build the series geometry")
        raise cls(message)
    return datasets, geometry
