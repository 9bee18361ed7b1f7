"""System resolution for partial-volume correction: nominal, measured by the clinic, or estimated from the images.

Partial-volume correction models the reconstructed resolution as a Gaussian PSF (`ludl.dosimetry.pvc`). Its FWHM
can come from (docs/physics.md "System resolution"):

- the manifest's nominal ``fwhm_mm`` (row, else ``cohort.yaml`` defaults) — what a vendor states;
- a measurement the clinic made once, given in ``cohort.yaml`` ``resolution:`` (`ludl.io.cohort`): a measured
  FWHM, or a recovery curve (recovery vs sphere volume, as from a NEMA IEC body phantom), which is turned into the
  Gaussian FWHM whose analytic sphere recovery fits it best (`fwhm_from_recovery`);
- the images themselves (`ludl.dosimetry.resolution_estimate`): the blurred SPECT fitted against the CT-defined
  organ boundaries at every time point.

`sphere_recovery` is the mean over a uniform sphere of the sphere blurred by an isotropic Gaussian (no background):
the recovery of a NEMA sphere measured in its true (CT) volume with the background subtracted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from ludl.errors import InputError
from ludl.io.cohort import MeasuredResolution, ResolutionConfig
from ludl.physics.units import FWHM_PER_SIGMA

__all__ = [
    "NEMA_SPHERE_DIAMETERS_MM",
    "RESOLUTION_SOURCES",
    "RecoveryFit",
    "Resolution",
    "annotate_resolution",
    "choose_resolution",
    "fwhm_from_recovery",
    "measured_fwhm",
    "psf_fwhm_from_voxelised",
    "sphere_recovery",
    "sphere_volume_ml",
]

# NEMA NU 2 / IEC 61675-1 body phantom spheres: inner diameters 10, 13, 17, 22, 28, 37 mm (0.52–26.5 mL).
NEMA_SPHERE_DIAMETERS_MM: tuple[float, ...] = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
# Where the FWHM used by partial-volume correction came from (the ``resolution`` column of regions.csv).
RESOLUTION_SOURCES: tuple[str, ...] = ("nominal", "measured_fwhm", "recovery_curve", "estimated")
_ML_PER_MM3 = 1e-3
# Gauss–Legendre nodes over the sphere radius: the integrand is smooth, 64 nodes give < 1e-10.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)
# Bounds of a fitted FWHM (mm): from a sharp PET to a very blurred SPECT.
_FWHM_BOUNDS_MM = (0.5, 60.0)


def sphere_volume_ml(diameter_mm: float) -> float:
    """Volume (mL) of a sphere of the given inner diameter (mm)."""
    return math.pi / 6.0 * diameter_mm**3 * _ML_PER_MM3


def _sphere_radius_mm(volume_ml: float) -> float:
    return (3.0 * volume_ml / _ML_PER_MM3 / (4.0 * math.pi)) ** (1.0 / 3.0)


def _blurred_ball(r: npt.NDArray[np.float64], radius: float, sigma: float) -> npt.NDArray[np.float64]:
    """A uniform ball (value 1, radius `radius`) blurred by a Gaussian σ, at distance r > 0 from its centre."""
    s2 = math.sqrt(2.0) * sigma
    g = sigma / (r * math.sqrt(2.0 * math.pi))
    return np.asarray(
        0.5 * (special.erf((radius - r) / s2) + special.erf((radius + r) / s2))
        + g * (np.exp(-((radius + r) ** 2) / (2 * sigma**2)) - np.exp(-((radius - r) ** 2) / (2 * sigma**2)))
    )


def sphere_recovery(volume_ml: float | npt.ArrayLike, fwhm_mm: float) -> npt.NDArray[np.float64]:
    """Recovery of uniform spheres in a cold background: mean over each sphere of (Gaussian PSF ⊛ sphere), 0–1.

    RC = (3 / R³) ∫₀^R f(r) r² dr, with f the blurred ball in closed form (erf and Gaussian terms).

    Args:
        volume_ml: sphere volume(s), mL.
        fwhm_mm: Gaussian FWHM of the PSF, mm.
    """
    if not (math.isfinite(fwhm_mm) and fwhm_mm > 0):
        raise InputError(f"fwhm_mm must be a positive resolution in mm, got {fwhm_mm}")
    volumes = np.atleast_1d(np.asarray(volume_ml, dtype=np.float64))
    if np.any(~np.isfinite(volumes)) or np.any(volumes <= 0):
        raise InputError(f"sphere volumes must be positive (mL), got {volumes.tolist()}")
    sigma = fwhm_mm / FWHM_PER_SIGMA
    out = np.empty(volumes.size)
    for k, v in enumerate(volumes):  # a few spheres; each integral is vectorised
        radius = _sphere_radius_mm(float(v))
        r = 0.5 * radius * (_NODES + 1.0)
        integral = 0.5 * radius * float(np.sum(_WEIGHTS * _blurred_ball(r, radius, sigma) * r**2))
        out[k] = 3.0 * integral / radius**3
    return out


@dataclass(frozen=True)
class RecoveryFit:
    """The Gaussian FWHM that fits a measured recovery curve, and how well (RMS of recovery residuals)."""

    fwhm_mm: float
    rms_residual: float


def fwhm_from_recovery(volumes_ml: Sequence[float], recovery: Sequence[float]) -> RecoveryFit:
    """Gaussian FWHM whose sphere recovery (`sphere_recovery`) fits a measured recovery curve in least squares.

    Args:
        volumes_ml: sphere volumes (mL), ≥ 2 of them.
        recovery: measured recovery of each (mean in the sphere's true volume / true concentration, background
            subtracted), in (0, 1.2].
    """
    v = np.asarray(volumes_ml, dtype=np.float64)
    rc = np.asarray(recovery, dtype=np.float64)
    if v.ndim != 1 or v.shape != rc.shape or v.size < 2:
        raise InputError(
            f"a recovery curve needs ≥ 2 sphere volumes and one recovery per volume, got {v.size} and {rc.size}"
        )
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise InputError(f"recovery curve volumes must be positive (mL), got {v.tolist()}")
    if np.any(~np.isfinite(rc)) or np.any(rc <= 0) or np.any(rc > 1.2):
        raise InputError(f"recovery values must lie in (0, 1.2] (a fraction, not %), got {rc.tolist()}")

    def sse(fwhm: float) -> float:
        return float(np.sum((sphere_recovery(v, fwhm) - rc) ** 2))

    best = optimize.minimize_scalar(sse, bounds=_FWHM_BOUNDS_MM, method="bounded", options={"xatol": 1e-3})
    fwhm = float(best.x)
    return RecoveryFit(fwhm, math.sqrt(sse(fwhm) / v.size))


@dataclass(frozen=True)
class Resolution:
    """The FWHM partial-volume correction uses and where it came from.

    Attributes:
        fwhm_mm: the FWHM used, mm.
        source: one of `RESOLUTION_SOURCES`.
        nominal_fwhm_mm: the manifest's nominal FWHM.
        measured_fwhm_mm: the clinic's measurement (a FWHM, or the recovery curve's fitted FWHM), or None.
        estimated_fwhm_mm: estimated from the images, or None when not estimated.
        notes: warnings (nominal and estimate > 10 % apart, a poor recovery fit).
    """

    fwhm_mm: float
    source: str
    nominal_fwhm_mm: float
    measured_fwhm_mm: float | None = None
    estimated_fwhm_mm: float | None = None
    notes: tuple[str, ...] = ()

    def settings(self) -> dict[str, float | str]:
        """Entries for the result's settings (the values reported beside each other)."""
        out: dict[str, float | str] = {"resolution": self.source, "fwhm_used_mm": round(self.fwhm_mm, 2)}
        if self.measured_fwhm_mm is not None:
            out["fwhm_measured_mm"] = round(self.measured_fwhm_mm, 2)
        if self.estimated_fwhm_mm is not None:
            out["fwhm_estimated_mm"] = round(self.estimated_fwhm_mm, 2)
        return out


# Nominal and estimated FWHM this far apart (relative) get a warning.
WARN_RELATIVE_DIFFERENCE = 0.10
# A recovery curve whose best Gaussian leaves this RMS residual does not look like a Gaussian PSF's.
_MAX_RECOVERY_RMS = 0.05


def psf_fwhm_from_voxelised(fwhm_mm: float, voxel_mm: float | None) -> float:
    """The PSF's FWHM from a recovery-fitted one measured with tissue-fraction VOIs on a grid of `voxel_mm` voxels.

    Voxel averaging acts twice on such a measurement — the image's voxels average the blurred sphere, the VOI's
    fractions average the sphere itself — each a box of variance s²/12 per axis, so the fitted Gaussian's variance
    is σ_psf² + 2 s²/12. Partial-volume correction with tissue fractions models the voxels itself and needs σ_psf
    (NEMA-like phantom: 14.96 mm fitted for a 14.28 mm PSF at 4.8 mm; 14.31 mm after this).
    """
    if voxel_mm is None or not voxel_mm > 0:
        return fwhm_mm
    box_fwhm2 = FWHM_PER_SIGMA**2 * 2.0 * voxel_mm**2 / 12.0
    return math.sqrt(max(fwhm_mm**2 - box_fwhm2, 0.25 * fwhm_mm**2))


def measured_fwhm(measured: MeasuredResolution, voxel_mm: float | None = None) -> tuple[float, str, list[str]]:
    """(FWHM mm, source, notes) of a clinic's measurement: a FWHM as given, a recovery curve fitted.

    `voxel_mm`: voxel size of the reconstruction the recovery curve was measured on (the same protocol as the
    patients'); its voxel averaging is taken out (`psf_fwhm_from_voxelised`). None: the fitted FWHM as it is.
    """
    if measured.fwhm_mm is not None:
        return float(measured.fwhm_mm), "measured_fwhm", []
    fit = fwhm_from_recovery(measured.volume_ml, measured.recovery)
    notes = []
    if fit.rms_residual > _MAX_RECOVERY_RMS:
        notes.append(
            f"the measured recovery curve is not well described by a Gaussian PSF (best FWHM {fit.fwhm_mm:.1f} mm "
            f"leaves an RMS recovery residual of {fit.rms_residual:.3f}); check the curve in cohort.yaml"
        )
    return psf_fwhm_from_voxelised(fit.fwhm_mm, voxel_mm), "recovery_curve", notes


def choose_resolution(
    nominal_fwhm_mm: float,
    config: ResolutionConfig | None,
    camera: str | None = None,
    estimated_fwhm_mm: float | None = None,
    voxel_mm: float | None = None,
) -> Resolution:
    """The FWHM partial-volume correction uses, by `cohort.yaml` ``resolution.use``.

    ``auto``: the clinic's measurement (the camera's, else the cohort's) when given, else the nominal FWHM;
    ``nominal``, ``measured`` or ``estimated`` (the image-based estimate; the measurement or the nominal FWHM when
    no estimate could be made, with a note). A note also warns when the estimate and the nominal FWHM differ by more
    than `WARN_RELATIVE_DIFFERENCE`. `voxel_mm`: the SPECT voxel size, for a recovery curve (`measured_fwhm`).
    """
    use = "auto" if config is None else config.use
    measurement, where = (None, "") if config is None else config.for_camera(camera)
    notes: list[str] = []
    measured_mm, measured_source = None, ""
    if measurement is not None:
        measured_mm, measured_source, fit_notes = measured_fwhm(measurement, voxel_mm)
        notes += [f"{where}: {n}" for n in fit_notes]
    estimate = estimated_fwhm_mm if estimated_fwhm_mm is not None and math.isfinite(estimated_fwhm_mm) else None
    if estimate is not None and abs(estimate / nominal_fwhm_mm - 1.0) > WARN_RELATIVE_DIFFERENCE:
        notes.append(
            f"the resolution estimated from the images ({estimate:.1f} mm FWHM) differs from the nominal "
            f"{nominal_fwhm_mm:.1f} mm by {100 * (estimate / nominal_fwhm_mm - 1):+.0f} %: small regions' "
            "partial-volume correction depends on it; measure the system (cohort.yaml resolution) or set "
            "resolution.use: estimated"
        )
    fwhm, source = nominal_fwhm_mm, "nominal"
    if use == "estimated" and estimate is not None:
        fwhm, source = estimate, "estimated"
    elif use == "estimated":
        notes.append("resolution.use is estimated but no estimate could be made from the images; not used")
    if source == "nominal" and use != "nominal" and measured_mm is not None:
        fwhm, source = measured_mm, measured_source
    return Resolution(fwhm, source, nominal_fwhm_mm, measured_mm, estimate, tuple(notes))


def annotate_resolution(rows: Sequence[dict[str, Any]], resolution: Resolution) -> list[dict[str, Any]]:
    """The rows with the ``resolution`` (source) and ``fwhm_used_mm`` columns (empty where no PVC applies)."""
    out = []
    for row in rows:
        corrected = row.get("pvc", "none") != "none"
        out.append(
            {
                **row,
                "resolution": resolution.source if corrected else "",
                "fwhm_used_mm": resolution.fwhm_mm if corrected else math.nan,
            }
        )
    return out
