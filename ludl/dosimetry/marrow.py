"""Red marrow: the blood-based dose (EANM) and a flag on the image-based one when lesion spill-in dominates it.

Image-based marrow dosimetry (the lesion-free L2–L4 vertebral bodies, `red_marrow`) reads +100 % to +500 % on the
synthetic cohort: a 20–60 mL region beside bone lesions 10–100× hotter is mostly their spill-over. Clinics use the
blood-based method of the EANM guidance (Hindorf et al. 2010 EJNMMI 37:1238): the red marrow's TIA concentration is
the blood's times a red-marrow-to-blood ratio (RMBLR), which is 1 for small molecules that neither bind to blood
cells nor to marrow (`RMBLR_DEFAULT`; the guidance's choice for peptides) — the marrow self-dose then follows from
local deposition of the electrons. The guidance's total adds the cross-dose from the activity outside the marrow
(remainder of body, bone, tumour burden): `marrow_cross_dose_gy`, the dose kernel applied to the TIA map with the
marrow emptied.

- `blood_tia_mbq_h_per_ml`: ∫₀^∞ blood concentration dt from the samples (`ludl.io.blood`): piecewise-exponential
  (log-trapezoid) between samples, the first interval's exponential back to injection, a fitted exponential tail
  (`log_trapezoid_tia`); or a bi-exponential fit (``method="fit"``).
- `blood_based_marrow`: the marrow's blood-based TIA concentration and mean self-dose.
- `marrow_cross_dose_gy`: mean dose over the marrow from the activity outside it.
- `lesion_spill_share`: the share of a region's observed TIA that lesions spill into it at the resolution used;
  above `SPILL_DOMINATES` the image-based marrow value is flagged in `regions.csv` (``flag``), the notes, the HTML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.regions import RegionSet
from ludl.errors import FitError, InputError
from ludl.io.blood import BloodSamples
from ludl.physics.units import FWHM_PER_SIGMA, MBQ_PER_BQ

__all__ = [
    "BLOOD_TIA_METHODS",
    "MARROW_REGION",
    "RMBLR_DEFAULT",
    "SPILL_DOMINATES",
    "BloodMarrow",
    "blood_based_marrow",
    "blood_tia_mbq_h_per_ml",
    "lesion_spill_share",
    "log_trapezoid_tia",
    "marrow_cross_dose_gy",
]

MARROW_REGION = "red_marrow"
# EANM (Hindorf 2010): RMBLR = 1 for radiopharmaceuticals without specific binding to blood, marrow or bone.
RMBLR_DEFAULT = 1.0
# The image-based marrow value is flagged when lesions spill in more than this share of what it reads.
SPILL_DOMINATES = 0.5
# A blood curve needs this many samples for the bi-exponential (fast distribution, slow elimination).
_MIN_SAMPLES_BIEXP = 4
# How the blood samples are integrated (`blood_tia_mbq_h_per_ml`).
BLOOD_TIA_METHODS: tuple[str, ...] = ("log_trapezoid", "fit")
# Samples the tail's decay rate is fitted to (log-linear): the last ones, in the elimination phase.
_TAIL_SAMPLES = 3


@dataclass(frozen=True)
class BloodMarrow:
    """Blood-based red marrow: blood TIA concentration, marrow TIA concentration and mean dose, the fit used."""

    blood_tia_mbq_h_per_ml: float
    marrow_tia_mbq_h_per_ml: float
    mean_dose_gy: float
    model: str
    rmblr: float
    n_samples: int
    cross_dose_gy: float = math.nan  # from the activity outside the marrow (`marrow_cross_dose_gy`); NaN: not computed

    @property
    def total_dose_gy(self) -> float:
        """Self-dose plus cross-dose (EANM's total); the self-dose alone where the cross-dose was not computed."""
        return self.mean_dose_gy + (self.cross_dose_gy if math.isfinite(self.cross_dose_gy) else 0.0)


def log_trapezoid_tia(
    time_h: npt.ArrayLike, conc: npt.ArrayLike, lambda_phys_per_h: float, tail_samples: int = _TAIL_SAMPLES
) -> float:
    """∫₀^∞ of a sampled decreasing curve (e.g. blood), no model fitted through all samples.

    Between samples the curve is taken exponential (the log-trapezoid rule of pharmacokinetics; linear where a
    sample is 0 or two are equal); before the first sample, the first interval's exponential continued back to
    t = 0 (constant when the curve rises there); after the last, an exponential at the rate of a log-linear fit of
    the last `tail_samples` positive samples, never slower than physical decay (MIRD Pamphlet 16, Siegel et al. 1999
    JNM 40:37S: trapezoids with an exponential tail). Blood curves of 177Lu-PSMA have three or more phases (minutes,
    hours, days): one bi-exponential through samples spanning them misses a quarter to a half of the integral.
    """
    t = np.asarray(time_h, dtype=np.float64)
    c = np.asarray(conc, dtype=np.float64)
    if t.size < 2 or t.shape != c.shape or np.any(np.diff(t) <= 0) or t[0] < 0 or np.any(c < 0):
        raise InputError("log_trapezoid_tia needs ≥ 2 samples at increasing times ≥ 0 with concentrations ≥ 0")
    c0, c1, dt = c[:-1], c[1:], np.diff(t)
    log_ok = (c0 > 0) & (c1 > 0) & (c0 != c1)
    ratio = np.log(np.where(log_ok, c0 / np.where(log_ok, c1, 1.0), math.e))
    body = float(np.sum(np.where(log_ok, (c0 - c1) * dt / ratio, 0.5 * (c0 + c1) * dt)))
    head = float(c[0] * t[0])
    if c[0] > c[1] > 0 and t[0] > 0:
        k = math.log(c[0] / c[1]) / (t[1] - t[0])
        head = float(c[0] * math.expm1(k * t[0]) / k)
    pos = c > 0
    tail_t, tail_c = t[pos][-tail_samples:], c[pos][-tail_samples:]
    rate = lambda_phys_per_h
    if tail_t.size >= 2:
        rate = max(-float(np.polyfit(tail_t, np.log(tail_c), 1)[0]), lambda_phys_per_h)
    return head + body + float(c[-1]) / rate


def blood_tia_mbq_h_per_ml(
    samples: BloodSamples, method: str = "log_trapezoid", nuclide: str = "Lu-177"
) -> tuple[float, str]:
    """(∫₀^∞ blood concentration dt in MBq·h/mL, how): `log_trapezoid_tia` (default) or ``method="fit"``: a
    bi-exponential fit with ≥ 4 samples, else mono-exponential."""
    from ludl.physics.kinetics import fit_tac
    from ludl.physics.nuclides import get_nuclide

    if method not in BLOOD_TIA_METHODS:
        raise InputError(f"blood TIA method {method!r} is not one of {', '.join(BLOOD_TIA_METHODS)}")
    conc = samples.bq_per_ml * MBQ_PER_BQ
    if samples.time_h.size < 2:
        raise InputError(f"{samples.source}: blood-based marrow dosimetry needs ≥ 2 blood samples per cycle")
    if method == "log_trapezoid":
        if not np.any(conc > 0):
            raise FitError(f"{samples.source}: every blood sample is 0; check the values (Bq/mL)")
        return log_trapezoid_tia(samples.time_h, conc, get_nuclide(nuclide).decay_constant_per_h), "log_trapezoid"
    models = ("biexp", "mono") if samples.time_h.size >= _MIN_SAMPLES_BIEXP else ("mono",)
    last: Exception | None = None
    for model in models:
        try:
            fit = fit_tac(samples.time_h, conc, model=model, nuclide=nuclide)
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
    method: str = "log_trapezoid",
    cross_dose_gy: float = math.nan,
) -> BloodMarrow:
    """Blood-based red-marrow TIA concentration and self-dose (Gy; local electron deposition).

    Args:
        samples: the patient-cycle's blood samples.
        marrow_density_g_per_ml: mass density of the marrow region (from the CT).
        rmblr: red-marrow-to-blood ratio of TIA concentrations.
        nuclide: therapy nuclide (electron energy per decay).
        method: how the samples are integrated (`BLOOD_TIA_METHODS`).
        cross_dose_gy: the cross-dose from outside the marrow (`marrow_cross_dose_gy`), kept beside the self-dose.
    """
    from ludl.physics.dose import ldm_dose

    if not (math.isfinite(rmblr) and rmblr > 0):
        raise InputError(f"the red-marrow-to-blood ratio must be positive, got {rmblr}")
    blood_tia, model = blood_tia_mbq_h_per_ml(samples, method, nuclide)
    marrow_tia = rmblr * blood_tia
    # One 1 mL voxel holding the concentration: LDM dose = TIA · E_e / m.
    spacing = (10.0, 10.0, 10.0)
    dose = float(ldm_dose(np.asarray([marrow_tia]), spacing, np.asarray([marrow_density_g_per_ml]), nuclide)[0])
    return BloodMarrow(blood_tia, marrow_tia, dose, model, rmblr, int(samples.time_h.size), float(cross_dose_gy))


def marrow_cross_dose_gy(
    tia: npt.ArrayLike,
    regions: RegionSet,
    dose_of: Callable[[npt.NDArray[np.float64]], npt.ArrayLike],
    region: str = MARROW_REGION,
) -> float:
    """Mean dose over the marrow region from the activity outside it (EANM: remainder of body, bone, tumour burden).

    `dose_of` turns a TIA map into a dose map (the pipeline's kernel and density); the marrow's own voxels are
    emptied first, so what it returns there is cross-dose only. What lesions spilled into the marrow region goes
    with it; what they spilled around it stays, as their own activity there would. NaN without the region.
    """
    if region not in regions.values:
        return math.nan
    mask = regions.mask(region)
    outside = np.where(mask, 0.0, np.asarray(tia, dtype=np.float64))
    return float(np.asarray(dose_of(outside), dtype=np.float64)[mask].mean())


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
    sigma = [fwhm_mm / FWHM_PER_SIGMA / s for s in spacing_zyx_mm]
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
    dose_of: Callable[[npt.NDArray[np.float64]], npt.ArrayLike] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows with ``flag`` and ``blood_based_dose_gy`` filled on the red-marrow row, and notes saying why.

    The image-based marrow value stays in ``mean_dose_gy``; it is flagged when lesions spill in more than
    `SPILL_DOMINATES` of it. With blood samples, the blood-based dose goes beside it: the self-dose, plus the
    cross-dose from the activity outside the marrow when `dose_of` (TIA map → dose map) is given.
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
        cross = math.nan if dose_of is None else marrow_cross_dose_gy(tia, regions, dose_of)
        blood = blood_based_marrow(samples, density, cross_dose_gy=cross)
        marrow["blood_based_dose_gy"] = blood.total_dose_gy
        split = (
            f"self {blood.mean_dose_gy:.3f} + cross {blood.cross_dose_gy:.3f} Gy from the activity around it"
            if math.isfinite(blood.cross_dose_gy)
            else "self-dose only"
        )
        notes.append(
            f"red_marrow blood-based (EANM, RMBLR {blood.rmblr:g}, {blood.n_samples} samples, {blood.model}): "
            f"{blood.total_dose_gy:.3f} Gy, {split} (image-based {float(marrow['mean_dose_gy']):.3f} Gy); RMBLR 1 "
            "leaves out any PSMA uptake of the marrow itself"
        )
    return out, notes
