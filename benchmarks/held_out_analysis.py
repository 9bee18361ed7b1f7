"""What a finished training run's held-out rows say about its region calibration and about what the network learned.

1. **Who votes in the calibration** (needs ``predictions/training_regions.csv``: a run with ``calibration.fit_on``
   naming ``train``): for each class (kidneys, liver, spleen, lesions) and scan time, the factor fitted on the
   validation patients alone and on validation + training patients, against the factor the held-out patients would
   fit on themselves (their rows with the artifact's calibration — class factors and region kinetics model — taken
   out); then the held-out median |error| % of
   the scored cells under each.
2. **Network vs the STP formulas, region by region** (needs the prepared folder's ``stp_regions.csv``): per class and
   scan time, the correlation of the network's log error with Hänscheid's, Madsen's and the prior-informed formula's,
   and each one's SD of log(estimate / ground truth). Correlations near 1 with equal SDs mean the network's estimate
   is an STP formula with a learned τ(t): nothing region- or patient-specific.

    python benchmarks/held_out_analysis.py outputs/train/default/fold0 \
        --prepared ~/.cache/ludl/demo/demo-n20-seed0/prepared
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.evaluation.tables import LESION_MIN_VOLUME_ML
from ludl.models.calibration import CALIBRATED_COLUMN, apply_calibration, cell_float, fit_calibration
from ludl.models.region_model import region_factor
from ludl.training.artifact import load_artifact

_FLOATS = ("timepoint_h", "volume_ml", "gt_mean_dose_gy", "net_mean_dose_gy", CALIBRATED_COLUMN)
_CELLS = (("lesions", 24.0), ("lesions", 48.0), ("lesions", 96.0), ("kidneys", 24.0), ("kidneys", 48.0))
_STP_METHODS = ("haenscheid", "madsen", "prior")
_FACTOR_CLASSES = ("kidneys", "liver", "spleen", "lesions")  # the organ and lesion classes; marrow is blood-based


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [{**r, **{k: cell_float(r[k]) for k in _FLOATS}} for r in csv.DictReader(handle)]


def _scored(row: Mapping[str, Any], cls: str, time_h: float) -> bool:
    big_enough = cls != "lesions" or row["volume_ml"] >= LESION_MIN_VOLUME_ML
    return row["region_class"] == cls and row["timepoint_h"] == time_h and big_enough and row["gt_mean_dose_gy"] > 0


def _median_abs_error_pct(rows: Sequence[Mapping[str, Any]], cls: str, time_h: float) -> float:
    errors = [abs(r[CALIBRATED_COLUMN] / r["gt_mean_dose_gy"] - 1.0) for r in rows if _scored(r, cls, time_h)]
    return 100.0 * float(np.median(errors)) if errors else math.nan


def who_votes(run: Path) -> None:
    """Part 1 of the module docstring."""
    predictions = run / "predictions"
    validation, training = _rows(predictions / "validation_regions.csv"), _rows(predictions / "training_regions.csv")
    model = load_artifact(run / "model").model
    stored, region_model = model["region_calibration"], model.get("region_model")
    # the held-out rows as the network gave them: the factor each was scaled by (class factor or region model) out
    held_out = [
        {
            **r,
            CALIBRATED_COLUMN: r[CALIBRATED_COLUMN]
            / region_factor(region_model, stored, r["region_class"], r["timepoint_h"], r),
        }
        for r in _rows(predictions / "regions.csv")
    ]
    fits = {"val": fit_calibration(validation), "val+train": fit_calibration(validation + training)}
    ideal = fit_calibration(held_out)
    closer, distance = 0, {name: [] for name in fits}
    for cls, by_time in ideal.items():
        for time_h, factor in by_time.items():
            if cls not in _FACTOR_CLASSES or time_h not in fits["val"].get(cls, {}):
                continue
            for name, fit in fits.items():
                distance[name].append(abs(math.log(fit[cls][time_h] / factor)))
            closer += distance["val+train"][-1] < distance["val"][-1]
    n = len(distance["val"])
    print(f"{run}: val + train closer to the held-out factor in {closer} of {n} cells; median |log ratio| "
          + ", ".join(f"{name} {np.median(d):.3f}" for name, d in distance.items()))  # fmt: skip
    for name, fit in fits.items():
        calibrated = apply_calibration(held_out, fit)
        cells = ", ".join(f"{c} {t:g} h {_median_abs_error_pct(calibrated, c, t):.1f}" for c, t in _CELLS)
        print(f"  held-out median |error| % with factors from {name}: {cells}")


def network_vs_stp(run: Path, prepared: Path) -> None:
    """Part 2 of the module docstring."""
    stp: dict[tuple[str, str, str, float], float] = {}
    with (prepared / "stp_regions.csv").open() as handle:
        for r in csv.DictReader(handle):
            key = (r["method"], r["patient_id"], r["region"], float(r["timepoint_h"]))
            stp[key] = float(r["mean_dose_gy"] or "nan")
    rows = _rows(run / "predictions" / "regions.csv")
    for cls, time_h in _CELLS:
        ratios = []  # per region: network, Hänscheid, Madsen, prior-informed, each over the ground truth
        for r in rows:
            if not _scored(r, cls, time_h) or not r[CALIBRATED_COLUMN] > 0:
                continue
            formulas = [stp.get((m, r["patient_id"], r["region"], time_h), math.nan) for m in _STP_METHODS]
            if all(v > 0 for v in formulas):
                ratios.append([v / r["gt_mean_dose_gy"] for v in (r[CALIBRATED_COLUMN], *formulas)])
        if len(ratios) < 3:
            continue
        log_ratio = np.log(np.asarray(ratios))
        corr = np.corrcoef(log_ratio.T)[0, 1:]
        sd = 100.0 * log_ratio.std(axis=0)
        print(
            f"{cls} {time_h:g} h, {len(ratios)} regions: corr(network, Hänscheid / Madsen / prior-informed) "
            f"{' / '.join(f'{c:.2f}' for c in corr)}; SD of log ratio % network {sd[0]:.1f}, formulas "
            f"{' / '.join(f'{s:.1f}' for s in sd[1:])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run folder (predictions/, model/)")
    parser.add_argument("--prepared", type=Path, default=None, help="its prepared folder (stp_regions.csv)")
    args = parser.parse_args()
    if (args.run / "predictions" / "training_regions.csv").is_file():
        who_votes(args.run)
    else:
        print(f"{args.run}: no training_regions.csv (calibration.fit_on without train): who-votes part skipped")
    if args.prepared is not None:
        network_vs_stp(args.run, args.prepared)


if __name__ == "__main__":
    main()
