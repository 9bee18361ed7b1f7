"""Conventional multi-time-point dosimetry: register, fit, integrate, convolve, report.

`run_dosimetry` does one patient-cycle of a cohort (what `ludl dosimetry` runs); `run_prepare` does every
patient-cycle and writes prepared cases (what `ludl prepare` runs).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "DosimetryResult": "ludl.dosimetry.pipeline",
    "compute_dosimetry": "ludl.dosimetry.pipeline",
    "run_dosimetry": "ludl.dosimetry.pipeline",
    "load_cycle": "ludl.dosimetry.timepoints",
    "run_prepare": "ludl.dosimetry.prepare",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ludl.dosimetry' has no attribute {name!r}")
