"""`ludl evaluate` (`run_evaluate`): re-scores a run's predictions from what its last evaluation recorded, keeps the
page's dose slices, and refuses a folder that is not a run with a message naming the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ludl.errors import InputError
from ludl.evaluation import coronal_slice, evaluate
from ludl.evaluation.job import run_evaluate
from ludl.evaluation.record import DOSE_SLICES_FILE, INPUTS_FILE, load_dose_slices, read_inputs
from tests.evaluation.fakes import write_fake_run


@pytest.fixture()
def evaluated(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(8, 10, 5))
    run, prepared, cohort = write_fake_run(
        tmp_path,
        8,
        network=lambda p, r, t: 0.1 * noise[p, r, t],
        stp={"haenscheid": lambda p, r, t: 0.3 * noise[p, r, t] + 0.1},
        gt_vs_truth=lambda p, r, t: 0.02,
    )
    z, y, x = np.mgrid[0:12, 0:10, 0:10]
    gt = 3.0 * np.exp(-((z - 6) ** 2 + (y - 4) ** 2 + (x - 5) ** 2) / 8.0)
    evaluate(run, prepared, cohort, 0, dose_slices=[coronal_slice("P01_c1", 24.0, 0.9 * gt, gt, (4, 5, 6))], n_boot=50)
    return run, prepared, cohort


def test_rescoring_reads_the_recorded_inputs_and_gives_the_same_tables(evaluated: tuple[Path, Path, Path]) -> None:
    run, prepared, cohort = evaluated
    first = (run / "evaluation" / "comparison.csv").read_text()
    recorded = {"run": str(run), "prepared": str(prepared), "cohort": str(cohort), "fold": 0}
    assert read_inputs(run / "evaluation") == recorded
    (run / "evaluation" / "comparison.csv").unlink()
    result = run_evaluate(run, n_boot=50)
    assert result.fold == 0
    assert (run / "evaluation" / "comparison.csv").read_text() == first  # same seed → same intervals
    slices = load_dose_slices(run / "evaluation" / DOSE_SLICES_FILE)
    assert len(slices) == 1 and slices[0].case_id == "P01_c1" and slices[0].spacing_mm == (4.0, 6.0)
    # the slice is the ground truth's brightest coronal plane, network = 0.9 × ground truth
    np.testing.assert_allclose(slices[0].network_gy, 0.9 * slices[0].ground_truth_gy, rtol=1e-6)
    assert "<img" in (run / "evaluation" / "evaluation.html").read_text()


def test_more_replicates_and_another_output_folder(evaluated: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, prepared, cohort = evaluated
    out = tmp_path / "again"
    result = run_evaluate(run, prepared, cohort, 0, out_dir=out, n_boot=80)
    assert (out / "comparison.txt").is_file() and (out / INPUTS_FILE).is_file()
    assert result.page_path == out / "evaluation.html"


def test_refusals_name_the_fix(evaluated: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, prepared, _ = evaluated
    with pytest.raises(InputError, match=r"predictions/regions\.csv does not exist"):
        run_evaluate(tmp_path / "nothing")
    bare = tmp_path / "bare_run"
    shutil.copytree(run / "predictions", bare / "predictions")
    with pytest.raises(InputError, match="give prepared=… cohort=… fold=…"):
        run_evaluate(bare)
    with pytest.raises(InputError, match=r"cohort folder .* does not exist; give cohort=DIR"):
        run_evaluate(bare, prepared, tmp_path / "gone", 0)


def test_the_packaged_config_composes_with_its_schema(evaluated: tuple[Path, Path, Path]) -> None:
    from hydra import compose, initialize_config_module

    from ludl.configs.schema import register_schemas

    run, _, _ = evaluated
    register_schemas()
    with initialize_config_module(config_module="ludl.configs", version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run={run}", "n_boot=40"])
        with pytest.raises(Exception, match="n_boot"):
            compose("evaluate", overrides=[f"run={run}", "n_boot=many"])  # the schema's type
    assert cfg.prepared is None and cfg.cohort is None and cfg.fold is None and cfg.out is None
    result = run_evaluate(str(cfg.run), n_boot=int(cfg.n_boot), seed=int(cfg.seed))
    assert result.files["comparison"].is_file()
