"""True time-integrated activity and absorbed dose of a synthetic patient, and its region truth table.

TIA map: for a compartment with uniform kinetics over its voxels the map is its exact TIA (closed form from
the eigen-decomposition) spread by the weights; where voxels clear at their own rates (lesions, kidneys) the
voxel curves R(t) u e^{−δλt} / Z(t) are integrated on a fine geometric time grid (trapezoid, 300 points to
3,000 h = 19 physical half-lives) and rescaled so the region's voxels add up to its exact TIA (the
quadrature error then only touches the voxel pattern, ≈ 1e-4 relative). Dose: `dose_from_tia` with the
generated 177Lu voxel S kernel for the truth spacing and the truth density (ρ_k/ρ correction).
Without images (`regions_from_kinetics`) a region's dose is the kinetics' self-dose (TIA × sphere S value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ludl.imaging.volume import Volume
from ludl.io.regions import REGION_KINDS
from ludl.io.truth import TRUTH_REGION_COLUMNS
from ludl.physics.dose import dose_from_tia, voxel_tia_mbq_h
from ludl.physics.kernels import voxel_s_kernel
from ludl.synth.activity import ActivityModel
from ludl.synth.kinetics import PatientKinetics

__all__ = [
    "REGION_COLUMNS",
    "RegionTruth",
    "TruthMaps",
    "region_truth",
    "regions_from_kinetics",
    "tia_map_mbq_h_per_ml",
    "true_dose_gy",
]

FloatArray = npt.NDArray[np.float64]

# The columns of truth/regions.csv live with its reader and writer in `ludl.io.truth`.
REGION_COLUMNS = TRUTH_REGION_COLUMNS
# Fine time grid of the voxel-curve quadrature (h).
_TIME_GRID_H = np.concatenate([[0.0], np.geomspace(1e-3, 3000.0, 299)])
_TRAPEZOID_WEIGHTS = (
    np.concatenate([[0.0], np.diff(_TIME_GRID_H)]) / 2.0 + np.concatenate([np.diff(_TIME_GRID_H), [0.0]]) / 2.0
)


@dataclass(frozen=True)
class RegionTruth:
    """One row of `truth/regions.csv`."""

    patient_id: str
    cycle: int
    region: str
    kind: str
    volume_ml: float
    mean_dose_gy: float
    tia_mbq_h: float
    t_eff_h: float
    in_fov_fraction: float | None

    def cells(self) -> list[str]:
        """CSV cells in `REGION_COLUMNS` order (fixed formatting: byte-identical output for equal values)."""

        def num(x: float | None) -> str:
            return "" if x is None or not math.isfinite(x) else f"{x:.6g}"

        return [
            self.patient_id,
            str(self.cycle),
            self.region,
            self.kind,
            num(self.volume_ml),
            num(self.mean_dose_gy),
            num(self.tia_mbq_h),
            num(self.t_eff_h),
            num(self.in_fov_fraction),
        ]


@dataclass(frozen=True, eq=False)
class TruthMaps:
    """True TIA (MBq·h/mL) and absorbed dose (Gy) maps on the truth grid."""

    tia_mbq_h_per_ml: Volume
    dose_gy: Volume


def tia_map_mbq_h_per_ml(model: ActivityModel) -> Volume:
    """True TIA concentration map (MBq·h/mL, float32) of a patient-cycle on the truth grid."""
    kin = model.kinetics
    tia = kin.tia_mbq_h()
    v_ml = model.voxel_volume_ml
    flat = np.zeros(int(np.prod(model.grid.shape)), dtype=np.float64)
    curves: FloatArray | None = None
    t = _TIME_GRID_H
    for c in model.components:
        if c.shift_per_h is None:
            flat[c.index] += tia[c.row] * c.weight / (float(np.sum(c.weight)) * v_ml)
            continue
        if curves is None:
            curves = kin.activity_mbq(t)
        # Voxel curves R(t) u e^{−δλt}/Z(t) integrated by the trapezoid rule: two matrix–vector products per
        # chunk of voxels (chunks bound the n_voxels × n_times matrix for large lesions).
        z_t = np.zeros(t.size)
        for sl in _chunks(c.index.size):
            z_t += c.weight[sl] @ np.exp(-np.multiply.outer(c.shift_per_h[sl], t))
        z_t *= v_ml
        g = np.where(z_t > 0, curves[c.row] / np.where(z_t > 0, z_t, 1.0), 0.0) * _TRAPEZOID_WEIGHTS
        out = np.empty(c.index.size)
        for sl in _chunks(c.index.size):
            out[sl] = c.weight[sl] * (np.exp(-np.multiply.outer(c.shift_per_h[sl], t)) @ g)
        total = float(np.sum(out)) * v_ml
        if total > 0:
            out *= tia[c.row] / total  # exact regional TIA; quadrature error only in the voxel pattern
        flat[c.index] += out
    if model.extravasated_mbq > 0 and model.extravasation_index.size:
        n = model.extravasation_index.size
        flat[model.extravasation_index] += model.extravasated_mbq / kin.decay_constant_per_h / (n * v_ml)
    return Volume(
        array=flat.reshape(model.grid.shape).astype(np.float32),
        spacing_zyx_mm=model.grid.spacing_zyx_mm,
        origin_xyz_mm=model.grid.origin_xyz_mm,
        direction=model.grid.direction,
        unit="MBq*h/mL",
    )


def _chunks(n: int, size: int = 20000) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def true_dose_gy(tia_map: Volume, density_g_per_ml: Volume | npt.ArrayLike, *, workers: int | None = 1) -> Volume:
    """True absorbed dose (Gy, float32): voxel-S-kernel convolution of the TIA with the truth density."""
    spacing = tuple(float(s) for s in tia_map.spacing_zyx_mm)
    kernel = voxel_s_kernel(spacing)
    rho = density_g_per_ml.array if isinstance(density_g_per_ml, Volume) else np.asarray(density_g_per_ml)
    tia_mbq_h = voxel_tia_mbq_h(np.asarray(tia_map.array, dtype=np.float64), spacing)
    dose = dose_from_tia(tia_mbq_h, kernel, density_g_per_ml=np.asarray(rho, dtype=np.float64), workers=workers)
    return tia_map.with_array(np.asarray(dose, dtype=np.float32), unit="Gy")


def _kind(region: str, kinetic_kind: str) -> str:
    if kinetic_kind == "lesion":
        return "lesion"
    return REGION_KINDS.get(region, kinetic_kind)


def region_truth(
    patient_id: str,
    kinetics: PatientKinetics,
    labels: Volume,
    label_values: Mapping[str, int],
    dose: Volume,
    tia_map: Volume,
    in_fov_fraction: Mapping[str, float] | None = None,
) -> list[RegionTruth]:
    """Rows of `truth/regions.csv` for one patient-cycle with images: mean dose of the dose map per label.

    Regions: every organ, marrow and lesion row of the kinetics (volume and dose NaN when not on the grid),
    then ``body`` (all voxels with label > 0).
    """
    lab = np.asarray(labels.array)
    v_ml = float(np.prod(labels.spacing_zyx_mm)) * 1e-3
    d = np.asarray(dose.array, dtype=np.float64)
    fov = in_fov_fraction or {}
    rows: list[RegionTruth] = []
    for region, kind in zip(kinetics.regions, kinetics.kinds, strict=True):
        if kind not in ("organ", "marrow", "lesion"):
            continue
        value = label_values.get(region)
        mask = lab == value if value is not None else None
        n = int(mask.sum()) if mask is not None else 0
        rows.append(
            RegionTruth(
                patient_id=patient_id,
                cycle=kinetics.cycle,
                region=region,
                kind=_kind(region, kind),
                volume_ml=n * v_ml if n else math.nan,
                mean_dose_gy=float(d[mask].mean()) if n and mask is not None else math.nan,
                tia_mbq_h=float(kinetics.tia_mbq_h(region)),
                t_eff_h=float(kinetics.t_eff_h(region)),
                in_fov_fraction=fov.get(region, 0.0 if not n else None),
            )
        )
    body = lab > 0
    rows.append(
        RegionTruth(
            patient_id=patient_id,
            cycle=kinetics.cycle,
            region="body",
            kind="body",
            volume_ml=float(body.sum()) * v_ml,
            mean_dose_gy=float(d[body].mean()),
            tia_mbq_h=float(np.asarray(tia_map.array, dtype=np.float64)[body].sum()) * v_ml,
            t_eff_h=math.nan,
            in_fov_fraction=fov.get("body"),
        )
    )
    return rows


def regions_from_kinetics(
    patient_id: str, kinetics: PatientKinetics, regions: Sequence[str] | None = None
) -> list[RegionTruth]:
    """Rows of `truth/regions.csv` without images: region doses from the kinetics' self-dose S values."""
    rows: list[RegionTruth] = []
    for region, kind in zip(kinetics.regions, kinetics.kinds, strict=True):
        if kind not in ("organ", "marrow", "lesion") or (regions is not None and region not in regions):
            continue
        rows.append(
            RegionTruth(
                patient_id=patient_id,
                cycle=kinetics.cycle,
                region=region,
                kind=_kind(region, kind),
                volume_ml=float(kinetics.volumes_ml[kinetics.index(region)]),
                mean_dose_gy=float(kinetics.mean_dose_gy(region)),
                tia_mbq_h=float(kinetics.tia_mbq_h(region)),
                t_eff_h=float(kinetics.t_eff_h(region)),
                in_fov_fraction=None,
            )
        )
    return rows
