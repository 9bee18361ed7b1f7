"""Small cohorts for the staleness and crash-safety tests: analytic patients (`tests.dosimetry.cohort_factory`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from ludl.dosimetry.options import DosimetryOptions
from ludl.io.cohort import load_cohort_config, write_cohort_config
from ludl.io.manifest import ManifestRow, load_manifest, write_manifest
from tests.dosimetry import cohort_factory as cf

TPS = (0, 1, 2, 3)  # 4, 24, 48, 96 h


def write_cohort(root: Path, patients: Sequence[str] = ("P01", "P02"), seed: int = 0) -> Path:
    """A cohort of analytic patients (one folder each), one manifest; `seed` changes every image's noise."""
    rows: list[ManifestRow] = []
    for i, pid in enumerate(patients):
        spec = cf.CohortSpec(timepoint_indices=TPS, patient_id=pid, noise_cv=0.02, seed=seed * 100 + i)
        sub = cf.write_cohort(root / pid, spec)
        rows += [dataclasses.replace(r, line=0, path=f"{pid}/{r.path}") for r in load_manifest(sub)]
    write_cohort_config(load_cohort_config(root / patients[0]), root)
    write_manifest(rows, root)
    return root


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One kernel cache for every run of the session."""
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture
def options(kernels: Path) -> DosimetryOptions:
    """Fast ground-truth settings: region curves, no partial-volume correction."""
    return DosimetryOptions(tia_mode="region", pvc="none", kernel_cache_dir=kernels)
