"""Reading and writing medical images and cohorts: DICOM (NM, PT, CT, RTSTRUCT, SEG, RT Dose), NIfTI, the manifest.

The public names load their module on first use, so `import ludl.io` stays light (pydicom and
highdicom are imported only by the readers and writers that need them).
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
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
    "validate_cohort": "ludl.io.manifest",
    "Manifest": "ludl.io.manifest",
    "load_cohort_config": "ludl.io.cohort",
    "CohortConfig": "ludl.io.cohort",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_getattr("ludl.io", _PUBLIC)


def __dir__() -> list[str]:
    return __all__
