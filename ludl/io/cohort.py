"""The `cohort.yaml` schema: name, nuclide, units per role, calibration defaults and the label map's classes.

A cohort folder (docs/architecture.md "Data formats") holds `cohort.yaml`, `manifest.csv` and optionally `outcomes.csv`.
This module owns the YAML half and the manifest roles; region names and kinds live in `ludl.io.regions`. Example::

    name: demo
    nuclide: Lu-177
    units: {spect: Bq/mL, ct: HU, pet: SUV, pet_ct: HU, mask: label}
    defaults:
      sensitivity_cps_per_mbq: 9.4   # system volume sensitivity, docs/physics.md §6
      fwhm_mm: 12.0                  # nominal reconstructed SPECT resolution
    labels: {kidney_left: 1, kidney_right: 2, liver: 9, lesion: 20}
    unlabeled: [lacrimal_left, lacrimal_right]
    resolution:                      # optional: the system resolution as the clinic measured it
      use: auto                      # auto (measured if given, else nominal) | nominal | measured | estimated
      recovery:                      # NEMA IEC sphere recovery (or fwhm_mm: 14.3, a measured FWHM)
        volume_ml: [0.52, 1.15, 2.57, 5.58, 11.49, 26.52]
        recovery: [0.13, 0.22, 0.33, 0.45, 0.55, 0.65]
      cameras: {intevo_2: {fwhm_mm: 13.1}}   # per camera: rows whose `camera` names it

`unlabeled` lists the classes an institution did not contour: their voxels are *unknown*, never background.
The label name ``lesion`` stands for all lesions under one value (each connected component is one lesion);
individual lesions may instead be labelled ``lesion_001``, ``lesion_002``, ….
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ludl.errors import LudlError, ManifestError
from ludl.io.atomic import atomic_write_text
from ludl.io.cohort_resolution import (
    RESOLUTION_USES,
    MeasuredResolution,
    ResolutionConfig,
)
from ludl.io.cohort_resolution import (
    is_number as _is_number,
)
from ludl.io.cohort_resolution import (
    parse_resolution as _parse_resolution,
)
from ludl.io.regions import LESION_CLASS, REGION_NAMES, is_lesion_name, is_region_name, region_kind
from ludl.physics.nuclides import get_nuclide

__all__ = [
    "COHORT_KEYS",
    "DEFAULTS_KEYS",
    "DEFAULT_UNITS",
    "RESOLUTION_USES",
    "ROLES",
    "ROLE_UNITS",
    "CohortConfig",
    "MeasuredResolution",
    "ResolutionConfig",
    "check_cohort_config",
    "load_cohort_config",
    "parse_cohort_config",
    "write_cohort_config",
]

# Manifest roles (docs/architecture.md "Data formats"): one image per manifest row.
ROLES: tuple[str, ...] = ("spect", "ct", "pet", "pet_ct", "mask")

# Units an image of each role may carry when the file itself does not say (NIfTI); DICOM carries its own.
ROLE_UNITS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "spect": frozenset({"Bq/mL", "MBq/mL", "counts"}),
        "ct": frozenset({"HU"}),
        "pet": frozenset({"SUV", "Bq/mL"}),
        "pet_ct": frozenset({"HU"}),
        "mask": frozenset({"label"}),
    }
)
DEFAULT_UNITS: Mapping[str, str] = MappingProxyType(
    {"spect": "Bq/mL", "ct": "HU", "pet": "SUV", "pet_ct": "HU", "mask": "label"}
)

COHORT_KEYS: tuple[str, ...] = (
    "name",
    "nuclide",
    "description",
    "units",
    "defaults",
    "labels",
    "unlabeled",
    "resolution",
)
DEFAULTS_KEYS: tuple[str, ...] = ("sensitivity_cps_per_mbq", "fwhm_mm")


def _semantic_problems(
    name: str,
    nuclide: str,
    units: Mapping[str, str],
    sensitivity_cps_per_mbq: float | None,
    fwhm_mm: float | None,
    labels: Mapping[str, int],
    unlabeled: tuple[str, ...],
) -> list[str]:
    """Problems with well-typed values; shared by the loader and `CohortConfig.__post_init__`."""
    problems: list[str] = []
    if not name.strip():
        problems.append("'name' is empty; give the cohort a name")
    try:
        get_nuclide(nuclide)
    except LudlError as err:
        problems.append(f"'nuclide': {err}")
    for role, unit in units.items():
        if role not in ROLE_UNITS:
            problems.append(f"'units' has unknown role {role!r}; roles are {', '.join(ROLES)}")
        elif unit not in ROLE_UNITS[role]:
            problems.append(
                f"'units.{role}' is {unit!r}; a {role} image may be in {', '.join(sorted(ROLE_UNITS[role]))}"
            )
    for key, value in (("sensitivity_cps_per_mbq", sensitivity_cps_per_mbq), ("fwhm_mm", fwhm_mm)):
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"'defaults.{key}' must be a positive number, got {value!r}")
    seen_values: dict[int, str] = {}
    for region, value in labels.items():
        if not is_region_name(region):
            problems.append(
                f"'labels' has unknown region {region!r}; use one of {', '.join(REGION_NAMES)}, "
                f"'{LESION_CLASS}' or lesion_001, lesion_002, …"
            )
        if value < 1:
            problems.append(f"'labels.{region}' is {value}; label values must be integers ≥ 1 (0 is background)")
        if value in seen_values:
            problems.append(f"'labels.{region}' and 'labels.{seen_values[value]}' share the value {value}")
        else:
            seen_values[value] = region
    if LESION_CLASS in labels and any(is_lesion_name(r) for r in labels):
        problems.append(f"'labels' mixes '{LESION_CLASS}' (all lesions) with individual lesion_NNN labels; use one")
    seen_unlabeled: set[str] = set()
    for region in unlabeled:
        if not is_region_name(region):
            problems.append(f"'unlabeled' has unknown region {region!r}")
        if region in labels:
            problems.append(f"{region!r} is both in 'labels' and in 'unlabeled'; keep it in one")
        if region in seen_unlabeled:
            problems.append(f"'unlabeled' lists {region!r} twice")
        seen_unlabeled.add(region)
    return problems


@dataclass(frozen=True)
class CohortConfig:
    """The contents of `cohort.yaml`, validated.

    Args:
        name: cohort name.
        nuclide: therapy nuclide, stored in canonical spelling (``"Lu-177"``).
        units: unit per manifest role for images whose file does not carry one; missing roles get `DEFAULT_UNITS`.
        sensitivity_cps_per_mbq: default SPECT system volume sensitivity (cps/MBq); a manifest cell overrides it.
        fwhm_mm: default nominal reconstructed SPECT resolution (mm); a manifest cell overrides it.
        labels: region name → integer value in the label maps (≥ 1; 0 is background).
        unlabeled: region classes this cohort did not contour (unknown voxels, not background).
        description: free text.
        resolution: the measured system resolution and which FWHM to use (None: the nominal one).
    """

    name: str
    nuclide: str = "Lu-177"
    units: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_UNITS), hash=False)
    sensitivity_cps_per_mbq: float | None = None
    fwhm_mm: float | None = None
    labels: Mapping[str, int] = field(default_factory=dict, hash=False)
    unlabeled: tuple[str, ...] = ()
    description: str = ""
    resolution: ResolutionConfig | None = None

    def __post_init__(self) -> None:
        units = {**DEFAULT_UNITS, **dict(self.units)}
        labels = dict(self.labels)
        unlabeled = tuple(self.unlabeled)
        problems = _semantic_problems(
            self.name, self.nuclide, units, self.sensitivity_cps_per_mbq, self.fwhm_mm, labels, unlabeled
        )
        if problems:
            raise ManifestError(f"invalid cohort configuration {self.name!r}:\n  " + "\n  ".join(problems))
        # Frozen means frozen: mappings become read-only views, the nuclide gets its canonical spelling.
        object.__setattr__(self, "nuclide", get_nuclide(self.nuclide).name)
        object.__setattr__(self, "units", MappingProxyType(units))
        object.__setattr__(self, "labels", MappingProxyType(labels))
        object.__setattr__(self, "unlabeled", unlabeled)

    def unit(self, role: str) -> str:
        """Unit of an image of `role` whose file carries none."""
        if role not in self.units:
            raise ManifestError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        return self.units[role]

    @property
    def label_names(self) -> dict[int, str]:
        """Label value → region name (the inverse of `labels`)."""
        return {value: name for name, value in self.labels.items()}

    def is_labeled(self, region: str) -> bool:
        """True when the label maps contour `region` (a lesion_NNN counts as labelled under ``lesion``)."""
        if region in self.labels:
            return True
        return region_kind(region) == "lesion" and LESION_CLASS in self.labels

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary in the `cohort.yaml` layout (what `write_cohort_config` dumps)."""
        out: dict[str, Any] = {"name": self.name, "nuclide": self.nuclide}
        if self.description:
            out["description"] = self.description
        out["units"] = dict(self.units)
        defaults = {
            key: value
            for key, value in (("sensitivity_cps_per_mbq", self.sensitivity_cps_per_mbq), ("fwhm_mm", self.fwhm_mm))
            if value is not None
        }
        if defaults:
            out["defaults"] = defaults
        out["labels"] = dict(self.labels)
        if self.unlabeled:
            out["unlabeled"] = list(self.unlabeled)
        if self.resolution is not None:
            out["resolution"] = self.resolution.to_dict()
        return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys (PyYAML silently keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[str] = []


def _construct_mapping_checked(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                loader.duplicate_keys.append(f"line {line}: key {key!r} repeats the one on line {seen[key]}")
            else:
                seen[key] = line
        except TypeError:  # unhashable key: construct_mapping below reports it
            pass
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping_checked,
)


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        return None, [f"cannot read the file ({err.strerror or err}); check that it exists and is readable"]
    except UnicodeDecodeError:
        return None, ["the file is not UTF-8 text; save it as UTF-8"]
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        return None, [f"not valid YAML: {err}".replace("\n", " ")]
    finally:
        loader.dispose()
    return data, list(loader.duplicate_keys)


def _parse_units(raw_units: object, problems: list[str]) -> dict[str, str]:
    units: dict[str, str] = {}
    if raw_units is None:
        return units
    if not isinstance(raw_units, Mapping):
        problems.append(f"'units' must map role → unit, got {type(raw_units).__name__}")
        return units
    for role, unit in raw_units.items():
        if not isinstance(role, str) or not isinstance(unit, str):
            problems.append(f"'units' entry {role!r}: {unit!r} must be text: text")
        else:
            units[role] = unit
    return units


def _parse_defaults(raw_defaults: object, problems: list[str]) -> dict[str, float | None]:
    defaults: dict[str, float | None] = {key: None for key in DEFAULTS_KEYS}
    if raw_defaults is None:
        return defaults
    if not isinstance(raw_defaults, Mapping):
        problems.append(f"'defaults' must be a mapping with {', '.join(DEFAULTS_KEYS)}")
        return defaults
    for key, value in raw_defaults.items():
        if key not in DEFAULTS_KEYS:
            problems.append(f"'defaults' has unknown key {key!r}; allowed keys are {', '.join(DEFAULTS_KEYS)}")
        elif value is None:
            continue
        elif not _is_number(value):
            problems.append(f"'defaults.{key}' must be a number, got {type(value).__name__} {value!r}")
        else:
            defaults[key] = float(value)
    return defaults


def _parse_labels(raw_labels: object, problems: list[str]) -> dict[str, int]:
    labels: dict[str, int] = {}
    if raw_labels is None:
        return labels
    if not isinstance(raw_labels, Mapping):
        problems.append(f"'labels' must map region name → integer, got {type(raw_labels).__name__}")
        return labels
    for region, value in raw_labels.items():
        if not isinstance(region, str):
            problems.append(f"'labels' key {region!r} must be a region name (text)")
        elif isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"'labels.{region}' must be an integer, got {type(value).__name__} {value!r}")
        else:
            labels[region] = value
    return labels


def _parse_unlabeled(raw_unlabeled: object, problems: list[str]) -> list[str]:
    unlabeled: list[str] = []
    if raw_unlabeled is None:
        return unlabeled
    if not isinstance(raw_unlabeled, list):
        problems.append(f"'unlabeled' must be a list of region names, got {type(raw_unlabeled).__name__}")
        return unlabeled
    for region in raw_unlabeled:
        if not isinstance(region, str):
            problems.append(f"'unlabeled' entry {region!r} must be a region name (text)")
        else:
            unlabeled.append(region)
    return unlabeled


def parse_cohort_config(raw: object) -> tuple[CohortConfig | None, list[str]]:
    """Check a `cohort.yaml` document (already parsed) and return (config or None, every problem found)."""
    if not isinstance(raw, Mapping):
        return None, [f"the document must be a mapping of keys ({', '.join(COHORT_KEYS)}), got {type(raw).__name__}"]
    problems: list[str] = []
    for key in raw:
        if key in DEFAULTS_KEYS:  # a calibration default written at the top level instead of under defaults:
            problems.append(f"key {key!r} belongs under 'defaults:' (write it as `defaults: {{{key}: …}}`)")
        elif key not in COHORT_KEYS:
            problems.append(f"unknown key {key!r}; allowed keys are {', '.join(COHORT_KEYS)}")

    def text(key: str, required: bool) -> str | None:
        value = raw.get(key)
        if value is None:
            if required:
                problems.append(f"'{key}' is missing")
            return None
        if not isinstance(value, str):
            problems.append(f"'{key}' must be text, got {type(value).__name__} {value!r}")
            return None
        return value

    name = text("name", True)
    nuclide = text("nuclide", True)
    description = text("description", False) or ""

    units = _parse_units(raw.get("units"), problems)
    defaults = _parse_defaults(raw.get("defaults"), problems)
    labels = _parse_labels(raw.get("labels"), problems)
    unlabeled = _parse_unlabeled(raw.get("unlabeled"), problems)
    resolution = _parse_resolution(raw.get("resolution"), problems)

    # Missing name or nuclide are already reported; check the rest with stand-ins so every problem shows at once.
    problems += _semantic_problems(
        "-" if name is None else name,
        "Lu-177" if nuclide is None else nuclide,
        units,
        defaults["sensitivity_cps_per_mbq"],
        defaults["fwhm_mm"],
        labels,
        tuple(unlabeled),
    )
    if problems or name is None or nuclide is None:
        return None, problems
    config = CohortConfig(
        name=name,
        nuclide=nuclide,
        units=units,
        sensitivity_cps_per_mbq=defaults["sensitivity_cps_per_mbq"],
        fwhm_mm=defaults["fwhm_mm"],
        labels=labels,
        unlabeled=tuple(unlabeled),
        description=description,
        resolution=resolution,
    )
    return config, []


def _config_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "cohort.yaml" if path.is_dir() else path


def check_cohort_config(path: str | Path) -> tuple[CohortConfig | None, list[str]]:
    """Read and check `cohort.yaml` (file or cohort folder) without raising: (config or None, every problem)."""
    file = _config_file(path)
    if not file.is_file():
        return None, ["file not found; every cohort needs a cohort.yaml (name, nuclide, units, labels)"]
    raw, problems = _read_yaml(file)
    if problems:  # a YAML error or duplicate key: the document cannot be trusted further
        return None, problems
    return parse_cohort_config(raw)


def load_cohort_config(path: str | Path) -> CohortConfig:
    """Load and check `cohort.yaml` (a file, or a cohort folder holding one); every problem in one `ManifestError`."""
    config, problems = check_cohort_config(path)
    if problems or config is None:
        raise ManifestError(
            f"{_config_file(path)}: {len(problems)} problem(s); fix them and retry:\n  " + "\n  ".join(problems)
        )
    return config


def write_cohort_config(config: CohortConfig, path: str | Path) -> Path:
    """Write `config` as `cohort.yaml` (atomically); `path` is the file or the cohort folder."""
    file = _config_file(path)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return atomic_write_text(file, text)
