"""The embedded default of ``python train.py``: demo cohort (synthesised and prepared on first use) → training →
held-out prediction → the comparison with the STP formulas, printed and written as a page.

It lives in the top layer because it uses every layer below it: `ludl.synth` and `ludl.dosimetry` (the demo cohort,
the single-scan partial-volume correction, the STP region classes) beside `ludl.training` (which may not import
them) and this package's `evaluate`. The root ``train.py`` is only the ``@hydra.main`` around `run_training`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from ludl.errors import LudlError

__all__ = ["demo_cohort", "evaluate_run", "region_scoring", "run_training"]

DEMO_COMPLETE = "cohort.complete"
PREPARED_COMPLETE = "prepared.complete"
PREPARED_STARTED = "prepared.started"  # the code that began preparing the cache: an interrupted run of it resumes


def demo_cohort(cfg: Any) -> tuple[Path, Path]:
    """The demo cohort and its prepared folder under ``demo.cache_dir``, synthesised and prepared on first use
    (a marker file says a step finished, and for which code; an interrupted preparation resumes where it stopped).

    The markers hold the source fingerprint of the code that wrote the step (`ludl.io.provenance.source_fingerprint`:
    the generator for the cohort; the generator and the dosimetry that prepares it for the prepared folder). After a
    code change the step is redone, so a cached cohort of an older generator is never served as today's.
    """
    from ludl.dosimetry.options import DosimetryOptions
    from ludl.dosimetry.prepare import run_prepare
    from ludl.io.provenance import source_fingerprint
    from ludl.synth.cohort import run_synth

    demo = cfg.demo
    root = Path(str(demo.cache_dir)) / f"{demo.preset}-n{demo.n_patients}-seed{demo.seed}"
    cohort, prepared = root / "cohort", root / "prepared"
    cohort_code = source_fingerprint("synth")
    prepared_code = source_fingerprint("synth", "dosimetry", "imaging", "physics", "io")
    if _marker(root / DEMO_COMPLETE) != cohort_code:
        if (root / DEMO_COMPLETE).is_file():
            print("the demo cohort in the cache was written by another version of the generator: synthesising it again")
        print(f"synthesising the demo cohort ({demo.n_patients} patients, preset {demo.preset}) into {cohort} …")
        for marker in (PREPARED_COMPLETE, PREPARED_STARTED):  # prepared from the cohort being replaced
            (prepared / marker).unlink(missing_ok=True)
        run_synth(str(demo.preset), int(demo.n_patients), int(demo.seed), cohort, workers=demo.workers)
        root.mkdir(parents=True, exist_ok=True)
        (root / DEMO_COMPLETE).write_text(cohort_code + "\n")
    if _marker(prepared / PREPARED_COMPLETE) != prepared_code:
        # Our own cache, begun by other code: every case is redone, not only changed inputs. Begun by this code and
        # interrupted (the 200-patient cohort prepares for most of an hour): `run_prepare` skips its finished cases.
        if prepared.exists() and _marker(prepared / PREPARED_STARTED) != prepared_code:
            print(f"the prepared demo cohort in the cache was prepared by other code: removing {prepared}")
            shutil.rmtree(prepared)
        prepared.mkdir(parents=True, exist_ok=True)
        (prepared / PREPARED_STARTED).write_text(prepared_code + "\n")
        print(f"preparing it into {prepared} …")
        summary = run_prepare(
            cohort,
            prepared,
            workers=demo.workers,
            n_folds=int(demo.n_folds),
            seed=int(demo.seed),
            options=DosimetryOptions(kernel_cache_dir=Path(str(cfg.paths.kernel_cache_dir))),
        )
        if not summary.ok:
            raise LudlError(f"{prepared}: preparing the demo cohort failed:\n{summary.format()}")
        (prepared / PREPARED_COMPLETE).write_text(prepared_code + "\n")
    return cohort, prepared


def _marker(path: Path) -> str | None:
    """The fingerprint a step's marker file holds (None: the step never finished)."""
    return path.read_text().strip() if path.is_file() else None


def region_scoring() -> Any:
    """The single-scan partial-volume correction (a GTM on the predicted TIA, the one `infer.py` applies) and the STP
    region classes."""
    from ludl.dosimetry.baselines import region_class
    from ludl.inference.regions import correct_single_scan
    from ludl.training.predict import RegionScoring

    return RegionScoring(correct=correct_single_scan, region_class=region_class)


def evaluate_run(cfg: Any, result: Any) -> None:
    """Compare the run's held-out predictions with the STP formulas and the cohort's reference; print; the page."""
    from ludl.evaluation.compare import evaluate
    from ludl.evaluation.page import coronal_slice

    slices = [
        coronal_slice(s["case_id"], s["timepoint_h"], s["network_gy"], s["ground_truth_gy"], s["spacing_zyx_mm"])
        for s in result.dose_slices
    ]
    fold, n_boot = int(cfg.data.fold), int(cfg.n_boot)
    evaluation = evaluate(result.run_dir, str(cfg.prepared), str(cfg.cohort), fold, dose_slices=slices, n_boot=n_boot)
    print(evaluation.format())  # ends with where the page is


def run_training(cfg: DictConfig) -> float | None:
    """`python train.py`: demo data if no cohort is given, `ludl.training.train`, evaluation; returns the sweep's
    objective (validation region-mean error; without validation the held-out one), None on DDP ranks > 0."""
    from ludl.training.train import train

    started = time.monotonic()
    if cfg.cohort is None and cfg.prepared is None:
        cohort, prepared = demo_cohort(cfg)
        with open_dict(cfg):
            cfg.cohort, cfg.prepared = str(cohort), str(prepared)
        print(f"demo cohort ready ({time.monotonic() - started:.0f} s)")
    if cfg.prepared is None:
        raise LudlError("give the prepared folder of the cohort: prepared=DIR (`ludl prepare cohort=… out=DIR`)")
    trained = time.monotonic()
    result = train(cfg, region_scoring())
    if result.predictions_dir is None:  # a DDP rank > 0
        return None
    print(
        f"trained {result.global_step} steps and predicted the held-out fold ({time.monotonic() - trained:.0f} s); "
        f"artifact {result.artifact_dir}; run folder {result.run_dir}"
    )
    if cfg.evaluate and cfg.cohort is not None:
        evaluate_run(cfg, result)
    print(f"train.py took {time.monotonic() - started:.0f} s")
    held_out = [v for k, v in result.metrics.items() if k.startswith("held_out/mae_")]
    value = result.metrics.get("val/region_mae", sum(held_out) / len(held_out) if held_out else 1e6)
    return float(value)
