"""Progress of a job over cases or patients: a rich bar on a terminal, plain timed lines in logs and pipes.

    with progress(len(cases), "prepare", unit="case") as step:
        for case in cases:
            ...
            step(note=case.case_id)

On a terminal (stderr is a TTY) a rich progress bar redraws in place; otherwise — a SLURM log, a CI job, a pipe —
each step writes one line ``prepare: 3/40 case (7 %) 12.4 s P03_c1`` so a log shows how far a job got and how fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from ludl.errors import InputError

__all__ = ["ProgressStep", "progress"]

ProgressStep = Callable[..., None]


def _plain_step(total: int | None, label: str, unit: str, stream: TextIO) -> tuple[ProgressStep, Callable[[], None]]:
    start = time.perf_counter()
    done = 0

    def step(advance: int = 1, note: str = "") -> None:
        nonlocal done
        done += advance
        share = f" ({100.0 * done / total:.0f} %)" if total else ""
        of_total = f"/{total}" if total is not None else ""
        elapsed_s = time.perf_counter() - start
        tail = f" {note}" if note else ""
        # one write with its newline: print() writes text and end apart, and a Ctrl-C between them glued the job's
        # "interrupted" line onto this one
        stream.write(f"{label}: {done}{of_total} {unit}{share} {elapsed_s:.1f} s{tail}\n")
        stream.flush()

    return step, lambda: None


def _rich_step(total: int | None, label: str, unit: str, stream: TextIO) -> tuple[ProgressStep, Callable[[], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(f"{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(file=stream),
        transient=False,
    )
    task = bar.add_task(label, total=total, note="")
    bar.start()

    def step(advance: int = 1, note: str = "") -> None:
        bar.update(task, advance=advance, note=note)

    return step, bar.stop


@contextmanager
def progress(
    total: int | None, label: str, *, unit: str = "item", stream: TextIO | None = None, bar: bool | None = None
) -> Iterator[ProgressStep]:
    """Yield ``step(advance=1, note="")`` reporting progress of `total` units (None = unknown).

    Args:
        total: number of units the job will do, or None.
        label: job name shown first, e.g. ``"prepare"``.
        unit: what one unit is, e.g. ``"case"``.
        stream: where to write (default: stderr, so stdout keeps the job's result).
        bar: force the rich bar (True) or plain lines (False); None = the bar only on a terminal.
    """
    if total is not None and total < 0:
        raise InputError(f"progress of {label!r}: total must be ≥ 0 or None, got {total}")
    out: Any = sys.stderr if stream is None else stream
    use_bar = bool(getattr(out, "isatty", lambda: False)()) if bar is None else bar
    step, stop = (_rich_step if use_bar else _plain_step)(total, label, unit, out)
    try:
        yield step
    finally:
        stop()
