"""The bad-input corpus (issue 14): each case breaks a clean cohort one way and runs the command a user would.

Every case asserts a non-zero exit, a message naming the file (and manifest line or DICOM tag) and what to do, and
no partial output: the cohort folder is unchanged and the output folder holds no result (only the run record Hydra
keeps in ``.ludl/``). Cases run ``ludl validate`` (deep pixel checks are its default for small cohorts),
``ludl dosimetry`` or ``ludl prepare`` in-process through `ludl.cli.main`.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ludl.cli import main
from ludl.imaging.volume import Volume
from ludl.io.nifti import write_nifti
from tests.badinput.cohorts import (
    DICOM_LINES,
    dicom_cohort,
    edit_dicom,
    edit_rows,
    nifti_cohort,
    rows_of,
    write_rows,
)
from tests.io.dicom_factory import write_image_series, write_nm_multiframe, write_rtstruct
from tests.io.test_manifest import BQML, CT_FRAME


@dataclass(frozen=True)
class Case:
    """One bad input: the command, the clean cohort it starts from, and how it breaks it (returns expected text)."""

    name: str
    job: str  # validate | dosimetry | prepare
    base: str  # nifti | dicom | runnable
    breaks: Callable[[Path], list[str]]


CASES: list[Case] = []


def case(job: str, base: str) -> Callable[[Callable[[Path], list[str]]], Callable[[Path], list[str]]]:
    """Register a case function under its name."""

    def register(fn: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(fn.__name__, job, base, fn))
        return fn

    return register


def _line(n: int) -> str:
    return f"manifest.csv:{n}"


# ------------------------------------------------------------------------------------------------ manifest


@case("validate", "nifti")
def unknown_column(root: Path) -> list[str]:
    rows = rows_of(root)
    write_rows(root, [{**r, "activty_mbq": "7400"} for r in rows])
    return [_line(1), "unknown column 'activty_mbq'", "the manifest columns are"]


@case("validate", "nifti")
def duplicate_row(root: Path) -> list[str]:
    edit_rows(root, lambda rows: rows.insert(4, dict(rows[4])))
    return [_line(7), "duplicate time point", "also on line 6", "already used on line 6"]


@case("validate", "nifti")
def path_outside_the_cohort(root: Path) -> list[str]:
    edit_rows(root, lambda rows: rows[2].update(path="../elsewhere/spect_4h.nii.gz"))
    return [_line(4), "'../elsewhere/spect_4h.nii.gz' leaves the cohort folder", "keep every image inside it"]


@case("validate", "nifti")
def absolute_path(root: Path) -> list[str]:
    edit_rows(root, lambda rows: rows[2].update(path=str(root / "P1" / "spect_4h.nii.gz")))
    return [_line(4), "is absolute", "write it relative to the cohort folder"]


@case("validate", "nifti")
def symlink_out_of_the_cohort(root: Path) -> list[str]:
    outside = root.parent / "outside"
    outside.mkdir()
    shutil.move(root / "P1" / "spect_4h.nii.gz", outside / "spect_4h.nii.gz")
    os.symlink(outside / "spect_4h.nii.gz", root / "P1" / "spect_4h.nii.gz")
    return [_line(4), "is a link to", "outside the cohort folder", "copy the image into the cohort"]


@case("validate", "nifti")
def time_points_not_increasing(root: Path) -> list[str]:
    def swap(rows: list[dict[str, str]]) -> None:
        rows[2]["time_h"], rows[4]["time_h"] = rows[4]["time_h"], rows[2]["time_h"]

    edit_rows(root, swap)
    return [_line(6), "is not later than", "check for swapped rows"]


@case("validate", "nifti")
def time_points_unsorted(root: Path) -> list[str]:
    def move(rows: list[dict[str, str]]) -> None:
        rows[2:4], rows[4:6] = rows[4:6], rows[2:4]

    edit_rows(root, move)
    return ["unsorted time points", "list time points in increasing order"]


@case("validate", "nifti")
def negative_activity(root: Path) -> list[str]:
    edit_rows(root, lambda rows: [r.update(injected_mbq="-7400") for r in rows if r["patient_id"] == "P1"])
    return [_line(2), "injected_mbq is -7400: must be > 0"]


@case("validate", "nifti")
def missing_timepoint_column(root: Path) -> list[str]:
    rows = rows_of(root)
    write_rows(root, rows, [c for c in rows[0] if c != "timepoint_h"])
    return [_line(1), "required column 'timepoint_h' is missing", "1 problem;"]


@case("validate", "nifti")
def default_key_at_the_top_of_cohort_yaml(root: Path) -> list[str]:
    (root / "cohort.yaml").write_text((root / "cohort.yaml").read_text() + "fwhm_mm: 10.5\n")
    return ["cohort.yaml", "'fwhm_mm' belongs under 'defaults:'"]


@case("validate", "dicom")
def patient_ids_disagree_with_the_headers(root: Path) -> list[str]:
    edit_dicom(root / "ct_24h", lambda ds: setattr(ds, "PatientID", "SOMEONE_ELSE"))
    return [_line(DICOM_LINES["ct_24h"]), "another DICOM PatientID", "check that the folder is this patient's"]


@case("validate", "dicom")
def two_patients_share_one_patients_images(root: Path) -> list[str]:
    def add(rows: list[dict[str, str]]) -> None:
        for r in rows[:2]:
            rows.append({**r, "patient_id": "P2", "path": r["path"] + "_copy"})

    shutil.copytree(root / "spect_4h", root / "spect_4h_copy")
    shutil.copytree(root / "ct_4h", root / "ct_4h_copy")
    edit_dicom(root / "spect_4h_copy", lambda ds: setattr(ds, "SeriesInstanceUID", pydicom.uid.generate_uid()))
    edit_dicom(root / "ct_4h_copy", lambda ds: setattr(ds, "SeriesInstanceUID", pydicom.uid.generate_uid()))
    edit_rows(root, add)
    return [_line(9), "DICOM PatientID of patient P1", "two manifest patients cannot share one patient's images"]


# ------------------------------------------------------------------------------------------------ NIfTI images


def _cut(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _rewrite_nifti(path: Path, array: np.ndarray, unit: str | None = None) -> None:
    spacing = sitk.ReadImage(str(path)).GetSpacing()
    if unit is None:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(path))
    else:
        write_nifti(Volume(array, tuple(reversed(spacing)), unit=unit), path)  # type: ignore[arg-type]


@case("validate", "nifti")
def truncated_nifti(root: Path) -> list[str]:
    path = root / "P1" / "spect_24h.nii.gz"
    _rewrite_nifti(path, np.random.default_rng(0).random((30, 30, 30)).astype(np.float32))
    _cut(path)
    return [_line(6), "spect_24h.nii.gz", "truncated", "copy or export it again"]


@case("validate", "nifti")
def corrupt_gzip(root: Path) -> list[str]:
    path = root / "P1" / "ct_4h.nii.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return [_line(5), "ct_4h.nii.gz", "copy or export it again"]


@case("validate", "nifti")
def empty_file(root: Path) -> list[str]:
    (root / "P1" / "ct_24h.nii.gz").write_bytes(b"")
    return [_line(7), "ct_24h.nii.gz", "copy or export it again"]


@case("validate", "nifti")
def text_file_named_nifti(root: Path) -> list[str]:
    (root / "P1" / "ct_24h.nii.gz").write_text("patient_id,cycle\nP1,1\n")
    return [_line(7), "ct_24h.nii.gz", "copy or export it again"]


@case("validate", "nifti")
def nan_in_spect(root: Path) -> list[str]:
    values = np.ones((3, 4, 5), dtype=np.float32)
    values[1, 1, 1] = np.nan
    _rewrite_nifti(root / "P1" / "spect_4h.nii.gz", values)
    return [_line(4), "spect_4h.nii.gz", "1 NaN and 0 infinite", "replace them in the export"]


@case("validate", "nifti")
def inf_in_ct(root: Path) -> list[str]:
    values = np.zeros((3, 4, 5), dtype=np.float32)
    values[0, 0, 0] = np.inf
    _rewrite_nifti(root / "P1" / "ct_24h.nii.gz", values)
    return [_line(7), "ct_24h.nii.gz", "0 NaN and 1 infinite"]


@case("validate", "nifti")
def all_zero_spect(root: Path) -> list[str]:
    _rewrite_nifti(root / "P1" / "spect_24h.nii.gz", np.zeros((3, 4, 5), dtype=np.float32))
    return [_line(6), "every voxel is zero", "wrong file?"]


@case("validate", "nifti")
def label_map_without_labels(root: Path) -> list[str]:
    _rewrite_nifti(root / "P1" / "mask_24h.nii.gz", np.zeros((3, 4, 5), dtype=np.float32))
    return [_line(10), "holds no labelled voxel", "check the file"]


@case("validate", "nifti")
def four_d_gated_nifti(root: Path) -> list[str]:
    image = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((3, 4, 5), dtype=np.float32))] * 8)  # 8 gates
    sitk.WriteImage(image, str(root / "P1" / "spect_4h.nii.gz"))
    return [_line(4), "image has 4 dimensions", "a 3-D volume is needed"]


@case("validate", "nifti")
def header_claiming_huge_slices(root: Path) -> list[str]:
    path = root / "P1" / "ct_4h.nii.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[42:48] = struct.pack("<3h", 512, 512, 32767)  # 8.6e9 voxels: refused before any memory is allocated
    path.write_bytes(gzip.compress(bytes(raw)))
    return [_line(5), "ct_4h.nii.gz", "voxels", "export the image again"]


@case("validate", "nifti")
def header_claiming_more_slices_than_stored(root: Path) -> list[str]:
    path = root / "P1" / "ct_4h.nii.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[46:48] = struct.pack("<h", 30000)  # 30000 slices announced, 3 stored
    path.write_bytes(gzip.compress(bytes(raw)))
    return [_line(5), "ct_4h.nii.gz", "header announces", "truncated"]


# ------------------------------------------------------------------------------------------------ DICOM images


def _nm(root: Path, folder: str = "spect_24h", **kwargs: object) -> None:
    for file in (root / folder).iterdir():
        file.unlink()
    kwargs.setdefault("rwvm", BQML)
    write_nm_multiframe(root / folder / "nm.dcm", np.full((4, 4, 4), 100, dtype=np.uint16), **kwargs)  # type: ignore[arg-type]
    _same_patient(root, folder)


def _same_patient(root: Path, folder: str) -> None:
    """Give a rewritten folder the DICOM PatientID of the cohort's other images (so only the case's fault shows)."""
    patient_id = pydicom.dcmread(sorted((root / "pet_ct").glob("*.dcm"))[0]).PatientID
    edit_dicom(root / folder, lambda ds: setattr(ds, "PatientID", patient_id))


@case("validate", "dicom")
def nm_without_geometry(root: Path) -> list[str]:
    _nm(root, position_xyz_mm=None)
    return [_line(DICOM_LINES["spect_24h"]), "nm.dcm", "ImagePositionPatient"]


@case("validate", "dicom")
def nm_counts_without_calibration(root: Path) -> list[str]:
    _nm(root, rwvm=None)
    return [_line(DICOM_LINES["spect_24h"]), "nm.dcm", "counts", "need calibration", "set acquisition_s"]


@case("validate", "dicom")
def nm_rwv_slope_zero(root: Path) -> list[str]:
    _nm(root, rwvm=("BQML", 0.0, 0.0))
    return [_line(DICOM_LINES["spect_24h"]), "nm.dcm", "RealWorldValueSlope (0040,9225)", "positive, finite slope"]


@case("validate", "dicom")
def nm_rwv_slope_negative(root: Path) -> list[str]:
    _nm(root, rwvm=("BQML", -2.0, 0.0))
    return [_line(DICOM_LINES["spect_24h"]), "nm.dcm", "RealWorldValueSlope (0040,9225)", "positive, finite slope"]


@case("validate", "dicom")
def nm_gated(root: Path) -> list[str]:
    _nm(root, image_type="RECON GATED TOMO")
    return [_line(DICOM_LINES["spect_24h"]), "nm.dcm", "GATED"]


@case("validate", "dicom")
def nm_header_claiming_100000_frames(root: Path) -> list[str]:
    edit_dicom(root / "spect_24h", lambda ds: setattr(ds, "NumberOfFrames", 100000))
    return [_line(DICOM_LINES["spect_24h"]), "nm.dcm", "100000", "truncated"]


@case("validate", "dicom")
def nm_truncated(root: Path) -> list[str]:
    _cut(root / "spect_4h" / "nm.dcm", 0.8)
    return [_line(DICOM_LINES["spect_4h"]), "nm.dcm", "truncated"]


def _ct(root: Path, folder: str = "ct_24h", **kwargs: object) -> list[Path]:
    for file in (root / folder).iterdir():
        file.unlink()
    extra = {"FrameOfReferenceUID": CT_FRAME, **kwargs.pop("extra", {})}  # type: ignore[dict-item]
    files = write_image_series(root / folder, np.zeros((5, 4, 4), dtype=np.int16), extra=extra, **kwargs)  # type: ignore[arg-type]
    _same_patient(root, folder)
    return files


@case("validate", "dicom")
def mixed_series_in_one_folder(root: Path) -> list[str]:
    write_image_series(root / "ct_24h", np.zeros((3, 4, 4), dtype=np.int16), prefix="other")
    _same_patient(root, "ct_24h")
    return [_line(DICOM_LINES["ct_24h"]), "mixed in one folder"]


@case("validate", "dicom")
def duplicate_slice(root: Path) -> list[str]:
    _ct(root, duplicate=[2])
    return [_line(DICOM_LINES["ct_24h"]), "ct_24h", "duplicate"]


@case("validate", "dicom")
def missing_slice(root: Path) -> list[str]:
    _ct(root, skip=[2])
    return [_line(DICOM_LINES["ct_24h"]), "slice(s) missing"]


@case("validate", "dicom")
def non_uniform_slice_spacing(root: Path) -> list[str]:
    files = _ct(root, shuffle=False)
    ds = pydicom.dcmread(files[-1])
    ds.ImagePositionPatient = [0.0, 0.0, float(ds.ImagePositionPatient[2]) + 0.7]
    ds.save_as(files[-1])
    return [_line(DICOM_LINES["ct_24h"]), "ct_24h"]


@case("validate", "dicom")
def empty_orientation(root: Path) -> list[str]:
    edit_dicom(root / "ct_24h", lambda ds: setattr(ds, "ImageOrientationPatient", None))
    return [_line(DICOM_LINES["ct_24h"]), "ImageOrientationPatient"]


@case("validate", "dicom")
def ct_truncated_slice(root: Path) -> list[str]:
    _cut(sorted((root / "ct_4h").glob("*.dcm"))[2], 0.7)
    return [_line(DICOM_LINES["ct_4h"]), "truncated"]


@case("validate", "dicom")
def ct_wrong_rescale(root: Path) -> list[str]:
    edit_dicom(root / "ct_24h", lambda ds: setattr(ds, "RescaleSlope", 0))
    return [_line(DICOM_LINES["ct_24h"]), "RescaleSlope 0", "re-export the CT"]


@case("validate", "dicom")
def ct_not_in_hounsfield_units(root: Path) -> list[str]:
    edit_dicom(root / "ct_24h", lambda ds: setattr(ds, "RescaleType", "OD"))
    return [_line(DICOM_LINES["ct_24h"]), "RescaleType 'OD' is not Hounsfield units"]


def _pet_edit(root: Path, edit: Callable[[pydicom.Dataset], None]) -> None:
    edit_dicom(root / "pet", edit)


@case("validate", "dicom")
def pet_without_dose(root: Path) -> list[str]:
    _pet_edit(root, lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideTotalDose"))
    return [_line(DICOM_LINES["pet"]), "RadionuclideTotalDose (0018,1074)"]


@case("validate", "dicom")
def pet_without_injection_time(root: Path) -> list[str]:
    def edit(ds: pydicom.Dataset) -> None:
        item = ds.RadiopharmaceuticalInformationSequence[0]
        for key in ("RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime"):
            if key in item:
                delattr(item, key)

    _pet_edit(root, edit)
    return [_line(DICOM_LINES["pet"]), "pet"]


@case("validate", "dicom")
def pet_decay_correction_none_without_frame_time(root: Path) -> list[str]:
    def edit(ds: pydicom.Dataset) -> None:
        ds.DecayCorrection = "NONE"
        ds.CorrectedImage = [v for v in ds.CorrectedImage if v != "DECY"]
        for key in ("AcquisitionTime", "FrameReferenceTime"):
            if key in ds:
                delattr(ds, key)

    _pet_edit(root, edit)
    return [_line(DICOM_LINES["pet"]), "DecayCorrection NONE needs each slice's AcquisitionTime"]


@case("validate", "dicom")
def pet_unknown_suv_units(root: Path) -> list[str]:
    _pet_edit(root, lambda ds: setattr(ds, "Units", "PROPCPS"))
    return [_line(DICOM_LINES["pet"]), "PET Units 'PROPCPS' cannot be converted to SUVbw"]


@case("validate", "dicom")
def label_map_on_another_frame_of_reference(root: Path) -> list[str]:
    square = np.array([[0.0, 0.0, 4.0], [2.0, 0.0, 4.0], [2.0, 2.0, 4.0], [0.0, 2.0, 4.0]])
    write_rtstruct(root / "rs" / "rs.dcm", {"liver": [square]}, frame_of_reference_uid="1.2.3.999")
    _same_patient(root, "rs")
    return [_line(DICOM_LINES["mask"]), "rs.dcm", "frame of reference 1.2.3.999", "register the images"]


@case("validate", "dicom")
def rtstruct_contours_off_the_image(root: Path) -> list[str]:
    far = np.array([[500.0, 500.0, 4.0], [520.0, 500.0, 4.0], [520.0, 520.0, 4.0], [500.0, 520.0, 4.0]])
    write_rtstruct(root / "rs" / "rs.dcm", {"liver": [far]}, frame_of_reference_uid=CT_FRAME)
    _same_patient(root, "rs")
    return [_line(DICOM_LINES["mask"]), "rs.dcm", "lie outside the image", "belongs to this image"]


@case("validate", "dicom")
def seg_with_overlapping_segments(root: Path) -> list[str]:
    from ludl.io.seg import write_seg

    labels = np.zeros((5, 4, 4), dtype=np.int16)
    labels[2, :2, :] = 1
    labels[2, 2:, :] = 2  # both segments on the same plane
    ct_files = sorted((root / "ct_24h").glob("*.dcm"))
    seg = root / "rs" / "seg.dcm"
    (root / "rs" / "rs.dcm").unlink()
    write_seg(Volume(labels, (2.0, 1.0, 1.0), unit="label"), seg, ct_files, {"liver": 1, "spleen": 2})
    ds = pydicom.dcmread(seg)
    ds.PixelData = b"\xff" * len(ds.PixelData)  # every frame of every segment full: segments 1 and 2 overlap
    ds.PatientID = pydicom.dcmread(ct_files[0]).PatientID
    ds.save_as(seg)
    edit_rows(root, lambda rows: rows[DICOM_LINES["mask"] - 2].update(path="rs/seg.dcm"))
    return [_line(DICOM_LINES["mask"]), "seg.dcm", "overlapping segments are not supported"]


# ------------------------------------------------------------------------------------------------ the pipelines


def _runnable_spect(root: Path) -> Path:
    return root / "images" / "spect_24h.nii.gz"


@case("dosimetry", "runnable")
def dosimetry_truncated_spect(root: Path) -> list[str]:
    _cut(_runnable_spect(root))
    return ["ludl dosimetry:", "spect_24h.nii.gz", "truncated", "copy or export it again"]


@case("dosimetry", "runnable")
def dosimetry_nan_in_spect(root: Path) -> list[str]:
    path = _runnable_spect(root)
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    volume[0, 0, 0] = np.nan
    image = sitk.GetImageFromArray(volume)
    image.CopyInformation(sitk.ReadImage(str(path)))
    sitk.WriteImage(image, str(path))
    return ["ludl dosimetry:", "spect_24h.nii.gz", "1 NaN", "replace them in the export"]


@case("dosimetry", "runnable")
def dosimetry_missing_image(root: Path) -> list[str]:
    (root / "images" / "ct_24h.nii.gz").unlink()
    return ["ludl dosimetry:", "ct_24h.nii.gz", "manifest.csv line 5"]


@case("dosimetry", "runnable")
def dosimetry_negative_activity(root: Path) -> list[str]:
    edit_rows(root, lambda rows: [r.update(injected_mbq="-7400") for r in rows])
    return ["ludl dosimetry:", "manifest.csv:2", "injected_mbq is -7400: must be > 0"]


@case("dosimetry", "runnable")
def dosimetry_symlink_out_of_the_cohort(root: Path) -> list[str]:
    outside = root.parent / "outside.nii.gz"
    shutil.move(_runnable_spect(root), outside)
    os.symlink(outside, _runnable_spect(root))
    return ["ludl dosimetry:", "spect_24h.nii.gz", "outside the cohort folder", "copy the image into the cohort"]


@case("prepare", "runnable")
def prepare_truncated_spect(root: Path) -> list[str]:
    _cut(_runnable_spect(root))
    return ["FAILED P01_c1", "spect_24h.nii.gz", "truncated"]


@case("prepare", "runnable")
def prepare_nan_in_ct(root: Path) -> list[str]:
    path = root / "images" / "ct_4h.nii.gz"
    image = sitk.ReadImage(str(path))
    values = sitk.GetArrayFromImage(image)
    values[1, 1, 1] = np.inf
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return ["FAILED P01_c1", "ct_4h.nii.gz", "1 infinite"]


# ------------------------------------------------------------------------------------------------ running them


@pytest.fixture(scope="module")
def runnable_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The analytic one-patient cohort `ludl dosimetry` runs on (tests.dosimetry.cohort_factory), written once."""
    from tests.dosimetry import cohort_factory as cf

    return cf.write_cohort(tmp_path_factory.mktemp("runnable"), cf.CohortSpec())


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def _results(out: Path) -> list[str]:
    """Files under `out` other than Hydra's run record (``.ludl/``) and prepare's failure report (with the folder's
    owner record, ``provenance.json``, that says whose report it is)."""
    if not out.exists():
        return []
    keep = {"prepare_summary.json"} | ({"provenance.json"} if (out / "prepare_summary.json").exists() else set())
    return [
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and ".ludl" not in p.relative_to(out).parts and p.name not in keep
    ]


def _build(base: str, root: Path, runnable: Path) -> Path:
    if base == "nifti":
        return nifti_cohort(root)
    if base == "dicom":
        return dicom_cohort(root)
    return Path(shutil.copytree(runnable, root))


@pytest.mark.parametrize("bad", CASES, ids=lambda c: c.name)
def test_bad_input_ends_in_a_clear_error_and_no_output(
    bad: Case, tmp_path: Path, runnable_cohort: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort = _build(bad.base, tmp_path / "cohort", runnable_cohort)
    expected = bad.breaks(cohort)
    before = _tree(cohort)
    out = tmp_path / "out"
    args = {
        "validate": ["validate", f"cohort={cohort}"],
        "dosimetry": ["dosimetry", f"cohort={cohort}", "patient=P01", "cycle=1", f"out={out}"],
        "prepare": ["prepare", f"cohort={cohort}", f"out={out}", "workers=1"],
    }[bad.job]
    code = _run(args)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code != 0, text
    missing = [e for e in expected if e not in text]
    assert "SOMEONE_ELSE" not in text  # a DICOM PatientID is never printed
    assert not missing, f"{missing} not in:\n{text}"
    assert "Traceback" not in text
    assert _tree(cohort) == before, "the cohort folder was changed"
    assert _results(out) == [], f"partial output: {_results(out)}"


@pytest.mark.parametrize("base", ["nifti", "dicom"])
def test_the_clean_cohorts_pass(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = _build(base, tmp_path / "cohort", tmp_path)
    assert _run(["validate", f"cohort={cohort}"]) == 0, capsys.readouterr().out


def test_the_corpus_covers_at_least_40_bad_inputs() -> None:
    assert len(CASES) + len(EXTRA_CASES) >= 40


# Cases outside the cohort commands (counted with the corpus): see test_cli_and_artifacts.py.
EXTRA_CASES = (
    "typo_plus_n_patient",
    "cycle_not_a_number",
    "prepared_case_of_another_version",
    "checkpoint_truncated",
    "checkpoint_of_another_version",
    "checkpoint_pickle_with_code",
)


def test_prepare_writes_no_splits_when_every_case_failed(
    tmp_path: Path, runnable_cohort: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort = _build("runnable", tmp_path / "cohort", runnable_cohort)
    _cut(_runnable_spect(cohort))
    assert _run(["prepare", f"cohort={cohort}", f"out={tmp_path / 'out'}", "workers=1"]) != 0
    capsys.readouterr()
    assert not (tmp_path / "out" / "splits.json").exists()
