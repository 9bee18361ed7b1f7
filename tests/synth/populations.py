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


# Non-contrast CT numbers by tissue (HU), textbook Hounsfield tables (e.g. Bushberg et al., The Essential Physics
# of Medical Imaging): fat −120 to −80, muscle 35–55, liver 50–70 (unenhanced), spleen 40–55, kidney 25–45, blood
# 35–55, aerated lung −900 to −700, vertebral cancellous bone of elderly men 100–300.
PUBLISHED_HU_RANGES = {
    "fat": (-120.0, -80.0),
    "muscle": (35.0, 55.0),
    "liver": (50.0, 70.0),
    "spleen": (40.0, 55.0),
    "kidney_left": (25.0, 45.0),
    "blood_pool": (35.0, 55.0),
    "lung": (-900.0, -700.0),
    "red_marrow": (100.0, 300.0),
}


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
