"""Synthetic evaluation inputs with KNOWN errors: a run folder, a prepared folder and a cohort, as CSV/JSON files."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ludl.dosimetry.baselines import STP_COLUMNS

TIMES_H = (4.0, 24.0, 48.0, 96.0, 168.0)
# (region, kind, region_class, volume_ml, true dose Gy)
REGIONS = (
    ("kidney_left", "organ", "kidneys", 150.0, 4.0),
    ("kidney_right", "organ", "kidneys", 140.0, 3.6),
    ("liver", "organ", "liver", 1600.0, 0.8),
    ("spleen", "organ", "spleen", 180.0, 0.9),
    ("lesion_001", "lesion", "lesions", 12.0, 20.0),
    ("lesion_002", "lesion", "lesions", 6.0, 14.0),
    ("lesion_003", "lesion", "lesions", 1.5, 30.0),  # < 4 mL: never scored
)
REGIONS_COLUMNS = (
    "patient_id", "cycle", "fold", "timepoint_h", "time_h", "region", "kind", "region_class", "volume_ml",
    "net_mean_dose_gy", "net_mean_dose_corrected_gy", "gt_mean_dose_gy", "gt_mean_dose_uncorrected_gy",
    "true_mean_dose_gy",
)  # fmt: skip
# estimate / reference − 1 of each method, as a function of (patient index, region index, time index)
ErrorFn = Callable[[int, int, int], float]


def _write(path: Path, columns: Sequence[str], rows: Sequence[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def patients(n: int) -> list[str]:
    """Patient IDs P01 … Pn."""
    return [f"P{i + 1:02d}" for i in range(n)]


def write_splits(prepared: Path, ids: Sequence[str], n_folds: int = 2) -> dict[str, int]:
    """Patients alternate between folds; returns patient → fold."""
    fold_of = {p: i % n_folds for i, p in enumerate(ids)}
    folds = [{"fold": k, "test": [p for p in ids if fold_of[p] == k]} for k in range(n_folds)]
    for f in folds:
        f["train"] = [p for p in ids if p not in f["test"]]
    doc = {"format_version": 1, "n_folds": n_folds, "seed": 0, "stratified_by": None, "folds": folds}
    prepared.mkdir(parents=True, exist_ok=True)
    (prepared / "splits.json").write_text(json.dumps(doc), encoding="utf-8")
    return fold_of


def write_fake_run(
    root: Path,
    n_patients: int = 8,
    *,
    network: ErrorFn,
    stp: dict[str, ErrorFn],
    gt_vs_truth: ErrorFn = lambda p, r, t: 0.0,
    corrected: bool = True,
) -> tuple[Path, Path, Path]:
    """A run, prepared and cohort folder under `root`; errors against the multi-TP ground truth are given by the
    functions (the ground truth itself is off the truth by `gt_vs_truth`). Returns (run, prepared, cohort)."""
    run, prepared, cohort = root / "run", root / "prepared", root / "cohort"
    ids = patients(n_patients)
    fold_of = write_splits(prepared, ids)
    net_rows, stp_rows = [], []
    for p, pid in enumerate(ids):
        for r, (region, kind, cls, volume, true) in enumerate(REGIONS):
            gt = true * (1.0 + gt_vs_truth(p, r, 0))
            for t, time_h in enumerate(TIMES_H):
                net = gt * (1.0 + network(p, r, t))
                base = {"patient_id": pid, "cycle": 1, "fold": fold_of[pid], "timepoint_h": time_h, "time_h": time_h}
                base |= {"region": region, "kind": kind, "region_class": cls, "volume_ml": volume}
                net_rows.append(
                    base
                    | {
                        "net_mean_dose_gy": net * (0.7 if corrected else 1.0),
                        "net_mean_dose_corrected_gy": net if corrected else "",
                        "gt_mean_dose_gy": gt,
                        "gt_mean_dose_uncorrected_gy": gt * 0.8,
                        "true_mean_dose_gy": true,
                    }
                )
                for method, fn in stp.items():
                    stp_rows.append(
                        base
                        | {
                            "method": method,
                            "mean_dose_gy": gt * (1.0 + fn(p, r, t)),
                            "gt_mean_dose_gy": gt,
                            "true_mean_dose_gy": true,
                        }
                    )
    _write(run / "predictions" / "regions.csv", REGIONS_COLUMNS, net_rows)
    _write(prepared / "stp_regions.csv", STP_COLUMNS, stp_rows)
    (cohort / "truth").mkdir(parents=True, exist_ok=True)
    return run, prepared, cohort


def write_fake_response(run: Path, cohort: Path, prepared: Path, n_patients: int, seed: int = 0) -> None:
    """Outcomes, the network's probabilities and the cohort's truth/response.csv for the fake patients."""
    ids = patients(n_patients)
    rng = np.random.default_rng(seed)
    fold_of = json.loads((prepared / "splits.json").read_text())
    folds = {p: f["fold"] for f in fold_of["folds"] for p in f["test"]}
    labels = [(i // 2) % 2 for i in range(n_patients)]
    p_true = [0.15 + 0.7 * y + 0.1 * rng.random() for y in labels]
    outcome_rows = [
        {"patient_id": p, "psa_baseline": 10, "psa_week12": 5, "non_response": y}
        for p, y in zip(ids, labels, strict=True)
    ]
    _write(cohort / "outcomes.csv", ("patient_id", "psa_baseline", "psa_week12", "non_response"), outcome_rows)
    truth_rows = [{"patient_id": p, "p_non_response": q} for p, q in zip(ids, p_true, strict=True)]
    _write(cohort / "truth" / "response.csv", ("patient_id", "p_non_response"), truth_rows)
    network_rows = [
        {"patient_id": p, "cycle": 1, "fold": folds[p], "non_response": y,
         "p_non_response": 0.5 + 0.3 * (y - 0.5) + 0.2 * rng.random()}
        for p, y in zip(ids, labels, strict=True)
    ]  # fmt: skip
    columns = ("patient_id", "cycle", "fold", "p_non_response", "non_response")
    _write(run / "predictions" / "patients.csv", columns, network_rows)
    seg = []
    for p in ids:
        for time_h in TIMES_H:
            for cls, dice in (("kidney", 0.85), ("liver", 0.92), ("lesion", 0.6)):
                row: dict[str, object] = {
                    "patient_id": p,
                    "cycle": 1,
                    "timepoint_h": time_h,
                    "class": cls,
                    "dice": dice,
                }
                if cls == "lesion":
                    row |= {"lesions_reference": 4, "lesions_detected": 3, "false_positives": 1}
                seg.append(row)
    columns = ("patient_id", "cycle", "timepoint_h", "class", "dice", "lesions_reference", "lesions_detected",
               "false_positives")  # fmt: skip
    _write(run / "predictions" / "segmentation.csv", columns, seg)
