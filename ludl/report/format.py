"""Numbers and names as a physician reads them: fixed point (never scientific notation), units, human region names."""

from __future__ import annotations

import html
import math
from typing import Any

from ludl.io.regions import is_lesion_name

__all__ = ["fmt", "fmt_ml", "region_label"]

_ORGAN_LABELS = {
    "kidney_left": "Kidney, left",
    "kidney_right": "Kidney, right",
    "parotid_left": "Parotid gland, left",
    "parotid_right": "Parotid gland, right",
    "submandibular_left": "Submandibular gland, left",
    "submandibular_right": "Submandibular gland, right",
    "lacrimal_left": "Lacrimal gland, left",
    "lacrimal_right": "Lacrimal gland, right",
    "liver": "Liver",
    "spleen": "Spleen",
    "bladder": "Bladder",
    "red_marrow": "Red marrow (L2–L4, image-based)",
    "body": "Whole body",
}


def fmt(value: Any, digits: int = 1, *, thousands: str = "\u2009") -> str:
    """A number in fixed point with `thousands` between digit groups (a thin space; '–' for missing/NaN); never
    scientific notation."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if not math.isfinite(v):
        return "–"
    v = 0.0 if round(v, digits) == 0 else v  # no "-0.0"
    return f"{v:,.{digits}f}".replace(",", thousands)


def fmt_ml(volume_ml: float) -> str:
    """A volume in mL with as many decimals as a small lesion needs (0.35, 4.2, 153, 1 540)."""
    v = float(volume_ml)
    if not math.isfinite(v):
        return "–"
    return fmt(v, 2 if abs(v) < 10 else 1 if abs(v) < 100 else 0)


def region_label(name: str) -> str:
    """Human name of a canonical region (``kidney_left`` → 'Kidney, left', ``lesion_003`` → 'Lesion 3')."""
    if is_lesion_name(name):
        return f"Lesion {int(name.split('_')[1])}"
    return _ORGAN_LABELS.get(name, name.replace("_", " ").capitalize())
