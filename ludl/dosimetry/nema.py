"""A NEMA IEC body phantom-like sphere phantom on a SPECT grid: its recovery curve, and partial-volume correction of it.

Six spheres (10–37 mm, 0.52–26.5 mL, `NEMA_SPHERE_DIAMETERS_MM`) in a uniform background, drawn on a fine grid,
blurred by a Gaussian of the *true* FWHM and averaged onto the SPECT grid (so the voxel-size partial-volume effect is
there too); the label map is the spheres' tissue fractions of every SPECT voxel, as a CT-defined VOI gives.

- `simulate_sphere_phantom`: the SPECT image and the fractions.
- `measure_recovery`: what a clinic measures once with the phantom: each sphere's fraction-weighted mean over its true
  concentration, background subtracted — the curve `cohort.yaml` ``resolution.recovery`` takes.
- `gtm_sphere_means`: GTM-corrected sphere concentrations at a given FWHM (the pipeline's fractional GTM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.pvc import fractional_means, gtm_matrix_fractional, gtm_solve
from ludl.dosimetry.resolution import NEMA_SPHERE_DIAMETERS_MM, sphere_volume_ml
from ludl.physics.units import FWHM_PER_SIGMA

__all__ = ["SpherePhantom", "gtm_sphere_means", "measure_recovery", "simulate_sphere_phantom"]

# Fine-grid subdivisions of one SPECT voxel per axis (4.8 mm → 1.2 mm).
_SUPERSAMPLE = 4
# NEMA IEC: sphere centres on a 57.2 mm radius ring (here in one transaxial plane).
_RING_RADIUS_MM = 57.2


@dataclass(frozen=True, eq=False)
class SpherePhantom:
    """The phantom on the SPECT grid.

    Attributes:
        image: (z, y, x) activity concentration (true sphere concentration `sphere_conc`, background `background`).
        fractions: (n_spheres, z, y, x) tissue fraction of each sphere in every voxel.
        volumes_ml: true sphere volumes; spacing_mm: SPECT voxel size (isotropic).
    """

    image: npt.NDArray[np.float64]
    fractions: npt.NDArray[np.float64]
    volumes_ml: tuple[float, ...]
    spacing_mm: float
    sphere_conc: float
    background: float


def simulate_sphere_phantom(
    true_fwhm_mm: float,
    spacing_mm: float = 4.8,
    sphere_conc: float = 8.0,
    background: float = 1.0,
    diameters_mm: Sequence[float] = NEMA_SPHERE_DIAMETERS_MM,
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> SpherePhantom:
    """Spheres at `sphere_conc` in a uniform `background`, blurred by the true FWHM, on an isotropic SPECT grid.

    Args:
        true_fwhm_mm: FWHM of the Gaussian that blurs the phantom.
        spacing_mm: SPECT voxel size.
        sphere_conc, background: activity concentrations (any unit).
        diameters_mm: sphere diameters (default NEMA IEC).
        offset_mm: sub-voxel shift (z, y, x) of the phantom against the SPECT grid.
    """
    fine = spacing_mm / _SUPERSAMPLE
    half_extent = _RING_RADIUS_MM + max(diameters_mm) / 2 + 3 * true_fwhm_mm
    n_xy = math.ceil(2 * half_extent / spacing_mm)
    n_z = math.ceil((max(diameters_mm) + 6 * true_fwhm_mm) / spacing_mm)
    shape_fine = (n_z * _SUPERSAMPLE, n_xy * _SUPERSAMPLE, n_xy * _SUPERSAMPLE)
    axes = [(np.arange(n) + 0.5) * fine - n * fine / 2 - o for n, o in zip(shape_fine, offset_mm, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    spheres = []
    for k, d in enumerate(diameters_mm):
        angle = 2 * math.pi * k / len(diameters_mm)
        cy, cx = _RING_RADIUS_MM * math.sin(angle), _RING_RADIUS_MM * math.cos(angle)
        spheres.append((z**2 + (y - cy) ** 2 + (x - cx) ** 2) <= (d / 2) ** 2)
    inside = np.any(spheres, axis=0)
    activity = np.where(inside, sphere_conc, background).astype(np.float64)
    blurred = ndimage.gaussian_filter(activity, true_fwhm_mm / FWHM_PER_SIGMA / fine, mode="nearest")

    def coarse(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        s = _SUPERSAMPLE
        return np.asarray(a.reshape(n_z, s, n_xy, s, n_xy, s).mean(axis=(1, 3, 5)))

    fractions = np.stack([coarse(m.astype(np.float64)) for m in spheres])
    volumes = tuple(sphere_volume_ml(d) for d in diameters_mm)
    return SpherePhantom(coarse(blurred), fractions, volumes, spacing_mm, sphere_conc, background)


def measure_recovery(phantom: SpherePhantom) -> npt.NDArray[np.float64]:
    """Each sphere's recovery: (fraction-weighted mean − background) / (true concentration − background)."""
    out = []
    for f in phantom.fractions:
        mean = float(np.sum(f * phantom.image) / np.sum(f))
        out.append((mean - phantom.background) / (phantom.sphere_conc - phantom.background))
    return np.asarray(out)


def gtm_sphere_means(
    phantom: SpherePhantom, fwhm_mm: float, extra_variance_zyx_mm2: Sequence[float] | None = None
) -> npt.NDArray[np.float64]:
    """GTM-corrected concentration of every sphere at `fwhm_mm` (spheres with fractions, background the rest),
    the PSF widened by `extra_variance_zyx_mm2` (mm² per axis, e.g. a resampling's blur) where given."""
    n_spheres = phantom.fractions.shape[0]
    n = n_spheres + 1
    total = phantom.fractions.sum(axis=0)
    index = np.where(total <= 1e-9, n - 1, -1).astype(np.int64)
    for k in range(n_spheres):
        index[(phantom.fractions[k] >= 1.0 - 1e-9)] = k
    index[(index == -1) & (total <= 1e-9)] = n - 1
    mixed_voxels = np.flatnonzero(index == -1)
    voxel, region, fraction = [], [], []
    for k in range(n_spheres):
        f = phantom.fractions[k].ravel()[mixed_voxels]
        keep = f > 0
        voxel.append(mixed_voxels[keep])
        region.append(np.full(int(keep.sum()), k))
        fraction.append(f[keep])
    rest = 1.0 - total.ravel()[mixed_voxels]
    voxel.append(mixed_voxels[rest > 0])
    region.append(np.full(int((rest > 0).sum()), n - 1))
    fraction.append(rest[rest > 0])
    mixed = (np.concatenate(voxel), np.concatenate(region), np.concatenate(fraction))
    spacing = (phantom.spacing_mm,) * 3
    w, counts = gtm_matrix_fractional(index, n, mixed, spacing, fwhm_mm, extra_variance_zyx_mm2)
    observed = fractional_means(phantom.image, index, n, mixed, counts)
    return np.asarray(gtm_solve(w, observed)[:n_spheres])
