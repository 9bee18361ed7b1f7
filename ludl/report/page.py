"""The report as one self-contained HTML page: warnings first, then the key numbers, images, tables and curves.

Images are embedded as base64 PNG; the page loads nothing (no script, no font, no stylesheet from elsewhere), so it
opens offline and prints to PDF as it is.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence

from ludl.report.content import RegionDose, ReportContent
from ludl.report.format import fmt, region_label
from ludl.report.limits import ORGAN_LIMITS
from ludl.report.tables import Cell, Table, header_table, headline, lesion_table, organ_table

__all__ = ["all_warnings", "key_findings", "render_html"]

_CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:1.2em 2em;color:#111;max-width:1200px}
h1{font-size:1.5em;margin:0.2em 0}h2{font-size:1.15em;margin:1.4em 0 0.4em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:0.85em;margin:0.3em 0}
td,th{border:1px solid #bbb;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.left,th.left{text-align:left}td.left{white-space:nowrap}
td.warn{background:#fff1c2}td.over{background:#f9c0c0;font-weight:700}td.muted{color:#666;text-align:left}td.note{color:#444;text-align:left;font-size:0.85em;max-width:28em}
table.header td{border:none;padding:1px 10px 1px 0;text-align:left}table.header td:first-child{color:#555}
.warnings{border:2px solid #c0392b;background:#fdecea;padding:0.5em 1em;margin:0.8em 0}
.warnings h2{border:none;margin:0.1em 0;color:#c0392b}
.findings{border:1px solid #2c6e9b;background:#eef5fb;padding:0.5em 1em;margin:0.8em 0;font-size:1.05em}
.findings li{margin:0.25em 0}.note{font-size:0.8em;color:#444;margin:0.2em 0}
img{max-width:100%;height:auto;display:block;margin:0.4em 0}
@page{size:A4;margin:12mm}@media print{body{margin:0}h2{break-after:avoid}img,table{break-inside:avoid}}
"""

_REGISTRATION_COLUMNS = {
    "timepoint_h": "Time point (h)",
    "reference": "Reference",
    "tx_mm": "Shift x (mm)",
    "ty_mm": "Shift y (mm)",
    "tz_mm": "Shift z (mm)",
    "rx_deg": "Rotation x (°)",
    "ry_deg": "Rotation y (°)",
    "rz_deg": "Rotation z (°)",
    "hu_correlation": "CT correlation after registration",
    "mean_abs_diff_hu": "Mean |CT difference| (HU)",
    "large_diff_fraction": "Share of body voxels > 300 HU apart",
    "flags": "Flags",
    "image": "Image",
}
_REGISTRATION_DIGITS = {"hu_correlation": 3}  # every other number: one decimal (mm, °, HU, h)


def _esc(text: object) -> str:
    return html.escape(str(text))


def _td(cell: Cell) -> str:
    css = f" class={cell.css}" if cell.css else ""
    title = f' title="{_esc(cell.title)}"' if cell.title else ""
    span = f" colspan={cell.span}" if cell.span > 1 else ""
    return f"<td{css}{title}{span}>{_esc(cell.text)}</td>"


def table_html(table: Table, css_class: str = "") -> str:
    """One `Table` as HTML with its footnotes."""
    head = ""
    if any(table.columns):
        head = (
            "<tr>"
            + "".join(f"<th{' class=left' if i == 0 else ''}>{_esc(c)}</th>" for i, c in enumerate(table.columns))
            + "</tr>"
        )
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in table.rows)
    notes = "".join(f"<p class=note>{_esc(n)}</p>" for n in table.footnotes)
    cls = f" class={css_class}" if css_class else ""
    return f"<table{cls}>{head}{body}</table>{notes}"


def all_warnings(content: ReportContent) -> list[str]:
    """The caller's warnings, then every region flag (named by region), without repeats."""
    out = list(content.warnings)
    for region in content.regions:
        if region.kind != "lesion":
            out += [f"{region_label(region.name)}: {flag}" for flag in region.flags]
    # Lesion notes stay in the lesion table: one line per lesion here would bury the rest.
    flagged = [region_label(r.name) for r in content.regions if r.kind == "lesion" and r.scored and r.flags]
    if flagged:
        out.append(
            f"{len(flagged)} scored lesion{'s carry' if len(flagged) > 1 else ' carries'} a note in the lesion "
            f"table ({', '.join(flagged)})"
        )
    unscored = sum(1 for r in content.regions if r.kind == "lesion" and not r.scored)
    if unscored:
        out.append(
            f"{unscored} lesion{'s lie' if unscored > 1 else ' lies'} (partly) outside the field of view at some "
            "time point and cannot be scored"
        )
    return list(dict.fromkeys(w[:1].upper() + w[1:] for w in out))


def key_findings(content: ReportContent) -> list[str]:
    """The numbers a physician looks for first: tumour dose and its coverage, limits reached, P(non-response)."""
    lines = [headline(content.regions).text()]
    by_name = {r.name: r for r in content.regions}
    for limit in ORGAN_LIMITS:
        present = [by_name[n] for n in limit.regions if n in by_name]
        values: list[tuple[RegionDose, float]] = []
        for r in present:
            v = r.bed_gy if limit.quantity == "bed" else r.mean_dose_gy
            if v is not None and math.isfinite(v):
                values.append((r, v))
        if not values:
            doses = [r for r in present if math.isfinite(r.mean_dose_gy)]
            if doses:  # a BED limit without BED (no clearance fit): say the dose, not a share
                top = max(doses, key=lambda r: r.mean_dose_gy)
                lines.append(
                    f"{limit.group.capitalize()}: highest mean dose {fmt(top.mean_dose_gy, 2)} Gy "
                    f"({region_label(top.name)}); no BED, so no share of the {fmt(limit.limit_gy, 0)} Gy BED limit."
                )
            continue
        region, worst = max(values, key=lambda rv: rv[1])
        what = "BED" if limit.quantity == "bed" else "mean dose"
        which = (
            f"highest {what} {fmt(worst, 2)} Gy ({region_label(region.name)})"
            if len(present) > 1
            else (f"{what} {fmt(worst, 2)} Gy")
        )
        caution = " Caution: see the warnings." if region.flags else ""
        interval = region.dose_interval_90_gy
        stated = (  # a single-scan mean comes with its interval: the share alone would overstate what is known
            f" (mean dose 90 % interval {fmt(interval[0], 2)}–{fmt(interval[1], 2)} Gy)"
            if interval is not None and all(math.isfinite(v) for v in interval)
            else ""
        )
        lines.append(
            f"{region_label(region.name) if len(present) == 1 else limit.group.capitalize()}: {which}{stated}, "
            f"{fmt(100 * worst / limit.limit_gy, 0)} % of the {fmt(limit.limit_gy, 0)} Gy limit this cycle.{caution}"
        )
    if content.response is not None:
        estimate = content.response
        low, high = estimate.interval_90
        lines.append(
            f"Probability of non-response after two cycles: {fmt(100 * estimate.probability, 0)} % "
            f"(90 % interval {fmt(100 * low, 0)}–{fmt(100 * high, 0)} %). Compared with: {estimate.comparison}"
        )
    return lines


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _registration_html(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{_esc(_REGISTRATION_COLUMNS.get(k, k.replace('_', ' ')))}</th>" for k in keys)

    def cell(key: str, value: object) -> str:
        if isinstance(value, bool):
            return "yes" if value else ""
        if isinstance(value, (int, float)):
            if key == "large_diff_fraction":
                return f"{fmt(100.0 * float(value), 1)} %"
            return fmt(value, _REGISTRATION_DIGITS.get(key, 1))
        return _esc(value)

    body = "".join("<tr>" + "".join(f"<td>{cell(k, r.get(k, ''))}</td>" for k in keys) + "</tr>" for r in rows)
    title = "Registration of the time points" if "timepoint_h" in keys else "Registration"
    return f"<h2>{title}</h2><table><tr>{head}</tr>{body}</table>"


def render_html(content: ReportContent, figures: Mapping[str, bytes | None], *, pdf_note: str = "") -> str:
    """The whole page; `figures` maps ``mip``, ``slices``, ``tac``, ``dvh`` to PNG bytes (None: left out)."""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_esc(content.title)}: {_esc(content.header.patient_label)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(content.title)}</h1>",
        table_html(header_table(content.header), "header"),
    ]
    warnings = all_warnings(content)
    if warnings:
        items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
        parts.append(f"<div class=warnings><h2>Warnings</h2><ul>{items}</ul></div>")
    findings = "".join(f"<li>{_esc(x)}</li>" for x in key_findings(content))
    parts.append(f"<div class=findings><ul>{findings}</ul></div>")
    if figures.get("mip"):
        parts += ["<h2>Overview</h2>", _img(figures["mip"], "PET and dose maximum-intensity projections")]
    if figures.get("slices"):
        parts += [
            "<h2>Dose on CT</h2>",
            "<p class=note>Colour wash: absorbed dose (Gy); white lines: isodose levels; cyan dashed: the region "
            "outline. Patient's right on the left of each image.</p>",
            _img(figures["slices"], "Dose on CT through the hottest lesions and the kidneys"),
        ]
    parts += ["<h2>Organs at risk</h2>", table_html(organ_table(content))]
    lesions = lesion_table(content)
    if lesions.rows:
        parts += ["<h2>Lesions, highest dose first</h2>", table_html(lesions)]
    if figures.get("tac"):
        parts += ["<h2>Time–activity curves</h2>", _img(figures["tac"], "Time-activity curves with their fits")]
    if figures.get("dvh"):
        parts += ["<h2>Dose–volume histograms</h2>", _img(figures["dvh"], "Cumulative dose-volume histograms")]
    parts.append(_registration_html(content.registration_rows))
    notes = [*content.notes, *([pdf_note] if pdf_note else [])]
    if notes:
        parts.append("<h2>Method</h2><ul>" + "".join(f"<li class=note>{_esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
