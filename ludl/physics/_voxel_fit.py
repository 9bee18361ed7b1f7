"""Voxel-wise TAC fits: every voxel's curve of a (T, Z, Y, X) stack at once, in chunks, on numpy or torch.

Private module: `ludl.physics.kinetics` is the public entry point (`fit_voxels`, `VoxelFit`). The stages:
check and mask the stack (`_masked_curves`), fit blocks of curves with the shared fitting core and AIC
selection (`_parametric_voxels`, threads over chunks for numpy), and put the per-voxel results back into
frames (`_to_voxel_fit`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from ludl.errors import FitError, InputError
from ludl.physics._fit_bounds import CoreSettings
from ludl.physics._fit_numpy import NumpyXp
from ludl.physics._tac_checks import check_choice, check_times, check_weights, core_settings, resolve_models
from ludl.physics._tac_models import DEFAULT_UPTAKE_RATE_PER_H, LN2, TRAPEZOID, check_model
from ludl.physics._tac_selection import combine_chosen, fit_models, select_by_aic
from ludl.physics._tac_trapezoid import TAILS, TRAPEZOID_STARTS, trapezoid_arrays

__all__ = ["NEGATIVE_TOL", "VoxelFit", "fit_voxels"]

# Default share of the stack's largest |value| below zero that fit_voxels clips to 0 (reconstruction and
# resampling noise around empty voxels); anything more negative is an error.
NEGATIVE_TOL = 0.01

# Per-voxel results before they go back into frames: maps (tia, rss, aic, r2, t_eff_h), parameters, model index.
_Results = tuple[dict[str, npt.NDArray[np.float64]], dict[str, npt.NDArray[np.float64]], npt.NDArray[np.int8]]


@dataclass(frozen=True, eq=False)
class VoxelFit:
    """Voxel-wise fit of a stack of frames; every map has the shape of one frame.

    Attributes:
        tia: TIA per voxel (activity unit × h), 0 outside the mask.
        model: the requested model; model_map: index into `model_names` per voxel (−1 outside the mask).
        params: name → map (NaN outside the mask and where the voxel's model lacks the parameter).
        aic, r2, rss, t_eff_h: maps as in `TacFit` (NaN outside the mask).
        n_clipped: small negative samples set to 0 before fitting (see `fit_voxels`).
    """

    tia: npt.NDArray[np.float64]
    model: str
    model_names: tuple[str, ...]
    model_map: npt.NDArray[np.int8]
    params: dict[str, npt.NDArray[np.float64]]
    aic: npt.NDArray[np.float64]
    r2: npt.NDArray[np.float64]
    rss: npt.NDArray[np.float64]
    t_eff_h: npt.NDArray[np.float64]
    mask: npt.NDArray[np.bool_]
    n_clipped: int = 0


def fit_voxels(
    times_h: npt.ArrayLike,
    activity_stack: npt.ArrayLike,
    model: str = "biexp_uptake",
    *,
    mask: npt.ArrayLike | None = None,
    nuclide: str = "Lu-177",
    weights: npt.ArrayLike | None = None,
    backend: str = "numpy",
    device: str | None = None,
    max_iter: int = 50,
    chunk_size: int | None = None,
    workers: int | None = None,
    tail: str = "physical",
    trapezoid_start: str = "zero",
    uptake_rate_per_h: float = DEFAULT_UPTAKE_RATE_PER_H,
    candidates: Sequence[str] | None = None,
    negative_tol: float = NEGATIVE_TOL,
) -> VoxelFit:
    """Fit every voxel's time-activity curve at once (vectorised; no loop over voxels).

    Args:
        times_h: (T,) sample times in h.
        activity_stack: (T, Z, Y, X) or (T, N) activities, not decay-corrected.
        model: as in `fit_tac`; ``auto`` returns a per-voxel `VoxelFit.model_map`.
        mask: boolean map of one frame's shape; voxels outside get TIA 0 and NaN elsewhere, and may hold
            NaN. Default: every voxel.
        weights: (T,) or the stack's shape; least-squares weights.
        backend: ``"numpy"`` (threads over chunks) or ``"torch"`` (same algorithm; float32).
        device: torch device; default ``"cuda"`` when available, else ``"cpu"``.
        max_iter: Levenberg–Marquardt iterations at most (a chunk stops once all its voxels converged).
        chunk_size: voxels per block (memory ∝ chunk_size × time points; default 65536 for numpy).
        workers: numpy threads (default: CPU count, at most 8).
        candidates: for ``auto``, the models to compare (default: all the points allow).
        negative_tol: samples in [−negative_tol·max|A|, 0) (max over the masked stack) are set to 0
            (reconstruction noise around empty voxels); more negative samples raise `InputError`.
    """
    t = check_times(times_h)
    stack = _checked_stack(activity_stack, t.size)
    check_choice("tail", tail, TAILS)
    check_choice("trapezoid_start", trapezoid_start, TRAPEZOID_STARTS)
    check_choice("backend", backend, ("numpy", "torch"))
    mask_arr = _frame_mask(mask, stack.shape[1:])
    models = _voxel_models(model, t.size, tail, candidates)
    settings = core_settings(nuclide, uptake_rate_per_h, max_iter)
    flat_mask = mask_arr.reshape(-1)
    y, n_clipped = _masked_curves(stack, flat_mask, negative_tol)
    w = _masked_weights(weights, stack.shape, flat_mask)
    if models == [TRAPEZOID]:
        results = _trapezoid_voxels(t, y, settings, tail, trapezoid_start)
    else:
        results = _parametric_voxels(t, y, w, models, settings, backend, device, chunk_size, workers)
    return _to_voxel_fit(results, model, tuple(models), mask_arr, n_clipped)


# ---------------------------------------------------------------------------------------------- inputs


def _checked_stack(activity_stack: npt.ArrayLike, n_times: int) -> npt.NDArray[Any]:
    """The stack as an array of real numbers with one frame per time point."""
    stack = np.asarray(activity_stack)
    if stack.ndim < 2 or stack.shape[0] != n_times:
        raise InputError(
            f"activity_stack has shape {stack.shape}; expected (T, Z, Y, X) or (T, N) with T = {n_times} time points"
        )
    if not np.issubdtype(stack.dtype, np.number) or np.iscomplexobj(stack):
        raise InputError(f"activity_stack must hold real numbers, got dtype {stack.dtype}")
    return stack


def _frame_mask(mask: npt.ArrayLike | None, frame: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """The boolean voxel mask of one frame (default: every voxel)."""
    if mask is None:
        return np.ones(frame, dtype=bool)
    mask_arr = np.asarray(mask)
    if mask_arr.shape != frame:
        raise InputError(f"mask has shape {mask_arr.shape}; it must match one frame {frame}")
    return mask_arr.astype(bool)


def _voxel_models(model: str, n_times: int, tail: str, candidates: Sequence[str] | None) -> list[str]:
    """The models to fit: those `model` allows at `n_times` points, restricted to `candidates` for ``auto``."""
    models = resolve_models(model, n_times, tail)
    if model == "auto" and candidates is not None:
        for m in candidates:
            check_model(m, allow_auto=False)
        models = [m for m in models if m in set(candidates)]
        if not models:
            raise FitError(f"none of candidates {list(candidates)} can be fitted to {n_times} time points")
    return models


def _masked_curves(
    stack: npt.NDArray[Any], flat_mask: npt.NDArray[np.bool_], negative_tol: float
) -> tuple[npt.NDArray[np.float64], int]:
    """The masked voxels' curves (N, T) as float64, small negative samples clipped to 0, and how many were."""
    y = np.ascontiguousarray(stack.reshape(stack.shape[0], -1)[:, flat_mask].T, dtype=np.float64)  # (N, T)
    bad = ~np.isfinite(y)
    if bad.any():
        raise InputError(
            f"activity_stack holds {int(bad.sum())} NaN/inf value(s) inside the mask; repair them or mask those voxels"
        )
    n_clipped = 0
    if y.size and y.min() < 0:
        limit = negative_tol * float(np.abs(y).max())
        if y.min() < -limit:
            raise InputError(
                f"activity_stack has negative values down to {float(y.min()):.4g} inside the mask, beyond "
                f"negative_tol·max|A| = {limit:.4g}; check the reconstruction/units, clip them, or raise negative_tol"
            )
        neg = y < 0
        n_clipped = int(neg.sum())
        y[neg] = 0.0
    return y, n_clipped


def _masked_weights(
    weights: npt.ArrayLike | None, shape: tuple[int, ...], flat_mask: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64] | None:
    """Weights per time point (T,) as given, or the masked voxels' weights (N, T) for a per-voxel stack."""
    w_full = check_weights(weights, shape, "activity_stack")
    if w_full is None or w_full.ndim == 1:
        return w_full
    return np.ascontiguousarray(w_full.reshape(shape[0], -1)[:, flat_mask].T)


# ---------------------------------------------------------------------------------------------- fitting


def _empty_results(n_vox: int) -> _Results:
    maps = {key: np.full(n_vox, math.nan) for key in ("tia", "rss", "aic", "r2", "t_eff_h")}
    return maps, {}, np.zeros(n_vox, dtype=np.int8)


def _trapezoid_voxels(
    t: npt.NDArray[np.float64], y: npt.NDArray[np.float64], settings: CoreSettings, tail: str, start: str
) -> _Results:
    """Trapezoid TIA of every curve (N, T); no fit, so no AIC."""
    n_vox = y.shape[0]
    maps, params, choice = _empty_results(n_vox)
    tia, lam = trapezoid_arrays(t, y.T, settings.lambda_phys_per_h, tail, start)
    maps["tia"], maps["t_eff_h"], maps["rss"] = tia, LN2 / lam, np.zeros(n_vox)
    maps["r2"] = np.where(y.max(axis=1) > y.min(axis=1), 1.0, math.nan)
    params["lambda_tail_per_h"] = lam
    return maps, params, choice


def _parametric_voxels(
    t: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64] | None,
    models: Sequence[str],
    settings: CoreSettings,
    backend: str,
    device: str | None,
    chunk_size: int | None,
    workers: int | None,
) -> _Results:
    """Fit `models` to every curve (N, T) in chunks of voxels and pick one model per voxel."""
    n_vox = y.shape[0]
    maps, params, choice = _empty_results(n_vox)
    run_block = _block_runner(backend, device, models, t, settings)
    dev = "cpu" if backend == "numpy" else _torch_device(device)
    size = chunk_size or _default_chunk(backend, dev)
    if size < 1:
        raise InputError(f"chunk_size must be ≥ 1, got {size}")
    starts = list(range(0, n_vox, size))

    def work(start: int) -> None:
        sl = slice(start, min(start + size, n_vox))
        block = run_block(y[sl], None if w is None else (w if w.ndim == 1 else w[sl]))
        for key in maps:
            maps[key][sl] = block[key]
        choice[sl] = block["choice"]
        for name, value in block["params"].items():
            params.setdefault(name, np.full(n_vox, math.nan))[sl] = value

    n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if backend == "numpy":
        # The matrix products have 4–6 columns: BLAS threads only add synchronisation, and on top of our worker
        # threads they oversubscribe the cores (measured: 2 BLAS threads made the grid scores 3× slower).
        with threadpool_limits(limits=1, user_api="blas"):
            if n_workers > 1 and len(starts) > 1:
                with ThreadPoolExecutor(max_workers=n_workers) as pool:
                    list(pool.map(work, starts))
            else:
                for start in starts:
                    work(start)
    else:
        for start in starts:
            work(start)
    return maps, params, choice


def _default_chunk(backend: str, device: str) -> int:
    if backend == "numpy":
        # Process CPU time of biexp_uptake on 605 k voxels, 2 busy cores: 64 k fastest (32 k: 1.1–1.2×, 128 k: 1.1–1.2×,
        # 8 k: 1.6× slower); the starting grid's score table is computed in row blocks, so memory stays ∝ chunk × T.
        return 65536
    return 1 << 21 if device.startswith("cuda") else 65536


def _torch_device(device: str | None) -> str:
    from ludl.physics._fit_torch import resolve_device

    return resolve_device(device)


def _block_runner(
    backend: str, device: str | None, models: Sequence[str], t: npt.NDArray[np.float64], settings: CoreSettings
) -> Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64] | None], dict[str, Any]]:
    """A function fitting one block of voxels (n, T) and returning numpy results."""
    if backend == "numpy":
        xp: Any = NumpyXp()
    else:
        from ludl.physics._fit_torch import TorchXp

        xp = TorchXp(_torch_device(device))
    t_x = xp.asarray(t)

    def run(y: npt.NDArray[np.float64], w: npt.NDArray[np.float64] | None) -> dict[str, Any]:
        y_x = xp.asarray(y)
        w_x = None if w is None else xp.asarray(w)
        fits = fit_models(xp, models, t_x, y_x, w_x, settings)
        choice = select_by_aic(xp, fits, models)
        res = combine_chosen(xp, fits, models, choice)
        out: dict[str, Any] = {key: xp.to_numpy(res[key]).astype(np.float64) for key in res if key != "params"}
        out["params"] = {k: xp.to_numpy(v).astype(np.float64) for k, v in res["params"].items()}
        out["choice"] = xp.to_numpy(choice).astype(np.int8)
        # All-zero curves integrate to exactly 0 whatever rates the fit settled on.
        out["tia"] = np.where(np.any(y > 0, axis=1), out["tia"], 0.0)
        return out

    return run


# ---------------------------------------------------------------------------------------------- output


def _to_voxel_fit(
    results: _Results, model: str, names: tuple[str, ...], mask_arr: npt.NDArray[np.bool_], n_clipped: int
) -> VoxelFit:
    """Per-voxel results back into frames: TIA 0, model index −1 and NaN elsewhere outside the mask."""
    maps, params, choice = results
    flat_mask = mask_arr.reshape(-1)
    frame = mask_arr.shape

    def to_frame(values: npt.NDArray[Any], fill: float | int, dtype: Any = np.float64) -> npt.NDArray[Any]:
        full = np.full(flat_mask.size, fill, dtype=dtype)
        full[flat_mask] = values
        return full.reshape(frame)

    return VoxelFit(
        tia=to_frame(maps["tia"], 0.0),
        model=model,
        model_names=names,
        model_map=to_frame(choice, -1, np.int8),
        params={name: to_frame(v, math.nan) for name, v in params.items()},
        aic=to_frame(maps["aic"], math.nan),
        r2=to_frame(maps["r2"], math.nan),
        rss=to_frame(maps["rss"], math.nan),
        t_eff_h=to_frame(maps["t_eff_h"], math.nan),
        mask=mask_arr,
        n_clipped=n_clipped,
    )
