"""Physics-core benchmark: voxel-wise TAC fits and DVK dose of a whole-body-sized study.

Prints one table: the vectorised `biexp_uptake` fit of the body voxels of a (5, 128, 128, 384)
study, `auto` model selection, the same fit done the way peer tools do it (a per-voxel
`scipy.optimize.curve_fit` loop, timed on a sample and scaled), and the dose of a
128×128×384 TIA map by FFT convolution with the generated 4.8 mm kernel — with the ratio
against the per-voxel loop measured in the same run.

    python benchmarks/physics.py                    # full size (≈ 2.5 M body voxels)
    python benchmarks/physics.py --shape 5 64 64 96 # quick look

Targets (issue: physics core): fit + dose ≤ 30 s on 2 cores, ≥ 100× faster per voxel than the
curve_fit loop, peak memory ≤ 4 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from physics_fit import _print as print_fit_rows
from physics_fit import run_fit_benchmark

from ludl.physics.dose import dose_from_tia, voxel_tia_mbq_h
from ludl.physics.kernels import clear_kernel_cache, voxel_s_kernel


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports kB


def run_dose_benchmark(shape_zyx: tuple[int, int, int], spacing_mm: float = 4.8, seed: int = 0) -> list[dict]:
    """Time kernel generation and the FFT dose of a random-ish TIA map of `shape_zyx`."""
    rng = np.random.default_rng(seed)
    tia_map = rng.gamma(2.0, 0.5, size=shape_zyx).astype(np.float32)  # MBq·h/mL
    density = np.full(shape_zyx, 1.04, dtype=np.float32)
    rows = []
    clear_kernel_cache()
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        kernel = voxel_s_kernel((spacing_mm,) * 3, cache_dir=Path(cache))
        rows.append(
            {
                "step": f"kernel {kernel.shape[0]}³ at {spacing_mm} mm (generate)",
                "seconds": time.perf_counter() - start,
                "items": kernel.size,
            }
        )
    start = time.perf_counter()
    dose = dose_from_tia(voxel_tia_mbq_h(tia_map, (spacing_mm,) * 3), kernel, density_g_per_ml=density)
    rows.append(
        {
            "step": f"dose {'×'.join(map(str, shape_zyx))} (FFT, density)",
            "seconds": time.perf_counter() - start,
            "items": dose.size,
        }
    )
    return rows


def main() -> None:
    """Run the fit and dose benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=(5, 128, 128, 384), metavar=("T", "Z", "Y", "X"))
    parser.add_argument("--no-auto", action="store_true", help="skip the auto-selection run (≈ 3 min at full size)")
    parser.add_argument("--torch", action="store_true", help="also time the torch backend (CUDA when present)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--loop-sample", type=int, default=300, help="voxels fitted one by one with curve_fit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = tuple(args.shape)

    fit_rows = run_fit_benchmark(
        shape,
        auto=not args.no_auto,
        torch_backend=args.torch,
        torch_threads=args.torch_threads,
        loop_sample=args.loop_sample,
        seed=args.seed,
    )
    dose_rows = run_dose_benchmark(shape[1:], seed=args.seed)

    print(f"\nludl physics benchmark — study {shape}")
    print_fit_rows(fit_rows)
    print()
    print(f"{'step':<44} {'voxels':>10} {'seconds':>9}")
    for row in dose_rows:
        print(f"{row['step']:<44} {row['items']:>10d} {row['seconds']:>9.2f}")
    fit_seconds = next(r["seconds"] for r in fit_rows if r["step"] == "fit_voxels biexp_uptake (numpy)")
    dose_seconds = next(r["seconds"] for r in dose_rows if r["step"].startswith("dose"))
    speedup = next(r["speedup_of_fit_voxels"] for r in fit_rows if "speedup_of_fit_voxels" in r)
    print(f"\nbiexp_uptake fit + dose: {fit_seconds + dose_seconds:.1f} s (target ≤ 30 s on 2 cores)")
    print(f"per-voxel speed-up over the curve_fit loop: {speedup:,.0f}× (target ≥ 100×)")
    print(f"peak resident memory of this process: {_peak_rss_gb():.2f} GB (target ≤ 4 GB)")


if __name__ == "__main__":
    main()
