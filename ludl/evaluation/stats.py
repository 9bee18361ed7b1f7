"""Error statistics of region doses and patient-level bootstrap intervals (docs/architecture.md "Evaluation").

Errors are relative, in percent: 100·(estimate / reference − 1). Regions of one patient are not independent (they
share the patient's kinetics), so every interval resamples PATIENTS with replacement and pools the regions of the
patients drawn; a paired interval draws the same patients for both methods. Intervals are percentile intervals of
`N_BOOTSTRAP` seeded draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError

__all__ = [
    "CI_LEVEL",
    "N_BOOTSTRAP",
    "STATISTICS",
    "Interval",
    "bootstrap_error_statistics",
    "bootstrap_interval",
    "error_statistics",
    "paired_bootstrap_interval",
    "paired_median_abs_interval",
    "patient_draws",
    "relative_error_pct",
    "replicate_percentiles",
]

FloatArray = npt.NDArray[np.float64]
N_BOOTSTRAP = 1000  # percentile CIs: 1,000 draws put the 2.5 % / 97.5 % points within ≈ 1 % of their limit
CI_LEVEL = 0.95
# |error| above a threshold: a method off by exactly 10 % computes 10.000000000000009 % (float round-off of the ratio);
# it is not "above 10 %".
_ROUND_OFF_PCT = 1e-9
# What each summary row holds, in the order of the tables.
STATISTICS: tuple[str, ...] = (
    "bias_pct",
    "sd_pct",
    "median_abs_error_pct",
    "p90_abs_error_pct",
    "share_over_10_pct",
    "share_over_20_pct",
)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (NaN bounds when it cannot be resampled)."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        """True when `x` lies inside [low, high]."""
        return bool(self.low <= x <= self.high)


def relative_error_pct(estimate: npt.ArrayLike, reference: npt.ArrayLike) -> FloatArray:
    """100·(estimate / reference − 1); NaN where the reference is not positive or either value is not finite."""
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    ok = np.isfinite(est) & np.isfinite(ref) & (ref > 0)
    out = np.full(np.broadcast(est, ref).shape, np.nan)
    np.divide(est, ref, out=out, where=ok)
    return np.where(ok, 100.0 * (out - 1.0), np.nan)


def error_statistics(errors_pct: npt.ArrayLike) -> dict[str, float]:
    """Signed bias (median), SD, median / 90th-percentile |error| and shares above 10 % and 20 % (in %)."""
    e = np.asarray(errors_pct, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return dict.fromkeys(STATISTICS, float("nan"))
    a = np.abs(e)
    return {
        "bias_pct": float(np.median(e)),
        "sd_pct": float(np.std(e, ddof=1)) if e.size > 1 else float("nan"),
        "median_abs_error_pct": float(np.median(a)),
        "p90_abs_error_pct": float(np.percentile(a, 90)),
        "share_over_10_pct": float(100.0 * np.mean(a > 10.0 + _ROUND_OFF_PCT)),
        "share_over_20_pct": float(100.0 * np.mean(a > 20.0 + _ROUND_OFF_PCT)),
    }


def patient_draws(n_patients: int, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> npt.NDArray[np.int64]:
    """How often each patient is drawn in each bootstrap replicate, shape (n_boot, n_patients).

    The same seed gives the same draws, so intervals of different methods over the same patients are paired.
    """
    if n_patients < 1:
        raise InputError("bootstrap needs at least one patient; the held-out fold has none with scored regions")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_patients, size=(n_boot, n_patients))
    counts = np.zeros((n_boot, n_patients), dtype=np.int64)
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1)
    return counts


def _percentiles(values: FloatArray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size < 2:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - CI_LEVEL) / 2.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)


def _replicates(
    samples: Sequence[FloatArray],
    patient_index: npt.NDArray[np.int64],
    statistic: Callable[..., float],
    draws: npt.NDArray[np.int64],
) -> FloatArray:
    """The statistic on each replicate: every sample repeated by the draw count of its row's patient."""
    out = np.empty(draws.shape[0])
    for b, counts in enumerate(draws):
        weights = counts[patient_index]
        out[b] = statistic(*(np.repeat(s, weights, axis=0) for s in samples))
    return out


def bootstrap_interval(
    values: npt.ArrayLike,
    patients: Sequence[str],
    statistic: Callable[[FloatArray], float],
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> Interval:
    """`statistic` of `values` with a 95 % interval from resampling patients (one patient label per value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape[0] != len(patients):
        raise InputError(f"{v.shape[0]} values but {len(patients)} patient labels; give one label per value")
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    unique, index = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    point = statistic(v)
    reps = _replicates([v], index.astype(np.int64), statistic, patient_draws(unique.size, n_boot, seed))
    return Interval(float(point), *_percentiles(reps))


class _ReplicateQuantiles:
    """Sorted values and the cumulative replicate counts, computed once and queried for several percentiles."""

    def __init__(self, values: npt.ArrayLike, weights: npt.ArrayLike) -> None:
        v = np.asarray(values, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        self.v = v[order]
        w = np.atleast_2d(np.asarray(weights, dtype=np.int32))[:, order]
        cum = np.cumsum(w, axis=1, dtype=np.int64)
        self.total = cum[:, -1] if v.size else np.zeros(w.shape[0], dtype=np.int64)
        # Each row's counts are non-decreasing; offsetting row b by b·(N+1) makes the flat array sorted, so one
        # searchsorted finds every replicate's k-th element (instead of a B × n comparison per query).
        self.step = int(self.total.max()) + 1 if v.size else 1
        self.offset = np.arange(w.shape[0], dtype=np.int64) * self.step
        self.flat = (cum + self.offset[:, None]).ravel()
        self.n = v.size

    def _element(self, k: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """The k-th (0-based) element of each replicate's repeated sorted sample."""
        pos = np.searchsorted(self.flat, k + self.offset, side="right") - np.arange(k.size) * self.n
        return self.v[np.clip(pos, 0, self.n - 1)]

    def percentile(self, q: float) -> FloatArray:
        """np.percentile (linear interpolation) of every replicate; NaN for empty replicates."""
        if self.n == 0:
            return np.full(self.total.shape, np.nan)
        h = (q / 100.0) * np.maximum(self.total - 1, 0)
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(self.total - 1, 0))
        a, b = self._element(lo), self._element(hi)
        return np.where(self.total > 0, a + (h - lo) * (b - a), np.nan)


def replicate_percentiles(values: npt.ArrayLike, weights: npt.ArrayLike, q: float) -> FloatArray:
    """np.percentile(np.repeat(values, w), q) for every row w of `weights` (integer counts), without repeating.

    Exact (linear interpolation, numpy's default) and vectorised over the replicates: the k-th element of the
    repeated sorted sample is the first sorted value whose cumulative count exceeds k. NaN for empty replicates.
    """
    return _ReplicateQuantiles(values, weights).percentile(q)


def _replicate_statistics(e: FloatArray, weights: npt.NDArray[np.int64]) -> dict[str, FloatArray]:
    """`error_statistics` of every replicate (rows of integer `weights` on the errors `e`)."""
    a = np.abs(e)
    # One product gives every replicate's count, sum, sum of squares and counts above 10 % and 20 %.
    columns = np.stack([np.ones_like(e), e, e**2, a > 10.0 + _ROUND_OFF_PCT, a > 20.0 + _ROUND_OFF_PCT], axis=1)
    n, total, squares, over_10, over_20 = (weights.astype(np.float64) @ columns).T
    abs_quantiles = _ReplicateQuantiles(a, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        var = (squares - n * mean**2) / (n - 1)
        return {
            "bias_pct": replicate_percentiles(e, weights, 50.0),
            "sd_pct": np.sqrt(np.maximum(var, 0.0)),
            "median_abs_error_pct": abs_quantiles.percentile(50.0),
            "p90_abs_error_pct": abs_quantiles.percentile(90.0),
            "share_over_10_pct": 100.0 * over_10 / n,
            "share_over_20_pct": 100.0 * over_20 / n,
        }


def bootstrap_error_statistics(
    errors_pct: npt.ArrayLike, patients: Sequence[str], *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, Interval]:
    """`error_statistics` with a 95 % patient-bootstrap interval on each (vectorised over the replicates)."""
    e = np.asarray(errors_pct, dtype=np.float64)
    if e.shape[0] != len(patients):
        raise InputError(f"{e.shape[0]} errors but {len(patients)} patient labels; give one label per error")
    point = error_statistics(e)
    if e.size == 0 or not np.all(np.isfinite(e)):
        return {k: Interval(v, float("nan"), float("nan")) for k, v in point.items()}
    unique, index = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    weights = patient_draws(unique.size, n_boot, seed)[:, index]
    reps = _replicate_statistics(e, weights)
    return {k: Interval(point[k], *_percentiles(reps[k])) for k in STATISTICS}


def paired_median_abs_interval(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    patients: Sequence[str],
    *,
    ratio: bool = False,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> Interval:
    """median|a| − median|b| (or their ratio) on the same rows with a paired patient bootstrap (vectorised)."""
    x = np.abs(np.asarray(a, dtype=np.float64))
    y = np.abs(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.shape[0] != len(patients):
        raise InputError(f"paired samples differ in length ({x.shape[0]}, {y.shape[0]}, {len(patients)} patients)")
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    unique, index = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    weights = patient_draws(unique.size, n_boot, seed)[:, index]
    mx, my = replicate_percentiles(x, weights, 50.0), replicate_percentiles(y, weights, 50.0)
    px, py = float(np.median(x)), float(np.median(y))
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.where(my > 0, mx / my, np.nan) if ratio else mx - my
    point = (px / py if py > 0 else float("nan")) if ratio else px - py
    return Interval(point, *_percentiles(reps))


def paired_bootstrap_interval(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    patients: Sequence[str],
    statistic: Callable[[FloatArray], float],
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    combine: Callable[[float, float], float] = lambda x, y: x - y,
) -> Interval:
    """statistic(a) ⊖ statistic(b) on the same rows (same regions, same patients) with a paired patient bootstrap.

    Args:
        a, b: per-row values of the two methods (e.g. errors in %), aligned row by row.
        patients: patient of each row.
        statistic: e.g. the median of |values|.
        combine: how the two statistics compare (default: difference a − b; a ratio for "network / reference").
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.shape[0] != len(patients):
        raise InputError(f"paired samples differ in length ({x.shape[0]}, {y.shape[0]}, {len(patients)} patients)")
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    unique, index = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    draws = patient_draws(unique.size, n_boot, seed)
    point = combine(statistic(x), statistic(y))
    reps = _replicates([x, y], index.astype(np.int64), lambda p, q: combine(statistic(p), statistic(q)), draws)
    return Interval(float(point), *_percentiles(reps))
