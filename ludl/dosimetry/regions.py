"""Per-region dose statistics of one patient-cycle: the `regions.csv` table, kidney BED, whole-body tumour dose.

Regions come from the label map with the cohort's names (docs/architecture.md "Public names"); a label ``lesion``
holding all lesions is split into connected components ``lesion_001``, ``lesion_002``, … (26-connectivity; order carries
no meaning). Voxel statistics (median, max, D2/D50/D98) are taken on the dose map as computed; partial-volume correction
acts on region means only (it has no voxel-level meaning), and both the corrected and the uncorrected mean are reported.
A lesion is scored only when ≥ 95 % of it lies inside the SPECT field of view at every time point
(docs/architecture.md); unscored lesions keep their row with empty dose values and `scored` = False.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text
from ludl.io.regions import LESION_CLASS, lesion_name, region_kind
from ludl.physics.kinetics import TacFit
from ludl.physics.radiobiology import (
    KIDNEY_ALPHA_BETA_GY,
    KIDNEY_T_REPAIR_H,
    bed_gy,
    cumulative_bed_gy,
    region_stats,
    whole_body_tumour_dose,
)

__all__ = [
    "MIN_IN_FOV_FRACTION",
    "REGION_COLUMNS",
    "RegionSet",
    "cumulative_kidney_bed",
    "expand_regions",
    "region_table",
    "whole_body_tumour_dose_gy",
    "write_regions_csv",
]

MIN_IN_FOV_FRACTION = 0.95  # docs/architecture.md "Public names": a lesion is scored only when ≥ 95 % lies in the FOV
_KIDNEYS = ("kidney_left", "kidney_right")
REGION_COLUMNS: tuple[str, ...] = (
    "region",
    "kind",
    "volume_ml",
    "mean_dose_gy",
    "mean_dose_uncorrected_gy",
    "median_dose_gy",
    "max_dose_gy",
    "d2_gy",
    "d50_gy",
    "d98_gy",
    "tia_mbq_h",
    "tia_uncorrected_mbq_h",
    "model",
    "t_eff_h",
    "r2",
    "pvc",
    "pvc_factor",
    "bed_gy",
    "in_fov_fraction",
    "scored",
)
# What an unscored (partly out-of-FOV) lesion leaves empty: every dose and TIA column.
_DOSE_AND_TIA_COLUMNS = REGION_COLUMNS[REGION_COLUMNS.index("mean_dose_gy") : REGION_COLUMNS.index("model")]


@dataclass(frozen=True, eq=False)
class RegionSet:
    """Regions on one grid: an integer map with one value per region, names and kinds.

    Attributes:
        labels: int32 map (z, y, x); 0 = no region.
        values: region name → value in `labels`.
        kinds: region name → ``organ``, ``lesion``, ``marrow`` or ``body``.
    """

    labels: npt.NDArray[np.int32]
    values: dict[str, int]
    kinds: dict[str, str]

    def mask(self, name: str) -> npt.NDArray[np.bool_]:
        """Boolean mask of one region."""
        return np.asarray(self.labels == self.values[name])


def expand_regions(labels: npt.ArrayLike, values: Mapping[str, int]) -> RegionSet:
    """Give every region its own value: the ``lesion`` class becomes lesion_001, lesion_002, … by connected component.

    Args:
        labels: integer label map (z, y, x).
        values: region name → label value (cohort.yaml ``labels``, regions present).
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    out = np.zeros(lab.shape, dtype=np.int32)
    names: dict[str, int] = {}
    kinds: dict[str, str] = {}
    next_value = 1
    for name, value in values.items():
        if name == LESION_CLASS:
            continue
        mask = lab == value
        if not mask.any():
            continue
        out[mask] = next_value
        names[name] = next_value
        kinds[name] = _kind(name)
        next_value += 1
    if LESION_CLASS in values:
        components, n = ndimage.label(lab == values[LESION_CLASS], structure=np.ones((3, 3, 3), dtype=bool))
        taken = {n for n in names if n.startswith("lesion_")}
        index = 1
        for c in range(1, n + 1):
            while lesion_name(index) in taken:
                index += 1
            name = lesion_name(index)
            out[components == c] = next_value
            names[name] = next_value
            kinds[name] = "lesion"
            next_value += 1
            index += 1
    return RegionSet(labels=out, values=names, kinds=kinds)


def _kind(name: str) -> str:
    try:
        return region_kind(name)
    except Exception:  # a label not in the canonical list (e.g. label_7 from an unnamed NIfTI) is reported as organ
        return "organ"


def region_table(
    dose_gy: npt.ArrayLike,
    tia_mbq_h_per_ml: npt.ArrayLike,
    regions: RegionSet,
    voxel_volume_ml: float,
    *,
    kinetics: Mapping[str, TacFit | None],
    pvc: str,
    pvc_factor: Mapping[str, float],
    in_fov_fraction: Mapping[str, float],
    corrected_mean_dose_gy: Mapping[str, float] | None = None,
    alpha_beta_gy: float = KIDNEY_ALPHA_BETA_GY,
    t_repair_h: float = KIDNEY_T_REPAIR_H,
) -> list[dict[str, Any]]:
    """One row per region with the `REGION_COLUMNS` (NaN where not applicable).

    Args:
        dose_gy: dose map (Gy) on the regions' grid.
        tia_mbq_h_per_ml: TIA map (MBq·h/mL) on the same grid.
        regions: the regions (see `expand_regions`).
        voxel_volume_ml: volume of one voxel, mL.
        kinetics: region name → region time-activity fit (model, T_eff, R²), or None.
        pvc: partial-volume method used (``none``, ``rc``, ``gtm``); pvc_factor: corrected/observed TIA per region.
        in_fov_fraction: region name → smallest share of the region inside the SPECT field of view over time points.
        corrected_mean_dose_gy: region name → partial-volume-corrected mean dose (Gy) computed from the corrected
            activity distribution; regions not in it (or None) get the observed mean dose × their ``pvc_factor``.
        alpha_beta_gy, t_repair_h: kidney radiobiology for BED (docs/physics.md §5).
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    tia = np.asarray(tia_mbq_h_per_ml, dtype=np.float64)
    if dose.shape != regions.labels.shape or tia.shape != regions.labels.shape:
        raise InputError(f"dose {dose.shape}, TIA {tia.shape} and labels {regions.labels.shape} must share one grid")
    rows: list[dict[str, Any]] = []
    nan = float("nan")
    for name, kind in regions.kinds.items():
        mask = regions.mask(name)
        stats = region_stats(dose, mask, voxel_volume_ml)
        fit = kinetics.get(name)
        factor = float(pvc_factor.get(name, 1.0)) if kind != "body" else 1.0
        if not math.isfinite(factor):
            factor = 1.0
        fov = float(in_fov_fraction.get(name, 1.0))
        scored = kind != "lesion" or fov >= MIN_IN_FOV_FRACTION
        tia_region = float(tia[mask].sum()) * voxel_volume_ml
        row: dict[str, Any] = {
            "region": name,
            "kind": kind,
            "volume_ml": stats.volume_ml,
            "mean_dose_gy": float((corrected_mean_dose_gy or {}).get(name, stats.mean_gy * factor)),
            "mean_dose_uncorrected_gy": stats.mean_gy,
            "median_dose_gy": stats.median_gy,
            "max_dose_gy": stats.max_gy,
            "d2_gy": stats.d2_gy,
            "d50_gy": stats.d50_gy,
            "d98_gy": stats.d98_gy,
            "tia_mbq_h": tia_region * factor,
            "tia_uncorrected_mbq_h": tia_region,
            "model": fit.model if fit is not None else "",
            "t_eff_h": fit.t_eff_h if fit is not None else nan,
            "r2": fit.r2 if fit is not None else nan,
            "pvc": pvc if kind != "body" else "none",
            "pvc_factor": factor,
            "bed_gy": nan,
            "in_fov_fraction": fov,
            "scored": scored,
        }
        if name in _KIDNEYS and fit is not None and math.isfinite(fit.t_eff_h) and fit.t_eff_h > 0:
            row["bed_gy"] = float(bed_gy(row["mean_dose_gy"], fit.t_eff_h, alpha_beta_gy, t_repair_h))
        if not scored:
            for key in _DOSE_AND_TIA_COLUMNS:
                row[key] = nan
        rows.append(row)
    return rows


def whole_body_tumour_dose_gy(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Volume-weighted mean dose of the scored lesions (Violet 2019), or None without any."""
    lesions = [r for r in rows if r["kind"] == "lesion" and r["scored"] and math.isfinite(r["mean_dose_gy"])]
    if not lesions:
        return None
    return whole_body_tumour_dose([r["mean_dose_gy"] for r in lesions], [r["volume_ml"] for r in lesions])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_regions_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write the region table as CSV (empty cells for NaN), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REGION_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in REGION_COLUMNS])
    return atomic_write_text(path, buffer.getvalue())


def cumulative_kidney_bed(regions_csvs: Sequence[str | Path]) -> dict[str, float]:
    """Cumulative kidney BED (Gy) over cycles: the sum of `bed_gy` of each kidney in the given per-cycle tables."""
    per_region: dict[str, list[float]] = {}
    for path in regions_csvs:
        with open(path, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("region") in _KIDNEYS and row.get("bed_gy"):
                    per_region.setdefault(row["region"], []).append(float(row["bed_gy"]))
    return {name: float(cumulative_bed_gy(values)) for name, values in per_region.items()}
