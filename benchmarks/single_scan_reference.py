"""How strong is the single-scan reference? Learners on the same inputs and the classical STP methods beside it.

Issue 10 "Must show". On the `demo` generator setting: the training population of the reference
(`--train` patients, default 20,000, drawn exactly as the reference draws it) trains ridge, a squared-loss
gradient-boosting regressor and a small MLP on the same feature rows and targets (log(TIA / A(t)), the same row
cap and subsample); the reference itself is read from (or trained into) the cache. All are scored on `--held-out`
patients of another seed (default 2,000, every lesion) per region class and scan time, beside Hänscheid, Madsen
(population T_eff per class) and the prior-informed estimator of `ludl.physics.stp` (`RegionPrior`s with a patient
factor, moment estimates from the exact curves of 1,000 training patients); the classical methods and the learners
see the noise-free activity. Each cell: median |relative TIA error| in % with a patient-bootstrap 95 % CI.

    python benchmarks/single_scan_reference.py                       # 20,000 / 2,000 patients (≈ 30 min, 2 cores)
    python benchmarks/single_scan_reference.py --train 3000 --held-out 500 --classes lesions kidneys
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ludl.physics.stp import PriorInformedEstimator, RegionPrior, haenscheid_tia, madsen_tia
from ludl.synth.config import make_config
from ludl.synth.kinetics import patient_rng, sample_lesions, sample_patient_kinetics
from ludl.synth.reference import (
    FEATURE_NAMES,
    TRAINING_SEED,
    MeasurementError,
    SingleScanReference,
    draw_population,
    patient_reference_inputs,
    region_class,
)
from ludl.synth.reference.model import MAX_TRAINING_ROWS, _subsample, _train_time, hgb_settings

_CLASSES = ("kidneys", "liver", "spleen", "salivary", "lesions")
_TIMES = (4.0, 24.0, 48.0, 96.0, 168.0)
_HELD_OUT_SEED = 314_159


def _learners() -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "ridge": make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
        "gbm_l2": HistGradientBoostingRegressor(max_iter=300, learning_rate=0.1, early_stopping=False, random_state=0),
        "mlp": make_pipeline(
            StandardScaler(),
            MLPRegressor(
                hidden_layer_sizes=(64, 64),
                alpha=1e-4,
                learning_rate_init=2e-3,
                max_iter=80,
                early_stopping=True,
                random_state=0,
            ),
        ),
    }


def _impute(x: np.ndarray) -> np.ndarray:
    """Ridge and the MLP need finite inputs: patients without lesions read 0 in the lesion aggregates."""
    return np.where(np.isfinite(x), x, 0.0)


def stp_region_priors(priors: Any, n: int) -> tuple[dict[str, RegionPrior], dict[str, float]]:
    """`RegionPrior` per class (biexp_uptake moments from the exact curves) and Madsen's median T_eff per class."""
    fits: dict[str, list[dict[str, float]]] = {}
    inj: dict[str, list[float]] = {}
    pid: dict[str, list[int]] = {}
    t_eff: dict[str, list[float]] = {}
    for i in range(n):
        rng = patient_rng(TRAINING_SEED, i)
        les = sample_lesions(rng, priors)
        kin = sample_patient_kinetics(rng, priors, les.n, les.volumes_ml, les.sites)
        for r in kin.regions:
            cls = region_class(r)
            if cls is None:
                continue
            te, tp, tia = float(kin.t_eff_h(r)), float(kin.time_to_peak_h(r)), float(kin.tia_mbq_h(r))
            lam_eff = math.log(2.0) / te
            # λ_u from the time to peak of the biexp_uptake curve: t_p = ln(λ_u/λ_eff)/(λ_u − λ_eff) (bisection).
            lo, hi = lam_eff * 1.06, 50.0
            for _ in range(60):
                mid = math.sqrt(lo * hi)
                if math.log(mid / lam_eff) / (mid - lam_eff) > tp:
                    lo = mid
                else:
                    hi = mid
            lam_u = math.sqrt(lo * hi)
            f = tia / kin.injected_mbq / (1.0 / lam_eff - 1.0 / lam_u)
            fits.setdefault(cls, []).append(
                {"a0": f * kin.injected_mbq, "lambda1_per_h": lam_eff, "lambda2_per_h": lam_u}
            )
            inj.setdefault(cls, []).append(kin.injected_mbq)
            pid.setdefault(cls, []).append(i)
            t_eff.setdefault(cls, []).append(te)
    # The patient loading needs classes with several regions per patient (kidneys, salivary, lesions).
    region_priors = {
        c: RegionPrior.from_fits(
            fits[c], inj[c], noise_cv=0.1, patient_ids=pid[c] if len(set(pid[c])) < len(pid[c]) else None
        )
        for c in fits
    }
    return region_priors, {c: float(np.median(v)) for c, v in t_eff.items()}


def _median_ci(err: np.ndarray, patient: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Median |error| and its patient-bootstrap 95 % CI (weighted medians: one sort, n_boot reweightings)."""
    order = np.argsort(err)
    e, p = err[order], patient[order]
    uniq, inv = np.unique(p, return_inverse=True)
    rng = np.random.default_rng(seed)
    meds = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, uniq.size, uniq.size), minlength=uniq.size)
        w = np.cumsum(counts[inv])
        meds[b] = e[min(int(np.searchsorted(w, 0.5 * w[-1])), e.size - 1)]
    return float(np.median(err)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def held_out_rows(priors: Any, n: int, times: Sequence[float]) -> dict[tuple[float, str], dict[str, np.ndarray]]:
    """Held-out rows per (time, class): features, activities, truth, patient (every lesion)."""
    out: dict[tuple[float, str], dict[str, list[Any]]] = {}
    err = MeasurementError()
    for i in range(n):
        inputs = patient_reference_inputs(priors, _HELD_OUT_SEED, i, times, err)
        for scan in inputs.scans:
            classes = np.array(scan.classes)
            for cls in _CLASSES:
                k = np.flatnonzero(classes == cls)
                if k.size == 0:
                    continue
                d = out.setdefault((scan.time_h, cls), {})
                for name, v in (
                    ("x", scan.x_noise_free[k]),
                    ("xn", scan.x_noisy[k]),
                    ("a", scan.activity_noise_free_mbq[k]),
                    ("an", scan.activity_noisy_mbq[k]),
                    ("tia", scan.true_tia_mbq_h[k]),
                    ("patient", np.full(k.size, i)),
                    ("inj", np.full(k.size, inputs.injected_mbq)),
                ):
                    d.setdefault(name, []).append(v)
    return {key: {n_: np.concatenate(v) for n_, v in d.items()} for key, d in out.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison and print one table (method × class × scan time)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=20_000, help="training population (the reference's)")
    ap.add_argument("--held-out", type=int, default=2_000)
    ap.add_argument("--classes", nargs="+", default=list(_CLASSES))
    ap.add_argument("--times", nargs="+", type=float, default=list(_TIMES))
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--csv", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    priors = make_config("demo", 1, 0, images=False).priors
    times = tuple(args.times)
    t0 = time.perf_counter()
    train = draw_population(priors, args.train, times, workers=args.workers)
    print(f"training population ({args.train} patients) drawn in {time.perf_counter() - t0:.0f} s", flush=True)
    # The reference exactly as `load_or_train_reference` trains it on this population (same rows, same settings),
    # for the benchmark's classes only.
    t0 = time.perf_counter()
    mine = {key: d for key, d in train.items() if key[1] in args.classes}
    models: dict[tuple[str, float, str], Any] = {}
    for t in times:
        models.update(_train_time(mine, t, hgb_settings(args.train)))
    reference = SingleScanReference(models, args.train)
    print(f"reference trained in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    held = held_out_rows(priors, args.held_out, times)
    region_priors, madsen_t_eff = stp_region_priors(priors, min(args.train, 1000))
    print(f"held-out population and STP priors in {time.perf_counter() - t0:.0f} s", flush=True)
    prior_est = PriorInformedEstimator(region_priors, n_samples=1024, n_patient_nodes=12)
    rows: list[dict[str, Any]] = []
    for t in times:
        for cls in args.classes:
            if (t, cls) not in held or (t, cls) not in train:
                continue
            d, h = train[(t, cls)], held[(t, cls)]
            k = _subsample(
                d.y_noise_free.size,
                MAX_TRAINING_ROWS,
                ("kidneys", "salivary", "lacrimal", "liver", "spleen", "red_marrow", "lesions").index(cls),
            )
            est: dict[str, np.ndarray] = {}
            scan_like = HeldOutScan(t, cls, h)
            est["reference"] = reference_estimate(reference, scan_like, "noise_free")
            est["reference_noisy"] = reference_estimate(reference, scan_like, "noisy")
            t1 = time.perf_counter()
            with threadpool_limits(limits=1):
                for name, model in _learners().items():
                    x_tr, x_te = (
                        (d.x_noise_free[k], h["x"])
                        if name == "gbm_l2"
                        else (_impute(d.x_noise_free[k]), _impute(h["x"]))
                    )
                    model.fit(x_tr, d.y_noise_free[k])
                    est[name] = h["a"] * np.exp(model.predict(x_te))
            fit_s = time.perf_counter() - t1
            est["haenscheid"] = haenscheid_tia(h["a"], t)
            est["madsen"] = madsen_tia(h["a"], t, madsen_t_eff[cls])
            post = prior_est.posterior(h["a"], t, cls, h["inj"], patient_ids=list(h["patient"]))
            est["prior_informed"] = post.median
            for m, e in est.items():
                err = np.abs(e / h["tia"] - 1.0) * 100.0
                med, lo, hi = _median_ci(err, h["patient"], args.bootstrap, seed=0)
                rows.append(
                    {
                        "class": cls,
                        "scan_h": t,
                        "method": m,
                        "n": err.size,
                        "median_abs_error_pct": med,
                        "ci_low_pct": lo,
                        "ci_high_pct": hi,
                    }
                )
            print(f"  {cls} {t:g} h: learners fitted in {fit_s:.0f} s", flush=True)
    _print_table(rows, args.classes, times)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"total {time.perf_counter() - t_start:.0f} s; features: {len(FEATURE_NAMES)}")


class HeldOutScan:
    """The held-out rows of one (time, class) shaped like a `ScanFeatures` for `SingleScanReference.estimate`."""

    def __init__(self, time_h: float, cls: str, h: Mapping[str, np.ndarray]) -> None:
        self.time_h = time_h
        self.regions = tuple(str(i) for i in range(h["a"].size))
        self.classes = (cls,) * h["a"].size
        self.x_noise_free, self.x_noisy = h["x"], h["xn"]
        self.activity_noise_free_mbq, self.activity_noisy_mbq = h["a"], h["an"]


def reference_estimate(reference: Any, scan: HeldOutScan, variant: str) -> np.ndarray:
    """The reference's TIA of the held-out rows."""
    out: np.ndarray = reference.estimate(scan, variant)
    return out


def _print_table(rows: Sequence[Mapping[str, Any]], classes: Sequence[str], times: Sequence[float]) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["class"], r["scan_h"], r["method"]): r for r in rows}
    print("\nmedian |TIA error| % [95 % CI], held-out patients")
    print("| class | scan h | " + " | ".join(methods) + " |")
    print("|" + "---|" * (len(methods) + 2))
    for cls in classes:
        for t in times:
            if (cls, t, methods[0]) not in cell:
                continue
            parts = []
            for m in methods:
                r = cell[(cls, t, m)]
                parts.append(f"{r['median_abs_error_pct']:.1f} [{r['ci_low_pct']:.1f}, {r['ci_high_pct']:.1f}]")
            print(f"| {cls} | {t:g} | " + " | ".join(parts) + " |")


if __name__ == "__main__":
    main()
