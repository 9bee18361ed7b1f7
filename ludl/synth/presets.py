"""Size presets of the synthetic cohort: grids, time points, lesion cap and output format per preset.

`tiny` is for tests (seconds per patient), `demo` for a 2-core CPU (≤ 5 s per patient), `clinical` for the
clinical geometry (4.8 mm whole-body SPECT, 5 time points, ≤ 60 s per patient). The truth grid is the SPECT
grid refined by `truth_factor` (docs/synthetic-cohort.md SPECT table: truth on a grid finer than the SPECT's, e.g. 2×).
The numbers live in ``ludl/configs/preset/<name>.yaml`` (the ``preset`` config group of ``ludl synth``); this module
reads them. Any field may be overridden by a mapping (what ``ludl synth preset.<field>=…`` gives).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, get_type_hints

import yaml

from ludl.errors import InputError

__all__ = ["PRESETS", "SynthPreset", "get_preset"]


@dataclass(frozen=True)
class SynthPreset:
    """Geometry and protocol of one preset.

    Args:
        name: preset name.
        extent: ``"torso"`` (neck to pelvis) or ``"whole_body"`` (head to pelvis), passed to the anatomy.
        spect_shape_zyx: SPECT matrix (z, y, x).
        spect_spacing_mm: isotropic SPECT voxel size (mm).
        truth_factor: truth grid = SPECT grid refined by this integer factor per axis.
        timepoints_h: nominal SPECT/CT time points after injection (h), increasing
            (docs/synthetic-cohort.md: 4, 24, 48, 96, 168).
        reference_timepoint_h: the time point the label map is drawn on and the truth maps are posed in.
        max_lesions: lesion cap for the grid size (docs/synthetic-cohort.md: "keep a config cap for small grids").
        image_format: ``"nifti"`` or ``"dicom"`` for the written images.
        pet_spacing_mm: PET voxel size (mm) (docs/synthetic-cohort.md: 3–4 mm; coarser for small presets).
        fwhm_mm: nominal reconstructed SPECT resolution written to the manifest (docs/synthetic-cohort.md: ≈ 10–15 mm).
        n_cycles: cycles in the truth tables (cycle 2 from `sample_next_cycle_kinetics`).
        cycle2_images: also write images of cycle 2.
    """

    name: str
    extent: Literal["torso", "whole_body"]
    spect_shape_zyx: tuple[int, int, int]
    spect_spacing_mm: float
    truth_factor: int = 2
    timepoints_h: tuple[float, ...] = (4.0, 24.0, 48.0, 96.0, 168.0)
    reference_timepoint_h: float = 24.0
    max_lesions: int = 150
    image_format: str = "nifti"
    pet_spacing_mm: float = 4.0
    fwhm_mm: float = 12.0
    n_cycles: int = 2
    cycle2_images: bool = False

    def __post_init__(self) -> None:
        if self.extent not in ("torso", "whole_body"):
            raise InputError(f"preset {self.name!r}: extent must be 'torso' or 'whole_body', got {self.extent!r}")
        if len(self.spect_shape_zyx) != 3 or min(self.spect_shape_zyx) < 8:
            raise InputError(
                f"preset {self.name!r}: spect_shape_zyx must be three sizes ≥ 8, got {self.spect_shape_zyx}"
            )
        if not 0.5 <= self.spect_spacing_mm <= 20.0 or self.truth_factor < 1:
            raise InputError(f"preset {self.name!r}: spect_spacing_mm in [0.5, 20] mm and truth_factor ≥ 1 needed")
        tp = tuple(float(t) for t in self.timepoints_h)
        if not tp or any(b <= a for a, b in itertools.pairwise(tp)) or tp[0] <= 0:
            raise InputError(f"preset {self.name!r}: timepoints_h must be increasing and > 0 h, got {tp}")
        if not any(abs(t - self.reference_timepoint_h) < 1e-9 for t in tp):
            raise InputError(
                f"preset {self.name!r}: reference_timepoint_h {self.reference_timepoint_h} is not one of {tp}"
            )
        if self.image_format not in ("nifti", "dicom"):
            raise InputError(f"preset {self.name!r}: image_format must be 'nifti' or 'dicom'")
        if self.n_cycles not in (1, 2):
            raise InputError(f"preset {self.name!r}: n_cycles must be 1 or 2")
        object.__setattr__(self, "timepoints_h", tp)
        object.__setattr__(self, "spect_shape_zyx", tuple(int(n) for n in self.spect_shape_zyx))

    @property
    def truth_spacing_mm(self) -> float:
        """Isotropic truth voxel size (mm)."""
        return self.spect_spacing_mm / self.truth_factor

    @property
    def truth_shape_zyx(self) -> tuple[int, int, int]:
        """Truth grid shape (z, y, x): the SPECT field of view at the finer spacing."""
        z, y, x = self.spect_shape_zyx
        f = self.truth_factor
        return (z * f, y * f, x * f)


def _read_packaged_preset(name: str) -> SynthPreset:
    """The preset ``ludl/configs/preset/<name>.yaml`` (the one place for the numbers; also a Hydra config group)."""
    text = resources.files("ludl.configs").joinpath("preset", f"{name}.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    if not isinstance(values, dict) or values.get("name") != name:
        raise InputError(f"ludl/configs/preset/{name}.yaml must be a mapping with name: {name}; reinstall ludl")
    hints = get_type_hints(SynthPreset)
    # YAML writes 8 and 8.0 alike for a float field: make the type exact so the preset compares (and prints) equal.
    typed: dict[str, Any] = {
        k: (float(v) if hints.get(k) is float else tuple(v) if isinstance(v, list) else v) for k, v in values.items()
    }
    return SynthPreset(**typed)


def _packaged_preset_names() -> list[str]:
    folder = resources.files("ludl.configs").joinpath("preset")
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


# tiny (tests), demo (2-core CPU), clinical (4.8 mm whole body): ludl/configs/preset/*.yaml, read once.
PRESETS: Mapping[str, SynthPreset] = MappingProxyType(
    {name: _read_packaged_preset(name) for name in _packaged_preset_names()}
)


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> SynthPreset:
    """The preset called `name`, with fields replaced by `overrides` (unknown keys are an error)."""
    if name not in PRESETS:
        raise InputError(f"unknown synth preset {name!r}; use one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if not overrides:
        return preset
    known = {f.name for f in dataclasses.fields(SynthPreset)}
    unknown = set(overrides) - known
    if unknown:
        raise InputError(f"unknown preset fields {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
    return dataclasses.replace(preset, **values)
