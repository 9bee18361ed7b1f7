"""Whole-volume prediction: moved to `ludl.models.whole_volume` (shared with `ludl.inference`); re-exported here."""

from __future__ import annotations

from ludl.models.whole_volume import VolumePredictor

__all__ = ["VolumePredictor"]
