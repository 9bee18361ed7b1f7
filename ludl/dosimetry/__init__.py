"""Conventional multi-time-point dosimetry: register, fit, integrate, convolve, report.

`run_dosimetry` does one patient-cycle of a cohort (what `ludl dosimetry` runs); `run_prepare` does every
patient-cycle and writes prepared cases (what `ludl prepare` runs).
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
    "DosimetryResult": "ludl.dosimetry.pipeline",
    "compute_dosimetry": "ludl.dosimetry.pipeline",
    "run_dosimetry": "ludl.dosimetry.pipeline",
    "load_cycle": "ludl.dosimetry.timepoints",
    "run_prepare": "ludl.dosimetry.prepare",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_getattr("ludl.dosimetry", _PUBLIC)
