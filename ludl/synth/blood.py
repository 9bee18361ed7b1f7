"""Blood samples of a synthetic patient: whole-blood 177Lu concentration at a few draw times, with lab noise.

Clinics that do blood-based red-marrow dosimetry (EANM: Hindorf et al. 2010 EJNMMI 37:1238) draw a few venous
samples in the first days and count them in a well counter. Here the exact blood concentration is the blood
compartment's activity over the blood's volume on the truth grid — what every blood-pool voxel of the activity map
holds (`ludl.synth.activity`: weight 1 in the blood pool, a fraction elsewhere) — at draw times near the imaging
visits plus two early ones. Each sample carries a log-normal measurement error (pipetting, well-counter
calibration and counting; `SAMPLE_CV`, assumption) and its draw time is recorded to the minute.

The noise comes from a stream of its own (keyed by seed and patient), so writing blood samples moves no other draw
of the patient: images and truth stay byte-identical.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text
from ludl.io.blood import BLOOD_COLUMNS, BLOOD_FILE
from ludl.synth.activity import ActivityModel
from ludl.synth.tables import csv_text

__all__ = [
    "BLOOD_DRAW_TIMES_H",
    "SAMPLE_CV",
    "blood_concentration_bq_per_ml",
    "blood_csv_text",
    "blood_samples",
    "write_blood_csv",
]

# Nominal draw times (h after injection): two early samples (distribution phase, Kabasakal 2017: ≈ 0.16 h
# half-life, so ≥ 0.5 h samples the elimination) and one at each usual imaging visit (assumption).
BLOOD_DRAW_TIMES_H: tuple[float, ...] = (0.5, 2.0, 4.0, 24.0, 48.0, 96.0)
# Relative SD of one sample's measured concentration (well counter + pipetting; assumption, a few %).
SAMPLE_CV = 0.05
# Draw-time jitter (uniform ±, h): the recorded time is the true one (to the minute); only the draw moves.
_DRAW_JITTER_H = 0.25
_BLOOD_STREAM = 0x424C4F44  # "BLOD": the blood samples' own stream
_BLOOD_ROW = "blood"


def blood_concentration_bq_per_ml(model: ActivityModel, time_h: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Exact whole-blood concentration (Bq/mL, not decay-corrected) at the given times, from the activity model."""
    kin = model.kinetics
    if _BLOOD_ROW not in kin.regions:
        raise InputError("the kinetics have no blood compartment; blood samples need one")
    row = kin.regions.index(_BLOOD_ROW)
    component = next((c for c in model.components if c.row == row), None)
    if component is None:
        raise InputError("the blood compartment has no voxels on the truth grid; no blood samples can be drawn")
    # Blood-pool voxels have weight 1: their concentration is R_blood(t) / Σ w·V (`ActivityModel`).
    blood_ml = float(np.sum(component.weight)) * model.voxel_volume_ml
    t = np.atleast_1d(np.asarray(time_h, dtype=np.float64))
    return np.asarray(kin.activity_mbq(t)[row] * 1e6 / blood_ml, dtype=np.float64)


def _blood_rng(seed: int, pid: str, cycle: int) -> np.random.Generator:
    key = (_BLOOD_STREAM, zlib.crc32(pid.encode()), cycle)
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def blood_samples(
    model: ActivityModel, seed: int, pid: str, cycle: int, draw_times_h: Sequence[float] = BLOOD_DRAW_TIMES_H
) -> list[tuple[float, float]]:
    """(recorded draw time h, measured concentration Bq/mL) of each sample of one patient-cycle."""
    rng = _blood_rng(seed, pid, cycle)
    nominal = np.asarray(draw_times_h, dtype=np.float64)
    jitter = rng.uniform(-_DRAW_JITTER_H, _DRAW_JITTER_H, nominal.size)
    times = np.round(np.maximum(nominal + jitter * (nominal >= 1.0), 0.05) * 60.0) / 60.0  # to the minute
    exact = blood_concentration_bq_per_ml(model, times)
    sigma = np.sqrt(np.log1p(SAMPLE_CV**2))
    measured = exact * np.exp(sigma * rng.standard_normal(nominal.size) - 0.5 * sigma**2)
    return [(float(t), float(c)) for t, c in zip(times, measured, strict=True)]


def blood_csv_text(pid: str, samples_by_cycle: Sequence[tuple[int, Sequence[tuple[float, float]]]]) -> str:
    """The patient's ``blood.csv`` (docs/cohort-format.md "Blood samples")."""
    rows = [[pid, str(cycle), f"{t:.4f}", f"{c:.6g}"] for cycle, samples in samples_by_cycle for t, c in samples]
    return csv_text(BLOOD_COLUMNS, rows)


def write_blood_csv(
    patient_dir: Path, seed: int, pid: str, models: Sequence[ActivityModel], cycles: Sequence[int]
) -> Path:
    """Write ``<patient_dir>/blood.csv``: the samples of every imaged cycle (0-based indices into `models`)."""
    text = blood_csv_text(pid, [(c + 1, blood_samples(models[c], seed, pid, c + 1)) for c in cycles])
    return atomic_write_text(patient_dir / BLOOD_FILE, text)
