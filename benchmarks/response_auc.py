"""Response references of the synthetic cohort: AUCs with bootstrap 95 % CIs (issue 10, "Must show", response).

On `--n` ``images=false`` patients (drawn as ``ludl synth`` draws them: lesions, cycle-1 kinetics, PET factors,
response) it scores, at each dose-response strength (multiples of the default `dose_response_strength`):

- ``PET only``: logistic regression (5-fold cross-validated) on PET features — lesion count, PSMA tumour
  volume, total lesion PSMA, volume-weighted mean/min/low fraction of the lesions' PET expression;
- ``PET + PSA``: the same with log baseline PSA;
- ``24 h proxy + PET + PSA``: plus the same summaries of each lesion's 24 h activity concentration (what one
  scan shows; `_lesion_features`);
- ``true dose + PET + PSA``: plus those of the true cycle-1 lesion doses (perfect cycle-one dosimetry);
- ``measured 24 h proxy + PET + PSA``: the 24 h concentration as a clinic reads it, an image-derived region mean
  with the single-scan reference's measurement error (`MeasurementError`: recovery and spread by volume class,
  one calibration error per scan);
- ``measured dose + PET + PSA``: the dose as multi-time-point dosimetry measures it (`MEASURED_DOSE_ERROR`);
- ``p_observable``: the dosimetry-oracle AUC (the exact posterior given cycle-1 dosimetry, PET, baseline PSA);
- ``p_true``: the full achievable AUC (hidden biology known).

Differences carry paired bootstrap CIs: dose − PET only, true dose − noise-free proxy (issue 10's bar, ≥ 0.05) and
measured dose − measured proxy (what a clinic would see); the R² of log dose on log 24 h
concentration (lesions, patient means) says how much of the dose one 24 h scan already shows.
``--dose-agreement N`` instead draws N `demo` patients with truth maps and compares each lesion's truth-map
mean dose with `lesion_dose_gy`.

    python benchmarks/response_auc.py                          # 2,000 patients, strengths 0, 1, 2 × default
    python benchmarks/response_auc.py --n 1000 --strengths 1 --set response.pet_radiosensitivity_exponent=0.5
    python benchmarks/response_auc.py --strengths 1 --set lesions.t_eff_patient_variance_fraction=0.9
    python benchmarks/response_auc.py --set lesions.uptake_peak_h_range=12:48       # lesion uptake phase on
    python benchmarks/response_auc.py --dose-agreement 16
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ludl.synth.kinetics import patient_rng, sample_lesions, sample_patient_kinetics, sample_pet_lesion_factor
from ludl.synth.priors import CohortPriors, default_priors, replace_priors
from ludl.synth.reference.features import MeasurementError
from ludl.synth.response import kill_exponent, lesion_dose_gy, simulate_response

FloatArray = npt.NDArray[np.float64]

# Lesion dose error of conventional multi-time-point dosimetry, log(measured / true) = shared + own:
# lesions ≥ 4 mL median −0.6 %, P90 |error| 17.8 % (docs/physics.md "Accuracy across seeds": GTM, voxel fits,
# nominal FWHM, 24 `demo` patients pooled); below 4 mL the pipeline has no pooled figure, so the single-scan
# reference's small-lesion read-out is used (−15 %, P90 35 %: `MeasurementError.small_lesion`, calibrated from the
# same pipeline). One camera-calibration error per patient (3 % SD, docs/physics.md item 5) is shared by all of a
# patient's lesions; the per-lesion SD is what is left of P90 / 1.645 around the median.
MEASURED_DOSE_ERROR: dict[str, float] = {
    "small_lesion_ml": 4.0,
    "large_recovery": 0.994,
    "large_sd_log": float(np.sqrt((0.178 / 1.645) ** 2 - 0.03**2)),
    "small_recovery": 0.85,
    "small_sd_log": float(np.sqrt((0.35 / 1.645) ** 2 - 0.03**2)),
    "shared_sd_log": 0.03,
}
# Measurement-error streams are the patient's (seed, index) plus this tag: the generator's own stream is untouched.
_ERROR_STREAM = 71


@dataclass(frozen=True)
class PatientRecord:
    """What the benchmark keeps of one patient: lesion arrays, baseline PSA, label and probabilities."""

    volume_ml: FloatArray
    pet: FloatArray
    conc24_mbq_per_ml: FloatArray
    dose_gy: FloatArray
    conc24_measured_mbq_per_ml: FloatArray
    dose_measured_gy: FloatArray
    peak_h: FloatArray
    psa_baseline: float
    label: bool
    p_true: float
    p_observable: float


def draw_record(priors: CohortPriors, seed: int, index: int) -> PatientRecord | None:
    """Patient `index` of an ``images=false`` cohort `seed` (None without lesions)."""
    rng = patient_rng(seed, index)
    les = sample_lesions(rng, priors)
    kin = sample_patient_kinetics(rng, priors, les.n, les.volumes_ml, les.sites)
    if kin.lesion_rows.size == 0:
        return None
    pet = sample_pet_lesion_factor(rng, kin, priors)
    res = simulate_response(rng, kin, priors, pet)
    rows = kin.lesion_rows
    volume = kin.volumes_ml[rows]
    conc24 = kin.activity_mbq(24.0)[rows, 0] / volume
    err = np.random.default_rng([seed, index, _ERROR_STREAM])
    return PatientRecord(
        volume_ml=volume,
        pet=pet,
        conc24_mbq_per_ml=conc24,
        dose_gy=res.dose_gy[0],
        conc24_measured_mbq_per_ml=conc24 * measured_proxy_factor(err, volume),
        dose_measured_gy=res.dose_gy[0] * measured_dose_factor(err, volume),
        peak_h=kin.time_to_peak_h()[rows],
        psa_baseline=res.psa_baseline,
        label=res.non_response,
        p_true=res.p_true,
        p_observable=res.p_observable,
    )


def measured_proxy_factor(rng: np.random.Generator, volume_ml: FloatArray) -> FloatArray:
    """Measured / true 24 h lesion concentration: the single-scan reference's read-out error (`MeasurementError`)."""
    error = MeasurementError()
    calib = np.exp(error.calibration_sd_log * rng.standard_normal())
    rec_sd = np.array([error.recovery_and_sd("lesions", "", float(v)) for v in volume_ml])
    out: FloatArray = calib * rec_sd[:, 0] * np.exp(rec_sd[:, 1] * rng.standard_normal(volume_ml.size))
    return out


def measured_dose_factor(rng: np.random.Generator, volume_ml: FloatArray) -> FloatArray:
    """Measured / true lesion dose of multi-time-point dosimetry (`MEASURED_DOSE_ERROR`), log-normal by volume class."""
    e = MEASURED_DOSE_ERROR
    small = volume_ml < e["small_lesion_ml"]
    rec = np.where(small, e["small_recovery"], e["large_recovery"])
    sd = np.where(small, e["small_sd_log"], e["large_sd_log"])
    shared = e["shared_sd_log"] * rng.standard_normal()
    out: FloatArray = rec * np.exp(shared + sd * rng.standard_normal(volume_ml.size))
    return out


def _draw_chunk(args: tuple[CohortPriors, int, range]) -> list[PatientRecord | None]:
    priors, seed, indices = args
    return [draw_record(priors, seed, i) for i in indices]


def draw_population(priors: CohortPriors, n: int, seed: int, workers: int = 1) -> list[PatientRecord]:
    """`n` patients (those without lesions left out), in parallel over `workers` processes."""
    chunks = [range(i, min(n, i + 100)) for i in range(0, n, 100)]
    if workers <= 1:
        parts = [_draw_chunk((priors, seed, c)) for c in chunks]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_draw_chunk, [(priors, seed, c) for c in chunks]))
    return [r for part in parts for r in part if r is not None]


def _lesion_features(x: FloatArray, volume_ml: FloatArray) -> list[float]:
    """Volume-weighted summaries of a per-lesion positive quantity (PET factor, concentration or dose)."""
    w = volume_ml / volume_ml.sum()
    lx = np.log(x)
    order = np.argsort(lx)
    q10 = lx[order][np.searchsorted(np.cumsum(w[order]), 0.1)]
    return [float(w @ lx), float(np.log(w @ x)), float(lx.min()), float(q10)]


def pet_features(r: PatientRecord) -> list[float]:
    """PET-visible patient features: count, PSMA-TV, TL-PSMA, expression summaries, PSMA-low volume fraction."""
    v = r.volume_ml
    low = float(v[r.pet < 0.5].sum() / v.sum())
    return [math_log(v.size), math_log(v.sum()), math_log(float(v @ r.pet)), low, *_lesion_features(r.pet, v)]


def math_log(x: float) -> float:
    """Natural log of a positive float, as a float."""
    return float(np.log(x))


def _surviving_fraction_features(dose_gy: FloatArray, r: PatientRecord, priors: CohortPriors) -> list[float]:
    """log living fraction after two such cycles at the median radiosensitivity (BED ≈ dose: long T_eff)."""
    rp = priors.response
    alpha = rp.alpha_per_gy_median * r.pet**rp.pet_radiosensitivity_exponent
    survive = np.exp(-2.0 * kill_exponent(alpha, dose_gy * (1.0 + 0.05 * dose_gy / rp.alpha_beta_gy), rp))
    w = r.volume_ml / r.volume_ml.sum()
    return [math_log(float(w @ survive) + 1e-12), math_log(float(w @ np.sqrt(survive)) + 1e-12)]


# Per-lesion quantity of each feature kind beyond PET + PSA, and whether it is a concentration (scaled to a dose).
_LESION_QUANTITY: dict[str, tuple[str, bool]] = {
    "proxy": ("conc24_mbq_per_ml", True),
    "dose": ("dose_gy", False),
    "proxy_measured": ("conc24_measured_mbq_per_ml", True),
    "dose_measured": ("dose_measured_gy", False),
}


def feature_matrix(records: Sequence[PatientRecord], kind: str, priors: CohortPriors) -> FloatArray:
    """Patient features of one kind: ``pet``, ``pet_psa``, or PET + PSA + a lesion quantity (`_LESION_QUANTITY`).

    A proxy's concentrations become doses by one population factor (the median dose per 24 h concentration,
    a Hänscheid-like single-scan dose; measured against the measured dose for the measured proxy), so every
    quantity gets the same surviving-fraction features.
    """
    scale = 1.0
    if kind in _LESION_QUANTITY:
        attr, is_conc = _LESION_QUANTITY[kind]
        if is_conc:
            dose_attr = "dose_measured_gy" if kind.endswith("_measured") else "dose_gy"
            dose = np.concatenate([getattr(r, dose_attr) for r in records])
            conc = np.concatenate([getattr(r, attr) for r in records])
            scale = float(np.median(dose / conc))
    rows = []
    for r in records:
        f = pet_features(r)
        if kind != "pet":
            f.append(math_log(r.psa_baseline))
        if kind in _LESION_QUANTITY:
            x = getattr(r, _LESION_QUANTITY[kind][0]) * scale
            f.extend(_lesion_features(x, r.volume_ml))
            f.extend(_surviving_fraction_features(x, r, priors))
        rows.append(f)
    return np.asarray(rows, dtype=np.float64)


def cross_validated_scores(x: FloatArray, y: npt.NDArray[np.bool_], seed: int = 0) -> FloatArray:
    """Out-of-fold P(non-response) of a standardised logistic regression, 5 stratified folds."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    out: FloatArray = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    return out


def bootstrap_auc(
    y: npt.NDArray[np.bool_], scores: Mapping[str, FloatArray], n_boot: int = 1000, seed: int = 0
) -> dict[str, FloatArray]:
    """AUC of every score on `n_boot` paired bootstrap resamples of the patients."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {k: [] for k in scores}
    n = y.size
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if y[idx].all() or not y[idx].any():
            continue
        for k, s in scores.items():
            out[k].append(float(roc_auc_score(y[idx], s[idx])))
    return {k: np.asarray(v) for k, v in out.items()}


def response_scores(
    records: Sequence[PatientRecord], priors: CohortPriors
) -> tuple[npt.NDArray[np.bool_], dict[str, FloatArray]]:
    """The labels and every score of the table (cross-validated where a model is fitted)."""
    y = np.array([r.label for r in records], dtype=bool)
    scores = {
        "PET only": cross_validated_scores(feature_matrix(records, "pet", priors), y),
        "PET + PSA": cross_validated_scores(feature_matrix(records, "pet_psa", priors), y),
        "24 h proxy + PET + PSA": cross_validated_scores(feature_matrix(records, "proxy", priors), y),
        "true dose + PET + PSA": cross_validated_scores(feature_matrix(records, "dose", priors), y),
        "measured 24 h proxy + PET + PSA": cross_validated_scores(feature_matrix(records, "proxy_measured", priors), y),
        "measured dose + PET + PSA": cross_validated_scores(feature_matrix(records, "dose_measured", priors), y),
        "p_observable (oracle)": np.array([r.p_observable for r in records]),
        "p_true (achievable)": np.array([r.p_true for r in records]),
    }
    return y, scores


def _ci(x: FloatArray) -> str:
    lo, hi = np.percentile(x, [2.5, 97.5])
    return f"[{lo:.3f}, {hi:.3f}]"


def dose_explained_by_proxy(records: Sequence[PatientRecord]) -> tuple[float, float]:
    """R² of log dose on log 24 h concentration: pooled over lesions, and of the volume-weighted patient means.

    1 − R² is what a single 24 h scan cannot see of the dose (mostly retention beyond 24 h): the room the
    dose has over the proxy.
    """

    def r2(a: FloatArray, b: FloatArray) -> float:
        return float(np.corrcoef(a, b)[0, 1] ** 2)

    log_d = [np.log(r.dose_gy) for r in records]
    log_c = [np.log(r.conc24_mbq_per_ml) for r in records]
    w = [r.volume_ml / r.volume_ml.sum() for r in records]
    pd = np.array([wi @ d for wi, d in zip(w, log_d, strict=True)])
    pc = np.array([wi @ c for wi, c in zip(w, log_c, strict=True)])
    return r2(np.concatenate(log_d), np.concatenate(log_c)), r2(pd, pc)


# (better, baseline) pairs whose AUC difference is reported with a paired bootstrap CI.
DIFFERENCES: tuple[tuple[str, str], ...] = (
    ("true dose + PET + PSA", "PET only"),
    ("p_observable (oracle)", "PET only"),
    ("true dose + PET + PSA", "24 h proxy + PET + PSA"),  # issue 10's bar: ≥ 0.05
    ("p_observable (oracle)", "24 h proxy + PET + PSA"),
    ("measured dose + PET + PSA", "measured 24 h proxy + PET + PSA"),  # what a clinic would see
    ("measured dose + PET + PSA", "PET only"),
    ("true dose + PET + PSA", "measured dose + PET + PSA"),
    ("24 h proxy + PET + PSA", "measured 24 h proxy + PET + PSA"),
)


def auc_table(records: Sequence[PatientRecord], priors: CohortPriors, n_boot: int = 1000) -> list[str]:
    """Lines of the AUC table with 95 % CIs, and the dose's gains with paired CIs."""
    y, scores = response_scores(records, priors)
    boot = bootstrap_auc(y, scores, n_boot)
    lines = [f"  {'score':<32} {'AUC':>6}  95 % CI"]
    for k, s in scores.items():
        lines.append(f"  {k:<32} {roc_auc_score(y, s):6.3f}  {_ci(boot[k])}")
    for top, base in DIFFERENCES:
        d = roc_auc_score(y, scores[top]) - roc_auc_score(y, scores[base])
        lines.append(f"  {top} − {base}: {d:+.3f}  {_ci(boot[top] - boot[base])}")
    p_obs = scores["p_observable (oracle)"]
    lines.append(f"  non-response rate {y.mean():.3f}, mean p_observable {p_obs.mean():.3f}, n {y.size}")
    r2_lesion, r2_patient = dose_explained_by_proxy(records)
    lines.append(f"  R² log dose ~ log 24 h concentration: lesions {r2_lesion:.3f}, patient means {r2_patient:.3f}")
    peaks = np.concatenate([r.peak_h for r in records])
    p5, p50, p95 = np.percentile(peaks, [5, 50, 95])
    lines.append(f"  lesion time to peak P5 / median / P95: {p5:.1f} / {p50:.1f} / {p95:.1f} h")
    return lines


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``section.key=value`` pairs → the nested mapping `replace_priors` takes (``lo:hi`` → a (lo, hi) range)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        section, name = key.split(".", 1)
        parsed: Any = tuple(float(v) for v in value.split(":")) if ":" in value else float(value)
        out.setdefault(section, {})[name] = parsed
    return out


def dose_agreement(n: int, seed: int) -> list[str]:
    """Truth-map mean dose vs `lesion_dose_gy` per lesion on `n` demo patients with truth maps."""
    from ludl.io.regions import lesion_name
    from ludl.synth.activity import build_activity_model
    from ludl.synth.config import make_config
    from ludl.synth.patient import STREAM_ANATOMY, make_patient_anatomy, sub_rng
    from ludl.synth.truth import tia_map_mbq_h_per_ml, true_dose_gy

    config = make_config("demo", n, seed, images=True)
    priors = config.priors
    ratio: dict[str, list[float]] = {}
    for i in range(n):
        rng = patient_rng(seed, i)
        les = sample_lesions(rng, priors)
        anatomy, les = make_patient_anatomy(config, sub_rng(seed, i, STREAM_ANATOMY), les)
        kin = sample_patient_kinetics(
            rng, priors, les.n, les.volumes_ml, les.sites, organ_volumes_ml=anatomy.organ_volumes_ml
        )
        a = anatomy.anatomy
        model = build_activity_model(kin, a.labels, a.label_values, a.uptake_weight, a.clearance_shift_per_h)
        dose_map = np.asarray(true_dose_gy(tia_map_mbq_h_per_ml(model), a.density_g_per_ml).array, dtype=np.float64)
        labels = np.asarray(a.labels.array)
        predicted = lesion_dose_gy(kin, priors)
        for j, site in enumerate(kin.lesion_sites):
            value = a.label_values.get(lesion_name(j + 1))
            mask = labels == value
            if value is not None and mask.any():
                ratio.setdefault(site, []).append(float(dose_map[mask].mean() / predicted[j]))
    lines = [f"  {'site':<12} {'lesions':>7}  median map/lesion_dose_gy  P5–P95"]
    for site, values in sorted(ratio.items()):
        v = np.asarray(values)
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        lines.append(f"  {site:<12} {v.size:7d}  {p50:.3f}  {p5:.3f}–{p95:.3f}")
    allv = np.concatenate([np.asarray(v) for v in ratio.values()])
    lines.append(
        f"  all          {allv.size:7d}  {np.median(allv):.3f}  median |log ratio| {np.median(abs(np.log(allv))):.3f}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strengths", default="0,1,2", help="multiples of the default dose_response_strength")
    parser.add_argument("--set", action="append", default=[], help="prior override section.key=value")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--dose-agreement", type=int, default=0, metavar="N", help="N demo patients with maps")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.dose_agreement:
        print(f"truth-map lesion dose vs lesion_dose_gy, {args.dose_agreement} demo patients, seed {args.seed}")
        print("\n".join(dose_agreement(args.dose_agreement, args.seed)))
        print(f"({time.perf_counter() - t0:.0f} s)")
        return
    base = replace_priors(default_priors(), _overrides(args.set))
    s0 = base.response.dose_response_strength
    for mult in (float(m) for m in args.strengths.split(",")):
        priors = replace_priors(base, {"response": {"dose_response_strength": mult * s0}})
        t1 = time.perf_counter()
        records = draw_population(priors, args.n, args.seed, args.workers)
        print(f"dose_response_strength {mult * s0:g} ({mult:g} × default), seed {args.seed}")
        print("\n".join(auc_table(records, priors, args.n_boot)))
        print(f"  ({time.perf_counter() - t1:.0f} s)")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
