"""Unit factors and the one SUV formula: every layer converts through these names, never a bare ``1e6``.

Activity images hold concentrations in Bq/mL, regions' activities are in MBq, TIA in MBq·h (docs/architecture.md "Units
inside ludl").
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError

__all__ = [
    "BQ_PER_MBQ",
    "FWHM_PER_SIGMA",
    "G_PER_KG",
    "MBQ_PER_BQ",
    "MBQ_PER_GBQ",
    "ML_PER_MM3",
    "S_PER_H",
    "bq_per_ml_from_suv",
    "suv_bw",
]

BQ_PER_MBQ = 1.0e6
MBQ_PER_BQ = 1.0e-6
MBQ_PER_GBQ = 1.0e3
G_PER_KG = 1.0e3
ML_PER_MM3 = 1.0e-3
S_PER_H = 3600.0
# A Gaussian's FWHM per standard deviation, 2√(2 ln 2) ≈ 2.3548 (resolution of a camera given as FWHM).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def suv_bw(concentration_bq_per_ml: npt.ArrayLike, weight_kg: float, injected_mbq: float) -> npt.NDArray[np.float64]:
    """Body-weight SUV: C[Bq/mL] · weight[g] / activity[Bq] (activity already decayed to the scan, QIBA)."""
    _check_positive(weight_kg, injected_mbq)
    return np.asarray(concentration_bq_per_ml, dtype=np.float64) * (weight_kg * G_PER_KG) / (injected_mbq * BQ_PER_MBQ)


def bq_per_ml_from_suv(suv: npt.ArrayLike, weight_kg: float, injected_mbq: float) -> npt.NDArray[np.float64]:
    """The inverse of `suv_bw`: concentration in Bq/mL of a body-weight SUV."""
    _check_positive(weight_kg, injected_mbq)
    return np.asarray(suv, dtype=np.float64) * (injected_mbq * BQ_PER_MBQ) / (weight_kg * G_PER_KG)


def _check_positive(weight_kg: float, injected_mbq: float) -> None:
    if not (weight_kg > 0 and injected_mbq > 0):
        raise InputError(f"SUV needs weight_kg > 0 and injected_mbq > 0, got {weight_kg} and {injected_mbq}")
