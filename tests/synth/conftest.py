"""Shared synthetic populations of the synth tests, each generated once per session.

The populations take tens of seconds, so every test that uses one is marked ``slow`` here (CI runs them all).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ludl.synth.cohort import SynthSummary, run_synth
from ludl.synth.priors import default_priors
from tests.synth.populations import (
    CLINICAL_N,
    CLINICAL_SEED,
    POPULATION_N,
    POPULATION_SEED,
    KineticsPopulation,
    draw_patient_with_response,
)

_SLOW_FIXTURES = frozenset({"clinical_cohort", "kinetics_population"})


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
    # The single-scan bound has tests of its own (test_bound.py); skipping it here halves the time.
    overrides = {"protocol": {"single_scan_bound": False}}
    summary = run_synth("clinical", CLINICAL_N, CLINICAL_SEED, out, images=False, workers=2, overrides=overrides)
    return out, summary
