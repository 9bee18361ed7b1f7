"""`truth/single_scan_reference.csv`: per patient, region and scan time, the true and the reference TIA and dose."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ludl.synth.reference.features import ReferenceInputs
from ludl.synth.reference.model import SingleScanReference
from ludl.synth.tables import num_text

__all__ = ["REFERENCE_COLUMNS", "reference_cells"]

# Documented in docs/synthetic-cohort.md ("What one scan can tell"). Doses are self-doses: TIA × the sphere S
# value of the region's volume, the same for truth and reference (so the dose ratio is the TIA ratio).
REFERENCE_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "cycle",
    "region",
    "kind",
    "region_class",
    "scan_h",
    "tia_true_mbq_h",
    "tia_ref_noise_free_mbq_h",
    "tia_ref_noisy_mbq_h",
    "dose_true_gy",
    "dose_ref_noise_free_gy",
    "dose_ref_noisy_gy",
)


def _kind(region_class: str) -> str:
    return "lesion" if region_class == "lesions" else "marrow" if region_class == "red_marrow" else "organ"


def reference_cells(patients: Sequence[tuple[str, ReferenceInputs]], reference: SingleScanReference) -> list[list[str]]:
    """CSV cells (`REFERENCE_COLUMNS` order) of (patient id, inputs) pairs: every region at every scan time."""
    scans = [scan for _, inputs in patients for scan in inputs.scans]
    clean = iter(reference.estimate_many(scans, "noise_free"))
    noisy = iter(reference.estimate_many(scans, "noisy"))
    rows: list[list[str]] = []
    for patient_id, inputs in patients:
        for scan in inputs.scans:
            ref_clean, ref_noisy = next(clean), next(noisy)
            s = scan.s_value_gy_per_mbq_h
            for j, (region, cls) in enumerate(zip(scan.regions, scan.classes, strict=True)):
                values = np.array([scan.true_tia_mbq_h[j], ref_clean[j], ref_noisy[j]])
                rows.append(
                    [
                        patient_id,
                        str(inputs.cycle),
                        region,
                        _kind(cls),
                        cls,
                        num_text(scan.time_h),
                        *(num_text(float(v)) for v in values),
                        *(num_text(float(v * s[j])) for v in values),
                    ]
                )
    return rows
