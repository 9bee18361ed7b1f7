"""Single-scan inference: a trained model artifact applied to one SPECT/CT (+ PET), outputs a clinic can open.

Modules: `model` (`load_models`, `ModelSet`: one artifact or a fold ensemble), `inputs` (`ScanInputs`,
`scan_inputs` from volumes, `read_scan_inputs` from DICOM/NIfTI: PET registered via its CT, checks),
`predictor` (`Predictor`, `Prediction`), `regions` (`region_table`, `correct_single_scan`), `outputs`
(`write_outputs`: NIfTI, RT Dose, SEG, regions.csv, summary.json, report), `report` (`report_content`), `batch`
(`run_batch` over a cohort manifest), `calibration` (`interval_coverage`). The public names load on first use.
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
    "LoadedModel": "ludl.inference.model",
    "ModelSet": "ludl.inference.model",
    "load_models": "ludl.inference.model",
    "ReferenceLabels": "ludl.inference.inputs",
    "ScanInputs": "ludl.inference.inputs",
    "read_scan_inputs": "ludl.inference.inputs",
    "scan_inputs": "ludl.inference.inputs",
    "Prediction": "ludl.inference.predictor",
    "Predictor": "ludl.inference.predictor",
    "correct_single_scan": "ludl.inference.regions",
    "region_table": "ludl.inference.regions",
    "write_outputs": "ludl.inference.outputs",
    "report_content": "ludl.inference.report",
    "run_batch": "ludl.inference.batch",
    "interval_coverage": "ludl.inference.calibration",
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
