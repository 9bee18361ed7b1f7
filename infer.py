"""python infer.py — single-scan dosimetry with a trained model (ludl/configs/infer.yaml, docs/inference.md).

One scan: ``python infer.py spect=… ct=… [pet=… pet_ct=…] model=… out=… [time_h=… injected_mbq=… labels=…]``;
a cohort batch: ``python infer.py cohort=… patient=all timepoint_h=24 model=… out=…``. Every key:
``python infer.py --help``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from ludl.configs.schema import register_schemas
from ludl.errors import LudlError

register_schemas()


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def predictor(cfg: DictConfig) -> Any:
    """The `ludl.inference.Predictor` of the config (the model artifact(s) loaded once)."""
    from ludl.inference import Predictor

    settings = dict(_plain(cfg.inference))
    model = _plain(cfg.artifact)
    return Predictor(model if isinstance(model, str) else list(model), **settings)


def one_scan(cfg: DictConfig) -> None:
    """Predict the scan of `spect=`/`ct=` and write every output into `out`."""
    from ludl.inference import write_outputs

    if cfg.spect is None or cfg.ct is None:
        raise LudlError("give the scan (spect=… ct=…, optionally pet=… pet_ct=…) or a cohort batch (cohort=…)")
    spect = _plain(cfg.spect)
    prediction = predictor(cfg).predict_files(
        spect if isinstance(spect, str) else list(spect),
        cfg.ct,
        pet=cfg.pet,
        pet_ct=cfg.pet_ct,
        time_h=cfg.time_h,
        injected_mbq=cfg.injected_mbq,
        fwhm_mm=cfg.fwhm_mm,
        labels=cfg.labels,
        label_names=_plain(cfg.label_names),
        sensitivity_cps_per_mbq=cfg.sensitivity_cps_per_mbq,
        acquisition_s=cfg.acquisition_s,
    )
    files = write_outputs(
        prediction,
        Path(str(cfg.out)),
        dicom=bool(cfg.dicom),
        report=bool(cfg.report),
        keep_identifiers=bool(cfg.keep_identifiers),
        cycle=int(cfg.cycle),
    )
    for warning in prediction.warnings:
        print(f"WARNING: {warning}")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in prediction.timings_s.items())
    print(f"{len(prediction.regions)} regions; outputs in {cfg.out} ({len(files)} files); {stages}")


def batch(cfg: DictConfig) -> int:
    """Predict `timepoint_h` of the cohort's patients; 1 when any case failed."""
    from ludl.inference.batch import run_batch

    result = run_batch(
        predictor(cfg),
        str(cfg.cohort),
        Path(str(cfg.out)),
        patients=str(cfg.patient),
        cycle=int(cfg.cycle),
        timepoint_h=float(cfg.timepoint_h),
        dicom=bool(cfg.dicom),
        report=bool(cfg.report),
        keep_identifiers=bool(cfg.keep_identifiers),
    )
    for name, error in result.failed.items():
        print(f"{name}: {error}", file=sys.stderr)
    print(f"{len(result.written)} case(s) written to {cfg.out}, {len(result.failed)} failed")
    return 1 if result.failed else 0


@hydra.main(version_base="1.3", config_path="ludl/configs", config_name="infer")
def main(cfg: DictConfig) -> None:
    """Thin entry point: one scan or a cohort batch; a `LudlError` is one line on stderr and exit status 1."""
    started = time.monotonic()
    try:
        code = batch(cfg) if cfg.cohort is not None else (one_scan(cfg) or 0)
    except LudlError as error:
        print(f"infer.py: {error}", file=sys.stderr)
        raise SystemExit(1) from error
    print(f"infer.py took {time.monotonic() - started:.1f} s")
    if code:
        raise SystemExit(code)


def _model_as_artifact(argv: list[str]) -> list[str]:
    """``model=…`` as ``artifact=…``: Hydra reserves ``model`` for the training config's group of that name."""
    return [f"artifact={a[len('model=') :]}" if a.startswith("model=") else a for a in argv]


if __name__ == "__main__":
    sys.argv = _model_as_artifact(sys.argv)
    main()
