"""The numpy array namespace for the TAC fitting core (`ludl.physics._fit_torch` is the torch one).

Private module: `ludl.physics.kinetics` is the public entry point. The fitting core (`ludl.physics._fit_core`)
is written once against this tiny namespace, so numpy and torch run the same algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Array", "NumpyXp"]

Array = Any  # a numpy ndarray or a torch Tensor, depending on the backend


class NumpyXp:
    """The array operations the fitting core needs, for numpy."""

    name = "numpy"
    # Rows per block of the starting-grid scores: (1024, ~120) float64 stays in L2 until its argmax (measured on
    # 32 k curves: 6.6 ms in blocks against 14.5 ms for the whole table).
    grid_rows = 1024

    def __init__(self, dtype: Any = np.float64) -> None:
        self.dtype = np.dtype(dtype)
        self.eps = float(np.finfo(self.dtype).eps)
        self.tiny = float(np.finfo(self.dtype).tiny)

    def asarray(self, x: Any) -> Array:
        return np.asarray(x, dtype=self.dtype)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def exp(self, x: Array) -> Array:
        return np.exp(x)

    def log(self, x: Array) -> Array:
        return np.log(x)

    def abs(self, x: Array) -> Array:
        return np.abs(x)

    def where(self, cond: Array, a: Any, b: Any) -> Array:
        return np.where(cond, a, b)

    def clip(self, x: Array, lo: Any, hi: Any) -> Array:
        return np.minimum(np.maximum(x, lo), hi)

    def maximum(self, a: Array, b: Any) -> Array:
        return np.maximum(a, b)

    def minimum(self, a: Array, b: Any) -> Array:
        return np.minimum(a, b)

    def rowsum(self, x: Array) -> Array:
        # Curves have a handful of samples: numpy's reduction over a short last axis costs ~7× adding the columns
        # (same left-to-right order, so the same result bit for bit as numpy's sum below 8 terms).
        if x.ndim == 2 and x.shape[1] <= 8:
            out = x[:, 0].copy()
            for k in range(1, x.shape[1]):
                out += x[:, k]
            return out
        return x.sum(axis=-1)

    def colsum(self, x: Array) -> Array:
        # The core keeps curves in columns (T, N): adding the T contiguous rows is numpy's axis-0 order too.
        if x.ndim == 2 and x.shape[0] <= 8:
            out = x[0].copy()
            for k in range(1, x.shape[0]):
                out += x[k]
            return out
        return x.sum(axis=0)

    def transpose(self, x: Array) -> Array:
        """(N, T) → (T, N), contiguous."""
        return np.ascontiguousarray(x.T, dtype=self.dtype)

    def rowmax(self, x: Array) -> Array:
        return x.max(axis=-1)

    def argmax(self, x: Array) -> Array:
        return x.argmax(axis=-1)

    def take(self, x: Array, index: Array) -> Array:
        return x[index]

    def full(self, n: int, value: float) -> Array:
        return np.full(n, value, dtype=self.dtype)

    def zeros(self, n: int) -> Array:
        return np.zeros(n, dtype=self.dtype)

    def full_int(self, n: int, value: int) -> Array:
        return np.full(n, value, dtype=np.int64)

    def count(self, x: Array) -> int:
        return int(np.count_nonzero(x))

    def nonzero(self, x: Array) -> Array:
        return np.flatnonzero(x)
