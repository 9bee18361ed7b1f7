"""register_timepoints / align_timepoints: known poses recovered, activity conserved, unregistrable CTs refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ludl.dosimetry.registration import TimepointRegistration, align_timepoints, register_timepoints
from ludl.dosimetry.timepoints import CycleData, load_cycle
from ludl.errors import GeometryError
from tests.dosimetry import cohort_factory as cf

Registered = tuple[CycleData, tuple[TimepointRegistration, ...]]


@pytest.fixture(scope="module")
def registered(exact_cohort: Path) -> Registered:
    data = load_cycle(exact_cohort, "P01", 1)
    registrations = register_timepoints(data, 1)
    return data, registrations


def test_recovers_the_known_shifts_within_one_voxel(registered: Registered) -> None:
    _, registrations = registered
    for reg, shift in zip(registrations, cf.SHIFTS_MM, strict=True):
        # The transform maps reference points to the moved patient: translation = the displacement.
        error = np.linalg.norm(np.asarray(reg.translation_mm) - np.asarray(shift))
        assert error <= cf.SPACING_MM, (reg.timepoint_h, reg.translation_mm, shift)
        assert max(abs(a) for a in reg.rotation_deg) < 1.0
        assert reg.flags == ()  # a rigid motion leaves nothing unexplained
    assert registrations[1].is_reference


def test_resampling_conserves_activity_and_restores_the_reference_pose(registered: Registered) -> None:
    data, registrations = registered
    grid = data.timepoints[1].spect
    aligned = align_timepoints(data, registrations, grid)
    for k, a in enumerate(aligned):
        # The body lies inside every field of view, so the total activity is unchanged by resampling.
        assert a.total_after_mbq == pytest.approx(a.total_before_mbq, rel=1e-3)
        expected = cf.activity_mbq_per_ml(cf.ACTUAL_H[k]) * 1e6  # reference pose, first-bed time
        body = cf.region_index() > 0
        core = body & (cf.region_index() != 1)
        # Inside the organs the moved-back activity equals the reference-pose activity of that time.
        ratio = np.asarray(a.activity.array)[core].sum() / expected[core].sum()
        assert ratio == pytest.approx(1.0, abs=0.03 if k in (1, 3) else 0.005)
        assert a.fov[body].all()


@pytest.mark.parametrize("bad", ["noise", "empty"])
def test_unregistrable_ct_is_refused(tmp_path: Path, bad: str) -> None:
    root = cf.write_cohort(tmp_path / "c", cf.CohortSpec(timepoint_indices=(1, 2), bad_ct_at=2, bad_ct=bad))
    data = load_cycle(root, "P01", 1)
    with pytest.raises(GeometryError, match=r"ct 'images/ct_48h.nii.gz' \(manifest.csv line 5\) cannot be registered"):
        register_timepoints(data, 0)
