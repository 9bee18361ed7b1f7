"""What a `ludl prepare` run reports: one `CaseOutcome` per case, the shard's `PrepareSummary` and its JSON file.

Every shard writes its own summary (``prepare_summary.json``, or ``prepare_summary.shard-i-of-n.json`` when sharded),
so that shards running at the same time never overwrite each other's; a shard reads the others' to learn which cases
failed there (`failed_in_other_shards`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ludl.io.prepared import CASES_FOLDER
from ludl.io.prepared_sidecar import to_jsonable

__all__ = ["SUMMARY_FILE", "CaseOutcome", "PrepareSummary", "failed_in_other_shards", "summary_path"]

SUMMARY_FILE = "prepare_summary.json"


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one patient-cycle: ``done``, ``skipped`` (already prepared) or ``failed`` (with reason)."""

    case_id: str
    patient_id: str
    cycle: int
    status: str
    reason: str = ""
    error_type: str = ""
    seconds: float = 0.0
    detail: str = ""  # traceback, for errors that are not LudlErrors (a bug rather than bad input)


@dataclass(frozen=True)
class PrepareSummary:
    """The run over one shard of a cohort.

    Attributes:
        cohort_dir, out_dir: input cohort and output folder (cases under ``out_dir/cases``).
        shard: (i, n).
        cases: one outcome per patient-cycle of this shard, in case order.
        splits_file, summary_file: ``splits.json`` and the summary JSON written.
        stp_file: ``stp_regions.csv`` when this shard wrote it (None: switched off, or cases still missing).
        dataset_file: ``dataset.json`` when this shard wrote it (None: cases still missing).
        notes: remarks worth a look; seconds: wall time.
    """

    cohort_dir: Path
    out_dir: Path
    shard: tuple[int, int]
    cases: tuple[CaseOutcome, ...]
    splits_file: Path | None = None
    summary_file: Path | None = None
    stp_file: Path | None = None
    dataset_file: Path | None = None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for c in self.cases if c.status == status)

    @property
    def n_done(self) -> int:
        """Cases prepared in this run."""
        return self._count("done")

    @property
    def n_skipped(self) -> int:
        """Cases already prepared (left as they were)."""
        return self._count("skipped")

    @property
    def n_failed(self) -> int:
        """Cases that failed (see `failures`)."""
        return self._count("failed")

    @property
    def failures(self) -> tuple[CaseOutcome, ...]:
        """The failed cases with their reasons."""
        return tuple(c for c in self.cases if c.status == "failed")

    @property
    def ok(self) -> bool:
        """True when no case failed."""
        return self.n_failed == 0

    def to_dict(self) -> dict[str, Any]:
        """The ``prepare_summary.json`` document."""
        out: dict[str, Any] = to_jsonable(
            {
                "cohort_dir": self.cohort_dir,
                "out_dir": self.out_dir,
                "shard": f"{self.shard[0]}/{self.shard[1]}",
                "n_cases": len(self.cases),
                "n_done": self.n_done,
                "n_skipped": self.n_skipped,
                "n_failed": self.n_failed,
                "seconds": round(self.seconds, 3),
                "splits_file": self.splits_file,
                "stp_file": self.stp_file,
                "dataset_file": self.dataset_file,
                "notes": list(self.notes),
                "cases": [asdict(c) for c in self.cases],
            }
        )
        return out

    def format(self) -> str:
        """A short report: counts, failures with reasons, where the cases are."""
        i, n = self.shard
        lines = [
            f"ludl prepare {self.cohort_dir} → {self.out_dir / CASES_FOLDER}" + (f"  (shard {i}/{n})" if n > 1 else ""),
            f"{len(self.cases)} case(s): {self.n_done} done, {self.n_skipped} skipped (already prepared), "
            f"{self.n_failed} failed   [{self.seconds:.1f} s]",
        ]
        for c in self.failures:
            lines.append(f"  FAILED {c.case_id} (patient {c.patient_id} cycle {c.cycle}): {c.error_type}: {c.reason}")
        lines += [f"note: {note}" for note in self.notes]
        if self.splits_file is not None:
            lines.append(f"splits: {self.splits_file}")
        if self.dataset_file is not None:
            lines.append(f"dataset: {self.dataset_file}")
        if self.stp_file is not None:
            lines.append(f"STP baselines: {self.stp_file}")
        if self.summary_file is not None:
            lines.append(f"summary: {self.summary_file}")
        return "\n".join(lines)


def summary_path(out: Path, index: int, count: int) -> Path:
    """The summary file of shard `index` of `count` in `out`."""
    # One file per shard: shards may run at the same time and must not overwrite each other's summary.
    return out / (SUMMARY_FILE if count == 1 else f"prepare_summary.shard-{index}-of-{count}.json")


def failed_in_other_shards(out: Path, index: int, count: int) -> set[tuple[str, int]]:
    """Cases the other shards' summaries (as last written) list as failed; unreadable summaries count as absent."""
    failed: set[tuple[str, int]] = set()
    for j in range(count):
        if j == index:
            continue
        try:
            document = json.loads(summary_path(out, j, count).read_text(encoding="utf-8"))
            failed |= {(str(c["patient_id"]), int(c["cycle"])) for c in document["cases"] if c["status"] == "failed"}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return failed
