"""True PSMA PET SUV map of a patient on the truth grid: tissue SUVs (per tracer) × the anatomy's PET texture."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.synth.kinetics import PatientKinetics
from ludl.synth.priors import CohortPriors

__all__ = ["pet_suv_truth"]

FloatArray = npt.NDArray[np.float64]

# Normal-tissue PET SUVmean for 18F-DCFPyL (Li 2017 JNM: kidney 20 ± 4.6, parotid 9 ± 2, submandibular 9.5 ± 2.3,
# lacrimal 6.5 ± 1.8, liver 5.0 ± 0.7, spleen 4.0 ± 1.5); the other tissues are assumptions (blood pool 1.5,
# marrow 1.2, bone 0.8, bowel 2.5, urine 15, lung 0.3, soft tissue 0.6). Tumour SUVmean median 7.6 (Kuo 2024).
_PET_SUV: Mapping[str, tuple[float, float]] = {
    "kidney": (20.0, 4.6),
    "parotid": (9.0, 2.0),
    "submandibular": (9.5, 2.3),
    "lacrimal": (6.5, 1.8),
    "liver": (5.0, 0.7),
    "spleen": (4.0, 1.5),
    "red_marrow": (1.2, 0.3),
}
_PET_BACKGROUND_SUV: Mapping[str, float] = {
    "blood_pool": 1.5,
    "marrow_other": 1.2,
    "bone": 0.8,
    "bowel": 2.5,
    "bladder": 15.0,
    "lung": 0.3,
    "rest_of_body": 0.6,
}
_PET_TUMOUR_SUV = 7.6
# 68Ga-PSMA-11 vs 18F-DCFPyL: SUVs differ 2–3× between tracers at SUVmax (docs/synthetic-cohort.md); SUVmean ratio
# assumed 0.7 for normal organs and 0.9 for tumour, so models must normalise per tracer.
_GA_ORGAN_FACTOR = 0.7
_GA_TUMOUR_FACTOR = 0.9
# Correlation of an organ's PET SUV with its 177Lu uptake factor (assumption: PET shows expression).
_PET_ORGAN_UPTAKE_CORRELATION = 0.7


def pet_suv_truth(
    anatomy: Any,
    kinetics: PatientKinetics,
    priors: CohortPriors,
    pet_factor: FloatArray,
    tracer: str,
    rng: np.random.Generator,
) -> Any:
    """True SUV map on the truth grid: tissue SUVs × the anatomy's PET texture (`pet_weight`)."""
    lab = np.asarray(anatomy.labels.array)
    values: Mapping[str, int] = anatomy.label_values
    ga = "Ga" in tracer
    lut = np.zeros(int(lab.max()) + 1, dtype=np.float64)
    for name, suv in _PET_BACKGROUND_SUV.items():
        if name in values:
            lut[values[name]] = suv * (_GA_ORGAN_FACTOR if ga else 1.0)
    log_u = np.asarray(kinetics.latent["uptake_log_factor"], dtype=np.float64)
    st = priors.structure
    rho = _PET_ORGAN_UPTAKE_CORRELATION
    for o in priors.organs:
        median, sd = _PET_SUV[o.name]
        s_pet = math.log1p((sd / median) ** 2) ** 0.5
        s_u = o.uptake_sigma_log_effective(st.uptake_t_eff_correlation, st.organ_dose_other_sigma_log)
        for r in o.regions:
            z_u = log_u[kinetics.index(r) - 1] / s_u
            suv = median * math.exp(s_pet * (rho * z_u + math.sqrt(1 - rho**2) * rng.standard_normal()))
            if r in values:
                lut[values[r]] = suv * (_GA_ORGAN_FACTOR if ga else 1.0)
    for j, r in enumerate(kinetics.lesion_regions):
        if r in values:
            lut[values[r]] = _PET_TUMOUR_SUV * float(pet_factor[j]) * (_GA_TUMOUR_FACTOR if ga else 1.0)
    weight = np.asarray(anatomy.pet_weight, dtype=np.float64).reshape(lab.shape)
    suv_map = lut[np.clip(lab, 0, None)] * weight
    return anatomy.labels.with_array(suv_map.astype(np.float32), unit="SUV")
