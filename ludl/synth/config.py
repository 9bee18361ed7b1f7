"""What defines a synthetic cohort: `SynthConfig`, and `make_config` from a preset name and the synth.yaml overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ludl.errors import InputError
from ludl.synth.presets import SynthPreset, get_preset
from ludl.synth.priors import CohortPriors, default_priors, replace_priors

__all__ = ["SynthConfig", "make_config", "patient_id"]


def patient_id(index: int) -> str:
    """De-identified synthetic patient ID of patient `index` (0-based): ``SYN0001`` …; carries no generator value."""
    return f"SYN{index + 1:04d}"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic cohort (same config + seed → byte-identical files).

    Args:
        preset: grids, time points and output format (`ludl.synth.presets`).
        n_patients: number of patients.
        seed: cohort seed (≥ 0).
        images: write images and truth maps; False: kinetics, truth tables and response only.
        preview: write PNG montages under ``preview/`` (needs images).
        workers: processes (None: all cores; 1: in-process).
        priors: population priors (docs/synthetic-cohort.md), e.g. with another shared-variance fraction.
        name: cohort name in ``cohort.yaml``.
        scan_jitter_fraction: SD of the actual scan start around the nominal time point, as a fraction of it,
            capped at `scan_jitter_max_h` (docs/synthetic-cohort.md "No shortcuts": jitter on scan times).
        scan_jitter_max_h: cap of that SD (h).
        second_bed_probability: chance that a time point up to 48 h has a second bed position (half of it later:
            "late time points often one bed", docs/synthetic-cohort.md);
            its start time comes from the imaging's bed plan.
        residual_fraction_max: residual activity in syringe and lines, uniform in [0, this] of the injection.
        extravasation_probability: chance of an extravasation at the injection site.
        extravasation_fraction: range of the extravasated share of the injection.
        pet_days_before: range of days between PET and the cycle-1 injection (docs/synthetic-cohort.md: 0–4 weeks).
        pet_tracers: tracers drawn with equal probability (recorded in the manifest).
        reference_timepoints_h: scan times of the single-scan reference (default: the preset's time points).
        single_scan_reference: write ``truth/single_scan_reference.csv`` (`ludl.synth.reference`; the first
            cohort of a generator setting trains the reference, minutes; later ones read it from the cache).
        reference_training_patients: training population of the reference (None: 20,000; the ``tiny`` test
            preset 500).
    """

    preset: SynthPreset
    n_patients: int
    seed: int
    images: bool = True
    preview: bool = False
    workers: int | None = None
    priors: CohortPriors = field(default_factory=default_priors)
    name: str = "synthetic"
    scan_jitter_fraction: float = 0.05
    scan_jitter_max_h: float = 2.0
    second_bed_probability: float = 0.4
    residual_fraction_max: float = 0.02
    extravasation_probability: float = 0.1
    extravasation_fraction: tuple[float, float] = (0.005, 0.05)
    pet_days_before: tuple[float, float] = (1.0, 28.0)
    pet_tracers: tuple[str, ...] = ("68Ga-PSMA-11", "18F-DCFPyL")
    reference_timepoints_h: tuple[float, ...] | None = None
    single_scan_reference: bool = True
    reference_training_patients: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_patients, bool) or not isinstance(self.n_patients, int) or self.n_patients < 1:
            raise InputError(f"n_patients must be a whole number ≥ 1, got {self.n_patients!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a whole number ≥ 0, got {self.seed!r}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be ≥ 1 or None (all cores), got {self.workers}")
        if not 0.0 <= self.second_bed_probability <= 1.0 or not 0.0 <= self.extravasation_probability <= 1.0:
            raise InputError("second_bed_probability and extravasation_probability must be in [0, 1]")
        if not 0.0 <= self.residual_fraction_max < 0.5:
            raise InputError("residual_fraction_max must be in [0, 0.5)")
        if not self.pet_tracers:
            raise InputError("pet_tracers needs at least one tracer name")

        if self.reference_training_patients is not None and self.reference_training_patients < 50:
            raise InputError(f"reference_training_patients must be ≥ 50, got {self.reference_training_patients}")

    @property
    def reference_times_h(self) -> tuple[float, ...]:
        """Scan times of the single-scan reference."""
        return self.reference_timepoints_h or self.preset.timepoints_h

    @property
    def reference_population(self) -> int:
        """Training population size of the single-scan reference."""
        if self.reference_training_patients is not None:
            return self.reference_training_patients
        return _TRAINING_PATIENTS_BY_PRESET.get(self.preset.name, 20_000)


# The `tiny` preset is for tests (seconds): its reference trains on a small population (≈ 1 min once, cached).
_TRAINING_PATIENTS_BY_PRESET = {"tiny": 500}
# Settings of the single-scan bound, replaced by the single-scan reference (issue 10): refused with a pointer.
_RENAMED_PROTOCOL = {
    "single_scan_bound": "single_scan_reference",
    "bound_timepoints_h": "reference_timepoints_h",
}


_TOP_LEVEL_OVERRIDES = ("shared_variance_fraction", "timepoints_h", "activity_mbq", "max_lesions", "image_format")


def _refuse_renamed(protocol: Mapping[str, Any]) -> None:
    """Refuse the single-scan bound's old setting names with a pointer to the reference's."""
    old = sorted(set(protocol) & set(_RENAMED_PROTOCOL))
    if old:
        hints = ", ".join(f"{k} → {_RENAMED_PROTOCOL[k]}" for k in old)
        raise InputError(
            f"synth overrides protocol: {', '.join(old)} no longer exist(s): the single-scan bound was replaced by "
            f"the single-scan reference (truth/single_scan_reference.csv); rename {hints} in ludl/configs/synth.yaml"
        )


def make_config(
    preset: str,
    n_patients: int,
    seed: int,
    *,
    images: bool = True,
    preview: bool = False,
    workers: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SynthConfig:
    """Build a `SynthConfig` from a preset name and the override mapping of `ludl/configs/synth.yaml`.

    `overrides` keys: ``shared_variance_fraction``, ``timepoints_h``, ``activity_mbq``, ``max_lesions``,
    ``image_format`` (shortcuts; None = keep), ``preset`` (any `SynthPreset` field), ``priors`` (nested
    `CohortPriors` overrides) and ``protocol`` (any other `SynthConfig` field).
    """
    ov = dict(overrides or {})
    unknown = set(ov) - {*_TOP_LEVEL_OVERRIDES, "preset", "priors", "protocol"}
    if unknown:
        raise InputError(
            f"unknown synth overrides {sorted(unknown)}; "
            f"use {', '.join(_TOP_LEVEL_OVERRIDES)}, preset, priors or protocol"
        )
    preset_ov = dict(ov.get("preset") or {})
    for key in ("timepoints_h", "image_format"):
        if ov.get(key) is not None:
            preset_ov[key] = ov[key]
    priors_ov: dict[str, Any] = {k: dict(v) for k, v in (ov.get("priors") or {}).items()}
    if ov.get("shared_variance_fraction") is not None:
        priors_ov.setdefault("structure", {})["shared_variance_fraction"] = float(ov["shared_variance_fraction"])
    if ov.get("activity_mbq") is not None:
        priors_ov.setdefault("treatment", {})["activity_mbq"] = float(ov["activity_mbq"])
    chosen = get_preset(preset, preset_ov)
    max_lesions = int(ov["max_lesions"]) if ov.get("max_lesions") is not None else chosen.max_lesions
    priors_ov.setdefault("lesions", {}).setdefault("max_lesions", max_lesions)
    priors = replace_priors(default_priors(), priors_ov)
    protocol: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in (ov.get("protocol") or {}).items()
    }
    _refuse_renamed(protocol)
    return SynthConfig(
        preset=chosen,
        n_patients=int(n_patients),
        seed=int(seed),
        images=images,
        preview=preview,
        workers=workers,
        priors=priors,
        **protocol,
    )
