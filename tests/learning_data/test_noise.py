"""Count-noise resampling against binomial thinning of Poisson counts, simulated here with NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from ludl.data.noise import count_noise_variance, counts_per_mbq_per_ml, resample_counts
from ludl.errors import InputError


@pytest.mark.parametrize("n_counts", [6, 150])  # a gamma draw (few counts) and a Gaussian one (many)
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_mean_kept_and_variance_that_of_poisson_thinning(fraction: float, n_counts: int) -> None:
    k = 200.0  # counts per MBq/mL; an observed voxel with n_counts counts has a = n_counts / k
    a = n_counts / k
    n = 400_000
    rng = np.random.default_rng(3)
    noisy = resample_counts(np.full(n, a, dtype=np.float32), fraction, k, rng).astype(np.float64)
    # The reference, outside the code: keep each of the 150 counts with probability f, rescale by 1/(f·k).
    thinned = rng.binomial(n_counts, fraction, size=n) / (fraction * k)
    variance = a * (1 - fraction) / (fraction * k)
    assert thinned.var() == pytest.approx(variance, rel=0.02)
    assert noisy.mean() == pytest.approx(a, abs=5 * np.sqrt(variance / n))
    assert noisy.var() == pytest.approx(thinned.var(), rel=0.03)
    assert count_noise_variance(a, fraction, k) == pytest.approx(variance)
    assert noisy.min() >= 0.0


def test_full_counts_and_empty_voxels_are_unchanged() -> None:
    a = np.array([0.0, 0.0, 1.5, 2.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(resample_counts(a, 1.0, 100.0, rng), a)
    assert np.all(resample_counts(a, 0.3, 100.0, rng)[:2] == 0.0)


def test_counts_per_unit_is_voxel_volume_times_sensitivity_times_time() -> None:
    # 4 mm voxels (0.064 mL), 9.4 cps/MBq, 1200 s: 1 MBq/mL in a voxel is 0.064 MBq → 0.064 · 9.4 · 1200 counts.
    assert counts_per_mbq_per_ml(0.064, 9.4, 1200.0) == pytest.approx(721.92)
    with pytest.raises(InputError, match="sensitivity"):
        counts_per_mbq_per_ml(0.064, 0.0, 1200.0)
    with pytest.raises(InputError, match="count_fraction_range"):
        resample_counts(np.ones(3), 0.0, 10.0, np.random.default_rng(0))
