"""The dose point kernel of a nuclide: radial energy deposition around a point source, and sphere S values.

Model (docs/physics.md §4). The isotropic dose point kernel D(r) of the nuclide (dose per decay at distance r from a
point source in an infinite homogeneous medium) is the sum of

- **electrons**: Monte Carlo scaled dose point kernels of monoenergetic electrons in water, F(x, E) with
  x = r / r0(E) (EGSnrc/EDKnrc, Mainegra-Hing, Rogers & Kawrakow 2005, Med Phys 32:685; 10 keV, 15 keV, 100 keV,
  1 MeV, interpolated in log E), weighted by the ICRP-107 β⁻ spectrum and the discrete conversion and Auger
  electrons. r0(E) is the CSDA range of the medium from NIST ESTAR (soft tissue: "Tissue, soft (ICRP)";
  bone: "Bone, cortical (ICRP)"), divided by the medium density: the scaled kernel is taken as medium independent
  once expressed in units of the medium's own CSDA range (range scaling). Electrons below 10 keV (ESTAR's lowest
  energy; CSDA range ≤ 2.5 µm; 1.3 keV, 0.9 % of the 177Lu electron energy) deposit locally.
- **photons**: γ and X lines ≥ 15 keV by attenuation with build-up,
  D(r) = Σ y E (μ_en/ρ) B(μr) e^(−μr) / (4π r²), with μ/ρ and μ_en/ρ from Hubbell & Seltzer (NIST SRD 126,
  ICRU-44 skeletal muscle for soft tissue, ICRU-44 cortical bone for bone) and the ANSI/ANS-6.4.3 geometric-
  progression build-up fit (water for soft tissue; aluminium for cortical bone, whose μ_en/μ is 1.0–1.13 times
  aluminium's over 60–300 keV). The published fits are exposure (air response) build-up factors; their scattered
  part B − 1 is scaled per line so that ∫ B e^(−x) dx = μ/μ_en, i.e. an infinite medium absorbs all the photon
  energy (scale 0.96–1.03 for the 177Lu lines with water, 1.16–1.67 with aluminium in bone). Lines below 15 keV
  (Hf L X-rays, 0.3 keV per decay, mean free path ≤ 2.5 mm) deposit locally.

Both parts are tabulated once per (nuclide, medium) as r²·D(r) on a log radial grid (`RadialModel`), with the
cumulative moments ∫ r^p · r²D dr (p ≤ 3) that `ludl.physics.kernels` integrates into voxel S values and
`sphere_s_value_mgy_per_mbq_s` into sphere S values. A change to this model must bump
`ludl.physics.kernels.KERNEL_MODEL_VERSION` (it keys the kernel disk cache).

Units: D in mGy/(MBq·s) (the unit of published tables); `ludl.physics.dose` converts to Gy/(MBq·h) in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError, KernelError
from ludl.physics.kernel_data import (
    MAX_ELECTRON_MEV,
    MAX_PHOTON_MEV,
    MEDIA,
    Medium,
    gp_buildup,
    loglog_interp,
    scaled_electron_kernel_cdf,
    tables,
)
from ludl.physics.nuclides import J_PER_MEV, Nuclide, get_nuclide

__all__ = [
    "BETA_NODES",
    "MGY_PER_MBQ_S_PER_MEV_PER_G",
    "RADIAL_PER_DECADE",
    "PhotonLine",
    "RadialModel",
    "canonical_names",
    "point_kernel_mgy_per_mbq_s",
    "radial_model",
    "sphere_s_value_mgy_per_mbq_s",
]

# MeV/g per decay → mGy/(MBq·s): J/MeV × 1000 g/kg × 1e6 decays/(MBq·s) × 1000 mGy/Gy.
MGY_PER_MBQ_S_PER_MEV_PER_G = J_PER_MEV * 1e3 * 1e6 * 1e3
_G_PER_MM3_PER_G_PER_ML = 1e-3  # 1 g/cm³ = 1e-3 g/mm³
_MM2_PER_CM2 = 100.0

_ELECTRON_LOCAL_BELOW_MEV = 0.010  # ESTAR's first energy and the lowest tabulated scaled kernel
_PHOTON_LOCAL_BELOW_MEV = 0.015  # first energy of the ANS-6.4.3 build-up fits
BETA_NODES = 400  # β spectrum quadrature nodes (trapezoid on a uniform grid up to the endpoint)
RADIAL_PER_DECADE = 240  # log radial grid for the tabulated energy deposition
_R_MIN_MM = 1e-5
_R_MAX_MM = 4000.0  # covers 2R of the largest sphere (0.58 m) and the corner of the largest kernel (2.2 m)

# One photon line of the model: (y·E MeV per decay, μ 1/mm, μ_en/ρ mm²/g, build-up scatter scale s, E MeV).
PhotonLine = tuple[float, float, float, float, float]


# ------------------------------------------------------------------------------------------- radial model


@dataclass(frozen=True)
class RadialModel:
    """Energy deposition around a point source, per decay, on a radial grid (mm) in one medium.

    ``f`` is r²·D(r) in MeV·mm²/g, piecewise constant on the grid cells (cell averages, so the energy in every
    shell is exact); ``moments[p, j]`` = ∫₀^{r_j} r^p f dr. ``local_mev`` is deposited at the source point.
    """

    edges_mm: npt.NDArray[np.float64]
    f_electron: npt.NDArray[np.float64]
    f_photon: npt.NDArray[np.float64]
    f_total: npt.NDArray[np.float64]
    f_photon_at_edges: npt.NDArray[np.float64]  # r²·D_photon at the grid edges, for fast interpolation
    moments: npt.NDArray[np.float64]
    local_mev: float
    electron_mev: float  # emitted electron energy per decay (ICRP-107), of which local_mev is local
    photon_mev: float  # emitted photon energy per decay
    photon_local_mev: float
    electron_range_mm: float  # beyond this radius no electron energy is deposited
    density_g_per_mm3: float
    photon_lines: tuple[PhotonLine, ...]  # see PhotonLine
    gp_material: str

    def photon_f(self, r_mm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """r²·D_photon(r) in MeV·mm²/g, evaluated from the line parameters (smooth, any r ≥ 0)."""
        return _photon_r2_dose(self.photon_lines, self.gp_material, r_mm)

    def moment_at(self, r_mm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """∫₀^r s^p f(s) ds for p = 0..3 at arbitrary radii: shape (4, *r.shape)."""
        r = np.clip(np.asarray(r_mm, dtype=np.float64), 0.0, self.edges_mm[-1])
        j = np.clip(np.searchsorted(self.edges_mm, r, side="right") - 1, 0, self.f_total.size - 1)
        r_j = self.edges_mm[j]
        f_j = self.f_total[j]
        out = np.empty((4, *r.shape), dtype=np.float64)
        for p in range(4):
            out[p] = self.moments[p, j] + f_j * (r ** (p + 1) - r_j ** (p + 1)) / (p + 1)
        return out


def _photon_r2_dose(
    photon_lines: tuple[PhotonLine, ...], gp_material: str, r_mm: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """r²·D_photon(r) in MeV·mm²/g: attenuation with rescaled GP build-up, summed over the lines."""
    r = np.asarray(r_mm, dtype=np.float64)
    total = np.zeros_like(r)
    for energy_weight, mu, muen, scale, energy in photon_lines:
        x = mu * r
        build_up = 1.0 + scale * (gp_buildup(energy, x, gp_material) - 1.0)
        total += energy_weight * muen * build_up * np.exp(-x) / (4.0 * math.pi)
    return total


def _check_nuclide_supported(nuclide: Nuclide) -> None:
    # Alpha and β⁺ emitters need physics this model lacks (alpha tracks, annihilation photons): refuse them.
    for kind in ("alpha", "beta+", "neutron", "fission"):
        if kind in nuclide.emission_kinds:
            raise KernelError(
                f"nuclide {nuclide.name} emits {kind}; the kernel model covers β⁻, conversion/Auger electrons and "
                "photons only — use a Monte Carlo kernel for it"
            )
    top_e = max(
        float(nuclide.beta_spectrum_mev[:, 0].max()) if nuclide.beta_spectrum_mev.size else 0.0,
        float(nuclide.electron_lines_mev[:, 0].max()) if nuclide.electron_lines_mev.size else 0.0,
    )
    if top_e > MAX_ELECTRON_MEV:
        raise KernelError(
            f"nuclide {nuclide.name} emits electrons up to {top_e:.3f} MeV; the scaled electron kernels are "
            f"tabulated up to {MAX_ELECTRON_MEV} MeV"
        )
    if nuclide.photon_lines_mev.size and float(nuclide.photon_lines_mev[:, 0].max()) > MAX_PHOTON_MEV:
        raise KernelError(
            f"nuclide {nuclide.name} emits photons above {MAX_PHOTON_MEV} MeV, beyond the packaged photon tables"
        )


def _resolve(nuclide: str, medium: str) -> tuple[Nuclide, Medium]:
    if not isinstance(medium, str) or medium not in MEDIA:
        raise KernelError(f"unknown kernel medium {medium!r}; choose one of {sorted(MEDIA)}")
    if not isinstance(nuclide, str):
        raise KernelError(f"nuclide must be a name such as 'Lu-177', got {nuclide!r}")
    try:
        data = get_nuclide(nuclide)
    except InputError as exc:
        raise KernelError(f"unknown nuclide {nuclide!r} for a dose kernel: {exc}") from exc
    _check_nuclide_supported(data)
    return data, MEDIA[medium]


def canonical_names(nuclide: str, medium: str) -> tuple[str, str]:
    """Validated (nuclide name, medium name) for the kernel model, or a `KernelError` that says what is wrong."""
    data, med = _resolve(nuclide, medium)
    return data.name, med.name


# ------------------------------------------------------------------------------ electron and photon parts


def _electron_deposition(
    nuclide: Nuclide, medium: Medium, edges: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], float, float]:
    """Electron part: r²·D per radial cell (MeV·mm²/g), energy deposited at the source (MeV), range (mm)."""
    # Electron components: energy E and energy weight in MeV per decay.
    estar = tables()["estar_csda_range.csv"]
    energies: list[npt.NDArray[np.float64]] = []
    weights: list[npt.NDArray[np.float64]] = []
    local_mev = 0.0
    spectrum = nuclide.beta_spectrum_mev
    if spectrum.size:
        e_max = float(spectrum[-1, 0])
        e_nodes = np.linspace(0.0, e_max, BETA_NODES + 1)
        density = np.interp(e_nodes, spectrum[:, 0], spectrum[:, 1])
        w = np.full(e_nodes.size, e_nodes[1] - e_nodes[0])
        w[[0, -1]] *= 0.5
        energy_w = density * e_nodes * w
        # Renormalise the quadrature to the tabulated mean β energy (a < 0.1 % correction).
        energy_w *= nuclide.beta_mean_mev / energy_w.sum()
        ranged = e_nodes >= _ELECTRON_LOCAL_BELOW_MEV
        local_mev += float(energy_w[~ranged].sum())
        energies.append(e_nodes[ranged])
        weights.append(energy_w[ranged])
    lines = nuclide.electron_lines_mev
    if lines.size:
        ranged = lines[:, 0] >= _ELECTRON_LOCAL_BELOW_MEV
        local_mev += float(np.sum(lines[~ranged, 0] * lines[~ranged, 1]))
        energies.append(lines[ranged, 0])
        weights.append(lines[ranged, 0] * lines[ranged, 1])
    e_all = np.concatenate(energies) if energies else np.zeros(0)
    w_all = np.concatenate(weights) if weights else np.zeros(0)
    r0_mm = loglog_interp(e_all, estar["E_MeV"], estar[medium.estar_column]) / medium.density_g_per_ml * 10.0
    cum_electron = w_all @ scaled_electron_kernel_cdf(edges[None, :] / r0_mm[:, None], e_all)
    electron_range_mm = float(1.2 * r0_mm.max()) if r0_mm.size else 0.0
    rho_g_per_mm3 = medium.density_g_per_ml * _G_PER_MM3_PER_G_PER_ML
    electron_cell = np.diff(cum_electron) / np.diff(edges) / (4.0 * math.pi * rho_g_per_mm3)
    return electron_cell, local_mev, electron_range_mm


def _photon_lines(nuclide: Nuclide, medium: Medium) -> tuple[tuple[PhotonLine, ...], float]:
    """Photon lines ≥ 15 keV with their attenuation and build-up scale, and the energy of the lower ones (MeV)."""
    photons = tables()["photon_attenuation.csv"]
    mu_col, muen_col = medium.photon_columns
    photon_lines = []
    photon_local_mev = 0.0
    x_grid = np.linspace(0.0, 80.0, 160001)
    for energy, yld in nuclide.photon_lines_mev:
        if energy < _PHOTON_LOCAL_BELOW_MEV:
            photon_local_mev += float(energy * yld)
            continue
        mu_rho = float(loglog_interp(energy, photons["E_MeV"], photons[mu_col]))
        muen_rho = float(loglog_interp(energy, photons["E_MeV"], photons[muen_col]))
        scattered = np.trapezoid(
            (gp_buildup(float(energy), x_grid, medium.buildup_material) - 1.0) * np.exp(-x_grid), x_grid
        )
        # Rescale the scattered part B − 1 so that an infinite medium absorbs all the photon energy.
        scale = (mu_rho / muen_rho - 1.0) / scattered
        mu_per_mm = mu_rho * medium.density_g_per_ml / 10.0
        photon_lines.append((float(energy * yld), mu_per_mm, muen_rho * _MM2_PER_CM2, float(scale), float(energy)))
    return tuple(photon_lines), photon_local_mev


@lru_cache(maxsize=8)
def radial_model(nuclide_name: str, medium_name: str) -> RadialModel:
    """The tabulated radial energy deposition of a nuclide in a medium (canonical names, see `canonical_names`)."""
    nuclide, medium = _resolve(nuclide_name, medium_name)
    rho_g_per_mm3 = medium.density_g_per_ml * _G_PER_MM3_PER_G_PER_ML
    n_decades = math.log10(_R_MAX_MM / _R_MIN_MM)
    edges = np.concatenate([[0.0], np.geomspace(_R_MIN_MM, _R_MAX_MM, int(n_decades * RADIAL_PER_DECADE) + 1)])
    electron_cell, electron_local_mev, electron_range_mm = _electron_deposition(nuclide, medium, edges)
    photon_lines, photon_local_mev = _photon_lines(nuclide, medium)
    # Photon energy per shell by Simpson's rule on each cell (f_photon is smooth).
    mid = 0.5 * (edges[1:] + edges[:-1])
    photon_at_edges = _photon_r2_dose(photon_lines, medium.buildup_material, edges)
    photon_mid = _photon_r2_dose(photon_lines, medium.buildup_material, mid)
    photon_cell = (photon_at_edges[:-1] + 4.0 * photon_mid + photon_at_edges[1:]) / 6.0
    total_cell = electron_cell + photon_cell
    moments = np.zeros((4, edges.size))
    for p in range(4):
        shell = total_cell * (edges[1:] ** (p + 1) - edges[:-1] ** (p + 1)) / (p + 1)
        moments[p, 1:] = np.cumsum(shell)
    return RadialModel(
        edges_mm=edges,
        f_electron=electron_cell,
        f_photon=photon_cell,
        f_total=total_cell,
        f_photon_at_edges=photon_at_edges,
        moments=moments,
        local_mev=electron_local_mev + photon_local_mev,
        electron_mev=nuclide.electron_energy_mev,
        photon_mev=nuclide.photon_energy_mev,
        photon_local_mev=photon_local_mev,
        electron_range_mm=electron_range_mm,
        density_g_per_mm3=rho_g_per_mm3,
        photon_lines=photon_lines,
        gp_material=medium.buildup_material,
    )


# ------------------------------------------------------------------------------------------- point kernel


def point_kernel_mgy_per_mbq_s(
    r_mm: npt.ArrayLike,
    medium: str = "soft_tissue",
    nuclide: str = "Lu-177",
    component: Literal["total", "electron", "photon"] = "total",
) -> npt.NDArray[np.float64]:
    """Dose point kernel: dose per decay rate at distance r from a point source, mGy/(MBq·s).

    Args:
        r_mm: distances from the source in mm, all > 0 (any shape).
        medium: key of `MEDIA`.
        nuclide: nuclide name (``"Lu-177"``).
        component: ``"electron"``, ``"photon"`` or their sum ``"total"``. The electron part is the shell average
            on the model's radial grid (0.96 % wide shells); electrons below 10 keV and photons below 15 keV are
            deposited at r = 0 and are not part of D(r) (see `sphere_s_value_mgy_per_mbq_s` and the kernel).
    """
    if component not in ("total", "electron", "photon"):
        raise KernelError(f"component must be 'total', 'electron' or 'photon', got {component!r}")
    model = radial_model(*canonical_names(nuclide, medium))
    r = _as_float_array(r_mm, "r_mm")
    if r.size and not (np.all(np.isfinite(r)) and np.all(r > 0)):
        raise KernelError(f"r_mm must be finite and > 0 (the point kernel diverges at r = 0), got {r_mm!r}")
    if r.size and float(r.max()) > model.edges_mm[-1]:
        raise KernelError(f"r_mm must be ≤ {model.edges_mm[-1]:g} mm, got {float(r.max()):g}")
    j = np.clip(np.searchsorted(model.edges_mm, r, side="right") - 1, 0, model.f_total.size - 1)
    f = np.zeros_like(r)
    if component in ("total", "electron"):
        f = f + model.f_electron[j]
    if component in ("total", "photon"):
        f = f + model.photon_f(r)
    result: npt.NDArray[np.float64] = f / r**2 * MGY_PER_MBQ_S_PER_MEV_PER_G
    return result


def _as_float_array(value: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KernelError(f"{name} must be numbers, got {value!r}") from exc


# ------------------------------------------------------------------------------------------- sphere model


def sphere_s_value_mgy_per_mbq_s(
    volume_ml: npt.ArrayLike,
    medium: str = "soft_tissue",
    nuclide: str = "Lu-177",
    component: Literal["total", "electron", "photon"] = "total",
) -> npt.NDArray[np.float64]:
    """Self-dose S value of a uniformly filled sphere in an infinite medium, mGy/(MBq·s).

    S = ∫ p(r) D(r) dr with p the distance distribution of two uniform points in a sphere of radius R,
    p(r) = 3r²/R³ − 9r³/(4R⁴) + 3r⁵/(16R⁶) (0 ≤ r ≤ 2R); r² cancels D's 1/r², so S is exact in the tabulated
    radial energy deposition. The sphere's mass is volume × the medium density.

    Args:
        volume_ml: sphere volume(s) in mL, within [1e-6, 1e5] mL (any shape; a 0-d array for a scalar).
        medium: key of `MEDIA`.
        nuclide: nuclide name.
        component: ``"electron"`` (β, conversion and Auger electrons), ``"photon"`` or ``"total"``.
    """
    if component not in ("total", "electron", "photon"):
        raise KernelError(f"component must be 'total', 'electron' or 'photon', got {component!r}")
    model = radial_model(*canonical_names(nuclide, medium))
    volume = _as_float_array(volume_ml, "volume_ml")
    if not (np.all(np.isfinite(volume)) and np.all(volume >= 1e-6) and np.all(volume <= 1e5)):
        raise KernelError(f"volume_ml must be within [1e-6, 1e5] mL, got {volume_ml!r}")
    radius = np.cbrt(volume * 1000.0 * 3.0 / (4.0 * math.pi))  # mm
    f = {"total": model.f_total, "electron": model.f_electron, "photon": model.f_photon}[component]
    m = _moments_at(model.edges_mm, f, 2.0 * radius)
    local = {
        "total": model.local_mev,
        "electron": model.local_mev - model.photon_local_mev,
        "photon": model.photon_local_mev,
    }[component]
    s_mev_per_g = (
        3.0 / radius**3 * m[0] - 9.0 / (4.0 * radius**4) * m[1] + 3.0 / (16.0 * radius**6) * m[3]
    ) + local / (model.density_g_per_mm3 * volume * 1000.0)
    result: npt.NDArray[np.float64] = s_mev_per_g * MGY_PER_MBQ_S_PER_MEV_PER_G
    return result


def _moments_at(
    edges: npt.NDArray[np.float64], f_cell: npt.NDArray[np.float64], r_mm: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """∫₀^r s^p f(s) ds, p = 0..3, for a piecewise-constant f on the grid cells: shape (4, *r.shape)."""
    r = np.clip(np.asarray(r_mm, dtype=np.float64), 0.0, edges[-1])
    j = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, f_cell.size - 1)
    out = np.empty((4, *r.shape), dtype=np.float64)
    for p in range(4):
        cumulative = np.concatenate([[0.0], np.cumsum(f_cell * (edges[1:] ** (p + 1) - edges[:-1] ** (p + 1)))])
        out[p] = (cumulative[j] + f_cell[j] * (r ** (p + 1) - edges[j] ** (p + 1))) / (p + 1)
    return out
