"""Medical images, cohorts and prepared cases: DICOM (NM, PT, CT, RTSTRUCT, SEG, RT Dose), NIfTI, the manifest and its
validation, the cohort readers (row → Volume, truth, outcomes), the prepared-case format (`dataset.json` + cases)
and the splits.

The public names load their module on first use, so `import ludl.io` stays light (pydicom and
highdicom are imported only by the readers and writers that need them).
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
    "read_parametric_map": "ludl.io.parametric_map",
    "write_parametric_map": "ludl.io.parametric_map",
    "read_nm": "ludl.io.nm",
    "read_nm_beds": "ludl.io.nm",
    "read_pet": "ludl.io.pet",
    "read_pet_bqml": "ludl.io.pet",
    "read_ct": "ludl.io.ct",
    "ct_to_density": "ludl.io.ct",
    "read_rtdose": "ludl.io.rtdose",
    "write_rtdose": "ludl.io.rtdose",
    "read_labels": "ludl.io.labels",
    "read_rtstruct": "ludl.io.rtstruct",
    "read_seg": "ludl.io.seg",
    "write_seg": "ludl.io.seg",
    "read_nifti": "ludl.io.nifti",
    "write_nifti": "ludl.io.nifti",
    "inspect_dicom_folder": "ludl.io.dicom_series",
    "load_manifest": "ludl.io.manifest",
    "write_manifest": "ludl.io.manifest",
    "Manifest": "ludl.io.manifest",
    "ManifestRow": "ludl.io.manifest_schema",
    "validate_cohort": "ludl.io.validation",
    "ValidationReport": "ludl.io.validation",
    "load_outcomes": "ludl.io.outcomes",
    "read_truth": "ludl.io.truth",
    "write_truth_regions": "ludl.io.truth",
    "read_spect_row": "ludl.io.cohort_images",
    "read_pet_suv_row": "ludl.io.cohort_images",
    "read_ct_row": "ludl.io.cohort_images",
    "PreparedCase": "ludl.io.prepared",
    "PreparedTimepoint": "ludl.io.prepared",
    "CaseTimepoint": "ludl.io.prepared",
    "read_case": "ludl.io.prepared",
    "write_case": "ludl.io.prepared",
    "list_cases": "ludl.io.prepared",
    "CaseSidecar": "ludl.io.prepared_sidecar",
    "TimepointInfo": "ludl.io.prepared_sidecar",
    "StpCase": "ludl.io.prepared_sidecar",
    "DatasetDescriptor": "ludl.io.prepared_dataset",
    "read_dataset_descriptor": "ludl.io.prepared_dataset",
    "write_dataset_descriptor": "ludl.io.prepared_dataset",
    "Splits": "ludl.io.splits",
    "make_splits": "ludl.io.splits",
    "read_splits": "ludl.io.splits",
    "write_splits": "ludl.io.splits",
    "load_cohort_config": "ludl.io.cohort",
    "CohortConfig": "ludl.io.cohort",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_getattr("ludl.io", _PUBLIC)


def __dir__() -> list[str]:
    return __all__
