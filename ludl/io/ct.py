"""Read CT series in Hounsfield units, and turn them into mass density for dosimetry."""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from ludl.errors import DicomError, UnitsError
from ludl.imaging.volume import AIR_HU, Volume
from ludl.io.dicom_file import reads_dicom
from ludl.io.dicom_series import load_series
from ludl.io.dicom_tags import link_meta

__all__ = ["ct_to_density", "read_ct"]

_CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def _name(ds: Any) -> str:
    return str(getattr(ds, "filename", None) or "CT file")


@reads_dicom
def read_ct(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Volume:
    """Read a CT series as HU (rescale applied per slice, slices sorted; gaps, duplicates and tilt rejected).

    Args:
        path: folder (or file) holding one CT series.
        series_uid: choose the series when the folder holds several CT series.

    Raises:
        DicomError: not classic CT image storage, broken files, missing or duplicate slices, mixed series.
        GeometryError: inconsistent orientation, spacing or size; gantry tilt.
        UnitsError: a RescaleType other than HU, or a rescale slope that is not positive.
    """
    datasets, geometry = load_series(path, "CT", series_uid=series_uid)
    first = datasets[0]
    sop = str(first.get("SOPClassUID", ""))
    if sop != _CT_SOP_CLASS:
        raise DicomError(
            f"{_name(first)}: SOP class {sop} is not classic CT Image Storage ({_CT_SOP_CLASS}); export the CT as "
            "single-frame slices"
        )
    slices = []
    for ds in datasets:
        rescale_type = str(ds.get("RescaleType", "") or "").strip().upper()
        if rescale_type and rescale_type not in ("HU", "US"):
            raise UnitsError(f"{_name(ds)}: RescaleType {rescale_type!r} is not Hounsfield units")
        slope = float(ds.get("RescaleSlope", 1.0) if ds.get("RescaleSlope") not in (None, "") else 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        if not (np.isfinite(slope) and slope > 0 and np.isfinite(intercept)):
            raise UnitsError(
                f"{_name(ds)}: RescaleSlope {slope:g} / RescaleIntercept {intercept:g} cannot give Hounsfield units "
                "(the slope must be a positive number); re-export the CT"
            )
        stored = np.asarray(ds.pixel_array)
        hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        padding = ds.get("PixelPaddingValue")
        if padding is not None:
            hu[stored == int(padding)] = AIR_HU  # outside the reconstruction circle: air, not −2000 HU
        slices.append(hu)
    meta: dict[str, Any] = link_meta(first)
    if first.get("KVP") not in (None, ""):
        meta["kvp"] = float(first.KVP)  # HU→density calibrations depend on tube voltage
    return geometry.to_volume(np.stack(slices), "HU", meta)


def ct_to_density(volume: Volume, curve: Literal["bilinear", "linear"] = "bilinear") -> Volume:
    """Mass density (g/mL) from a CT volume in HU, via `ludl.physics.dose.density_from_hu` (`curve` passed on)."""
    if volume.unit != "HU":
        raise UnitsError(f"ct_to_density needs a CT in HU, got unit {volume.unit!r}")
    from ludl.physics.dose import density_from_hu  # imported lazily: physics.dose is heavy and optional here

    density = np.asarray(density_from_hu(np.asarray(volume.array), curve=curve), dtype=np.float32)
    return volume.with_array(density, unit="g/mL")
