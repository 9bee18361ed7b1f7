"""The torch array namespace for the TAC fitting core: same algorithm as numpy, on CPU or CUDA.

Only elementwise ops, row reductions, small matrix products and indexing: no batched generic solves
(torch.linalg), so the work is a few dozen fused-friendly kernels per Levenberg–Marquardt iteration and
runs at memory bandwidth on a GPU. float32 by default: the fitting core scales each curve to max 1 and
its tolerances follow the dtype's epsilon.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ludl.errors import InputError

__all__ = ["TorchXp", "resolve_device"]


def resolve_device(device: str | None) -> str:
    """The torch device to fit on: `device` if given, else ``"cuda"`` when available, else ``"cpu"``."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r} asked for CUDA but torch sees no GPU; use backend='numpy' or 'cpu'")
    return str(dev)


class TorchXp:
    """The array operations the fitting core needs, for torch."""

    name = "torch"
    grid_rows = 0  # the whole block at once: one kernel per operation suits a GPU

    def __init__(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.eps = float(torch.finfo(dtype).eps)
        self.tiny = float(torch.finfo(dtype).tiny)

    def asarray(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x).to(
            device=self.device, dtype=self.dtype
        )

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    def exp(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    def log(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)

    def abs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)

    def where(self, cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    def clip(self, x: torch.Tensor, lo: Any, hi: Any) -> torch.Tensor:
        # torch.clamp takes numbers or tensors for both bounds, not one of each.
        x = torch.maximum(x, lo) if isinstance(lo, torch.Tensor) else torch.clamp(x, min=lo)
        return torch.minimum(x, hi) if isinstance(hi, torch.Tensor) else torch.clamp(x, max=hi)

    def maximum(self, a: torch.Tensor, b: Any) -> torch.Tensor:
        return torch.clamp(a, min=b)

    def minimum(self, a: torch.Tensor, b: Any) -> torch.Tensor:
        return torch.clamp(a, max=b)

    def rowsum(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=-1)

    def colsum(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=0)

    def transpose(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T) → (T, N), contiguous."""
        return x.T.contiguous()

    def rowmax(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=-1)

    def argmax(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=-1)

    def take(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return x[index]

    def full(self, n: int, value: float) -> torch.Tensor:
        return torch.full((n,), value, dtype=self.dtype, device=self.device)

    def zeros(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=self.dtype, device=self.device)

    def full_int(self, n: int, value: int) -> torch.Tensor:
        return torch.full((n,), value, dtype=torch.int64, device=self.device)

    def count(self, x: torch.Tensor) -> int:
        return int(x.sum())

    def nonzero(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(x).reshape(-1)
