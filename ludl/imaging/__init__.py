"""Images with geometry and units: the `Volume` type, resampling, registration, masks."""

from __future__ import annotations

from ludl.imaging.volume import UNITS, Volume

__all__ = ["UNITS", "Volume"]
