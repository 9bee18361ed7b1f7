"""Synthetic mCRPC cohort: priors, whole-body kinetics and the response model (the non-image core).

A patient without images::

    rng = patient_rng(seed, i)
    lesions = sample_lesions(rng, priors)
    kin = sample_patient_kinetics(rng, priors, lesions.n, lesions.volumes_ml, lesions.sites)
    response = simulate_response(rng, kin, priors)
"""

from __future__ import annotations

from ludl.synth.kinetics import (
    CompartmentRates,
    Lesions,
    PatientKinetics,
    closed_form_tia_h,
    patient_rng,
    sample_lesions,
    sample_next_cycle_kinetics,
    sample_patient_kinetics,
    sample_pet_lesion_factor,
)
from ludl.synth.priors import CohortPriors, default_priors, replace_priors
from ludl.synth.response import PatientResponse, simulate_response

__all__ = [
    "CohortPriors",
    "CompartmentRates",
    "Lesions",
    "PatientKinetics",
    "PatientResponse",
    "closed_form_tia_h",
    "default_priors",
    "patient_rng",
    "replace_priors",
    "sample_lesions",
    "sample_next_cycle_kinetics",
    "sample_patient_kinetics",
    "sample_pet_lesion_factor",
    "simulate_response",
]
