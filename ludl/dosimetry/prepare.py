"""`ludl prepare`: every patient-cycle of a cohort as a prepared case (docs/cohort-format.md; "Scaling out" in
docs/architecture.md).

Each patient-cycle with SPECT rows becomes one case folder (`ludl.dosimetry.prepare_case.prepare_case`: the ground
truth of the multi-time-point pipeline mapped onto every time point's own SPECT grid, the PET, the typed sidecar).
Finished cases are skipped when current — their recorded provenance (input checksums, settings, code version;
`ludl.io.provenance`) equals what they would be computed from now — and recomputed otherwise. The output folder
belongs to one cohort (``provenance.json``, with the dosimetry settings): another cohort's folder, or other dosimetry
settings, are refused unless ``overwrite=true``; case folders of cases the cohort no longer has are removed. A case
is written whole or not at all, a case failing with a `LudlError` is recorded with
its reason in ``prepare_summary.json`` (`ludl.dosimetry.prepare_summary`) while the others finish, and the case list
(sorted as the manifest orders patients) is sharded ``[i::n]`` for ``shard=i/n``. ``splits.json`` (patient-level
folds stratified by ``non_response``) depends only on the manifest, outcomes and seed, so every shard writes the same
file.

Once every case of the cohort is settled (prepared, or failed in this run or in another shard's summary), the shard
that sees it writes ``dataset.json`` and ``stp_regions.csv`` (`ludl.dosimetry.prepare_outputs`). Each shard writes
its summary before it looks, so the last one to finish sees the others; two that write them write the same content.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ludl.dosimetry.baselines import STP_FILE
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.prepare_case import case_id, case_provenance, prepare_case
from ludl.dosimetry.prepare_outputs import settled_cases, write_cohort_files
from ludl.dosimetry.prepare_summary import SUMMARY_FILE, CaseOutcome, PrepareSummary, summary_path
from ludl.errors import InputError, LudlError
from ludl.io.atomic import atomic_write_text
from ludl.io.cohort import CohortConfig, load_cohort_config
from ludl.io.manifest import Manifest, load_manifest
from ludl.io.outcomes import load_outcomes
from ludl.io.prepared import CASES_FOLDER, case_is_complete, case_provenance_record
from ludl.io.prepared_dataset import DATASET_FILE
from ludl.io.provenance import Provenance, claim_output_dir, update_output_record
from ludl.io.splits import SPLITS_FILE, Splits, make_splits, write_splits
from ludl.io.truth import read_truth

__all__ = [
    "CASES_FOLDER",
    "SUMMARY_FILE",
    "CaseOutcome",
    "PrepareSummary",
    "case_id",
    "parse_shard",
    "prepare_case",
    "run_prepare",
    "shard_cases",
]


# ------------------------------------------------------------------------------------------------ case list


def parse_shard(shard: str | Sequence[int]) -> tuple[int, int]:
    """``"i/n"`` (or ``(i, n)``) → (i, n) with 0 ≤ i < n."""
    try:
        if isinstance(shard, str):
            left, right = shard.split("/")
            index, count = int(left), int(right)
        else:
            index, count = (int(v) for v in shard)
    except (ValueError, TypeError) as err:
        raise InputError(f"shard={shard!r}: give it as i/n, e.g. shard=0/4 for the first of four shards") from err
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard={shard!r}: need 0 ≤ i < n (shards are numbered 0/n … {max(count, 1) - 1}/n)")
    return index, count


def shard_cases(cases: Sequence[tuple[str, int]], index: int, count: int) -> list[tuple[str, int]]:
    """The cases of shard `index` of `count`: ``cases[index::count]`` (the manifest's order is deterministic)."""
    return list(cases)[index::count]


def _cohort_cases(manifest: Manifest) -> list[tuple[str, int]]:
    """Patient-cycles with SPECT rows, patients in natural order (P2 before P10), cycles ascending."""
    return [(p, c) for p, c in manifest.patient_cycles() if manifest.select(patient_id=p, cycle=c, role="spect")]


# ------------------------------------------------------------------------------------------------ cohort


def _prepare_one(
    cohort_dir: Path,
    patient_id: str,
    cycle: int,
    cases_dir: Path,
    manifest: Manifest,
    config: CohortConfig,
    nifti: bool,
    truth: Mapping[str, tuple[float, float]],
    options: DosimetryOptions,
    provenance: Provenance | None,
    why: str,
) -> CaseOutcome:
    """One case, never raising for bad input: the outcome carries the reason (or why a finished case was redone)."""
    cid = case_id(patient_id, cycle)
    start = time.perf_counter()
    try:
        prepare_case(
            cohort_dir,
            patient_id,
            cycle,
            cases_dir,
            nifti=nifti,
            overwrite=True,  # a stale, incomplete or older-format folder at the destination is replaced
            manifest=manifest,
            config=config,
            truth=truth,
            options=options,
            provenance=provenance,
        )
    except LudlError as err:
        return CaseOutcome(cid, patient_id, cycle, "failed", str(err), type(err).__name__, time.perf_counter() - start)
    except Exception as err:  # a bug, not bad input: recorded with its traceback so the other cases still finish
        return CaseOutcome(
            cid,
            patient_id,
            cycle,
            "failed",
            f"unexpected error (please report): {err}",
            type(err).__name__,
            time.perf_counter() - start,
            traceback.format_exc(),
        )
    return CaseOutcome(cid, patient_id, cycle, "done", why, seconds=time.perf_counter() - start)


def _outcomes(jobs: list[tuple[Any, ...]], workers: int) -> Iterator[CaseOutcome]:
    if workers == 1:
        for job in jobs:
            yield _prepare_one(*job)
        return
    from joblib import Parallel, delayed

    # loky processes (patients are the parallel unit); joblib limits each worker's BLAS threads to cores / workers.
    parallel = Parallel(n_jobs=workers, return_as="generator_unordered")
    yield from parallel(delayed(_prepare_one)(*job) for job in jobs)


def _run_jobs(jobs: list[tuple[Any, ...]], workers: int | None) -> dict[str, CaseOutcome]:
    """Run the case jobs (in `workers` processes; None: all cores) with a progress bar; outcomes by case id."""
    from ludl.progress import progress

    n_workers = max(1, min(int(workers) if workers is not None else (os.cpu_count() or 1), len(jobs) or 1))
    results: dict[str, CaseOutcome] = {}
    with progress(len(jobs), "prepare", unit="case") as step:
        for outcome in _outcomes(jobs, n_workers):
            results[outcome.case_id] = outcome
            reason = outcome.reason.splitlines()[0] if outcome.reason else ""
            step(note=f"{outcome.case_id} {outcome.status}" + (f": {reason}" if outcome.status == "failed" else ""))
    return results


def _make_splits(cohort: Path, cases: Sequence[tuple[str, int]], n_folds: int, seed: int) -> tuple[Splits, list[str]]:
    """Patient folds (at most one per patient) stratified by ``non_response``; with a note when folds were capped."""
    patients = sorted({p for p, _ in cases})
    folds = min(n_folds, len(patients))
    notes = (
        []
        if folds == n_folds
        else [f"n_folds={n_folds} but the cohort has {len(patients)} patient(s): {folds} fold(s) written"]
    )
    return make_splits(patients, load_outcomes(cohort), n_folds=folds, seed=seed), notes


def run_prepare(
    cohort_dir: str | Path,
    out_dir: str | Path,
    *,
    shard: str | Sequence[int] = "0/1",
    workers: int | None = None,
    overwrite: bool = False,
    n_folds: int = 5,
    seed: int = 0,
    nifti: bool = False,
    stp_baselines: bool = True,
    options: DosimetryOptions | None = None,
) -> PrepareSummary:
    """Prepare every patient-cycle of a cohort (one shard of it) as prepared cases, with ``splits.json``.

    Args:
        cohort_dir: cohort folder (cohort.yaml, manifest.csv, optional outcomes.csv).
        out_dir: output folder: ``cases/<case_id>/`` (see `ludl.io.prepared`), ``splits.json``, ``dataset.json``,
            ``prepare_summary.json`` (``prepare_summary.shard-i-of-n.json`` when sharded) and ``stp_regions.csv``.
        shard: ``"i/n"``: this process prepares cases ``[i::n]`` of the sorted case list.
        workers: parallel processes (joblib); None: all cores, 1: in this process.
        overwrite: redo every case; also replace another cohort's results in `out_dir`, or cases prepared with other
            dosimetry settings (both refused otherwise). A case whose inputs changed is redone without it.
        n_folds, seed: patient-level folds of ``splits.json`` (n_folds is capped at the number of patients).
        nifti: also write NIfTI copies of every array, for viewing.
        stp_baselines: when every case of the cohort is prepared (or failed), write ``stp_regions.csv``: the STP
            baselines of every case from the sidecars and ``splits.json`` (`ludl.dosimetry.baselines`).
        options: the ground-truth dosimetry settings (`DosimetryOptions`), as for ``ludl dosimetry``.

    Returns:
        The summary (also written as JSON); failed cases are listed with their reasons, never raised.

    Raises:
        LudlError: problems with the whole run (cohort files, options, shard; `out_dir` of another cohort, or of
            other dosimetry settings, without `overwrite`), before any case is prepared.
    """
    start = time.perf_counter()
    index, count = parse_shard(shard)
    options = DosimetryOptions() if options is None else options
    _require_counts(workers, n_folds)
    cohort = Path(cohort_dir)
    out = Path(out_dir)
    config = load_cohort_config(cohort)
    manifest = load_manifest(cohort, config)
    cases = _cohort_cases(manifest)
    if not cases:
        raise InputError(f"{manifest.file} lists no SPECT rows: nothing to prepare")
    truth = read_truth(cohort)  # read once, here: a broken truth table stops the run before any case
    _claim(out, cohort, options, bool(overwrite))
    removed = _remove_earlier_files(out, {case_id(p, c) for p, c in cases}, count)
    splits, notes = _make_splits(cohort, cases, int(n_folds), int(seed))
    if removed:
        notes.append(f"removed what an earlier run left that this cohort does not have: {_few(removed)}")

    mine = shard_cases(cases, index, count)
    job = _ShardJob(cohort, out / CASES_FOLDER, manifest, config, truth, bool(nifti), bool(overwrite), options)
    results = _prepare_shard(job, mine, workers)
    redone = [f"{o.case_id} {o.reason}" for o in results.values() if o.status == "done" and o.reason]
    notes += [f"{len(redone)} finished case(s) recomputed: {_few(redone, 3)}"] if redone else []
    ordered = tuple(results[case_id(p, c)] for p, c in mine)
    # Written only beside a prepared case: a run whose every case failed leaves no output that looks usable.
    prepared_any = any(o.status != "failed" for o in results.values())
    splits_file = write_splits(splits, out / SPLITS_FILE) if prepared_any else None
    summary_file = summary_path(out, index, count)
    summary = PrepareSummary(
        cohort_dir=cohort,
        out_dir=out,
        shard=(index, count),
        cases=ordered,
        splits_file=splits_file,
        summary_file=summary_file,
        notes=tuple(notes),
        seconds=time.perf_counter() - start,
    )
    # Written before looking at the other shards, so that of two shards finishing together the later one sees this
    # shard's failures.
    _write_summary(summary_file, summary)
    settled = settled_cases(out, cases, results, index, count)
    dataset_file, stp_file, more = write_cohort_files(out, settled, splits, options, bool(stp_baselines))
    summary = replace(
        summary,
        dataset_file=dataset_file,
        stp_file=stp_file,
        notes=(*notes, *more),
        seconds=time.perf_counter() - start,
    )
    _write_summary(summary_file, summary)
    return summary


# What `ludl prepare` writes in its output folder (recorded, so that another owner with overwrite=true removes them).
PREPARE_OUTPUTS = (CASES_FOLDER, "splits.json", "dataset.json", "stp_regions.csv", "prepare_summary*.json")


def _few(items: Sequence[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" … (+{len(items) - limit})" if len(items) > limit else "")


def _claim(out: Path, cohort: Path, options: DosimetryOptions, overwrite: bool) -> None:
    """Make `out` this cohort's prepared folder; refuse another cohort's, or other dosimetry settings, unless asked.

    Raises:
        InputError: `out` holds another cohort's cases (or files ludl did not write), or cases prepared with other
            dosimetry settings, and `overwrite` is false.
    """
    owner = {"job": "prepare", "cohort": str(cohort.resolve())}
    previous = claim_output_dir(out, owner, overwrite=overwrite, outputs=PREPARE_OUTPUTS)
    settings = options.settings()
    recorded = (previous or {}).get("dosimetry")
    if recorded is not None and recorded != settings and not overwrite:
        changed = ", ".join(
            f"{k}={recorded.get(k)!r} → {settings.get(k)!r}"
            for k in sorted(set(recorded) | set(settings))
            if recorded.get(k) != settings.get(k)
        )
        raise InputError(
            f"out={out} holds cases prepared with other dosimetry settings ({changed}); pass overwrite=true to "
            "recompute every case with the new settings, or choose another out= folder"
        )
    update_output_record(out, dosimetry=settings)


def _remove_earlier_files(out: Path, case_ids: set[str], count: int) -> list[str]:
    """Remove case folders of cases the cohort no longer has, and summaries of another shard count; their names."""
    removed: list[str] = []
    cases_dir = out / CASES_FOLDER
    if cases_dir.is_dir():
        for entry in sorted(cases_dir.iterdir()):
            # A hidden ".<case_id>.tmp-…"/".old-…" folder of a killed writer belongs to its case.
            name = entry.name[1:].split(".tmp-")[0].split(".old-")[0] if entry.name.startswith(".") else entry.name
            if entry.is_dir() and name not in case_ids:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(f"{CASES_FOLDER}/{entry.name}")
    keep = {summary_path(out, i, count).name for i in range(count)}
    for entry in sorted(out.glob("prepare_summary*.json")):
        if entry.name not in keep:
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def _require_counts(workers: int | None, n_folds: int) -> None:
    """Reject worker and fold counts below 1 before anything is read or written."""
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers must be ≥ 1 or None (all cores), got {workers}")
    if int(n_folds) < 1:
        raise InputError(f"n_folds must be ≥ 1, got {n_folds}")


@dataclass(frozen=True, eq=False)
class _ShardJob:
    """What every case of a shard is prepared with (the cohort files are read once, by `run_prepare`)."""

    cohort: Path
    cases_dir: Path
    manifest: Manifest
    config: CohortConfig
    truth: Mapping[tuple[str, int], Mapping[str, tuple[float, float]]]
    nifti: bool
    overwrite: bool
    options: DosimetryOptions

    def provenance(self, patient_id: str, cycle: int) -> Provenance | None:
        """The case's provenance now; None when an input cannot be hashed (the case then fails with the reason)."""
        try:
            return case_provenance(
                self.manifest,
                patient_id,
                cycle,
                options=self.options,
                nifti=self.nifti,
                truth=self.truth.get((patient_id, cycle), {}),
            )
        except LudlError:
            return None

    def arguments(self, patient_id: str, cycle: int, provenance: Provenance | None, why: str) -> tuple[Any, ...]:
        """The arguments of `_prepare_one` for one case (a plain tuple: it travels to worker processes)."""
        return (
            self.cohort, patient_id, cycle, self.cases_dir, self.manifest, self.config, self.nifti,
            self.truth.get((patient_id, cycle), {}), self.options, provenance, why,
        )  # fmt: skip


def _why_redo(folder: Path, now: Provenance | None, overwrite: bool) -> str | None:
    """None when the case at `folder` is finished and current; else why it is (re)computed ("" for a new case)."""
    if not case_is_complete(folder):
        return ""
    if overwrite:
        return "recomputed: overwrite=true"
    recorded = case_provenance_record(folder)
    if recorded is None:
        return "recomputed: its case.json records no provenance (prepared by an older ludl)"
    if now is None:
        return "recomputed: an input cannot be read"
    changes = Provenance.from_dict(recorded).differences(now)
    return f"recomputed: {'; '.join(changes)}" if changes else None


def _prepare_shard(job: _ShardJob, mine: Sequence[tuple[str, int]], workers: int | None) -> dict[str, CaseOutcome]:
    """Prepare this shard's cases (finished, current ones skipped unless overwriting); outcomes by case id.

    A finished case is current when its recorded provenance (input checksums, settings, code version) equals what
    it would be computed from now; otherwise it is recomputed, with the reason in its outcome.
    """
    job.cases_dir.mkdir(exist_ok=True)
    results: dict[str, CaseOutcome] = {}
    todo: list[tuple[Any, ...]] = []
    for p, c in mine:  # current cases are skipped here, so that a resumed run starts no worker for them
        cid = case_id(p, c)
        now = job.provenance(p, c)
        why = _why_redo(job.cases_dir / cid, now, job.overwrite)
        if why is None:
            results[cid] = CaseOutcome(cid, p, c, "skipped")
        else:
            todo.append(job.arguments(p, c, now, why))
    if todo:  # the cohort files of an earlier run must not stand beside recomputed cases; the last shard rewrites them
        for name in (DATASET_FILE, STP_FILE):
            (job.cases_dir.parent / name).unlink(missing_ok=True)
    results.update(_run_jobs(todo, workers))
    return results


def _write_summary(path: Path, summary: PrepareSummary) -> None:
    atomic_write_text(path, json.dumps(summary.to_dict(), indent=1, allow_nan=False) + "\n")
