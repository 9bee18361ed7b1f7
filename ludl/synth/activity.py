"""Voxel activity maps of a synthetic patient: each kinetic region's exact total spread over its voxels.

Every compartment c of `PatientKinetics` gets a voxel set with weights; at time t its activity R_c(t) is spread
as A(x, t) = R_c(t) · u(x) e^{−δλ(x) t} / Σ_y u(y) e^{−δλ(y) t} V_y, so the map holds exactly R_c(t) at every
t (docs/synthetic-cohort.md "Whole-body activity balance")
while voxels inside lesions and kidneys clear at their own rates
(δλ: the anatomy's zero-mean clearance-shift field, independent of the uptake field u).

Where the activity of each compartment sits:
- organs, red marrow, lesions, bowel, bladder: their label (weights = the anatomy's uptake field);
- blood: the blood pool (heart, great vessels) at the blood concentration and a blood volume fraction in every
  other tissue (`TISSUE_BLOOD_FRACTION`), none in the bladder content;
- interstitial fluid: every tissue at its interstitial volume fraction, none in blood pool or bladder;
- rest of body (non-specific binding): soft tissue and marrow outside the named regions, some in bone and lung;
- excreted urine and faeces: gone; a region whose label is not on the grid (outside the crop) keeps its activity
  off the map (`ActivityModel.absent_regions`);
- extravasated activity: a small hot spot at the injection site, decaying physically only (assumption: no
  lymphatic clearance within the scan window).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.physics.units import BQ_PER_MBQ
from ludl.synth.kinetics import PatientKinetics

__all__ = [
    "INTERSTITIAL_FRACTION",
    "TISSUE_BLOOD_FRACTION",
    "ActivityModel",
    "build_activity_model",
    "injection_site_index",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

# Blood volume fraction of tissue outside the blood pool: ≈ 5 % in soft tissue, ≈ 10 % in lung
# (ICRP 89 regional blood volumes: lungs hold ≈ 10.5 % of the blood in ≈ 1 kg; muscle ≈ 14 % in ≈ 29 kg).
TISSUE_BLOOD_FRACTION: Mapping[str, float] = {"default": 0.05, "lung": 0.10, "bladder": 0.0, "blood_pool": 1.0}
# Interstitial volume fraction (ICRP 89: extracellular fluid ≈ 15–20 % of soft tissue; less in bone and
# aerated lung). Assumption for bone and lung.
INTERSTITIAL_FRACTION: Mapping[str, float] = {
    "default": 0.15,
    "lung": 0.05,
    "bone": 0.05,
    "bladder": 0.0,
    "blood_pool": 0.0,
}
# Non-specific binding (`rest_of_body`) by tissue class, relative to soft tissue (assumption).
_REST_WEIGHT: Mapping[str, float] = {"rest_of_body": 1.0, "marrow_other": 1.0, "bone": 0.5, "lung": 0.2}
_BACKGROUND = ("blood", "interstitial", "rest_of_body")
_ML_PER_MM3 = 1e-3


@dataclass(frozen=True, eq=False)
class _Component:
    row: int
    index: IntArray  # flat voxel indices
    weight: FloatArray  # u(x) ≥ 0
    shift_per_h: FloatArray | None  # δλ(x), None where uniform kinetics


@dataclass(frozen=True, eq=False)
class ActivityModel:
    """Where each compartment of one patient-cycle sits on the truth grid; evaluates exact activity maps.

    Attributes:
        grid: the truth grid (the anatomy's label Volume; only its geometry is used).
        kinetics: the patient-cycle's exact regional curves.
        components: per compartment row present on the grid: voxel indices, weights and clearance shifts.
        absent_regions: compartment rows with activity but no voxels here (outside the crop).
        extravasated_mbq: activity left at the injection site (MBq at injection).
        extravasation_index: flat voxel indices of the injection site.
    """

    grid: Volume
    kinetics: PatientKinetics
    components: tuple[_Component, ...]
    absent_regions: tuple[str, ...]
    extravasated_mbq: float
    extravasation_index: IntArray

    @property
    def voxel_volume_ml(self) -> float:
        """Truth voxel volume (mL)."""
        return float(np.prod(self.grid.spacing_zyx_mm)) * _ML_PER_MM3

    def extravasation_mbq(self, time_h: npt.ArrayLike) -> FloatArray:
        """Activity at the injection site (MBq) at each time: physical decay only."""
        t = np.atleast_1d(np.asarray(time_h, dtype=np.float64))
        out: FloatArray = self.extravasated_mbq * np.exp(-self.kinetics.decay_constant_per_h * t)
        return out

    def on_grid_mbq(self, time_h: float) -> float:
        """Exact activity on the map at `time_h` (MBq): present compartments plus the extravasation."""
        a = self.kinetics.activity_mbq(time_h)[:, 0]
        rows = [c.row for c in self.components]
        return float(np.sum(a[rows]) + self.extravasation_mbq(time_h)[0])

    def activity_bq_per_ml(self, time_h: float) -> Volume:
        """Activity concentration map (Bq/mL, float32) at `time_h` after injection, on the truth grid."""
        if not (math.isfinite(time_h) and time_h >= 0):
            raise InputError(f"time_h must be a finite time ≥ 0 h, got {time_h}")
        a_mbq = self.kinetics.activity_mbq(time_h)[:, 0]
        v_ml = self.voxel_volume_ml
        flat = np.zeros(int(np.prod(self.grid.shape)), dtype=np.float64)
        for c in self.components:
            w = c.weight if c.shift_per_h is None else c.weight * np.exp(-c.shift_per_h * time_h)
            total = float(np.sum(w)) * v_ml
            if total > 0:
                flat[c.index] += a_mbq[c.row] * BQ_PER_MBQ * w / total
        if self.extravasation_index.size and self.extravasated_mbq > 0:
            n = self.extravasation_index.size
            flat[self.extravasation_index] += self.extravasation_mbq(time_h)[0] * BQ_PER_MBQ / (n * v_ml)
        array = flat.reshape(self.grid.shape).astype(np.float32)
        return Volume(
            array=array,
            spacing_zyx_mm=self.grid.spacing_zyx_mm,
            origin_xyz_mm=self.grid.origin_xyz_mm,
            direction=self.grid.direction,
            unit="Bq/mL",
        )


def _class_weights(
    labels: npt.NDArray[np.integer], values: Mapping[str, int], table: Mapping[str, float]
) -> FloatArray:
    """Per-voxel weight from a tissue-class table (class name → weight; 'default' for the rest of the body)."""
    w = np.where(labels > 0, table["default"], 0.0)
    for name, weight in table.items():
        if name != "default" and name in values:
            w[labels == values[name]] = weight
    return w


def injection_site_index(
    labels: Volume,
    rng: np.random.Generator,
    radius_mm: float = 8.0,
    centre_xyz_mm: Sequence[float] | None = None,
) -> IntArray:
    """Flat indices of a small sphere of body voxels at the injection site (an extravasation).

    Args:
        labels: label Volume of the truth grid (0 outside the body).
        rng: the patient's generator (picks a lateral body surface when no centre is given).
        radius_mm: sphere radius.
        centre_xyz_mm: the injection site (LPS mm), e.g. the anatomy's landmark in the arm; None: a lateral body
            surface at upper-abdomen height. Empty result when the site lies outside the grid.
    """
    lab = np.asarray(labels.array)
    body = lab > 0
    if not body.any():
        return np.zeros(0, dtype=np.intp)
    if centre_xyz_mm is not None:
        z, y, x = (float(v) for v in labels.physical_to_index(np.asarray(centre_xyz_mm, dtype=np.float64)))
    else:
        zs = np.flatnonzero(body.any(axis=(1, 2)))
        # Elbow height ≈ the upper abdomen: a slice in the middle third of the body's z extent.
        z = float(zs[len(zs) // 3 + int(rng.integers(0, max(1, len(zs) // 3)))])
        cols = np.flatnonzero(body[int(z)].any(axis=0))
        x = float(cols[0] if int(rng.integers(0, 2)) == 0 else cols[-1])
        rows = np.flatnonzero(body[int(z), :, int(x)])
        y = float(rows[len(rows) // 2])
    sz, sy, sx = labels.spacing_zyx_mm
    zz, yy, xx = np.ogrid[: lab.shape[0], : lab.shape[1], : lab.shape[2]]
    d2 = ((zz - z) * sz) ** 2 + ((yy - y) * sy) ** 2 + ((xx - x) * sx) ** 2
    site = (d2 <= radius_mm**2) & body
    return np.flatnonzero(site.ravel())


def _voxels_by_label(flat: npt.NDArray[Any]) -> Callable[[int], IntArray]:
    """Flat voxel indices of a label value, increasing (voxels grouped by label once, by a stable sort)."""
    order = np.argsort(flat, kind="stable")
    sorted_labels = flat[order]
    values, starts = np.unique(sorted_labels, return_index=True)
    ends = np.r_[starts[1:], sorted_labels.size]
    bounds = {int(v): (int(lo), int(hi)) for v, lo, hi in zip(values, starts, ends, strict=True)}

    def voxels(value: int) -> IntArray:
        lo, hi = bounds.get(value, (0, 0))
        return order[lo:hi]

    return voxels


def _background_component(
    row: int, region: str, lab: npt.NDArray[Any], label_values: Mapping[str, int], marrow_factor: float = 1.0
) -> _Component:
    """Blood, interstitial fluid or rest of body: spread over the tissue classes by their fractions.

    `marrow_factor` scales the rest-of-body weight of the marrow outside the red-marrow region: with diffuse
    marrow involvement the whole marrow shows the red marrow's raised uptake, not only L2–L4.
    """
    rest = {**_REST_WEIGHT, "marrow_other": _REST_WEIGHT["marrow_other"] * marrow_factor}
    table = (
        TISSUE_BLOOD_FRACTION
        if region == "blood"
        else INTERSTITIAL_FRACTION
        if region == "interstitial"
        else {"default": 0.0, **rest}
    )
    w_full = _class_weights(lab, label_values, table).ravel()
    if region == "rest_of_body" and not np.any(w_full > 0):
        w_full = (lab.ravel() > 0).astype(np.float64)
    idx = np.flatnonzero(w_full > 0)
    return _Component(row, idx, w_full[idx], None)


def build_activity_model(
    kinetics: PatientKinetics,
    labels: Volume,
    label_values: Mapping[str, int],
    uptake_weight: npt.ArrayLike | None = None,
    clearance_shift_per_h: npt.ArrayLike | None = None,
    *,
    extravasated_mbq: float = 0.0,
    extravasation_index: Sequence[int] | IntArray = (),
) -> ActivityModel:
    """Assign every compartment of `kinetics` to voxels of the truth grid.

    Args:
        kinetics: the patient-cycle's exact curves (rows as `PatientKinetics.regions`).
        labels: integer label Volume of the truth grid (0 outside the body).
        label_values: region/tissue name → label value (kinetic region names, plus ``blood_pool``, ``lung``,
            ``bone``, ``marrow_other``, ``rest_of_body``).
        uptake_weight: per-voxel uptake weight u ≥ 0 (mean ≈ 1 inside each region); None: uniform.
        clearance_shift_per_h: per-voxel clearance shift δλ (1/h, zero-mean inside lesions and kidneys); None: 0.
        extravasated_mbq: activity left at the injection site (MBq at injection), added on top of the kinetics.
        extravasation_index: flat voxel indices of the injection site.
    """
    lab = np.asarray(labels.array)
    n = lab.size
    u = np.ones(n) if uptake_weight is None else np.asarray(uptake_weight, dtype=np.float64).ravel()
    d = None if clearance_shift_per_h is None else np.asarray(clearance_shift_per_h, dtype=np.float64).ravel()
    if u.size != n or (d is not None and d.size != n):
        raise InputError(f"uptake_weight and clearance_shift_per_h need the label grid's shape {lab.shape}")
    if not np.all(np.isfinite(u)) or np.any(u < 0):
        raise InputError("uptake_weight must be finite and ≥ 0")
    flat = lab.ravel()
    body = np.flatnonzero(flat > 0)
    if body.size == 0:
        raise InputError("the label map has no body voxels (all 0)")
    voxels = _voxels_by_label(flat)
    components: list[_Component] = []
    absent: list[str] = []
    tia = kinetics.tia_mbq_h()
    for row, (region, kind) in enumerate(zip(kinetics.regions, kinetics.kinds, strict=True)):
        if kind == "excreta":
            continue
        if region in _BACKGROUND:
            marrow_factor = math.exp(float(kinetics.latent.get("diffuse_marrow_log_factor", 0.0)))
            components.append(_background_component(row, region, lab, label_values, marrow_factor))
            continue
        value = label_values.get(region)
        idx = voxels(int(value)) if value is not None else np.zeros(0, dtype=np.intp)
        if idx.size == 0:
            if tia[row] > 0:
                absent.append(region)
            continue
        w = u[idx]
        if not np.any(w > 0):
            w = np.ones(idx.size)
        shift = None
        if d is not None:
            s = d[idx]
            shift = s if np.any(s != 0) else None
        components.append(_Component(row, idx, w, shift))
    ext_idx = np.asarray(extravasation_index, dtype=np.intp)
    if extravasated_mbq < 0 or not math.isfinite(extravasated_mbq):
        raise InputError(f"extravasated_mbq must be ≥ 0, got {extravasated_mbq}")
    if extravasated_mbq > 0 and ext_idx.size == 0:
        raise InputError("extravasated_mbq > 0 needs the injection site's voxels (extravasation_index)")
    return ActivityModel(
        grid=labels,
        kinetics=kinetics,
        components=tuple(components),
        absent_regions=tuple(absent),
        extravasated_mbq=float(extravasated_mbq),
        extravasation_index=ext_idx,
    )
