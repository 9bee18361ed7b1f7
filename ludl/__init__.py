"""ludl: deep-learning dosimetry for 177Lu-PSMA radioligand therapy."""

from __future__ import annotations

from ludl.errors import LudlError

__all__ = ["LudlError", "__version__"]
__version__ = "0.1.0"
