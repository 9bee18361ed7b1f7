"""Seed corpora for the fuzz targets: small valid files, written by ludl's own writers where it has one.

NM SPECT (`ludl.io.nm_write`), RT Dose (`ludl.io.rtdose`), SEG (`ludl.io.seg`), NIfTI (`ludl.io.nifti`) come from
ludl's writers; CT slices and RTSTRUCT from the test factory (`tests.io.dicom_factory`, pydicom); PET slices are the
vendored IBSI SUV DRO headers (`tests/data/suv_dro`) shrunk to 8 × 8 pixels; the manifest is the clean cohort of
`tests.io.test_manifest`. Everything is generated, nothing binary is committed.
"""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
from pathlib import Path

import numpy as np

from ludl.imaging.volume import Volume

__all__ = ["series_slices", "write_seeds"]

_WHEN = dt.datetime(2025, 1, 1, 9, 0, 0)
_REPO = Path(__file__).resolve().parents[1]


def _ct_slices(folder: Path) -> list[Path]:
    from tests.io.dicom_factory import write_image_series

    values = np.arange(3 * 6 * 5, dtype=np.int16).reshape(3, 6, 5) - 1000
    return write_image_series(folder, values, spacing_zyx_mm=(2.0, 1.0, 1.0), shuffle=False)


def _pet_slices(folder: Path) -> list[Path]:
    import pydicom

    source = sorted((_REPO / "tests" / "data" / "suv_dro" / "DRO_0_0" / "PT").glob("*.dcm"))[:3]
    paths = []
    for k, src in enumerate(source):
        ds = pydicom.dcmread(src)
        small = np.ascontiguousarray(ds.pixel_array[:8, :8])
        ds.Rows, ds.Columns = 8, 8
        ds.PixelData = small.tobytes()
        paths.append(folder / f"slice_{k}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


@functools.cache
def series_slices(name: str) -> dict[str, bytes]:
    """The three valid slices of the `pet` or `ct` series, as file name (slice_0.dcm …) → bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = _pet_slices(Path(tmp)) if name == "pet" else _ct_slices(Path(tmp))
        return {f"slice_{k}.dcm": p.read_bytes() for k, p in enumerate(paths)}


def _labels() -> Volume:
    labels = np.zeros((3, 6, 5), dtype=np.int16)
    labels[1, 2:4, 1:3] = 1
    labels[2, 4, 3] = 2
    return Volume(labels, (2.0, 1.0, 1.0), unit="label")


def _write(name: str, out: Path, tmp: Path) -> None:
    """Write the seeds of target `name` into `out`."""
    rng = np.random.default_rng(0)
    if name == "nm":
        from ludl.io.nm_write import write_nm_spect

        spect = Volume(rng.random((4, 6, 5)) * 1000.0, (4.8, 4.8, 4.8), unit="Bq/mL")
        keys = {"uid_seed": "fuzz", "study_key": "fuzz", "frame_of_reference_key": "fuzz"}
        write_nm_spect(spect, out / "nm.dcm", patient_id="FUZZ", acquisition=_WHEN, acquisition_s=900.0, **keys)
    elif name in ("ct", "pet"):
        for file, data in series_slices(name).items():
            if file == "slice_1.dcm":
                (out / file).write_bytes(data)
    elif name == "rtdose":
        from ludl.io.rtdose import write_rtdose

        dose = Volume(rng.random((4, 6, 5)) * 20.0, (4.8, 4.8, 4.8), unit="Gy")
        write_rtdose(dose, out / "dose.dcm", uid_seed="fuzz", timestamp=_WHEN)
    elif name == "seg":
        from ludl.io.seg import write_seg

        ct = _ct_slices(tmp)
        write_seg(_labels(), out / "seg.dcm", ct, {"liver": 1, "lesion_001": 2}, uid_seed="fuzz", timestamp=_WHEN)
    elif name == "rtstruct":
        from tests.io.dicom_factory import write_rtstruct

        square = np.array([[1.0, 1.0, 4.0], [6.0, 1.0, 4.0], [6.0, 5.0, 4.0], [1.0, 5.0, 4.0]])
        write_rtstruct(out / "rs.dcm", {"liver": [square], "lesion_001": [square[:, :] * [0.5, 0.5, 1.0]]})
    elif name == "nifti":
        from ludl.io.nifti import write_nifti

        spect = Volume(rng.random((4, 6, 5)).astype(np.float32), (4.8, 4.8, 4.8), unit="Bq/mL")
        write_nifti(spect, out / "spect.nii.gz")
        write_nifti(spect, out / "spect.nii")
        write_nifti(_labels(), out / "labels.nii.gz")
    elif name == "manifest":
        from tests.io.test_manifest import _clean_rows, _write_csv

        _write_csv(out / "manifest.csv", _clean_rows())
    else:
        raise KeyError(f"no fuzz target {name!r}")


def write_seeds(name: str, out: str | Path) -> list[Path]:
    """Write the seed corpus of target `name` into folder `out` (created); returns the files."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _write(name, folder, Path(tmp))
    return sorted(p for p in folder.iterdir() if p.is_file())
