"""python train.py — train, predict the held-out fold and compare with the STP formulas (ludl/configs/train.yaml).

With no arguments: synthesise the demo cohort into a cache folder (reused when complete), prepare it (resumable),
train DoseNet on the 2-core CPU, predict the held-out fold, print the comparison table and write the HTML page
(`ludl.evaluation.pipeline.run_training`). Every key: ``python train.py --help``; presets: ``experiment=tiny|long|gpu``;
sweeps: ``-m sweep=optuna``. Re-score a finished run without training: ``ludl evaluate run=<out>``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ludl.configs.schema import register_schemas
from ludl.errors import LudlError

register_schemas()


@hydra.main(version_base="1.3", config_path="ludl/configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Thin entry point around `run_training`; a LudlError is one line on stderr; the wandb run always closed."""
    from ludl.evaluation.pipeline import run_training

    try:
        return run_training(cfg)
    except LudlError as error:
        print(f"train.py: {error}", file=sys.stderr)
        raise SystemExit(1) from error
    finally:
        import wandb

        if wandb.run is not None:
            wandb.finish()


if __name__ == "__main__":
    main()
