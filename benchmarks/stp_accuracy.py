"""Single-time-point (STP) dosimetry against the truth and against multi-time-point dosimetry (issue 5 "Must show").

Generates a synthetic cohort (or reuses one with ``--cohort``) and runs `run_stp_baselines` on it: the multi-TP ground
truth of every patient-cycle (`compute_dosimetry`), then Hänscheid, Madsen and the prior-informed estimator from each
single scan (4, 24, 48, 96, 168 h), population values (Madsen's T_eff, the priors) from the training patients of 5
patient folds (seed 0, stratified by outcome, as ``ludl prepare`` makes them). For each region class, scan time and
method it prints the relative error of the region mean dose: n, median signed error, median |error| and P90 |error|,
against the truth (``true_mean_dose_gy``) and against the multi-TP ground truth (``gt_mean_dose_gy``), both with
partial-volume correction from the single scan itself (`ludl.dosimetry.single_scan`); the kinetic error alone
(uncorrected STP TIA / uncorrected multi-TP TIA − 1: median and median |error|); one
``multi-TP`` line per class (ground truth against truth); and beside each scan time the TIA error of the cohort's
single-scan reference (``truth/single_scan_reference.csv``, its measurement-noise variant: median and P90 |error| over
the cohort's regions of the class). Lesions: scored ones only (≥ 95 % in the field of view at every scan), ≥ 4 mL of
true volume (the reference's lesion row covers all its lesions).

    python benchmarks/stp_accuracy.py                                            # demo preset, 8 patients, seed 0
    python benchmarks/stp_accuracy.py --cohort /tmp/demo8 --kernel-cache /tmp/kc   # reuse a cohort
    python benchmarks/stp_accuracy.py --cohort /tmp/demo8 --splits out/splits.json --csv stp.csv

Literature pattern it should reproduce (docs/physics.md §3): Hänscheid is near exact where the scan time is close to the
region's effective half-life (kidneys at 48 h), and badly low for slowly clearing lesions at 24 h.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _accuracy import add_cohort_arguments, cohort_path, dosimetry_options, summarise, truth_rows, write_csv

from ludl.evaluation.tables import LESION_MIN_VOLUME_ML

_CLASSES = ("kidneys", "liver", "spleen", "salivary", "red_marrow", "lesions")
_METHODS = ("haenscheid", "madsen", "prior")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)


def true_volumes_ml(cohort: Path) -> dict[tuple[str, int, str], float]:
    """True volume (mL) per (patient, cycle, region) from ``truth/regions.csv``; empty without it."""
    return {key: _num(row["volume_ml"]) for key, row in truth_rows(cohort).items()}


def single_scan_reference(cohort: Path, variant: str = "noisy") -> dict[tuple[str, float], tuple[float, float]]:
    """(region class, scan time h) → the single-scan reference's (median, P90) |TIA error| in %; empty without it."""
    file = cohort / "truth" / "single_scan_reference.csv"
    if not file.is_file():
        return {}
    errors: dict[tuple[str, float], list[float]] = {}
    for r in _read_csv(file):
        estimate, true = _num(r[f"tia_ref_{variant}_mbq_h"]), _num(r["tia_true_mbq_h"])
        if math.isfinite(estimate) and math.isfinite(true) and true > 0:
            errors.setdefault((r["region_class"], float(r["scan_h"])), []).append(abs(estimate / true - 1.0) * 100.0)
    return {key: (float(np.median(e)), float(np.percentile(e, 90))) for key, e in errors.items()}


def with_errors(
    rows: Sequence[Mapping[str, Any]], volumes: Mapping[tuple[str, int, str], float]
) -> list[dict[str, Any]]:
    """STP rows of the reported classes with ``err_truth`` and ``err_gt`` (fractions); lesions ≥ 4 mL true volume."""
    out = []
    for row in rows:
        cls = str(row["region_class"])
        if cls not in _CLASSES:
            continue
        true_ml = volumes.get((str(row["patient_id"]), int(row["cycle"]), str(row["region"])), math.nan)
        if cls == "lesions" and volumes and not true_ml >= LESION_MIN_VOLUME_ML:
            continue  # small lesions (or ones the truth does not list) are reported by dosimetry_accuracy.py
        dose, gt, true = _num(row["mean_dose_gy"]), _num(row["gt_mean_dose_gy"]), _num(row["true_mean_dose_gy"])
        tia_unc, gt_tia_unc = _num(row.get("tia_uncorrected_mbq_h")), _num(row.get("gt_tia_uncorrected_mbq_h"))
        out.append(
            {
                **row,
                "true_volume_ml": true_ml,
                "err_truth": dose / true - 1.0 if true > 0 else math.nan,
                "err_gt": dose / gt - 1.0 if gt > 0 else math.nan,
                "err_gt_truth": gt / true - 1.0 if true > 0 else math.nan,
                # The STP formula's kinetic error alone: both TIAs uncorrected, from the same region curve.
                "err_kinetic": tia_unc / gt_tia_unc - 1.0 if gt_tia_unc > 0 else math.nan,
            }
        )
    return out


def _pct(fraction: float, signed: bool = False) -> str:
    """A percentage in 7 columns; beyond ±1000 % only the bound (Madsen at late scans reaches 10⁵ %)."""
    value = 100.0 * fraction
    if value >= 999.95:
        return f"{'>+999' if signed else '>999':>7}"
    return f"{value:>+7.1f}" if signed else f"{value:>7.1f}"


def _stats(s: Mapping[str, float]) -> str:
    if not s["n"]:
        return f"{'-':>7}{'-':>7}{'-':>7}"
    return f"{_pct(s['median'], signed=True)}{_pct(s['median_abs'])}{_pct(s['p90_abs'])}"


def table(
    rows: Sequence[Mapping[str, Any]], reference: Mapping[tuple[str, float], tuple[float, float]], cls: str
) -> str:
    """One region class: the multi-TP line, then every scan time × method (errors in %)."""
    sel = [r for r in rows if r["region_class"] == cls]
    label = f"lesions >= {LESION_MIN_VOLUME_ML:g} mL" if cls == "lesions" else cls
    regions = {(r["patient_id"], r["cycle"], r["region"]): r for r in sel}
    head = f"{'med':>7}{'|med|':>7}{'P90':>7}"
    lines = [
        f"{label}: {len(regions)} regions, {len({k[0] for k in regions})} patients",
        f"{'method':<11}{'scan h':>7}{'n':>5} | {'vs truth':^21} | {'vs multi-TP':^21} | {'kinetic':^14} | "
        f"{'reference':^14}".rstrip(),
        f"{'':<23} | {head} | {head} | {'med':>7}{'|med|':>7} | {'|med|':>7}{'P90':>7}",
    ]
    gt = summarise([r["err_gt_truth"] for r in regions.values()])
    lines.append(f"{'multi-TP':<11}{'all':>7}{gt['n']:>5} | {_stats(gt)} | {'':<21} | {'':<14} |")
    for t in sorted({float(r["timepoint_h"]) for r in sel}):
        for i, method in enumerate(_METHODS):
            part = [r for r in sel if float(r["timepoint_h"]) == t and r["method"] == method]
            if not part:
                continue
            vs_truth, vs_gt = summarise([r["err_truth"] for r in part]), summarise([r["err_gt"] for r in part])
            kin = summarise([r["err_kinetic"] for r in part])
            kinetic = f"{_pct(kin['median'], signed=True)}{_pct(kin['median_abs'])}" if kin["n"] else f"{'-':>14}"
            b = reference.get((cls, t))
            extra = f"{b[0]:>7.1f}{b[1]:>7.1f}" if b is not None and i == 0 else ""
            lines.append(
                f"{method:<11}{t:>7g}{vs_truth['n']:>5} | {_stats(vs_truth)} | {_stats(vs_gt)} | {kinetic} | "
                f"{extra}".rstrip()
            )
    return "\n".join(lines)


def pattern(rows: Sequence[Mapping[str, Any]]) -> str:
    """The literature's two landmarks: Hänscheid for kidneys at 48 h and for lesions at 24 h (vs truth)."""
    out = []
    for cls, t in (("kidneys", 48.0), ("lesions", 24.0)):
        s = summarise(
            [
                r["err_truth"]
                for r in rows
                if (r["method"], r["region_class"], float(r["timepoint_h"])) == ("haenscheid", cls, t)
            ]
        )
        if s["n"]:
            out.append(
                f"Hänscheid {cls} at {t:g} h: median error {100 * s['median']:+.1f} %, "
                f"median |error| {100 * s['median_abs']:.1f} %"
            )
    return "; ".join(out)


def main() -> None:
    """Generate or reuse a cohort, run the STP baselines on it and print the per-class tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_arguments(parser)
    parser.add_argument("--splits", type=Path, default=None, help="splits.json (default: 5 folds, seed 0)")
    args = parser.parse_args()

    from ludl.dosimetry.baselines import run_stp_baselines

    with tempfile.TemporaryDirectory() as tmp:
        cohort = cohort_path(args, tmp)
        start = time.perf_counter()
        raw = run_stp_baselines(
            cohort, None, args.splits, Path(tmp) / "stp", write_maps=False, options=dosimetry_options(args)
        )
        wall = time.perf_counter() - start
        rows = with_errors(raw, true_volumes_ml(cohort))
        reference = single_scan_reference(cohort)
    cases = {(r["patient_id"], r["cycle"]) for r in raw}
    print(
        f"STP mean-dose error, % (pvc={args.pvc}, tia_mode={args.tia_mode}, model={args.model}; {len(cases)} cases, "
        f"{wall / max(len(cases), 1):.1f} s/case incl. multi-TP ground truth; "
        "reference: truth/single_scan_reference.csv, noisy)"
    )
    for cls in _CLASSES:
        print()
        if any(r["region_class"] == cls for r in rows):
            print(table(rows, reference, cls))
        else:
            print(f"{cls}: no scored region (none lies ≥ 95 % inside the field of view at every scan)")
    missing = {m: sum(1 for r in rows if r["method"] == m and not math.isfinite(r["err_gt"])) for m in _METHODS}
    if any(missing.values()):
        print("\nrows without an estimate (no population value for the class): " + ", ".join(
            f"{m} {n}" for m, n in missing.items() if n
        ))  # fmt: skip
    print("\npattern: " + pattern(rows))
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
