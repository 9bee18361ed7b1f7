"""The prepared-case store: one folder per patient-cycle, written whole or not at all, read memory-mapped.

Layout (format version `FORMAT_VERSION`)::

    <root>/<case_id>/case.json                      sidecar: format, case, times, activities, regions, time points
    <root>/<case_id>/tp_24h/spect_bq_per_ml.npy     one folder per time point, every array on that SPECT's grid
    <root>/<case_id>/tp_24h/dose_gy.npy             …  (uncompressed .npy: ``np.load(mmap_mode="r")`` reads no more
                                                        than a training crop touches)

The channels a time point may hold are `CHANNELS` (name → file stem, unit, dtype). A case is written into a hidden
temporary sibling (``.<case_id>.tmp-<random>``) and renamed onto ``<case_id>`` only when every file is on disk, the
sidecar last: a reader, a resumed run or a crashed writer never sees half a case. A stale temporary folder left by a
killed process is removed by `clean_stale` before the case is written again.

The sidecar's case-level part is a `CaseSidecar`, each time point's a `TimepointInfo`
(`ludl.io.prepared_sidecar`); `write_case` adds each time point's grid, files and the intensity statistics of its
float channels over body voxels (`ludl.io.prepared_stats`; SPECT also per injected GBq). Version 2 added the
``classes`` channel, ``labelled_classes``/``unlabeled``, the statistics and typed sidecars. The dataset-level
descriptor ``dataset.json`` is `ludl.io.prepared_dataset`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.io.prepared_sidecar import CaseSidecar, TimepointInfo, to_jsonable
from ludl.io.prepared_stats import IntensityStats, body_mask, intensity_statistics
from ludl.physics.units import MBQ_PER_GBQ

__all__ = [
    "CASES_FOLDER",
    "CHANNELS",
    "FLOAT_CHANNELS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SIDECAR",
    "CaseTimepoint",
    "PreparedCase",
    "PreparedTimepoint",
    "case_is_complete",
    "case_provenance_record",
    "clean_stale",
    "list_cases",
    "read_case",
    "read_versioned_json",
    "timepoint_folder",
    "to_jsonable",
    "write_case",
]

FORMAT_NAME = "ludl-prepared-case"
# The folder of the cases under a prepared folder (beside dataset.json, splits.json, stp_regions.csv).
CASES_FOLDER = "cases"
# Bump when a file, unit or sidecar key changes meaning; readers refuse other versions (rerun `ludl prepare`).
FORMAT_VERSION = 2
SIDECAR = "case.json"
# channel → (file stem, unit, stored dtype). float32 keeps 7 significant digits, far below any dosimetric error.
CHANNELS: dict[str, tuple[str, str, str]] = {
    "spect": ("spect_bq_per_ml", "Bq/mL", "float32"),  # that time point's SPECT as the clinic hands it over
    "density": ("density_g_per_ml", "g/mL", "float32"),  # its CT as mass density (docs/physics.md §4 curve)
    "pet": ("pet_suv", "SUV", "float32"),  # pre-therapy PET, registered and resampled onto this grid
    "tia": ("tia_mbq_h_per_ml", "MBq*h/mL", "float32"),  # ground-truth TIA map (multi-time-point)
    "dose": ("dose_gy", "Gy", "float32"),  # ground-truth dose map (multi-time-point)
    "labels": ("labels", "label", "int32"),  # region map; values in the sidecar's ``region_values``
    "classes": ("classes", "label", "uint8"),  # canonical classes (`ludl.io.regions.SEGMENTATION_CLASSES` indices)
    "gt_fov": ("gt_fov", "mask", "bool"),  # True where the ground truth's (reference) grid covers the voxel
}
# Channels with intensity statistics in the sidecar (the others are labels and masks).
FLOAT_CHANNELS: tuple[str, ...] = tuple(c for c, (_, _, dtype) in CHANNELS.items() if dtype == "float32")
_REQUIRED = ("spect",)
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def timepoint_folder(timepoint_h: float) -> str:
    """Folder name of a nominal time point: ``tp_24h``, ``tp_0p5h``."""
    return "tp_" + f"{float(timepoint_h):g}".replace(".", "p").replace("-", "m") + "h"


@dataclass(frozen=True, eq=False)
class CaseTimepoint:
    """What `write_case` writes for one time point.

    Attributes:
        timepoint_h: nominal time point (h).
        volumes: channel name (`CHANNELS`) → Volume, all on the grid of ``volumes["spect"]``.
        info: what prepare knows of the time point (`TimepointInfo`), or extra sidecar entries as a mapping.
    """

    timepoint_h: float
    volumes: Mapping[str, Volume]
    info: TimepointInfo | Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PreparedTimepoint:
    """One time point of a prepared case: its grid and its channel files (read lazily).

    Attributes:
        timepoint_h: nominal time point (h).
        folder: the time point's folder.
        info: its sidecar entry (grid, files, times, transforms …).
    """

    timepoint_h: float
    folder: Path
    info: dict[str, Any]

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels stored for this time point."""
        return tuple(self.info["files"])

    @property
    def spacing_zyx_mm(self) -> tuple[float, float, float]:
        """Voxel size (z, y, x) in mm."""
        s = self.info["spacing_zyx_mm"]
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def meta(self) -> TimepointInfo:
        """The typed time-point entry (times, transforms, registration, ground-truth totals)."""
        return TimepointInfo.from_dict(self.info)

    @property
    def intensity(self) -> dict[str, IntensityStats]:
        """Intensity statistics over body voxels per float channel, plus ``spect_per_gbq`` (per injected GBq)."""
        return {str(k): IntensityStats.from_dict(v) for k, v in self.info.get("intensity", {}).items()}

    def array(self, channel: str, *, mmap: bool = True) -> npt.NDArray[Any]:
        """The channel's array (z, y, x); memory-mapped read-only by default."""
        files = self.info["files"]
        if channel not in files:
            raise InputError(
                f"{self.folder}: no channel {channel!r}; this time point holds {', '.join(files) or 'nothing'}"
            )
        path = self.folder / files[channel]["file"]
        try:
            return np.asarray(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot read the array ({err}); rerun `ludl prepare overwrite=true`") from err

    def volume(self, channel: str, *, mmap: bool = True) -> Volume:
        """The channel as a `Volume` with this time point's geometry and the channel's unit."""
        origin = self.info["origin_xyz_mm"]
        return Volume(
            self.array(channel, mmap=mmap),
            self.spacing_zyx_mm,
            (float(origin[0]), float(origin[1]), float(origin[2])),
            np.asarray(self.info["direction"], dtype=np.float64).reshape(3, 3),
            unit=self.info["files"][channel]["unit"],
        )


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """A prepared patient-cycle: sidecar plus time points.

    Attributes:
        path: the case folder.
        sidecar: the parsed ``case.json``.
        timepoints: in ascending nominal time.
    """

    path: Path
    sidecar: dict[str, Any]
    timepoints: tuple[PreparedTimepoint, ...]

    @property
    def case_id(self) -> str:
        """Folder name of the case."""
        return str(self.sidecar["case_id"])

    @property
    def patient_id(self) -> str:
        """The cohort's pseudonymous patient ID."""
        return str(self.sidecar["patient_id"])

    @property
    def cycle(self) -> int:
        """Therapy cycle."""
        return int(self.sidecar["cycle"])

    @property
    def meta(self) -> CaseSidecar:
        """The typed case-level sidecar."""
        return CaseSidecar.from_dict(self.sidecar)

    @property
    def region_values(self) -> dict[str, int]:
        """Region name → value in every time point's ``labels`` array."""
        return {str(k): int(v) for k, v in self.sidecar.get("region_values", {}).items()}

    def timepoint(self, timepoint_h: float) -> PreparedTimepoint:
        """The time point with this nominal time (h)."""
        for tp in self.timepoints:
            if math.isclose(tp.timepoint_h, float(timepoint_h), abs_tol=1e-6):
                return tp
        have = ", ".join(f"{t.timepoint_h:g}" for t in self.timepoints)
        raise InputError(f"{self.path}: no time point {timepoint_h:g} h; it has {have} h")


def _check_case_id(case_id: str) -> None:
    if not _SAFE.match(case_id):
        raise InputError(
            f"case id {case_id!r} is not a safe folder name: use letters, digits, '_', '-', '.' (first a letter/digit)"
        )


def clean_stale(root: str | Path, case_id: str) -> list[Path]:
    """Remove the temporary folders a killed writer of `case_id` left in `root`; returns what was removed."""
    root = Path(root)
    removed = []
    for pattern in (f".{case_id}.tmp-*", f".{case_id}.old-*"):
        for path in root.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _sidecar_version(path: Path) -> int | None:
    """Format version of a case folder's sidecar; None when absent or unreadable."""
    try:
        data = json.loads((path / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        return None
    version = data.get("format_version")
    return int(version) if isinstance(version, int) else None


def case_is_complete(path: str | Path) -> bool:
    """True when `path` is a finished case of the current format version."""
    return _sidecar_version(Path(path)) == FORMAT_VERSION


def case_provenance_record(path: str | Path) -> dict[str, Any] | None:
    """The ``provenance`` entry of a case folder's sidecar (`ludl.io.provenance.Provenance`); None when absent.

    Cases of format version 2 written before provenance was recorded have none: `ludl prepare` recomputes them.
    """
    try:
        data = json.loads((Path(path) / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = data.get("provenance") if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) else None


def _write_array(path: Path, array: npt.NDArray[Any], dtype: str) -> npt.NDArray[Any]:
    """Write the array in its stored dtype; returns what was written."""
    stored = np.ascontiguousarray(array, dtype=np.dtype(dtype))
    with open(path, "wb") as fh:
        np.save(fh, stored, allow_pickle=False)
    return stored


def _intensity(stored: Mapping[str, npt.NDArray[Any]], injected_mbq: float | None) -> dict[str, Any]:
    """Statistics of the float channels as stored, over body voxels (all voxels without a density channel)."""
    mask = body_mask(stored["density"]) if "density" in stored else None
    out = {c: intensity_statistics(stored[c], mask) for c in FLOAT_CHANNELS if c in stored}
    if injected_mbq is not None and injected_mbq > 0 and "spect" in out:
        out["spect_per_gbq"] = out["spect"].scaled(MBQ_PER_GBQ / injected_mbq)
    return {name: stats.to_dict() for name, stats in out.items()}


def _timepoint_entry(tp: CaseTimepoint, folder: Path, nifti: bool, injected_mbq: float | None = None) -> dict[str, Any]:
    unknown = sorted(set(tp.volumes) - set(CHANNELS))
    if unknown:
        raise InputError(f"unknown channel(s) {', '.join(unknown)}; channels are {', '.join(CHANNELS)}")
    missing = [c for c in _REQUIRED if c not in tp.volumes]
    if missing:
        raise InputError(f"time point {tp.timepoint_h:g} h has no {', '.join(missing)} volume")
    grid = tp.volumes["spect"]
    folder.mkdir()
    files: dict[str, dict[str, Any]] = {}
    stored: dict[str, npt.NDArray[Any]] = {}
    for channel in CHANNELS:  # fixed order: the sidecar lists channels the same way for every case
        if channel not in tp.volumes:
            continue
        volume = tp.volumes[channel]
        volume.require_same_grid(grid, what=f"{channel} and spect at {tp.timepoint_h:g} h")
        stem, unit, dtype = CHANNELS[channel]
        stored[channel] = _write_array(folder / f"{stem}.npy", np.asarray(volume.array), dtype)
        files[channel] = {"file": f"{stem}.npy", "unit": unit, "dtype": dtype}
        if nifti:
            from ludl.io.nifti import write_nifti

            viewable = stored[channel].astype(np.uint8 if dtype == "bool" else dtype)
            copy = Volume(viewable, grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit=unit)
            write_nifti(copy, folder / f"{stem}.nii.gz")
            files[channel]["nifti"] = f"{stem}.nii.gz"
    info = tp.info.to_dict() if isinstance(tp.info, TimepointInfo) else to_jsonable(dict(tp.info))
    return {
        **info,
        "timepoint_h": float(tp.timepoint_h),
        "folder": folder.name,
        "shape_zyx": list(grid.shape),
        "spacing_zyx_mm": list(grid.spacing_zyx_mm),
        "origin_xyz_mm": list(grid.origin_xyz_mm),
        "direction": np.asarray(grid.direction, dtype=np.float64).ravel().tolist(),
        "files": files,
        "intensity": _intensity(stored, injected_mbq),
    }


def write_case(
    root: str | Path,
    case_id: str,
    timepoints: Sequence[CaseTimepoint],
    sidecar: CaseSidecar | Mapping[str, Any],
    *,
    nifti: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write one prepared case atomically: into a temporary sibling, renamed onto ``root/case_id`` when complete.

    Args:
        root: the store folder (created if missing).
        case_id: the case folder name (de-identified; letters, digits, ``_ - .``).
        timepoints: one `CaseTimepoint` per time point (each on its own SPECT grid).
        sidecar: the case-level part of ``case.json`` (`CaseSidecar`), or entries that are JSON-able after
            `to_jsonable`; its ``injected_mbq`` scales the SPECT statistics per injected GBq.
        nifti: also write a ``.nii.gz`` copy of every array, for viewing.
        overwrite: replace an existing case; otherwise an existing complete case raises `InputError`.

    Returns:
        The case folder.
    """
    _check_case_id(case_id)
    if not timepoints:
        raise InputError(f"case {case_id}: no time points to write")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / case_id
    if dest.exists() and case_is_complete(dest) and not overwrite:
        raise InputError(f"{dest} is already a complete prepared case; pass overwrite=True to replace it")
    case_entries = sidecar.to_dict() if isinstance(sidecar, CaseSidecar) else to_jsonable(dict(sidecar))
    injected = case_entries.get("injected_mbq")
    injected_mbq = float(injected) if isinstance(injected, (int, float)) else None
    tmp = root / f".{case_id}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        entries = []
        for tp in sorted(timepoints, key=lambda t: t.timepoint_h):
            entries.append(_timepoint_entry(tp, tmp / timepoint_folder(tp.timepoint_h), nifti, injected_mbq))
        document = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            **case_entries,
            "case_id": case_id,
            "timepoints": entries,
        }
        # The sidecar goes last: its presence is what marks a case complete.
        (tmp / SIDECAR).write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        if dest.exists():
            old = root / f".{case_id}.old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_versioned_json(file: Path, format_name: str, *, missing: str, what: str) -> dict[str, Any]:
    """A JSON document of `format_name` at this `FORMAT_VERSION`; anything else is refused, naming the file and the fix.

    Args:
        file: the JSON file.
        format_name: the document's ``format`` entry.
        missing: the message when the file does not exist.
        what: what a rerun rewrites ("the case", "the cases and the descriptor").
    """
    rerun = f"rerun `ludl prepare … overwrite=true` to rewrite {what}"
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(missing) from err
    except (OSError, ValueError) as err:
        raise InputError(f"{file}: cannot read ({err}); {rerun}") from err
    if not isinstance(document, dict) or document.get("format") != format_name:
        raise InputError(f"{file} is not a {format_name} document; {rerun}")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"{file} has format version {version}, this ludl reads version {FORMAT_VERSION}: {rerun}")
    return document


def read_case(path: str | Path) -> PreparedCase:
    """Open a prepared case folder (arrays are read lazily, memory-mapped); refuses other format versions."""
    path = Path(path)
    file = path / SIDECAR
    missing = f"{path} is not a prepared case (no {SIDECAR}); run `ludl prepare` to write it"
    data = read_versioned_json(file, FORMAT_NAME, missing=missing, what="the case")
    tps = tuple(
        PreparedTimepoint(float(entry["timepoint_h"]), path / entry["folder"], entry) for entry in data["timepoints"]
    )
    return PreparedCase(path=path, sidecar=data, timepoints=tps)


def list_cases(root: str | Path) -> tuple[Path, ...]:
    """The complete cases of the current format in a store folder, sorted by name (temporary folders ignored)."""
    root = Path(root)
    if not root.is_dir():
        return ()
    return tuple(p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and case_is_complete(p))
