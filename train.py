"""python train.py — train, predict the held-out fold and compare with the STP formulas (ludl/configs/train.yaml).

With no arguments: synthesise the demo cohort into a cache folder (reused when complete), prepare it (resumable),
train DoseNet on the 2-core CPU, predict the held-out fold, print the comparison table and write the HTML page.
Every key: ``python train.py --help``; presets: ``experiment=tiny|long|gpu``; sweeps: ``-m sweep=optuna``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from ludl.configs.schema import register_schemas
from ludl.errors import LudlError

register_schemas()


def demo_cohort(cfg: DictConfig) -> tuple[Path, Path]:
    """The demo cohort and its prepared folder, synthesised and prepared on first use (both steps resumable)."""
    from ludl.dosimetry.options import DosimetryOptions
    from ludl.dosimetry.prepare import run_prepare
    from ludl.synth.cohort import run_synth

    demo = cfg.demo
    root = Path(str(demo.cache_dir)) / f"{demo.preset}-n{demo.n_patients}-seed{demo.seed}"
    cohort, prepared, done = root / "cohort", root / "prepared", root / "cohort.complete"
    if not done.is_file():
        print(f"synthesising the demo cohort ({demo.n_patients} patients, preset {demo.preset}) into {cohort} …")
        run_synth(str(demo.preset), int(demo.n_patients), int(demo.seed), cohort, workers=demo.workers)
        done.write_text("complete\n")
    if not (prepared / "prepared.complete").is_file():
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
        (prepared / "prepared.complete").write_text("complete\n")
    return cohort, prepared


def region_scoring() -> Any:
    """The single-scan partial-volume correction and the STP region classes, from the dosimetry layer."""
    from ludl.dosimetry.baselines import region_class
    from ludl.training.predict import CorrectionInput, RegionScoring

    try:
        from ludl.dosimetry.regions import RegionSet
        from ludl.dosimetry.single_scan import correct_region_doses
    except ImportError:  # single-scan correction not available: the corrected column stays empty
        return RegionScoring(region_class=region_class)

    def correct(item: CorrectionInput) -> dict[str, float]:
        regions = RegionSet(
            item.labels, dict(item.region_values), {n: item.region_kinds.get(n, "organ") for n in item.region_values}
        )
        doses = correct_region_doses(
            item.tia_mbq_h_per_ml,
            regions,
            item.density_g_per_ml,
            item.spacing_zyx_mm,
            item.fwhm_mm,
            dose_gy=item.dose_gy,
        )
        return dict(doses.mean_dose_gy)

    return RegionScoring(correct=correct, region_class=region_class)


def evaluate_run(cfg: DictConfig, result: Any) -> None:
    """Compare with the STP formulas and the cohort's reference, print the table, write the page."""
    try:
        from ludl.evaluation import coronal_slice, evaluate
    except ImportError:
        print(f"ludl.evaluation is not available; predictions are in {result.predictions_dir}")
        return
    slices = [
        coronal_slice(s["case_id"], s["timepoint_h"], s["network_gy"], s["ground_truth_gy"], s["spacing_zyx_mm"])
        for s in result.dose_slices
    ]
    evaluation = evaluate(
        result.run_dir,
        str(cfg.prepared),
        str(cfg.cohort),
        int(cfg.data.fold),
        dose_slices=slices,
        n_boot=int(cfg.n_boot),
    )
    print(evaluation.format())  # ends with where the page is


@hydra.main(version_base="1.3", config_path="ludl/configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Thin entry point: demo data if needed, `ludl.training.train`, evaluation; the logger always closed."""
    from ludl.training.train import train

    started = time.monotonic()
    try:
        if cfg.cohort is None and cfg.prepared is None:
            cohort, prepared = demo_cohort(cfg)
            with open_dict(cfg):
                cfg.cohort, cfg.prepared = str(cohort), str(prepared)
        if cfg.prepared is None:
            raise LudlError("give the prepared folder of the cohort: prepared=DIR (`ludl prepare cohort=… out=DIR`)")
        result = train(cfg, region_scoring())
        if result.predictions_dir is None:  # a DDP rank > 0
            return None
        print(f"trained {result.global_step} steps; artifact {result.artifact_dir}; run folder {result.run_dir}")
        if cfg.evaluate and cfg.cohort is not None:
            evaluate_run(cfg, result)
        print(f"train.py took {time.monotonic() - started:.0f} s")
        # the sweep's objective: best validation region-mean error; without a validation yet, the held-out one
        held_out = [v for k, v in result.metrics.items() if k.startswith("held_out/mae_")]
        value = result.metrics.get("val/region_mae", sum(held_out) / len(held_out) if held_out else 1e6)
        return float(value)
    except LudlError as error:
        print(f"train.py: {error}", file=sys.stderr)
        raise SystemExit(1) from error
    finally:
        import wandb

        if wandb.run is not None:
            wandb.finish()


if __name__ == "__main__":
    main()
