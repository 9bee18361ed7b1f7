"""The report as PDF: the HTML page printed by headless Chromium when one is installed, else the same tables and
figures laid out with matplotlib (each PDF says which). A missing or failing browser never fails the job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ludl.io.atomic import atomic_write
from ludl.report.content import ReportContent
from ludl.report.tables import Table, header_table, lesion_table, organ_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BROWSERS", "CHROMIUM_NOTE", "find_browser", "print_with_browser", "write_matplotlib_pdf"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")
CHROMIUM_NOTE = "This PDF was printed from the HTML report by headless Chromium."
_MATPLOTLIB_NOTE = "No Chromium found: this PDF is a matplotlib rendering of the HTML report's tables and figures."
_BROWSER_TIMEOUT_S = 120
_A4_INCH = (8.27, 11.69)
_ROWS_PER_PAGE = 42


def find_browser() -> str | None:
    """Path of a Chromium-family browser (``LUDL_CHROMIUM`` first), or None."""
    wanted = os.environ.get("LUDL_CHROMIUM")
    if wanted:
        return shutil.which(wanted) or (wanted if Path(wanted).is_file() else None)
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def print_with_browser(page_html: str, pdf_path: Path, browser: str) -> str | None:
    """Print the page to `pdf_path` (atomic) with headless Chromium; the reason on failure, None on success."""
    with tempfile.TemporaryDirectory(prefix="ludl-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(page_html, encoding="utf-8")
        target = Path(tmp) / "report.pdf"
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
               f"--user-data-dir={Path(tmp) / 'profile'}", f"--print-to-pdf={target}", page.as_uri()]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=_BROWSER_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"{browser} failed: {err}"
        if not target.is_file() or target.stat().st_size == 0:
            return f"{browser} wrote no PDF (exit {done.returncode}): {done.stderr.strip()[-300:]}"
        with atomic_write(pdf_path, suffix=".pdf") as tmp_pdf:
            shutil.copyfile(target, tmp_pdf)
    return None


def _text_page(plt: Any, title: str, paragraphs: Sequence[str]) -> Figure:
    fig = plt.figure(figsize=_A4_INCH)
    lines: list[str] = []
    for p in paragraphs:
        lines += textwrap.wrap(p, 95) or [""]
        lines.append("")
    fig.text(0.06, 0.96, title, fontsize=14, fontweight="bold", va="top")
    fig.text(0.06, 0.92, "\n".join(lines), fontsize=8, va="top", family="DejaVu Sans")
    return fig


def _table_pages(plt: Any, title: str, table: Table) -> list[Figure]:
    pages = []
    rows = [[t for c in row for t in (c.text, *[""] * (c.span - 1))] for row in table.rows]
    rows = rows or [["–"] * len(table.columns)]
    for start in range(0, len(rows), _ROWS_PER_PAGE):
        fig = plt.figure(figsize=_A4_INCH)
        fig.text(0.06, 0.96, title, fontsize=12, fontweight="bold", va="top")
        ax = fig.add_axes((0.04, 0.08, 0.92, 0.85))
        ax.axis("off")
        chunk = rows[start : start + _ROWS_PER_PAGE]
        headings = ["\n".join(textwrap.wrap(c, 14)) for c in table.columns]
        n = len(table.columns)
        widths = [0.22] + [0.78 / max(n - 1, 1)] * (n - 1)  # the region name needs the room
        shown = ax.table(cellText=chunk, colLabels=headings, loc="upper center", cellLoc="right", colWidths=widths)
        shown.auto_set_font_size(False)
        shown.set_fontsize(6.5)
        shown.scale(1.0, 1.25)
        for (r, c), cell in shown.get_celld().items():
            if c == 0:
                cell.set_text_props(ha="left")
                cell.PAD = 0.02
            if r == 0:
                cell.set_height(cell.get_height() * 2.4)
                cell.set_facecolor("#eef1f5")
        fig.text(0.06, 0.05, "\n".join(textwrap.fill(n, 120) for n in table.footnotes), fontsize=6, va="bottom")
        pages.append(fig)
    return pages


def write_matplotlib_pdf(
    content: ReportContent,
    pdf_path: Path,
    figure_makers: Sequence[Callable[[ReportContent], Figure | None]],
    summary: Sequence[str],
    reason: str = "",
) -> Path:
    """The PDF without a browser: header, warnings and key findings, the tables, then every figure (atomic)."""
    from ludl.report.figures import _pyplot

    plt = _pyplot()
    from matplotlib.backends.backend_pdf import PdfPages

    header = [f"{row[0].text}: {row[1].text}" for row in header_table(content.header).rows]
    note = _MATPLOTLIB_NOTE + (f" ({reason})" if reason else "")
    with atomic_write(pdf_path, suffix=".pdf") as tmp, PdfPages(tmp) as pdf:
        pages = [_text_page(plt, content.title, [*header, "", *summary, "", note])]
        pages += _table_pages(plt, "Organs at risk", organ_table(content))
        lesions = lesion_table(content)
        if lesions.rows:
            pages += _table_pages(plt, "Lesions, highest dose first", lesions)
        for page in pages:
            pdf.savefig(page)
            plt.close(page)
        for make in figure_makers:
            fig = make(content)
            if fig is not None:
                pdf.savefig(fig)
                plt.close(fig)
    return pdf_path
