"""End-to-end timing of `run_dosimetry` on one whole-body 5-time-point patient (issue 5): seconds per stage, peak RSS.

Generates one ``clinical``-preset patient (4.8 mm whole-body SPECT/CT, 5 time points, DICOM) in a child process
(or reuses ``--cohort``), then runs the default pipeline (voxel TIA, DVK dose, GTM partial-volume correction, all
outputs written) in another child process, so the peak resident memory is the pipeline's own. A first run warms
the kernel cache (``--kernel-cache``); the timed run uses it, as a clinic's second patient would.

    python benchmarks/dosimetry.py                         # generate, warm up, time
    python benchmarks/dosimetry.py --cohort /tmp/clin --pvc none

Targets (issue 5): ≤ 60 s and ≤ 6 GB peak on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 60.0
TARGET_GB = 6.0


def _child(cohort: str, patient: str, out: str, pvc: str, tia_mode: str, kernel_cache: str) -> dict[str, object]:
    from ludl.dosimetry.options import DosimetryOptions
    from ludl.dosimetry.pipeline import run_dosimetry

    start = time.perf_counter()
    options = DosimetryOptions(pvc=pvc, tia_mode=tia_mode, kernel_cache_dir=Path(kernel_cache))
    result = run_dosimetry(cohort, patient, 1, out, options)
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "seconds": result.seconds,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "grid": result.settings["voxel_mm"],
        "shape": list(result.dose.array.shape),
        "regions": len(result.regions),
        "timepoints": result.settings["timepoints_h"],
    }


def _run_child(args: list[str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Generate (or reuse) the patient, warm the kernel cache, time one run and print the stage table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=None, help="reuse this cohort (default: generate one patient)")
    parser.add_argument("--patient", default="SYN0001")
    parser.add_argument("--preset", default="clinical")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pvc", default="gtm")
    parser.add_argument("--tia-mode", default="voxel")
    parser.add_argument("--kernel-cache", type=Path, default=None)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "cohort"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "ludl", "synth", f"preset={args.preset}", "n_patients=1", f"seed={args.seed}",
                 f"out={cohort}", "workers=1"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            print(f"generated 1 {args.preset} patient in {time.perf_counter() - start:.0f} s")
        cache = str(args.kernel_cache or Path(tmp) / "kernels")
        common = [str(cohort), args.patient]
        warm = _run_child([*common, str(Path(tmp) / "warm"), args.pvc, args.tia_mode, cache])
        timed = _run_child([*common, str(Path(tmp) / "out"), args.pvc, args.tia_mode, cache])
    seconds = dict(timed["seconds"])  # type: ignore[call-overload]
    print(
        f"patient {args.patient}: grid {timed['shape']} at {timed['grid']} mm, time points {timed['timepoints']} h, "
        f"{timed['regions']} regions; pvc={args.pvc}, tia_mode={args.tia_mode}"
    )
    print(f"{'stage':<12}{'s':>8}")
    for stage, value in seconds.items():
        print(f"{stage:<12}{value:>8.1f}")
    total = float(timed["wall_s"])  # type: ignore[arg-type]
    peak = float(timed["peak_gb"])  # type: ignore[arg-type]
    print(f"{'total':<12}{total:>8.1f}   (first run, kernel generation included: {float(warm['wall_s']):.1f} s)")  # type: ignore[arg-type]
    print(f"peak RSS {peak:.2f} GB")
    print(
        f"target ≤ {TARGET_S:.0f} s: {'PASS' if total <= TARGET_S else 'FAIL'}; "
        f"≤ {TARGET_GB:.0f} GB: {'PASS' if peak <= TARGET_GB else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
