"""Per-region dose statistics of one patient-cycle: the `regions.csv` table, kidney BED, whole-body tumour dose.

Regions come from the label map with the cohort's names (docs/architecture.md "Public names"); a label ``lesion``
holding all lesions is split into connected components ``lesion_001``, ``lesion_002``, … (26-connectivity; order carries
no meaning). Voxel statistics (median, max, D2/D50/D98) are taken on the dose map as computed; partial-volume correction
acts on region means only (it has no voxel-level meaning), and both the corrected and the uncorrected mean are reported.
A lesion is scored only when ≥ 95 % of it lies inside the SPECT field of view at every time point
(docs/architecture.md); unscored lesions keep their row with empty dose values and `scored` = False.

Region statistics on the label's own extent (docs/physics.md "Region statistics"): `volume_ml` is counted on the label
map at its own resolution, and the partial-volume-corrected mean dose is that of the region's *true extent* — the
tissue fraction of every SPECT voxel it covers (`RegionExtent`, `corrected_doses_on_extent`) — rather than of the
whole voxels a majority vote gives it, which for a 6 mL lesion at 4.8 mm is ≈ 20 % larger.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.imaging.volume import Volume
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
    "RegionExtent",
    "RegionSet",
    "corrected_doses_on_extent",
    "cumulative_kidney_bed",
    "expand_regions",
    "label_volumes_ml",
    "region_density_g_per_ml",
    "region_extents",
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


@dataclass(frozen=True, eq=False)
class RegionExtent:
    """Where a region truly lies on the image grid: flat voxel indices and the share of each voxel it fills.

    Attributes:
        voxels: flat indices (into the grid's C-order array) of every voxel the region covers in part or whole.
        weights: the region's tissue fraction of each of those voxels, in (0, 1].
    """

    voxels: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]

    @property
    def voxel_count(self) -> float:
        """Σ fractions: the region's volume on the grid in voxels."""
        return float(self.weights.sum())


def region_extents(
    regions: RegionSet,
    fractions: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]] | None,
) -> dict[str, RegionExtent]:
    """Each region's extent: its whole voxels (majority voxels not shared) plus its fraction of every shared voxel.

    Args:
        regions: the regions on the grid (majority labels).
        fractions: (flat voxel, region value, fraction) of the voxels shared by several regions or by a region and
            unlabelled tissue (`ludl.imaging.label_grid.label_fractions` in region values), or None: every region
            is its majority voxels, each whole.
    """
    flat = regions.labels.ravel()
    shared = np.zeros(flat.size, dtype=bool)
    by_value: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
    if fractions is not None and fractions[0].size:
        voxel, value, fraction = fractions
        shared[voxel] = True
        order = np.argsort(value, kind="stable")
        v_sorted = value[order]
        bounds = np.flatnonzero(np.r_[True, v_sorted[1:] != v_sorted[:-1], True])
        for lo, hi in itertools.pairwise(bounds):
            by_value[int(v_sorted[lo])] = (voxel[order[lo:hi]], fraction[order[lo:hi]])
    out: dict[str, RegionExtent] = {}
    for name, region_value in regions.values.items():
        majority = np.flatnonzero(flat == region_value)
        if region_value not in by_value:
            # No fractions for this region (none given, or a pooled lesion class split by components): whole voxels.
            out[name] = RegionExtent(majority, np.ones(majority.size))
            continue
        whole = majority[~shared[majority]]
        part_voxel, part_fraction = by_value[region_value]
        out[name] = RegionExtent(
            np.concatenate([whole, part_voxel]).astype(np.int64), np.concatenate([np.ones(whole.size), part_fraction])
        )
    return out


def label_volumes_ml(
    labels: Volume,
    label_values: Mapping[str, int],
    regions: RegionSet,
    extents: Mapping[str, RegionExtent],
    grid_voxel_ml: float,
) -> dict[str, float]:
    """Region volumes (mL) on the label map at its own resolution; a pooled lesion class's components (no label
    value of their own) get their extent's volume on the grid.

    Args:
        labels: the label map as read, on its own grid.
        label_values: region name → label value in it; regions: the regions on the image grid; extents: theirs.
        grid_voxel_ml: volume of one image-grid voxel.
    """
    lab = np.asarray(labels.array)
    positive = lab[lab > 0].astype(np.int64)
    counts = np.bincount(positive) if positive.size else np.zeros(1, dtype=np.int64)
    out: dict[str, float] = {}
    for name in regions.values:
        value = label_values.get(name)
        if value is not None and 0 < value < counts.size:
            out[name] = float(counts[value]) * float(labels.voxel_volume_ml)
        elif name in extents:
            out[name] = extents[name].voxel_count * grid_voxel_ml
    return out


def _unlabelled_tia(tia: npt.NDArray[np.float64], labelled: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """TIA concentration of the unlabelled part of every voxel, given the share of it corrected regions fill.

    A voxel mostly filled by corrected regions holds in its observed value their spill-out, not its unlabelled
    tissue's activity: that comes from the nearby voxels weighted by how unlabelled they are (5³ neighbourhood). A
    voxel barely touched keeps its observed value. Blending by the labelled share keeps the map a continuous function
    of the tissue fractions, so a sliver of a region appearing in a voxel (a 1e-5 mm shift of a grid) changes
    nothing visible.
    """
    from scipy import ndimage

    free = (1.0 - labelled) ** 2
    total = ndimage.uniform_filter(tia * free, size=5, mode="constant")
    weight = ndimage.uniform_filter(free, size=5, mode="constant")
    local = np.where(weight > 1e-6, total / np.maximum(weight, 1e-12), tia)
    return np.asarray((1.0 - labelled) * tia + labelled * local)


# A region no voxel of which it fills to at least this share has no voxel that shows its own density: the fit of
# its density from the mixed voxels is an extrapolation, so the fraction-weighted mean is kept.
_MIN_PEAK_FRACTION = 0.5


def region_density_g_per_ml(
    density_g_per_ml: npt.NDArray[np.float64], extent: RegionExtent, shape: tuple[int, ...]
) -> float:
    """Density of a region's own tissue: the mean CT density of its whole voxels, else unmixed from those it shares.

    A region with no whole voxel (a lesion under ≈ 2 mL at 6 mm) has only voxels that mix it with its surroundings,
    whose fraction-weighted mean reads a dense bone lesion in soft tissue ≈ 10 % low. A CT voxel it fills to a
    fraction f holds f·ρ_R + (1 − f)·ρ_S (ρ_S: its surroundings'); least squares over its voxels and a one-voxel shell
    give ρ_R, extrapolated from its fullest voxel by at most that voxel's missing share. Where it fills no voxel to
    half, the fraction-weighted mean is kept. Regions with whole voxels keep their mean: unmixing them too halved the
    density error of 5–40 mL bone lesions on the synthetic cohort (whose CT is interpolated into each scan's pose,
    which mixes whole voxels), but put a lesion drawn on a finer label grid than its CT 6 % off
    (`tests/dosimetry/test_anisotropic.py`): the CT's own rasterisation of the boundary is not the label map's.

    Args:
        density_g_per_ml: flat (C-order) density of the grid, g/mL; extent: the region's voxels and fractions;
        shape: the grid's shape.
    """
    from scipy import ndimage

    rho = np.asarray(density_g_per_ml, dtype=np.float64).ravel()
    whole = extent.weights >= 1.0
    if not extent.voxels.size:
        return float("nan")
    if whole.any():
        return float(np.mean(rho[extent.voxels[whole]]))
    fallback = float(np.average(rho[extent.voxels], weights=extent.weights))
    if float(extent.weights.max()) < _MIN_PEAK_FRACTION:
        return fallback
    coords = np.unravel_index(extent.voxels, shape)
    lo = [max(0, int(c.min()) - 1) for c in coords]
    hi = [min(n, int(c.max()) + 2) for c, n in zip(coords, shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    fraction = np.zeros([b - a for a, b in zip(lo, hi, strict=True)])
    fraction[tuple(c - a for c, a in zip(coords, lo, strict=True))] = extent.weights
    near = ndimage.binary_dilation(fraction > 0, structure=np.ones((3, 3, 3), dtype=bool))
    f = fraction[near]
    seen = rho.reshape(shape)[box][near]
    design = np.stack([f, 1.0 - f], axis=1)
    if np.linalg.matrix_rank(design) < 2:
        return fallback
    (rho_region, _), *_ = np.linalg.lstsq(design, seen, rcond=None)
    if not math.isfinite(float(rho_region)):
        return fallback
    # The region's own density lies beyond what its fullest voxel shows by at most that voxel's missing share: exact
    # data give ρ_S + (ρ_voxel − ρ_S)/f_max. Noise is not extrapolated further.
    reach = (float(seen.max()) - float(seen.min())) * (1.0 / float(f.max()) - 1.0)
    return float(np.clip(rho_region, float(seen.min()) - reach, float(seen.max()) + reach))


def corrected_doses_on_extent(
    tia: npt.NDArray[np.float64],
    extents: Mapping[str, RegionExtent],
    concentration_mbq_h_per_ml: Mapping[str, float],
    dose_of: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]],
    density_g_per_ml: npt.NDArray[np.float64],
    self_dose_gy_per_tia: float,
) -> dict[str, float]:
    """Partial-volume-corrected mean dose (Gy) of every region over its true extent.

    The corrected activity distribution puts each corrected region's TIA concentration on its tissue fraction of
    every voxel it covers, and the unlabelled rest of a shared voxel at the local background (`_unlabelled_tia`);
    voxels no corrected region touches keep their observed TIA. Convolving it (`dose_of`) gives every voxel its mean
    dose D = E / ρ (E: energy per volume). A shared voxel mixes tissues; the region's own tissue in it receives the
    voxel's energy per volume with the voxel's self-deposition k·m (k: self-dose per TIA at unit density, m: the
    voxel's mean concentration) replaced by its own k·c — the β energy of 177Lu stays within a fraction of a
    millimetre of where it is emitted, well inside a SPECT voxel — per the region's own density ρ_R:
    D_R = (D·ρ + k·(c − m)) / ρ_R (ρ_R: `region_density_g_per_ml`). A whole voxel gets D. The region's mean dose is
    the fraction-weighted mean of D_R over its extent.

    Args:
        tia: observed TIA map (MBq·h/mL).
        extents: region name → extent (`region_extents`); only regions in `concentration_mbq_h_per_ml` are corrected.
        concentration_mbq_h_per_ml: region name → corrected TIA concentration of its true extent.
        dose_of: TIA map (MBq·h/mL) → dose map (Gy) on the same grid.
        density_g_per_ml: the density the dose uses for every voxel (after any floor), same grid.
        self_dose_gy_per_tia: dose (Gy) a voxel of unit density gets from 1 MBq·h/mL in itself alone.
    """
    flat_tia = np.asarray(tia, dtype=np.float64).ravel()
    names = [n for n in concentration_mbq_h_per_ml if n in extents and extents[n].voxels.size]
    labelled = np.zeros(flat_tia.size)
    activity = np.zeros(flat_tia.size)
    for name in names:
        e = extents[name]
        np.add.at(labelled, e.voxels, e.weights)
        np.add.at(activity, e.voxels, e.weights * float(concentration_mbq_h_per_ml[name]))
    labelled = np.minimum(labelled, 1.0)
    rest = _unlabelled_tia(np.asarray(tia, dtype=np.float64), labelled.reshape(np.shape(tia))).ravel()
    corrected = activity + (1.0 - labelled) * rest
    dose = np.asarray(dose_of(corrected.reshape(np.shape(tia))), dtype=np.float64).ravel()
    rho = np.broadcast_to(np.asarray(density_g_per_ml, dtype=np.float64), np.shape(tia)).ravel()
    energy = dose * rho  # Gy·g/mL: energy per volume, up to a constant
    out: dict[str, float] = {}
    for name in names:
        e = extents[name]
        rho_region = region_density_g_per_ml(rho, e, np.shape(tia))
        c = float(concentration_mbq_h_per_ml[name])
        own = (energy[e.voxels] + self_dose_gy_per_tia * (c - corrected[e.voxels])) / rho_region
        own = np.where(e.weights >= 1.0, dose[e.voxels], own)
        out[name] = float(np.sum(e.weights * own) / np.sum(e.weights))
    return out


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
    volume_ml: Mapping[str, float] | None = None,
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
        volume_ml: region name → volume (mL) measured on the label map at its own resolution; regions not in it
            (or None) report the volume of their voxels on this grid.
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
            "volume_ml": float((volume_ml or {}).get(name, stats.volume_ml)),
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


def write_regions_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, extra_columns: Sequence[str] = ()) -> Path:
    """Write the region table as CSV (`REGION_COLUMNS`, then those of `extra_columns` a row carries; empty cells for
    NaN), atomically."""
    columns = [*REGION_COLUMNS, *(c for c in extra_columns if c not in REGION_COLUMNS and any(c in r for r in rows))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
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
