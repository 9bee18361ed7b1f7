"""The evaluation page: one self-contained HTML file (inline CSS, figures as inline PNG) with every table.

`build_page` is pure apart from writing its one file atomically: it takes the tables and the dose slices the caller
extracted and renders them; it reads nothing. Numbers are fixed-point (no scientific notation), columns carry their
units, and methods whose interval excludes equality are marked.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.evaluation.figures import error_figure, slice_figure
from ludl.evaluation.tables import CLASS_LABELS, METHOD_LABELS, SCAN_TIMES_H, ComparisonTables
from ludl.io.atomic import atomic_write_text
from ludl.report.format import fmt as report_fmt

__all__ = ["DoseSlice", "PageData", "build_page", "coronal_slice", "fmt"]

_AGAINST_LABELS = {"ground_truth": "multi-time-point ground truth", "truth": "synthetic truth"}
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px 32px;color:#1d1d1f;max-width:1320px}
h1{font-size:24px;margin-bottom:4px}
h2{font-size:19px;margin-top:32px;border-bottom:2px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}p.note{color:#57606a;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 14px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f8fa;font-weight:600}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fbfcfd}td.best{font-weight:700;background:#e6f4ea!important}
td.worse{color:#b42318}dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dl.meta dt{color:#57606a}dl.meta dd{margin:0}img{max-width:100%;border:1px solid #eaeef2}
td.first{border-top:2px solid #8c959f}tr:has(td.first) td{border-top:2px solid #8c959f}
details summary{cursor:pointer;color:#0b5cad;font-size:13px;margin:6px 0}
"""


@dataclass(frozen=True, eq=False)
class DoseSlice:
    """One 2-D slice of a held-out case: the network's and the multi-TP ground-truth dose (Gy) on the same grid.

    Attributes:
        case_id, timepoint_h: which case and which scan the network saw.
        network_gy, ground_truth_gy: 2-D arrays (rows, columns), same shape.
        spacing_mm: (row, column) pixel size, for the aspect ratio.
        orientation: e.g. ``coronal``.
    """

    case_id: str
    timepoint_h: float
    network_gy: npt.NDArray[Any]
    ground_truth_gy: npt.NDArray[Any]
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    orientation: str = "coronal"


def coronal_slice(
    case_id: str,
    timepoint_h: float,
    network_gy: npt.ArrayLike,
    ground_truth_gy: npt.ArrayLike,
    spacing_zyx_mm: Sequence[float],
) -> DoseSlice:
    """The coronal (constant y) slice of two (z, y, x) dose maps where the ground truth holds the most dose."""
    net = np.asarray(network_gy, dtype=np.float64)
    gt = np.asarray(ground_truth_gy, dtype=np.float64)
    if net.shape != gt.shape or gt.ndim != 3:
        raise InputError(f"{case_id}: network {net.shape} and ground-truth {gt.shape} dose must be the same 3-D grid")
    y = int(np.argmax(np.nansum(gt, axis=(0, 2))))
    return DoseSlice(
        case_id, float(timepoint_h), net[:, y, :], gt[:, y, :], (float(spacing_zyx_mm[0]), float(spacing_zyx_mm[2]))
    )


@dataclass(frozen=True, eq=False)
class PageData:
    """Everything the page shows. Tables are lists of row dicts (column tuples of tables/segmentation/response)."""

    title: str
    meta: Mapping[str, str]
    tables: ComparisonTables
    dice: Sequence[Mapping[str, Any]] = ()
    detection: Sequence[Mapping[str, Any]] = ()
    response: Sequence[Mapping[str, Any]] = ()
    calibration: Sequence[Mapping[str, Any]] = ()
    dose_slices: Sequence[DoseSlice] = ()
    notes: Sequence[str] = field(default_factory=tuple)


def fmt(value: Any, digits: int = 1) -> str:
    """`ludl.report.format.fmt` for tables and the terminal: integers as they are, plain-space thousands."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return report_fmt(value, digits, thousands=" ")


def _ci(row: Mapping[str, Any], key: str, low: str, high: str, digits: int = 1) -> str:
    if not math.isfinite(float(row.get(low, math.nan))):
        return fmt(row.get(key), digits)
    return f"{fmt(row.get(key), digits)} [{fmt(row.get(low), digits)}, {fmt(row.get(high), digits)}]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], left: int = 1) -> str:
    """HTML table; each cell is (text, css class); the first `left` columns are left-aligned."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{" ".join(c for c in (css, "l" if i < left else "") if c)}">{text}</td>'
            for i, (text, css) in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _time_label(time_h: Any) -> str:
    t = float(time_h)
    return "all scans" if not math.isfinite(t) or t < 0 else f"{t:g} h"


def _seen(body: list[list[tuple[str, str]]], cls: str) -> bool:
    """True when the table already has a row of this class (its name is shown on the first row only)."""
    return any(row[0][0] == html.escape(CLASS_LABELS[cls]) for row in body)


def _mark_groups(body: list[list[tuple[str, str]]]) -> None:
    """A rule above the first row of each class group (the rows whose first cell names the class)."""
    for row in body:
        text, _ = row[0]
        row[0] = (text, "grp first" if text else "grp")


def _methods(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(str(r["method"]) for r in rows))
    order = list(METHOD_LABELS)
    return sorted(seen, key=lambda m: order.index(m) if m in order else len(order))


def _overview(tables: ComparisonTables, against: str, key: str = "median_abs_error_pct") -> str:
    """A statistic [95 % CI] per class × scan time (rows) and method (columns); the lowest |value| per row marked."""
    rows = [r for r in tables.comparison if r["against"] == against and math.isfinite(float(r["timepoint_h"]))]
    fixed = {r["region_class"]: r for r in tables.comparison if r["against"] == against and r["method"] == "multi_tp"}
    methods = [m for m in _methods(rows) if m != "multi_tp"]
    index = {(r["method"], float(r["timepoint_h"]), r["region_class"]): r for r in rows}
    body: list[list[tuple[str, str]]] = []
    for cls in CLASS_LABELS:
        for time_h in SCAN_TIMES_H:
            cells = [index.get((m, time_h, cls)) for m in methods]
            if not any(cells):
                continue
            values = [abs(float(c[key])) if c else math.inf for c in cells]
            best = min(values)
            line = [(html.escape(CLASS_LABELS[cls]) if not _seen(body, cls) else "", "grp"), (f"{time_h:g}", "")]
            n = max((int(c["n_regions"]) for c in cells if c), default=0)
            for c, v in zip(cells, values, strict=True):
                text = _ci(c, key, f"{key}_low", f"{key}_high") if c else "–"
                line.append((text, "best" if v == best and math.isfinite(v) else ""))
            if fixed:
                f = fixed.get(cls)
                line.append((_ci(f, key, f"{key}_low", f"{key}_high") if f else "–", ""))
            line.append((str(n), ""))
            body.append(line)
    _mark_groups(body)
    headers = ["Region class", "Scan time (h)", *(f"{METHOD_LABELS.get(m, m)} (%)" for m in methods)]
    if fixed:
        headers.append("Multi-TP pipeline, all scans (%)")
    headers.append("Regions (n)")
    return _table(headers, body, left=1)


def _full(tables: ComparisonTables) -> str:
    headers = [
        "Method",
        "Against",
        "Scan time",
        "Region class",
        "Regions (n)",
        "Patients (n)",
        "Bias, median (%)",
        "SD (%)",
        "Median |error| (%)",
        "P90 |error| (%)",
        "|error| > 10 % (% of regions)",
        "|error| > 20 % (% of regions)",
    ]
    body = []
    for r in tables.comparison:
        body.append(
            [
                (html.escape(METHOD_LABELS.get(r["method"], r["method"])), ""),
                (_AGAINST_LABELS[r["against"]], ""),
                (_time_label(r["timepoint_h"]), ""),
                (html.escape(CLASS_LABELS.get(r["region_class"], r["region_class"])), ""),
                (str(r["n_regions"]), ""),
                (str(r["n_patients"]), ""),
                (_ci(r, "bias_pct", "bias_pct_low", "bias_pct_high"), ""),
                (fmt(r["sd_pct"]), ""),
                (_ci(r, "median_abs_error_pct", "median_abs_error_pct_low", "median_abs_error_pct_high"), ""),
                (_ci(r, "p90_abs_error_pct", "p90_abs_error_pct_low", "p90_abs_error_pct_high"), ""),
                (fmt(r["share_over_10_pct"], 0), ""),
                (fmt(r["share_over_20_pct"], 0), ""),
            ]
        )
    return _table(headers, body, left=4)


def _paired(tables: ComparisonTables, against: str) -> str:
    rows = [r for r in tables.paired if r["against"] == against]
    methods = _methods(rows)
    index = {(r["method"], float(r["timepoint_h"]), r["region_class"]): r for r in rows}
    body: list[list[tuple[str, str]]] = []
    for cls in CLASS_LABELS:
        for time_h in SCAN_TIMES_H:
            cells = [index.get((m, time_h, cls)) for m in methods]
            if not any(cells):
                continue
            line = [(html.escape(CLASS_LABELS[cls]) if not _seen(body, cls) else "", "grp"), (f"{time_h:g}", "")]
            for c in cells:
                if c is None:
                    line.append(("–", ""))
                    continue
                css = "best" if c["network_better"] else ("worse" if c["difference_low_pct"] > 0 else "")
                line.append((_ci(c, "difference_pct", "difference_low_pct", "difference_high_pct"), css))
            body.append(line)
    _mark_groups(body)
    headers = ["Region class", "Scan time (h)", *(f"Network − {METHOD_LABELS.get(m, m)} (% points)" for m in methods)]
    return _table(headers, body, left=1)


def _reference(tables: ComparisonTables) -> str:
    headers = [
        "Region class",
        "Scan time (h)",
        "Regions (n)",
        "Network median |error| (%)",
        "Reference median |error| (%)",
        "Ratio network / reference [95 % CI]",
    ]
    body = [
        [
            (html.escape(CLASS_LABELS.get(r["region_class"], r["region_class"])), ""),
            (f"{float(r['timepoint_h']):g}", ""),
            (str(r["n_regions"]), ""),
            (fmt(r["network_median_abs_error_pct"]), ""),
            (fmt(r["reference_median_abs_error_pct"]), ""),
            (_ci(r, "ratio", "ratio_low", "ratio_high", 2), "best" if float(r["ratio"]) <= 1.2 else ""),
        ]
        for r in sorted(tables.reference, key=lambda r: (list(CLASS_LABELS).index(r["region_class"]), r["timepoint_h"]))
    ]
    return _table(headers, body, left=1)


def _segmentation(data: PageData) -> str:
    from ludl.io.regions import SEGMENTATION_CLASSES

    parts = []
    if data.dice:
        names = [c.name for c in SEGMENTATION_CLASSES]
        dice = sorted(data.dice, key=lambda r: names.index(r["class"]) if r["class"] in names else len(names))
        body = [
            [
                (html.escape(str(r["class"]).replace("_", " ")), ""),
                (str(r["n_scans"]), ""),
                (str(r["n_patients"]), ""),
                (_ci(r, "mean_dice", "mean_dice_low", "mean_dice_high", 3), ""),
                (fmt(r["median_dice"], 3), ""),
                (fmt(r["p10_dice"], 3), ""),
            ]
            for r in dice
        ]
        headers = ["Class", "Scans (n)", "Patients (n)", "Mean Dice [95 % CI]", "Median Dice", "10th percentile Dice"]
        parts.append(_table(headers, body))
    if data.detection:
        body = [
            [
                (_time_label(r["timepoint_h"]), ""),
                (str(r["n_scans"]), ""),
                (str(r["lesions_reference"]), ""),
                (str(r["lesions_detected"]), ""),
                (_ci(r, "sensitivity_pct", "sensitivity_low_pct", "sensitivity_high_pct"), ""),
                (_ci(r, "false_positives_per_scan", "false_positives_low", "false_positives_high", 2), ""),
            ]
            for r in data.detection
        ]
        headers = [
            "Scan time",
            "Scans (n)",
            "Reference lesions (n)",
            "Detected (n)",
            "Sensitivity (%) [95 % CI]",
            "False positives per scan [95 % CI]",
        ]
        parts.append("<h3>Lesion detection</h3>" + _table(headers, body))
    return "".join(parts) or '<p class="note">No segmentation predictions.</p>'


def _response(data: PageData) -> str:
    if not data.response:
        return '<p class="note">No non-response labels or predictions for the held-out patients.</p>'
    body = [
        [
            (html.escape(str(r["predictor"])), ""),
            (str(r["n_patients"]), ""),
            (str(r["n_non_responders"]), ""),
            (_ci(r, "auc", "auc_low", "auc_high", 2), ""),
            (fmt(r["brier"], 3), ""),
        ]
        for r in data.response
    ]
    out = _table(["Predictor", "Patients (n)", "Non-responders (n)", "ROC AUC [95 % CI]", "Brier score"], body)
    if data.calibration:
        cal = [
            [
                (html.escape(str(r["predictor"])), ""),
                (f"{fmt(r['p_low'], 1)}–{fmt(r['p_high'], 1)}", ""),
                (str(r["n"]), ""),
                (fmt(r["mean_predicted"], 2), ""),
                (fmt(r["observed_rate"], 2), ""),
            ]
            for r in data.calibration
            if r["n"]
        ]
        headers = ["Predictor", "Predicted probability bin", "Patients (n)", "Mean predicted", "Observed non-response"]
        out += "<h3>Calibration (reliability bins)</h3>" + _table(headers, cal)
    return out


def build_page(data: PageData, path: str | Path) -> Path:
    """Render the page to `path` (written atomically) and return it."""
    meta = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in data.meta.items())
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    t = data.tables
    parts = [
        f"<h1>{html.escape(data.title)}</h1>",
        f'<dl class="meta">{meta}</dl>{notes}',
        "<h2>Region mean dose: median |error| by method</h2>",
        '<p class="note">Relative error of each region\'s mean absorbed dose, 100·(estimate / reference − 1), on '
        "held-out patients. Cells: median |error| (%) [patient-bootstrap 95 % CI]; the lowest per row is marked. "
        "Lesion dose is scored inside the reference lesion masks (apart from segmentation).</p>",
    ]
    for against in ("ground_truth", "truth"):
        parts.append(f"<h3>Against the {_AGAINST_LABELS[against]}</h3>" + _overview(t, against))
    parts.append(
        "<h2>Signed bias by method</h2>"
        '<p class="note">Median of the signed relative error (%) [patient-bootstrap 95 % CI]: below 0 the method reads '
        "low. The value closest to 0 per row is marked.</p>"
    )
    for against in ("ground_truth", "truth"):
        parts.append(f"<h3>Against the {_AGAINST_LABELS[against]}</h3>" + _overview(t, against, "bias_pct"))
    parts.append("<h2>Median |error| vs scan time</h2>" + error_figure(t))
    parts.append(
        "<h2>Paired differences: network − STP method</h2>"
        '<p class="note">Difference of median |error| on the same regions of the same patients, in percentage points, '
        "[paired patient-bootstrap 95 % CI]. Green: the network is better and the CI excludes 0; red: worse.</p>"
    )
    for against in ("ground_truth", "truth"):
        parts.append(f"<h3>Against the {_AGAINST_LABELS[against]}</h3>" + _paired(t, against))
    parts.append(
        "<h2>Against the cohort's single-scan reference</h2>"
        f'<p class="note">Source: {html.escape(t.reference_source)}. Ratio of median |error| against the synthetic '
        "truth; the goal is ≤ 1.2 (marked).</p>" + (_reference(t) if t.reference else '<p class="note">None.</p>')
    )
    parts.append(
        "<h2>All error statistics</h2><details><summary>Show the full table</summary>" + _full(t) + "</details>"
    )
    parts.append("<h2>Segmentation</h2>" + _segmentation(data))
    parts.append("<h2>Non-response after cycle 1</h2>" + _response(data))
    parts.append("<h2>Dose slices of held-out cases</h2>" + slice_figure(data.dose_slices))
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    return atomic_write_text(path, document)
