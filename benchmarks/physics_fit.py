"""Benchmark: voxel-wise TAC fitting of a whole-body study, ludl's vectorised fit vs a curve_fit loop.

A synthetic body-shaped mask (an elliptic cylinder, ≈ 40 % of the grid: ≈ 2.5 M voxels for the default
(5, 128, 128, 384) study) gets realistic, non-negative noisy curves sampled at 4, 24, 48, 96, 168 h:
log-normal uptake fraction, T_eff (median 40 h, σ_log 0.35) and uptake half-time (median 1.5 h, σ_log
0.3), hot "organs" and "lesions", and SPECT-like noise whose CV grows as activity falls (5–20 %).

Steps: ``fit_voxels(model="biexp_uptake")`` (numpy threads), ``model="auto"``, optionally the torch
backend, and the way peer tools do it: a per-voxel ``scipy.optimize.curve_fit`` loop timed on a sample
and scaled to all voxels. Peak memory per step is the tracemalloc peak (numpy allocations included);
``ru_maxrss`` is the process peak so far.

    python benchmarks/physics_fit.py                      # full size (minutes on 2 cores)
    python benchmarks/physics_fit.py --shape 5 64 64 96   # quick
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

from ludl.physics.kinetics import fit_voxels

__all__ = ["make_study", "process_cpu_s", "run_fit_benchmark", "run_revision_comparison"]

TIMES_H = np.array([4.0, 24.0, 48.0, 96.0, 168.0])
LAMBDA_PHYS = math.log(2.0) / 159.528  # 177Lu


def make_study(
    shape: tuple[int, ...] = (5, 128, 128, 384), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic study: (activity stack float32 (T, Z, Y, X), body mask, true TIA map, times_h)."""
    if len(shape) != 4 or shape[0] != TIMES_H.size:
        raise ValueError(f"shape must be ({TIMES_H.size}, Z, Y, X), got {shape}")
    rng = np.random.default_rng(seed)
    frame = shape[1:]
    long_axis = int(np.argmax(frame))
    cross = [i for i in range(3) if i != long_axis]
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in frame], indexing="ij")
    # Elliptic cylinder along the longest axis: semi-axes 0.80 and 0.64 of the half-widths → 40 % fill.
    mask = (grids[cross[0]] / 0.80) ** 2 + (grids[cross[1]] / 0.64) ** 2 <= 1.0
    n = int(mask.sum())
    # Per-voxel kinetics: log-normal background plus hot organs/lesions (docs/synthetic-cohort.md orders of magnitude).
    uptake = np.exp(rng.normal(math.log(1e-5), 0.5, n))  # fraction of injected activity per voxel
    hot = rng.random(n) < 0.03
    uptake[hot] *= rng.uniform(5.0, 50.0, int(hot.sum()))
    lam_eff = np.maximum(np.exp(rng.normal(math.log(math.log(2) / 40.0), 0.35, n)), LAMBDA_PHYS)
    lam_u = np.maximum(np.exp(rng.normal(math.log(math.log(2) / 1.5), 0.3, n)), 1.05 * lam_eff)
    a0 = 7400.0 * uptake  # MBq at 7.4 GBq injected
    curves = a0[None, :] * (np.exp(-np.outer(TIMES_H, lam_eff)) - np.exp(-np.outer(TIMES_H, lam_u)))
    cv = 0.05 + 0.15 * np.clip(1.0 - curves / np.quantile(curves, 0.99), 0.0, 1.0)
    noisy = np.maximum(curves * (1.0 + cv * rng.standard_normal(curves.shape)), 0.0)
    stack = np.zeros(shape, dtype=np.float32)
    stack.reshape(shape[0], -1)[:, mask.reshape(-1)] = noisy
    tia = np.zeros(frame)
    tia[mask] = a0 * (1.0 / lam_eff - 1.0 / lam_u)
    return stack, mask, tia, TIMES_H.copy()


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run fn; return its result, wall seconds and tracemalloc peak in MB."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak / 2**20


def process_cpu_s() -> float:
    """CPU seconds this process has used so far, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _curve_fit_loop(times: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """The per-voxel way: scipy curve_fit (TRF with bounds) of biexp_uptake, one voxel at a time."""

    def model(t: np.ndarray, a0: float, l1: float, l2: float) -> np.ndarray:
        return a0 * (np.exp(-l1 * t) - np.exp(-l2 * t))

    out = np.zeros(curves.shape[1])
    for i in range(curves.shape[1]):
        y = curves[:, i].astype(np.float64)
        p0 = (max(float(y.max()), 1e-12) * 1.5, 0.02, 0.5)
        try:
            popt, _ = optimize.curve_fit(
                model, times, y, p0=p0, bounds=([0.0, LAMBDA_PHYS, 0.01], [np.inf, 5.0, 10.0]), maxfev=2000
            )
            out[i] = popt[0] * (1.0 / popt[1] - 1.0 / popt[2])
        except (RuntimeError, ValueError):
            out[i] = np.nan
    return out


def run_fit_benchmark(
    shape: tuple[int, ...] = (5, 128, 128, 384),
    *,
    auto: bool = True,
    torch_backend: bool = False,
    device: str | None = None,
    torch_threads: int | None = None,
    loop_sample: int = 300,
    workers: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time the voxel-wise fits on a synthetic study; one dict per step (seconds, voxels/s, memory, error).

    Args:
        shape: (T, Z, Y, X) of the study (T must be 5: 4/24/48/96/168 h).
        auto: also time ``model="auto"`` (all four parametric models and AIC selection).
        torch_backend: also time the torch backend (on `device`, default CUDA if available).
        torch_threads: torch CPU threads (on a busy 2-core machine OpenMP spinning made 2 threads 50×
            slower than 1).
        loop_sample: voxels fitted by the scipy curve_fit loop; its time is scaled to all voxels.
        workers: numpy threads for fit_voxels (default: CPU count).
    """
    (stack, mask, truth, times), make_s, _ = _measure(lambda: make_study(shape, seed))
    n = int(mask.sum())
    rows: list[dict[str, Any]] = []

    def record(
        step: str, seconds: float, peak_mb: float, tia: np.ndarray | None, voxels: int = n, **extra: Any
    ) -> None:
        row: dict[str, Any] = {
            "step": step,
            "voxels": voxels,
            "seconds": seconds,
            "voxels_per_s": voxels / seconds if seconds > 0 else math.inf,
            "peak_mb": peak_mb,
            "max_rss_mb": _max_rss_mb(),
        }
        if tia is not None:
            ref = truth[mask] if tia.shape == truth.shape else tia[1]
            est = tia[mask] if tia.shape == truth.shape else tia[0]
            row["median_abs_err"] = float(np.nanmedian(np.abs(est / ref - 1.0)))
        row.update(extra)
        rows.append(row)

    record("make synthetic study", make_s, 0.0, None, shape=tuple(shape))
    cpu = process_cpu_s()
    fit, sec, peak = _measure(lambda: fit_voxels(times, stack, "biexp_uptake", mask=mask, workers=workers))
    record("fit_voxels biexp_uptake (numpy)", sec, peak, fit.tia, cpu_s=process_cpu_s() - cpu)
    base_rate = n / sec
    if auto:
        res, sec, peak = _measure(lambda: fit_voxels(times, stack, "auto", mask=mask, workers=workers))
        counts = np.bincount(res.model_map[mask], minlength=len(res.model_names))
        chosen = {name: int(c) for name, c in zip(res.model_names, counts, strict=True)}
        record("fit_voxels auto (numpy)", sec, peak, res.tia, chosen=chosen)
    if torch_backend:
        import torch

        from ludl.physics._fit_torch import resolve_device

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        dev = resolve_device(device)
        fit_voxels(times, stack[:, :2, :2, :2], "biexp_uptake", backend="torch", device=dev)  # warm-up
        res, sec, peak = _measure(
            lambda: fit_voxels(times, stack, "biexp_uptake", mask=mask, backend="torch", device=dev)
        )
        record(f"fit_voxels biexp_uptake (torch {dev})", sec, peak, res.tia)
    rng = np.random.default_rng(seed + 1)
    flat = np.flatnonzero(mask.reshape(-1))
    sample = np.sort(rng.choice(flat, size=min(loop_sample, flat.size), replace=False))
    curves = stack.reshape(shape[0], -1)[:, sample]
    loop_tia, sec, peak = _measure(lambda: _curve_fit_loop(times, curves))
    per_voxel = sec / sample.size
    sample_truth = truth.reshape(-1)[sample]
    record(
        f"curve_fit loop ({sample.size} voxels, scaled)",
        per_voxel * n,
        peak,
        np.stack([loop_tia, sample_truth]),
        measured_s=sec,
        speedup_of_fit_voxels=base_rate * per_voxel,
    )
    return rows


# Run in a fresh interpreter whose `ludl` is the one on PYTHONPATH: fit, print the fit's process CPU time (all
# threads) and wall time as JSON, save the TIA of the body voxels.
_CHILD = """
import json, resource, sys, time
import numpy as np
import ludl
from physics_fit import make_study
from ludl.physics.kinetics import fit_voxels
assert ludl.__file__.startswith(sys.argv[2]), ludl.__file__
shape, seed, workers, out = json.loads(sys.argv[1])
stack, mask, _, times = make_study(tuple(shape), seed)
usage = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
cpu, wall = usage(), time.perf_counter()
fit = fit_voxels(times, stack, "biexp_uptake", mask=mask, workers=workers)
print(json.dumps({"cpu_s": usage() - cpu, "wall_s": time.perf_counter() - wall}))
np.save(out, fit.tia[mask])
"""


def run_revision_comparison(
    shape: tuple[int, ...], baseline_rev: str, *, repeats: int = 3, seed: int = 0, workers: int | None = None
) -> dict[str, Any]:
    """`biexp_uptake` fit with this checkout's ludl against the ludl of git revision `baseline_rev`, same study.

    The two alternate in fresh processes `repeats` times each, so both see the same machine load; on a shared
    machine compare the process CPU time (the fit's threads together), which load inflates far less than wall
    time. Returns the best and median CPU/wall seconds of each, the CPU ratio (baseline / current) and the
    median and largest |relative difference| of the voxel TIAs.
    """
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", baseline_rev, "ludl"], capture_output=True, check=True)
    times: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory() as tmp:
        base_root = Path(tmp) / "baseline"
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(base_root, filter="data")
        roots = {"baseline": base_root, "current": repo}
        for _ in range(repeats):
            for side, root in roots.items():
                args = json.dumps([list(shape), seed, workers, str(Path(tmp) / f"{side}.npy")])
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(Path(__file__).resolve().parent)])}
                # cwd: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH.
                run = subprocess.run(
                    [sys.executable, "-c", _CHILD, args, str(root)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                    cwd=tmp,
                )
                times[side].append(json.loads(run.stdout.strip().splitlines()[-1]))
        base, cur = np.load(Path(tmp) / "baseline.npy"), np.load(Path(tmp) / "current.npy")
    diff = np.abs(cur - base) / np.maximum(np.abs(base), 1e-300)
    out: dict[str, Any] = {"baseline_rev": baseline_rev, "repeats": repeats, "voxels": int(base.size)}
    for side, runs in times.items():
        for key in ("cpu_s", "wall_s"):
            values = [r[key] for r in runs]
            out[f"{side}_{key}_best"], out[f"{side}_{key}_median"] = min(values), float(np.median(values))
    out["cpu_ratio"] = out["baseline_cpu_s_best"] / out["current_cpu_s_best"]
    out["tia_median_rel_diff"], out["tia_max_rel_diff"] = float(np.median(diff)), float(diff.max())
    return out


def print_revision_comparison(c: dict[str, Any]) -> None:
    """One paragraph: the CPU and wall times of both sides, their ratio and the TIA agreement."""
    print(
        f"\nbiexp_uptake fit, {c['voxels']} voxels, {c['repeats']}× each, alternating in fresh processes:\n"
        f"  baseline {c['baseline_rev']}: CPU {c['baseline_cpu_s_best']:.2f} s best ({c['baseline_cpu_s_median']:.2f} "
        f"median), wall {c['baseline_wall_s_best']:.2f} s best\n"
        f"  current : CPU {c['current_cpu_s_best']:.2f} s best ({c['current_cpu_s_median']:.2f} median), wall "
        f"{c['current_wall_s_best']:.2f} s best\n"
        f"  speed-up (process CPU time): {c['cpu_ratio']:.2f}×; voxel TIA |relative difference| median "
        f"{c['tia_median_rel_diff']:.2g}, max {c['tia_max_rel_diff']:.2g}"
    )


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"{'step':<44} {'voxels':>10} {'seconds':>9} {'voxels/s':>11} {'peak MB':>8} {'RSS MB':>8} {'med|err|':>9}")
    for r in rows:
        err = f"{100 * r['median_abs_err']:.2f}%" if "median_abs_err" in r else ""
        print(
            f"{r['step']:<44} {r['voxels']:>10d} {r['seconds']:>9.2f} {r['voxels_per_s']:>11.3g} "
            f"{r['peak_mb']:>8.0f} {r['max_rss_mb']:>8.0f} {err:>9}"
        )
    for r in rows:
        if "speedup_of_fit_voxels" in r:
            print(
                f"fit_voxels biexp_uptake is {r['speedup_of_fit_voxels']:.0f}× faster per voxel than the curve_fit loop"
            )
        if "chosen" in r:
            print(f"auto chose: {r['chosen']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[5, 128, 128, 384], metavar=("T", "Z", "Y", "X"))
    parser.add_argument("--no-auto", action="store_true", help="skip the auto-selection run")
    parser.add_argument("--torch", action="store_true", help="also time the torch backend")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--loop-sample", type=int, default=300)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--baseline-rev", default=None, help="also time the biexp_uptake fit of this git revision")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side for --baseline-rev")
    args = parser.parse_args()
    rows = run_fit_benchmark(
        tuple(args.shape),
        auto=not args.no_auto,
        torch_backend=args.torch,
        device=args.device,
        torch_threads=args.torch_threads,
        loop_sample=args.loop_sample,
        workers=args.workers,
    )
    _print(rows)
    if args.baseline_rev:
        print_revision_comparison(
            run_revision_comparison(tuple(args.shape), args.baseline_rev, repeats=args.repeats, workers=args.workers)
        )


if __name__ == "__main__":
    main()
