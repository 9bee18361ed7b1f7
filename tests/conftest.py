"""Shared fixtures: paths to the reference data beside the repository, and a quiet environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TESTDATA = (REPO_ROOT / ".." / "shared" / "testdata").resolve()


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    """The reference data folder `../shared/testdata` (skips the test when it is not there)."""
    if not SHARED_TESTDATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_TESTDATA}")
    return SHARED_TESTDATA
