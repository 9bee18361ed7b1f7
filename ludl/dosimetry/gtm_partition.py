"""Partial-volume correction per time point: GTM of every scan's region means, then a fit of each corrected curve.

Spill-in from a neighbour with other kinetics (a bone lesion next to the marrow, lesions in or beside the liver)
distorts a region's curve shape, not only its level; correcting each time point before the fit (Rousset 1998 GTM
applied per frame) gives the region's own kinetics. The GTM regions are the labelled regions, the unlabelled body cut
into cubes (`ludl.dosimetry.pvc.background_blocks`), parts of large organs (`_split_organs`) and the air outside the
body; voxels the label map shares between regions enter with their tissue fractions (`_gtm_partition`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.pvc import background_blocks, fractional_means, gtm_matrix_fractional, gtm_solve
from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.registration import AlignedTimePoint
from ludl.errors import FitError, InputError
from ludl.imaging.volume import Volume
from ludl.physics.kinetics import TacFit, fit_tac
from ludl.physics.units import MBQ_PER_BQ

__all__ = [
    "MAX_GTM_REGIONS",
    "Fractions",
    "GtmSystem",
    "body_mask",
    "gtm_per_timepoint",
    "gtm_system",
    "region_fractions",
    "resampling_variance_zyx_mm2",
]

# Most GTM regions one system may hold: 3 dense n × n float64 matrices (transfer, two merges) are 0.6 GB at 5,000.
# A whole-body patient needs ≈ 1,000–1,500 (40 mm background blocks, organs and their parts, ≤ 150 lesions).
MAX_GTM_REGIONS = 5000
# (flat voxel, label value, fraction) of every voxel shared by several labels (`ludl.imaging.label_grid`).
Fractions = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]

# GTM background: unlabelled body tissue (CT above this, lungs included) is split into cubes of this edge, each its own
# GTM region; air outside the body stays one "rest" region. 40 mm ≈ 3 FWHM: each cube recovers ≳ 0.6 of itself, so
# its mean is well determined, yet bowel, blood pool and muscle next to an organ get their own local mean.
_BODY_MIN_HU = -900.0
_GTM_BLOCK_MM = 40.0
# Organs at least this large are split into GTM parts (`_split_organs`).
_SPLIT_MIN_ML = 60.0
# Only organs known to be layered are split: the kidney (cortex ≫ medulla, the cohort's kidney heterogeneity).
_SPLIT_PREFIXES = ("kidney",)
# Parenchymal organs whose part next to a lesion is solved apart and left out of the organ's mean (`_split_organs`);
# not the bladder, whose content (urine, voided between scans) is no parenchyma.
_PARENCHYMA_PREFIXES = ("liver", "spleen")
# Below this R² a region curve is not kinetics a model integrates (a bladder voided between scans): its corrected mean
# then comes from GTM of the TIA-map means instead of a fit of its corrected curve.
_MIN_REGION_R2 = 0.9
# A region this share inside every scan counts as whole (a voxel's worth of rounding at the field's edge).
_WHOLE_IN_FOV = 0.999
# The GTM region of the air outside the body (and of everything no other region claims).
_GTM_REST = "_rest"


def body_mask(hu: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Voxels of body tissue (lungs included) on the CT resampled to the SPECT grid."""
    return np.asarray(hu > _BODY_MIN_HU, dtype=np.bool_)


def region_fractions(
    fractions: Fractions,
    label_values: Mapping[str, int],
    region_values: Mapping[str, int],
) -> Fractions:
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


@dataclass(frozen=True, eq=False)
class GtmSystem:
    """The GTM regions (split-organ parts included, `_GTM_REST` last), their voxels and transfer matrix.

    A split organ's observed mean is the count-weighted mean of its parts (`merge_obs`); its true mean is that of its
    rim and core but leaves out the part next to hot lesions (`merge_true`; assumed like the rest of the organ).
    """

    names: list[str]
    index: npt.NDArray[np.int64]
    mixed: Fractions
    w: npt.NDArray[np.float64]
    counts: npt.NDArray[np.float64]
    merge_obs: npt.NDArray[np.float64]
    merge_true: npt.NDArray[np.float64]
    keep: list[int]

    def means(self, array: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Observed mean of `array` over every GTM region and part."""
        return fractional_means(array, self.index, len(self.names), self.mixed, self.counts)

    def whole(self, per_part: npt.NDArray[np.float64], merge: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Per-part values merged into whole regions (parts dropped from the list)."""
        summed = (merge * self.counts) @ per_part
        total = (merge @ self.counts)[:, None] if per_part.ndim == 2 else merge @ self.counts
        return np.asarray(np.where(total > 0, summed / np.maximum(total, 1e-300), per_part))[self.keep]

    def corrected(
        self, per_part: npt.NDArray[np.float64], w: npt.NDArray[np.float64] | None = None
    ) -> npt.NDArray[np.float64]:
        """True means of the whole regions from observed per-part means (with another transfer matrix `w` of the
        same partition where given: `blurred_matrix`)."""
        return self.whole(gtm_solve(self.w if w is None else w, per_part), self.merge_true)

    def blurred_matrix(
        self, spacing_zyx_mm: Sequence[float], fwhm_mm: float, extra_variance_zyx_mm2: Sequence[float]
    ) -> npt.NDArray[np.float64]:
        """The transfer matrix of the same partition for a PSF widened by an extra variance per axis (mm²)."""
        n = len(self.names)
        w, _ = gtm_matrix_fractional(self.index, n, self.mixed, spacing_zyx_mm, fwhm_mm, extra_variance_zyx_mm2)
        return w


def gtm_system(
    regions: RegionSet,
    values: Mapping[str, int],
    body: npt.NDArray[np.bool_],
    spacing_zyx_mm: tuple[float, float, float],
    fwhm_mm: float,
    fractions: Fractions | None,
) -> GtmSystem:
    """Partition the grid into GTM regions and parts and build their transfer matrix."""
    first = max(regions.values.values(), default=0) + 1
    extended, blocks = background_blocks(regions.labels, body, spacing_zyx_mm, _GTM_BLOCK_MM, first)
    parts = _split_organs(extended, regions, values, spacing_zyx_mm, fwhm_mm, first + len(blocks))
    all_values = {**values, **blocks, **parts}
    present = set(np.unique(extended).tolist())
    names = [name for name, v in all_values.items() if v in present] + [_GTM_REST]
    n = len(names)
    if n > MAX_GTM_REGIONS:  # the transfer matrix and the merge matrices are dense n × n
        raise InputError(
            f"{len(values)} regions ({n} GTM regions with the background blocks) need a {3 * 8 * n * n / 1e9:.1f} GB "
            f"partial-volume system (at most {MAX_GTM_REGIONS}): the label map holds far more regions than a patient "
            "has — a noise segmentation or a label map of another kind; check it, or set pvc=none"
        )
    index, mixed = _gtm_partition(extended, names, all_values, body, fractions, blocks, parts)
    w, counts = gtm_matrix_fractional(index, n, mixed, spacing_zyx_mm, fwhm_mm)
    keep = [i for i, name in enumerate(names) if ":" not in name]
    merge_obs = np.eye(n)
    merge_true = np.eye(n)
    for i, name in enumerate(names):
        organ, _, part = name.partition(":")
        if part and organ in names:
            merge_obs[names.index(organ), i] = 1.0
            merge_true[names.index(organ), i] = 1.0 if part == "core" else 0.0
    return GtmSystem(names, index, mixed, w, counts, merge_obs, merge_true, keep)


def gtm_per_timepoint(
    aligned: Sequence[AlignedTimePoint],
    regions: RegionSet,
    body: npt.NDArray[np.bool_],
    spacing_zyx_mm: tuple[float, float, float],
    fwhm_mm: float,
    curves: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    fits: Mapping[str, TacFit | None],
    model: str,
    tia: npt.NDArray[np.float64],
    fractions: Fractions | None = None,
    in_fov: Mapping[str, float] | None = None,
    resampling_variance_zyx_mm2: Sequence[Sequence[float]] | None = None,
) -> tuple[dict[str, float], dict[str, TacFit | None], list[str]]:
    """GTM on every time point's region means, then one fit per corrected region curve.

    The factor applied to the region's mean TIA and dose is TIA(fit of the corrected curve) / TIA of the region in
    the TIA map; where a corrected curve cannot be fitted, the GTM of the TIA-map means (linear, so the same
    correction for a well-fitted curve) is used instead.

    Args:
        resampling_variance_zyx_mm2: per time point (as `aligned`), the blur its resampling onto the reference grid
            added (`resampling_variance_zyx_mm2`; zeros for the reference scan); None: no time point was resampled.

    Returns:
        (factor per region, fit of the corrected curve per region, notes).
    """
    in_fov = dict(in_fov or {})
    values = {n: v for n, v in regions.values.items() if regions.kinds[n] != "body"}
    system = gtm_system(regions, values, body, spacing_zyx_mm, fwhm_mm, fractions)
    per_part = np.stack(
        [system.means(np.asarray(a.activity.array, dtype=np.float64) * MBQ_PER_BQ) for a in aligned], axis=1
    )  # (regions and parts, time points), MBq/mL
    true = _corrected_per_timepoint(system, per_part, spacing_zyx_mm, fwhm_mm, resampling_variance_zyx_mm2)
    observed = system.whole(per_part, system.merge_obs)
    names = [system.names[i] for i in system.keep]
    tia_true = dict(zip(names, system.corrected(system.means(tia)), strict=True))
    counts = (system.merge_obs @ system.counts)[system.keep]
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
        fit_true, note = _fit_corrected_curve(
            name,
            t[order],
            observed[i][order] * volume_ml,
            np.maximum(true[i][order], 0.0) * volume_ml,
            model,
            in_fov.get(name, 1.0),
        )
        if note:
            notes.append(note)
        if fit_true is not None and voxel_tia > 0:
            # The corrected mean is the corrected curve's own integral: region curves (sums over many voxels) may use
            # every model the time points allow, where single voxel curves are limited to mono / biexp_uptake,
            # which misses the early fast phase of quickly clearing organs (spleen, liver).
            factors[name] = max(fit_true.tia, 0.0) / voxel_tia
            corrected_fits[name] = fit_true
    return factors, corrected_fits, notes


# Resampling blur (mm²) is rounded to this step before time points share one transfer matrix: a step of 1 mm² moves
# the PSF's FWHM by < 1 % at 12 mm (σ² ≈ 26 mm²), and scans with nearly the same blur cost one GTM build, not one each.
_VARIANCE_STEP_MM2 = 1.0


def _corrected_per_timepoint(
    system: GtmSystem,
    per_part: npt.NDArray[np.float64],
    spacing_zyx_mm: tuple[float, float, float],
    fwhm_mm: float,
    resampling_variance_zyx_mm2: Sequence[Sequence[float]] | None,
) -> npt.NDArray[np.float64]:
    """True region means (regions, time points): every time point solved with the PSF its image holds.

    A scan resampled onto the reference grid holds the PSF and the resampling's own blur (box-overlap weights
    1 − u and u between two voxels: variance u(1 − u)·s² per axis, s²/6 on average); GTM with the PSF alone
    under-corrects it (−5 … −10 % for 5–30 mL lesions at 6 mm voxels and 12 mm FWHM), and since the reference scan
    is not resampled, a region's corrected curve would bend and its fitted T_eff read short.
    """
    if resampling_variance_zyx_mm2 is None:
        return system.corrected(per_part)
    variances = np.round(np.asarray(resampling_variance_zyx_mm2, dtype=np.float64) / _VARIANCE_STEP_MM2)
    if variances.shape != (per_part.shape[1], 3):
        raise InputError(
            f"resampling_variance_zyx_mm2 must give 3 variances for each of the {per_part.shape[1]} time points, "
            f"got shape {variances.shape}"
        )
    true = np.zeros((len(system.keep), per_part.shape[1]))
    for key in np.unique(variances, axis=0):
        columns = np.flatnonzero(np.all(variances == key, axis=1))
        w = None if not key.any() else system.blurred_matrix(spacing_zyx_mm, fwhm_mm, key * _VARIANCE_STEP_MM2)
        true[:, columns] = system.corrected(per_part[:, columns], w)
    return true


def resampling_variance_zyx_mm2(moving: Volume, reference: Volume, transform: Any | None) -> tuple[float, ...]:
    """Blur (variance per reference axis, mm²) that activity-conserving resampling of `moving` onto `reference`
    adds: u(1 − u)·s² per axis for a reference voxel centre at fraction u between two moving voxel centres (the
    box-overlap weights 1 − u and u), averaged over the reference grid (a rotation varies u across it).

    Zeros when the moving scan already lies on the reference grid without a transform. Exact for grids of equal
    spacing; for other spacings an approximation (the fraction of the moving grid each centre falls at).
    """
    from ludl.imaging.resample import transform_affine

    if transform is None and moving.same_grid(reference):
        return (0.0, 0.0, 0.0)
    # Every 4th reference voxel along each axis: thousands of centres, enough for the mean of u(1 − u).
    zyx = np.stack(np.meshgrid(*(np.arange(0, n, 4) for n in reference.shape), indexing="ij"), axis=-1).reshape(-1, 3)
    points = reference.index_to_physical(zyx.astype(np.float64))
    affine = transform_affine(transform)
    mapped = points @ affine[:3, :3].T + affine[:3, 3]
    u = np.mod(moving.physical_to_index(mapped), 1.0)
    spacing = np.asarray(moving.spacing_zyx_mm, dtype=np.float64)
    return tuple(float(v) for v in np.mean(u * (1.0 - u), axis=0) * spacing**2)


def _fit_corrected_curve(
    name: str,
    t: npt.NDArray[np.float64],
    obs_curve: npt.NDArray[np.float64],
    true_curve: npt.NDArray[np.float64],
    model: str,
    in_fov_share: float,
) -> tuple[TacFit | None, str | None]:
    """(fit of the corrected curve when it stands for the region's kinetics, note when it does not)."""
    if not (np.any(obs_curve > 0) and np.any(true_curve > 0)):
        return None, None
    if in_fov_share < _WHOLE_IN_FOV:
        # Its mean at a scan that misses part of it is not the region's mean: no curve to correct point by point.
        return None, (
            f"region {name}: partly outside the field of view at some time points (at worst "
            f"{100 * in_fov_share:.0f} % inside); its TIA-map mean is corrected instead"
        )
    try:
        fit_obs = fit_tac(t, obs_curve, model=model)
        fit_true = fit_tac(t, true_curve, model=model)
    except FitError as err:
        return None, f"region {name}: per-time-point GTM curve not fitted ({err}); TIA-level GTM used"
    if min(fit_obs.r2, fit_true.r2) < _MIN_REGION_R2:
        return None, (
            f"region {name}: its curve is not smooth kinetics (R² {min(fit_obs.r2, fit_true.r2):.2f}, e.g. a "
            "voided bladder); partial-volume correction of its TIA-map mean used"
        )
    if fit_obs.tia > 0 and math.isfinite(fit_true.tia):
        return fit_true, None
    return None, None


def _gtm_partition(
    extended: npt.NDArray[np.int32],
    names: Sequence[str],
    all_values: Mapping[str, int],
    body: npt.NDArray[np.bool_],
    fractions: Fractions | None,
    blocks: Mapping[str, int],
    parts: Mapping[str, int],
) -> tuple[npt.NDArray[np.int64], Fractions]:
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
