"""Tiny analytic SPECT/CT cohorts written in the institutional format (cohort.yaml, manifest.csv, NIfTI).

The digital patient is defined in continuous LPS coordinates (mm): a body ellipsoid with lungs, spine, kidneys,
liver, spleen and two spherical lesions, every region with exact bi-exponential-with-uptake kinetics
A(t) = A0 (e^{−ln2 t/T_eff} − e^{−ln2 t/T_up}), so its TIA is A0 (T_eff − T_up)/ln2 in closed form. At each time
point the patient is displaced by a known rigid shift (whole voxels, so that the moved images are exact), the SPECT
optionally blurred by a Gaussian PSF and given noise, and optionally split into two bed positions acquired at
different times. The truth (TIA map and labels in the reference pose) comes from the same analytic definition,
never from the pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.imaging import Volume
from ludl.io.cohort import CohortConfig, write_cohort_config
from ludl.io.manifest import ManifestRow, write_manifest
from ludl.io.nifti import write_nifti

SPACING_MM = 4.8
SHAPE_ZYX = (40, 44, 60)
LABELS = {"kidney_left": 1, "kidney_right": 2, "liver": 3, "spleen": 4, "body": 5, "lesion": 10}
TIMES_H = (4.0, 24.0, 48.0, 96.0, 168.0)
ACTUAL_H = (4.2, 24.5, 47.8, 96.3, 167.5)
# Whole-voxel rigid displacements of the patient (x, y, z) mm per time point; 24 h is the reference pose.
SHIFTS_MM = ((4.8, -4.8, 0.0), (0.0, 0.0, 0.0), (0.0, 4.8, 4.8), (-9.6, 0.0, 4.8), (4.8, 4.8, -4.8))
INJECTED_MBQ = 7400.0
LN2 = math.log(2.0)


@dataclass(frozen=True)
class Region:
    name: str
    centre_xyz_mm: tuple[float, float, float]
    radii_xyz_mm: tuple[float, float, float]
    a0_mbq_per_ml: float
    t_eff_h: float
    t_up_h: float
    hu: float


BODY = Region("body", (0.0, 0.0, 0.0), (125.0, 85.0, 75.0), 0.05, 8.0, 0.5, 0.0)
REGIONS = (
    Region("kidney_left", (60.0, 30.0, -20.0), (22.0, 25.0, 35.0), 1.85, 35.0, 1.0, 35.0),
    Region("kidney_right", (-60.0, 30.0, -20.0), (22.0, 25.0, 35.0), 1.85, 30.0, 1.0, 35.0),
    Region("liver", (-50.0, -10.0, 10.0), (55.0, 45.0, 28.0), 0.92, 23.0, 1.0, 60.0),
    Region("spleen", (55.0, 0.0, 25.0), (25.0, 25.0, 30.0), 0.95, 17.0, 1.0, 45.0),
    Region("lesion_a", (20.0, -45.0, -30.0), (14.0, 14.0, 14.0), 3.0, 70.0, 6.0, 50.0),
    Region("lesion_b", (-20.0, 50.0, -45.0), (10.0, 10.0, 10.0), 4.0, 90.0, 6.0, 50.0),
)
LUNGS = (((55.0, 0.0, 55.0), (35.0, 45.0, 22.0)), ((-55.0, 0.0, 55.0), (35.0, 45.0, 22.0)))


def curve(region: Region, t_h: float) -> float:
    """Concentration (MBq/mL) of a region at t h after injection (not decay-corrected)."""
    return region.a0_mbq_per_ml * (math.exp(-LN2 * t_h / region.t_eff_h) - math.exp(-LN2 * t_h / region.t_up_h))


def tia(region: Region) -> float:
    """Exact TIA concentration (MBq·h/mL) of a region."""
    return region.a0_mbq_per_ml * (region.t_eff_h - region.t_up_h) / LN2


def grid() -> Volume:
    """The scanner grid (SPECT and CT share it), centred on the origin."""
    nz, ny, nx = SHAPE_ZYX
    origin = (-(nx - 1) / 2 * SPACING_MM, -(ny - 1) / 2 * SPACING_MM, -(nz - 1) / 2 * SPACING_MM)
    return Volume(np.zeros(SHAPE_ZYX, dtype=np.float32), (SPACING_MM,) * 3, origin_xyz_mm=origin, unit="1")


def _inside(points: npt.NDArray[np.float64], centre: Sequence[float], radii: Sequence[float]) -> npt.NDArray[np.bool_]:
    r2 = sum(((points[..., a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    return np.asarray(r2 <= 1.0)


def _points(shift_xyz_mm: Sequence[float]) -> npt.NDArray[np.float64]:
    g = grid()
    idx = np.argwhere(np.ones(SHAPE_ZYX, dtype=bool)).astype(np.float64)
    # A patient displaced by d shows at scanner point p what sat at p − d in the reference pose.
    return np.asarray(g.index_to_physical(idx).reshape(*SHAPE_ZYX, 3) - np.asarray(shift_xyz_mm))


def region_index(shift_xyz_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> npt.NDArray[np.int16]:
    """0 outside the body, 1 body rest, 2 + i for REGIONS[i]."""
    p = _points(shift_xyz_mm)
    out = np.zeros(SHAPE_ZYX, dtype=np.int16)
    out[_inside(p, BODY.centre_xyz_mm, BODY.radii_xyz_mm)] = 1
    for i, r in enumerate(REGIONS):
        out[_inside(p, r.centre_xyz_mm, r.radii_xyz_mm)] = 2 + i
    return out


def ct_hu(shift_xyz_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> npt.NDArray[np.float32]:
    """CT of the displaced patient (textbook HU values)."""
    p = _points(shift_xyz_mm)
    index = region_index(shift_xyz_mm)
    hu = np.where(index > 0, 0.0, -1000.0)
    for centre, radii in LUNGS:
        hu[_inside(p, centre, radii) & (index > 0)] = -800.0
    spine = ((p[..., 0] / 15.0) ** 2 + ((p[..., 1] - 62.0) / 15.0) ** 2 <= 1.0) & (index > 0)
    hu[spine] = 700.0
    for i, r in enumerate(REGIONS):
        hu[index == 2 + i] = r.hu
    return hu.astype(np.float32)


def activity_mbq_per_ml(t_h: float, shift_xyz_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> npt.NDArray[np.float64]:
    """Noise-free, unblurred concentration (MBq/mL) at t h of the displaced patient."""
    index = region_index(shift_xyz_mm)
    table = np.array([0.0, curve(BODY, t_h), *(curve(r, t_h) for r in REGIONS)])
    return np.asarray(table[index])


def true_tia_map() -> npt.NDArray[np.float64]:
    """Exact TIA map (MBq·h/mL) in the reference pose."""
    table = np.array([0.0, tia(BODY), *(tia(r) for r in REGIONS)])
    return np.asarray(table[region_index()])


def label_map() -> npt.NDArray[np.int16]:
    """Label map in the reference pose with the cohort's values (both lesions under the class ``lesion``)."""
    index = region_index()
    values = {"body": LABELS["body"], "lesion_a": LABELS["lesion"], "lesion_b": LABELS["lesion"]}
    out = np.zeros(SHAPE_ZYX, dtype=np.int16)
    out[index == 1] = values["body"]
    for i, r in enumerate(REGIONS):
        out[index == 2 + i] = values.get(r.name, LABELS.get(r.name, 0))
    return out


@dataclass
class CohortSpec:
    """What to write: time points, blur, noise, beds, units and deliberate defects."""

    timepoint_indices: tuple[int, ...] = (0, 1, 2, 3, 4)
    fwhm_true_mm: float = 0.0  # 0 = no blur
    fwhm_nominal_mm: float = 10.0
    noise_cv: float = 0.0
    seed: int = 0
    two_beds_at: tuple[int, ...] = ()  # time-point indices split into two beds acquired 0.5 h apart
    units: str = "Bq/mL"  # or "counts"
    sensitivity_cps_per_mbq: float | None = None
    acquisition_s: float | None = None
    bad_ct_at: int | None = None  # time-point index whose CT is replaced
    bad_ct: str = "noise"  # "noise" or "empty"
    patient_id: str = "P01"
    residual_mbq: float = 0.0
    crop_x_from: tuple[int, int] | None = None  # (time-point index, first x index kept): a narrower field of view


BED_DELAY_H = 1.0
BED_SPLIT = (22, 18)  # bed 1 covers z slices [0, 22), bed 2 [18, 40): 4 overlapping slices


def write_cohort(root: Path, spec: CohortSpec) -> Path:
    """Write the cohort folder and return it."""
    rng = np.random.default_rng(spec.seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    units = {"spect": spec.units, "ct": "HU", "mask": "label"}
    config = CohortConfig(
        name="tiny",
        nuclide="Lu-177",
        units=units,
        sensitivity_cps_per_mbq=spec.sensitivity_cps_per_mbq,
        fwhm_mm=spec.fwhm_nominal_mm,
        labels=LABELS,
    )
    write_cohort_config(config, root)
    g = grid()
    sigma = spec.fwhm_true_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / SPACING_MM
    rows: list[ManifestRow] = []

    def row(**cells: Any) -> ManifestRow:
        return ManifestRow(
            patient_id=spec.patient_id,
            cycle=1,
            injected_mbq=INJECTED_MBQ,
            residual_mbq=spec.residual_mbq or None,
            **cells,
        )

    for k in spec.timepoint_indices:
        tp, t_h, shift = TIMES_H[k], ACTUAL_H[k], SHIFTS_MM[k]
        beds = (0, 1) if k in spec.two_beds_at else (0,)
        for bed in beds:
            t_bed = t_h + BED_DELAY_H * bed
            conc = activity_mbq_per_ml(t_bed, shift)
            if sigma > 0:
                conc = ndimage.gaussian_filter(conc, sigma, mode="constant")
            if spec.noise_cv > 0:
                texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE_ZYX), 1.0)
                conc = np.clip(conc * (1.0 + spec.noise_cv * texture / texture.std()), 0.0, None)
            values = conc * 1e6  # Bq/mL
            if spec.units == "counts":
                assert spec.sensitivity_cps_per_mbq is not None and spec.acquisition_s is not None
                values = conc * g.voxel_volume_ml * spec.sensitivity_cps_per_mbq * spec.acquisition_s
            volume = g.with_array(values.astype(np.float32), unit=spec.units)
            if len(beds) > 1:
                lo, hi = (0, BED_SPLIT[0]) if bed == 0 else (BED_SPLIT[1], SHAPE_ZYX[0])
                origin = g.index_to_physical((lo, 0, 0))
                volume = Volume(volume.array[lo:hi], g.spacing_zyx_mm, tuple(origin), unit=spec.units)
            if spec.crop_x_from is not None and spec.crop_x_from[0] == k:
                x0 = spec.crop_x_from[1]
                origin = volume.index_to_physical((0, 0, x0))
                volume = Volume(volume.array[:, :, x0:], g.spacing_zyx_mm, tuple(origin), unit=spec.units)
            name = f"images/spect_{tp:g}h" + (f"_bed{bed + 1}" if len(beds) > 1 else "") + ".nii.gz"
            write_nifti(volume, root / name)
            rows.append(
                row(
                    role="spect",
                    timepoint_h=tp,
                    time_h=t_bed,
                    bed=bed + 1 if len(beds) > 1 else None,
                    path=name,
                    acquisition_s=spec.acquisition_s,
                )
            )
        hu: npt.NDArray[np.floating[Any]] = ct_hu(shift)
        if spec.bad_ct_at == k:
            hu = rng.uniform(-1000.0, 1000.0, SHAPE_ZYX) if spec.bad_ct == "noise" else np.full(SHAPE_ZYX, -1000.0)
        ct_name = f"images/ct_{tp:g}h.nii.gz"
        write_nifti(g.with_array(hu.astype(np.float32), unit="HU"), root / ct_name)
        rows.append(row(role="ct", timepoint_h=tp, time_h=t_h, path=ct_name))
    mask_name = "images/labels_24h.nii.gz"
    write_nifti(g.with_array(label_map(), unit="label"), root / mask_name)
    rows.append(row(role="mask", timepoint_h=24.0, path=mask_name))
    write_manifest(rows, root)
    return root


def lesion_names_by_truth(regions_labels: npt.NDArray[np.int32], values: dict[str, int]) -> dict[str, str]:
    """Map the pipeline's lesion_NNN names to the factory's lesion_a / lesion_b by overlap with the truth."""
    truth = region_index()
    out: dict[str, str] = {}
    for name, value in values.items():
        if not name.startswith("lesion_"):
            continue
        mask = regions_labels == value
        for i, r in enumerate(REGIONS):
            if r.name.startswith("lesion") and np.any(truth[mask] == 2 + i):
                out[name] = r.name
    return out
