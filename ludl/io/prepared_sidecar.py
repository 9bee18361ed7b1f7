"""The typed sidecar of a prepared case (``case.json``): case, time points, PET, ground truth, STP data, statistics.

`ludl.io.prepared` writes and reads the case folders; this module says what their sidecar holds. Every dataclass
round-trips through plain JSON (`to_dict` / `from_dict`, NaN stored as null); `from_dict` raises `InputError` for a
document it cannot read, telling to rerun ``ludl prepare … overwrite=true``.

Labels: a case stores its region instances (``labels``, values in `CaseSidecar.region_values`) and the canonical
segmentation classes (``classes``, `ludl.io.regions.SEGMENTATION_CLASSES` indices, every lesion → the lesion
class). `CaseSidecar.unlabeled` lists the classes the cohort did not contour, whose voxels are unknown rather than
background, so that a loss can mask them.

The class maps and intensity statistics stored beside it are computed in `ludl.io.prepared_stats`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError

__all__ = [
    "CaseSidecar",
    "GroundTruthInfo",
    "PetInfo",
    "StpCase",
    "TimepointInfo",
    "to_jsonable",
]

_NAN = float("nan")
_REPRUN = "rerun `ludl prepare … overwrite=true`"
_TEXT_KEYS = ("patient_id", "region", "kind", "region_class")  # StpCase region-row entries that are not numbers


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: NumPy scalars/arrays to Python, NaN/inf to None, tuples to lists, paths to strings."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (str, type(None))):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _number(value: Any) -> float:
    return _NAN if value is None else float(value)


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _array(values: Sequence[Any]) -> npt.NDArray[np.float64]:
    return np.array([_number(v) for v in values], dtype=np.float64)


def _refuse(what: str, err: Exception) -> InputError:
    return InputError(f"not a {what} document ({type(err).__name__}: {err}); {_REPRUN}")


_READ_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


# ------------------------------------------------------------------------------------------------ parts


@dataclass(frozen=True)
class PetInfo:
    """The pre-therapy PET of a case: tracer, when, activity, weight, cycle, and its registration to the reference."""

    tracer: str | None
    time_h: float | None
    injected_mbq: float | None
    weight_kg: float | None
    cycle: int
    registration: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return dict(to_jsonable({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> PetInfo:
        """What `to_dict` wrote."""
        try:
            return cls(
                tracer=None if document["tracer"] is None else str(document["tracer"]),
                time_h=_optional(document["time_h"]),
                injected_mbq=_optional(document["injected_mbq"]),
                weight_kg=_optional(document["weight_kg"]),
                cycle=int(document["cycle"]),
                registration=dict(document.get("registration") or {}),
            )
        except _READ_ERRORS as err:
            raise _refuse("pet", err) from err


@dataclass(frozen=True)
class GroundTruthInfo:
    """How a case's ground truth (TIA and dose maps) was made: method, settings, units, whole-body tumour dose."""

    method: str
    settings: Mapping[str, Any]
    tia_unit: str = "MBq*h/mL"
    dose_unit: str = "Gy"
    whole_body_tumour_dose_gy: float | None = None
    seconds: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return dict(to_jsonable({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> GroundTruthInfo:
        """What `to_dict` wrote."""
        try:
            return cls(
                method=str(document["method"]),
                settings=dict(document["settings"]),
                tia_unit=str(document["tia_unit"]),
                dose_unit=str(document["dose_unit"]),
                whole_body_tumour_dose_gy=_optional(document.get("whole_body_tumour_dose_gy")),
                seconds={str(k): float(v) for k, v in (document.get("seconds") or {}).items()},
            )
        except _READ_ERRORS as err:
            raise _refuse("ground_truth", err) from err


@dataclass(frozen=True)
class TimepointInfo:
    """What ``ludl prepare`` records of one time point besides its grid and files (`ludl.io.prepared`).

    Attributes:
        time_h, bed_times_h: acquisition start (h after injection) of the first bed and of every bed.
        acquisition_s: per bed (None where unknown); fwhm_mm: nominal SPECT resolution.
        is_reference: the ground truth's reference time point; activity_in_fov_mbq: activity in this field of view.
        registration: quality row of the rigid registration to the reference.
        transform_from_reference, transform_to_reference: 4×4 affines on LPS points (mm), SimpleITK convention.
        gt_tia_total_mbq_h, gt_tia_reference_total_mbq_h, gt_fov_fraction: ground-truth TIA on this grid and on
            the reference grid; share of voxels the reference grid covers.
    """

    time_h: float
    bed_times_h: tuple[float, ...]
    acquisition_s: tuple[float | None, ...]
    fwhm_mm: float
    is_reference: bool
    activity_in_fov_mbq: float
    registration: Mapping[str, Any]
    transform_from_reference: tuple[tuple[float, ...], ...]
    transform_to_reference: tuple[tuple[float, ...], ...]
    gt_tia_total_mbq_h: float
    gt_tia_reference_total_mbq_h: float
    gt_fov_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the entries `ludl.io.prepared.write_case` merges into the time point's sidecar entry."""
        return dict(to_jsonable({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> TimepointInfo:
        """From a time point's sidecar entry (its grid and file keys are ignored)."""
        try:
            return cls(
                time_h=float(document["time_h"]),
                bed_times_h=tuple(float(t) for t in document["bed_times_h"]),
                acquisition_s=tuple(_optional(a) for a in document["acquisition_s"]),
                fwhm_mm=float(document["fwhm_mm"]),
                is_reference=bool(document["is_reference"]),
                activity_in_fov_mbq=_number(document["activity_in_fov_mbq"]),
                registration=dict(document["registration"]),
                transform_from_reference=tuple(
                    tuple(float(v) for v in r) for r in document["transform_from_reference"]
                ),
                transform_to_reference=tuple(tuple(float(v) for v in r) for r in document["transform_to_reference"]),
                gt_tia_total_mbq_h=_number(document["gt_tia_total_mbq_h"]),
                gt_tia_reference_total_mbq_h=_number(document["gt_tia_reference_total_mbq_h"]),
                gt_fov_fraction=_number(document["gt_fov_fraction"]),
            )
        except _READ_ERRORS as err:
            raise _refuse("time point", err) from err


# ------------------------------------------------------------------------------------------------ STP data


@dataclass(frozen=True, eq=False)
class StpCase:
    """One patient-cycle's multi-TP ground truth and region curves, what every STP method needs.

    The computations on it (Hänscheid, Madsen, the prior-informed estimator) are in `ludl.dosimetry.baselines`.

    Attributes:
        patient_id, cycle: the case.
        injected_mbq: net administered activity (injected − residual), MBq.
        timepoints_h: nominal time points, ascending.
        regions: one row per region (and ``_rest``): ``region, kind, region_class, volume_ml, scored``, the
            ground truth ``tia_mbq_h, tia_uncorrected_mbq_h, mean_dose_gy, mean_dose_uncorrected_gy, t_eff_h``
            and the region's ``biexp_uptake`` fit ``a0, lambda1_per_h, lambda2_per_h, fit_cv`` (NaN when the fit
            failed), plus ``patient_id, cycle, injected_mbq`` — the "region table" the population fits read.
        curves: region → (actual times h, activity MBq), one entry per time point, uncorrected, reference grid.
        truth: region → (true TIA MBq·h, true mean dose Gy) from a synthetic cohort's ``truth/regions.csv``.
    """

    patient_id: str
    cycle: int
    injected_mbq: float
    timepoints_h: tuple[float, ...]
    regions: tuple[dict[str, Any], ...]
    curves: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]
    truth: dict[str, tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (NaN as None): the ``stp_case`` entry of a prepared case's sidecar."""
        document = {
            "patient_id": self.patient_id,
            "cycle": self.cycle,
            "injected_mbq": self.injected_mbq,
            "timepoints_h": self.timepoints_h,
            "regions": self.regions,
            "curves": {name: {"time_h": t, "activity_mbq": a} for name, (t, a) in self.curves.items()},
            "truth": {name: {"tia_mbq_h": tia, "mean_dose_gy": dose} for name, (tia, dose) in self.truth.items()},
        }
        return dict(to_jsonable(document))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> StpCase:
        """The case `to_dict` wrote (None back to NaN); raises `InputError` for anything else."""
        try:
            regions = []
            for row in document["regions"]:
                out: dict[str, Any] = {}
                for key, value in row.items():
                    if key in _TEXT_KEYS:
                        out[key] = value
                    elif key == "cycle":
                        out[key] = int(value)
                    elif key == "scored":
                        out[key] = bool(value)
                    else:
                        out[key] = _number(value)
                regions.append(out)
            curves = {
                str(name): (_array(curve["time_h"]), _array(curve["activity_mbq"]))
                for name, curve in document["curves"].items()
            }
            truth = {
                str(name): (_number(value["tia_mbq_h"]), _number(value["mean_dose_gy"]))
                for name, value in document["truth"].items()
            }
            return cls(
                patient_id=str(document["patient_id"]),
                cycle=int(document["cycle"]),
                injected_mbq=_number(document["injected_mbq"]),
                timepoints_h=tuple(float(t) for t in document["timepoints_h"]),
                regions=tuple(regions),
                curves=curves,
                truth=truth,
            )
        except _READ_ERRORS as err:
            raise _refuse("stp_case", err) from err


# ------------------------------------------------------------------------------------------------ the case


@dataclass(frozen=True)
class CaseSidecar:
    """The case-level part of ``case.json`` (`ludl.io.prepared` adds format, case id and the time points).

    Attributes:
        ludl_version: the ludl that prepared it; patient_id, cycle, nuclide: the case.
        injected_mbq, residual_mbq, extravasated_mbq, net_administered_mbq: the cycle's activities (MBq).
        timepoints_h: nominal time points; reference_timepoint_h: the ground truth's reference grid;
            mask_timepoint_h: the time point the label map was drawn on.
        ground_truth: how the TIA and dose maps were made.
        dosimetry: the dosimetry settings (`DosimetryOptions.settings()`).
        region_values, region_kinds: region instance → value in ``labels`` and its kind.
        classes_present: classes with voxels in this case; labelled_classes: classes the cohort contours;
            unlabeled: classes it does not (unknown voxels, never background).
        regions: the per-region ground-truth rows (`ludl.dosimetry.regions.REGION_COLUMNS`).
        pet: the pre-therapy PET, None without; stp_case: what the STP baselines need; notes: remarks.
        provenance: what the case was computed from (`ludl.io.provenance.Provenance.to_dict`: input checksums,
            settings and their hash, code version); None in cases of an older ludl, which `ludl prepare` recomputes.
    """

    ludl_version: str
    patient_id: str
    cycle: int
    nuclide: str
    injected_mbq: float
    residual_mbq: float
    extravasated_mbq: float
    net_administered_mbq: float
    timepoints_h: tuple[float, ...]
    reference_timepoint_h: float | None
    mask_timepoint_h: float
    ground_truth: GroundTruthInfo
    dosimetry: Mapping[str, Any]
    region_values: Mapping[str, int]
    region_kinds: Mapping[str, str]
    classes_present: tuple[str, ...]
    labelled_classes: tuple[str, ...]
    unlabeled: tuple[str, ...]
    regions: tuple[Mapping[str, Any], ...]
    pet: PetInfo | None = None
    stp_case: StpCase | None = field(default=None, compare=False)
    notes: tuple[str, ...] = ()
    provenance: Mapping[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (NaN as None)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else to_jsonable(value)
        return out

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> CaseSidecar:
        """From ``case.json`` (the store's own keys are ignored); region rows keep null for NaN."""
        try:
            pet, stp = document.get("pet"), document.get("stp_case")
            return cls(
                ludl_version=str(document["ludl_version"]),
                patient_id=str(document["patient_id"]),
                cycle=int(document["cycle"]),
                nuclide=str(document["nuclide"]),
                injected_mbq=float(document["injected_mbq"]),
                residual_mbq=float(document["residual_mbq"]),
                extravasated_mbq=float(document["extravasated_mbq"]),
                net_administered_mbq=float(document["net_administered_mbq"]),
                timepoints_h=tuple(float(t) for t in document["timepoints_h"]),
                reference_timepoint_h=_optional(document["reference_timepoint_h"]),
                mask_timepoint_h=float(document["mask_timepoint_h"]),
                ground_truth=GroundTruthInfo.from_dict(document["ground_truth"]),
                dosimetry=dict(document["dosimetry"]),
                region_values={str(k): int(v) for k, v in document["region_values"].items()},
                region_kinds={str(k): str(v) for k, v in document["region_kinds"].items()},
                classes_present=tuple(str(c) for c in document["classes_present"]),
                labelled_classes=tuple(str(c) for c in document["labelled_classes"]),
                unlabeled=tuple(str(c) for c in document["unlabeled"]),
                regions=tuple(dict(r) for r in document["regions"]),
                pet=None if pet is None else PetInfo.from_dict(pet),
                stp_case=None if stp is None else StpCase.from_dict(stp),
                notes=tuple(str(n) for n in document.get("notes", ())),
                provenance=None if document.get("provenance") is None else dict(document["provenance"]),
            )
        except _READ_ERRORS as err:
            raise _refuse("prepared-case sidecar", err) from err
