"""What one patient-cycle's multi-time-point dosimetry produced (`DosimetryResult`), and its one-screen summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.registration import TimepointRegistration
from ludl.errors import InputError
from ludl.imaging.volume import Volume

__all__ = ["DosimetryResult"]


@dataclass(frozen=True, eq=False)
class DosimetryResult:
    """Everything one patient-cycle's dosimetry produced.

    Attributes:
        regions: one row per region (`ludl.dosimetry.regions.REGION_COLUMNS`).
        registrations: one per time point, in time order.
        dose: absorbed dose map (Gy) on the reference SPECT grid.
        tia: TIA map (MBq·h/mL) on the same grid.
        regions_map: the region labels on that grid.
        whole_body_tumour_dose_gy: volume-weighted mean dose of the scored lesions (None without lesions).
        activity_in_fov_mbq: activity in the SPECT field of view per time point (before resampling).
        net_administered_mbq: injected − residual.
        settings: the options used; notes: warnings worth a look; seconds: time per stage; files: outputs written.
    """

    regions: tuple[dict[str, Any], ...]
    registrations: tuple[TimepointRegistration, ...]
    dose: Volume
    tia: Volume
    regions_map: RegionSet
    whole_body_tumour_dose_gy: float | None
    activity_in_fov_mbq: tuple[float, ...]
    net_administered_mbq: float
    settings: dict[str, Any]
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def region(self, name: str) -> dict[str, Any]:
        """The row of one region."""
        for row in self.regions:
            if row["region"] == name:
                return row
        raise InputError(f"no region {name!r}; regions: {', '.join(r['region'] for r in self.regions)}")

    def format(self) -> str:
        """A one-screen table: regions, registration, timing, outputs."""

        def num(value: Any, width: int, digits: int = 2) -> str:
            v = float(value) if value not in ("", None) else math.nan
            return f"{v:{width}.{digits}f}" if math.isfinite(v) else f"{'-':>{width}}"

        head = (
            f"{'region':<15}{'kind':<7}{'mL':>8}{'Gy':>8}{'Gy noPVC':>9}{'D98':>7}{'MBq·h':>10}{'model':>14}"
            f"{'Teff h':>8}"
        )
        lines = [f"settings: {', '.join(f'{k}={v}' for k, v in self.settings.items())}", head, "-" * len(head)]
        for r in self.regions:
            lines.append(
                f"{r['region']:<15}{r['kind']:<7}{num(r['volume_ml'], 8, 1)}{num(r['mean_dose_gy'], 8)}"
                f"{num(r['mean_dose_uncorrected_gy'], 9)}{num(r['d98_gy'], 7)}{num(r['tia_mbq_h'], 10, 0)}"
                f"{r['model']:>14}{num(r['t_eff_h'], 8, 1)}" + ("" if r["scored"] else "  (not scored: FOV)")
            )
        if self.whole_body_tumour_dose_gy is not None:
            lines.append(f"whole-body tumour dose: {self.whole_body_tumour_dose_gy:.2f} Gy")
        for reg in self.registrations:
            if reg.is_reference:
                lines.append(f"registration {reg.timepoint_h:g} h: reference")
                continue
            t = ", ".join(f"{v:.1f}" for v in reg.translation_mm)
            corr = reg.quality.correlation if reg.quality else math.nan
            flag = f"  FLAG: {'; '.join(reg.flags)}" if reg.flags else ""
            lines.append(f"registration {reg.timepoint_h:g} h: shift ({t}) mm, HU r {corr:.3f}{flag}")
        share = ", ".join(f"{100 * a / self.net_administered_mbq:.0f}" for a in self.activity_in_fov_mbq)
        lines.append(f"activity in FOV (% of {self.net_administered_mbq:.0f} MBq administered): {share}")
        lines += [f"note: {n}" for n in self.notes]
        if self.seconds:
            lines.append("timing: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        if self.files:
            folder = next(iter(self.files.values())).parent
            lines.append(f"written to {folder}: {', '.join(p.name for p in self.files.values())}")
        return "\n".join(lines)
