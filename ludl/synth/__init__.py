"""Synthetic mCRPC cohort: digital patients with images, true dose and response (`run_synth` writes one).

A patient without images::

    rng = patient_rng(seed, i)
    lesions = sample_lesions(rng, priors)
    kin = sample_patient_kinetics(
        rng, priors, lesions.n, lesions.volumes_ml, lesions.sites, diffuse_marrow=lesions.diffuse_marrow
    )
    response = simulate_response(rng, kin, priors)

A whole cohort in the institutional format (what `ludl synth` runs)::

    run_synth("tiny", n_patients=6, seed=1, out=Path("cohort"))
"""

from __future__ import annotations

from ludl.synth.cohort import SynthConfig, SynthSummary, generate_cohort, run_synth
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
from ludl.synth.presets import SynthPreset, get_preset
from ludl.synth.priors import CohortPriors, default_priors, replace_priors
from ludl.synth.response import PatientResponse, simulate_response

__all__ = [
    "CohortPriors",
    "CompartmentRates",
    "Lesions",
    "PatientKinetics",
    "PatientResponse",
    "SynthConfig",
    "SynthPreset",
    "SynthSummary",
    "closed_form_tia_h",
    "default_priors",
    "generate_cohort",
    "get_preset",
    "patient_rng",
    "replace_priors",
    "run_synth",
    "sample_lesions",
    "sample_next_cycle_kinetics",
    "sample_patient_kinetics",
    "sample_pet_lesion_factor",
    "simulate_response",
]
