"""Evaluation of single-scan dosimetry on held-out patients: method-comparison tables, segmentation, non-response,
and one self-contained HTML page (docs/architecture.md "Evaluation").

- `ludl.evaluation.tables`: region mean-dose errors per method × scan time × region class with patient-bootstrap CIs,
  paired differences network − STP method, and the ratio to the cohort's single-scan reference;
- `ludl.evaluation.segmentation`: Dice per class, lesion detection;
- `ludl.evaluation.response`: non-response ROC AUC, calibration, PET-only baseline;
- `ludl.evaluation.page`: the HTML page; `ludl.evaluation.compare`: `evaluate` ties them together;
- `ludl.evaluation.job`: `run_evaluate`, the ``ludl evaluate`` job (re-score a run without retraining);
- `ludl.evaluation.pipeline`: `run_training`, the embedded default of ``python train.py`` (demo cohort → training →
  evaluation; imported by name only, it pulls in every layer).
"""

from __future__ import annotations

from ludl.evaluation.compare import EvaluationResult, evaluate
from ludl.evaluation.job import run_evaluate
from ludl.evaluation.page import DoseSlice, PageData, build_page, coronal_slice
from ludl.evaluation.tables import ComparisonTables, comparison_tables

__all__ = [
    "ComparisonTables",
    "DoseSlice",
    "EvaluationResult",
    "PageData",
    "build_page",
    "comparison_tables",
    "coronal_slice",
    "evaluate",
    "run_evaluate",
]
