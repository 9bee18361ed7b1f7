"""Synthetic-cohort benchmark: seconds per patient for each preset and peak memory.

Each preset runs in its own child process (so its peak memory is its own) with `workers` processes, after one
warm-up patient (kernel generation, reference-rate calibration); the table gives the mean seconds per patient
of the timed patients (wall time of the cohort / patients × workers, i.e. per patient per core), the CPU seconds
per patient (user + system, the child and its workers: on a loaded machine the honest measure, since wall time
then scales with the load) and the peak resident memory of the child and its workers.

    python benchmarks/synth.py                        # tiny, demo (3 patients each), clinical (1 patient)
    python benchmarks/synth.py --presets demo --patients 4 --workers 2
    python benchmarks/synth.py --reference            # also train (or read) the single-scan reference

The single-scan reference (a one-off per generator setting: trained once, then read from the cache) is left out
unless `--reference`: it is no per-patient cost. The machine load (`os.getloadavg`) is printed with the table:
on a shared machine the times scale with it.

Targets (issue 4): demo ≤ 5 s per patient, clinical (4.8 mm whole body, 5 time points) ≤ 60 s, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = {"tiny": None, "demo": 5.0, "clinical": 60.0}


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children: what load on the machine leaves alone."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _child(preset: str, n_patients: int, workers: int, images: bool, reference: bool) -> dict[str, float]:
    from ludl.synth.cohort import make_config, run_synth

    with tempfile.TemporaryDirectory() as tmp:
        warm = make_config(preset, 1, 12345, images=images)
        from ludl.synth.cohort import generate_patient

        generate_patient(warm, 0, Path(tmp) / "warm")
        t0, cpu0 = time.perf_counter(), _cpu_s()
        overrides = {"protocol": {"single_scan_reference": reference}}
        summary = run_synth(
            preset, n_patients, 1, Path(tmp) / "cohort", images=images, workers=workers, overrides=overrides
        )
        wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    self_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    child_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    return {
        "wall_s": wall,
        "s_per_patient": summary.seconds_per_patient,
        "s_per_patient_wall": wall * workers / n_patients,
        "cpu_s_per_patient": cpu / n_patients,
        "peak_gb": max(self_gb, child_gb),
    }


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "demo", "clinical"])
    parser.add_argument("--patients", type=int, default=None, help="patients per preset (default 3; clinical 1)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-images", action="store_true")
    parser.add_argument("--reference", action="store_true", help="write the single-scan reference too")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset, n, workers, images, reference = args.child
        print(json.dumps(_child(preset, int(n), int(workers), images == "1", reference == "1")))
        return
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    head = f"{'preset':10s} {'patients':>8s} {'s/patient':>10s} {'CPU s/pt':>9s} {'wall s':>8s} {'peak GB':>8s}"
    print(f"{head} {'target':>8s}")
    for preset in args.presets:
        n = args.patients or (1 if preset == "clinical" else 3)
        flags = ["0" if args.no_images else "1", "1" if args.reference else "0"]
        cmd = [sys.executable, __file__, "--child", preset, str(n), str(args.workers), *flags]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        target = TARGET_S.get(preset)
        print(
            f"{preset:10s} {n:8d} {r['s_per_patient']:10.2f} {r['cpu_s_per_patient']:9.2f} {r['wall_s']:8.1f} "
            f"{r['peak_gb']:8.2f} "
            f"{'≤ ' + format(target, 'g') + ' s' if target else '-':>8s}"
        )


if __name__ == "__main__":
    main()
