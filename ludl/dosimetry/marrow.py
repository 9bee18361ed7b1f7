"""Red marrow: the blood-based dose (EANM) and a flag on the image-based one when lesion spill-in dominates it.

Image-based marrow dosimetry (the lesion-free L2–L4 vertebral bodies, `red_marrow`) reads +100 % to +500 % on the
synthetic cohort: a 20–60 mL region beside bone lesions 10–100× hotter is mostly their spill-over. Clinics use the
blood-based method of the EANM guidance (Hindorf et al. 2010 EJNMMI 37:1238): the red marrow's TIA concentration is
the blood's times a red-marrow-to-blood ratio (RMBLR), which is 1 for small molecules that neither bind to blood
cells nor to marrow (`RMBLR_DEFAULT`; the guidance's choice for peptides) — the marrow self-dose then follows from
local deposition of the electrons (177Lu: photons add a few %, left out as in the guidance's self-dose term).

- `blood_tia_mbq_h_per_ml`: ∫ blood concentration dt from the samples (`ludl.io.blood`), bi-exponential fit.
- `blood_based_marrow`: the marrow's blood-based TIA concentration and mean dose.
- `lesion_spill_share`: the share of a region's observed TIA that lesions spill into it at the resolution used;
  above `SPILL_DOMINATES` the image-based marrow value is flagged in `regions.csv` (``flag``), the notes, the HTML.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.regions import RegionSet
from ludl.errors import FitError, InputError
from ludl.io.blood import BloodSamples
from ludl.physics.units import MBQ_PER_BQ

__all__ = [
    "MARROW_REGION",
    "RMBLR_DEFAULT",
    "SPILL_DOMINATES",
    "BloodMarrow",
    "blood_based_marrow",
    "blood_tia_mbq_h_per_ml",
    "lesion_spill_share",
]

MARROW_REGION = "red_marrow"
# EANM (Hindorf 2010): RMBLR = 1 for radiopharmaceuticals without specific binding to blood, marrow or bone.
RMBLR_DEFAULT = 1.0
# The image-based marrow value is flagged when lesions spill in more than this share of what it reads.
SPILL_DOMINATES = 0.5
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# A blood curve needs this many samples for the bi-exponential (fast distribution, slow elimination).
_MIN_SAMPLES_BIEXP = 4


@dataclass(frozen=True)
class BloodMarrow:
    """Blood-based red marrow: blood TIA concentration, marrow TIA concentration and mean dose, the fit used."""

    blood_tia_mbq_h_per_ml: float
    marrow_tia_mbq_h_per_ml: float
    mean_dose_gy: float
    model: str
    rmblr: float
    n_samples: int


def blood_tia_mbq_h_per_ml(samples: BloodSamples) -> tuple[float, str]:
    """(∫₀^∞ blood concentration dt in MBq·h/mL, model): bi-exponential with ≥ 4 samples, else mono-exponential."""
    from ludl.physics.kinetics import fit_tac

    conc = samples.bq_per_ml * MBQ_PER_BQ
    if samples.time_h.size < 2:
        raise InputError(f"{samples.source}: blood-based marrow dosimetry needs ≥ 2 blood samples per cycle")
    models = ("biexp", "mono") if samples.time_h.size >= _MIN_SAMPLES_BIEXP else ("mono",)
    last: Exception | None = None
    for model in models:
        try:
            fit = fit_tac(samples.time_h, conc, model=model)
        except FitError as err:
            last = err
            continue
        if math.isfinite(fit.tia) and fit.tia > 0:
            return float(fit.tia), fit.model
    raise FitError(f"{samples.source}: the blood samples could not be fitted ({last}); check their times and values")


def blood_based_marrow(
    samples: BloodSamples,
    marrow_density_g_per_ml: float,
    rmblr: float = RMBLR_DEFAULT,
    nuclide: str = "Lu-177",
) -> BloodMarrow:
    """Blood-based red-marrow TIA concentration and self-dose (Gy; local electron deposition).

    Args:
        samples: the patient-cycle's blood samples.
        marrow_density_g_per_ml: mass density of the marrow region (from the CT).
        rmblr: red-marrow-to-blood ratio of TIA concentrations.
        nuclide: therapy nuclide (electron energy per decay).
    """
    from ludl.physics.dose import ldm_dose

    if not (math.isfinite(rmblr) and rmblr > 0):
        raise InputError(f"the red-marrow-to-blood ratio must be positive, got {rmblr}")
    blood_tia, model = blood_tia_mbq_h_per_ml(samples)
    marrow_tia = rmblr * blood_tia
    # One 1 mL voxel holding the concentration: LDM dose = TIA · E_e / m.
    spacing = (10.0, 10.0, 10.0)
    dose = float(ldm_dose(np.asarray([marrow_tia]), spacing, np.asarray([marrow_density_g_per_ml]), nuclide)[0])
    return BloodMarrow(blood_tia, marrow_tia, dose, model, rmblr, int(samples.time_h.size))


def lesion_spill_share(
    tia: npt.ArrayLike,
    regions: RegionSet,
    lesion_tia_mbq_h_per_ml: Mapping[str, float],
    spacing_zyx_mm: Sequence[float],
    fwhm_mm: float,
    region: str = MARROW_REGION,
) -> float:
    """Share of a region's observed mean TIA that the lesions spill into it (0–1; NaN without the region).

    The lesions, each uniform at its (corrected) TIA concentration, are blurred by the Gaussian PSF; their mean over
    the region, over the region's observed mean, is the spill-in share.
    """
    if region not in regions.values:
        return math.nan
    lesions = np.zeros(regions.labels.shape, dtype=np.float64)
    for name, conc in lesion_tia_mbq_h_per_ml.items():
        if name in regions.values and math.isfinite(conc) and conc > 0:
            lesions[regions.labels == regions.values[name]] = conc
    mask = regions.mask(region)
    observed = float(np.asarray(tia, dtype=np.float64)[mask].mean())
    if not lesions.any() or observed <= 0:
        return 0.0
    sigma = [fwhm_mm / _FWHM_PER_SIGMA / s for s in spacing_zyx_mm]
    spill = float(np.asarray(ndimage.gaussian_filter(lesions, sigma, mode="constant", truncate=4.0))[mask].mean())
    return min(spill / observed, 1.0)


def lesion_concentrations(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each scored lesion's (corrected) TIA concentration, MBq·h/mL, from the region rows."""
    out: dict[str, float] = {}
    for row in rows:
        if row["kind"] == "lesion" and row.get("scored", True):
            tia, volume = float(row["tia_mbq_h"]), float(row["volume_ml"])
            if math.isfinite(tia) and volume > 0:
                out[str(row["region"])] = tia / volume
    return out


def annotate_marrow(
    rows: Sequence[dict[str, Any]],
    regions: RegionSet,
    tia: npt.ArrayLike,
    density_g_per_ml: npt.ArrayLike,
    spacing_zyx_mm: Sequence[float],
    fwhm_mm: float,
    samples: BloodSamples | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows with ``flag`` and ``blood_based_dose_gy`` filled on the red-marrow row, and notes saying why.

    The image-based marrow value stays in ``mean_dose_gy``; it is flagged when lesions spill in more than
    `SPILL_DOMINATES` of it. With blood samples, the blood-based dose goes beside it.
    """
    out = [{**row, "flag": row.get("flag", ""), "blood_based_dose_gy": math.nan} for row in rows]
    marrow = next((r for r in out if r["region"] == MARROW_REGION), None)
    if marrow is None:
        return out, []
    notes: list[str] = []
    share = lesion_spill_share(tia, regions, lesion_concentrations(out), spacing_zyx_mm, fwhm_mm)
    if math.isfinite(share) and share > SPILL_DOMINATES:
        marrow["flag"] = f"lesion spill-in {100 * share:.0f} % of the image value"
        notes.append(
            f"red_marrow: lesions spill in ≈ {100 * share:.0f} % of its image-based value; the image-based marrow "
            "dose is not usable for decisions"
            + ("; use the blood-based value" if samples is not None else "; give blood samples (blood.csv)")
        )
    if samples is not None:
        mask = regions.mask(MARROW_REGION)
        density = float(np.asarray(density_g_per_ml, dtype=np.float64)[mask].mean())
        blood = blood_based_marrow(samples, density)
        marrow["blood_based_dose_gy"] = blood.mean_dose_gy
        notes.append(
            f"red_marrow blood-based (EANM, RMBLR {blood.rmblr:g}, {blood.n_samples} samples, {blood.model} fit): "
            f"{blood.mean_dose_gy:.3f} Gy (image-based {float(marrow['mean_dose_gy']):.3f} Gy)"
        )
    return out, notes
