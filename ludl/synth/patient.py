"""One synthetic patient: lesions, anatomy, kinetics, response, protocol, single-scan reference inputs, images.

One patient = one independent random stream (`patient_rng(seed, index)` and sub-streams of the same seed
sequence), so patients can be generated in any order and in parallel.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.io.manifest import ManifestRow
from ludl.io.regions import lesion_name
from ludl.physics.units import ML_PER_MM3
from ludl.synth.config import SynthConfig, patient_id
from ludl.synth.kinetics import (
    Lesions,
    PatientKinetics,
    patient_rng,
    sample_lesions,
    sample_patient_kinetics,
    sample_pet_lesion_factor,
)
from ludl.synth.protocol import draw_protocol
from ludl.synth.reference import ReferenceInputs, measurement_rng, reference_inputs
from ludl.synth.response import PatientResponse, simulate_response
from ludl.synth.truth import RegionTruth, regions_from_kinetics

__all__ = [
    "STREAM_ANATOMY",
    "STREAM_IMAGING",
    "STREAM_PROTOCOL",
    "PatientAnatomy",
    "PatientResult",
    "generate_patient",
    "make_patient_anatomy",
    "sub_rng",
]

FloatArray = npt.NDArray[np.float64]

# Sub-streams of a patient's seed sequence (patient_rng is spawn_key (i,); these are (i, k)).
STREAM_ANATOMY = 1
STREAM_IMAGING = 2
STREAM_PROTOCOL = 3


def sub_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Sub-stream `stream` of patient `index` (spawn key (index, stream); `patient_rng` is (index,))."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, stream)))


@dataclass(frozen=True, eq=False)
class PatientResult:
    """What one patient contributes to the cohort-level files (the images are already written)."""

    patient_id: str
    manifest_rows: tuple[ManifestRow, ...]
    region_rows: tuple[RegionTruth, ...]
    psa_baseline: float
    psa_week12: float
    non_response: bool
    p_true: float
    p_observable: float
    latent: Mapping[str, float]
    reference: ReferenceInputs | None
    lesion_pet_log_factor: FloatArray
    lesion_log_uptake_24h: FloatArray
    seconds: float


def _log_uptake_24h(kinetics: PatientKinetics) -> FloatArray:
    """log of each lesion's 24 h activity concentration (the 177Lu uptake PET is compared with)."""
    rows = kinetics.lesion_rows
    a = kinetics.activity_mbq(24.0)[rows, 0] / kinetics.volumes_ml[rows]
    out: FloatArray = np.log(np.maximum(a, 1e-300))
    return out


def generate_patient(config: SynthConfig, index: int, out_dir: Path | None = None) -> PatientResult:
    """Generate patient `index` (0-based); with images, write its image and truth files under `out_dir`."""
    t0 = time.perf_counter()
    priors = config.priors
    pid = patient_id(index)
    rng = patient_rng(config.seed, index)
    lesions = sample_lesions(rng, priors)
    anatomy = None
    if config.images:
        anatomy, lesions = make_patient_anatomy(config, sub_rng(config.seed, index, STREAM_ANATOMY), lesions)
    kin = sample_patient_kinetics(
        rng,
        priors,
        lesions.n,
        lesions.volumes_ml,
        lesions.sites,
        organ_volumes_ml=None if anatomy is None else anatomy.organ_volumes_ml,
        diffuse_marrow=lesions.diffuse_marrow,
    )
    pet_factor = sample_pet_lesion_factor(rng, kin, priors)
    response: PatientResponse = simulate_response(rng, kin, priors, pet_factor)
    cycles = [kin] + ([response.cycle2] if config.preset.n_cycles >= 2 else [])
    protocol_rng = sub_rng(config.seed, index, STREAM_PROTOCOL)
    protocols = [draw_protocol(config, protocol_rng, k.injected_mbq) for k in cycles]
    # Extravasation is modelled at cycle 1 only (the later cycles' activity maps hold none).
    protocols[1:] = [dataclasses.replace(p, extravasated_mbq=0.0) for p in protocols[1:]]
    if anatomy is None or out_dir is None:
        region_rows = [row for k in cycles for row in regions_from_kinetics(pid, k)]
        manifest_rows: list[ManifestRow] = []
    else:
        from ludl.synth.writer import write_patient_images

        manifest_rows, region_rows = write_patient_images(
            config,
            out_dir,
            pid,
            anatomy.anatomy,
            cycles,
            protocols,
            pet_factor,
            sub_rng(config.seed, index, STREAM_IMAGING),
        )
    reference = None
    if config.single_scan_reference:
        # Cycle 1 at the nominal scan times; the measurement errors come from a stream of their own.
        reference = reference_inputs(kin, pet_factor, config.reference_times_h, measurement_rng(config.seed, index))
    latent = {
        "t_eff_patient_z": float(kin.latent["t_eff_patient_z"]),
        "renal_z": float(kin.latent["renal_z"]),
        "diffuse_marrow": float(lesions.diffuse_marrow),
        "n_lesions": float(kin.lesion_rows.size),
        "tumour_volume_ml": float(np.sum(kin.volumes_ml[kin.lesion_rows])),
        "systemic_mbq": float(kin.injected_mbq),
        "alpha_per_gy": float(response.alpha_per_gy),
    }
    return PatientResult(
        patient_id=pid,
        manifest_rows=tuple(manifest_rows),
        region_rows=tuple(region_rows),
        psa_baseline=response.psa_baseline,
        psa_week12=response.psa_week12,
        non_response=response.non_response,
        p_true=response.p_true,
        p_observable=response.p_observable,
        latent=latent,
        reference=reference,
        lesion_pet_log_factor=np.log(pet_factor),
        lesion_log_uptake_24h=_log_uptake_24h(kin),
        seconds=time.perf_counter() - t0,
    )


@dataclass(frozen=True, eq=False)
class PatientAnatomy:
    """A patient's anatomy and the organ volumes the kinetics take from it."""

    anatomy: Any
    organ_volumes_ml: dict[str, float]


def _label_volumes_ml(labels: Any, label_values: Mapping[str, int]) -> dict[str, float]:
    """Volume (mL) of every named label of a label map."""
    lab = np.asarray(labels.array)
    counts = np.bincount(lab.ravel().astype(np.int64) - int(lab.min()))
    v_ml = float(np.prod(labels.spacing_zyx_mm)) * ML_PER_MM3
    out = {}
    for name, value in label_values.items():
        k = int(value) - int(lab.min())
        out[name] = float(counts[k]) * v_ml if 0 <= k < counts.size else 0.0
    return out


def make_patient_anatomy(
    config: SynthConfig, rng: np.random.Generator, lesions: Lesions
) -> tuple[PatientAnatomy, Lesions]:
    """The patient's anatomy on the truth grid (S1's `make_anatomy`) and the lesions as placed (realised volumes)."""
    from ludl.synth.anatomy import AnatomySpec, make_anatomy

    p = config.preset
    spec = AnatomySpec(shape_zyx=p.truth_shape_zyx, spacing_zyx_mm=(p.truth_spacing_mm,) * 3, extent=p.extent)
    anatomy = make_anatomy(rng, spec, lesions)
    volumes = _label_volumes_ml(anatomy.labels, anatomy.label_values)
    realised = np.array(
        [volumes.get(lesion_name(j + 1), 0.0) or float(lesions.volumes_ml[j]) for j in range(lesions.n)]
    )
    organ_volumes = {r: volumes[r] for o in config.priors.organs for r in o.regions if volumes.get(r, 0.0) > 0.0}
    placed = Lesions(
        volumes_ml=np.clip(realised, 1e-3, 1e5), sites=lesions.sites, diffuse_marrow=lesions.diffuse_marrow
    )
    return PatientAnatomy(anatomy, organ_volumes), placed
