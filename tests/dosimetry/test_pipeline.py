"""run_dosimetry end to end on tiny analytic cohorts, scored against the exact dose of the analytic TIA."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import DosimetryResult, run_dosimetry
from ludl.errors import FitError, InputError, LudlError, ManifestError
from ludl.io.nifti import read_nifti
from ludl.io.rtdose import read_rtdose
from ludl.physics.dose import density_from_hu, ldm_dose, voxel_tia_mbq_h
from tests.dosimetry import cohort_factory as cf
from tests.dosimetry.conftest import truth_mask

Run = Callable[..., DosimetryResult]
SCORED = ("kidney_left", "kidney_right", "liver", "spleen", "lesion_001", "lesion_002")


def _errors(result: DosimetryResult, dose: npt.NDArray[np.float64], column: str = "mean_dose_gy") -> dict[str, float]:
    """Relative error of each scored region's mean dose against the exact dose inside the analytic region."""
    return {name: result.region(name)[column] / float(dose[truth_mask(result, name)].mean()) - 1.0 for name in SCORED}


@pytest.mark.parametrize("tia_mode", ["voxel", "region"])
def test_exact_data_give_the_exact_dose(
    exact_cohort: Path, run_cached: Run, true_dose: npt.NDArray[np.float64], tia_mode: str
) -> None:
    # Shifted poses, two beds acquired 1 h apart at two time points: ignoring either would cost ≳ 1 %.
    result = run_cached(exact_cohort, tia_mode=tia_mode, pvc="none")
    errors = _errors(result, true_dose)
    assert max(abs(e) for e in errors.values()) < 0.005, errors


def test_ldm_option_gives_local_deposition_of_the_exact_tia(exact_cohort: Path, run_cached: Run) -> None:
    result = run_cached(exact_cohort, dose_method="ldm", pvc="none")
    spacing = (cf.SPACING_MM,) * 3
    expected = ldm_dose(voxel_tia_mbq_h(cf.true_tia_map(), spacing), spacing, density_from_hu(cf.ct_hu()))
    for name in ("kidney_left", "liver", "lesion_001"):
        truth = float(np.asarray(expected)[truth_mask(result, name)].mean())
        assert result.region(name)["mean_dose_gy"] == pytest.approx(truth, rel=0.005)


@pytest.mark.parametrize(("tia_mode", "pvc"), [("voxel", "rc"), ("region", "gtm")])
def test_partial_volume_correction_brings_blurred_doses_to_the_truth(
    blurred_cohort: Path, run_cached: Run, true_dose: npt.NDArray[np.float64], tia_mode: str, pvc: str
) -> None:
    result = run_cached(blurred_cohort, tia_mode=tia_mode, pvc=pvc)
    corrected = _errors(result, true_dose, "mean_dose_gy")
    raw = _errors(result, true_dose, "mean_dose_uncorrected_gy")
    for name in SCORED:
        assert abs(corrected[name]) < 0.5 * abs(raw[name]), (name, corrected[name], raw[name])
    # A 4 mL lesion reads ≈ 45 % low at 10 mm FWHM without correction (docs/synthetic-cohort.md: RC ≈ 0.5).
    assert min(raw.values()) < -0.3
    organs = [corrected[n] for n in SCORED if not n.startswith("lesion")]
    lesions = [corrected[n] for n in SCORED if n.startswith("lesion")]
    assert max(abs(e) for e in organs) < 0.08, corrected
    assert max(abs(e) for e in lesions) < 0.10, corrected


def test_outputs_are_written_and_consistent(exact_cohort: Path, run_cached: Run) -> None:
    result = run_cached(exact_cohort, tia_mode="voxel", pvc="none")
    names = {p.name for p in result.files.values()}
    assert names == {
        "dose_gy.nii.gz",
        "tia_mbq_h_per_ml.nii.gz",
        "dose_rtdose.dcm",
        "regions.csv",
        "registration.csv",
        "dvh.png",
        "summary.html",
        "summary.pdf",
    }
    dose = read_nifti(result.files["dose_nifti"])
    assert dose.unit == "Gy"
    np.testing.assert_allclose(dose.array, result.dose.array)
    tia = read_nifti(result.files["tia_nifti"])
    assert tia.unit == "MBq*h/mL"
    # The TIA map integrates to the analytic total TIA of the patient.
    total = float(np.sum(tia.array, dtype=np.float64)) * tia.voxel_volume_ml
    assert total == pytest.approx(float(cf.true_tia_map().sum()) * tia.voxel_volume_ml, rel=0.005)
    rt = read_rtdose(result.files["rtdose"])
    np.testing.assert_allclose(rt.array, dose.array, atol=float(dose.array.max()) * 1e-6)
    with open(result.files["regions_csv"], encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {"region", "kind", "volume_ml", "mean_dose_gy"} <= set(rows[0])
    kidney = next(r for r in rows if r["region"] == "kidney_left")
    assert float(kidney["mean_dose_gy"]) == pytest.approx(result.region("kidney_left")["mean_dose_gy"], rel=1e-5)
    assert float(kidney["bed_gy"]) > float(kidney["mean_dose_gy"])  # BED > D for any finite repair
    assert result.files["dvh_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = result.files["summary_html"].read_text()
    text = re.sub(r"data:[a-z/+]+;base64,[A-Za-z0-9+/=]+", "", html)  # embedded images may spell anything
    assert "kidney_left" in text and "P01" not in text  # de-identified
    assert all("P01" not in p.name for p in result.files.values())
    screen = result.format()
    assert "kidney_left" in screen and len(screen.splitlines()) < 40
    with open(result.files["registration_csv"], encoding="utf-8") as fh:
        reg_rows = list(csv.DictReader(fh))
    assert [float(r["timepoint_h"]) for r in reg_rows] == list(cf.TIMES_H)
    assert all(float(r["mean_abs_diff_hu"]) < 20.0 for r in reg_rows)  # residual reported, small for rigid motion
    # Registration recovered every pose within one voxel (reference first at 24 h).
    for reg, shift in zip(result.registrations, cf.SHIFTS_MM, strict=True):
        assert np.allclose(reg.translation_mm, shift, atol=cf.SPACING_MM)


def test_fewer_time_points_than_the_model_needs(tmp_path: Path) -> None:
    cohort = cf.write_cohort(tmp_path / "c", cf.CohortSpec(timepoint_indices=(1, 2, 4)))
    with pytest.raises(FitError, match=r"3 SPECT time point.*'biexp_uptake' needs at least 4") as info:
        run_dosimetry(cohort, "P01", 1, tmp_path / "out", DosimetryOptions(model="biexp_uptake"))
    assert "manifest.csv" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unknown_patient_and_cycle_name_what_exists(exact_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"patient 'P99' is not in .*manifest.csv; patients: P01"):
        run_dosimetry(exact_cohort, "P99", 1, tmp_path)
    with pytest.raises(ManifestError, match=r"no cycle 2 .*cycles: 1"):
        run_dosimetry(exact_cohort, "P01", 2, tmp_path)


def test_bad_options_are_refused_before_any_work(exact_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="pvc='psf'"):
        run_dosimetry(exact_cohort, "P01", 1, tmp_path, DosimetryOptions(pvc="psf"))
    with pytest.raises(InputError, match="reference_timepoint=12"):
        run_dosimetry(exact_cohort, "P01", 1, tmp_path, DosimetryOptions(reference_timepoint=12.0))


@pytest.mark.parametrize("bad", ["noise", "empty"])
def test_a_ct_that_cannot_be_registered_names_its_file_and_line(tmp_path: Path, bad: str) -> None:
    cohort = cf.write_cohort(tmp_path / "c", cf.CohortSpec(timepoint_indices=(0, 1, 2), bad_ct_at=0, bad_ct=bad))
    with pytest.raises(LudlError, match=r"ct 'images/ct_4h.nii.gz' \(manifest.csv line 3\) cannot be registered"):
        run_dosimetry(cohort, "P01", 1, tmp_path / "out", DosimetryOptions(model="mono"))


def test_lesion_outside_the_field_of_view_at_one_time_point_is_not_scored(
    tmp_path: Path, kernel_cache: Path, true_dose: npt.NDArray[np.float64]
) -> None:
    # At 168 h the SPECT covers only x ≥ −7 mm: lesion_b (x ≤ −10 mm) leaves the field of view, lesion_a stays.
    cohort = cf.write_cohort(tmp_path / "c", cf.CohortSpec(crop_x_from=(4, 28)))
    result = run_dosimetry(
        cohort, "P01", 1, tmp_path / "out", DosimetryOptions(pvc="none", kernel_cache_dir=kernel_cache)
    )
    names = cf.lesion_names_by_truth(result.regions_map.labels, result.regions_map.values)
    by_truth = {truth: result.region(name) for name, truth in names.items()}
    assert by_truth["lesion_b"]["scored"] is False and by_truth["lesion_b"]["in_fov_fraction"] < 0.95
    assert np.isnan(by_truth["lesion_b"]["mean_dose_gy"])
    assert by_truth["lesion_a"]["scored"] is True and by_truth["lesion_a"]["in_fov_fraction"] == 1.0
    assert result.whole_body_tumour_dose_gy == pytest.approx(by_truth["lesion_a"]["mean_dose_gy"])
    # The per-time-point GTM cannot correct a curve with a missing point; it says so and corrects the TIA-map mean.
    gtm = run_dosimetry(cohort, "P01", 1, tmp_path / "gtm", DosimetryOptions(pvc="gtm", kernel_cache_dir=kernel_cache))
    names_inv = {truth: name for name, truth in names.items()}
    lesion_b = names_inv["lesion_b"]
    assert any(note.startswith(f"region {lesion_b}: partly outside the field of view") for note in gtm.notes)
    assert not any(note.startswith(f"region {names_inv['lesion_a']}: partly") for note in gtm.notes)
    # Liver voxels missing the 168 h scan are fitted to the four points that cover them: still exact on exact data.
    liver = float(true_dose[truth_mask(result, "liver")].mean())
    assert result.region("liver")["mean_dose_gy"] == pytest.approx(liver, rel=0.005)


def test_another_reference_time_point_gives_the_same_region_doses(exact_cohort: Path, run_cached: Run) -> None:
    # With 4 h as reference, SPECTs and the 24 h label map are moved into the 4 h pose: same anatomy, same doses.
    default = run_cached(exact_cohort, tia_mode="voxel", pvc="none")
    moved = run_cached(exact_cohort, tia_mode="voxel", pvc="none", reference_timepoint=4.0)
    assert moved.registrations[0].is_reference and moved.settings["reference_timepoint_h"] == 4.0
    for row in default.regions:
        other = moved.region(row["region"])
        assert other["volume_ml"] == pytest.approx(row["volume_ml"], rel=0.01)
        assert other["mean_dose_gy"] == pytest.approx(row["mean_dose_gy"], rel=0.01)


def test_corrected_doses_carry_the_corrected_neighbours_cross_dose() -> None:
    # A hot slab beside a cold one: correcting only the hot slab's TIA (×2) must double its self-dose and the
    # cross-dose it gives the cold slab, which a per-region factor on the cold slab's own dose cannot do.
    from ludl.dosimetry.dose import corrected_region_doses, dose_map_gy
    from ludl.dosimetry.regions import RegionSet

    labels = np.zeros((12, 12, 24), dtype=np.int32)
    labels[:, :, :12] = 1
    labels[:, :, 12:] = 2
    regions = RegionSet(labels=labels, values={"hot": 1, "cold": 2}, kinds={"hot": "organ", "cold": "organ"})
    tia = np.where(labels == 1, 5.0, 0.0)
    density = np.ones(labels.shape)
    spacing = (4.0, 4.0, 4.0)
    observed = dose_map_gy(tia, density, spacing, "dvk", None)
    corrected = corrected_region_doses(tia, regions, {"hot": 2.0}, density, spacing, "dvk", None)
    assert set(corrected) == {"hot"}  # no factor, no corrected value: the cold slab keeps its observed dose
    assert corrected["hot"] == pytest.approx(2.0 * observed[labels == 1].mean(), rel=1e-9)
    both = corrected_region_doses(tia, regions, {"hot": 2.0, "cold": 1.0}, density, spacing, "dvk", None)
    cold_observed = observed[labels == 2].mean()
    assert cold_observed > 0
    assert both["cold"] == pytest.approx(2.0 * cold_observed, rel=1e-6)


def test_measured_resolution_is_used_and_the_estimate_reported(tmp_path: Path, kernel_cache: Path) -> None:
    # True PSF 13 mm, nominal 10 mm (30 % too small): the estimate sees it, warns, and a measured FWHM is used.
    import dataclasses

    from ludl.io.cohort import MeasuredResolution, ResolutionConfig, load_cohort_config, write_cohort_config

    spec = cf.CohortSpec(fwhm_true_mm=13.0, fwhm_nominal_mm=10.0, noise_cv=0.05, timepoint_indices=(0, 1, 2))
    cohort = cf.write_cohort(tmp_path / "c", spec)
    options = DosimetryOptions(kernel_cache_dir=kernel_cache, tia_mode="region")
    nominal = run_dosimetry(cohort, "P01", 1, tmp_path / "nominal", options)
    estimated = float(nominal.settings["fwhm_estimated_mm"])
    assert estimated == pytest.approx(13.0, rel=0.10)
    assert nominal.settings["resolution"] == "nominal" and nominal.settings["fwhm_used_mm"] == 10.0
    assert any("differs from the nominal" in n for n in nominal.notes)
    config = load_cohort_config(cohort)
    measured = ResolutionConfig(measured=MeasuredResolution(fwhm_mm=13.0))
    write_cohort_config(dataclasses.replace(config, resolution=measured), cohort)
    result = run_dosimetry(cohort, "P01", 1, tmp_path / "measured", options)
    assert result.settings["resolution"] == "measured_fwhm" and result.settings["fwhm_used_mm"] == 13.0
    with open(result.files["regions_csv"], encoding="utf-8") as fh:
        rows = {r["region"]: r for r in csv.DictReader(fh)}
    assert rows["kidney_left"]["resolution"] == "measured_fwhm"
    assert float(rows["kidney_left"]["fwhm_used_mm"]) == 13.0
    # The matching FWHM corrects the small lesion better than the nominal one.
    lesion = next(n for n in rows if n.startswith("lesion"))
    assert result.region(lesion)["mean_dose_gy"] > nominal.region(lesion)["mean_dose_gy"]
