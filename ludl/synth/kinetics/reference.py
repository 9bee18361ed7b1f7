"""The reference patient: rates calibrated to the priors' median organ doses and median T_eff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ludl.errors import InputError
from ludl.synth.kinetics.curves import PatientKinetics
from ludl.synth.kinetics.rates import (
    BOWEL,
    INTERSTITIAL,
    LN2,
    REST,
    CompartmentRates,
    decay_constant_per_h,
    release_rate_per_h,
    sphere_s_gy_per_mbq_h,
)
from ludl.synth.priors import SOFT_TISSUE_DENSITY_G_PER_ML, CohortPriors

__all__ = [
    "TUMOUR_CLASS",
    "ReferenceModel",
    "reference_model",
    "reference_rates",
]


@dataclass(frozen=True)
class ReferenceModel:
    """Rate constants of the reference patient (all factors 1), calibrated to the priors' median doses and T_eff."""

    organ_uptake: dict[str, float]
    organ_release: dict[str, float]
    organ_volume_ml: dict[str, float]
    lesion_uptake_per_ml: float
    lesion_release: float
    rest: tuple[float, float]
    bowel: tuple[float, float, float]
    interstitial: tuple[float, float]
    renal: float
    washout_t_eff_h: dict[str, float]


def reference_rates(priors: CohortPriors) -> dict[str, Any]:
    """Rate constants of the reference patient (every factor 1), as a plain dict (for reports and tests)."""
    ref = reference_model(priors)
    return {
        "organ_uptake_per_h": dict(ref.organ_uptake),
        "organ_release_per_h": dict(ref.organ_release),
        "lesion_uptake_per_h_per_ml": ref.lesion_uptake_per_ml,
        "lesion_release_per_h": ref.lesion_release,
        "rest_uptake_release_per_h": ref.rest,
        "bowel_uptake_release_leak_per_h": ref.bowel,
        "interstitial_uptake_release_per_h": ref.interstitial,
        "renal_per_h": ref.renal,
        "washout_t_eff_h": dict(ref.washout_t_eff_h),
    }


TUMOUR_CLASS = "_tumour"
_CALIBRATION_ITERATIONS = 12
_reference_cache: dict[str, ReferenceModel] = {}


def reference_model(priors: CohortPriors) -> ReferenceModel:
    """Reference-patient rates: median organ doses and median region T_eff of the priors, exactly.

    Uptake: c_j = a_j x_b is the decay-weighted activity delivered to j per injected MBq; a target TIA fixes
    c_j (TIA_j = c_j / (λ + b_j + l_j)), x_b follows from the blood balance and a_j = c_j / x_b (closed form).
    Washout: released activity comes back through blood and is partly taken up again, which flattens the
    peaks and lengthens the post-peak T_eff beyond the compartment's own washout; the washouts are therefore
    iterated (b ← shorter by target/realised) until the reference patient's realised T_eff are the medians.
    """
    key = repr(priors)
    if key not in _reference_cache:
        if len(_reference_cache) > 32:
            _reference_cache.clear()
        _reference_cache[key] = _calibrate_reference(priors)
    return _reference_cache[key]


def _calibrate_reference(priors: CohortPriors) -> ReferenceModel:
    lp = priors.lesions
    target = {r: o.t_eff_h for o in priors.organs for r in o.regions}
    target[TUMOUR_CLASS] = lp.t_eff_h
    washout = dict(target)
    ref = _reference_for_washout(priors, washout)
    for _ in range(_CALIBRATION_ITERATIONS):
        realised = _reference_t_eff(priors, ref)
        washout = {r: washout[r] * target[r] / realised[r] for r in washout}
        ref = _reference_for_washout(priors, washout)
    return ref


def _reference_t_eff(priors: CohortPriors, ref: ReferenceModel) -> dict[str, float]:
    """Post-peak T_eff of the reference patient (one tumour compartment of the reference tumour volume)."""
    organs = list(ref.organ_uptake)
    names = (INTERSTITIAL, *organs, BOWEL, REST, TUMOUR_CLASS)
    releases = [ref.organ_release[r] for r in organs]
    rates = CompartmentRates(
        names=names,
        uptake_per_h=np.array(
            [
                ref.interstitial[0],
                *(ref.organ_uptake[r] for r in organs),
                ref.bowel[0],
                ref.rest[0],
                ref.lesion_uptake_per_ml * priors.lesions.reference_tumour_volume_ml,
            ]
        ),
        release_per_h=np.array([ref.interstitial[1], *releases, ref.bowel[1], ref.rest[1], ref.lesion_release]),
        leak_per_h=np.array([0.0] * (len(organs) + 1) + [ref.bowel[2], 0.0, 0.0]),
        renal_per_h=np.asarray(ref.renal),
    )
    n = len(names) + 4
    kin = PatientKinetics.from_rates(
        rates,
        kinds=["background"] * n,
        volumes_ml=np.full(n, np.nan),
        lesion_sites=(),
        injected_mbq=1.0,
        void_times_h=np.zeros(0),
        void_residual_fraction=np.zeros(0),
    )
    return {r: float(kin.t_eff_h(r)) for r in (*organs, TUMOUR_CLASS)}


def _reference_for_washout(priors: CohortPriors, washout_t_eff_h: dict[str, float]) -> ReferenceModel:
    lam = decay_constant_per_h()
    floor = priors.structure.min_release_per_h
    cp, lp = priors.compartments, priors.lesions
    c: dict[str, float] = {}
    w: dict[str, float] = {}
    release: dict[str, float] = {}
    volume: dict[str, float] = {}
    for o in priors.organs:
        v_ml = o.mass_g / SOFT_TISSUE_DENSITY_G_PER_ML
        s = float(sphere_s_gy_per_mbq_h(v_ml))
        tia_h = o.dose_gy_per_gbq / 1000.0 / s
        for r in o.regions:
            b = float(release_rate_per_h(washout_t_eff_h[r], lam, floor))
            c[r], w[r], release[r], volume[r] = tia_h * (lam + b), lam / (lam + b), b, v_ml
    s_les = float(sphere_s_gy_per_mbq_h(lp.reference_lesion_volume_ml))
    b_les = float(release_rate_per_h(washout_t_eff_h[TUMOUR_CLASS], lam, floor))
    c_les_per_ml = lp.dose_gy_per_gbq / 1000.0 / (s_les * lp.reference_lesion_volume_ml) * (lam + b_les)
    c[TUMOUR_CLASS], w[TUMOUR_CLASS] = c_les_per_ml * lp.reference_tumour_volume_ml, lam / (lam + b_les)
    b_rest = float(release_rate_per_h(cp.rest_t_eff_h, lam, floor))
    c["_rest"], w["_rest"] = cp.rest_share, lam / (lam + b_rest)
    out_bowel = float(release_rate_per_h(cp.bowel_t_eff_h, lam, floor))
    l_bowel, b_bowel = cp.bowel_fecal_fraction * out_bowel, (1.0 - cp.bowel_fecal_fraction) * out_bowel
    c["_bowel"], w["_bowel"] = cp.bowel_share, (lam + l_bowel) / (lam + b_bowel + l_bowel)
    cw = sum(c[k] * w[k] for k in c)
    if not cw < 0.9:
        raise InputError(
            f"the priors send {cw:.2f} of the injected activity's blood clearance to tissue (≥ 0.9): lower organ "
            "doses, rest_share or reference_tumour_volume_ml"
        )
    k_u = cp.renal_rate_per_h
    mu_fast = -LN2 / cp.blood_distribution_half_life_h
    ratio = cp.interstitial_to_blood_ratio
    a_e = b_e = 0.0
    x_b = (1.0 - cw) / (lam + k_u)
    for _ in range(50):
        # Blood ⇄ interstitial rates so that the fast eigenvalue of the 2×2 blood/interstitial system, with
        # blood's other outflows, is the distribution half-life (Kabasakal 2017); fixed point in x_b.
        k_out = k_u + sum(c.values()) / x_b
        den = (1.0 + ratio) * mu_fast + k_out
        if not (mu_fast + k_out < 0 and den < 0):
            raise InputError(
                f"blood clearance {k_out:.2f}/h is too fast for a distribution half-life of "
                f"{cp.blood_distribution_half_life_h} h: lower renal_rate_per_h or organ uptake"
            )
        b_e = -mu_fast * (mu_fast + k_out) / den
        a_e = ratio * b_e
        x_b = (1.0 - cw) / (lam + k_u + a_e * lam / (lam + b_e))
    return ReferenceModel(
        organ_uptake={r: c[r] / x_b for r in release},
        organ_release=release,
        organ_volume_ml=volume,
        lesion_uptake_per_ml=c_les_per_ml / x_b * lp.uptake_calibration,
        lesion_release=b_les,
        rest=(c["_rest"] / x_b, b_rest),
        bowel=(c["_bowel"] / x_b, b_bowel, l_bowel),
        interstitial=(a_e, b_e),
        renal=k_u,
        washout_t_eff_h=dict(washout_t_eff_h),
    )
