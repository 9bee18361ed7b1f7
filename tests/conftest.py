"""Shared fixtures: the reference data vendored in `tests/data/`, and a quiet environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Reference data sets (IBSI SUV objects, Lanconelli voxel S values) live in the repository with their licences:
# tests/data/README.md lists them. A missing folder is a broken checkout, so the tests fail instead of skipping.
TESTDATA = REPO_ROOT / "tests" / "data"


def require_testdata(*parts: str) -> Path:
    """Path of a vendored reference data set under `tests/data/`; fails the test (never skips) when it is missing."""
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"reference data {path} is missing: it is vendored in the repository (see tests/data/README.md); "
            "restore it with `git checkout -- tests/data`",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The vendored reference data folder `tests/data/` (fails when it is missing)."""
    return require_testdata()
