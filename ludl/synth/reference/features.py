"""What one scan and the PET show at region level: the single-scan reference's inputs, noise-free and noisy.

Per patient-cycle and scan time t, each evaluated region (organs, red marrow, lesions) gets one feature row:
its own activity at t (as a fraction of the injection), volume, concentration and, for lesions, site and PET
factor; plus what the whole scan shows of the patient: blood-pool, bladder and whole-body activity at t, the
activity of every organ class, the lesion aggregates (count, tumour volume, total activity, mean concentration,
mean PET, mean concentration relative to PET) and the injected activity. Pooling across regions is what makes
one scan informative: all regions share the patient factor of their T_eff, and the whole-body retention and the
patient's lesions relative to their PET read it.

The noisy variant multiplies every measured activity by a log-normal read-out error whose recovery (bias) and
spread depend on region class and volume (`MeasurementError`), plus one calibration error shared by all regions
of a scan; the PET factor and the volumes are taken as measured (PET has its own noise in the generator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.regions import EVALUATION_CLASSES, evaluation_class
from ludl.synth.kinetics import PatientKinetics

__all__ = [
    "FEATURE_NAMES",
    "REFERENCE_CLASSES",
    "MeasurementError",
    "ReferenceInputs",
    "ScanFeatures",
    "reference_inputs",
    "region_class",
]

FloatArray = npt.NDArray[np.float64]

# Region classes of the evaluation; one reference model per class and scan time.
REFERENCE_CLASSES: tuple[str, ...] = EVALUATION_CLASSES
# Organ classes whose total activity is a patient-level feature (in this order).
_ORGAN_CLASSES = REFERENCE_CLASSES[:-1]
# Lesion sites as a number (the models take it as a categorical-like ordinal; unknown sites read −1).
_SITES: tuple[str, ...] = ("bone", "lymph_node", "liver")
FEATURE_NAMES: tuple[str, ...] = (
    "log_activity_fraction",
    "log_volume_ml",
    "log_concentration_fraction_per_ml",
    "lesion_site",
    "log_pet_factor",
    "log_concentration_vs_patient_lesions",
    "log_pet_vs_patient_lesions",
    "log_blood_fraction",
    "log_bladder_fraction",
    "log_body_fraction",
    *(f"log_{c}_fraction" for c in _ORGAN_CLASSES),
    "log_kidney_volume_ml",
    "log_liver_volume_ml",
    "log_spleen_volume_ml",
    "log1p_n_lesions",
    "log_tumour_volume_ml",
    "log_tumour_fraction",
    "mean_log_lesion_concentration",
    "mean_log_pet_factor",
    "mean_log_concentration_over_pet",
    "log_rest_fraction",
    "log_injected_mbq",
    "scan_h",
)
_TINY = 1e-12


def region_class(region: str) -> str | None:
    """Evaluation class of a kinetics region name (None for blood, bladder, rest of body, …)."""
    return evaluation_class(region)


@dataclass(frozen=True)
class MeasurementError:
    """Read-out error of image-derived region activities: log(measured / true) ~ N(log recovery, sd²).

    Calibrated from the project's own multi-time-point pipeline against the truth on `demo` patients
    (docs/synthetic-cohort.md "What the cohort can and cannot tell"; issue notes): kidneys −3.6 %, liver −3.2 %,
    spleen 0 % (organs ≈ ±5–10 %), lesions < 4 mL −15 % with P90 |error| 35 %, ≥ 4 mL −3 % with P90 20 %.
    The SDs are set so that P90 |error| matches (≈ 1.645 SD around the bias). Small glands (lacrimal, 1 mL) read
    like small lesions; the blood pool (a small left-ventricle VOI) and the bladder (voiding, motion) ±10 %; the
    whole-body sum is calibration-limited; one calibration error (3 %) is shared by every region of a scan.
    """

    organ: tuple[float, float] = (0.97, 0.05)
    salivary: tuple[float, float] = (0.95, 0.08)
    lacrimal: tuple[float, float] = (0.85, 0.18)
    red_marrow: tuple[float, float] = (1.0, 0.10)
    small_lesion: tuple[float, float] = (0.85, 0.18)
    large_lesion: tuple[float, float] = (0.97, 0.11)
    small_lesion_ml: float = 4.0
    blood: tuple[float, float] = (1.0, 0.10)
    bladder: tuple[float, float] = (1.0, 0.10)
    body: tuple[float, float] = (1.0, 0.05)
    calibration_sd_log: float = 0.03

    def recovery_and_sd(self, cls: str | None, region: str, volume_ml: float) -> tuple[float, float]:
        """(recovery, log-SD) of one region's read-out."""
        if cls == "lesions":
            return self.small_lesion if volume_ml < self.small_lesion_ml else self.large_lesion
        if cls in ("salivary", "lacrimal", "red_marrow"):
            out: tuple[float, float] = getattr(self, cls)
            return out
        if region == "blood":
            return self.blood
        if region == "bladder":
            return self.bladder
        return self.organ

    def key(self) -> str:
        """Stable text of the settings (part of the model cache key)."""
        return repr(self)


@dataclass(frozen=True, eq=False)
class ScanFeatures:
    """Feature rows of one scan time: per evaluated region, noise-free and noisy, with the truth to score."""

    time_h: float
    regions: tuple[str, ...]
    classes: tuple[str, ...]
    x_noise_free: FloatArray  # (n_regions, n_features)
    x_noisy: FloatArray
    activity_noise_free_mbq: FloatArray  # what the estimate multiplies: A(t) as seen
    activity_noisy_mbq: FloatArray
    true_tia_mbq_h: FloatArray
    s_value_gy_per_mbq_h: FloatArray


@dataclass(frozen=True, eq=False)
class ReferenceInputs:
    """A patient-cycle's single-scan inputs at every reference scan time (what `patient.py` hands the cohort)."""

    cycle: int
    injected_mbq: float
    scans: tuple[ScanFeatures, ...]


def _log(x: npt.ArrayLike) -> FloatArray:
    out: FloatArray = np.log(np.maximum(np.asarray(x, dtype=np.float64), _TINY))
    return out


def _feature_rows(
    kin: PatientKinetics,
    activity: FloatArray,
    rows: npt.NDArray[np.intp],
    classes: Sequence[str],
    log_pet: FloatArray,
    time_h: float,
) -> FloatArray:
    """Feature matrix (n_rows, n_features) from one set of (possibly noisy) region activities at `time_h`."""
    inj = kin.injected_mbq
    frac = activity / inj
    vol = kin.volumes_ml
    names = kin.regions
    kinds = kin.kinds
    body = float(np.sum(frac[[i for i, k in enumerate(kinds) if k != "excreta"]]))
    blood = float(frac[kin.index("blood")])
    bladder = float(frac[kin.index("bladder")])
    cls_of = [region_class(r) for r in names]
    organ_sum = {c: float(sum(frac[i] for i, k in enumerate(cls_of) if k == c)) for c in _ORGAN_CLASSES}
    les = kin.lesion_rows
    n_les = les.size
    seen = blood + bladder + sum(organ_sum.values())
    if n_les:
        les_conc = _log(frac[les] / vol[les])
        mean_conc, mean_pet = float(np.mean(les_conc)), float(np.mean(log_pet))
        tumour = [
            math.log(float(np.sum(vol[les]))),
            math.log(max(float(np.sum(frac[les])), _TINY)),
            mean_conc,
            mean_pet,
            float(np.mean(les_conc - log_pet)),
        ]
        seen += float(np.sum(frac[les]))
    else:
        mean_conc = mean_pet = math.nan
        tumour = [math.nan] * 5
    kid_vol = float(sum(vol[i] for i, k in enumerate(cls_of) if k == "kidneys"))
    patient = np.array(
        [
            math.log(max(blood, _TINY)),
            math.log(max(bladder, _TINY)),
            math.log(max(body, _TINY)),
            *(math.log(max(organ_sum[c], _TINY)) for c in _ORGAN_CLASSES),
            math.log(kid_vol),
            math.log(float(vol[kin.index("liver")])),
            math.log(float(vol[kin.index("spleen")])),
            math.log1p(n_les),
            *tumour,
            math.log(max(body - seen, 1e-6)),
            math.log(inj),
            time_h,
        ]
    )
    les_pos = {int(r): j for j, r in enumerate(les)}
    out = np.empty((rows.size, len(FEATURE_NAMES)))
    out[:, 7:] = patient[None, :]
    for n, (i, cls) in enumerate(zip(rows, classes, strict=True)):
        f, v = float(frac[i]), float(vol[i])
        out[n, 0] = math.log(max(f, _TINY))
        out[n, 1] = math.log(v)
        out[n, 2] = out[n, 0] - out[n, 1]
        if cls == "lesions":
            j = les_pos[int(i)]
            site = kin.lesion_sites[j]
            out[n, 3] = _SITES.index(site) if site in _SITES else -1
            out[n, 4] = log_pet[j]
            out[n, 5] = out[n, 2] - mean_conc
            out[n, 6] = log_pet[j] - mean_pet
        else:
            out[n, 3:7] = (-1.0, 0.0, 0.0, 0.0)
    return out


def _noisy_activity(
    kin: PatientKinetics, activity: FloatArray, error: MeasurementError, rng: np.random.Generator
) -> FloatArray:
    """Measured activities: every region's true activity times its read-out error and the scan's calibration."""
    calib = math.exp(error.calibration_sd_log * float(rng.standard_normal()))
    out = activity.copy()
    eps = rng.standard_normal(len(kin.regions))
    for i, (r, k) in enumerate(zip(kin.regions, kin.kinds, strict=True)):
        if k == "excreta":
            continue
        rec, sd = error.recovery_and_sd(region_class(r), r, float(kin.volumes_ml[i]))
        out[i] = activity[i] * calib * rec * math.exp(sd * float(eps[i]))
    # The whole-body sum is measured as one number (its own error), not as the sum of the region read-outs.
    rec, sd = error.body
    body_rows = [i for i, k in enumerate(kin.kinds) if k != "excreta"]
    true_body = float(np.sum(activity[body_rows]))
    seen_body = true_body * calib * rec * math.exp(sd * float(rng.standard_normal()))
    # Put the whole-body reading into the rows no region read-out covers (interstitial, bowel, rest).
    unseen = [
        i for i in body_rows if region_class(kin.regions[i]) is None and kin.regions[i] not in ("blood", "bladder")
    ]
    seen = float(np.sum(out[[i for i in body_rows if i not in unseen]]))
    true_unseen = float(np.sum(activity[unseen]))
    scale = max(seen_body - seen, 1e-6 * true_body) / max(true_unseen, _TINY)
    out[unseen] = activity[unseen] * scale
    return out


def reference_inputs(
    kin: PatientKinetics,
    pet_lesion_factor: npt.ArrayLike,
    times_h: Sequence[float],
    rng: np.random.Generator,
    error: MeasurementError | None = None,
) -> ReferenceInputs:
    """The single-scan reference's inputs of one patient-cycle at every scan time in `times_h`.

    Args:
        kin: the patient-cycle's exact kinetics.
        pet_lesion_factor: PET uptake factor per lesion (lesion-row order; `sample_pet_lesion_factor`).
        times_h: nominal scan times (h, > 0).
        rng: the stream of the measurement errors (a stream of its own: the patient's draws stay unchanged).
        error: read-out error model of the noisy variant (default `MeasurementError()`).
    """
    err = error or MeasurementError()
    times = [float(t) for t in times_h]
    if not times or not all(math.isfinite(t) and t > 0 for t in times):
        raise InputError(f"reference scan times must be > 0 h, got {list(times_h)}")
    log_pet = _log(pet_lesion_factor)
    if log_pet.size != kin.lesion_rows.size:
        raise InputError(f"pet_lesion_factor has {log_pet.size} values for {kin.lesion_rows.size} lesions")
    rows = np.array([i for i, r in enumerate(kin.regions) if region_class(r) is not None], dtype=np.intp)
    regions = tuple(kin.regions[i] for i in rows)
    classes = tuple(str(region_class(r)) for r in regions)
    tia = np.asarray(kin.tia_mbq_h(), dtype=np.float64)[rows]
    s_val = np.asarray(kin.s_value_gy_per_mbq_h(), dtype=np.float64)[rows]
    act = kin.activity_mbq(np.array(times))
    scans = []
    for j, t in enumerate(times):
        a = act[:, j]
        noisy = _noisy_activity(kin, a, err, rng)
        scans.append(
            ScanFeatures(
                time_h=t,
                regions=regions,
                classes=classes,
                x_noise_free=_feature_rows(kin, a, rows, classes, log_pet, t),
                x_noisy=_feature_rows(kin, noisy, rows, classes, log_pet, t),
                activity_noise_free_mbq=a[rows].copy(),
                activity_noisy_mbq=noisy[rows].copy(),
                true_tia_mbq_h=tia,
                s_value_gy_per_mbq_h=s_val,
            )
        )
    return ReferenceInputs(cycle=int(kin.cycle), injected_mbq=float(kin.injected_mbq), scans=tuple(scans))
