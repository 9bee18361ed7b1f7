"""`ludl <job> key=value …`: thin Hydra entry points, one per job.

Each job has a primary config ``ludl/configs/<job>.yaml`` (package data, ``pkg://ludl.configs``) on a structured
schema (`ludl.configs.schema`); the function that does the work lives in its layer (``ludl.io.manifest``,
``ludl.dosimetry`` …) and takes plain arguments, never the config object. Heavy imports happen inside the job so
`ludl --help` stays instant. Every failure ends the process with a non-zero status and one line on stderr: a job's
`LudlError`, an unknown key or a wrong type, a missing launcher plugin, a failed job of a multirun (under any
launcher), Ctrl-C.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_DIR", "CONFIG_MODULE", "JOBS", "JobFailed", "main"]

CONFIG_MODULE = "ludl.configs"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the packaged configs as a folder (tests, tools)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
_INTERRUPTED = "interrupted; finished cases are kept, rerun the same command to resume"


def _caused_by_ctrl_c(error: BaseException) -> bool:
    """True when a KeyboardInterrupt is in the exception's chain (its cause or the exception it arose in)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _interrupted_line(job: str, cfg: Any) -> str:
    """The one line Ctrl-C ends a job with: what was kept, and what a rerun does."""
    out = Path(str(cfg.out)) if "out" in cfg else None
    if job == "prepare" and out is not None:
        from ludl.io.prepared import CASES_FOLDER, list_cases

        n = len(list_cases(out / CASES_FOLDER))
        return (
            f"ludl {job}: interrupted; the {n} finished case(s) in {out / CASES_FOLDER} are kept (a case being written "
            "is discarded): rerun the same command to resume, finished cases are skipped"
        )
    if job == "dosimetry" and out is not None:
        return (
            f"ludl {job}: interrupted; {out} is incomplete (each file in it is whole) and the kernel cache is kept: "
            "rerun the same command to compute the case again"
        )
    if job == "synth" and out is not None:
        return (
            f"ludl {job}: interrupted; the cohort in {out} is incomplete: rerun the same command, it writes the "
            "cohort again from the start (byte for byte the same)"
        )
    return f"ludl {job}: {_INTERRUPTED}"


# `hydra/<group>=<option>` → the optional plugin module providing it (the `sweep` extra)
_PLUGINS: dict[tuple[str, str], str] = {
    ("hydra/launcher", "joblib"): "hydra_plugins.hydra_joblib_launcher",
    ("hydra/launcher", "submitit_slurm"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/launcher", "submitit_local"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/sweeper", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
}


class JobFailed(Exception):
    """A job of a multirun ended with a non-zero status; raised so Hydra's sweeper fails the whole command."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code


def _validate(cfg: Any) -> int:
    from ludl.io.manifest import validate_cohort

    if not cfg.cohort:
        print("ludl validate: give the cohort folder, e.g. `ludl validate cohort=/data/my_cohort`", file=sys.stderr)
        return 2
    report = validate_cohort(Path(str(cfg.cohort)), deep=cfg.deep)
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

    overrides: dict[str, Any] = OmegaConf.to_container(cfg.overrides, resolve=True)  # type: ignore[assignment]
    preset: dict[str, Any] = OmegaConf.to_container(cfg.preset, resolve=True)  # type: ignore[assignment]
    name = str(preset.pop("name"))
    overrides["preset"] = preset  # the group's fields (equal to the packaged preset unless overridden)
    summary = run_synth(
        preset=name,
        n_patients=cfg.n_patients,
        seed=cfg.seed,
        out=Path(cfg.out),
        images=cfg.images,
        preview=cfg.preview,
        workers=cfg.workers,
        overrides=overrides,
        overwrite=cfg.overwrite,
    )
    print(summary.format())
    return 0


def _dosimetry_options(cfg: Any) -> Any:
    """The ground-truth `DosimetryOptions` of the ``dosimetry`` group (ludl/configs/dosimetry/default.yaml)."""
    from omegaconf import OmegaConf

    from ludl.dosimetry.options import DosimetryOptions

    return DosimetryOptions.from_mapping(OmegaConf.to_container(cfg.dosimetry, resolve=True))  # type: ignore[arg-type]


def _dosimetry(cfg: Any) -> int:
    from ludl.dosimetry.pipeline import run_dosimetry
    from ludl.io.manifest import load_manifest
    from ludl.io.provenance import manifest_provenance
    from ludl.io.provenance import update_output_record as record

    if cfg.cohort is None or cfg.patient is None:
        print("ludl dosimetry: give cohort=DIR patient=ID cycle=N out=DIR", file=sys.stderr)
        return 2
    cohort, patient, cycle, out = Path(cfg.cohort), str(cfg.patient), int(cfg.cycle), Path(cfg.out)
    options = _dosimetry_options(cfg)
    result = run_dosimetry(cohort, patient, cycle, out, options, overwrite=bool(cfg.overwrite))
    manifest = load_manifest(cohort)
    rows = manifest.select(patient_id=patient, cycle=cycle)
    settings = {"dosimetry": options.settings()}
    record(out, provenance=manifest_provenance(manifest, rows, settings, label=f"{patient} c{cycle}").to_dict())
    print(result.format())
    return 0


def _prepare(cfg: Any) -> int:
    from ludl.dosimetry.prepare import run_prepare

    if cfg.cohort is None:
        print("ludl prepare: give cohort=DIR out=DIR (and shard=i/n on a cluster)", file=sys.stderr)
        return 2
    summary = run_prepare(
        Path(cfg.cohort),
        Path(cfg.out),
        shard=cfg.shard,
        workers=cfg.workers,
        overwrite=cfg.overwrite,
        n_folds=cfg.n_folds,
        seed=cfg.seed,
        nifti=cfg.nifti,
        stp_baselines=cfg.stp_baselines,
        options=_dosimetry_options(cfg),
    )
    print(summary.format())
    return 0 if summary.ok else 1


def _evaluate(cfg: Any) -> int:
    from ludl.evaluation.job import run_evaluate

    if not cfg.run:
        print(
            "ludl evaluate: give the training run folder, e.g. `ludl evaluate run=outputs/train/default/fold0`",
            file=sys.stderr,
        )
        return 2
    result = run_evaluate(
        Path(str(cfg.run)),
        Path(str(cfg.prepared)) if cfg.prepared else None,
        Path(str(cfg.cohort)) if cfg.cohort else None,
        None if cfg.fold is None else int(cfg.fold),
        out_dir=Path(str(cfg.out)) if cfg.out else None,
        n_boot=int(cfg.n_boot),
        seed=int(cfg.seed),
    )
    print(result.format())
    return 0


# job name → (runner, one-line description)
JOBS: dict[str, tuple[Callable[[Any], int], str]] = {
    "synth": (_synth, "generate a synthetic cohort: digital patients, images, true dose, response"),
    "validate": (_validate, "check a cohort folder (manifest, files, geometry) and report every problem"),
    "dosimetry": (_dosimetry, "multi-time-point dosimetry of one patient-cycle: dose/TIA maps, RT Dose, regions.csv"),
    "prepare": (_prepare, "every patient-cycle of a cohort as prepared cases (resumable, shardable) + splits.json"),
    "evaluate": (
        _evaluate,
        "re-score a training run's held-out predictions: comparison tables and page, no retraining",
    ),
    "phantom": (_phantom, "multi-time-point voxel dosimetry of an analytic phantom, scored against its exact dose"),
}


def _usage() -> str:
    lines = ["usage: ludl <job> [key=value ...]   (Hydra overrides; also `python -m ludl`)", "", "jobs:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in JOBS.items()]
    lines += ["", "`ludl <job> --help` lists the job's keys with their defaults and meaning."]
    return "\n".join(lines)


def _job_help(job: str) -> str:
    """Help of one job: its keys, defaults and comments, from the packaged config."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from ludl.configs.keys import format_job_help
    from ludl.configs.schema import register_schemas

    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=job)
    values = OmegaConf.to_container(cfg, resolve=True)
    return format_job_help(job, JOBS[job][1], values)  # type: ignore[arg-type]


def _missing_plugin(overrides: Sequence[str]) -> str | None:
    """The `pip install` line for a launcher/sweeper the overrides select but is not installed; else None."""
    for override in overrides:
        group, _, option = override.lstrip("+").partition("=")
        module = _PLUGINS.get((group.strip(), option.strip()))
        if module is not None and importlib.util.find_spec(module) is None:
            return (
                f"ludl: {group}={option} needs the optional plugin {module.split('.')[-1]}; "
                "install it with `pip install 'ludl[sweep]'`"
            )
    return None


def _hydra_error_line(job: str, error: Exception) -> str:
    """Hydra's composition error (wrong type, missing option …) as one line."""
    text = ""
    for line in str(error).splitlines():
        line = line.strip()
        if line.startswith("Config search path"):
            break
        if line:
            text += (", " if text.endswith(":") or text.endswith(",") else "; " if text else "") + line
            text = text.replace(":, ", ": ")
    cause = error.__cause__
    if cause is not None and str(cause):
        text += ": " + str(cause).splitlines()[0]
    return f"ludl {job}: {text} (see `ludl {job} --help`)"


@contextmanager
def _hydra_raises(argv0: str, overrides: Sequence[str]) -> Iterator[None]:
    """Hydra's argv for the app, and its errors raised to us (not printed as tracebacks) while it runs."""
    saved_argv, saved_full = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [argv0, *overrides]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        sys.argv = saved_argv
        if saved_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full


def _run_job(job: str, overrides: list[str]) -> int:
    """Run the Hydra app of `job`; the process status (0 = every job of the run or multirun succeeded)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    from ludl.configs.schema import register_schemas
    from ludl.errors import LudlError

    runner, _ = JOBS[job]
    status = {"code": 0}
    interrupted = {"line": f"ludl {job}: {_INTERRUPTED}"}

    def _task(cfg: DictConfig) -> None:
        try:
            code = runner(cfg)
        except LudlError as error:
            print(f"ludl {job}: {error}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            interrupted["line"] = _interrupted_line(job, cfg)
            raise
        except Exception as error:
            if not _caused_by_ctrl_c(error):
                raise
            # Ctrl-C while a compiled module was being imported: pybind11 re-raises it as ImportError
            # ("initialization failed") from the KeyboardInterrupt — still the user's interrupt, not a failure
            interrupted["line"] = _interrupted_line(job, cfg)
            raise KeyboardInterrupt from error
        status["code"] = max(status["code"], code)
        # In a multirun the job may run in another process (joblib, SLURM): only an exception reaches the
        # sweeper, which re-raises it in this process once every job has ended.
        if code and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise JobFailed(f"ludl {job}: a job of the multirun failed (status {code}); see its message above", code)

    register_schemas()
    app = hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=job)(_task)
    try:
        with _hydra_raises(f"ludl-{job}", overrides):
            app()
    except JobFailed as failed:
        print(failed.message, file=sys.stderr)
        return max(failed.code, status["code"], 1)
    except (HydraException, OmegaConfBaseException) as error:
        print(_hydra_error_line(job, error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted["line"], file=sys.stderr)
        return EXIT_INTERRUPTED
    return status["code"]


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
    if any(arg in {"-h", "--help"} for arg in overrides):
        print(_job_help(job))
        raise SystemExit(0)
    from ludl.configs.keys import unknown_override_message

    refused = unknown_override_message(job, overrides) or _missing_plugin(overrides)
    if refused:
        print(refused, file=sys.stderr)
        raise SystemExit(2)
    try:
        code = _run_job(job, overrides)
    except KeyboardInterrupt:
        print(f"ludl {job}: {_INTERRUPTED}", file=sys.stderr)
        code = EXIT_INTERRUPTED
    raise SystemExit(code)
