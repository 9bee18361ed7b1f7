"""Images with geometry and units: the `Volume` type, resampling, registration, masks."""

from __future__ import annotations

from ludl.imaging.registration import RigidResult, register_rigid
from ludl.imaging.resample import resample_spacing, resample_to
from ludl.imaging.volume import UNITS, Volume

__all__ = ["UNITS", "RigidResult", "Volume", "register_rigid", "resample_spacing", "resample_to"]
