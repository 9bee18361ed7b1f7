"""A tiny prepared cohort, written once per session (read-only for the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.learning_data.cohort import make_prepared


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six patients, three time points each, three folds (`tests.learning_data.cohort`)."""
    return make_prepared(tmp_path_factory.mktemp("prepared"))
