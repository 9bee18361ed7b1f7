"""PET SUV reader against the IBSI/OncoRay SUV digital reference objects, and its errors on bad input."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ludl.errors import DicomError, UnitsError
from ludl.imaging.volume import Volume
from ludl.io.pet import read_pet, read_pet_bqml
from tests.conftest import require_testdata

SUV_DRO = Path(__file__).resolve().parents[1] / "data" / "suv_dro"  # vendored: tests/data/README.md


def _dro_rows() -> list[dict[str, str]]:
    # Read at collection: a missing table is a collection error, so the data set can never drop out silently.
    with open(SUV_DRO / "DRO_list.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"no objects listed in {SUV_DRO / 'DRO_list.csv'}"
    return rows


def _mask_on(volume: Volume, mask_path: Path) -> np.ndarray:
    import SimpleITK as sitk

    mask = Volume.from_sitk(sitk.ReadImage(str(mask_path)), unit="mask")
    if not mask.same_grid(volume):  # align by geometry, never by array position alone
        from ludl.imaging.resample import resample_to

        mask = resample_to(mask, volume, kind="nearest")
    return np.asarray(mask.array) > 0


def _copy_pt(dro: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(require_testdata("suv_dro", dro, "PT"), tmp_path / dro))


def _edit_all(folder: Path, edit: object) -> None:
    for file in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(file)
        edit(ds)  # type: ignore[operator]
        ds.save_as(file)


@pytest.mark.parametrize("row", _dro_rows(), ids=lambda r: r["ID"])
def test_every_suv_dro_gives_the_published_statistics(row: dict[str, str]) -> None:
    folder = require_testdata("suv_dro", row["ID"])
    suv = read_pet(folder / "PT")
    assert suv.unit == "SUV"
    inside = suv.array[_mask_on(suv, folder / "mask" / "DRO_mask.nii.gz")]
    assert inside.size > 1000
    # The DROs store integers (SUV 0.2 ≈ 700 stored units, floored): one unit is ≈ 1.4e-3 of SUVmin.
    assert float(inside.min()) == pytest.approx(float(row["SUVmin_expected"]), rel=2e-3)
    assert float(np.median(inside)) == pytest.approx(float(row["SUVmed_expected"]), rel=1e-3)
    assert float(inside.max()) == pytest.approx(float(row["SUVmax_expected"]), rel=1e-3)


def test_dose_in_mbq_and_time_rules_are_recorded() -> None:
    require_testdata("suv_dro")
    assert read_pet(SUV_DRO / "DRO_3_0" / "PT").meta["dose_read_as_mbq"] is True
    assert "midnight" in read_pet(SUV_DRO / "DRO_4_2" / "PT").meta["injection_time_rule"]
    assert "back-computation" in read_pet(SUV_DRO / "DRO_3_2" / "PT").meta["scan_time_rule"]


def test_bqml_is_the_stored_concentration() -> None:
    require_testdata("suv_dro")
    volume = read_pet_bqml(SUV_DRO / "DRO_1_0" / "PT")
    ds = pydicom.dcmread(sorted((SUV_DRO / "DRO_1_0" / "PT").glob("*.dcm"))[9])
    z = round(volume.physical_to_index([float(v) for v in ds.ImagePositionPatient])[0])
    # Per-slice RescaleSlope (3 here, 4 elsewhere) must be applied slice by slice.
    np.testing.assert_allclose(volume.array[z], ds.pixel_array * float(ds.RescaleSlope), rtol=1e-6)
    assert volume.unit == "Bq/mL"


def test_gml_converts_back_to_bqml() -> None:
    require_testdata("suv_dro")
    bqml_from_gml = read_pet_bqml(SUV_DRO / "DRO_2_0" / "PT")
    bqml = read_pet_bqml(SUV_DRO / "DRO_0_0" / "PT")
    # Same phantom stored once as Bq/mL and once as SUVbw: converting back must agree to storage precision.
    np.testing.assert_allclose(bqml_from_gml.array, bqml.array, rtol=2e-3, atol=2.0)


def test_missing_patient_weight_names_the_file(tmp_path: Path) -> None:
    folder = _copy_pt("DRO_0_0", tmp_path)
    _edit_all(folder, lambda ds: delattr(ds, "PatientWeight"))
    with pytest.raises(DicomError, match=r"pet_dro_0_0_slice_\d+\.dcm: PatientWeight"):
        read_pet(folder)
    # The manifest's weight_kg overrides the header: same SUV as the untouched object.
    suv = read_pet(folder, weight_kg=70.0)
    assert float(suv.array.max()) == pytest.approx(4.0, rel=1e-3)


def test_missing_injected_dose_names_the_file(tmp_path: Path) -> None:
    folder = _copy_pt("DRO_0_0", tmp_path)
    _edit_all(folder, lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideTotalDose"))
    with pytest.raises(DicomError, match=r"pet_dro_0_0_slice_\d+\.dcm: RadionuclideTotalDose"):
        read_pet(folder)
    assert float(read_pet(folder, injected_mbq=368.08).array.max()) == pytest.approx(4.0, rel=1e-3)


def test_injection_datetime_override_changes_the_decay(tmp_path: Path) -> None:
    require_testdata("suv_dro")
    # Injected one F-18 half-life (6586.2 s) earlier than the header says: the decayed dose halves, SUV doubles.
    header_time = dt.datetime(2025, 1, 1, 10, 0, 0)
    earlier = header_time - dt.timedelta(seconds=6586.2)
    suv = read_pet(SUV_DRO / "DRO_0_0" / "PT", injection_datetime=earlier)
    assert float(suv.array.max()) == pytest.approx(8.0, rel=1e-3)


@pytest.mark.parametrize("units", ["PROPCPS", "CPS", ""])
def test_unknown_units_raise_units_error(tmp_path: Path, units: str) -> None:
    folder = _copy_pt("DRO_0_0", tmp_path)

    def edit(ds: pydicom.Dataset) -> None:
        ds.Units = units

    _edit_all(folder, edit)
    with pytest.raises(UnitsError, match="pet_dro_0_0_slice"):
        read_pet(folder)


def test_cnts_without_philips_factors_is_refused(tmp_path: Path) -> None:
    folder = _copy_pt("DRO_2_4", tmp_path)
    _edit_all(folder, lambda ds: ds.__delitem__((0x7053, 0x1000)))
    with pytest.raises(UnitsError, match="7053,1000"):
        read_pet(folder)


def test_missing_slice_and_mixed_series_are_refused(tmp_path: Path) -> None:
    folder = _copy_pt("DRO_0_0", tmp_path)
    (folder / "pet_dro_0_0_slice_007.dcm").unlink()
    with pytest.raises(DicomError, match=r"slice_006\.dcm → .*slice_008\.dcm: gap of 8\.000 mm"):
        read_pet(folder)
    mixed = _copy_pt("DRO_1_0", tmp_path / "mixed")
    shutil.copy(SUV_DRO / "DRO_0_0" / "PT" / "pet_dro_0_0_slice_003.dcm", mixed / "other_series.dcm")
    with pytest.raises(DicomError, match="2 PT series mixed in one folder"):
        read_pet(mixed)
