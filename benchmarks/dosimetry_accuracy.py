"""Accuracy of multi-time-point dosimetry against the synthetic truth (issue 5 "Must show"), with and without PVC.

Generates a synthetic cohort (or reuses one with ``--cohort``), runs the pipeline (`load_cycle` +
`compute_dosimetry`: exactly `run_dosimetry` without writing files) on cycle 1 of every patient, joins the region
rows with ``truth/regions.csv`` and prints, per region class, the relative error of the mean dose
(pipeline / truth − 1): n, signed bias (median and mean), median |error|, P90 |error|, share of |error| > 10 % and
> 20 %, for the partial-volume-corrected mean and for the uncorrected mean beside it. Lesions are scored only
where the pipeline marks them ``scored`` (≥ 95 % in the field of view at every time point) and split at 4 mL of
true volume.

    python benchmarks/dosimetry_accuracy.py                              # demo preset, 8 patients, seed 0
    python benchmarks/dosimetry_accuracy.py --cohort /tmp/c --pvc rc     # reuse a cohort
    python benchmarks/dosimetry_accuracy.py --tia-mode region --csv errors.csv

Bar (issue 5): organs (kidneys, liver, spleen, parotids) |bias| ≤ 5 % and every organ within 10 %; lesions ≥ 4 mL
|median error| ≤ 10 % and P90 ≤ 25 %. Smaller glands and red marrow are reported beside them.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _accuracy import add_cohort_arguments, cohort_path, dosimetry_options, summarise, truth_rows, write_csv

_BAR_ORGANS = ("kidneys", "liver", "spleen", "parotids")
_CLASS_ORDER = (
    "kidneys",
    "liver",
    "spleen",
    "parotids",
    "submandibular",
    "lacrimal",
    "red_marrow",
    "bladder",
    "lesion>=4mL",
    "lesion<4mL",
)
_MIN_LESION_ML = 4.0


def region_class(region: str, kind: str, true_volume_ml: float) -> str:
    """Reporting class of a region: organ pairs pooled, lesions split at 4 mL of true volume."""
    if kind == "lesion":
        return "lesion>=4mL" if true_volume_ml >= _MIN_LESION_ML else "lesion<4mL"
    for prefix, name in (("kidney", "kidneys"), ("parotid", "parotids")):
        if region.startswith(prefix):
            return name
    if region.startswith(("submandibular", "lacrimal")):
        return region.split("_")[0]
    return region


def _patients(cohort: Path) -> list[str]:
    with open(cohort / "manifest.csv", encoding="utf-8") as fh:
        return sorted({r["patient_id"] for r in csv.DictReader(fh) if r["cycle"] == "1"})


def evaluate_patient(
    cohort: Path, patient: str, truth: dict[tuple[str, int, str], dict[str, str]], options: Any = None
) -> list[dict[str, Any]]:
    """Pipeline rows of one patient (cycle 1) joined with truth: one dict per region with both relative errors."""
    from ludl.dosimetry.pipeline import compute_dosimetry
    from ludl.dosimetry.timepoints import load_cycle

    start = time.perf_counter()
    result = compute_dosimetry(load_cycle(cohort, patient, 1), options)
    seconds = time.perf_counter() - start
    out: list[dict[str, Any]] = []
    for row in result.regions:
        true = truth.get((patient, 1, row["region"]))
        if true is None or row["kind"] == "body" or not row["scored"]:
            continue
        true_gy = float(true["mean_dose_gy"])
        if not (math.isfinite(true_gy) and true_gy > 0):
            continue
        out.append(
            {
                "patient_id": patient,
                "region": row["region"],
                "class": region_class(row["region"], row["kind"], float(true["volume_ml"])),
                "true_volume_ml": float(true["volume_ml"]),
                "volume_ml": row["volume_ml"],
                "true_gy": true_gy,
                "gy": row["mean_dose_gy"],
                "gy_uncorrected": row["mean_dose_uncorrected_gy"],
                "err": row["mean_dose_gy"] / true_gy - 1.0,
                "err_uncorrected": row["mean_dose_uncorrected_gy"] / true_gy - 1.0,
                "true_t_eff_h": float(true["t_eff_h"]) if true["t_eff_h"] else math.nan,
                "t_eff_h": row["t_eff_h"],
                "pvc_factor": row["pvc_factor"],
                "seconds": seconds,
            }
        )
    return out


def _fmt(s: dict[str, float]) -> str:
    if not s.get("n"):
        return f"{0:>4}" + " " * 48
    pct = {k: 100 * v for k, v in s.items() if k != "n"}
    return (
        f"{s['n']:>4}{pct['median']:>+8.1f}{pct['mean']:>+8.1f}{pct['median_abs']:>7.1f}{pct['p90_abs']:>7.1f}"
        f"{pct['max_abs']:>7.1f}{pct['over10']:>6.0f}{pct['over20']:>6.0f}"
    )


def table(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Per-class table, corrected | uncorrected, errors in percent."""
    head = f"{'n':>4}{'med':>8}{'mean':>8}{'|med|':>7}{'P90':>7}{'max':>7}{'>10':>6}{'>20':>6}"
    lines = [title, f"{'class':<14}{head}   |{head}", f"{'':<14}{'PVC-corrected':^55}   |{'uncorrected':^55}"]
    classes = [c for c in _CLASS_ORDER if any(r["class"] == c for r in rows)]
    classes += sorted({r["class"] for r in rows} - set(classes))
    for c in classes:
        sel = [r for r in rows if r["class"] == c]
        lines.append(
            f"{c:<14}{_fmt(summarise([r['err'] for r in sel]))}   |"
            f"{_fmt(summarise([r['err_uncorrected'] for r in sel]))}"
        )
    organs = [r for r in rows if r["class"] in _BAR_ORGANS]
    lines.append(
        f"{'bar organs':<14}{_fmt(summarise([r['err'] for r in organs]))}   |"
        f"{_fmt(summarise([r['err_uncorrected'] for r in organs]))}"
    )
    return "\n".join(lines)


def verdict(rows: Sequence[dict[str, Any]], key: str = "err") -> str:
    """Issue 5's bar: organs |bias| ≤ 5 % and all within 10 %; lesions ≥ 4 mL |median| ≤ 10 %, P90 ≤ 25 %."""
    out = []
    for c in _BAR_ORGANS:
        s = summarise([r[key] for r in rows if r["class"] == c])
        if s.get("n"):
            ok = abs(s["median"]) <= 0.05 and s["max_abs"] <= 0.10
            out.append(
                f"{c} {'PASS' if ok else 'FAIL'} (bias {100 * s['median']:+.1f} %, max {100 * s['max_abs']:.1f} %)"
            )
    s = summarise([r[key] for r in rows if r["class"] == "lesion>=4mL"])
    if s.get("n"):
        ok = abs(s["median"]) <= 0.10 and s["p90_abs"] <= 0.25
        out.append(
            f"lesions>=4mL {'PASS' if ok else 'FAIL'} (median {100 * s['median']:+.1f} %, "
            f"P90 {100 * s['p90_abs']:.1f} %)"
        )
    return "; ".join(out)


def main() -> None:
    """Generate or reuse a cohort, run the pipeline on every patient and print the accuracy tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_arguments(parser)
    parser.add_argument("--detail", action="store_true", help="print every organ row")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cohort = cohort_path(args, tmp)
        truth = truth_rows(cohort)
        rows: list[dict[str, Any]] = []
        options = dosimetry_options(args)
        start = time.perf_counter()
        for patient in _patients(cohort)[: args.patients]:
            rows += evaluate_patient(cohort, patient, truth, options)
        wall = time.perf_counter() - start
    n = len({r["patient_id"] for r in rows})
    print(
        table(
            rows,
            f"mean dose error vs truth, % (pvc={args.pvc}, tia_mode={args.tia_mode}, model={args.model}; "
            f"{n} patients, {wall / max(n, 1):.1f} s/patient)",
        )
    )
    print("bar, corrected:   " + verdict(rows, "err"))
    print("bar, uncorrected: " + verdict(rows, "err_uncorrected"))
    if args.detail:
        head = f"{'patient':<9}{'region':<22}{'true mL':>9}{'mL':>8}{'true Gy':>9}{'Gy':>8}{'noPVC':>8}{'err%':>7}"
        print(head + f"{'Teff':>7}{'true':>7}")
        for r in rows:
            if r["class"] != "lesion<4mL":
                print(
                    f"{r['patient_id']:<9}{r['region']:<22}{r['true_volume_ml']:>9.1f}{r['volume_ml']:>8.1f}"
                    f"{r['true_gy']:>9.3f}{r['gy']:>8.3f}{r['gy_uncorrected']:>8.3f}{100 * r['err']:>+7.1f}"
                    f"{r['t_eff_h']:>7.1f}{r['true_t_eff_h']:>7.1f}"
                )
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
