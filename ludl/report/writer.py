"""`write_report`: the report of one patient-cycle as a self-contained HTML page and a PDF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ludl.io.atomic import atomic_write_text
from ludl.report.content import ReportContent
from ludl.report.figures import dvh_figure, mip_figure, png_bytes, slice_figure, tac_figure
from ludl.report.page import all_warnings, key_findings, render_html
from ludl.report.pdf import CHROMIUM_NOTE, find_browser, print_with_browser, write_matplotlib_pdf

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "write_report"]

# Figure name → maker, in page order.
FIGURES: dict[str, Callable[[ReportContent], Figure | None]] = {
    "mip": lambda content: mip_figure(content.images),
    "slices": slice_figure,
    "tac": tac_figure,
    "dvh": dvh_figure,
}


def write_report(content: ReportContent, out_dir: Path, *, pdf: bool = True, name: str = "report") -> dict[str, Path]:
    """Write ``<name>.html`` (self-contained, images embedded) and ``<name>.pdf`` into `out_dir`, atomically.

    The PDF is printed by headless Chromium when one is found (`ludl.report.pdf.find_browser`), else rendered with
    matplotlib; either way the PDF says which. Returns {"report_html": path, "report_pdf": path (when written)}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, bytes | None] = {}
    for key, make in FIGURES.items():
        fig = make(content)
        figures[key] = None if fig is None else png_bytes(fig)
    files = {"report_html": atomic_write_text(out / f"{name}.html", render_html(content, figures))}
    if pdf:
        pdf_path = out / f"{name}.pdf"
        browser = find_browser()
        reason = "no Chromium-family browser on PATH"
        if browser is not None:
            failed = print_with_browser(render_html(content, figures, pdf_note=CHROMIUM_NOTE), pdf_path, browser)
            if failed is None:
                files["report_pdf"] = pdf_path
                return files
            reason = failed
        summary = [*(f"Warning: {w}" for w in all_warnings(content)), *key_findings(content)]
        files["report_pdf"] = write_matplotlib_pdf(content, pdf_path, list(FIGURES.values()), summary, reason)
    return files
