"""No shortcuts (docs/synthetic-cohort.md): no generator variable is recoverable from tags, names, ordering or metadata.

Generator variables: the shared patient factor, region T_eff, true dose and the response. What a method sees:
file names, NIfTI headers, manifest cells and row order, patient and lesion numbering. Physics may carry them
(a slow washout shows as more activity at late scans, and so in the dead-time factor): that is allowed.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ludl.synth.cohort import SynthSummary, run_synth


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def big_cohort(clinical_cohort: tuple[Path, SynthSummary]) -> Path:
    return clinical_cohort[0]


@pytest.fixture(scope="module")
def image_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaks_images") / "cohort"
    run_synth("tiny", 3, 78, out, images=True, workers=2, overrides={"image_format": "dicom"})
    return out


def test_patient_numbering_carries_no_generator_variable(big_cohort: Path) -> None:
    latent = _read(big_cohort / "truth" / "patients.csv")
    index = np.arange(len(latent))
    z = np.array([float(r["t_eff_patient_z"]) for r in latent])
    response = _read(big_cohort / "truth" / "response.csv")
    # |Spearman ρ| of independent draws over 300 patients: SD ≈ 0.058; 0.2 is > 3 SD.
    assert abs(stats.spearmanr(index, z).statistic) < 0.2
    for key in ("p_true", "p_observable"):
        p = np.array([float(r[key]) for r in response])
        assert abs(stats.spearmanr(index, p).statistic) < 0.2, key
    # v2 hidden variables: diffuse marrow involvement and the tumour burden behind the sink.
    for key in ("diffuse_marrow", "tumour_volume_ml"):
        x = np.array([float(r[key]) for r in latent])
        assert abs(stats.spearmanr(index, x).statistic) < 0.2, key


def test_lesion_numbering_is_uncorrelated_with_size_and_dose(big_cohort: Path) -> None:
    rows = [r for r in _read(big_cohort / "truth" / "regions.csv") if r["cycle"] == "1" and r["kind"] == "lesion"]
    by_patient: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(
            (int(r["region"][7:]), float(r["volume_ml"]), float(r["mean_dose_gy"]), float(r["t_eff_h"]))
        )
    # Rank of the lesion number within its patient against the rank of its volume, dose and T_eff.
    rho = {"volume": [], "dose": [], "t_eff": []}
    for lesions in by_patient.values():
        if len(lesions) < 5:
            continue
        arr = np.array(lesions)
        for k, name in enumerate(("volume", "dose", "t_eff"), start=1):
            rho[name].append(stats.spearmanr(arr[:, 0], arr[:, k]).statistic)
    for name, values in rho.items():
        values_arr = np.array(values)
        # The mean within-patient ρ over ≈ 200 patients with ≥ 5 lesions: SD ≈ 0.3 / √200 ≈ 0.02 under no association.
        assert abs(np.nanmean(values_arr)) < 0.08, name


def test_file_names_carry_only_role_and_nominal_time(image_cohort: Path) -> None:
    allowed = re.compile(
        r"^(spect_\d+h(_bed\d)?|ct_\d+h|pet|pet_ct|labels_\d+h)\.nii\.gz$|^spect_\d+h(_bed\d)?/nm\.dcm$"
    )
    for path in image_cohort.rglob("*"):
        if not path.is_file() or "truth" in path.parts:
            continue
        rel = path.relative_to(image_cohort)
        if len(rel.parts) == 1:
            assert rel.name in {"cohort.yaml", "manifest.csv", "outcomes.csv", "blood.csv"}
        elif len(rel.parts) == 2:  # a patient's blood samples (docs/cohort-format.md)
            assert re.fullmatch(r"SYN\d{4}", rel.parts[0]) and rel.name == "blood.csv", rel
        else:
            assert re.fullmatch(r"SYN\d{4}", rel.parts[0]) and re.fullmatch(r"c\d", rel.parts[1]), rel
            assert allowed.match("/".join(rel.parts[2:])), rel


def test_nifti_headers_hold_only_the_unit(image_cohort: Path) -> None:
    import SimpleITK as sitk

    for path in image_cohort.rglob("*.nii.gz"):
        if "truth" in path.parts:
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        descrip = reader.GetMetaData("descrip") if reader.HasMetaDataKey("descrip") else ""
        assert re.fullmatch(r"ludl unit=[A-Za-z/]+", descrip.strip()), (path, descrip)
        for key in ("aux_file", "intent_name"):
            if reader.HasMetaDataKey(key):
                assert reader.GetMetaData(key).strip() == "", (path, key)


def _hidden_numbers(cohort: Path) -> set[str]:
    """Every hidden value of the truth tables, to 6 significant digits (as regions.csv writes them)."""
    numbers: set[str] = set()
    for name in ("patients.csv", "response.csv", "regions.csv", "lesion_pet.csv"):
        for row in _read(cohort / "truth" / name):
            for key, value in row.items():
                if key in ("patient_id", "cycle", "region", "kind", "systemic_mbq", "n_lesions", "in_fov_fraction"):
                    continue
                try:
                    x = float(value)
                except ValueError:
                    continue
                if abs(x) > 1e-3 and x not in (1.0, 0.0):
                    numbers.add(f"{x:.6g}")
    return numbers


def test_no_hidden_value_in_visible_text(image_cohort: Path) -> None:
    hidden = _hidden_numbers(image_cohort)
    visible = ""
    for name in ("cohort.yaml", "manifest.csv", "outcomes.csv"):
        visible += (image_cohort / name).read_text()
    visible += " ".join(_dicom_text(p) for p in image_cohort.rglob("*.dcm"))
    tokens = set(re.findall(r"-?\d+\.?\d*(?:e-?\d+)?", visible))
    shown = {f"{float(t):.6g}" for t in tokens}
    # A 6-digit coincidence between hundreds of hidden values and the visible numbers is possible but rare;
    # the manifest's own protocol numbers (times, activities) are not hidden values.
    overlap = hidden & shown
    assert not overlap, sorted(overlap)[:10]


def _dicom_text(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    parts: list[str] = []

    def walk(dataset: pydicom.Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    walk(item)
            elif element.VR not in ("OB", "OW", "UN"):
                parts.append(str(element.value))

    walk(ds)
    return " ".join(parts)


def test_dicom_tags_are_generic_and_deidentified(image_cohort: Path) -> None:
    import pydicom

    from ludl.io.manifest import validate_cohort

    report = validate_cohort(image_cohort)
    assert report.ok, report.format()
    files = sorted(image_cohort.rglob("*.dcm"))
    assert files
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert re.fullmatch(r"SYN\d{4}", str(ds.PatientID)) and str(ds.PatientName) == str(ds.PatientID)
        assert str(ds.SeriesDescription) == "SPECT"
        assert not any(element.tag.is_private for element in ds)
        assert str(ds.PatientBirthDate) == ""


def test_manifest_times_are_jittered_not_derived(image_cohort: Path) -> None:
    rows = [r for r in _read(image_cohort / "manifest.csv") if r["role"] == "spect" and r["bed"] in ("", "1")]
    offsets = [float(r["time_h"]) - float(r["timepoint_h"]) for r in rows]
    # Scan-time jitter (docs/synthetic-cohort.md "No shortcuts"): actual times differ from the nominal ones.
    assert len({round(o, 3) for o in offsets}) > len(offsets) // 2
