"""Fuzz targets: each feeds one input (bytes) to a ludl reader the way a user's file reaches it.

The contract under test: a reader given any bytes either returns or raises `ludl.errors.LudlError` (a message
naming the file); any other exception is a bug in the reader. Each `Target` knows how to put the bytes on disk
(a single file, or one slice of an otherwise valid series) and which reader to call; `seeds.write_seeds` writes
valid files the project writes (or reads) as the starting corpus.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ludl.errors import LudlError

__all__ = ["TARGETS", "Target", "quiet", "run_one"]


def quiet() -> None:
    """Silence the warnings corrupt input makes pydicom and ITK print (thousands per fuzzing minute)."""
    import logging
    import warnings

    import SimpleITK as sitk

    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)


@dataclass(frozen=True)
class Target:
    """One fuzzed reader: where the bytes go and what reads them."""

    name: str
    file_name: str  # the fuzzed input's file name inside the work folder
    read: Callable[[Path, Path], Any]  # (fuzzed file, work folder) → anything
    series: bool = False  # the fuzzed file is one slice of a folder holding a valid series (seeds.series_slices)


def _read_nm(file: Path, folder: Path) -> Any:
    from ludl.io.nm import read_nm

    return read_nm(file)


def _read_pet(file: Path, folder: Path) -> Any:
    from ludl.io.pet import read_pet

    return read_pet(folder)


def _read_ct(file: Path, folder: Path) -> Any:
    from ludl.io.ct import read_ct

    return read_ct(folder)


def _read_rtdose(file: Path, folder: Path) -> Any:
    from ludl.io.rtdose import read_rtdose

    return read_rtdose(file)


def _read_seg(file: Path, folder: Path) -> Any:
    from ludl.io.seg import read_seg

    return read_seg(file)


def _grid() -> Any:
    import numpy as np

    from ludl.imaging.volume import Volume

    return Volume(np.zeros((6, 8, 10), dtype=np.float32), (2.0, 1.0, 1.0), unit="HU")


def _read_rtstruct(file: Path, folder: Path) -> Any:
    from ludl.io.rtstruct import read_rtstruct

    return read_rtstruct(file, _grid())


def _read_nifti(file: Path, folder: Path) -> Any:
    from ludl.io.cohort_images import read_nifti_in_unit

    return read_nifti_in_unit(file, "Bq/mL")  # as `ludl dosimetry` reads a SPECT row


def _read_manifest(file: Path, folder: Path) -> Any:
    from ludl.io.manifest import load_manifest

    return load_manifest(file)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("nm", "nm.dcm", _read_nm),
        Target("pet", "slice_1.dcm", _read_pet, series=True),
        Target("ct", "slice_1.dcm", _read_ct, series=True),
        Target("rtdose", "dose.dcm", _read_rtdose),
        Target("seg", "seg.dcm", _read_seg),
        Target("rtstruct", "rs.dcm", _read_rtstruct),
        Target("nifti", "image.nii.gz", _read_nifti),
        Target("manifest", "manifest.csv", _read_manifest),
    )
}

_WORK: dict[str, Path] = {}


def _work_folder(target: Target) -> Path:
    """A folder per target and process, holding the valid slices of a series target (written once)."""
    if target.name not in _WORK:
        folder = Path(tempfile.mkdtemp(prefix=f"ludl-fuzz-{target.name}-"))
        if target.series:
            from fuzz.seeds import series_slices

            for name, data in series_slices(target.name).items():
                if name != target.file_name:
                    (folder / name).write_bytes(data)
        _WORK[target.name] = folder
    return _WORK[target.name]


def run_one(name: str, data: bytes) -> None:
    """Feed `data` to target `name`; a `LudlError` is the expected outcome for bad data, anything else propagates."""
    target = TARGETS[name]
    folder = _work_folder(target)
    file_name = target.file_name
    if name == "nifti" and data[:2] != b"\x1f\x8b":
        file_name = "image.nii"  # an uncompressed NIfTI must not carry the .gz suffix
    file = folder / file_name
    for stale in ("image.nii", "image.nii.gz"):
        (folder / stale).unlink(missing_ok=True)
    file.write_bytes(data)
    try:
        target.read(file, folder)
    except LudlError:
        pass
