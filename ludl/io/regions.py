"""Region names, their kinds and the segmentation class table: the one place every layer reads them from.

Region names (``kidney_left`` … ``body``, ``lesion_001`` …) are shared by label maps, the synthetic truth and the
ground truth. `SEGMENTATION_CLASSES` is the canonical class index a network predicts and a prepared case stores:
it never depends on a cohort's own label values (those live in its `cohort.yaml`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ludl.errors import InputError, ManifestError

__all__ = [
    "BACKGROUND",
    "EVALUATION_CLASSES",
    "KINDS",
    "LESION_CLASS",
    "ORGAN_REGIONS",
    "REGION_KINDS",
    "REGION_NAMES",
    "SEGMENTATION_CLASSES",
    "SegmentationClass",
    "class_index",
    "evaluation_class",
    "is_lesion_name",
    "is_region_name",
    "lesion_name",
    "region_class_name",
    "region_kind",
]

KINDS: tuple[str, ...] = ("organ", "lesion", "marrow", "body")

# Canonical region names (docs/architecture.md "Public names"), shared by label maps, truth and ground truth.
ORGAN_REGIONS: tuple[str, ...] = (
    "kidney_left",
    "kidney_right",
    "parotid_left",
    "parotid_right",
    "submandibular_left",
    "submandibular_right",
    "lacrimal_left",
    "lacrimal_right",
    "liver",
    "spleen",
    "bladder",
)
# red_marrow is the lesion-free L2–L4 vertebral bodies, in truth and pipeline alike.
REGION_NAMES: tuple[str, ...] = (*ORGAN_REGIONS, "red_marrow", "body")
REGION_KINDS: Mapping[str, str] = MappingProxyType(
    {**{name: "organ" for name in ORGAN_REGIONS}, "red_marrow": "marrow", "body": "body"}
)
# One label value for all lesions of a label map; connected components become lesion_001, lesion_002, …
LESION_CLASS = "lesion"
BACKGROUND = "background"
_LESION_RE = re.compile(r"^lesion_(\d{3,})$")


@dataclass(frozen=True)
class SegmentationClass:
    """One class of the canonical segmentation: its index in label maps and network outputs, name and kind."""

    index: int
    name: str
    kind: str


# Index 0 is background (what is contoured as none of the others); `body` is not a class (it is everything). All
# lesions share one class: lesion instances are the connected components (or a case's lesion_NNN regions).
SEGMENTATION_CLASSES: tuple[SegmentationClass, ...] = (
    SegmentationClass(0, BACKGROUND, "background"),
    *(SegmentationClass(i + 1, name, "organ") for i, name in enumerate(ORGAN_REGIONS)),
    SegmentationClass(len(ORGAN_REGIONS) + 1, "red_marrow", "marrow"),
    SegmentationClass(len(ORGAN_REGIONS) + 2, LESION_CLASS, "lesion"),
)
_CLASS_INDEX: Mapping[str, int] = MappingProxyType({c.name: c.index for c in SEGMENTATION_CLASSES})


def lesion_name(index: int) -> str:
    """Canonical name of lesion number `index` (1-based): ``lesion_001``; order carries no meaning."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 1:
        raise InputError(f"lesion index must be an integer ≥ 1, got {index!r}")
    return f"lesion_{index:03d}"


def is_lesion_name(name: str) -> bool:
    """True for ``lesion_001``, ``lesion_002``, … (canonical spelling only)."""
    match = _LESION_RE.match(name)
    return match is not None and int(match.group(1)) >= 1 and lesion_name(int(match.group(1))) == name


def is_region_name(name: str) -> bool:
    """True for a canonical region name (``kidney_left`` … ``body``, ``lesion_001`` …) or the class ``lesion``."""
    return name in REGION_KINDS or name == LESION_CLASS or is_lesion_name(name)


def region_kind(name: str) -> str:
    """The kind of a region name: ``organ``, ``lesion``, ``marrow`` or ``body``."""
    if name in REGION_KINDS:
        return REGION_KINDS[name]
    if name == LESION_CLASS or is_lesion_name(name):
        return "lesion"
    raise ManifestError(
        f"unknown region name {name!r}; use one of {', '.join(REGION_NAMES)}, "
        f"'{LESION_CLASS}' or lesion_001, lesion_002, …"
    )


# The region classes methods are compared on (docs/architecture.md "Evaluation"): the STP baselines, the single-scan
# reference and the evaluation tables all group regions this way.
EVALUATION_CLASSES: tuple[str, ...] = ("kidneys", "salivary", "lacrimal", "liver", "spleen", "red_marrow", "lesions")


def evaluation_class(region: str, kind: str | None = None) -> str | None:
    """The `EVALUATION_CLASSES` class of a region (``kidney_left`` → ``kidneys``); None for bladder, body, blood, …"""
    if kind == "lesion" or region == LESION_CLASS or is_lesion_name(region):
        return "lesions"
    if region.startswith("kidney"):
        return "kidneys"
    if region.startswith(("parotid", "submandibular")):
        return "salivary"
    if region.startswith("lacrimal"):
        return "lacrimal"
    if region in ("liver", "spleen", "red_marrow"):
        return region
    return None


def region_class_name(name: str) -> str | None:
    """The segmentation class a region belongs to (``lesion_007`` → ``lesion``); None for ``body``."""
    if is_lesion_name(name) or name == LESION_CLASS:
        return LESION_CLASS
    return name if name in _CLASS_INDEX else None


def class_index(name: str) -> int:
    """Index of a segmentation class or of a region in it (``liver`` → 9, ``lesion_003`` → the lesion class)."""
    cls = region_class_name(name)
    if cls is None:
        raise InputError(
            f"{name!r} is not a segmentation class; classes are {', '.join(c.name for c in SEGMENTATION_CLASSES)}"
        )
    return _CLASS_INDEX[cls]
