"""CSV text of the cohort's tables and the one number format of their cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

__all__ = ["csv_text", "num_text"]


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A CSV document (``\\n`` line ends) with `header` and `rows`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def num_text(x: float) -> str:
    """A number as written in the truth tables: 10 significant digits."""
    return f"{x:.10g}"
