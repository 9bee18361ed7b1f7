"""The lesion uptake phase (`LesionPrior.uptake_peak_h_range`): each lesion fed through a delivery pool of its own.

Blood ⇄ pool ⇄ lesion, the pool counted in ``rest_of_body``: the lesion's activity keeps rising for a lesion-specific
time (docs/synthetic-cohort.md, "Lesions" and "The lesion uptake phase"). Off by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.synth.kinetics.rates import DELIVERY_PREFIX, CompartmentRates, FloatArray, decay_constant_per_h
from ludl.synth.priors import LesionPrior, range_sigma_log

__all__ = ["DeliveryPools", "draw_delivery_pools", "lesion_compartment_rates", "uptake_rate_for_peak_per_h"]


@dataclass(frozen=True, eq=False)
class DeliveryPools:
    """Per lesion (1/h): the delivery pool's uptake from blood, release to blood, transfer to the lesion, the
    lesion's release into the pool; and the drawn time to peak (h)."""

    uptake_per_h: FloatArray
    release_per_h: FloatArray
    transfer_per_h: FloatArray
    lesion_release_per_h: FloatArray
    peak_h: FloatArray


def uptake_rate_for_peak_per_h(peak_h: npt.ArrayLike, washout_per_h: npt.ArrayLike) -> FloatArray:
    """Rate K (1/h) at which A(t) ∝ e^{−Bt} − e^{−Kt} peaks at `peak_h`: ln(K/B)/(K − B) = t, K > B.

    B is the lesion's washout with decay (λ + release). The peak time falls with K from 1/B (K → B), so a
    target at or beyond 1/B is held at 0.95/B (the latest peak a lesion of that retention can have).
    """
    t = np.asarray(peak_h, dtype=np.float64)
    big_b = np.broadcast_to(np.asarray(washout_per_h, dtype=np.float64), t.shape)
    if not (np.all(t > 0) and np.all(big_b > 0)):
        raise InputError("peak times and washout rates must be > 0")
    t = np.minimum(t, 0.95 / big_b)
    lo, hi = np.log(big_b) + 1e-9, np.full(t.shape, math.log(100.0))
    for _ in range(80):  # bisection on log K: the peak time is monotonic in K
        mid = 0.5 * (lo + hi)
        k = np.exp(mid)
        late = np.log(k / big_b) / (k - big_b) > t
        lo, hi = np.where(late, mid, lo), np.where(late, hi, mid)
    out: FloatArray = np.exp(0.5 * (lo + hi))
    return out


# The pool fills from a blood curve that lasts hours, and the lesion's activity keeps coming back from its pool:
# realised peaks come later than the two-exponential peak of `uptake_rate_for_peak_per_h`, by this factor at the
# median (measured on 150 default patients with the range (12, 48) h: 1.40; tests/synth/test_kinetics_uptake.py).
_PEAK_DELAY_FACTOR = 1.4


def draw_delivery_pools(
    rng: np.random.Generator, lp: LesionPrior, a_les: FloatArray, b_les: FloatArray
) -> DeliveryPools | None:
    """Delivery pools of the lesion uptake phase (`LesionPrior.uptake_peak_h_range`; None when it is off).

    Pool outflow K − λ (K from the drawn peak time and the lesion washout λ + b), a share φ of it into the lesion
    (k), the rest back to blood; uptake from blood a_d = a (λ + b_d + kλ/(λ + b))/k gives the lesion the TIA per
    blood TIA it would have had without the pool (tree closed form), so lesion doses stay near the calibration.
    """
    if lp.uptake_peak_h_range is None:
        return None
    lo_h, hi_h = lp.uptake_peak_h_range
    f_pat, phi = lp.uptake_peak_patient_variance_fraction, lp.uptake_delivery_fraction
    if not (0.0 <= f_pat <= 1.0 and 0.0 < phi < 1.0):
        raise InputError(
            "lesions.uptake_peak_patient_variance_fraction must be in [0, 1] and uptake_delivery_fraction in (0, 1), "
            f"got {f_pat}, {phi}"
        )
    lam = decay_constant_per_h()
    n = a_les.size
    z = math.sqrt(f_pat) * float(rng.standard_normal()) + math.sqrt(1.0 - f_pat) * rng.standard_normal(n)
    peak_h = math.sqrt(lo_h * hi_h) * np.exp(range_sigma_log(lo_h, hi_h) * z)
    big_k = uptake_rate_for_peak_per_h(peak_h / _PEAK_DELAY_FACTOR, lam + b_les)
    out = np.maximum(big_k - lam, 1e-6)
    k, b_d = phi * out, (1.0 - phi) * out
    # The lesion releases into its pool, which hands a share k/K back: release faster by 1/(1 − k/K) so the
    # lesion's net washout stays near the drawn one (the pool's late feed still lengthens the post-peak T_eff:
    # median 71 → 86 h with peaks 12–48 h, docs/synthetic-cohort.md "Lesions").
    b_l = b_les / (1.0 - k / big_k)
    den_d = lam + b_d + k * lam / (lam + b_l)
    a_d = a_les * den_d * (lam + b_l) / (k * (lam + b_les))
    return DeliveryPools(uptake_per_h=a_d, release_per_h=b_d, transfer_per_h=k, lesion_release_per_h=b_l, peak_h=peak_h)


def lesion_compartment_rates(
    names: Sequence[str],
    organ_names: Sequence[str],
    organ_uptake_per_h: npt.ArrayLike,
    organ_release_per_h: npt.ArrayLike,
    organ_leak_per_h: npt.ArrayLike,
    lesion_uptake_per_h: FloatArray,
    lesion_release_per_h: FloatArray,
    renal_per_h: float,
    pools: DeliveryPools | None,
) -> CompartmentRates:
    """The patient's exchange rates: organs and lesions around blood, or (with `pools`) each lesion behind its pool."""
    n_lesions = lesion_uptake_per_h.size
    if pools is None:
        return CompartmentRates(
            names=tuple(names),
            uptake_per_h=np.concatenate([organ_uptake_per_h, lesion_uptake_per_h]),
            release_per_h=np.concatenate([organ_release_per_h, lesion_release_per_h]),
            leak_per_h=np.concatenate([organ_leak_per_h, np.zeros(n_lesions)]),
            renal_per_h=np.asarray(renal_per_h),
        )
    # Lesion j exchanges with its pool (after every visible compartment), the pool with blood.
    n_vis = len(names)
    return CompartmentRates(
        names=(*names, *(f"{DELIVERY_PREFIX}{i + 1:03d}" for i in range(n_lesions))),
        uptake_per_h=np.concatenate([organ_uptake_per_h, pools.transfer_per_h, pools.uptake_per_h]),
        release_per_h=np.concatenate([organ_release_per_h, pools.lesion_release_per_h, pools.release_per_h]),
        leak_per_h=np.concatenate([organ_leak_per_h, np.zeros(2 * n_lesions)]),
        renal_per_h=np.asarray(renal_per_h),
        parent=(*[-1] * len(organ_names), *(n_vis + i for i in range(n_lesions)), *[-1] * n_lesions),
    )
