"""Never a stale result: the situations of issue 14 ("Why" 1 and 3) each end in a recomputation or a clear error.

1. a regenerated cohort (inputs changed) → `ludl prepare` recomputes the cases, not "skipped (already prepared)";
   other dosimetry settings → refused naming ``overwrite=true`` (then recomputed with it); another cohort pointed at
   the same output → refused (then replaced whole with ``overwrite=true``); a smaller regenerated cohort → no case
   folder of the earlier one stays.
3. ``ludl dosimetry … out=DIR`` onto another patient's results → refused; ``ludl synth`` into a folder of an earlier,
   larger run → no stale patient folder; into a folder that is not a synthetic cohort → refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ludl.cli import main
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.prepare import run_prepare
from ludl.errors import InputError
from ludl.io.nifti import read_nifti, write_nifti
from ludl.io.prepared import CASES_FOLDER, SIDECAR, read_case
from ludl.io.provenance import (
    OUTPUT_RECORD,
    Provenance,
    claim_output_dir,
    dataset_provenance,
    file_sha256,
    path_sha256,
    settings_hash,
)
from ludl.synth.cohort import run_synth
from tests.reliability.conftest import write_cohort


def _cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0)


def _case_dose_mbq(out: Path, cid: str) -> float:
    """Σ dose over the first time point's grid (any fixed functional of the dose map)."""
    tp = read_case(out / CASES_FOLDER / cid).timepoints[0]
    return float(np.asarray(tp.array("dose"), dtype=np.float64).sum())


# ------------------------------------------------------------------------------------------------ helpers


def test_file_sha256_is_the_standard_digest_and_folders_hash_their_files(tmp_path: Path) -> None:
    import hashlib

    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # more than one read chunk
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "a.dcm").write_bytes(data)
    assert file_sha256(tmp_path / "series" / "a.dcm") == hashlib.sha256(data).hexdigest()
    before = path_sha256(tmp_path / "series")
    (tmp_path / "series" / "b.dcm").write_bytes(b"x")  # a slice added to a DICOM folder changes its checksum
    assert path_sha256(tmp_path / "series") != before
    with pytest.raises(InputError, match=r"missing\.nii\.gz"):
        path_sha256(tmp_path / "missing.nii.gz")


def test_settings_hash_ignores_key_order_and_names_what_changed() -> None:
    assert settings_hash({"a": 1, "b": {"c": 2.0}}) == settings_hash({"b": {"c": 2.0}, "a": 1})
    old = Provenance.of({"x.nii.gz": "1"}, {"dosimetry": {"pvc": "gtm", "model": "auto"}})
    new = Provenance.of({"x.nii.gz": "2"}, {"dosimetry": {"pvc": "none", "model": "auto"}})
    assert old.differences(Provenance.from_dict(old.to_dict())) == []
    changes = " ".join(old.differences(new))
    assert 'dosimetry.pvc: "gtm" → "none"' in changes and "input x.nii.gz changed" in changes


def test_dataset_provenance_names_a_changed_case(tmp_path: Path) -> None:
    for name in ("dataset.json", "splits.json", "cases/A_c1/case.json", "cases/B_c1/case.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    before = dataset_provenance(tmp_path, {"max_steps": 10})
    assert sorted(before.inputs) == ["cases/A_c1/case.json", "cases/B_c1/case.json", "dataset.json", "splits.json"]
    (tmp_path / "cases/B_c1/case.json").write_text("recomputed")
    assert before.differences(dataset_provenance(tmp_path, {"max_steps": 10})) == ["input cases/B_c1/case.json changed"]


def test_claim_removes_only_what_the_earlier_owner_recorded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".provenance.json.x1y2.json").write_text("{")  # another shard's record being written: not "foreign"
    first = {"job": "dosimetry", "patient_id": "P01"}
    assert claim_output_dir(out, first, overwrite=False, outputs=("dose*.nii.gz",)) is None
    (out / "dose_gy.nii.gz").write_bytes(b"P01")
    (out / "notes.txt").write_text("the user's")
    assert claim_output_dir(out, first, overwrite=False, outputs=("dose*.nii.gz",)) is not None  # a rerun
    second = {"job": "dosimetry", "patient_id": "P02"}
    with pytest.raises(InputError, match=r"patient_id P01.*patient_id P02.*overwrite=true"):
        claim_output_dir(out, second, overwrite=False, outputs=("dose*.nii.gz",))
    claim_output_dir(out, second, overwrite=True, outputs=("dose*.nii.gz",))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["notes.txt", OUTPUT_RECORD]


# ------------------------------------------------------------------------------------------------ ludl prepare


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    return write_cohort(tmp_path / "cohort")


def test_changed_inputs_are_recomputed_not_skipped(tmp_path: Path, cohort: Path, options: DosimetryOptions) -> None:
    out = tmp_path / "prepared"
    first = run_prepare(cohort, out, workers=1, options=options)
    assert first.n_done == 2
    dose_before = _case_dose_mbq(out, "P01_c1")
    recorded = json.loads((out / CASES_FOLDER / "P01_c1" / SIDECAR).read_text())["provenance"]
    assert recorded["inputs"]["P01/images/spect_24h.nii.gz"] == file_sha256(cohort / "P01/images/spect_24h.nii.gz")
    # The clinic re-exports P01's SPECTs with a 10 % higher calibration: every activity ×1.1, so TIA and dose ×1.1
    # (the fits, the kernel and the density are linear in activity).
    for spect in sorted((cohort / "P01/images").glob("spect_*.nii.gz")):
        volume = read_nifti(spect)
        write_nifti(volume.with_array(np.asarray(volume.array) * 1.1), spect)
    again = run_prepare(cohort, out, workers=1, options=options)
    assert (again.n_done, again.n_skipped) == (1, 1)  # P02 unchanged: skipped
    (redone,) = [c for c in again.cases if c.status == "done"]
    assert redone.case_id == "P01_c1" and "input P01/images/spect_24h.nii.gz changed" in redone.reason
    assert any("recomputed" in note for note in again.notes)
    assert _case_dose_mbq(out, "P01_c1") == pytest.approx(1.1 * dose_before, rel=2e-3)
    # A case written before provenance was recorded (format version 2 without the entry) is recomputed too.
    sidecar = out / CASES_FOLDER / "P02_c1" / SIDECAR
    document = json.loads(sidecar.read_text())
    del document["provenance"]
    sidecar.write_text(json.dumps(document))
    third = run_prepare(cohort, out, workers=1, options=options)
    assert [(c.case_id, c.status) for c in third.cases] == [("P01_c1", "skipped"), ("P02_c1", "done")]
    assert "older ludl" in third.cases[1].reason and "provenance" in json.loads(sidecar.read_text())


def test_other_settings_are_refused_naming_overwrite_then_recomputed(
    tmp_path: Path, cohort: Path, options: DosimetryOptions
) -> None:
    out = tmp_path / "prepared"
    run_prepare(cohort, out, workers=1, options=options)
    sidecar = out / CASES_FOLDER / "P01_c1" / SIDECAR
    before = sidecar.read_bytes()
    ldm = DosimetryOptions(tia_mode="region", pvc="none", dose_method="ldm", kernel_cache_dir=options.kernel_cache_dir)
    with pytest.raises(InputError, match=r"dose_method='dvk' → 'ldm'.*overwrite=true"):
        run_prepare(cohort, out, workers=1, options=ldm)
    assert sidecar.read_bytes() == before  # refused before any case was touched
    redone = run_prepare(cohort, out, workers=1, options=ldm, overwrite=True)
    assert redone.n_done == 2
    assert json.loads(sidecar.read_text())["dosimetry"]["dose_method"] == "ldm"
    # The folder now records the new settings: the next plain run resumes (skips) instead of refusing.
    assert run_prepare(cohort, out, workers=1, options=ldm).n_skipped == 2


def test_another_cohort_is_refused_and_replaced_whole_only_when_asked(
    tmp_path: Path, cohort: Path, options: DosimetryOptions
) -> None:
    out = tmp_path / "prepared"
    run_prepare(cohort, out, workers=1, options=options)
    splits = (out / "splits.json").read_bytes()
    other = write_cohort(tmp_path / "other", patients=("Q07", "Q08"))
    with pytest.raises(InputError, match=r"holds the results of `ludl prepare` \(cohort .*cohort\).*overwrite=true"):
        run_prepare(other, out, workers=1, options=options)
    assert (out / "splits.json").read_bytes() == splits  # nothing rewritten
    summary = run_prepare(other, out, workers=1, options=options, overwrite=True)
    assert summary.n_done == 2
    assert sorted(p.name for p in (out / CASES_FOLDER).iterdir()) == ["Q07_c1", "Q08_c1"]  # none of the earlier
    assert "P01" not in (out / "splits.json").read_text() and "P01" not in (out / "stp_regions.csv").read_text()


def test_a_smaller_regenerated_cohort_leaves_no_case_of_the_larger_one(
    tmp_path: Path, cohort: Path, options: DosimetryOptions
) -> None:
    out = tmp_path / "prepared"
    run_prepare(cohort, out, workers=1, options=options)
    shutil.rmtree(cohort)
    write_cohort(cohort, patients=("P01",), seed=1)  # regenerated with another seed and one patient
    summary = run_prepare(cohort, out, workers=1, options=options)
    assert summary.n_done == 1 and summary.n_skipped == 0  # P01's images changed: recomputed
    assert sorted(p.name for p in (out / CASES_FOLDER).iterdir()) == ["P01_c1"]
    assert json.loads((out / "dataset.json").read_text())["case_ids"] == ["P01_c1"]


def test_a_folder_ludl_did_not_write_is_refused(tmp_path: Path, cohort: Path, options: DosimetryOptions) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("keep me")
    with pytest.raises(InputError, match=r"not empty \(chapter1.tex\).*overwrite=true"):
        run_prepare(cohort, out, workers=1, options=options)
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]


# ------------------------------------------------------------------------------------------------ ludl dosimetry


def test_dosimetry_refuses_another_patients_folder_and_records_its_inputs(
    tmp_path: Path, cohort: Path, kernels: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    common = (f"cohort={cohort}", "cycle=1", f"out={out}", "dosimetry.tia_mode=region", "dosimetry.pvc=none")
    common += (f"paths.kernel_cache_dir={kernels}",)
    assert _cli("dosimetry", "patient=P01", *common) == 0
    record = json.loads((out / OUTPUT_RECORD).read_text())
    assert record["owner"]["patient_id"] == "P01" and record["owner"]["cycle"] == 1
    inputs = record["provenance"]["inputs"]
    assert inputs["P01/images/spect_4h.nii.gz"] == file_sha256(cohort / "P01/images/spect_4h.nii.gz")
    assert record["provenance"]["settings"]["dosimetry"]["pvc"] == "none"
    regions = (out / "regions.csv").read_bytes()
    capsys.readouterr()
    assert _cli("dosimetry", "patient=P02", *common) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "patient_id P01" in err[0] and "overwrite=true" in err[0]
    assert (out / "regions.csv").read_bytes() == regions  # P01's results untouched
    assert _cli("dosimetry", "patient=P01", *common) == 0  # the same patient again: its own folder
    assert _cli("dosimetry", "patient=P02", *common, "overwrite=true") == 0
    assert json.loads((out / OUTPUT_RECORD).read_text())["owner"]["patient_id"] == "P02"


# ------------------------------------------------------------------------------------------------ ludl synth


def test_synth_into_a_larger_earlier_run_leaves_no_stale_patient(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    run_synth("tiny", 3, 0, out, images=False, workers=1)
    (out / "SYN0003").mkdir()  # an image folder of the larger run (images=false writes none)
    (out / "SYN0003" / "spect_24h.nii.gz").write_bytes(b"old")
    (out / ".ludl").mkdir()  # Hydra's run logs stay
    run_synth("tiny", 2, 0, out, images=False, workers=1)
    run_synth("tiny", 2, 0, tmp_path / "fresh", images=False, workers=1)

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    assert files(out) == files(tmp_path / "fresh")  # exactly a fresh run's cohort: nothing of the earlier one
    assert (out / ".ludl").is_dir()


def test_synth_refuses_a_folder_that_is_not_a_synthetic_cohort(tmp_path: Path) -> None:
    out = tmp_path / "clinic"
    out.mkdir()
    (out / "manifest.csv").write_text("patient_id,cycle\n")
    with pytest.raises(InputError, match=r"not a synthetic cohort.*overwrite=true"):
        run_synth("tiny", 2, 0, out, images=False, workers=1)
    assert (out / "manifest.csv").read_text() == "patient_id,cycle\n"
