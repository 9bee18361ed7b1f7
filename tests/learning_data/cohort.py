"""A tiny prepared cohort written directly with `ludl.io.prepared.write_case`: known regions, known values.

Made in well under a second (no synthesis, no dosimetry), so that the tests can place regions where they need them
and check the data module against arrays they read back themselves. Every case has three time points on grids of
slightly different sizes (4 mm voxels), kidneys, a liver and two lesions; the first patient has no PET and its
cohort did not contour the parotids; one lesion of the third has no ground-truth dose (null, as for an unscored
region).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ludl.imaging.volume import Volume
from ludl.io.prepared import CaseTimepoint, read_case, write_case
from ludl.io.prepared_dataset import build_dataset_descriptor, write_dataset_descriptor
from ludl.io.prepared_sidecar import CaseSidecar, GroundTruthInfo, PetInfo
from ludl.io.regions import SEGMENTATION_CLASSES, class_index
from ludl.io.splits import make_splits, write_splits

TIMEPOINTS_H = (4.0, 24.0, 48.0)
SPACING_ZYX_MM = (4.0, 4.0, 4.0)
NET_MBQ = 7400.0
UNLABELED_FIRST = ("parotid_left", "parotid_right")
UNSCORED = ("P03", "lesion_002")  # a region without ground truth (as prepare writes for one outside the FOV)
DOSIMETRY = {"tia_mode": "voxel", "pvc": "gtm", "reference_timepoint": None}
# region → (value in labels, box z0:z1, y0:y1, x0:x1 on the 4 h grid, activity Bq/mL)
REGIONS: dict[str, tuple[int, tuple[slice, slice, slice], float]] = {
    "kidney_left": (1, np.s_[6:10, 8:12, 18:22], 3.0e5),
    "kidney_right": (2, np.s_[6:10, 8:12, 4:8], 3.0e5),
    "liver": (3, np.s_[3:9, 12:20, 4:14], 1.0e5),
    "lesion_001": (4, np.s_[12:14, 4:6, 12:14], 8.0e5),
    "lesion_002": (5, np.s_[16:18, 16:18, 20:22], 6.0e5),
}


def _shape(patient: int, tp: int) -> tuple[int, int, int]:
    return (20, 24, 26 + 2 * ((patient + tp) % 2))


def _timepoint(patient: int, tp: int, time_h: float, rng: np.random.Generator, *, pet: bool) -> CaseTimepoint:
    shape = _shape(patient, tp)
    body = np.zeros(shape, dtype=bool)
    body[1:-1, 2:-2, 2:-2] = True
    spect = np.where(body, rng.uniform(1.0e4, 3.0e4, shape), 0.0)
    labels = np.zeros(shape, dtype=np.int32)
    classes = np.zeros(shape, dtype=np.uint8)
    decay = np.exp(-time_h * np.log(2) / 60.0)
    for name, (value, box, activity) in REGIONS.items():
        labels[box] = value
        classes[box] = class_index(name)
        spect[box] = activity * decay * rng.uniform(0.8, 1.2, spect[box].shape)
    density = np.where(body, 1.0 + 0.05 * rng.standard_normal(shape), 0.0012)
    gt_fov = np.ones(shape, dtype=bool)
    gt_fov[-1] = tp == 1  # the reference grid misses the last slice of the other time points
    grid = Volume(spect.astype(np.float32), SPACING_ZYX_MM, (0.0, 0.0, 0.0), np.eye(3), unit="Bq/mL")
    volumes = {
        "spect": grid,
        "density": grid.with_array(density.astype(np.float32), unit="g/mL"),
        "tia": grid.with_array((spect * 1e-6 * 40.0).astype(np.float32), unit="MBq*h/mL"),
        "dose": grid.with_array(rng.uniform(0.0, 5.0, shape).astype(np.float32), unit="Gy"),
        "labels": grid.with_array(labels, unit="label"),
        "classes": grid.with_array(classes, unit="label"),
        "gt_fov": grid.with_array(gt_fov, unit="mask"),
    }
    if pet:
        volumes["pet"] = grid.with_array(rng.uniform(0.0, 10.0, shape).astype(np.float32), unit="SUV")
    info = {"time_h": time_h, "acquisition_s": [1200.0], "fwhm_mm": 12.0}
    return CaseTimepoint(TIMEPOINTS_H[tp], volumes, info)


def _sidecar(patient_id: str, unlabeled: tuple[str, ...], pet: bool, rng: np.random.Generator) -> CaseSidecar:
    labelled = tuple(c.name for c in SEGMENTATION_CLASSES if c.index > 0 and c.name not in unlabeled)
    unscored = patient_id == UNSCORED[0]
    rows = tuple(
        {
            "region": name,
            "kind": "lesion" if name.startswith("lesion") else "organ",
            "mean_dose_gy": None if unscored and name == UNSCORED[1] else float(rng.uniform(1.0, 30.0)),
            "mean_dose_uncorrected_gy": None if unscored and name == UNSCORED[1] else float(rng.uniform(1.0, 30.0)),
        }
        for name in REGIONS
    )
    return CaseSidecar(
        ludl_version="0.1.0",
        patient_id=patient_id,
        cycle=1,
        nuclide="Lu-177",
        injected_mbq=NET_MBQ + 100.0,
        residual_mbq=100.0,
        extravasated_mbq=0.0,
        net_administered_mbq=NET_MBQ,
        timepoints_h=TIMEPOINTS_H,
        reference_timepoint_h=24.0,
        mask_timepoint_h=24.0,
        ground_truth=GroundTruthInfo("test", {}),
        dosimetry=DOSIMETRY,
        region_values={name: value for name, (value, _, _) in REGIONS.items()},
        region_kinds={name: row["kind"] for name, row in zip(REGIONS, rows, strict=True)},
        classes_present=("kidney_left", "kidney_right", "liver", "lesion"),
        labelled_classes=labelled,
        unlabeled=unlabeled,
        regions=rows,
        pet=PetInfo("18F-DCFPyL", -200.0, 300.0, 75.0, 1) if pet else None,
    )


def make_prepared(root: Path, n_patients: int = 6, n_folds: int = 3, seed: int = 0) -> Path:
    """Write `n_patients` one-cycle cases, ``dataset.json`` and ``splits.json`` under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    cases_dir = root / "cases"
    paths = []
    for p in range(n_patients):
        patient_id = f"P{p + 1:02d}"
        unlabeled = UNLABELED_FIRST if p == 0 else ()
        pet = p != 0
        tps = [_timepoint(p, k, t + 0.5 * k, rng, pet=pet) for k, t in enumerate(TIMEPOINTS_H)]
        paths.append(write_case(cases_dir, f"{patient_id}_c1", tps, _sidecar(patient_id, unlabeled, pet, rng)))
    cases = [read_case(p) for p in paths]
    write_dataset_descriptor(build_dataset_descriptor(cases, DOSIMETRY), root)
    write_splits(make_splits([c.patient_id for c in cases], n_folds=n_folds, seed=seed), root)
    return root
