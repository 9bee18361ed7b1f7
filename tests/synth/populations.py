"""Helpers the synth tests share (not a test module): drawing patients and the shared populations' sizes and seeds."""

from __future__ import annotations

from dataclasses import dataclass

from ludl.synth.kinetics import PatientKinetics, patient_rng, sample_lesions, sample_patient_kinetics
from ludl.synth.priors import CohortPriors
from ludl.synth.response import PatientResponse, simulate_response

# The in-memory population (default priors): cycle-1 kinetics and the response of each patient.
POPULATION_N = 300
POPULATION_SEED = 4242
# The written ``images=False`` cohort of the clinical preset (lesion cap 150), without the single-scan reference.
CLINICAL_N = 300
CLINICAL_SEED = 2026


def draw_patient(priors: CohortPriors, seed: int, i: int, injected_mbq: float | None = None) -> PatientKinetics:
    """Patient `i` of cohort `seed`: lesions and cycle-1 kinetics, as the cohort generator draws them."""
    rng = patient_rng(seed, i)
    les = sample_lesions(rng, priors)
    return sample_patient_kinetics(
        rng, priors, les.n, les.volumes_ml, les.sites, injected_mbq=injected_mbq, diffuse_marrow=les.diffuse_marrow
    )


def draw_patient_with_response(priors: CohortPriors, seed: int, i: int) -> tuple[PatientKinetics, PatientResponse]:
    """`draw_patient` and then the response, from the same generator (the kinetics are the same as without)."""
    rng = patient_rng(seed, i)
    les = sample_lesions(rng, priors)
    kin = sample_patient_kinetics(rng, priors, les.n, les.volumes_ml, les.sites, diffuse_marrow=les.diffuse_marrow)
    return kin, simulate_response(rng, kin, priors)


@dataclass(frozen=True, eq=False)
class KineticsPopulation:
    """The shared in-memory population: per patient its kinetics and response, in patient order."""

    priors: CohortPriors
    kin: list[PatientKinetics]
    resp: list[PatientResponse]
