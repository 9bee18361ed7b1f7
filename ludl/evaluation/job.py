"""`ludl evaluate`: re-score a training run's held-out predictions and rewrite its tables and page, no retraining.

`evaluate` (``ludl.evaluation.compare``) records what it read in ``<out>/inputs.json`` (run, prepared and cohort
folders, fold) and keeps the page's dose slices in ``<out>/dose_slices.npz`` (`ludl.evaluation.record`);
`run_evaluate` reads both back, so ``ludl evaluate run=outputs/train/default/fold0`` needs nothing else after
``python train.py`` — e.g. after the STP baselines (``stp_regions.csv``) or the cohort's single-scan reference were
regenerated, or with more bootstrap replicates. Every folder can also be given (a cohort moved, a run trained
elsewhere).
"""

from __future__ import annotations

import json
from pathlib import Path

from ludl.errors import InputError
from ludl.evaluation.compare import EvaluationResult, evaluate
from ludl.evaluation.record import DOSE_SLICES_FILE, INPUTS_FILE, load_dose_slices, read_inputs

__all__ = ["run_evaluate"]


def _fold_of_run(run: Path) -> int | None:
    """The held-out fold from the run's model artifact (``model/model.json``), None without one."""
    path = run / "model" / "model.json"
    try:
        fold = json.loads(path.read_text(encoding="utf-8")).get("fold")
    except (OSError, ValueError):
        return None
    return int(fold) if fold is not None else None


def run_evaluate(
    run_dir: str | Path,
    prepared_dir: str | Path | None = None,
    cohort_dir: str | Path | None = None,
    fold: int | None = None,
    *,
    out_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> EvaluationResult:
    """Re-score ``<run_dir>/predictions`` against the STP baselines and the cohort's truth; rewrite the page.

    Folders and fold not given come from the last evaluation's ``inputs.json`` in `out_dir` (default
    ``<run_dir>/evaluation``), the fold else from the run's ``model/model.json``.
    """
    run = Path(run_dir)
    if not (run / "predictions" / "regions.csv").is_file():
        raise InputError(
            f"{run / 'predictions' / 'regions.csv'} does not exist: give the run folder of `python train.py` "
            "(its `out`, e.g. outputs/train/default/fold0), or train and predict first"
        )
    out = Path(out_dir) if out_dir is not None else run / "evaluation"
    earlier = read_inputs(out)
    prepared = prepared_dir if prepared_dir is not None else earlier.get("prepared")
    cohort = cohort_dir if cohort_dir is not None else earlier.get("cohort")
    fold = fold if fold is not None else earlier.get("fold", _fold_of_run(run))
    missing = [k for k, v in (("prepared", prepared), ("cohort", cohort), ("fold", fold)) if v is None]
    if missing:
        raise InputError(
            f"{out / INPUTS_FILE} does not say {', '.join(missing)} (no earlier evaluation of {run}); give "
            + " ".join(f"{k}=…" for k in missing)
        )
    for name, folder in (("prepared", prepared), ("cohort", cohort)):
        if not Path(str(folder)).is_dir():
            raise InputError(f"{name} folder {folder} does not exist; give {name}=DIR")
    return evaluate(
        run,
        str(prepared),
        str(cohort),
        int(str(fold)),
        dose_slices=load_dose_slices(out / DOSE_SLICES_FILE),
        out_dir=out,
        n_boot=n_boot,
        seed=seed,
    )
