"""One evaluation of a trained run on its held-out fold: tables (CSV + text) and the HTML page.

`evaluate(run_dir, prepared_dir, cohort_dir, fold)` reads

- ``<run_dir>/predictions/regions.csv``, ``segmentation.csv``, ``patients.csv`` (the predict step of training),
- ``<prepared_dir>/stp_regions.csv`` and ``splits.json`` (``ludl prepare``), the prepared cases (PET features),
- ``<cohort_dir>/outcomes.csv`` and ``truth/`` (``response.csv``, the single-scan reference),

and writes into ``<run_dir>/evaluation/`` (or `out_dir`): ``comparison.csv``, ``paired.csv``, ``reference.csv``,
``dice.csv``, ``detection.csv``, ``response.csv``, ``calibration.csv``, ``comparison.txt`` and ``evaluation.html``,
plus ``inputs.json`` and ``dose_slices.npz`` so that ``ludl evaluate run=…`` can redo it (`ludl.evaluation.job`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ludl.errors import InputError
from ludl.evaluation.csvfiles import write_rows
from ludl.evaluation.page import DoseSlice, PageData, build_page, fmt
from ludl.evaluation.record import DOSE_SLICES_FILE, save_dose_slices, write_inputs
from ludl.evaluation.response import (
    CALIBRATION_COLUMNS,
    RESPONSE_COLUMNS,
    cohort_pet_features,
    pet_only_probabilities,
    read_labels,
    read_probabilities,
    reliability_bins,
    response_row,
)
from ludl.evaluation.segmentation import DETECTION_COLUMNS, DICE_COLUMNS, segmentation_tables
from ludl.evaluation.tables import (
    CLASS_LABELS,
    COMPARISON_COLUMNS,
    METHOD_LABELS,
    PAIRED_COLUMNS,
    REFERENCE_COLUMNS,
    SCAN_TIMES_H,
    ComparisonTables,
    comparison_tables,
)
from ludl.io.atomic import atomic_write_text
from ludl.io.splits import read_splits

__all__ = ["PAGE_FILE", "EvaluationResult", "evaluate", "format_text_table"]

PAGE_FILE = "evaluation.html"


@dataclass(frozen=True)
class EvaluationResult:
    """The tables of one evaluation and where they were written."""

    fold: int
    tables: ComparisonTables
    dice: list[dict[str, Any]] = field(default_factory=list)
    detection: list[dict[str, Any]] = field(default_factory=list)
    response: list[dict[str, Any]] = field(default_factory=list)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    page_path: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def format(self) -> str:
        """The comparison for the terminal: median |error| tables, paired differences, reference, Dice, AUC."""
        return format_result(self)


def format_text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Fixed-width text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    align = lambda i, s: s.ljust(widths[i]) if i == 0 else s.rjust(widths[i])  # noqa: E731
    lines = ["  ".join(align(i, h) for i, h in enumerate(headers))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(align(i, c) for i, c in enumerate(r)) for r in rows]
    return "\n".join(lines)


def _ci_text(row: Mapping[str, Any] | None, key: str, digits: int = 1) -> str:
    if row is None:
        return "–"
    low, high = row.get(f"{key}_low", math.nan), row.get(f"{key}_high", math.nan)
    if key.endswith("_pct") and f"{key}_low" not in row:  # paired columns: difference_low_pct
        stem = key[: -len("_pct")]
        low, high = row.get(f"{stem}_low_pct", math.nan), row.get(f"{stem}_high_pct", math.nan)
    text = fmt(row.get(key), digits)
    return text if not math.isfinite(float(low)) else f"{text} [{fmt(low, digits)}, {fmt(high, digits)}]"


def _class_time_rows(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], key: str) -> list[list[str]]:
    index = {(r["method"], float(r["timepoint_h"]), r["region_class"]): r for r in rows}
    out = []
    for cls in CLASS_LABELS:
        for time_h in SCAN_TIMES_H:
            cells = [index.get((m, time_h, cls)) for m in methods]
            if any(cells):
                out.append([f"{CLASS_LABELS[cls]} {time_h:g} h", *(_ci_text(c, key) for c in cells)])
    return out


def format_result(result: EvaluationResult) -> str:
    """Text of `EvaluationResult.format`."""
    t = result.tables
    parts = [f"Evaluation of fold {result.fold} (held-out patients); median |error| % [patient-bootstrap 95 % CI]"]
    for against, label in (("ground_truth", "multi-TP ground truth"), ("truth", "synthetic truth")):
        rows = [r for r in t.comparison if r["against"] == against and math.isfinite(float(r["timepoint_h"]))]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        headers = ["Region, scan", *(METHOD_LABELS.get(m, m) for m in methods)]
        parts.append(
            f"\nRegion mean dose vs {label}\n"
            + format_text_table(headers, _class_time_rows(rows, methods, "median_abs_error_pct"))
        )
        fixed = [r for r in t.comparison if r["against"] == against and r["method"] == "multi_tp"]
        if fixed:
            cells = ", ".join(f"{CLASS_LABELS[r['region_class']]} {_ci_text(r, 'median_abs_error_pct')}" for r in fixed)
            parts.append(f"Multi-TP pipeline vs {label} (all scans): {cells}")
    for against, label in (("ground_truth", "multi-TP ground truth"), ("truth", "synthetic truth")):
        # Each difference is of the medians over the regions BOTH methods scored, against the same reference as
        # the comparison table of that name (compare a paired row with that table, not with the other one).
        paired = [r for r in t.paired if r["against"] == against]
        if paired:
            methods = list(dict.fromkeys(r["method"] for r in paired))
            headers = ["Region, scan", *(f"net − {METHOD_LABELS.get(m, m)}" for m in methods)]
            parts.append(
                f"\nPaired difference of median |error| vs {label} (% points; < 0: network better)\n"
                + format_text_table(headers, _class_time_rows(paired, methods, "difference_pct"))
            )
    if t.reference:
        rows_ref = [
            [
                f"{CLASS_LABELS[r['region_class']]} {float(r['timepoint_h']):g} h",
                fmt(r["network_median_abs_error_pct"]),
                fmt(r["reference_median_abs_error_pct"]),
                _ci_text(r, "ratio", 2),
            ]
            for r in t.reference
        ]
        parts.append(
            f"\nAgainst the single-scan reference ({t.reference_source})\n"
            + format_text_table(["Region, scan", "network %", "reference %", "ratio"], rows_ref)
        )
    if result.dice:
        rows_d = [[str(r["class"]), _ci_text(r, "mean_dice", 3), str(r["n_scans"])] for r in result.dice]
        parts.append("\nDice\n" + format_text_table(["Class", "mean Dice", "scans"], rows_d))
    if result.detection:
        rows_l = [
            [
                ("all" if not math.isfinite(float(r["timepoint_h"])) else f"{float(r['timepoint_h']):g} h"),
                _ci_text(r, "sensitivity_pct"),
                _ci_text(r, "false_positives_per_scan", 2),
            ]
            for r in result.detection
        ]
        parts.append("\nLesion detection\n" + format_text_table(["Scan", "sensitivity %", "FP per scan"], rows_l))
    if result.response:
        rows_r = [
            [str(r["predictor"]), _ci_text(r, "auc", 2), fmt(r["brier"], 3), str(r["n_patients"])]
            for r in result.response
        ]
        parts.append(
            "\nNon-response after cycle 1\n" + format_text_table(["Predictor", "ROC AUC", "Brier", "patients"], rows_r)
        )
    if result.page_path is not None:
        parts.append(f"\nOpen the page: {result.page_path}")
    return "\n".join(parts)


def _response_tables(
    run_dir: Path,
    prepared_dir: Path,
    cohort_dir: Path,
    fold: int,
    test: Sequence[str],
    train: Sequence[str],
    n_boot: int,
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """AUC rows and calibration bins of the network, the PET-only baseline and the cohort's reference probabilities."""
    patients_csv = run_dir / "predictions" / "patients.csv"
    notes: list[str] = []
    labels: dict[str, int] = {}
    if (cohort_dir / "outcomes.csv").is_file():
        labels = read_labels(cohort_dir / "outcomes.csv")
    elif patients_csv.is_file():
        labels = read_labels(patients_csv)
    held_out = {p: v for p, v in labels.items() if p in set(test)}
    if not held_out:
        return [], [], ["non-response: no held-out patient has an outcome label"]
    predictors: dict[str, dict[str, float]] = {}
    if patients_csv.is_file():
        predictors["Network"] = read_probabilities(patients_csv, "p_non_response", fold=fold)
    try:
        features = cohort_pet_features(prepared_dir)
        predictors["PET-only (logistic regression)"] = pet_only_probabilities(features, labels, train, test)
    except InputError as err:
        notes.append(f"PET-only baseline left out: {err}")
    truth = cohort_dir / "truth" / "response.csv"
    if truth.is_file():
        header = truth.read_text(encoding="utf-8").splitlines()[0].split(",")
        for column, name in (
            ("p_observable", "Cohort: dosimetry oracle (p_observable)"),
            ("p_true", "Cohort: full achievable (p_true)"),
        ):
            if column in header:
                predictors[name] = read_probabilities(truth, column)
        if not any(c in header for c in ("p_observable", "p_true")) and "p_non_response" in header:
            predictors["Cohort: true probability (p_non_response)"] = read_probabilities(truth, "p_non_response")
    rows, bins = [], []
    for name, probs in predictors.items():
        row = response_row(name, held_out, probs, n_boot=n_boot, seed=seed)
        if row is None:
            continue
        rows.append(row)
        shared = sorted(p for p in held_out if p in probs and math.isfinite(probs[p]))
        for b in reliability_bins([held_out[p] for p in shared], [probs[p] for p in shared]):
            bins.append({"predictor": name, **b})
    return rows, bins, notes


def evaluate(
    run_dir: str | Path,
    prepared_dir: str | Path,
    cohort_dir: str | Path,
    fold: int,
    *,
    dose_slices: Sequence[DoseSlice] = (),
    out_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    title: str = "ludl: single-scan dosimetry on held-out patients",
) -> EvaluationResult:
    """Evaluate a run's held-out predictions against the STP baselines and the cohort's truth and reference.

    Args:
        run_dir: the training run folder (holds ``predictions/``).
        prepared_dir: the prepared-case folder (``splits.json``, ``stp_regions.csv``, the cases).
        cohort_dir: the synthetic or institutional cohort (``outcomes.csv``, ``truth/``).
        fold: the held-out (test) fold.
        dose_slices: network vs ground-truth dose slices of a few held-out cases for the page (`coronal_slice`).
        out_dir: where the tables and the page go (default ``<run_dir>/evaluation``).
        n_boot, seed: bootstrap replicates and seed (same seed → same intervals).
    """
    run, prepared, cohort = Path(run_dir), Path(prepared_dir), Path(cohort_dir)
    splits = read_splits(prepared)
    test, train = splits.test(fold), splits.train(fold)
    stp = next((p for p in (prepared / "stp_regions.csv", run / "stp_regions.csv") if p.is_file()), None)
    tables = comparison_tables(
        run / "predictions" / "regions.csv", stp, fold, cohort_dir=cohort, n_boot=n_boot, seed=seed
    )
    notes = [] if stp is not None else [f"no stp_regions.csv in {prepared} or {run}: STP baselines left out"]
    dice: list[dict[str, Any]] = []
    detection: list[dict[str, Any]] = []
    seg_csv = run / "predictions" / "segmentation.csv"
    if seg_csv.is_file():
        dice, detection = segmentation_tables(seg_csv, test, n_boot=n_boot, seed=seed)
    response, calibration, more = _response_tables(run, prepared, cohort, fold, test, train, n_boot, seed)
    notes += more
    out = Path(out_dir) if out_dir is not None else run / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "comparison": write_rows(out / "comparison.csv", tables.comparison, COMPARISON_COLUMNS),
        "paired": write_rows(out / "paired.csv", tables.paired, PAIRED_COLUMNS),
        "reference": write_rows(out / "reference.csv", tables.reference, REFERENCE_COLUMNS),
        "dice": write_rows(out / "dice.csv", dice, DICE_COLUMNS),
        "detection": write_rows(out / "detection.csv", detection, DETECTION_COLUMNS),
        "response": write_rows(out / "response.csv", response, RESPONSE_COLUMNS),
        "calibration": write_rows(out / "calibration.csv", calibration, CALIBRATION_COLUMNS),
    }
    meta = {
        "Held-out fold": f"{fold} ({len(test)} patients)",
        "Run": str(run),
        "Prepared cases": str(prepared),
        "Cohort": str(cohort),
        "Bootstrap": f"{n_boot} replicates over patients, seed {seed}",
    }
    write_inputs(out, {"run": str(run), "prepared": str(prepared), "cohort": str(cohort), "fold": int(fold)})
    if dose_slices:
        save_dose_slices(out / DOSE_SLICES_FILE, dose_slices)
    data = PageData(title, meta, tables, dice, detection, response, calibration, tuple(dose_slices), tuple(notes))
    page = build_page(data, out / PAGE_FILE)
    result = EvaluationResult(fold, tables, dice, detection, response, calibration, page, {**files, "page": page})
    files["text"] = atomic_write_text(out / "comparison.txt", result.format() + "\n")
    return EvaluationResult(fold, tables, dice, detection, response, calibration, page, {**files, "page": page})
