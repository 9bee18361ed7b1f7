"""Scan-time odds of the training draw (`ludl.data.dataset.draw_timepoint`): uniform stream kept, odds honoured."""

from __future__ import annotations

import numpy as np
import pytest

from ludl.data.dataset import _checked_weights, draw_timepoint
from ludl.errors import InputError

TIMES_H = (4.0, 24.0, 48.0, 96.0, 168.0)


def test_no_weights_is_the_uniform_draw_of_before() -> None:
    # None must consume the generator exactly as `rng.integers(n)` did: same seed → the same cohort of patches
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert [draw_timepoint(TIMES_H, None, a) for _ in range(50)] == [int(b.integers(5)) for _ in range(50)]


def test_odds_of_the_listed_times_and_one_for_the_others() -> None:
    # 24 h weighs 3, 48 h 2, the rest 1: P(24 h) = 3/8, P(48 h) = 2/8, P(each other) = 1/8
    rng = np.random.default_rng(0)
    n = 8000
    counts = np.bincount([draw_timepoint(TIMES_H, {24.0: 3.0, 48.0: 2.0}, rng) for _ in range(n)], minlength=5)
    expected = np.array([1, 3, 2, 1, 1]) / 8 * n
    # binomial SD ≤ sqrt(n/4) ≈ 45: 5 SD bounds
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(n / 4))


def test_zero_weight_never_drawn_and_bad_weights_refused() -> None:
    rng = np.random.default_rng(1)
    drawn = {draw_timepoint(TIMES_H, {4.0: 0.0, 168.0: 0.0}, rng) for _ in range(500)}
    assert drawn == {1, 2, 3}
    with pytest.raises(InputError, match="timepoint_weights"):
        _checked_weights({24.0: -1.0})
    with pytest.raises(InputError, match="timepoint_weights"):
        _checked_weights({24.0: 0.0})
    assert _checked_weights({"24": 2}) == {24.0: 2.0}  # YAML keys may come as text or integers
