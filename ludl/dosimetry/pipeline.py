"""Conventional multi-time-point dosimetry of one patient-cycle: register → TIA → dose → region statistics → report.

`run_dosimetry` is the public entry (``ludl dosimetry cohort=… patient=… cycle=… out=…``); `compute_dosimetry`
does the same work on an already-loaded `CycleData` without writing files, for `ludl prepare` and the STP baselines.

Steps (PHYSICS.md §2, §4, §6):
1. every time point's CT is registered rigidly to the reference time point's CT (default: the one the label map was
   drawn on); its SPECT is resampled onto the reference SPECT grid conserving activity (`ludl.dosimetry.registration`);
2. TIA: ``tia_mode="voxel"`` fits every voxel's curve (vectorised `fit_voxels`); ``"region"`` fits each region's total
   curve (`fit_tac`) and spreads it as TIA_voxel = TIA_region · A_voxel(t_ref) / A_region,fit(t_ref); unlabelled
   voxels form one more region. Models are restricted by the number of time points (`fit_tac` enforces it; a model
   that needs more points raises `FitError` naming the case before any fit).
3. dose: the generated 177Lu voxel S kernel for the SPECT voxel size, D = (K ⊛ TIA)·ρ_k/ρ_CT (`dose_from_tia`), ρ_CT
   from the reference CT (bilinear HU → density); or local deposition (``dose_method="ldm"``).
4. partial-volume correction of region means with the cohort's nominal FWHM (`ludl.dosimetry.pvc`; GTM per time
   point with the label map's tissue fractions of every SPECT voxel), reported beside the uncorrected values; the
   corrected mean dose is that of the corrected activity distribution (`corrected_region_doses`); region statistics,
   kidney BED, whole-body tumour dose (`ludl.dosimetry.regions`).

Bed positions with their own start times: each voxel keeps the start time of the bed it was acquired in (resampled
with it into the reference pose), and voxel fits are run once per distinct set of voxel times — exact, no decay
correction between beds. Region curves, whose voxels may come from two beds, use the activity-weighted mean time of
their voxels at each time point: an approximation whose error is about λ_bio·Δt_bed·(share of the other bed), below
1 % for beds minutes apart.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pvc import (
    background_blocks,
    fractional_means,
    gtm_matrix_fractional,
    gtm_solve,
    pvc_factors,
)
from ludl.dosimetry.regions import (
    RegionSet,
    expand_regions,
    region_table,
    whole_body_tumour_dose_gy,
    write_regions_csv,
)
from ludl.dosimetry.registration import (
    AlignedTimePoint,
    TimepointRegistration,
    align_timepoints,
    register_timepoints,
)
from ludl.dosimetry.timepoints import CycleData, load_cycle
from ludl.errors import FitError, InputError
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume
from ludl.io.atomic import atomic_write_text
from ludl.physics.kinetics import MODELS, TacFit, fit_tac, fit_voxels, min_points

__all__ = [
    "DosimetryResult",
    "compute_dosimetry",
    "corrected_region_doses",
    "dose_map_gy",
    "label_fractions",
    "majority_labels",
    "region_fits",
    "region_tia_map",
    "run_dosimetry",
    "voxel_tia_map",
]

# Voxel-wise "auto" compares only the models a single noisy voxel curve can support; region curves (summed over many
# voxels) are compared over every model the number of time points allows.
VOXEL_AUTO_CANDIDATES = ("mono", "biexp_uptake")
_BQ_TO_MBQ = 1e-6
_REST = "_rest"
# Activity seen in the field of view above this share of the administered activity means a calibration problem.
_MAX_FOV_SHARE = 1.10
# GTM background: unlabelled body tissue (CT above this, lungs included) is split into cubes of this edge, each its own
# GTM region; air outside the body stays one "rest" region. 40 mm ≈ 3 FWHM: each cube recovers ≳ 0.6 of itself, so
# its mean is well determined, yet bowel, blood pool and muscle next to an organ get their own local mean.
_BODY_MIN_HU = -900.0
_GTM_BLOCK_MM = 40.0
# Organs at least this large are split into GTM parts (`_split_organs`).
_SPLIT_MIN_ML = 60.0
# Only organs known to be layered are split: the kidney (cortex ≫ medulla, PHYSICS/COHORT kidney heterogeneity).
_SPLIT_PREFIXES = ("kidney",)
# Parenchymal organs whose part next to a lesion is solved apart and left out of the organ's mean (`_split_organs`);
# not the bladder, whose content (urine, voided between scans) is no parenchyma.
_PARENCHYMA_PREFIXES = ("liver", "spleen")
# Below this R² a region curve is not kinetics a model integrates (a bladder voided between scans): its corrected mean
# then comes from GTM of the TIA-map means instead of a fit of its corrected curve.
_MIN_REGION_R2 = 0.9
# A region this share inside every scan counts as whole (a voxel's worth of rounding at the field's edge).
_WHOLE_IN_FOV = 0.999


@dataclass(frozen=True, eq=False)
class DosimetryResult:
    """Everything one patient-cycle's dosimetry produced.

    Attributes:
        regions: one row per region (`ludl.dosimetry.regions.REGION_COLUMNS`).
        registrations: one per time point, in time order.
        dose: absorbed dose map (Gy) on the reference SPECT grid.
        tia: TIA map (MBq·h/mL) on the same grid.
        regions_map: the region labels on that grid.
        whole_body_tumour_dose_gy: volume-weighted mean dose of the scored lesions (None without lesions).
        activity_in_fov_mbq: activity in the SPECT field of view per time point (before resampling).
        net_administered_mbq: injected − residual.
        settings: the options used; notes: warnings worth a look; seconds: time per stage; files: outputs written.
    """

    regions: tuple[dict[str, Any], ...]
    registrations: tuple[TimepointRegistration, ...]
    dose: Volume
    tia: Volume
    regions_map: RegionSet
    whole_body_tumour_dose_gy: float | None
    activity_in_fov_mbq: tuple[float, ...]
    net_administered_mbq: float
    settings: dict[str, Any]
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def region(self, name: str) -> dict[str, Any]:
        """The row of one region."""
        for row in self.regions:
            if row["region"] == name:
                return row
        raise InputError(f"no region {name!r}; regions: {', '.join(r['region'] for r in self.regions)}")

    def format(self) -> str:
        """A one-screen table: regions, registration, timing, outputs."""

        def num(value: Any, width: int, digits: int = 2) -> str:
            v = float(value) if value not in ("", None) else math.nan
            return f"{v:{width}.{digits}f}" if math.isfinite(v) else f"{'-':>{width}}"

        head = (
            f"{'region':<15}{'kind':<7}{'mL':>8}{'Gy':>8}{'Gy noPVC':>9}{'D98':>7}{'MBq·h':>10}{'model':>14}"
            f"{'Teff h':>8}"
        )
        lines = [f"settings: {', '.join(f'{k}={v}' for k, v in self.settings.items())}", head, "-" * len(head)]
        for r in self.regions:
            lines.append(
                f"{r['region']:<15}{r['kind']:<7}{num(r['volume_ml'], 8, 1)}{num(r['mean_dose_gy'], 8)}"
                f"{num(r['mean_dose_uncorrected_gy'], 9)}{num(r['d98_gy'], 7)}{num(r['tia_mbq_h'], 10, 0)}"
                f"{r['model']:>14}{num(r['t_eff_h'], 8, 1)}" + ("" if r["scored"] else "  (not scored: FOV)")
            )
        if self.whole_body_tumour_dose_gy is not None:
            lines.append(f"whole-body tumour dose: {self.whole_body_tumour_dose_gy:.2f} Gy")
        for reg in self.registrations:
            if reg.is_reference:
                lines.append(f"registration {reg.timepoint_h:g} h: reference")
                continue
            t = ", ".join(f"{v:.1f}" for v in reg.translation_mm)
            corr = reg.quality.correlation if reg.quality else math.nan
            flag = f"  FLAG: {'; '.join(reg.flags)}" if reg.flags else ""
            lines.append(f"registration {reg.timepoint_h:g} h: shift ({t}) mm, HU r {corr:.3f}{flag}")
        share = ", ".join(f"{100 * a / self.net_administered_mbq:.0f}" for a in self.activity_in_fov_mbq)
        lines.append(f"activity in FOV (% of {self.net_administered_mbq:.0f} MBq administered): {share}")
        lines += [f"note: {n}" for n in self.notes]
        if self.seconds:
            lines.append("timing: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        if self.files:
            folder = next(iter(self.files.values())).parent
            lines.append(f"written to {folder}: {', '.join(p.name for p in self.files.values())}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ TIA


def _check_points(data: CycleData, model: str) -> None:
    """A model that needs more time points than the case has: FitError naming the case and its rows."""
    n = len(data.timepoints)
    need = min_points("mono" if model == "auto" else model)
    if n < need:
        tps = ", ".join(f"{t.timepoint_h:g} h" for t in data.timepoints)
        ok = [m for m in MODELS if n >= min_points(m)]
        raise FitError(
            f"patient {data.patient_id} cycle {data.cycle} has {n} SPECT time point(s) ({tps}) in "
            f"{data.manifest.file}; model {model!r} needs at least {need}. With {n} point(s) use model="
            f"{' or '.join(repr(m) for m in ok) or 'none'} (or add time points)"
        )


def voxel_tia_map(
    aligned: Sequence[AlignedTimePoint], model: str, *, mask: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Voxel-wise TIA (MBq·h/mL) on the reference grid, one vectorised fit per distinct set of voxel times.

    Voxels outside a time point's field of view are fitted with the time points that cover them; where fewer remain
    than the model needs, the trapezoid with a physical tail is used (and noted).

    Returns:
        (TIA map, notes).
    """
    stack = np.stack([np.asarray(a.activity.array, dtype=np.float32) for a in aligned]) * np.float32(_BQ_TO_MBQ)
    times = np.stack([a.time_h_map for a in aligned])  # (T, Z, Y, X), NaN outside that FOV
    use = np.any(stack > 0, axis=0) & np.any(np.isfinite(times), axis=0)
    if mask is not None:
        use &= mask
    tia = np.zeros(use.shape, dtype=np.float64)
    notes: list[str] = []
    flat = np.flatnonzero(use)
    if flat.size == 0:
        return tia, ["no voxel holds activity: the TIA map is empty"]
    keys = np.nan_to_num(times.reshape(times.shape[0], -1)[:, flat].T, nan=-1.0)
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    stack_flat = stack.reshape(stack.shape[0], -1)
    fell_back = 0
    for g, key in enumerate(groups):  # a loop over distinct time sets (beds × FOV patterns), never over voxels
        members = flat[inverse == g]
        present = key >= 0
        t = key[present]
        y = stack_flat[present][:, members]
        order = np.argsort(t)
        t, y = t[order], y[order]
        n = t.size
        chosen = model
        kwargs: dict[str, Any] = {}
        if model == "auto":
            kwargs["candidates"] = VOXEL_AUTO_CANDIDATES
            if n < min_points("mono"):
                chosen = "trapezoid"
        elif n < min_points(model):
            chosen = "trapezoid"
        if chosen == "trapezoid" and model != "trapezoid":
            fell_back += members.size
            kwargs = {}
        fit = fit_voxels(t, y, model=chosen, workers=None, **kwargs)
        tia.ravel()[members] = fit.tia
    if fell_back:
        notes.append(f"{fell_back} voxel(s) outside the field of view at some time points were integrated by trapezoid")
    return tia, notes


def _region_curve(
    aligned: Sequence[AlignedTimePoint], mask: npt.NDArray[np.bool_], voxel_ml: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Region activity (MBq) per time point and its activity-weighted mean acquisition time (h)."""
    activity, when = [], []
    for a in aligned:
        c = np.asarray(a.activity.array, dtype=np.float64)[mask] * _BQ_TO_MBQ * voxel_ml
        t = a.time_h_map[mask]
        ok = np.isfinite(t)
        total = float(c[ok].sum())
        activity.append(total)
        if total > 0:
            when.append(float((c[ok] * t[ok]).sum() / total))
        elif ok.any():
            when.append(float(t[ok].mean()))
        else:
            when.append(float(np.nanmin(a.time_h_map)) if np.isfinite(a.time_h_map).any() else a.timepoint_h)
    return np.asarray(when), np.asarray(activity)


def region_fits(
    aligned: Sequence[AlignedTimePoint], regions: RegionSet, model: str, voxel_ml: float
) -> tuple[dict[str, TacFit | None], dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]], list[str]]:
    """Fit each region's total curve (MBq); unlabelled voxels with activity form the region ``_rest``."""
    fits: dict[str, TacFit | None] = {}
    curves: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
    notes: list[str] = []
    masks = {name: regions.mask(name) for name in regions.values}
    masks[_REST] = regions.labels == 0
    for name, mask in masks.items():  # a loop over regions, each curve a vectorised sum
        t, a = _region_curve(aligned, mask, voxel_ml)
        curves[name] = (t, a)
        if not np.any(a > 0):
            fits[name] = None
            continue
        order = np.argsort(t)
        try:
            fits[name] = fit_tac(t[order], a[order], model=model)
        except FitError as err:
            fits[name] = None
            notes.append(f"region {name}: {err}")
    return fits, curves, notes


def region_tia_map(
    aligned: Sequence[AlignedTimePoint],
    regions: RegionSet,
    fits: Mapping[str, TacFit | None],
    curves: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    reference_index: int,
) -> npt.NDArray[np.float64]:
    """Region kinetics × voxel activity: TIA_voxel = TIA_region · A_voxel(t_ref) / A_region,fit(t_ref) (MBq·h/mL)."""
    ref = np.asarray(aligned[reference_index].activity.array, dtype=np.float64) * _BQ_TO_MBQ  # MBq/mL
    tia = np.zeros(ref.shape, dtype=np.float64)
    for name, fit in fits.items():
        if fit is None:
            continue
        mask = (regions.labels == 0) if name == _REST else regions.mask(name)
        t_ref = float(curves[name][0][reference_index])
        a_fit = float(fit.predict(t_ref))
        if a_fit > 0:
            tia[mask] = fit.tia * ref[mask] / a_fit
    return tia


def _fine_label_counts(
    labels: Volume, grid: Volume
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """(coarse voxel, label value, fine-voxel count, fine voxels in that coarse voxel) of every labelled pair.

    Each fine voxel counts in the coarse voxel its centre falls in. None for grids of different direction.
    """
    if not np.allclose(labels.direction, grid.direction, atol=1e-6):
        return None
    lab = np.asarray(labels.array)
    fine_origin = grid.physical_to_index(labels.origin_xyz_mm)  # fine voxel (0,0,0) in coarse index units
    steps = np.asarray(labels.spacing_zyx_mm) / np.asarray(grid.spacing_zyx_mm)
    maps = [
        np.floor(fine_origin[k] + steps[k] * np.arange(lab.shape[k]) + 0.5).astype(np.int64) for k in range(3)
    ]  # coarse index of every fine slice/row/column: the map is separable for equal directions
    valid = [(m >= 0) & (m < n) for m, n in zip(maps, grid.shape, strict=True)]
    per_axis = [np.bincount(m[v], minlength=n) for m, v, n in zip(maps, valid, grid.shape, strict=True)]
    total = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
    z, y, x = np.nonzero(lab)
    keep = valid[0][z] & valid[1][y] & valid[2][x]
    z, y, x = z[keep], y[keep], x[keep]
    values, code = np.unique(lab[z, y, x], return_inverse=True)
    coarse = np.ravel_multi_index((maps[0][z], maps[1][y], maps[2][x]), grid.shape)
    pairs, counts = np.unique(coarse * values.size + code.ravel(), return_counts=True)
    voxel, label = np.divmod(pairs, values.size)
    return voxel, values[label], counts, total.ravel()[voxel]


def majority_labels(labels: Volume, grid: Volume) -> Volume | None:
    """Labels on a coarser grid by majority of the fine voxels whose centres fall in each coarse voxel.

    Nearest-neighbour sampling of a label map drawn on a 2× finer grid picks one of the 8 fine voxels that meet at
    each coarse centre, always the same corner: every region moves by half a fine voxel (1.5 mm at 3 mm) and small
    ones lose or gain volume. The majority keeps each region where its volume is. Only for grids with the same
    direction (the label map drawn on the scanner's frame); returns None otherwise (use nearest neighbour).
    """
    found = _fine_label_counts(labels, grid)
    if found is None:
        return None
    voxel, label_values, counts, total = found
    order = np.lexsort((counts, voxel))  # per coarse voxel, its most frequent label last
    last = np.r_[voxel[order][1:] != voxel[order][:-1], True]
    best_voxel, best_value, best_count = voxel[order][last], label_values[order][last], counts[order][last]
    labelled = np.bincount(voxel, weights=counts, minlength=grid.array.size)[best_voxel]
    unlabelled = total[order][last] - labelled
    out = np.zeros(grid.shape, dtype=np.asarray(labels.array).dtype)
    # A tie with the unlabelled share (4 of 8 at a flat boundary) goes to the region on every other voxel (a
    # checkerboard), so boundaries keep their volume on average instead of all ties going one way.
    parity = np.sum(np.unravel_index(best_voxel, grid.shape), axis=0) % 2 == 0
    win = (best_count > unlabelled) | ((best_count == unlabelled) & parity)
    out.ravel()[best_voxel[win]] = best_value[win]
    return grid.with_array(out, unit=labels.unit)


def _region_fractions(
    fractions: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]],
    label_values: Mapping[str, int],
    region_values: Mapping[str, int],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Fraction triples in `expand_regions` values; labels without one region (a pooled lesion class) are dropped,
    so their share counts as unlabelled."""
    voxel, value, fraction = fractions
    table = np.zeros(int(max([*label_values.values(), *value.tolist(), 0])) + 1, dtype=np.int64)
    for name, v in region_values.items():
        if name in label_values:
            table[label_values[name]] = v
    mapped = table[value]
    keep = mapped > 0
    return voxel[keep], mapped[keep], fraction[keep]


def label_fractions(
    labels: Volume, grid: Volume
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
    """Tissue fractions of a finer label map on `grid`: (flat voxel, label value, fraction) of every voxel shared.

    Only voxels not wholly inside one label are listed; the share no label claims is the rest (1 − Σ fractions).
    None for grids of different direction (the partial-volume correction then counts whole voxels).
    """
    found = _fine_label_counts(labels, grid)
    if found is None:
        return None
    voxel, label_values, counts, total = found
    fraction = counts / np.maximum(total, 1)
    whole = fraction >= 1.0 - 1e-9
    return voxel[~whole], np.asarray(label_values[~whole], dtype=np.int64), fraction[~whole]


# ------------------------------------------------------------------------------------------------------ PVC


def _gtm_per_timepoint(
    aligned: Sequence[AlignedTimePoint],
    regions: RegionSet,
    body: npt.NDArray[np.bool_],
    spacing_zyx_mm: tuple[float, float, float],
    fwhm_mm: float,
    curves: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    fits: Mapping[str, TacFit | None],
    model: str,
    tia: npt.NDArray[np.float64],
    fractions: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None,
    in_fov: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, TacFit | None], list[str]]:
    """GTM on every time point's region means, then one fit per corrected region curve.

    Spill-in from a neighbour with other kinetics (a bone lesion next to the marrow, lesions in or beside the
    liver) distorts the region's curve shape, not only its level; correcting each time point before the fit
    (Rousset 1998 GTM applied per frame) gives the region's own kinetics. The factor applied to the region's mean
    TIA and dose is TIA(fit of the corrected curve) / TIA of the region in the TIA map; where a corrected curve
    cannot be fitted, the GTM of the TIA-map means (linear, so the same correction for a well-fitted curve) is
    used instead.

    Returns:
        (factor per region, fit of the corrected curve per region, notes).
    """
    in_fov = dict(in_fov or {})
    values = {n: v for n, v in regions.values.items() if regions.kinds[n] != "body"}
    first = max(regions.values.values(), default=0) + 1
    extended, blocks = background_blocks(regions.labels, body, spacing_zyx_mm, _GTM_BLOCK_MM, first)
    parts = _split_organs(extended, regions, values, spacing_zyx_mm, fwhm_mm, first + len(blocks))
    all_values = {**values, **blocks, **parts}
    present = set(np.unique(extended).tolist())
    names = [name for name, v in all_values.items() if v in present] + ["_rest"]
    n = len(names)
    index, mixed = _gtm_partition(extended, names, all_values, body, fractions, blocks, parts)
    w, counts = gtm_matrix_fractional(index, n, mixed, spacing_zyx_mm, fwhm_mm)
    # Observed means of a split organ are the count-weighted means of its parts; its true mean is that of its rim
    # and core, but leaves out the part next to hot lesions (assumed like the rest of the organ: see _split_organs).
    keep = [i for i, name in enumerate(names) if ":" not in name]
    merge_obs = np.eye(n)
    merge_true = np.eye(n)
    for i, name in enumerate(names):
        organ, _, part = name.partition(":")
        if part and organ in names:
            merge_obs[names.index(organ), i] = 1.0
            merge_true[names.index(organ), i] = 1.0 if part == "core" else 0.0

    def means(array: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return fractional_means(array, index, n, mixed, counts)

    def whole(per_part: npt.NDArray[np.float64], merge: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        summed = (merge * counts) @ per_part
        total = (merge @ counts)[:, None] if per_part.ndim == 2 else merge @ counts
        return np.asarray(np.where(total > 0, summed / np.maximum(total, 1e-300), per_part))[keep]

    per_part = np.stack(
        [means(np.asarray(a.activity.array, dtype=np.float64) * _BQ_TO_MBQ) for a in aligned], axis=1
    )  # (regions and parts, time points), MBq/mL
    true = whole(gtm_solve(w, per_part), merge_true)
    observed = whole(per_part, merge_obs)
    tia_parts = means(tia)
    tia_true = dict(zip([names[i] for i in keep], whole(gtm_solve(w, tia_parts), merge_true), strict=True))
    counts = (merge_obs @ counts)[keep]
    names = [names[i] for i in keep]
    voxel_ml = float(np.prod(spacing_zyx_mm)) / 1000.0
    # Factors scale a region's TIA on its whole-voxel mask; the corrected TIA is mean × fine-grid volume.
    sums = np.atleast_1d(np.asarray(ndimage.sum(tia, labels=regions.labels, index=list(values.values()))))
    mask_tia = dict(zip(values, sums * voxel_ml, strict=True))
    factors: dict[str, float] = {}
    corrected_fits: dict[str, TacFit | None] = {}
    notes: list[str] = []
    for i, name in enumerate(names[:-1]):
        if name not in values:
            continue
        voxel_tia = float(mask_tia[name])
        volume_ml = counts[i] * voxel_ml
        static = float(tia_true[name]) * volume_ml / voxel_tia if voxel_tia > 0 else float("nan")
        factors[name] = max(static, 0.0) if math.isfinite(static) else static
        corrected_fits[name] = fits.get(name)
        t = curves[name][0]
        order = np.argsort(t)
        obs_curve = observed[i][order] * volume_ml
        true_curve = np.maximum(true[i][order], 0.0) * volume_ml
        if not (np.any(obs_curve > 0) and np.any(true_curve > 0)):
            continue
        if in_fov.get(name, 1.0) < _WHOLE_IN_FOV:
            # Its mean at a scan that misses part of it is not the region's mean: no curve to correct point by point.
            notes.append(
                f"region {name}: partly outside the field of view at some time points (at worst "
                f"{100 * in_fov[name]:.0f} % inside); its TIA-map mean is corrected instead"
            )
            continue
        try:
            fit_obs = fit_tac(t[order], obs_curve, model=model)
            fit_true = fit_tac(t[order], true_curve, model=model)
        except FitError as err:
            notes.append(f"region {name}: per-time-point GTM curve not fitted ({err}); TIA-level GTM used")
            continue
        if min(fit_obs.r2, fit_true.r2) < _MIN_REGION_R2:
            notes.append(
                f"region {name}: its curve is not smooth kinetics (R² {min(fit_obs.r2, fit_true.r2):.2f}, e.g. a "
                "voided bladder); partial-volume correction of its TIA-map mean used"
            )
            continue
        if fit_obs.tia > 0 and voxel_tia > 0 and math.isfinite(fit_true.tia):
            # The corrected mean is the corrected curve's own integral: region curves (sums over many voxels) may use
            # every model the time points allow, where single voxel curves are limited to mono / biexp_uptake,
            # which misses the early fast phase of quickly clearing organs (spleen, liver).
            factors[name] = max(fit_true.tia, 0.0) / voxel_tia
            corrected_fits[name] = fit_true
    return factors, corrected_fits, notes


def _gtm_partition(
    extended: npt.NDArray[np.int32],
    names: Sequence[str],
    all_values: Mapping[str, int],
    body: npt.NDArray[np.bool_],
    fractions: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]] | None,
    blocks: Mapping[str, int],
    parts: Mapping[str, int],
) -> tuple[npt.NDArray[np.int64], tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    """GTM regions as whole voxels (compact index, −1 where shared) plus the shared voxels' fraction triples.

    A shared voxel's label fractions go to their region (the organ part the voxel belongs to, for split organs);
    its unlabelled share to the background block of the voxel or, where the voxel is in no block, to the nearest
    voxel's block (outside the body: the rest).
    """
    n = len(names)
    lookup = np.full(int(max(all_values.values(), default=0)) + 2, n - 1, dtype=np.int64)
    for i, name in enumerate(names[:-1]):
        lookup[int(all_values[name])] = i
    index = lookup[extended]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if fractions is None or fractions[0].size == 0:
        return index, empty
    voxel, value, fraction = fractions
    flat_ext = extended.ravel()
    region = lookup[value]
    # The label's part at this voxel, when the voxel's own (majority) region is a part of that label's organ.
    parent = np.full(lookup.size, -1, dtype=np.int64)
    for name, v in parts.items():
        parent[v] = all_values[name.partition(":")[0]]
    own = flat_ext[voxel]
    sel = parent[own] == value
    region[sel] = lookup[own[sel]]
    labelled = np.bincount(voxel, weights=fraction, minlength=flat_ext.size)
    shared = np.unique(voxel)
    rest_share = 1.0 - labelled[shared]
    has_rest = rest_share > 1e-9
    block_values = np.asarray(sorted(blocks.values()), dtype=np.int64)
    if block_values.size:
        in_block = np.isin(extended, block_values)
        _, nearest = ndimage.distance_transform_edt(~in_block, return_indices=True)
        block_of = extended[tuple(nearest)].ravel()
    else:
        block_of = np.zeros(flat_ext.size, dtype=np.int64)
    rv = shared[has_rest]
    inside = body.ravel()[rv] & (block_values.size > 0)
    rest_region = np.where(inside, lookup[block_of[rv]], n - 1)
    mixed_voxel = np.concatenate([voxel, rv])
    mixed_region = np.concatenate([region, rest_region])
    mixed_fraction = np.concatenate([fraction, rest_share[has_rest]])
    index.ravel()[shared] = -1
    return index, (mixed_voxel, mixed_region, mixed_fraction)


def _split_organs(
    extended: npt.NDArray[np.int32],
    regions: RegionSet,
    values: Mapping[str, int],
    spacing_zyx_mm: tuple[float, float, float],
    fwhm_mm: float,
    first_value: int,
) -> dict[str, int]:
    """Split large organs into GTM parts (in place in `extended`); returns part name (``organ:part``) → value.

    - Layered organs (`_SPLIT_PREFIXES`: the kidney, whose cortex holds ≈ 3× the medulla's concentration): a rim one
      voxel deep and the core inside it, each with its own mean: a uniform model under-estimates their spill-out.
    - Parenchymal organs next to lesions (`_PARENCHYMA_PREFIXES`): the part within one FWHM of a lesion becomes
      ``organ:near``, solved in the GTM but left out of the organ's true mean. Lesions are 10–100× hotter than
      parenchyma, so the small mismatch between the nominal and the real PSF, or a lesion's non-uniformity, moves that
      part's estimate by tens of percent; the parenchyma is taken to be as uniform there as elsewhere.
    """
    parts: dict[str, int] = {}
    value = first_value
    voxel_ml = float(np.prod(spacing_zyx_mm)) / 1000.0
    lesions = np.isin(extended, [v for n, v in values.items() if regions.kinds.get(n) == "lesion"])
    near_lesion = (
        ndimage.distance_transform_edt(~lesions, sampling=spacing_zyx_mm) <= fwhm_mm
        if lesions.any()
        else np.zeros(extended.shape, dtype=bool)
    )
    for name, v in values.items():
        if regions.kinds.get(name) != "organ":
            continue
        mask = extended == v
        if mask.sum() * voxel_ml < _SPLIT_MIN_ML:
            continue
        if name.startswith(_SPLIT_PREFIXES):
            inner = ndimage.binary_erosion(mask, iterations=1)
            part = "core"
        elif name.startswith(_PARENCHYMA_PREFIXES):
            inner = mask & near_lesion
            part = "near"
            if (mask & ~inner).sum() < 0.5 * mask.sum():  # too little parenchyma left to stand for the organ
                continue
        else:
            continue
        if not inner.any() or (part == "core" and inner.sum() * voxel_ml < _SPLIT_MIN_ML / 4):
            continue
        extended[inner] = value
        parts[f"{name}:{part}"] = value
        value += 1
    return parts


def _in_fov_fractions(
    data: CycleData,
    aligned: Sequence[AlignedTimePoint],
    grid: Volume,
    label_transform: Any,
    regions: RegionSet,
) -> dict[str, float]:
    """Smallest share of each region inside the SPECT field of view over time points, on the label map's own grid.

    Measured on the resampled labels, a region cut by the reference grid's edge would count only its part inside
    the grid and read 100 %; on the label map's grid the part beyond the edge counts as outside.
    """
    fine = np.asarray(data.labels.array)
    named = {n: int(v) for n, v in data.label_values.items() if n in regions.values}
    out = {name: float(min(np.mean(a.fov[regions.mask(name)]) for a in aligned)) for name in regions.values}
    if not named:
        return out
    inverse = label_transform.GetInverse() if label_transform is not None else None
    index = list(named.values())
    worst = np.ones(len(index))
    for a in aligned:
        fov = grid.with_array(np.asarray(a.fov, dtype=np.uint8), unit="mask")
        on_labels = np.asarray(resample_to(fov, data.labels, kind="nearest", transform=inverse).array, dtype=np.float64)
        worst = np.minimum(worst, np.asarray(ndimage.mean(on_labels, labels=fine, index=index), dtype=np.float64))
    for name, share in zip(named, worst, strict=True):
        if math.isfinite(share):
            out[name] = float(share)
    return out


# ------------------------------------------------------------------------------------------------------ dose


def dose_map_gy(
    tia: npt.NDArray[np.float64],
    density: npt.NDArray[np.float64],
    spacing_zyx_mm: tuple[float, float, float],
    dose_method: str,
    kernel_cache_dir: str | Path | None,
) -> npt.NDArray[np.float64]:
    """Dose (Gy) of a TIA map (MBq·h/mL): DVK convolution with CT density scaling, or local deposition."""
    from ludl.physics.dose import dose_from_tia, ldm_dose, voxel_tia_mbq_h
    from ludl.physics.kernels import MEDIA, voxel_s_kernel

    voxel_tia = voxel_tia_mbq_h(tia, spacing_zyx_mm)
    if dose_method == "ldm":
        return np.asarray(ldm_dose(voxel_tia, spacing_zyx_mm, density), dtype=np.float64)
    kernel = voxel_s_kernel(spacing_zyx_mm, medium="soft_tissue", cache_dir=kernel_cache_dir)
    return np.asarray(
        dose_from_tia(
            voxel_tia,
            kernel,
            density_g_per_ml=density,
            kernel_density_g_per_ml=MEDIA["soft_tissue"].density_g_per_ml,  # ρ_k/ρ_CT, PHYSICS.md §4
        ),
        dtype=np.float64,
    )


def corrected_region_doses(
    tia: npt.NDArray[np.float64],
    regions: RegionSet,
    factors: Mapping[str, float],
    density: npt.NDArray[np.float64],
    spacing_zyx_mm: tuple[float, float, float],
    dose_method: str,
    kernel_cache_dir: str | Path | None,
) -> dict[str, float]:
    """Partial-volume-corrected mean dose (Gy) of every region, from the corrected activity distribution.

    Each corrected region holds its corrected mean TIA uniformly (the GTM's own model of the true distribution);
    unlabelled voxels keep their observed TIA. Convolving that map gives each region its self-dose at the corrected
    level *and* the cross-dose of its corrected neighbours (a liver beside lesions 100× hotter, photons from the whole
    body) and the β energy a small hot region loses across its edge — which scaling the observed mean dose by the TIA
    factor gets wrong in opposite directions (observed TIA is blurred, so its dose has no edge loss, and spill-in
    removed from the liver's TIA also removes the lesions' real cross-dose).
    """
    corrected = np.array(tia, dtype=np.float64, copy=True)
    masks = {}
    for name, kind in regions.kinds.items():
        factor = factors.get(name, math.nan)
        if kind == "body" or not math.isfinite(factor):
            continue
        mask = regions.mask(name)
        if mask.any():
            corrected[mask] = factor * float(tia[mask].mean())
            masks[name] = mask
    dose = dose_map_gy(corrected, density, spacing_zyx_mm, dose_method, kernel_cache_dir)
    return {name: float(dose[mask].mean()) for name, mask in masks.items()}


def _reference_index(data: CycleData, reference_timepoint: float | None) -> int:
    nominal = [t.timepoint_h for t in data.timepoints]
    wanted = data.mask_timepoint_h if reference_timepoint is None else float(reference_timepoint)
    for i, t in enumerate(nominal):
        if math.isclose(t, wanted, abs_tol=1e-6):
            return i
    if reference_timepoint is None:
        return 0
    raise InputError(
        f"reference_timepoint={reference_timepoint:g} h is not a SPECT time point of patient {data.patient_id} "
        f"cycle {data.cycle}; time points: {', '.join(f'{t:g}' for t in nominal)} h"
    )


def compute_dosimetry(data: CycleData, options: DosimetryOptions | None = None) -> DosimetryResult:
    """Register, integrate, convolve and tabulate one loaded patient-cycle; writes nothing (see `run_dosimetry`)."""
    from ludl.physics.dose import density_from_hu

    o = DosimetryOptions() if options is None else options
    tia_mode, model, dose_method, pvc = o.tia_mode, o.model, o.dose_method, o.pvc
    reference_timepoint, kernel_cache_dir = o.reference_timepoint, o.kernel_cache_dir
    _check_points(data, model)
    seconds: dict[str, float] = {}
    notes: list[str] = []

    start = time.perf_counter()
    ref_index = _reference_index(data, reference_timepoint)
    ref_tp = data.timepoints[ref_index]
    registrations = register_timepoints(data, ref_index)
    for reg in registrations:
        if reg.flags:
            notes.append(f"{reg.timepoint_h:g} h: rigid registration leaves a residual: {'; '.join(reg.flags)}")
    seconds["register"] = time.perf_counter() - start

    start = time.perf_counter()
    grid = ref_tp.spect
    aligned = align_timepoints(data, registrations, grid)
    mask_index = next(
        (i for i, t in enumerate(data.timepoints) if math.isclose(t.timepoint_h, data.mask_timepoint_h)), ref_index
    )
    label_transform = registrations[mask_index].transform if mask_index != ref_index else None
    labels = data.labels
    fractions = None
    if label_transform is not None or not labels.same_grid(grid):
        majority = majority_labels(labels, grid) if label_transform is None else None
        if majority is not None:
            fractions = label_fractions(labels, grid)
        labels = (
            majority if majority is not None else resample_to(labels, grid, kind="nearest", transform=label_transform)
        )
    regions = expand_regions(np.asarray(labels.array), data.label_values)
    if fractions is not None:
        fractions = _region_fractions(fractions, data.label_values, regions.values)
    hu = resample_to(ref_tp.ct, grid, kind="linear", default=-1000.0)
    density = np.asarray(density_from_hu(np.asarray(hu.array, dtype=np.float64)), dtype=np.float64)
    seconds["resample"] = time.perf_counter() - start

    start = time.perf_counter()
    voxel_ml = grid.voxel_volume_ml
    fits, curves, fit_notes = region_fits(aligned, regions, model, voxel_ml)
    notes += fit_notes
    if tia_mode == "voxel":
        tia, voxel_notes = voxel_tia_map(aligned, model)
        notes += voxel_notes
    else:
        tia = region_tia_map(aligned, regions, fits, curves, ref_index)
    seconds["tia"] = time.perf_counter() - start

    start = time.perf_counter()
    dose = dose_map_gy(tia, density, grid.spacing_zyx_mm, dose_method, kernel_cache_dir)
    seconds["dose"] = time.perf_counter() - start

    start = time.perf_counter()
    observed = {name: float(tia[regions.mask(name)].mean()) for name in regions.values}
    pvc_values = {n: v for n, v in regions.values.items() if regions.kinds[n] != "body"}
    kinetics: Mapping[str, TacFit | None] = fits
    in_fov = _in_fov_fractions(data, aligned, grid, label_transform, regions)
    if pvc == "gtm":
        body = np.asarray(hu.array, dtype=np.float64) > _BODY_MIN_HU
        factors, kinetics, gtm_notes = _gtm_per_timepoint(
            aligned, regions, body, grid.spacing_zyx_mm, ref_tp.fwhm_mm, curves, fits, model, tia, fractions, in_fov
        )
        kinetics = {**fits, **kinetics}
        notes += gtm_notes
    else:
        factors = pvc_factors(pvc, regions.labels, pvc_values, observed, grid.spacing_zyx_mm, ref_tp.fwhm_mm)
    corrected_dose = None
    if pvc != "none":
        corrected_dose = corrected_region_doses(
            tia, regions, factors, density, grid.spacing_zyx_mm, dose_method, kernel_cache_dir
        )
    rows = region_table(
        dose,
        tia,
        regions,
        voxel_ml,
        kinetics=kinetics,
        pvc=pvc,
        pvc_factor=factors,
        in_fov_fraction=in_fov,
        corrected_mean_dose_gy=corrected_dose,
    )
    wbtd = whole_body_tumour_dose_gy(rows)
    seconds["regions"] = time.perf_counter() - start

    administered = data.net_administered_mbq
    in_fov_mbq = tuple(a.total_before_mbq for a in aligned)
    for a in aligned:
        if a.total_before_mbq > _MAX_FOV_SHARE * administered:
            notes.append(
                f"{a.timepoint_h:g} h: {a.total_before_mbq:.0f} MBq in the field of view exceeds the administered "
                f"{administered:.0f} MBq by more than {100 * (_MAX_FOV_SHARE - 1):.0f} %: check the calibration"
            )
    if data.extravasated_mbq > 0:
        notes.append(
            f"{data.extravasated_mbq:.0f} MBq extravasated at the injection site: in the images and the dose, "
            "not in the systemic kinetics"
        )
    if any(len(t.bed_times_h) > 1 for t in data.timepoints):
        notes.append("several bed positions: voxel times follow their bed; region curves use activity-weighted times")
    settings = {
        "tia_mode": tia_mode,
        "model": model,
        "dose_method": dose_method,
        "pvc": pvc,
        "reference_timepoint_h": ref_tp.timepoint_h,
        "fwhm_mm": ref_tp.fwhm_mm,
        "timepoints_h": ", ".join(f"{t.timepoint_h:g}" for t in data.timepoints),
        "voxel_mm": "×".join(f"{s:.2f}" for s in grid.spacing_zyx_mm),
    }
    return DosimetryResult(
        regions=tuple(rows),
        registrations=registrations,
        dose=Volume(dose.astype(np.float32), grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit="Gy"),
        tia=Volume(tia.astype(np.float32), grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit="MBq*h/mL"),
        regions_map=regions,
        whole_body_tumour_dose_gy=wbtd,
        activity_in_fov_mbq=in_fov_mbq,
        net_administered_mbq=administered,
        settings=settings,
        notes=tuple(notes),
        seconds=seconds,
    )


def _write_registration_csv(registrations: Sequence[TimepointRegistration], path: Path) -> Path:
    """Pose and residual of every time point (the non-rigid residual is what the rigid fit leaves)."""
    rows = [r.as_row() for r in registrations]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def _write_outputs(result: DosimetryResult, data: CycleData, ref_index: int, out: Path) -> dict[str, Path]:
    from ludl.dosimetry.report import plot_dvh, summary_html
    from ludl.io.nifti import write_nifti
    from ludl.io.rtdose import write_rtdose

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["dose_nifti"] = write_nifti(result.dose, out / "dose_gy.nii.gz")
    files["tia_nifti"] = write_nifti(result.tia, out / "tia_mbq_h_per_ml.nii.gz")
    ref_spect = data.timepoints[ref_index].spect
    reference = ref_spect if ref_spect.meta.get("FrameOfReferenceUID") else None
    files["rtdose"] = write_rtdose(result.dose, out / "dose_rtdose.dcm", reference=reference, deidentify=True)
    files["regions_csv"] = write_regions_csv(result.regions, out / "regions.csv")
    files["registration_csv"] = _write_registration_csv(result.registrations, out / "registration.csv")
    files["dvh_png"] = plot_dvh(np.asarray(result.dose.array), result.regions_map, out / "dvh.png")
    files["summary_html"] = summary_html(
        out / "summary.html",
        rows=result.regions,
        registrations=[r.as_row() for r in result.registrations],
        settings=result.settings,
        notes=result.notes,
        whole_body_tumour_dose_gy=result.whole_body_tumour_dose_gy,
    )
    return files


def run_dosimetry(
    cohort_dir: str | Path,
    patient_id: str,
    cycle: int,
    out_dir: str | Path,
    options: DosimetryOptions | None = None,
) -> DosimetryResult:
    """Multi-time-point dosimetry of one patient-cycle of a cohort, written to `out_dir`.

    Args:
        cohort_dir: cohort folder (cohort.yaml, manifest.csv, images).
        patient_id, cycle: the case (as in the manifest).
        out_dir: output folder: ``dose_gy.nii.gz``, ``dose_rtdose.dcm``, ``tia_mbq_h_per_ml.nii.gz``,
            ``regions.csv``, ``registration.csv``, ``dvh.png``, ``summary.html`` (written atomically; no patient
            identifiers in them).
        options: the dosimetry settings (`DosimetryOptions`; default: voxel fits, auto model, DVK, GTM).

    Raises:
        LudlError: bad input — unknown patient or cycle, a SPECT without calibration, a CT that cannot be registered,
            fewer time points than the model needs — with the file and manifest line.
    """
    options = DosimetryOptions() if options is None else options
    start = time.perf_counter()
    data = load_cycle(cohort_dir, patient_id, int(cycle))
    load_s = time.perf_counter() - start
    result = compute_dosimetry(data, options)
    start = time.perf_counter()
    files = _write_outputs(result, data, _reference_index(data, options.reference_timepoint), Path(out_dir))
    seconds = {"load": load_s, **result.seconds, "write": time.perf_counter() - start}
    return DosimetryResult(
        regions=result.regions,
        registrations=result.registrations,
        dose=result.dose,
        tia=result.tia,
        regions_map=result.regions_map,
        whole_body_tumour_dose_gy=result.whole_body_tumour_dose_gy,
        activity_in_fov_mbq=result.activity_in_fov_mbq,
        net_administered_mbq=result.net_administered_mbq,
        settings=result.settings,
        notes=result.notes,
        seconds=seconds,
        files=files,
    )
