"""A synthetic single-scan-style report content: ellipsoid organs and spherical lesions with known dose levels.

Region statistics are computed here with `ludl.physics.radiobiology.region_stats` (the same function the pipeline
uses); the tests recompute them from the dose map with plain NumPy to check what the report shows.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ludl.imaging.volume import Volume
from ludl.physics.radiobiology import bed_gy, region_stats
from ludl.report import (
    RegionDose,
    ReportContent,
    ReportHeader,
    ReportImages,
    ResponseEstimate,
    TimeActivityCurve,
)

SPACING_MM = (4.0, 4.0, 4.0)
SHAPE = (90, 56, 72)
# name, centre (z, y, x) voxels, radii (z, y, x) voxels, dose (Gy), terminal T_eff (h)
REGIONS = (
    ("kidney_left", (45, 34, 50), (7, 5, 4), 3.1, 38.0),
    ("kidney_right", (45, 34, 22), (7, 5, 4), 2.9, 36.0),
    ("parotid_left", (80, 30, 50), (4, 3, 3), 6.2, 30.0),
    ("parotid_right", (80, 30, 22), (4, 3, 3), 5.8, 30.0),
    ("liver", (52, 26, 22), (9, 9, 11), 1.2, 60.0),
    ("red_marrow", (40, 42, 36), (8, 3, 3), 0.4, 50.0),
    ("lesion_001", (30, 20, 40), (3, 3, 3), 48.0, 90.0),
    ("lesion_002", (60, 40, 30), (2, 2, 2), 22.0, 70.0),
    ("lesion_003", (20, 30, 55), (4, 4, 4), 12.0, 80.0),
    ("lesion_004", (88, 28, 36), (3, 3, 3), 30.0, 80.0),  # cut by the top of the field: not scored
)
UNSCORED = {"lesion_004"}
INJECTED_MBQ = 7400.0
PATIENT_ID = "DOE^JOHN-12345"  # an identifier that must never reach the report when a pseudonym is given
PSEUDONYM = "SYN0042"


def _ellipsoid(centre: tuple[int, ...], radii: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    c, r = centre, radii
    return np.asarray(((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1.0)


def maps() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32], dict[int, str], npt.NDArray[np.float32]]:
    """Dose (Gy), labels, label names and CT (HU): regions at their dose levels, blurred, on a low body dose."""
    from scipy import ndimage

    body = _ellipsoid((45, 28, 36), (44, 22, 30))
    labels = np.zeros(SHAPE, dtype=np.int32)
    dose = 0.3 * body.astype(np.float64)
    names = {}
    for value, (name, centre, radii, level, _) in enumerate(REGIONS, start=1):
        mask = _ellipsoid(centre, radii)
        labels[mask] = value
        dose[mask] = level
        names[value] = name
    dose = ndimage.gaussian_filter(dose, 1.2)
    ct = np.where(body, 30.0, -1000.0)
    ct[labels == 6] = 400.0  # marrow inside bone
    return dose.astype(np.float32), labels, names, ct.astype(np.float32)


def content(*, label: str = PSEUDONYM) -> ReportContent:
    """A single-scan-style report content with one unscored lesion, a response estimate and warnings."""
    dose, labels, names, ct = maps()
    dose_volume = Volume(dose, SPACING_MM, unit="Gy")
    regions = []
    curves = []
    times = tuple(float(t) for t in np.linspace(0.0, 200.0, 60))
    for value, (name, _, _, _, t_eff) in enumerate(REGIONS, start=1):
        mask = labels == value
        stats = region_stats(dose, mask, dose_volume.voxel_volume_ml)
        scored = name not in UNSCORED
        kind = "lesion" if name.startswith("lesion") else "marrow" if name == "red_marrow" else "organ"
        factor = 1.25 if kind == "lesion" else 1.0
        bed = float(bed_gy(stats.mean_gy, t_eff)) if name.startswith("kidney") else None
        flags = ("image-based red marrow dominated by spill-in from lesions",) if name == "red_marrow" else ()
        nan = math.nan
        regions.append(
            RegionDose(
                name=name,
                kind=kind,
                volume_ml=stats.volume_ml,
                mean_dose_gy=stats.mean_gy * factor if scored else nan,
                voxel_mean_dose_gy=stats.mean_gy if scored else nan,
                median_dose_gy=stats.median_gy if scored else nan,
                max_dose_gy=stats.max_gy if scored else nan,
                d2_gy=stats.d2_gy if scored else nan,
                d50_gy=stats.d50_gy if scored else nan,
                d98_gy=stats.d98_gy if scored else nan,
                tia_mbq_h=100.0,
                scored=scored,
                t_eff_h=t_eff,
                bed_gy=bed,
                dose_interval_90_gy=(0.85 * stats.mean_gy * factor, 1.15 * stats.mean_gy * factor),
                correction_factor=factor,
                flags=flags,
            )
        )
        if scored and name != "red_marrow":
            a24 = 50.0 * stats.mean_gy
            curve = [a24 * math.exp(-math.log(2) * (t - 24.0) / t_eff) * (1 - math.exp(-t / 1.5)) for t in times]
            curves.append(TimeActivityCurve(name, (24.0,), (a24,), times, tuple(curve), "predicted"))
    header = ReportHeader(
        patient_label=label, cycle=1, scan_dates=("2026-11-30",), scan_times_h=(24.0,), injected_mbq=INJECTED_MBQ,
        method="single scan at 24 h + PSMA PET (network)", model="ludl-unet-ens5 v1", code_version="0.0-test",
        sources={"time_h": "command line", "injected_mbq": "DICOM"},
    )  # fmt: skip
    pet = Volume(np.clip(dose / 4.0, 0, None).astype(np.float32), SPACING_MM, unit="SUV")
    images = ReportImages(
        dose_gy=dose_volume, labels=Volume(labels, SPACING_MM, unit="label"), label_names=names,
        ct_hu=Volume(ct, SPACING_MM, unit="HU"), pet_suv=pet,
    )  # fmt: skip
    return ReportContent(
        title="Single-scan dosimetry",
        header=header,
        regions=tuple(regions),
        images=images,
        curves=tuple(curves),
        response=ResponseEstimate(0.31, (0.18, 0.47), "PET-only baseline 0.45; held-out AUC 0.74 [0.66, 0.81]"),
        warnings=("scan time 24 h inside the training range 20–28 h: no extrapolation",),
        notes=("Dose: network TIA × 177Lu voxel S kernel.",),
    )
