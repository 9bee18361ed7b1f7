"""Prepared-case store and patient-level splits (later: MONAI transforms and the Lightning DataModule).

The public names load their module on first use, so `import ludl.data` stays light.
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
    "PreparedCase": "ludl.data.store",
    "PreparedTimepoint": "ludl.data.store",
    "CaseTimepoint": "ludl.data.store",
    "read_case": "ludl.data.store",
    "write_case": "ludl.data.store",
    "list_cases": "ludl.data.store",
    "Splits": "ludl.data.splits",
    "make_splits": "ludl.data.splits",
    "read_splits": "ludl.data.splits",
    "write_splits": "ludl.data.splits",
    "load_outcomes": "ludl.data.splits",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_getattr("ludl.data", _PUBLIC)
