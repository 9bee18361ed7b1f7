"""`ludl <job> key=value …`: thin Hydra entry points, one per job.

Each job has a primary config `configs/<job>.yaml`; the function that does the work lives in
its layer (``ludl.io.manifest``, ``ludl.dosimetry`` …) and takes plain arguments, never the
config object. Heavy imports happen inside the job so `ludl --help` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_DIR", "JOBS", "main"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _validate(cfg: Any) -> int:
    from ludl.io.manifest import validate_cohort

    if not cfg.cohort:
        print("ludl validate: give the cohort folder, e.g. `ludl validate cohort=/data/my_cohort`", file=sys.stderr)
        return 2
    report = validate_cohort(Path(str(cfg.cohort)))
    print(report.format())
    return 0 if report.ok else 1


def _phantom(cfg: Any) -> int:
    from ludl.dosimetry.phantom import PhantomSpec, run_phantom_demo

    spec = PhantomSpec(
        shape_zyx=tuple(cfg.phantom.shape_zyx),
        spacing_zyx_mm=tuple(cfg.phantom.spacing_zyx_mm),
        times_h=tuple(cfg.phantom.times_h),
        injected_mbq=float(cfg.phantom.injected_mbq),
        noise_cv=float(cfg.phantom.noise_cv),
        seed=int(cfg.seed),
    )
    result = run_phantom_demo(
        spec,
        out_dir=Path(str(cfg.out)),
        model=str(cfg.fit.model),
        kernel_cache_dir=Path(str(cfg.kernel_cache_dir)) if cfg.kernel_cache_dir else None,
    )
    print(result.format())
    return 0


def _synth(cfg: Any) -> int:
    from omegaconf import OmegaConf

    from ludl.synth.cohort import run_synth

    overrides = OmegaConf.to_container(cfg.overrides, resolve=True) if cfg.get("overrides") else None
    summary = run_synth(
        preset=str(cfg.preset),
        n_patients=int(cfg.n_patients),
        seed=int(cfg.seed),
        out=Path(str(cfg.out)),
        images=bool(cfg.images),
        preview=bool(cfg.preview),
        workers=int(cfg.workers) if cfg.get("workers") is not None else None,
        overrides=overrides,  # type: ignore[arg-type]
    )
    print(summary.format())
    return 0


def _dosimetry_options(cfg: Any) -> Any:
    """The ground-truth `DosimetryOptions` shared by `dosimetry` and `prepare` (configs/dosimetry.yaml)."""
    from ludl.dosimetry.options import DosimetryOptions

    return DosimetryOptions(
        tia_mode=str(cfg.tia_mode),
        model=str(cfg.model),
        dose_method=str(cfg.dose_method),
        pvc=str(cfg.pvc),
        reference_timepoint=cfg.reference_timepoint,
        kernel_cache_dir=Path(str(cfg.kernel_cache_dir)) if cfg.kernel_cache_dir else None,
    )


def _dosimetry(cfg: Any) -> int:
    from ludl.dosimetry.pipeline import run_dosimetry

    if cfg.cohort is None or cfg.patient is None:
        print("ludl dosimetry: give cohort=DIR patient=ID cycle=N out=DIR", file=sys.stderr)
        return 2
    result = run_dosimetry(
        Path(str(cfg.cohort)),
        str(cfg.patient),
        int(cfg.cycle),
        Path(str(cfg.out)),
        _dosimetry_options(cfg),
    )
    print(result.format())
    return 0


def _prepare(cfg: Any) -> int:
    from ludl.dosimetry.prepare import run_prepare

    if cfg.cohort is None:
        print("ludl prepare: give cohort=DIR out=DIR (and shard=i/n on a cluster)", file=sys.stderr)
        return 2
    summary = run_prepare(
        Path(str(cfg.cohort)),
        Path(str(cfg.out)),
        shard=str(cfg.shard),
        workers=None if cfg.workers is None else int(cfg.workers),
        overwrite=bool(cfg.overwrite),
        n_folds=int(cfg.n_folds),
        seed=int(cfg.seed),
        nifti=bool(cfg.nifti),
        stp_baselines=bool(cfg.stp_baselines),
        options=_dosimetry_options(cfg),
    )
    print(summary.format())
    return 0 if summary.ok else 1


# job name → (runner, one-line description)
JOBS: dict[str, tuple[Callable[[Any], int], str]] = {
    "synth": (_synth, "generate a synthetic cohort: digital patients, images, true dose, response"),
    "validate": (_validate, "check a cohort folder (manifest, files, geometry) and report every problem"),
    "dosimetry": (_dosimetry, "multi-time-point dosimetry of one patient-cycle: dose/TIA maps, RT Dose, regions.csv"),
    "prepare": (_prepare, "every patient-cycle of a cohort as prepared cases (resumable, shardable) + splits.json"),
    "phantom": (_phantom, "multi-time-point voxel dosimetry of an analytic phantom, scored against its exact dose"),
}


def _usage() -> str:
    lines = ["usage: ludl <job> [key=value ...]   (Hydra overrides; also `python -m ludl`)", "", "jobs:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in JOBS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run `ludl <job> overrides…`; exits with the job's status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        raise SystemExit(0 if args else 2)
    job, overrides = args[0], args[1:]
    if job not in JOBS:
        print(f"ludl: unknown job {job!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    if not (CONFIG_DIR / f"{job}.yaml").is_file():
        print(
            f"ludl: config {CONFIG_DIR / (job + '.yaml')} not found; install ludl from its source tree "
            "(`pip install -e .`) so configs/ sits beside the package",
            file=sys.stderr,
        )
        raise SystemExit(2)

    import hydra
    from omegaconf import DictConfig

    from ludl.errors import LudlError

    runner, _ = JOBS[job]
    status = {"code": 0}

    def _task(cfg: DictConfig) -> None:
        try:
            status["code"] = max(status["code"], runner(cfg))
        except LudlError as error:
            print(f"ludl {job}: {error}", file=sys.stderr)
            status["code"] = max(status["code"], 1)

    app = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=job)(_task)
    saved = sys.argv
    sys.argv = [f"ludl-{job}", *overrides]
    try:
        app()
    finally:
        sys.argv = saved
    raise SystemExit(status["code"])
