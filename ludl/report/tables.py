"""The report's tables as plain text cells (organs with limits, lesions by dose, header) and the headline tumour dose.

Both the HTML page and the matplotlib PDF fallback render these `Table`s, so the two never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ludl.io.regions import ORGAN_REGIONS
from ludl.physics.radiobiology import whole_body_tumour_dose
from ludl.report.content import RegionDose, ReportContent, ReportHeader
from ludl.report.format import fmt, fmt_ml, region_label
from ludl.report.limits import limit_for

__all__ = ["Cell", "Headline", "Table", "header_table", "headline", "lesion_table", "organ_table", "per_gbq"]

_REGION_ORDER = {name: i for i, name in enumerate((*ORGAN_REGIONS, "red_marrow"))}
# Share of a limit from which a cell is highlighted: amber from 75 %, red from 100 %.
_WARN_SHARE, _OVER_SHARE = 0.75, 1.0
DAGGER = "†"


@dataclass(frozen=True)
class Cell:
    """One table cell: text and an optional CSS class (``warn``, ``over``, ``muted``, ``left``)."""

    text: str
    css: str = ""
    title: str = ""  # hover text (the canonical region name, as in regions.csv)
    span: int = 1  # columns the cell covers


@dataclass(frozen=True)
class Table:
    """Column headings (with units), rows of cells and footnotes printed under the table."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    footnotes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Headline:
    """Whole-body tumour dose over the scored lesions and what it covers."""

    dose_gy: float | None
    n_scored: int
    n_lesions: int
    scored_ml: float
    total_ml: float

    def text(self) -> str:
        """One sentence saying the dose, how many lesions and which volume it covers."""
        if self.n_lesions == 0:
            return "No lesions in the label map."
        if self.dose_gy is None:
            return f"No whole-body tumour dose: none of the {self.n_lesions} lesions could be scored."
        text = (
            f"Whole-body tumour dose {fmt(self.dose_gy)} Gy: volume-weighted mean dose of {self.n_scored} of "
            f"{self.n_lesions} lesions ({fmt_ml(self.scored_ml)} of {fmt_ml(self.total_ml)} mL)"
        )
        left = self.n_lesions - self.n_scored
        if left:
            text += f"; {left} lesion{'s' if left > 1 else ''} not scored (see the lesion table)"
        return text + "."


def per_gbq(dose_gy: float, header: ReportHeader) -> float:
    """Dose per administered activity (Gy/GBq): net administered when known, else injected."""
    activity = header.administered_mbq if header.administered_mbq else header.injected_mbq
    return dose_gy / (activity / 1000.0) if activity > 0 else math.nan


def _scored_dose(region: RegionDose) -> bool:
    return region.scored and math.isfinite(region.mean_dose_gy)


def headline(regions: Sequence[RegionDose]) -> Headline:
    """The whole-body tumour dose (Violet 2019: Σ D·V / Σ V) over scored lesions only, with its coverage."""
    lesions = [r for r in regions if r.kind == "lesion"]
    scored = [r for r in lesions if _scored_dose(r)]
    dose = whole_body_tumour_dose([r.mean_dose_gy for r in scored], [r.volume_ml for r in scored]) if scored else None
    return Headline(
        dose, len(scored), len(lesions), sum(r.volume_ml for r in scored), sum(r.volume_ml for r in lesions)
    )


def _interval(region: RegionDose) -> str:
    if region.dose_interval_90_gy is None:
        return "–"
    low, high = region.dose_interval_90_gy
    return f"{fmt(low)}–{fmt(high)}"


def _t_eff(region: RegionDose) -> str:
    return fmt(region.t_eff_h) if region.scored and region.t_eff_h is not None else "–"


def _share(value: float | None, limit_gy: float) -> Cell:
    if value is None or not math.isfinite(value):
        return Cell("–")
    share = value / limit_gy
    css = "over" if share >= _OVER_SHARE else "warn" if share >= _WARN_SHARE else ""
    return Cell(f"{fmt(100.0 * share, 0)} %", css)


def organ_table(content: ReportContent) -> Table:
    """Organs and marrow: volume, mean dose (Gy, Gy/GBq), BED, tolerance limit and the share this cycle reaches."""
    organs = sorted(
        (r for r in content.regions if r.kind in ("organ", "marrow")),
        key=lambda r: (_REGION_ORDER.get(r.name, len(_REGION_ORDER)), r.name),
    )
    has_interval = any(r.dose_interval_90_gy is not None for r in organs)
    columns = [
        "Organ",
        "Volume (mL)",
        "Mean dose (Gy)",
        "Dose per activity (Gy/GBq)",
        "BED (Gy)",
        "Tolerance limit",
        "Share of limit this cycle",
        "Terminal effective half-life (h)",
    ]
    if has_interval:
        columns.insert(3, "90 % interval (Gy)")
    rows = []
    for r in organs:
        limit = limit_for(r.name)
        compared = (r.bed_gy if limit.quantity == "bed" else r.mean_dose_gy) if limit is not None else None
        limit_text = "–"
        if limit is not None:
            limit_text = f"{'BED' if limit.quantity == 'bed' else 'mean'} {fmt(limit.limit_gy, 0)} Gy"
        cells = [
            Cell(region_label(r.name), "left", r.name),
            Cell(fmt_ml(r.volume_ml)),
            Cell(fmt(r.mean_dose_gy, 2)),
            Cell(fmt(per_gbq(r.mean_dose_gy, content.header), 2)),
            Cell(fmt(r.bed_gy, 2)),
            Cell(limit_text),
            _share(compared, limit.limit_gy) if limit is not None else Cell("–"),
            Cell(_t_eff(r)),
        ]
        if has_interval:
            cells.insert(3, Cell(_interval(r)))
        rows.append(tuple(cells))
    notes = (
        "Limits accumulate over all cycles; the share is what this cycle alone reaches. Sources: "
        "kidneys BED 40 Gy (Bodei 2008), salivary glands mean 25 Gy (QUANTEC, external beam), red marrow 2 Gy "
        "(EANM, Hindorf 2010): guides, not thresholds proven for 177Lu-PSMA.",
        "Terminal effective half-life: the slowest clearance phase of the fitted curve.",
    )
    return Table(tuple(columns), tuple(rows), notes)


def lesion_table(content: ReportContent) -> Table:
    """Lesions by mean dose (highest first), unscored ones last and marked, with D2/D50/D98 and the correction noted."""
    lesions = [r for r in content.regions if r.kind == "lesion"]
    scored = sorted((r for r in lesions if _scored_dose(r)), key=lambda r: -r.mean_dose_gy)
    unscored = sorted((r for r in lesions if not _scored_dose(r)), key=lambda r: -r.volume_ml)
    has_interval = any(r.dose_interval_90_gy is not None for r in scored)
    columns = [
        "Lesion",
        "Volume (mL)",
        "Mean dose (Gy)",
        "Voxel mean dose (Gy)",
        "D2 (Gy)",
        "D50 (Gy)",
        "D98 (Gy)",
        "Dose per activity (Gy/GBq)",
        "Terminal effective half-life (h)",
    ]
    if has_interval:
        columns.insert(3, "90 % interval (Gy)")
    has_notes = any(r.flags for r in scored)
    if has_notes:
        columns.append("Notes")
    rows: list[tuple[Cell, ...]] = []
    above_d2 = False
    for r in scored:
        mark = ""
        if r.mean_dose_gy > r.d2_gy:
            mark, above_d2 = f" {DAGGER}", True
        cells = [
            Cell(region_label(r.name), "left", r.name),
            Cell(fmt_ml(r.volume_ml)),
            Cell(fmt(r.mean_dose_gy) + mark),
            Cell(fmt(r.voxel_mean_dose_gy)),
            Cell(fmt(r.d2_gy)),
            Cell(fmt(r.d50_gy)),
            Cell(fmt(r.d98_gy)),
            Cell(fmt(per_gbq(r.mean_dose_gy, content.header), 2)),
            Cell(_t_eff(r)),
        ]
        if has_interval:
            cells.insert(3, Cell(_interval(r)))
        if has_notes:
            cells.append(Cell("; ".join(r.flags), "note"))
        rows.append(tuple(cells))
    for r in unscored:
        reason = "; ".join(r.flags) if r.flags else "partly outside the field of view"
        rows.append(
            (
                Cell(region_label(r.name), "left", r.name),
                Cell(fmt_ml(r.volume_ml)),
                Cell(f"not scored: {reason}", "muted", span=len(columns) - 2),
            )
        )
    notes = [
        "Mean dose: the region's mean after partial-volume correction where the method applies one; voxel mean, D2, "
        "D50 and D98 are read from the dose map itself (D2: the dose the hottest 2 % of the lesion receives)."
    ]
    if above_d2:
        notes.append(
            f"{DAGGER} The corrected mean exceeds the voxel D2: the scanner's blur spreads a small lesion's activity "
            "over its surroundings, the correction puts it back into the lesion; the dose map's voxels stay blurred."
        )
    if unscored:
        notes.append("Lesions not scored are left out of the whole-body tumour dose; no dose or half-life is given.")
    return Table(tuple(columns), tuple(rows), tuple(notes))


def header_table(header: ReportHeader) -> Table:
    """Patient, cycle, scans, activity, method and model as label/value rows."""

    def source(key: str) -> str:
        where = header.sources.get(key)
        return f" (from {where})" if where else ""

    scans = []
    for i, t in enumerate(header.scan_times_h):
        date = header.scan_dates[i] if i < len(header.scan_dates) else ""
        scans.append(f"{fmt(t)} h" + (f" ({date})" if date else ""))
    activity = f"{fmt(header.injected_mbq, 0)} MBq {header.nuclide} ({fmt(header.injected_mbq / 1000.0, 2)} GBq)"
    if header.administered_mbq and not math.isclose(header.administered_mbq, header.injected_mbq):
        activity += f"; net administered {fmt(header.administered_mbq, 0)} MBq"
    rows = [
        ("Patient", header.patient_label),
        ("Therapy cycle", str(header.cycle)),
        ("Scan time(s) after injection", ", ".join(scans) + source("time_h")),
        ("Injected activity", f"{activity}{source('injected_mbq')}"),
        ("Method", header.method),
    ]
    if header.model:
        rows.append(("Model", header.model))
    if header.code_version:
        rows.append(("Software", f"ludl {header.code_version}"))
    for key, where in header.sources.items():
        if key not in ("time_h", "injected_mbq"):
            rows.append((f"Source of {key}", where))
    return Table(("", ""), tuple((Cell(k, "left"), Cell(v, "left")) for k, v in rows))
