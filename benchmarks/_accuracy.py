"""What the accuracy benchmarks share: cohort and pipeline arguments, the cohort itself, truth rows, error summaries."""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    """The cohort (reused or generated) and the ground-truth pipeline options, and ``--csv``."""
    parser.add_argument("--cohort", type=Path, default=None, help="reuse this cohort folder (default: generate one)")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pvc", default="gtm", choices=("none", "rc", "gtm"))
    parser.add_argument("--tia-mode", default="voxel", choices=("voxel", "region"))
    parser.add_argument("--model", default="auto")
    parser.add_argument("--kernel-cache", type=Path, default=None)
    parser.add_argument("--csv", type=Path, default=None, help="write every evaluated row with its errors here")


def cohort_path(args: argparse.Namespace, tmp: str | Path) -> Path:
    """``--cohort``, or a cohort of ``--patients`` ``--preset`` patients (seed ``--seed``) generated under `tmp`."""
    if args.cohort is not None:
        return Path(args.cohort)
    from ludl.synth.cohort import run_synth

    cohort = Path(tmp) / "cohort"
    start = time.perf_counter()
    run_synth(args.preset, args.patients, args.seed, cohort, workers=1)
    print(f"generated {args.patients} {args.preset} patients (seed {args.seed}) in {time.perf_counter() - start:.0f} s")
    return cohort


def dosimetry_options(args: argparse.Namespace) -> Any:
    """The `DosimetryOptions` of the command line."""
    from ludl.dosimetry.options import DosimetryOptions

    return DosimetryOptions(pvc=args.pvc, tia_mode=args.tia_mode, model=args.model, kernel_cache_dir=args.kernel_cache)


def truth_rows(cohort: Path) -> dict[tuple[str, int, str], dict[str, str]]:
    """Rows of ``truth/regions.csv`` by (patient, cycle, region); empty without the file."""
    from ludl.io.truth import read_truth_rows

    return read_truth_rows(cohort)


def summarise(errors: Sequence[float]) -> dict[str, float]:
    """n, median and mean signed error, median, P90 and max |error|, share of |error| > 10 % and > 20 % (fractions)."""
    e = np.asarray([x for x in errors if math.isfinite(x)], dtype=np.float64)
    if e.size == 0:
        return {"n": 0}
    a = np.abs(e)
    return {
        "n": int(e.size),
        "median": float(np.median(e)),
        "mean": float(np.mean(e)),
        "median_abs": float(np.median(a)),
        "p90_abs": float(np.percentile(a, 90)),
        "max_abs": float(a.max()),
        "over10": float(np.mean(a > 0.10)),
        "over20": float(np.mean(a > 0.20)),
    }


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Every row, columns from the first."""
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
