"""The cohort-level files of `ludl prepare`, written once every case of the cohort is settled.

A case is settled when it is prepared, or failed in this run or in another shard's summary. Once all are, the shard
that sees it writes ``dataset.json`` (`ludl.io.prepared_dataset`, from the sidecars) and builds ``stp_regions.csv``
(Hänscheid, Madsen and the prior-informed estimator at every scan time, `ludl.dosimetry.baselines.stp_cohort_table`)
from the sidecars and ``splits.json``, leaving failed cases out. Region statistics only: voxel dose maps of the STP
methods come from `run_stp_baselines(write_maps=True)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ludl.dosimetry.baselines import STP_FILE, stp_cohort_table, write_stp_table
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.prepare_case import case_id
from ludl.dosimetry.prepare_summary import CaseOutcome, failed_in_other_shards
from ludl.errors import InputError, LudlError
from ludl.io.prepared import CASES_FOLDER, SIDECAR, PreparedCase, case_is_complete, read_case
from ludl.io.prepared_dataset import DATASET_FILE, build_dataset_descriptor, write_dataset_descriptor
from ludl.io.prepared_sidecar import StpCase
from ludl.io.splits import Splits

__all__ = ["SettledCases", "settled_cases", "write_cohort_files"]


def _few(case_ids: Sequence[str], limit: int = 5) -> str:
    return ", ".join(case_ids[:limit]) + (f" … (+{len(case_ids) - limit})" if len(case_ids) > limit else "")


@dataclass(frozen=True, eq=False)
class SettledCases:
    """Where the cohort's cases stand once this shard is done: prepared (complete), left out (failed), waiting."""

    prepared: dict[tuple[str, int], PreparedCase]
    left_out: list[str]
    waiting: list[str]


def settled_cases(
    out: Path, cases: Sequence[tuple[str, int]], outcomes: Mapping[str, CaseOutcome], index: int, count: int
) -> SettledCases:
    """Every case of the cohort: prepared, failed here or in another shard's summary, or still waiting."""
    failed_here = {(o.patient_id, o.cycle) for o in outcomes.values() if o.status == "failed"}
    failed_elsewhere = failed_in_other_shards(out, index, count) if count > 1 else set()
    settled = SettledCases({}, [], [])
    for p, c in cases:
        cid = case_id(p, c)
        folder = out / CASES_FOLDER / cid
        if (p, c) in failed_here:  # a complete folder left from an earlier run is not this run's ground truth
            settled.left_out.append(cid)
        elif case_is_complete(folder):
            settled.prepared[(p, c)] = read_case(folder)
        elif (p, c) in failed_elsewhere:
            settled.left_out.append(cid)
        else:
            settled.waiting.append(cid)
    return settled


def _write_dataset(out: Path, settled: SettledCases, options: DosimetryOptions) -> tuple[Path | None, list[str]]:
    """``dataset.json`` from the sidecars of the prepared cases (failed cases left out); else None and why not."""
    if not settled.prepared:
        return None, [f"{DATASET_FILE} not written: no case was prepared"]
    try:
        descriptor = build_dataset_descriptor(list(settled.prepared.values()), options.settings())
    except LudlError as err:
        return None, [f"{DATASET_FILE} not written: {err}"]
    return write_dataset_descriptor(descriptor, out / DATASET_FILE), []


def _write_stp_baselines(out: Path, settled: SettledCases, splits: Splits) -> tuple[Path | None, list[str]]:
    """``stp_regions.csv`` from the sidecars of the prepared cases; else None and why not."""
    found: dict[tuple[str, int], StpCase] = {}
    without: list[str] = []
    for key, case in settled.prepared.items():
        entry = case.sidecar.get("stp_case")
        if entry is None:
            without.append(case.case_id)
            continue
        try:
            found[key] = StpCase.from_dict(entry)
        except InputError as err:
            return None, [f"{STP_FILE} not written: {case.path / SIDECAR}: {err}"]
    if without:
        return None, [
            f"{STP_FILE} not written: {len(without)} case(s) have no stp_case entry, prepared by an older ludl "
            f"({_few(without)}); rerun `ludl prepare … overwrite=true` for them"
        ]
    if not found:
        return None, [f"{STP_FILE} not written: no case was prepared"]
    try:
        rows = stp_cohort_table(found, splits)
    except LudlError as err:
        return None, [f"{STP_FILE} not written: {err}"]
    left_out = settled.left_out
    notes = [f"{STP_FILE}: {len(left_out)} failed case(s) left out ({_few(left_out)})"] if left_out else []
    return write_stp_table(rows, out / STP_FILE), notes


def write_cohort_files(
    out: Path, settled: SettledCases, splits: Splits, options: DosimetryOptions, stp_baselines: bool
) -> tuple[Path | None, Path | None, list[str]]:
    """``dataset.json`` and (when asked) ``stp_regions.csv`` once every case is settled; their paths and notes."""
    names = f"{DATASET_FILE} and {STP_FILE}" if stp_baselines else DATASET_FILE
    if settled.waiting:
        return (
            None,
            None,
            [
                f"{names} not written yet: {len(settled.waiting)} case(s) are not prepared ({_few(settled.waiting)}); "
                "the last shard to finish writes them (rerun any shard once all are done to write them)"
            ],
        )
    dataset_file, notes = _write_dataset(out, settled, options)
    stp_file = None
    if stp_baselines:
        stp_file, stp_notes = _write_stp_baselines(out, settled, splits)
        notes += stp_notes
    return dataset_file, stp_file, notes
