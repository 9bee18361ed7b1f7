"""Generate and write a synthetic cohort in the institutional format, with its truth.

The format: docs/cohort-format.md.

One patient = one independent random stream (`patient_rng(seed, index)` and sub-streams of the same seed
sequence), so patients can be generated in any order and in parallel and the cohort is byte-identical for the
same configuration and seed. Written:

- ``cohort.yaml``, ``manifest.csv``, ``outcomes.csv`` (the institutional part; passes `validate_cohort`);
- images per patient and cycle under ``SYN0001/c1/`` … (NIfTI, or the SPECT beds as multi-frame NM DICOM
  folders; SPECT in Bq/mL, CT/PET-CT in HU, PET in SUV, label map on the truth grid at the reference time);
- ``truth/``: ``regions.csv`` (both cycles), ``response.csv``, ``single_scan_reference.csv`` (per region and
  scan time: true TIA and dose beside the single-scan reference's, `ludl.synth.reference`), ``patients.csv``
  (hidden generator variables) and per patient the true TIA and dose maps of cycle 1 on the fine truth grid.

Nothing outside ``truth/`` carries a generator variable: patient IDs are the index, file names carry only the
role and nominal time point, scan times are jittered, lesions are numbered in random order.
With ``images=False`` only kinetics, the truth tables (region doses from self-dose S values) and the response
are produced: fast enough for hundreds of patients in tests.

Modules: `config` (`SynthConfig`, `make_config`), `patient` (one patient), `protocol` (acquisition draws),
`writer` (one patient's images and truth maps), `pet_suv`, `labels` (written label values), `tables` (CSV text);
this module writes the cohort-level files and runs the patients in parallel.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text
from ludl.io.cohort import CohortConfig, write_cohort_config
from ludl.io.manifest import write_manifest
from ludl.io.outcomes import OUTCOME_COLUMNS
from ludl.io.regions import lesion_name
from ludl.io.truth import write_truth_regions
from ludl.synth.config import SynthConfig, make_config, patient_id
from ludl.synth.labels import cohort_label_values
from ludl.synth.patient import PatientResult, generate_patient
from ludl.synth.reference import DEFAULT_CACHE_DIR, REFERENCE_COLUMNS, load_or_train_reference, reference_cells
from ludl.synth.response import RESPONSE_COLUMNS
from ludl.synth.tables import csv_text, num_text

__all__ = [
    "PatientResult",
    "SynthConfig",
    "SynthSummary",
    "clear_earlier_cohort",
    "generate_cohort",
    "generate_patient",
    "make_config",
    "patient_id",
    "run_synth",
]

FloatArray = npt.NDArray[np.float64]

_DESCRIPTION = "ludl synthetic cohort"  # how cohort.yaml tells a folder `ludl synth` wrote
# The top-level entries a synthetic cohort has (an earlier run's are removed before a new run writes).
_SYNTH_FILES = frozenset({"cohort.yaml", "manifest.csv", "outcomes.csv"})
_SYNTH_FOLDER = re.compile(r"^(SYN\d{4,}|truth|preview)$")


@dataclass(frozen=True)
class SynthSummary:
    """What `generate_cohort` produced; `.format()` gives a few lines for the terminal."""

    out_dir: Path
    preset: str
    n_patients: int
    images: bool
    seconds: float
    seconds_per_patient: float
    non_response_rate: float
    achievable_auc: float
    oracle_auc: float
    n_lesions_median: float
    n_files: int

    def format(self) -> str:
        """Plain-text summary."""
        return "\n".join(
            [
                f"synthetic cohort written to {self.out_dir}",
                f"  preset            {self.preset} ({'images' if self.images else 'no images'})",
                f"  patients          {self.n_patients} (median {self.n_lesions_median:g} lesions)",
                f"  non-response rate {self.non_response_rate:.2f}   achievable AUC {self.achievable_auc:.3f}   "
                f"dosimetry-oracle AUC {self.oracle_auc:.3f}",
                f"  time              {self.seconds:.1f} s ({self.seconds_per_patient:.2f} s per patient)",
                f"  files             {self.n_files}",
            ]
        )


def _auc(scores: FloatArray, labels: npt.NDArray[np.bool_]) -> float:
    """ROC AUC by the rank-sum (Mann–Whitney) formula, ties counted half; NaN without both classes."""
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def _cohort_config(config: SynthConfig, label_values: Mapping[str, int] | None) -> CohortConfig:
    """The `cohort.yaml` of a synthetic cohort."""
    return CohortConfig(
        name=config.name,
        nuclide="Lu-177",
        description=f"{_DESCRIPTION}, preset {config.preset.name}",
        sensitivity_cps_per_mbq=9.4,  # docs/physics.md §6 system volume sensitivity (only used for count images)
        fwhm_mm=config.preset.fwhm_mm,
        labels=dict(label_values or {}),
    )


def _write_reference(
    config: SynthConfig, truth: Path, results: Sequence[PatientResult], cache_dir: str | os.PathLike[str] | None
) -> None:
    """``truth/single_scan_reference.csv``: the reference (trained or read from `cache_dir`) on every patient."""
    reference = load_or_train_reference(
        config.priors,
        config.reference_times_h,
        cache_dir,
        n_patients=config.reference_population,
        workers=config.workers,
    )
    cells = reference_cells([(res.patient_id, res.reference) for res in results if res.reference], reference)
    atomic_write_text(truth / "single_scan_reference.csv", csv_text(REFERENCE_COLUMNS, cells))


def _write_cohort_yaml(config: SynthConfig, out: Path) -> None:
    """``cohort.yaml``, written first: it marks the folder as a synthetic cohort, even when a run is cut short."""
    labels = cohort_label_values(config.priors.lesions.max_lesions) if config.images else None
    write_cohort_config(_cohort_config(config, labels), out / "cohort.yaml")


def _is_synthetic_cohort(out: Path) -> bool:
    """True when `out` holds a ``cohort.yaml`` that ``ludl synth`` wrote."""
    import yaml

    try:
        document = yaml.safe_load((out / "cohort.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(document, dict) and str(document.get("description", "")).startswith(_DESCRIPTION)


def clear_earlier_cohort(out: Path, *, overwrite: bool = False) -> list[str]:
    """Remove what an earlier ``ludl synth`` wrote in `out` (so no patient folder of a larger run stays); their names.

    Only the names a synthetic cohort has are removed (``cohort.yaml``, ``manifest.csv``, ``outcomes.csv``,
    ``truth/``, ``preview/``, ``SYN0001/`` …); Hydra's ``.ludl`` log folder and anything else stay.

    Raises:
        InputError: `out` is not empty and is not a synthetic cohort (a clinical cohort, a prepared folder …), unless
            `overwrite`, in which case the cohort is written into it and nothing is removed.
    """
    if not out.is_dir():
        return []
    entries = sorted(p for p in out.iterdir() if p.name != ".ludl")
    if not entries:
        return []
    if not _is_synthetic_cohort(out):
        if overwrite:
            return []
        names = ", ".join(p.name for p in entries[:4]) + (f" … (+{len(entries) - 4})" if len(entries) > 4 else "")
        raise InputError(
            f"out={out} is not empty ({names}) and is not a synthetic cohort `ludl synth` wrote; choose a new or empty "
            "out= folder, or pass overwrite=true to write the cohort into it"
        )
    removed = []
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink() and _SYNTH_FOLDER.match(entry.name):
            shutil.rmtree(entry)
        elif entry.is_file() and entry.name in _SYNTH_FILES:
            entry.unlink()
        else:
            continue
        removed.append(entry.name)
    return removed


def _write_cohort_files(
    config: SynthConfig,
    out: Path,
    results: Sequence[PatientResult],
    reference_cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
) -> int:
    """Write the cohort-level files but ``cohort.yaml`` (written first); returns how many files the cohort has."""
    n = 1
    rows = [r for res in results for r in res.manifest_rows]
    if rows:
        write_manifest(rows, out / "manifest.csv")
        n += 1
    outcomes = [
        [res.patient_id, num_text(res.psa_baseline), num_text(res.psa_week12), "1" if res.non_response else "0"]
        for res in results
    ]
    atomic_write_text(out / "outcomes.csv", csv_text(OUTCOME_COLUMNS, outcomes))
    truth = out / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    region_cells = [row.cells() for res in results for row in res.region_rows]
    write_truth_regions(region_cells, truth / "regions.csv")
    response_cells = [[res.patient_id, num_text(res.p_true), num_text(res.p_observable)] for res in results]
    atomic_write_text(truth / "response.csv", csv_text(RESPONSE_COLUMNS, response_cells))
    latent_keys = tuple(results[0].latent)
    latent_cells = [[res.patient_id, *(num_text(res.latent[k]) for k in latent_keys)] for res in results]
    atomic_write_text(truth / "patients.csv", csv_text(("patient_id", *latent_keys), latent_cells))
    lesion_cells = [
        [res.patient_id, lesion_name(j + 1), num_text(p), num_text(u)]
        for res in results
        for j, (p, u) in enumerate(zip(res.lesion_pet_log_factor, res.lesion_log_uptake_24h, strict=True))
    ]
    atomic_write_text(
        truth / "lesion_pet.csv",
        csv_text(("patient_id", "region", "log_pet_factor", "log_uptake_24h_mbq_per_ml"), lesion_cells),
    )
    if config.single_scan_reference:
        _write_reference(config, truth, results, reference_cache_dir)
        n += 1
    return n + 5


def _worker_init() -> None:
    # One BLAS/FFT thread per process: patients are the parallel unit.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _one(args: tuple[SynthConfig, int, Path]) -> PatientResult:
    """One patient of a worker pool (a top-level function: it must pickle)."""
    config, index, out = args
    return generate_patient(config, index, out)


def generate_cohort(
    config: SynthConfig,
    out_dir: str | os.PathLike[str],
    *,
    reference_cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
    overwrite: bool = False,
) -> SynthSummary:
    """Generate every patient (in parallel) and write the cohort folder `out_dir` (created).

    An earlier synthetic cohort in `out_dir` is removed first (`clear_earlier_cohort`): no file of it stays beside
    the new one. A folder that is not empty and not a synthetic cohort is refused unless `overwrite`.
    `reference_cache_dir`: where the single-scan reference's trained models are cached (None: train in memory).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    clear_earlier_cohort(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    _write_cohort_yaml(config, out)
    workers = config.workers or os.cpu_count() or 1
    workers = max(1, min(workers, config.n_patients))
    jobs = [(config, i, out) for i in range(config.n_patients)]
    from ludl.progress import progress

    results: list[PatientResult] = []
    with progress(config.n_patients, "synth", unit="patient") as step:
        if workers == 1:
            for job in jobs:
                results.append(_one(job))
                step(note=results[-1].patient_id)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
                for res in pool.map(_one, jobs, chunksize=max(1, config.n_patients // (4 * workers))):
                    results.append(res)
                    step(note=res.patient_id)
    n_files = _write_cohort_files(config, out, results, reference_cache_dir)
    if config.images and config.preview:
        from ludl.synth.preview import write_previews

        n_files += write_previews(out, [r.patient_id for r in results])
    n_files += sum(len(r.manifest_rows) for r in results)
    labels = np.array([r.non_response for r in results], dtype=bool)
    probs = np.array([r.p_true for r in results])
    seconds = time.perf_counter() - t0
    return SynthSummary(
        out_dir=out,
        preset=config.preset.name,
        n_patients=config.n_patients,
        images=config.images,
        seconds=seconds,
        seconds_per_patient=float(np.mean([r.seconds for r in results])),
        non_response_rate=float(labels.mean()),
        achievable_auc=_auc(probs, labels),
        oracle_auc=_auc(np.array([r.p_observable for r in results]), labels),
        n_lesions_median=float(np.median([r.latent["n_lesions"] for r in results])),
        n_files=n_files,
    )


def run_synth(
    preset: str,
    n_patients: int,
    seed: int,
    out: Path,
    images: bool = True,
    preview: bool = False,
    workers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    reference_cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
    overwrite: bool = False,
) -> SynthSummary:
    """The `ludl synth` job: build the configuration and generate the cohort into `out` (see `generate_cohort`)."""
    config = make_config(preset, n_patients, seed, images=images, preview=preview, workers=workers, overrides=overrides)
    return generate_cohort(config, out, reference_cache_dir=reference_cache_dir, overwrite=overwrite)
