"""The single-scan reference model: one gradient-boosting regressor per region class, scan time and variant.

Target: log(TIA / A(t)) of a region, A(t) its activity at the scan as seen (noise-free or measured); the
estimate is A(t) · exp(prediction). Loss: absolute error (the median of log(TIA / A(t)) given the inputs,
which is also the median of the TIA: a median-type estimate, the minimiser of the expected |log error|).
Trained once per generator setting and cached on disk under a key that hashes the priors, the generator's
kinetics code, the feature code, the measurement-error model, the scan time and the training size.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_bytes
from ludl.synth.priors import CohortPriors
from ludl.synth.reference.features import REFERENCE_CLASSES, MeasurementError, ScanFeatures
from ludl.synth.reference.population import TRAINING_SEED, ClassData, draw_population

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_TRAINING_PATIENTS",
    "REFERENCE_VERSION",
    "VARIANTS",
    "SingleScanReference",
    "fit_class_model",
    "load_or_train_reference",
    "reference_cache_key",
]

FloatArray = npt.NDArray[np.float64]

REFERENCE_VERSION = "2.1"
VARIANTS: tuple[str, ...] = ("noise_free", "noisy")
DEFAULT_TRAINING_PATIENTS = 20_000
DEFAULT_CACHE_DIR = Path("~/.cache/ludl/reference")
# Gradient boosting settings: chosen on the benchmark (benchmarks/single_scan_reference.py); no early stopping
# (its validation split would add a random draw), fixed random_state (deterministic).
HGB_SETTINGS: Mapping[str, Any] = {
    "loss": "absolute_error",
    "learning_rate": 0.1,
    "max_iter": 250,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": False,
    "random_state": 0,
}
# Populations below this size (tests) fit fewer boosting iterations: more would only fit noise, and cost time.
SMALL_POPULATION = 2_000
SMALL_POPULATION_MAX_ITER = 40
# At most this many training rows per region class, scan time and variant (a deterministic subsample): beyond
# it the fit time grows and the error no longer drops (measured on the benchmark).
MAX_TRAINING_ROWS = 30_000
# Source files whose code defines the training population (the generator's kinetics and these features).
_GENERATOR_SOURCES = (
    "kinetics/__init__.py",
    "kinetics/curves.py",
    "kinetics/rates.py",
    "kinetics/reference.py",
    "kinetics/sampling.py",
    "kinetics/uptake_phase.py",
    "reference/features.py",
    "reference/population.py",
)


class RidgeThenBoost:
    """Ridge regression on the standardised inputs, then gradient boosting on its residual.

    Why both: at early scan times the target is close to linear in the log inputs, where boosting's piecewise-constant
    fit loses to ridge (benchmark: lesions at 4 h); later, the non-linear part dominates. Boosting the residual of
    the linear fit keeps both. Missing inputs (lesion aggregates of a patient without lesions) read 0 in the ridge.
    """

    def __init__(self, settings: Mapping[str, Any] | None = None, alpha: float = 1.0) -> None:
        self.settings = dict(settings or HGB_SETTINGS)
        self.alpha = alpha

    @staticmethod
    def _finite(x: FloatArray) -> FloatArray:
        out: FloatArray = np.where(np.isfinite(x), x, 0.0)
        return out

    def fit(self, x: FloatArray, y: FloatArray) -> RidgeThenBoost:
        """Fit both stages on rows `x` and targets `y`."""
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.linear_ = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha))
        self.linear_.fit(self._finite(x), y)
        self.boost_ = HistGradientBoostingRegressor(**self.settings)
        self.boost_.fit(x, y - self.linear_.predict(self._finite(x)))
        return self

    def predict(self, x: FloatArray) -> FloatArray:
        """Predicted log(TIA / A(t)) per row."""
        out: FloatArray = self.linear_.predict(self._finite(x)) + self.boost_.predict(x)
        return out


def fit_class_model(x: FloatArray, y: FloatArray, settings: Mapping[str, Any] | None = None) -> RidgeThenBoost:
    """A fitted `RidgeThenBoost` of log(TIA / A(t)) on the feature rows `x`."""
    from threadpoolctl import threadpool_limits

    # One thread: on a shared CPU, OpenMP threads that wait on each other make the fit 10–20× slower.
    with threadpool_limits(limits=1):
        return RidgeThenBoost(settings).fit(x, y)


def _subsample(n: int, cap: int, key: int) -> npt.NDArray[np.intp]:
    """Deterministic sorted subsample of `cap` of `n` row indices (all of them when n ≤ cap)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(key).choice(n, size=cap, replace=False))


def _generator_fingerprint() -> str:
    synth = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in _GENERATOR_SOURCES:
        h.update(rel.encode())
        h.update((synth / rel).read_bytes())
    return h.hexdigest()


def hgb_settings(n_patients: int) -> dict[str, Any]:
    """The boosting settings for a training population of `n_patients`."""
    out = dict(HGB_SETTINGS)
    if n_patients < SMALL_POPULATION:
        out["max_iter"] = SMALL_POPULATION_MAX_ITER
    return out


def reference_cache_key(
    priors: CohortPriors, time_h: float, n_patients: int, error: MeasurementError | None = None
) -> str:
    """Cache key of one scan time's models: a hash of everything the trained models depend on."""
    import sklearn

    parts = [
        REFERENCE_VERSION,
        repr(priors),
        (error or MeasurementError()).key(),
        f"{float(time_h):.6g}",
        str(int(n_patients)),
        str(TRAINING_SEED),
        repr(sorted(hgb_settings(n_patients).items())),
        str(MAX_TRAINING_ROWS),
        sklearn.__version__,
        _generator_fingerprint(),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


@dataclass(frozen=True, eq=False)
class SingleScanReference:
    """Trained models per (variant, scan time, region class); `estimate` gives the reference TIA of a scan.

    Attributes:
        models: (variant, time_h, class) → fitted regressor of log(TIA / A(t)).
        n_patients: size of the training population.
        training_seconds: wall time of drawing and fitting (0 for models read from the cache).
    """

    models: Mapping[tuple[str, float, str], Any]
    n_patients: int
    training_seconds: float = 0.0

    @property
    def times_h(self) -> tuple[float, ...]:
        """Scan times the reference covers."""
        return tuple(sorted({t for _, t, _ in self.models}))

    def estimate(self, scan: ScanFeatures, variant: str) -> FloatArray:
        """Reference TIA (MBq·h) of every region of one scan, in `scan.regions` order."""
        return self.estimate_many([scan], variant)[0]

    def estimate_many(self, scans: Sequence[ScanFeatures], variant: str) -> list[FloatArray]:
        """`estimate` of many scans at once (one prediction per scan time and class: far fewer model calls)."""
        if variant not in VARIANTS:
            raise InputError(f"reference variant must be one of {VARIANTS}, got {variant!r}")
        from threadpoolctl import threadpool_limits

        outs = [np.full(len(scan.regions), np.nan) for scan in scans]
        groups: dict[tuple[float, str], list[tuple[int, npt.NDArray[np.intp]]]] = {}
        for s, scan in enumerate(scans):
            classes = np.array(scan.classes)
            for cls in REFERENCE_CLASSES:
                rows = np.flatnonzero(classes == cls)
                if rows.size:
                    groups.setdefault((float(scan.time_h), cls), []).append((s, rows))
        for (time_h, cls), parts in groups.items():
            model = self.models.get((variant, time_h, cls))
            if model is None:
                raise InputError(
                    f"the single-scan reference has no model for {cls} at {time_h:g} h "
                    f"(trained times: {self.times_h}); train it with these scan times"
                )
            x = np.concatenate([_inputs(scans[s], variant)[0][rows] for s, rows in parts])
            with threadpool_limits(limits=1):
                pred = np.exp(model.predict(x))
            at = 0
            for s, rows in parts:
                outs[s][rows] = _inputs(scans[s], variant)[1][rows] * pred[at : at + rows.size]
                at += rows.size
        return outs


def _inputs(scan: ScanFeatures, variant: str) -> tuple[FloatArray, FloatArray]:
    """(feature rows, activities as seen) of one scan for one variant."""
    if variant == "noise_free":
        return scan.x_noise_free, scan.activity_noise_free_mbq
    return scan.x_noisy, scan.activity_noisy_mbq


def _train_time(
    data: Mapping[tuple[float, str], ClassData], time_h: float, settings: Mapping[str, Any]
) -> dict[tuple[str, float, str], Any]:
    models: dict[tuple[str, float, str], Any] = {}
    for cls in REFERENCE_CLASSES:
        d = data.get((time_h, cls))
        if d is None:
            continue
        k = _subsample(d.y_noise_free.size, MAX_TRAINING_ROWS, REFERENCE_CLASSES.index(cls))
        models[("noise_free", time_h, cls)] = fit_class_model(d.x_noise_free[k], d.y_noise_free[k], settings)
        models[("noisy", time_h, cls)] = fit_class_model(d.x_noisy[k], d.y_noisy[k], settings)
    return models


def load_or_train_reference(
    priors: CohortPriors,
    times_h: Sequence[float],
    cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
    *,
    n_patients: int = DEFAULT_TRAINING_PATIENTS,
    error: MeasurementError | None = None,
    workers: int | None = None,
) -> SingleScanReference:
    """The reference for these priors and scan times: read from `cache_dir`, or trained and written there.

    Args:
        priors: the generator's priors (the training population is drawn from them).
        times_h: nominal scan times (h).
        cache_dir: folder of the cached models (one file per scan time, written atomically); None: no cache.
        n_patients: training population size (≥ 20,000 for the written cohorts; small in tests).
        error: measurement-error model of the noisy variant.
        workers: processes drawing the population (None: all cores).
    """
    if n_patients < 50:
        raise InputError(f"the single-scan reference needs ≥ 50 training patients, got {n_patients}")
    times = tuple(sorted({float(t) for t in times_h}))
    folder = None if cache_dir is None else Path(cache_dir).expanduser()
    models: dict[tuple[str, float, str], Any] = {}
    missing: list[float] = []
    for t in times:
        file = None if folder is None else folder / f"{reference_cache_key(priors, t, n_patients, error)}.pkl"
        if file is not None and file.is_file():
            with file.open("rb") as fh:
                models.update(pickle.load(fh))  # our own cache folder, written by this function
        else:
            missing.append(t)
    if not missing:
        return SingleScanReference(models, n_patients)
    t0 = time.perf_counter()
    data = draw_population(priors, n_patients, missing, error=error, workers=workers)
    for t in missing:
        trained = _train_time(data, t, hgb_settings(n_patients))
        models.update(trained)
        if folder is not None:
            buf = io.BytesIO()
            pickle.dump(trained, buf, protocol=pickle.HIGHEST_PROTOCOL)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / f"{reference_cache_key(priors, t, n_patients, error)}.pkl", buf.getvalue())
    return SingleScanReference(models, n_patients, training_seconds=time.perf_counter() - t0)
