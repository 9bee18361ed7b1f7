"""Shared tiny cohorts and pipeline runs (session-scoped: each cohort is written and each run made once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.pipeline import DosimetryResult, run_dosimetry
from ludl.physics.dose import density_from_hu, dose_from_tia, voxel_tia_mbq_h
from ludl.physics.kernels import MEDIA, voxel_s_kernel
from tests.dosimetry import cohort_factory as cf


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One kernel cache folder for every run of the session."""
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture(scope="session")
def exact_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noise-free, unblurred, five time points, rigid shifts, two beds 1 h apart at 24 h and 96 h."""
    return cf.write_cohort(tmp_path_factory.mktemp("exact"), cf.CohortSpec(two_beds_at=(1, 3)))


@pytest.fixture(scope="session")
def blurred_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """True PSF 10.5 mm FWHM (nominal 10 mm, as a clinic would mismatch it), 5 % correlated noise."""
    return cf.write_cohort(tmp_path_factory.mktemp("blurred"), cf.CohortSpec(fwhm_true_mm=10.5, noise_cv=0.05))


@pytest.fixture(scope="session")
def run_cached(tmp_path_factory: pytest.TempPathFactory, kernel_cache: Path) -> Callable[..., DosimetryResult]:
    """run_dosimetry with memoised results per (cohort, options)."""
    cache: dict[tuple[object, ...], DosimetryResult] = {}

    def run(cohort: Path, **options: object) -> DosimetryResult:
        key = (str(cohort), *sorted(options.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("out")
            cache[key] = run_dosimetry(
                cohort,
                "P01",
                1,
                out,
                DosimetryOptions(kernel_cache_dir=kernel_cache, **options),  # type: ignore[arg-type]
            )
        return cache[key]

    return run


@pytest.fixture(scope="session")
def true_dose(kernel_cache: Path) -> npt.NDArray[np.float64]:
    """Dose of the exact TIA map with the same kernel and density (docs/physics.md §4) in the reference pose."""
    spacing = (cf.SPACING_MM,) * 3
    kernel = voxel_s_kernel(spacing, cache_dir=kernel_cache)
    return np.asarray(
        dose_from_tia(
            voxel_tia_mbq_h(cf.true_tia_map(), spacing),
            kernel,
            density_g_per_ml=density_from_hu(cf.ct_hu()),
            kernel_density_g_per_ml=MEDIA["soft_tissue"].density_g_per_ml,
        )
    )


def truth_mask(result: DosimetryResult, region: str) -> npt.NDArray[np.bool_]:
    """The analytic region (reference pose) matching one of the pipeline's region names."""
    index = cf.region_index()
    name = cf.lesion_names_by_truth(result.regions_map.labels, result.regions_map.values).get(region, region)
    if name == "body":
        return np.asarray(index == 1)
    return np.asarray(index == 2 + [r.name for r in cf.REGIONS].index(name))
