"""De-identification of the DICOM objects ludl writes: one rule for RT Dose, SEG and the synthetic cohort."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEIDENTIFICATION_METHOD", "set_patient_module"]

DEIDENTIFICATION_METHOD = "ludl: no patient name, ID or birth date; new UIDs"
# Attributes that can identify a patient and that the Patient module does not require.
_OPTIONAL_IDENTIFYING = ("IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAge", "PatientWeight", "PatientSize")


def set_patient_module(
    ds: Any, *, deidentify: bool, patient_id: str | None, reference: Mapping[str, Any] | None = None
) -> None:
    """Fill the Patient module of `ds`: de-identified (default) or copied from `reference`.

    Type 2 attributes stay present, possibly empty. De-identified objects carry only the
    pseudonymous `patient_id` the caller gives (e.g. a cohort's ``SYN0001``), never a name.
    """
    ref = reference or {}
    if deidentify:
        ds.PatientName = patient_id or ""
        ds.PatientID = patient_id or ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
        for key in _OPTIONAL_IDENTIFYING:
            if key in ds:
                delattr(ds, key)
    else:
        ds.PatientName = patient_id or ref.get("PatientName", "")
        ds.PatientID = patient_id or ref.get("PatientID", "")
        ds.PatientBirthDate = ref.get("PatientBirthDate", "")
        ds.PatientSex = ref.get("PatientSex", "")
