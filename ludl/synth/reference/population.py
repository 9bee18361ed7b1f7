"""The training population of the single-scan reference: `images=false` patients drawn from the cohort's priors.

Patient i of the population is drawn exactly as the cohort generator draws patient i of a cohort with seed
`TRAINING_SEED` (lesions, kinetics, PET factor from `patient_rng`), with the measurement errors from a stream of
its own. Each patient contributes all organ and marrow rows and at most `lesions_per_patient` randomly chosen
lesion rows per scan time (a patient with 150 lesions would otherwise weigh 150 times one with one lesion and
fill the memory).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ludl.synth.kinetics import patient_rng, sample_lesions, sample_patient_kinetics, sample_pet_lesion_factor
from ludl.synth.priors import CohortPriors
from ludl.synth.reference.features import REFERENCE_CLASSES, MeasurementError, ReferenceInputs, reference_inputs

__all__ = ["TRAINING_SEED", "ClassData", "draw_population", "measurement_rng", "patient_reference_inputs"]

FloatArray = npt.NDArray[np.float64]

# Seed of the training population: far from the small seeds cohorts use, so no cohort patient is a training one.
TRAINING_SEED = 2_718_281_828
# Spawn-key tag of the measurement-error stream (the patient's own streams use keys (i,) and (i, 1..3)).
_NOISE_STREAM = 0x5EF


def measurement_rng(seed: int, index: int, cycle: int = 1) -> np.random.Generator:
    """The measurement-error stream of patient `index` (0-based) of cohort `seed`, cycle `cycle`."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, _NOISE_STREAM, cycle)))


def patient_reference_inputs(
    priors: CohortPriors, seed: int, index: int, times_h: Sequence[float], error: MeasurementError
) -> ReferenceInputs:
    """Reference inputs of patient `index` of an `images=false` cohort `seed` (cycle 1), as the generator draws it."""
    rng = patient_rng(seed, index)
    lesions = sample_lesions(rng, priors)
    kin = sample_patient_kinetics(rng, priors, lesions.n, lesions.volumes_ml, lesions.sites)
    pet = sample_pet_lesion_factor(rng, kin, priors)
    return reference_inputs(kin, pet, times_h, measurement_rng(seed, index), error)


@dataclass(frozen=True, eq=False)
class ClassData:
    """Training rows of one region class at one scan time: features, log(TIA / A(t)) and the patient of each row."""

    x_noise_free: FloatArray
    y_noise_free: FloatArray
    x_noisy: FloatArray
    y_noisy: FloatArray
    patient: npt.NDArray[np.int64]


_Chunk = dict[tuple[float, str], list[tuple[FloatArray, FloatArray, FloatArray, FloatArray, npt.NDArray[np.int64]]]]


def _draw_chunk(args: tuple[CohortPriors, int, int, int, tuple[float, ...], MeasurementError, int]) -> _Chunk:
    """Rows of patients [start, stop) of the population (a top-level function: it must pickle)."""
    priors, seed, start, stop, times, error, lesions_per_patient = args
    out: _Chunk = {}
    for i in range(start, stop):
        inputs = patient_reference_inputs(priors, seed, i, times, error)
        pick_rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(i, _NOISE_STREAM, 0)))
        for scan in inputs.scans:
            classes = np.array(scan.classes)
            les = np.flatnonzero(classes == "lesions")
            if les.size > lesions_per_patient:
                les = np.sort(pick_rng.choice(les, size=lesions_per_patient, replace=False))
            keep = np.concatenate([np.flatnonzero(classes != "lesions"), les])
            y_nf = np.log(scan.true_tia_mbq_h / scan.activity_noise_free_mbq)
            y_no = np.log(scan.true_tia_mbq_h / scan.activity_noisy_mbq)
            for cls in REFERENCE_CLASSES:
                k = keep[classes[keep] == cls]
                if k.size:
                    out.setdefault((scan.time_h, cls), []).append(
                        (scan.x_noise_free[k], y_nf[k], scan.x_noisy[k], y_no[k], np.full(k.size, i, dtype=np.int64))
                    )
    return out


def draw_population(
    priors: CohortPriors,
    n_patients: int,
    times_h: Sequence[float],
    *,
    error: MeasurementError | None = None,
    seed: int = TRAINING_SEED,
    first_index: int = 0,
    lesions_per_patient: int = 4,
    workers: int | None = None,
) -> dict[tuple[float, str], ClassData]:
    """Training rows per (scan time, region class) of patients `first_index` … `first_index + n_patients − 1`.

    Deterministic for any `workers` (patients are independent streams, chunks are concatenated in order).
    """
    err = error or MeasurementError()
    times = tuple(float(t) for t in times_h)
    n_workers = max(1, min(workers or os.cpu_count() or 1, n_patients))
    n_chunks = max(1, min(n_patients, 8 * n_workers)) if n_workers > 1 else 1
    edges = np.linspace(first_index, first_index + n_patients, n_chunks + 1).round().astype(int)
    jobs = [
        (priors, seed, int(a), int(b), times, err, lesions_per_patient) for a, b in itertools.pairwise(edges) if b > a
    ]
    if n_workers == 1:
        chunks = [_draw_chunk(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            chunks = list(pool.map(_draw_chunk, jobs))
    out: dict[tuple[float, str], ClassData] = {}
    for key in [(t, c) for t in times for c in REFERENCE_CLASSES]:
        parts = [p for ch in chunks for p in ch.get(key, [])]
        if not parts:
            continue
        out[key] = ClassData(
            x_noise_free=np.concatenate([p[0] for p in parts]),
            y_noise_free=np.concatenate([p[1] for p in parts]),
            x_noisy=np.concatenate([p[2] for p in parts]),
            y_noisy=np.concatenate([p[3] for p in parts]),
            patient=np.concatenate([p[4] for p in parts]),
        )
    return out
