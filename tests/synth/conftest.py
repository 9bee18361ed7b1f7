"""Shared synthetic populations of the synth tests, each generated once per session.

The populations take tens of seconds, so every test that uses one is marked ``slow`` here (CI runs them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ludl.synth.cohort import SynthSummary, run_synth
from ludl.synth.kinetics import (
    PatientKinetics,
    patient_rng,
    sample_lesions,
    sample_patient_kinetics,
    sample_pet_lesion_factor,
)
from ludl.synth.priors import CohortPriors, default_priors, replace_priors
from ludl.synth.response import PatientResponse, simulate_response
from tests.synth.populations import (
    CLINICAL_N,
    CLINICAL_SEED,
    POPULATION_N,
    POPULATION_SEED,
    KineticsPopulation,
    draw_patient_with_response,
)

_SLOW_FIXTURES = frozenset({"clinical_cohort", "kinetics_population", "response_population", "response_population_s0"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use a shared population ``slow`` (a mark on a fixture has no effect)."""
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def kinetics_population() -> KineticsPopulation:
    """`POPULATION_N` patients of the default priors: cycle-1 kinetics and response."""
    priors = default_priors()
    pairs = [draw_patient_with_response(priors, POPULATION_SEED, i) for i in range(POPULATION_N)]
    return KineticsPopulation(priors=priors, kin=[k for k, _ in pairs], resp=[r for _, r in pairs])


@pytest.fixture(scope="session")
def clinical_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    """A written ``images=False`` clinical cohort of `CLINICAL_N` patients and its summary."""
    out = tmp_path_factory.mktemp("clinical_cohort")
    # The single-scan reference has tests of its own (test_reference.py); skipping it here saves its training.
    overrides = {"protocol": {"single_scan_reference": False}}
    summary = run_synth("clinical", CLINICAL_N, CLINICAL_SEED, out, images=False, workers=2, overrides=overrides)
    return out, summary


# Populations of the response tests: drawn as `ludl synth` draws them (PET factors before the response).
RESPONSE_N = 400
RESPONSE_SEED = 777


@dataclass(frozen=True, eq=False)
class ResponsePopulation:
    """Per patient: kinetics, lesion PET factors and response, in patient order (patients with lesions)."""

    priors: CohortPriors
    kin: list[PatientKinetics]
    pet: list[npt.NDArray[np.float64]]
    resp: list[PatientResponse]


def draw_response_population(priors: CohortPriors, n: int, seed: int) -> ResponsePopulation:
    """`n` patients (those without lesions left out): lesions, kinetics, PET factors, response."""
    kins, pets, resps = [], [], []
    for i in range(n):
        rng = patient_rng(seed, i)
        les = sample_lesions(rng, priors)
        kin = sample_patient_kinetics(rng, priors, les.n, les.volumes_ml, les.sites)
        if kin.lesion_rows.size == 0:
            continue
        pet = sample_pet_lesion_factor(rng, kin, priors)
        kins.append(kin)
        pets.append(pet)
        resps.append(simulate_response(rng, kin, priors, pet))
    return ResponsePopulation(priors=priors, kin=kins, pet=pets, resp=resps)


@pytest.fixture(scope="session")
def response_population() -> ResponsePopulation:
    """`RESPONSE_N` patients of the default priors, with PET factors and response."""
    return draw_response_population(default_priors(), RESPONSE_N, RESPONSE_SEED)


@pytest.fixture(scope="session")
def response_population_s0() -> ResponsePopulation:
    """The same patients at dose_response_strength 0 (the dose carries no information beyond PET)."""
    priors = replace_priors(default_priors(), {"response": {"dose_response_strength": 0.0}})
    return draw_response_population(priors, RESPONSE_N, RESPONSE_SEED)
