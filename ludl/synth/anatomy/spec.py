"""Label values, grid spec and the `Anatomy` result of the procedural anatomy (array type aliases too)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.io.regions import lesion_name

__all__ = [
    "ANATOMY_LABELS",
    "BLOOD",
    "BONE",
    "BOWEL",
    "F32",
    "LESION_LABEL_BASE",
    "LUNG",
    "MARROW",
    "PROFILE_BRAIN",
    "PROFILE_FAT",
    "RED",
    "SKELETON",
    "SOFT",
    "TISSUE_LABELS",
    "Anatomy",
    "AnatomySpec",
    "BoolArray",
    "FloatArray",
    "Point",
    "Slices",
]

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Slices = tuple[slice, slice, slice]
Point = Sequence[float] | FloatArray  # (x, y, z) in mm, or three semi-axes

# The generator's own label values (one table): tissue classes the kinetics and the physics need (1–6), then the
# docs/architecture.md regions (10–21), then the lesions (lesion_001 → 101, …). Fixed per name, so they carry nothing
# about the patient. They differ from the written label values (`ludl.io.regions.SEGMENTATION_CLASSES`, what the cohort
# writer maps them to) because the generator needs tissue classes (lung, bone, bowel, …) a cohort never labels.
ANATOMY_LABELS: Mapping[str, int] = MappingProxyType(
    {
        "rest_of_body": 1,
        "lung": 2,
        "bone": 3,
        "marrow_other": 4,
        "bowel": 5,
        "blood_pool": 6,
        "kidney_left": 10,
        "kidney_right": 11,
        "parotid_left": 12,
        "parotid_right": 13,
        "submandibular_left": 14,
        "submandibular_right": 15,
        "lacrimal_left": 16,
        "lacrimal_right": 17,
        "liver": 18,
        "spleen": 19,
        "bladder": 20,
        "red_marrow": 21,
    }
)
# The tissue classes: every label below the first region's.
TISSUE_LABELS: Mapping[str, int] = MappingProxyType(
    {name: value for name, value in ANATOMY_LABELS.items() if value < ANATOMY_LABELS["kidney_left"]}
)
LESION_LABEL_BASE = 100

# Short names of the labels the painters use most.
SOFT = TISSUE_LABELS["rest_of_body"]
LUNG = TISSUE_LABELS["lung"]
BONE = TISSUE_LABELS["bone"]
MARROW = TISSUE_LABELS["marrow_other"]
BOWEL = TISSUE_LABELS["bowel"]
BLOOD = TISSUE_LABELS["blood_pool"]
RED = ANATOMY_LABELS["red_marrow"]
SKELETON = (BONE, MARROW, RED)

# Uptake profile inside rest_of_body (relative PSMA-ligand concentration; assumption): fat takes up less than
# muscle, the brain almost none (blood–brain barrier; PSMA PET shows no brain uptake).
PROFILE_FAT = 0.3
PROFILE_BRAIN = 0.05


@dataclass(frozen=True)
class AnatomySpec:
    """Truth grid and body extent of a synthetic patient.

    Args:
        shape_zyx: truth-grid shape (z, y, x).
        spacing_zyx_mm: truth-grid voxel size (mm) along (z, y, x).
        extent: "torso" (a crop from the chest to the pelvis, as the grid length allows; kidneys, liver and
            L2–L4 always inside) or "whole_body" (from the vertex down, as far as the grid reaches).
        arms: "up" (outside the grid, as for torso SPECT), "down" (along the body) or "auto" (down for
            whole_body, up for torso).
        lesion_uptake_sigma_log: spread of the smooth uptake field inside lesions (log units).
        kidney_uptake_sigma_log: spread of the smooth uptake field inside kidneys (log units).
        lesion_clearance_sd_per_h: SD of the voxel clearance shift inside lesions (1/h); 0.002/h ≈ ±20 % of a
            70 h T_eff (assumption).
        kidney_clearance_sd_per_h: SD of the voxel clearance shift inside kidneys (1/h) (assumption).
        pet_voxel_correlation: correlation of the PET expression field with the 177Lu uptake field inside a
            region (the lesion-level correlation comes from `sample_pet_lesion_factor`).
        field_sigma_mm: correlation length of the heterogeneity fields (mm).
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    extent: Literal["torso", "whole_body"] = "torso"
    arms: Literal["auto", "up", "down"] = "auto"
    lesion_uptake_sigma_log: float = 0.3
    kidney_uptake_sigma_log: float = 0.15
    lesion_clearance_sd_per_h: float = 0.002
    kidney_clearance_sd_per_h: float = 0.002
    pet_voxel_correlation: float = 0.7
    field_sigma_mm: float = 6.0

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape_zyx)
        spacing = tuple(float(s) for s in self.spacing_zyx_mm)
        if len(shape) != 3 or min(shape) < 8:
            raise InputError(f"AnatomySpec.shape_zyx must be three sizes ≥ 8, got {self.shape_zyx}")
        if len(spacing) != 3 or not all(math.isfinite(s) and 0.3 <= s <= 20.0 for s in spacing):
            raise InputError(f"AnatomySpec.spacing_zyx_mm must be three lengths in [0.3, 20] mm, got {spacing}")
        if self.extent not in ("torso", "whole_body"):
            raise InputError(f"AnatomySpec.extent must be 'torso' or 'whole_body', got {self.extent!r}")
        if self.arms not in ("auto", "up", "down"):
            raise InputError(f"AnatomySpec.arms must be 'auto', 'up' or 'down', got {self.arms!r}")
        if not -1.0 <= self.pet_voxel_correlation <= 1.0:
            raise InputError(f"pet_voxel_correlation must be in [-1, 1], got {self.pet_voxel_correlation}")
        for name in (
            "lesion_uptake_sigma_log",
            "kidney_uptake_sigma_log",
            "lesion_clearance_sd_per_h",
            "kidney_clearance_sd_per_h",
        ):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InputError(f"AnatomySpec.{name} must be ≥ 0, got {getattr(self, name)}")
        if not self.field_sigma_mm > 0:
            raise InputError(f"AnatomySpec.field_sigma_mm must be > 0, got {self.field_sigma_mm}")
        object.__setattr__(self, "shape_zyx", shape)
        object.__setattr__(self, "spacing_zyx_mm", spacing)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one truth voxel (mL)."""
        return math.prod(self.spacing_zyx_mm) / 1000.0


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One patient's truth anatomy on the truth grid (hidden truth: never written as such into a cohort).

    Attributes:
        labels: int16 label map (unit "label"), 0 outside the body.
        label_values: name → label value for every region and tissue class present (docs/architecture.md regions,
            ``rest_of_body``, ``lung``, ``bone``, ``marrow_other``, ``bowel``, ``blood_pool``, ``lesion_001`` …).
        hu: CT numbers of the truth (float32, "HU"), −1000 outside the body.
        density_g_per_ml: mass density from `hu` (`ludl.physics.dose.density_from_hu`), float32.
        uptake_weight: relative 177Lu concentration inside each region (float32, ≥ 0, voxel mean 1 per label).
        clearance_shift_per_h: voxel shift of the clearance rate (1/h), zero-mean per lesion and kidney, 0
            elsewhere; independent of `uptake_weight`.
        pet_weight: relative PET concentration inside each region (voxel mean 1 per label); lesion level comes
            from `ludl.synth.kinetics.sample_pet_lesion_factor`.
        kidney_cortex: boolean mask of kidney cortex (kidney voxels outside it are medulla).
        lesion_sites: site of each lesion, in lesion order.
        lesion_volumes_ml: realised volume of each lesion (mL), in lesion order.
        requested_lesion_volumes_ml: the volumes asked for (mL).
        lesion_in_fov: per lesion, inside the SPECT field of view (filled later by the imaging/cohort code).
        landmarks_xyz_mm: named points (LPS mm): ``vertex``, ``heart``, ``bladder``, ``injection_site`` (may lie
            outside the grid), ``l2_top``, ``l4_bottom``.
        meta: the patient's hidden shape parameters (stature/frame/habitus factors, …).
    """

    labels: Volume
    label_values: Mapping[str, int]
    hu: Volume
    density_g_per_ml: Volume
    uptake_weight: F32
    clearance_shift_per_h: F32
    pet_weight: F32
    kidney_cortex: BoolArray
    lesion_sites: tuple[str, ...]
    lesion_volumes_ml: FloatArray
    requested_lesion_volumes_ml: FloatArray
    lesion_in_fov: npt.NDArray[np.bool_] | None = None
    landmarks_xyz_mm: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lesion_regions(self) -> tuple[str, ...]:
        """Lesion region names in order: ``lesion_001`` …"""
        return tuple(lesion_name(i + 1) for i in range(len(self.lesion_sites)))

    def mask(self, region: str) -> BoolArray:
        """Boolean mask of a region (``body`` = every labelled voxel)."""
        if region == "body":
            out: BoolArray = self.labels.array > 0
            return out
        if region not in self.label_values:
            raise InputError(f"region {region!r} is not in this anatomy; present: {sorted(self.label_values)}")
        m: BoolArray = self.labels.array == self.label_values[region]
        return m

    def region_volumes_ml(self) -> dict[str, float]:
        """Volume (mL) of every labelled region and tissue class, plus ``body``."""
        counts = np.bincount(self.labels.array.ravel().astype(np.int64), minlength=1)
        vox = self.labels.voxel_volume_ml
        out = {name: float(counts[v]) * vox if v < counts.size else 0.0 for name, v in self.label_values.items()}
        out["body"] = float(counts[1:].sum()) * vox
        return out
