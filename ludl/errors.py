"""One exception family for ludl: every message names the input and what to do about it."""

from __future__ import annotations

__all__ = [
    "DicomError",
    "FitError",
    "GeometryError",
    "InputError",
    "KernelError",
    "LudlError",
    "ManifestError",
    "UnitsError",
]


class LudlError(Exception):
    """Base class of every error ludl raises on purpose."""


class InputError(LudlError, ValueError):
    """An argument or array has a value ludl cannot work with (NaN, negative, unsorted, …)."""


class FitError(InputError):
    """A time-activity curve cannot be fitted with the requested model."""


class KernelError(InputError):
    """A dose-voxel kernel was requested outside what its physics supports."""


class GeometryError(LudlError):
    """Image geometry is missing, inconsistent or mismatched between images."""


class DicomError(LudlError):
    """A DICOM file or series is missing data ludl needs, or is not what it claims to be."""


class UnitsError(LudlError):
    """An image carries units ludl does not know how to convert."""


class ManifestError(LudlError):
    """A cohort manifest or cohort.yaml is invalid."""
