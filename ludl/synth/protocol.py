"""Per-patient acquisition protocol draws: residual and extravasated activity, scan times, PET tracer and weight."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ludl.synth.config import SynthConfig
from ludl.synth.kinetics import PatientKinetics

__all__ = ["ScanProtocol", "draw_protocol", "manifest_injected_mbq"]


@dataclass(frozen=True)
class ScanProtocol:
    """Per-patient acquisition protocol draws (not generator variables of the biology)."""

    residual_mbq: float
    extravasated_mbq: float
    scan_times_h: tuple[tuple[float, ...], ...]  # per time point: the first bed's start, once per bed
    pet_time_h: float
    pet_tracer: str
    pet_injected_mbq: float
    weight_kg: float


def draw_protocol(config: SynthConfig, rng: np.random.Generator, systemic_mbq: float) -> ScanProtocol:
    """Draw one cycle's protocol; `systemic_mbq` is the activity the kinetics hold (the manifest adds the rest)."""
    residual_f = rng.uniform(0.0, config.residual_fraction_max)
    ext_f = rng.uniform(*config.extravasation_fraction) if rng.random() < config.extravasation_probability else 0.0
    times: list[tuple[float, ...]] = []
    previous = 0.0
    for tp in config.preset.timepoints_h:
        sd = min(config.scan_jitter_fraction * tp, config.scan_jitter_max_h)
        start = max(tp + float(np.clip(rng.normal(0.0, sd), -2.0 * sd, 2.0 * sd)), previous + 0.5, 0.25)
        p_second = config.second_bed_probability * (1.0 if tp <= 48.0 else 0.5)
        # One entry per bed; the later beds' own start times come from `plan_beds` (acquisition + pause).
        beds = [start, start] if rng.random() < p_second else [start]
        previous = start + 0.75 * (len(beds) - 1)
        times.append(tuple(round(t, 4) for t in beds))
    tracer = config.pet_tracers[int(rng.integers(0, len(config.pet_tracers)))]
    # 68Ga-PSMA-11 ≈ 2 MBq/kg, 18F-DCFPyL ≈ 4 MBq/kg (≈ 150–330 MBq); weight of an mCRPC patient ≈ 80 ± 12 kg.
    weight = float(np.clip(rng.normal(80.0, 12.0), 50.0, 130.0))
    pet_mbq = weight * (2.0 if "Ga" in tracer else 4.0) * rng.uniform(0.9, 1.1)
    # The kinetics hold the systemic activity; the manifest's injected activity adds extravasation and residual.
    total = systemic_mbq / (1.0 - residual_f - ext_f)
    return ScanProtocol(
        residual_mbq=round(total * residual_f, 3),
        extravasated_mbq=round(total * ext_f, 3),
        scan_times_h=tuple(times),
        pet_time_h=-24.0 * rng.uniform(*config.pet_days_before),
        pet_tracer=tracer,
        pet_injected_mbq=round(pet_mbq, 1),
        weight_kg=round(weight, 1),
    )


def manifest_injected_mbq(kinetics: PatientKinetics, protocol: ScanProtocol) -> float:
    """Injected activity as the manifest states it: systemic + residual + extravasated (MBq)."""
    return round(kinetics.injected_mbq + protocol.residual_mbq + protocol.extravasated_mbq, 3)
