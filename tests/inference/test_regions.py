"""Region-table pieces checked against closed forms: the effective half-life implied by a TIA and one scan."""

from __future__ import annotations

import math

import pytest

from ludl.inference.regions import effective_half_life_h


@pytest.mark.parametrize(("half_life_h", "time_h"), [(60.0, 24.0), (30.0, 4.0), (150.0, 96.0), (40.0, 20.0)])
def test_effective_half_life_of_a_mono_exponential(half_life_h: float, time_h: float) -> None:
    lam = math.log(2.0) / half_life_h
    # A(s) = A0 e^(−λs): ∫₀^∞ A = A0/λ and A(t) = A0 e^(−λt), so τ = TIA / A(t) = e^(λt)/λ
    tau_h = math.exp(lam * time_h) / lam
    if lam < 1.0 / time_h:  # the slow-clearance root is the one reported
        assert effective_half_life_h(tau_h, time_h) == pytest.approx(half_life_h, rel=1e-6)


def test_no_mono_exponential_below_e_times_t() -> None:
    assert math.isnan(effective_half_life_h(2.0 * 24.0, 24.0))  # τ < e·t: no curve from injection fits


def test_lesion_specks_below_the_minimum_volume_become_background() -> None:
    import numpy as np

    from ludl.inference.predictor import drop_small_lesions
    from ludl.io.regions import SEGMENTATION_CLASSES

    lesion = next(c.index for c in SEGMENTATION_CLASSES if c.kind == "lesion")
    organ = next(c.index for c in SEGMENTATION_CLASSES if c.kind == "organ")
    classes = np.zeros((20, 20, 20), dtype=np.int32)
    classes[2:6, 2:6, 2:6] = lesion  # 64 voxels of 4.8 mm: 7.1 mL, kept
    classes[10, 10, 10] = lesion  # one voxel: 0.11 mL, dropped
    classes[15, 15, 15] = lesion  # and another, diagonal to the next: one 26-connected component of 2 voxels
    classes[16, 16, 16] = lesion
    classes[10:14, 2:4, 2:4] = organ
    out, n = drop_small_lesions(classes, (4.8, 4.8, 4.8), 0.5)
    assert n == 2
    assert (out == lesion).sum() == 64 and (out == organ).sum() == 16
    assert out[10, 10, 10] == 0 and out[15, 15, 15] == 0
    same, none = drop_small_lesions(classes, (4.8, 4.8, 4.8), 0.0)
    assert none == 0 and same is classes


def test_organs_with_a_correction_beyond_three_times_are_flagged_not_changed() -> None:
    from ludl.inference.predictor import MAX_ORGAN_CORRECTION, flag_large_corrections

    rows = [
        {"region": "spleen", "kind": "organ", "source": "network", "mean_dose_gy": 41.2, "correction_factor": 7.2,
         "scored": True, "flags": ""},
        {"region": "kidney_left", "kind": "organ", "source": "network", "mean_dose_gy": 9.3, "correction_factor": 1.9,
         "scored": True, "flags": ""},
        {"region": "lesion_001", "kind": "lesion", "source": "network", "mean_dose_gy": 29.3, "correction_factor": 4.1,
         "scored": True, "flags": ""},
    ]  # fmt: skip
    warnings = flag_large_corrections(rows)
    assert MAX_ORGAN_CORRECTION == 3.0 and len(warnings) == 1 and warnings[0].startswith("spleen")
    assert "×7.2" in rows[0]["flags"] and rows[0]["mean_dose_gy"] == 41.2 and rows[0]["scored"] is True
    assert rows[1]["flags"] == "" and rows[2]["flags"] == ""  # kidneys within range; lesions are not judged this way
