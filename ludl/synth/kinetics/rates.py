"""Rate constants of the whole-body compartment model, its closed-form TIA and the next-cycle perturbation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.physics.dose import MGY_PER_MBQ_S_TO_GY_PER_MBQ_H
from ludl.physics.kernels import sphere_s_value_mgy_per_mbq_s
from ludl.physics.nuclides import get_nuclide
from ludl.synth.priors import KineticStructurePrior

__all__ = [
    "BLADDER",
    "BLOOD",
    "BOWEL",
    "DELIVERY_PREFIX",
    "EXCRETED_FECES",
    "EXCRETED_URINE",
    "INTERSTITIAL",
    "LN2",
    "NUCLIDE",
    "REST",
    "CompartmentRates",
    "FloatArray",
    "closed_form_tia_h",
    "decay_constant_per_h",
    "eigh",
    "expm1_over",
    "perturb_rates",
    "release_rate_per_h",
    "sphere_s_gy_per_mbq_h",
]


FloatArray = npt.NDArray[np.float64]

NUCLIDE = "Lu-177"
LN2 = math.log(2.0)

BLOOD = "blood"
INTERSTITIAL = "interstitial"
BOWEL = "bowel"
REST = "rest_of_body"
BLADDER = "bladder"
EXCRETED_URINE = "excreted_urine"
EXCRETED_FECES = "excreted_feces"
# Hidden compartments (a lesion's delivery pool, `LesionPrior.uptake_peak_h_range`): solved like any other, but
# counted in ``rest_of_body`` in every curve and integral (no image shows them apart from the diffuse background).
DELIVERY_PREFIX = "_delivery_"


def eigh(matrix: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Symmetric eigen-decomposition on one BLAS thread.

    These matrices are small (≤ ~170): threading gains nothing, and on a loaded 2-core machine OpenBLAS's
    threads made `eigh` 30–150× slower (measured 16 ms vs 0.2 ms at n = 40).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        w, v = np.linalg.eigh(matrix)
    return w, v


def decay_constant_per_h() -> float:
    """Physical decay constant of 177Lu (1/h)."""
    return get_nuclide(NUCLIDE).decay_constant_per_h


def sphere_s_gy_per_mbq_h(volume_ml: npt.ArrayLike) -> FloatArray:
    """Self-dose S value of a unit-density sphere of `volume_ml` (Gy per MBq·h)."""
    s: FloatArray = np.asarray(sphere_s_value_mgy_per_mbq_s(volume_ml), dtype=np.float64)
    return s * MGY_PER_MBQ_S_TO_GY_PER_MBQ_H


# --------------------------------------------------------------------------------------------- rates


@dataclass(frozen=True, eq=False)
class CompartmentRates:
    """Rate constants (1/h) of the compartment model; arrays may carry leading batch dimensions.

    Attributes:
        names: peripheral compartments (blood is the hub, not listed).
        uptake_per_h: blood → compartment, shape (..., n).
        release_per_h: compartment → blood, shape (..., n), > 0.
        leak_per_h: compartment → faeces, shape (..., n) (bowel only).
        renal_per_h: blood → bladder, shape (...).
        parent: per compartment, the compartment it exchanges with: −1 = blood, else its index in `names` (a
            tree; uptake is parent → compartment, release compartment → parent). None = every compartment
            exchanges with blood (the mammillary system of the default cohort).
    """

    names: tuple[str, ...]
    uptake_per_h: FloatArray
    release_per_h: FloatArray
    leak_per_h: FloatArray
    renal_per_h: FloatArray
    parent: tuple[int, ...] | None = None

    def depth_order(self) -> list[int]:
        """Compartment indices, deepest in the tree first (children before their parents)."""
        parent = self.parent if self.parent is not None else (-1,) * len(self.names)
        if len(parent) != len(self.names):
            raise InputError(f"parent needs one entry per compartment ({len(self.names)}), got {len(parent)}")
        n = len(parent)
        depth = []
        for j in range(n):
            d, p = 0, j
            while parent[p] != -1:
                if not 0 <= parent[p] < n or d >= n:
                    raise InputError("parent must form a tree rooted at blood (−1), with indices into names")
                p, d = parent[p], d + 1
            depth.append(d)
        return sorted(range(len(parent)), key=lambda j: -depth[j])

    def washout_t_eff_h(self, decay_constant_per_h: float) -> FloatArray:
        """Effective half-life of each compartment's own washout, ln2 / (λ + release + leak), in h."""
        t: FloatArray = LN2 / (decay_constant_per_h + self.release_per_h + self.leak_per_h)
        return t


def closed_form_tia_h(rates: CompartmentRates, decay_constant_per_h: float) -> tuple[FloatArray, FloatArray]:
    """TIA per injected MBq (h) of blood and of every peripheral compartment, in closed form.

    For a mammillary system with decay λ: x_j = a_j x_b / (λ + b_j + l_j) and
    x_b = 1 / (λ + k_u + Σ_j a_j (λ + l_j) / (λ + b_j + l_j)). Vectorised over leading batch dimensions.

    Returns:
        (blood TIA shape (...), peripheral TIAs shape (..., n)).
    """
    if rates.parent is not None:
        return _closed_form_tia_tree_h(rates, decay_constant_per_h)
    lam = decay_constant_per_h
    a, b, leak = rates.uptake_per_h, rates.release_per_h, rates.leak_per_h
    denom = lam + b + leak
    x_b: FloatArray = 1.0 / (lam + rates.renal_per_h + np.sum(a * (lam + leak) / denom, axis=-1))
    x_p: FloatArray = a * x_b[..., None] / denom
    return x_b, x_p


def _closed_form_tia_tree_h(rates: CompartmentRates, lam: float) -> tuple[FloatArray, FloatArray]:
    """`closed_form_tia_h` for a tree: children first, each compartment's TIA is h_j × its parent's.

    den_j = λ + b_j + l_j + Σ_children (a_c − b_c h_c), h_j = a_j / den_j (a leaf: a_j / (λ + b_j + l_j), as the
    mammillary formula); blood: x_b = 1 / (λ + k_u + Σ_its children (a_c − b_c h_c)).
    """
    a, b, leak = rates.uptake_per_h, rates.release_per_h, rates.leak_per_h
    parent = rates.parent or ()
    den = lam + b + leak
    h = np.zeros_like(den)
    blood_den = lam + np.asarray(rates.renal_per_h, dtype=np.float64)
    for j in rates.depth_order():
        h[..., j] = a[..., j] / den[..., j]
        back = a[..., j] - b[..., j] * h[..., j]
        if parent[j] == -1:
            blood_den = blood_den + back
        else:
            den[..., parent[j]] = den[..., parent[j]] + back
    x_b: FloatArray = 1.0 / blood_den
    x_p = np.zeros_like(h)
    for j in reversed(rates.depth_order()):
        x_p[..., j] = h[..., j] * (x_b if parent[j] == -1 else x_p[..., parent[j]])
    return x_b, x_p


def release_rate_per_h(t_eff_h: float | FloatArray, lam: float, floor: float) -> Any:
    """Biological release rate (1/h) that gives a compartment the effective half-life `t_eff_h`, at least `floor`."""
    return np.maximum(LN2 / np.asarray(t_eff_h) - lam, floor)


def perturb_rates(
    rng: np.random.Generator,
    rates: CompartmentRates,
    structure: KineticStructurePrior,
    size: int | None = None,
) -> CompartmentRates:
    """Next-cycle rates: the same compartments (stable lesion identities) with modest log-normal changes.

    Uptake and washout T_eff of every compartment but the interstitial fluid change by a patient-shared and
    a compartment-specific factor, the renal rate by its own factor (`structure.cycle_*`). With `size`, draws
    `size` independent next cycles at once (leading axis), as the response model's Monte Carlo needs.
    """
    lam = decay_constant_per_h()
    shape: tuple[int, ...] = () if size is None else (size,)
    n = len(rates.names)
    s, q = structure.cycle_shared_variance_fraction, 1.0 - structure.cycle_shared_variance_fraction
    z_u, z_t, z_r = rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape)
    e_u, e_t = rng.standard_normal((*shape, n)), rng.standard_normal((*shape, n))
    moving = np.array([name != INTERSTITIAL for name in rates.names], dtype=np.float64)
    log_u = structure.cycle_uptake_sigma_log * (math.sqrt(s) * z_u[..., None] + math.sqrt(q) * e_u) * moving
    log_t = structure.cycle_t_eff_sigma_log * (math.sqrt(s) * z_t[..., None] + math.sqrt(q) * e_t) * moving
    out = rates.release_per_h + rates.leak_per_h
    t_eff = LN2 / (lam + out) * np.exp(log_t)
    new_out = np.where(moving > 0, np.maximum(LN2 / t_eff - lam, structure.min_release_per_h), out)
    share = rates.release_per_h / out
    return CompartmentRates(
        names=rates.names,
        uptake_per_h=rates.uptake_per_h * np.exp(log_u),
        release_per_h=new_out * share,
        leak_per_h=new_out * (1.0 - share),
        renal_per_h=rates.renal_per_h * np.exp(structure.cycle_renal_sigma_log * z_r),
        parent=rates.parent,
    )


def expm1_over(mu: FloatArray, t: FloatArray) -> FloatArray:
    """(e^{μt} − 1)/μ for every (μ, t) pair, shape (n_mu, n_t), exact at μ → 0 (limit t)."""
    mt = np.multiply.outer(mu, t)
    small = np.abs(mu) < 1e-300
    safe = np.where(small, 1.0, mu)
    out: FloatArray = np.where(small[:, None], np.broadcast_to(t, mt.shape), np.expm1(mt) / safe[:, None])
    return out
