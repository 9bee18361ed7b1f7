"""The single-scan reference: a strong region-level estimate of each region's TIA and dose from one scan.

What one scan and the PET show at region level — every evaluated region's activity at the scan time, volumes,
lesion sites and PET uptake, blood-pool, bladder and whole-body activity at t, the scan time and the injected
activity — goes into one gradient-boosting regressor per region class and scan time, trained once per
generator setting on a large ``images=false`` population drawn from the same priors (amortised inference) and
cached on disk. Two variants: noise-free inputs, and inputs with the measurement error of image-derived region
means (`MeasurementError`). The cohort writes both per region and scan time in
``truth/single_scan_reference.csv``.

This is a **strong reference, not a bound**. It is as good as we could make it at region level (ridge, another
gradient-boosting setting and an MLP on the same inputs do not beat it beyond their bootstrap intervals:
``benchmarks/single_scan_reference.py``), but a better region-level learner may exist, and a voxel-level network
that sees the images (heterogeneity inside a lesion, its surroundings, the CT) has information this reference
does not and can beat it.

Modules: `features` (the inputs, noise-free and noisy), `population` (the training population), `model`
(training, cache, estimates), `table` (the CSV rows).
"""

from __future__ import annotations

from ludl.synth.reference.features import (
    FEATURE_NAMES,
    REFERENCE_CLASSES,
    MeasurementError,
    ReferenceInputs,
    ScanFeatures,
    reference_inputs,
    region_class,
)
from ludl.synth.reference.model import (
    DEFAULT_CACHE_DIR,
    DEFAULT_TRAINING_PATIENTS,
    VARIANTS,
    SingleScanReference,
    load_or_train_reference,
    reference_cache_key,
)
from ludl.synth.reference.population import TRAINING_SEED, draw_population, measurement_rng, patient_reference_inputs
from ludl.synth.reference.table import REFERENCE_COLUMNS, reference_cells

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_TRAINING_PATIENTS",
    "FEATURE_NAMES",
    "REFERENCE_CLASSES",
    "REFERENCE_COLUMNS",
    "TRAINING_SEED",
    "VARIANTS",
    "MeasurementError",
    "ReferenceInputs",
    "ScanFeatures",
    "SingleScanReference",
    "draw_population",
    "load_or_train_reference",
    "measurement_rng",
    "patient_reference_inputs",
    "reference_cache_key",
    "reference_cells",
    "reference_inputs",
    "region_class",
]
