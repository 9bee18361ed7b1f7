"""The low-dose CT of SPECT/CT: noise from published values, scaled by voxel volume, and HU by tissue in the image.

Published values: the CT of SPECT/CT is taken at ≈ 40 mAs (Gupta et al. 2017, 110 kVp / 40 mAs; Grosser et al.
2019, 120 kV / 40 mA); Pontana et al. 2015 measured 17.7 HU image noise at 120 kVp / 110 mAs (FBP); quantum noise
SD ∝ 1/√mAs and, for noise averaged over a voxel, ∝ 1/√(voxel volume). Tissue CT numbers: textbook non-contrast
Hounsfield values (as in test_anatomy.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ludl.imaging.resample import grid_with_spacing
from ludl.imaging.volume import Volume
from ludl.synth.anatomy import Anatomy, AnatomySpec, make_anatomy
from ludl.synth.imaging.ct import low_dose_ct_noise_hu, simulate_ct
from ludl.synth.kinetics import Lesions
from ludl.synth.pose import Pose
from tests.synth.populations import PUBLISHED_HU_RANGES

# Pontana 2015 noise at 110 mAs, rescaled to the 40 mAs of SPECT/CT, read at a 5 mm × 0.98² mm voxel.
_PUBLISHED_NOISE_HU = 17.66 * math.sqrt(110.0 / 40.0)
_REFERENCE_SPACING = (5.0, 500.0 / 512.0, 500.0 / 512.0)


def _uniform(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    return Volume(np.full(shape, 40.0, dtype=np.float32), spacing_zyx_mm=spacing, origin_xyz_mm=(0.0, 0.0, 0.0))


@pytest.mark.parametrize(
    ("truth_spacing", "ct_spacing"),
    [
        ((5.0, 500.0 / 512.0, 500.0 / 512.0), _REFERENCE_SPACING),
        ((3.0, 3.0, 3.0), (6.0, 6.0, 6.0)),
        ((2.4, 2.4, 2.4), (4.8, 4.8, 4.8)),
    ],
)
def test_noise_is_the_published_low_dose_level_at_the_voxel_size(
    truth_spacing: tuple[float, float, float], ct_spacing: tuple[float, float, float]
) -> None:
    truth = _uniform((40, 120, 120), truth_spacing)
    grid = grid_with_spacing(truth, ct_spacing)
    image = simulate_ct(truth, grid, Pose.identity(), np.random.default_rng(3))
    inner = image.array[3:-3, 5:-5, 5:-5]
    ratio = math.prod(_REFERENCE_SPACING) / math.prod(ct_spacing)
    expected = _PUBLISHED_NOISE_HU * math.sqrt(ratio)
    assert low_dose_ct_noise_hu(ct_spacing) == pytest.approx(expected, rel=1e-3)
    assert float(inner.mean()) == pytest.approx(40.0, abs=1.0)
    assert float(inner.std()) == pytest.approx(expected, rel=0.1)


def test_explicit_noise_level_overrides_the_published_one() -> None:
    truth = _uniform((20, 60, 60), (3.0, 3.0, 3.0))
    image = simulate_ct(
        truth, grid_with_spacing(truth, (3.0, 3.0, 3.0)), Pose.identity(), np.random.default_rng(0), noise_hu=0.0
    )
    assert np.allclose(image.array[2:-2, 2:-2, 2:-2], 40.0, atol=1e-3)


# Homogeneous soft tissues vary by ≲ 10 HU within an organ on unenhanced CT (assumption read from the same
# tables' ranges); the image adds the scanner noise on top.
_SOFT_TISSUE_SPREAD_HU = 10.0

DEMO = AnatomySpec((192, 128, 128), (3.0, 3.0, 3.0), "torso")


@pytest.fixture(scope="module")
def ct_population() -> list[tuple[Anatomy, np.ndarray, np.ndarray, np.ndarray]]:
    """Three demo patients: anatomy, their low-dose CT on the demo SPECT grid (6 mm), each CT voxel's label where
    all 2×2×2 truth voxels under it agree (−1 at tissue boundaries) and the truth HU range (min, max) under it."""
    out = []
    none = Lesions(volumes_ml=np.zeros(0), sites=())
    for seed in (4, 5, 6):
        a = make_anatomy(np.random.default_rng(seed), DEMO, none)
        grid = grid_with_spacing(a.hu, (6.0, 6.0, 6.0))  # voxel i covers truth voxels 2i, 2i + 1 on each axis
        ct = simulate_ct(a.hu, grid, Pose.identity(), np.random.default_rng(100 + seed)).array
        nz, ny, nx = ct.shape

        def blocks(arr: np.ndarray, n: tuple[int, int, int] = (nz, ny, nx)) -> np.ndarray:
            b = arr[: 2 * n[0], : 2 * n[1], : 2 * n[2]].reshape(n[0], 2, n[1], 2, n[2], 2)
            return b.transpose(0, 2, 4, 1, 3, 5).reshape(*n, 8)

        lab = blocks(a.labels.array)
        pure = np.where(np.all(lab == lab[..., :1], axis=-1), lab[..., 0], -1)
        hu = blocks(a.hu.array)
        out.append((a, ct, pure, np.stack([hu.min(axis=-1), hu.max(axis=-1)])))
    return out


def test_ct_hu_by_tissue_mean_and_sd_in_the_low_dose_image(
    ct_population: list[tuple[Anatomy, np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    noise = low_dose_ct_noise_hu((6.0, 6.0, 6.0))
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in PUBLISHED_HU_RANGES}
    sds: dict[str, list[float]] = {k: [] for k in ("muscle", "liver", "spleen", "kidney_left")}
    for a, ct, pure, (lo_hu, hi_hu) in ct_population:
        lv = a.label_values
        rest = pure == lv["rest_of_body"]
        # Fat and muscle share one label; the truth CT numbers under a voxel tell them apart (no mixed voxels).
        masks = {"fat": rest & (hi_hu < -30.0), "muscle": rest & (lo_hu >= -30.0) & (hi_hu < 150.0)}
        masks.update({k: pure == lv[k] for k in PUBLISHED_HU_RANGES if k in lv})
        for name, m in masks.items():
            assert m.sum() >= 20, name
            pooled[name].append(ct[m])
            if name in sds:
                sds[name].append(float(ct[m].std()))
    for name, (lo, hi) in PUBLISHED_HU_RANGES.items():
        assert lo <= float(np.mean(np.concatenate(pooled[name]))) <= hi, name
    # Each organ's SD in the image: at least the published scanner noise at this voxel, at most that noise plus
    # the within-organ spread of unenhanced soft tissue.
    for name, values in sds.items():
        for sd in values:
            assert 0.9 * noise <= sd <= math.hypot(noise, _SOFT_TISSUE_SPREAD_HU), (name, sd, noise)
