"""Organ tolerance limits the report compares doses with: the one place these numbers live (sources: docs/report.md).

Limits from external-beam radiotherapy or other radionuclides are guides, not thresholds proven for 177Lu-PSMA; the
report says so beside the table. Each limit applies to the region's mean absorbed dose, or to its BED where
`quantity` is ``"bed"``, accumulated over all cycles: the share a single cycle reaches is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ORGAN_LIMITS", "OrganLimit", "limit_for"]


@dataclass(frozen=True)
class OrganLimit:
    """A tolerance limit: which regions, what quantity (mean absorbed dose or BED), the value and its source."""

    group: str  # what the table calls the organ group ("kidneys", "salivary glands", "red marrow")
    regions: tuple[str, ...]  # canonical region names it applies to (each region on its own)
    quantity: str  # "bed" (biologically effective dose) or "dose" (mean absorbed dose)
    limit_gy: float
    source: str  # short citation (full references in docs/report.md)


ORGAN_LIMITS: tuple[OrganLimit, ...] = (
    # Kidney BED 40 Gy cumulative (28 Gy with risk factors): Bodei 2008 Eur J Nucl Med Mol Imaging 35:1847, the
    # figure used for 177Lu radioligand therapy; α/β and repair half-time in ludl.physics.radiobiology.
    OrganLimit("kidneys", ("kidney_left", "kidney_right"), "bed", 40.0, "Bodei 2008 (BED, cumulative)"),
    # Salivary glands: mean dose 25 Gy to the parotids (QUANTEC, Deasy 2010 Int J Radiat Oncol Biol Phys 76:S58),
    # an external-beam limit applied to 177Lu-PSMA for lack of a radionuclide one.
    OrganLimit(
        "salivary glands",
        ("parotid_left", "parotid_right", "submandibular_left", "submandibular_right"),
        "dose",
        25.0,
        "QUANTEC, Deasy 2010 (external beam)",
    ),
    # Red marrow 2 Gy absorbed dose: EANM bone-marrow dosimetry guideline (Hindorf 2010 Eur J Nucl Med Mol Imaging
    # 37:1238), from the 131I blood-dose limit of Benua 1962.
    OrganLimit("red marrow", ("red_marrow",), "dose", 2.0, "EANM, Hindorf 2010"),
)


def limit_for(region: str) -> OrganLimit | None:
    """The tolerance limit that applies to a region, or None."""
    return next((limit for limit in ORGAN_LIMITS if region in limit.regions), None)
