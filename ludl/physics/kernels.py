"""Dose-voxel kernels (MIRD voxel S values) generated from physics for any, possibly anisotropic, voxel size.

Model (PHYSICS.md §4). The isotropic dose point kernel D(r) of the nuclide (dose per decay at distance r from a
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

The voxel S value is the mean of D over a source point uniform in voxel 0 and a target point uniform in voxel Δ:
K(Δ) = ∫ T_Δ(u) D(|u|) d³u, T_Δ being the product of per-axis triangle (tent) functions of the difference vector.
Near the source (all voxels the electrons reach, and the 27 whose tent support holds the r = 0 singularity) the
integral is done along rays from the origin: in spherical coordinates d³u = r² dr dΩ cancels the 1/r² of D, and
along a ray T is a cubic polynomial between voxel planes, integrated exactly against the tabulated radial energy
deposition (cumulative moments ∫ r^p dE/dr dr, p ≤ 3); the directions use a Gauss product rule over one octant
(mirror symmetry gives the rest). Voxels farther out see only photons, whose D is smooth there, and use a tensor
Gauss rule on the tent. Kernels are symmetrised over axes of equal spacing (the exact kernel has that symmetry).

Checks (tests/physics/test_kernels.py). At 4.42 mm the kernel is compared with Lanconelli et al. 2012 (Phys Med
Biol 57:517, EGSnrc/DOSXYZnrc; soft tissue ρ 1.04, compact bone ρ 1.85), as ours / published:

    soft tissue: centre 0.2444 / 0.226 (+8.1 %), face 3.34e-3 / 3.39e-3 (−1.5 %), edge 1.14e-4 / 1.19e-4 (−4.4 %),
                 corner 2.75e-5 / 2.82e-5 (−2.3 %); photon-dominated voxels (≥ 2 away) −1 … +3 %.
    bone:        centre 0.1420 / 0.132 (+7.5 %), face 1.32e-3 / 1.21e-3 (+8.9 %), edge 8.07e-5 / 7.07e-5 (+14 %),
                 corner 4.19e-5 / 3.68e-5 (+14 %); photon-dominated voxels +3 … +14 %.

What remains, and why. (1) The centre is 7–8 % high because this kernel keeps all 147.9 keV of ICRP-107 electron
energy per decay, while the published tables do not: summed over 11³ they hold 141.7 keV (soft tissue) and
146.5 keV (bone) per decay against 151.8 and 157.9 keV here (electrons plus the photon energy absorbed within the
extent). The deficit sits next to the source — the published centre, face and edge voxels hold 138.9 keV against
149.0 keV here (bone 139.7 vs 150.4) — so it is a smaller electron source term in the published simulation (as
if part of the 14.7 keV of conversion and Auger electrons, or of the β spectrum, were missing), not a transport
difference: the
energy-normalised shape agrees, centre / Σ11³ = 0.902 vs 0.894 (soft tissue) and 0.897 vs 0.899 (bone), and the
self-absorbed electron fraction of the 4.42 mm voxel, 0.922 here, matches the thick-target estimate
1 − (3/4)·1.24·⟨r⟩/R = 0.918 (equal-volume sphere R = 2.74 mm, cube/sphere surface ratio 1.24, energy-weighted mean
electron distance ⟨r⟩ = 0.24 mm in soft tissue), whereas the published centre would need ⟨r⟩ ≈ 0.44 mm.
(2) In bone the photon part is 10–14 % high: the aluminium GP build-up shape stands in for cortical bone and its
energy-conserving rescaling puts more scattered energy at a few cm than bone transport does; in soft tissue
(water build-up) photons agree within 3 %. (3) Range scaling carries water's scaled electron kernel into bone;
the face neighbour in bone is 9 % high, within the 30 % the test allows.

Units: K in mGy/(MBq·s) (the unit of published tables); `ludl.physics.dose` converts to Gy/(MBq·h) in one place.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError, KernelError
from ludl.physics.nuclides import J_PER_MEV, Nuclide, get_nuclide

__all__ = [
    "KERNEL_MODEL_VERSION",
    "MAX_KERNEL_SIZE",
    "MAX_SPACING_MM",
    "MEDIA",
    "MIN_SPACING_MM",
    "Medium",
    "clear_kernel_cache",
    "kernel_energy_per_decay_mev",
    "point_kernel_mgy_per_mbq_s",
    "sphere_s_value_mgy_per_mbq_s",
    "voxel_s_kernel",
]

# Bump when the physics or the integration changes: it is part of every disk-cache key.
KERNEL_MODEL_VERSION = "ludl-dvk-1 (EGSnrc scaled DPK 2005, ESTAR, Hubbell-Seltzer, ANS-6.4.3 GP)"

# Voxel sizes the model supports. Below 0.5 mm the scaled-kernel histograms (bins of 0.05 r0, i.e. 0.09 mm for
# the 177Lu β endpoint) and the local deposition of < 10 keV electrons (≤ 3 µm) are no longer small against a
# voxel; above 20 mm (beyond any clinical SPECT/PET grid) the kernel is the LDM value to < 1 % and a kernel there
# more likely comes from a spacing given in cm or in the wrong field.
MIN_SPACING_MM = 0.5
MAX_SPACING_MM = 20.0
# Largest kernel edge (voxels): 129 × 2.2 mm already spans 28 cm, several photon mean free paths (≈ 7 cm at 208 keV).
MAX_KERNEL_SIZE = 129
MIN_KERNEL_SIZE = 11  # the default size covers at least 11 voxels per axis (PHYSICS.md §4)

# MeV/g per decay → mGy/(MBq·s): J/MeV × 1000 g/kg × 1e6 decays/(MBq·s) × 1000 mGy/Gy.
_MGY_PER_MBQ_S_PER_MEV_PER_G = J_PER_MEV * 1e3 * 1e6 * 1e3
_G_PER_MM3_PER_G_PER_ML = 1e-3  # 1 g/cm³ = 1e-3 g/mm³
_MM2_PER_CM2 = 100.0

_ELECTRON_LOCAL_BELOW_MEV = 0.010  # ESTAR's first energy and the lowest tabulated scaled kernel
_PHOTON_LOCAL_BELOW_MEV = 0.015  # first energy of the ANS-6.4.3 build-up fits
_MAX_ELECTRON_MEV = 1.0  # highest tabulated scaled kernel
_MAX_PHOTON_MEV = 3.0  # last row of the photon tables kept here
_BETA_NODES = 400  # β spectrum quadrature nodes (trapezoid on a uniform grid up to the endpoint)
_RADIAL_PER_DECADE = 240  # log radial grid for the tabulated energy deposition
_R_MIN_MM = 1e-5
_R_MAX_MM = 4000.0  # covers 2R of the largest sphere (0.58 m) and the corner of the largest kernel (2.2 m)
_N_THETA = 96  # octant direction rule for the near-field rays: Gauss–Legendre in cos θ and in φ
_N_PHI = 96
_N_GAUSS_HALF_TENT = 4  # far field: Gauss–Legendre nodes on each half of each axis' tent
_MEMORY_CACHE_ENTRIES = 16

_DATA_FILES = (
    "electron_scaled_dpk_water.csv",
    "estar_csda_range.csv",
    "photon_attenuation.csv",
    "buildup_gp_coefficients.csv",
)


@dataclass(frozen=True)
class Medium:
    """A homogeneous medium for kernels: density and the names of its columns in the packaged data tables.

    Attributes:
        name: key in `MEDIA`.
        density_g_per_ml: mass density the kernel is made for, g/cm³.
        estar_column: column of ``estar_csda_range.csv`` (electron CSDA range, g/cm²).
        photon_columns: (μ/ρ, μ_en/ρ) columns of ``photon_attenuation.csv``.
        buildup_material: material prefix of the GP build-up columns of ``buildup_gp_coefficients.csv``.
        source: where the composition and density come from.
    """

    name: str
    density_g_per_ml: float
    estar_column: str
    photon_columns: tuple[str, str]
    buildup_material: str
    source: str = field(default="", compare=False)


MEDIA: dict[str, Medium] = {
    "soft_tissue": Medium(
        name="soft_tissue",
        density_g_per_ml=1.04,  # ICRU Report 44 soft tissue (PHYSICS.md §4), as in Lanconelli et al. 2012
        estar_column="soft_tissue_icrp",
        photon_columns=("muscle_mu", "muscle_muen"),
        buildup_material="water",
        source="ρ 1.04 g/cm³ (ICRU 44); electron ranges ESTAR Tissue, soft (ICRP); photons Hubbell-Seltzer "
        "ICRU-44 skeletal muscle; build-up ANS-6.4.3 water",
    ),
    "bone": Medium(
        name="bone",
        density_g_per_ml=1.85,  # cortical/compact bone as pinned in PHYSICS.md §4 (ICRU 46 lists 1.92)
        estar_column="bone_cortical_icrp",
        photon_columns=("bone_mu", "bone_muen"),
        buildup_material="aluminum",
        source="ρ 1.85 g/cm³ (cortical bone, PHYSICS.md §4); electron ranges ESTAR Bone, cortical (ICRP); "
        "photons Hubbell-Seltzer ICRU-44 cortical bone; build-up ANS-6.4.3 aluminium",
    ),
}


# ---------------------------------------------------------------------------------------------- data tables


def _read_table(name: str) -> dict[str, npt.NDArray[np.float64]]:
    text = (resources.files("ludl.physics.data") / name).read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.reader(io.StringIO("\n".join(rows)))
    header = next(reader)
    values = np.asarray([[float(v) for v in row] for row in reader], dtype=np.float64)
    return {key.strip(): values[:, i] for i, key in enumerate(header)}


@lru_cache(maxsize=1)
def _tables() -> dict[str, dict[str, npt.NDArray[np.float64]]]:
    return {name: _read_table(name) for name in _DATA_FILES}


@lru_cache(maxsize=1)
def _data_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in _DATA_FILES:
        digest.update((resources.files("ludl.physics.data") / name).read_bytes())
    return digest.hexdigest()[:16]


def _loglog_interp(x: npt.ArrayLike, xp: npt.NDArray[np.float64], fp: npt.NDArray[np.float64]) -> Any:
    return np.exp(np.interp(np.log(np.asarray(x, dtype=np.float64)), np.log(xp), np.log(fp)))


# ------------------------------------------------------------------------------------------- radial model


@dataclass(frozen=True)
class _RadialModel:
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
    photon_lines: tuple[tuple[float, float, float, float, float], ...]  # (yE MeV, μ 1/mm, μen mm²/g, s, E MeV)
    gp_material: str

    def photon_f(self, r_mm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """r²·D_photon(r) in MeV·mm²/g, evaluated from the line parameters (smooth, any r ≥ 0)."""
        r = np.asarray(r_mm, dtype=np.float64)
        total = np.zeros_like(r)
        for energy_weight, mu, muen, scale, energy in self.photon_lines:
            x = mu * r
            build_up = 1.0 + scale * (_gp_buildup(energy, x, self.gp_material) - 1.0)
            total += energy_weight * muen * build_up * np.exp(-x) / (4.0 * math.pi)
        return total

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


def _gp_buildup(energy_mev: float, x: npt.NDArray[np.float64], material: str) -> npt.NDArray[np.float64]:
    """ANS-6.4.3 GP build-up factor at `x` mean free paths, log-log interpolated between tabulated energies."""
    table = _tables()["buildup_gp_coefficients.csv"]
    energies = table["E_MeV"]
    hi = int(np.clip(np.searchsorted(energies, energy_mev), 1, energies.size - 1))
    lo = hi - 1
    values = []
    for row in (lo, hi):
        b, c, a, big_x, d = (float(table[f"{material}_{k}"][row]) for k in ("b", "c", "a", "X", "d"))
        xx = np.maximum(x, 1e-12)
        k_factor = c * xx**a + d * (np.tanh(xx / big_x - 2.0) - math.tanh(-2.0)) / (1.0 - math.tanh(-2.0))
        near_one = np.abs(k_factor - 1.0) < 1e-9
        safe_k = np.where(near_one, 2.0, k_factor)
        geometric = (safe_k**xx - 1.0) / (safe_k - 1.0)
        values.append(1.0 + (b - 1.0) * np.where(near_one, xx, geometric))
    t = (math.log(energy_mev) - math.log(energies[lo])) / (math.log(energies[hi]) - math.log(energies[lo]))
    t = min(max(t, 0.0), 1.0)
    result: npt.NDArray[np.float64] = np.exp((1.0 - t) * np.log(values[0]) + t * np.log(values[1]))
    return result


def _scaled_kernel_cdf(x: npt.NDArray[np.float64], energy_mev: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Fraction of a monoenergetic electron's energy absorbed within x = r/r0; x (K, N), energy (K,) → (K, N)."""
    table = _tables()["electron_scaled_dpk_water.csv"]
    edges = np.concatenate([table["x_low"][:1], table["x_high"]])
    tab_energy = np.array([0.010, 0.015, 0.100, 1.000])
    log_e = np.log(np.clip(energy_mev, tab_energy[0], tab_energy[-1]))
    hi = np.clip(np.searchsorted(np.log(tab_energy), log_e), 1, tab_energy.size - 1)
    lo = hi - 1
    t = (log_e - np.log(tab_energy[lo])) / (np.log(tab_energy[hi]) - np.log(tab_energy[lo]))
    result = np.zeros(x.shape, dtype=np.float64)
    for index, column in enumerate(("F_10keV", "F_15keV", "F_100keV", "F_1MeV")):
        weight = np.where(lo == index, 1.0 - t, 0.0) + np.where(hi == index, t, 0.0)
        if not np.any(weight > 0):
            continue
        hist = table[column] * np.diff(edges)
        # Normalised to 1: the tables integrate to 0.997-1.000 (bremsstrahlung escape <= 0.4 % at 1 MeV and
        # <= 0.2 % at the 177Lu beta endpoint, ESTAR radiation yield), so the kernel carries the ICRP energy exactly.
        cdf = np.concatenate([[0.0], np.cumsum(hist)]) / hist.sum()
        result += weight[:, None] * np.interp(x, edges, cdf)
    return result


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
    if top_e > _MAX_ELECTRON_MEV:
        raise KernelError(
            f"nuclide {nuclide.name} emits electrons up to {top_e:.3f} MeV; the scaled electron kernels are "
            f"tabulated up to {_MAX_ELECTRON_MEV} MeV"
        )
    if nuclide.photon_lines_mev.size and float(nuclide.photon_lines_mev[:, 0].max()) > _MAX_PHOTON_MEV:
        raise KernelError(
            f"nuclide {nuclide.name} emits photons above {_MAX_PHOTON_MEV} MeV, beyond the packaged photon tables"
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


@lru_cache(maxsize=8)
def _radial_model(nuclide_name: str, medium_name: str) -> _RadialModel:
    nuclide, medium = _resolve(nuclide_name, medium_name)
    rho_g_per_mm3 = medium.density_g_per_ml * _G_PER_MM3_PER_G_PER_ML
    n_decades = math.log10(_R_MAX_MM / _R_MIN_MM)
    edges = np.concatenate([[0.0], np.geomspace(_R_MIN_MM, _R_MAX_MM, int(n_decades * _RADIAL_PER_DECADE) + 1)])

    # --- electron components (energy E, energy weight in MeV per decay)
    estar = _tables()["estar_csda_range.csv"]
    energies: list[npt.NDArray[np.float64]] = []
    weights: list[npt.NDArray[np.float64]] = []
    local_mev = 0.0
    spectrum = nuclide.beta_spectrum_mev
    if spectrum.size:
        e_max = float(spectrum[-1, 0])
        e_nodes = np.linspace(0.0, e_max, _BETA_NODES + 1)
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
    r0_mm = _loglog_interp(e_all, estar["E_MeV"], estar[medium.estar_column]) / medium.density_g_per_ml * 10.0
    cum_electron = w_all @ _scaled_kernel_cdf(edges[None, :] / r0_mm[:, None], e_all)
    electron_range_mm = float(1.2 * r0_mm.max()) if r0_mm.size else 0.0

    # --- photon lines
    photons = _tables()["photon_attenuation.csv"]
    mu_col, muen_col = medium.photon_columns
    photon_lines = []
    photon_local_mev = 0.0
    x_grid = np.linspace(0.0, 80.0, 160001)
    for energy, yld in nuclide.photon_lines_mev:
        if energy < _PHOTON_LOCAL_BELOW_MEV:
            photon_local_mev += float(energy * yld)
            continue
        mu_rho = float(_loglog_interp(energy, photons["E_MeV"], photons[mu_col]))
        muen_rho = float(_loglog_interp(energy, photons["E_MeV"], photons[muen_col]))
        scattered = np.trapezoid(
            (_gp_buildup(float(energy), x_grid, medium.buildup_material) - 1.0) * np.exp(-x_grid), x_grid
        )
        scale = (mu_rho / muen_rho - 1.0) / scattered
        mu_per_mm = mu_rho * medium.density_g_per_ml / 10.0
        photon_lines.append((float(energy * yld), mu_per_mm, muen_rho * _MM2_PER_CM2, float(scale), float(energy)))
    local_mev += photon_local_mev

    model_stub = _RadialModel(
        edges_mm=edges,
        f_electron=np.zeros(0),
        f_photon=np.zeros(0),
        f_total=np.zeros(0),
        f_photon_at_edges=np.zeros(0),
        moments=np.zeros((4, 0)),
        local_mev=0.0,
        electron_mev=0.0,
        photon_mev=0.0,
        photon_local_mev=0.0,
        electron_range_mm=0.0,
        density_g_per_mm3=rho_g_per_mm3,
        photon_lines=tuple(photon_lines),
        gp_material=medium.buildup_material,
    )
    # Photon energy per shell by Simpson's rule on each cell (f_photon is smooth).
    mid = 0.5 * (edges[1:] + edges[:-1])
    width = np.diff(edges)
    photon_at_edges = model_stub.photon_f(edges)
    photon_cell = (photon_at_edges[:-1] + 4.0 * model_stub.photon_f(mid) + photon_at_edges[1:]) / 6.0
    electron_cell = np.diff(cum_electron) / width / (4.0 * math.pi * rho_g_per_mm3)
    total_cell = electron_cell + photon_cell
    moments = np.zeros((4, edges.size))
    for p in range(4):
        shell = total_cell * (edges[1:] ** (p + 1) - edges[:-1] ** (p + 1)) / (p + 1)
        moments[p, 1:] = np.cumsum(shell)
    return _RadialModel(
        edges_mm=edges,
        f_electron=electron_cell,
        f_photon=photon_cell,
        f_total=total_cell,
        f_photon_at_edges=photon_at_edges,
        moments=moments,
        local_mev=local_mev,
        electron_mev=nuclide.electron_energy_mev,
        photon_mev=nuclide.photon_energy_mev,
        photon_local_mev=photon_local_mev,
        electron_range_mm=electron_range_mm,
        density_g_per_mm3=rho_g_per_mm3,
        photon_lines=tuple(photon_lines),
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
    model = _radial_model(*_canonical(nuclide, medium))
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
    result: npt.NDArray[np.float64] = f / r**2 * _MGY_PER_MBQ_S_PER_MEV_PER_G
    return result


def _as_float_array(value: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KernelError(f"{name} must be numbers, got {value!r}") from exc


def _canonical(nuclide: str, medium: str) -> tuple[str, str]:
    data, med = _resolve(nuclide, medium)
    return data.name, med.name


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
    model = _radial_model(*_canonical(nuclide, medium))
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
    result: npt.NDArray[np.float64] = s_mev_per_g * _MGY_PER_MBQ_S_PER_MEV_PER_G
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


# ------------------------------------------------------------------------------------------- voxel kernel


def _near_field_octant(
    model: _RadialModel, h: npt.NDArray[np.float64], n_near: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Ray integration of K (MeV/g) for voxels 0..n_near per axis, from directions in the positive octant only."""
    mu, w_mu = np.polynomial.legendre.leggauss(_N_THETA)
    phi, w_phi = np.polynomial.legendre.leggauss(_N_PHI)
    cos_t = 0.5 * (mu + 1.0)
    phi = 0.25 * math.pi * (phi + 1.0)
    sin_t = np.sqrt(1.0 - cos_t**2)
    # (z, y, x) components; weight = dΩ = d(cos θ) dφ.
    omega = np.stack(
        [
            np.repeat(cos_t, phi.size),
            np.outer(sin_t, np.sin(phi)).ravel(),
            np.outer(sin_t, np.cos(phi)).ravel(),
        ],
        axis=1,
    )
    weight = np.outer(0.5 * w_mu, 0.25 * math.pi * w_phi).ravel()
    rate = omega / h  # voxel planes crossed per mm along each axis
    r_end = np.min((n_near + 1) / rate, axis=1)
    crossings = [np.arange(1, n + 2)[None, :] / rate[:, i : i + 1] for i, n in enumerate(n_near)]
    t = np.minimum(np.concatenate(crossings, axis=1), r_end[:, None])
    t = np.sort(np.concatenate([np.zeros((t.shape[0], 1)), t], axis=1), axis=1)
    a, b = t[:, :-1], t[:, 1:]
    keep = b > a
    a, b = a[keep], b[keep]
    ray = np.nonzero(keep)[0]
    mid = 0.5 * (a + b)
    cell = np.minimum(np.floor(mid[:, None] * rate[ray]).astype(np.int64), n_near[None, :])
    m_b, m_a = model.moment_at(b), model.moment_at(a)
    dm = m_b - m_a  # (4, S)
    c_ray = rate[ray] / h  # slope of each tent factor, per mm, per unit 1/h
    shape = tuple(int(n) + 1 for n in n_near)
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    for vz in (0, 1):
        for vy in (0, 1):
            for vx in (0, 1):
                v = np.array([vz, vy, vx])
                index = cell + v
                inside = np.all(index <= n_near, axis=1)
                # tent factor along axis i: v=0 → (1 + k − r ω/h)/h, v=1 → (r ω/h − k)/h
                alpha = np.where(v == 0, (1.0 + cell) / h, -cell / h)
                beta = np.where(v == 0, -c_ray, c_ray)
                a0, a1, a2 = alpha[:, 0], alpha[:, 1], alpha[:, 2]
                b0, b1, b2 = beta[:, 0], beta[:, 1], beta[:, 2]
                c0 = a0 * a1 * a2
                c1 = b0 * a1 * a2 + a0 * b1 * a2 + a0 * a1 * b2
                c2 = a0 * b1 * b2 + b0 * a1 * b2 + b0 * b1 * a2
                c3 = b0 * b1 * b2
                value = (c0 * dm[0] + c1 * dm[1] + c2 * dm[2] + c3 * dm[3]) * weight[ray]
                flat = np.ravel_multi_index(tuple(index[inside].T), shape)
                out += np.bincount(flat, weights=value[inside], minlength=out.size)
    block = out.reshape(shape)
    # Directions of the other octants mirror onto the same voxel only where Δ_i = 0 (both signs of ω_i).
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, 1)
        block[tuple(index)] *= 2.0
    return block


def _far_field_octant(
    model: _RadialModel, h: npt.NDArray[np.float64], octant_shape: tuple[int, int, int], n_near: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Photon-only K (MeV/g) by a tensor Gauss rule on the tent, for octant voxels outside the near block."""
    g, gw = np.polynomial.legendre.leggauss(_N_GAUSS_HALF_TENT)
    s = np.concatenate([0.5 * (g - 1.0), 0.5 * (g + 1.0)])  # nodes on [-1, 0] and [0, 1]
    ws = np.concatenate([0.5 * gw, 0.5 * gw]) * (1.0 - np.abs(s))  # tent weight, sums to 1
    out = np.zeros(octant_shape, dtype=np.float64)
    iz, iy, ix = (np.arange(n, dtype=np.float64) for n in octant_shape)
    uy = (iy[:, None] + s[None, :]) * h[1]  # (ny, q)
    ux = (ix[:, None] + s[None, :]) * h[2]
    wyx = ws[:, None] * ws[None, :]
    far_y = iy > n_near[1]
    far_x = ix > n_near[2]
    for k in range(octant_shape[0]):
        uz = (iz[k] + s) * h[0]  # (q,)
        # r over (y, x, qz, qy, qx)
        r2 = uz[None, None, :, None, None] ** 2 + uy[:, None, None, :, None] ** 2 + ux[None, :, None, None, :] ** 2
        if k <= n_near[0]:
            mask = far_y[:, None] | far_x[None, :]
            if not mask.any():
                continue
        else:
            mask = np.ones((octant_shape[1], octant_shape[2]), dtype=bool)
        r = np.sqrt(r2[mask])  # (m, qz, qy, qx)
        d = np.interp(r, model.edges_mm, model.f_photon_at_edges) / r**2
        value = np.einsum("mabc,a,bc->m", d, ws, wyx)
        plane = out[k]
        plane[mask] = value
    return out


def _symmetrise(octant: npt.NDArray[np.float64], h: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    result = octant.copy()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        if abs(h[i] - h[j]) > 1e-9 * max(h[i], h[j]):
            continue
        m = min(result.shape[i], result.shape[j])
        index = [slice(None)] * 3
        index[i] = slice(0, m)
        index[j] = slice(0, m)
        block = result[tuple(index)]
        result[tuple(index)] = 0.5 * (block + np.swapaxes(block, i, j))
    if all(abs(h[0] - h[k]) <= 1e-9 * h[0] for k in (1, 2)):
        # With three equal spacings the pairwise averages above commute only approximately; finish with the full
        # group average on the common cube.
        m = min(result.shape)
        cube = result[:m, :m, :m]
        perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
        result[:m, :m, :m] = sum(np.transpose(cube, p) for p in perms) / 6.0
    return result


def _near_extent(model: _RadialModel, h: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    # Voxels with (|Δ_i| − 1) h_i ≥ electron range on some axis get no electron dose: they are far field.
    return np.maximum(1, np.ceil(model.electron_range_mm / h)).astype(np.int64)


def _generate_kernel(
    spacing_zyx_mm: tuple[float, float, float], size_zyx: tuple[int, int, int], medium: str, nuclide: str
) -> npt.NDArray[np.float64]:
    """Compute the kernel (no caching): mGy/(MBq·s), shape `size_zyx`, centred."""
    model = _radial_model(nuclide, medium)
    h = np.asarray(spacing_zyx_mm, dtype=np.float64)
    half = np.asarray(size_zyx, dtype=np.int64) // 2
    n_near = np.minimum(_near_extent(model, h), half)
    octant_shape = (int(half[0]) + 1, int(half[1]) + 1, int(half[2]) + 1)
    octant = _far_field_octant(model, h, octant_shape, n_near)
    near = _near_field_octant(model, h, n_near)
    octant[: near.shape[0], : near.shape[1], : near.shape[2]] = near
    octant[0, 0, 0] += model.local_mev / (model.density_g_per_mm3 * float(np.prod(h)))
    octant = _symmetrise(octant, h)
    full = octant
    for axis in range(3):
        mirrored = np.flip(np.take(full, np.arange(1, full.shape[axis]), axis=axis), axis=axis)
        full = np.concatenate([mirrored, full], axis=axis)
    result: npt.NDArray[np.float64] = full * _MGY_PER_MBQ_S_PER_MEV_PER_G
    return result


def _validate_spacing(spacing_zyx_mm: Any) -> tuple[float, float, float]:
    if isinstance(spacing_zyx_mm, (int, float, np.integer, np.floating)) and not isinstance(spacing_zyx_mm, bool):
        values = [float(spacing_zyx_mm)] * 3
    else:
        try:
            values = [float(v) for v in spacing_zyx_mm]
        except (TypeError, ValueError) as exc:
            raise KernelError(f"spacing_zyx_mm must be three numbers in mm (z, y, x), got {spacing_zyx_mm!r}") from exc
    if len(values) != 3:
        raise KernelError(f"spacing_zyx_mm must have 3 entries (z, y, x), got {len(values)}: {spacing_zyx_mm!r}")
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise KernelError(f"spacing_zyx_mm must be finite and > 0 mm, got {spacing_zyx_mm!r}")
        if not MIN_SPACING_MM <= v <= MAX_SPACING_MM:
            raise KernelError(
                f"voxel spacing {v:g} mm is outside the kernel model's range [{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm; "
                "check the unit (mm, not cm) or resample the image"
            )
    return values[0], values[1], values[2]


def _validate_size(size: Any, min_size: npt.NDArray[np.int64]) -> tuple[int, int, int]:
    if size is None:
        values = [max(MIN_KERNEL_SIZE, 2 * int(n) + 1) for n in min_size]
        return values[0], values[1], values[2]
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        values = [int(size)] * 3
    else:
        try:
            values = [int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else -1 for v in size]
        except TypeError as exc:
            raise KernelError(f"size must be None, an odd int or three odd ints, got {size!r}") from exc
    if len(values) != 3:
        raise KernelError(f"size must be None, an odd int or three odd ints, got {size!r}")
    for v, need in zip(values, min_size, strict=True):
        if v < 1 or v % 2 == 0:
            raise KernelError(f"kernel size must be odd positive integers (centred source voxel), got {size!r}")
        if v < 2 * need + 1:
            raise KernelError(
                f"kernel size {size!r} is too small: it must hold the electron range, ≥ {2 * int(need) + 1} "
                "voxels on that axis (use size=None for the default)"
            )
        if v > MAX_KERNEL_SIZE:
            raise KernelError(f"kernel size {v} exceeds {MAX_KERNEL_SIZE} voxels per axis")
    return values[0], values[1], values[2]


_memory_cache: OrderedDict[str, npt.NDArray[np.float64]] = OrderedDict()


def clear_kernel_cache() -> None:
    """Forget kernels held in this process (the disk cache is left alone)."""
    _memory_cache.clear()


def _cache_key(nuclide: str, medium: Medium, spacing: tuple[float, float, float], size: tuple[int, int, int]) -> str:
    payload = {
        "model": KERNEL_MODEL_VERSION,
        "data": _data_fingerprint(),
        "nuclide": nuclide,
        "medium": medium.name,
        "density_g_per_ml": medium.density_g_per_ml,
        "spacing_zyx_mm": [repr(float(s)) for s in spacing],
        "size_zyx": list(size),
        "quadrature": [_N_THETA, _N_PHI, _N_GAUSS_HALF_TENT, _RADIAL_PER_DECADE, _BETA_NODES],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _load_cached(path: Path, size: tuple[int, int, int]) -> npt.NDArray[np.float64] | None:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # unreadable or truncated: regenerate
    if array.shape != size or array.dtype != np.float64 or not np.all(np.isfinite(array)):
        return None
    loaded: npt.NDArray[np.float64] = array
    return loaded


def _save_cached(path: Path, kernel: npt.NDArray[np.float64]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, kernel, allow_pickle=False)
            os.replace(tmp_name, path)  # atomic: readers see the old file or the whole new one
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise KernelError(f"cannot write the kernel cache file {path}: {exc}; give a writable cache_dir") from exc


def voxel_s_kernel(
    spacing_zyx_mm: Sequence[float] | float,
    size: int | Sequence[int] | None = None,
    medium: str = "soft_tissue",
    *,
    nuclide: str = "Lu-177",
    cache_dir: str | os.PathLike[str] | None = None,
) -> npt.NDArray[np.float64]:
    """Voxel S values (dose-voxel kernel) in mGy/(MBq·s) for the voxel size at hand, centred, (z, y, x).

    Args:
        spacing_zyx_mm: voxel size (z, y, x) in mm, each within [0.5, 20] mm (a single number: isotropic).
        size: kernel edge in voxels: None (≥ 11 per axis and ≥ the electron range), an odd int, or three odd ints.
        medium: ``"soft_tissue"`` (ρ 1.04) or ``"bone"`` (ρ 1.85), see `MEDIA`.
        nuclide: nuclide name; β⁻/IC/Auger emitters with electrons ≤ 1 MeV and photons ≤ 3 MeV.
        cache_dir: folder for a disk cache (one ``.npy`` per parameter set, written atomically), or None.

    Returns:
        A new array (callers may modify it); element [c_z + i, c_y + j, c_x + k] is the mean dose in the voxel
        offset (i, j, k) from the source voxel per unit time-integrated activity of the source voxel.

    Example:
        >>> k = voxel_s_kernel((4.8, 4.8, 4.8))
        >>> k.shape, round(float(k[5, 5, 5]), 3)
        ((11, 11, 11), 0.192)
    """
    spacing = _validate_spacing(spacing_zyx_mm)
    nuclide_name, medium_name = _canonical(nuclide, medium)
    model = _radial_model(nuclide_name, medium_name)
    min_half = _near_extent(model, np.asarray(spacing))
    shape = _validate_size(size, min_half)
    key = _cache_key(nuclide_name, MEDIA[medium_name], spacing, shape)
    cached = _memory_cache.get(key)
    if cached is not None:
        _memory_cache.move_to_end(key)
        return cached.copy()
    path = None
    kernel = None
    if cache_dir is not None:
        folder = Path(cache_dir)
        if folder.exists() and not folder.is_dir():
            raise KernelError(f"cache_dir {folder} exists and is not a folder")
        path = folder / f"{nuclide_name}_{medium_name}_{key}.npy"
        kernel = _load_cached(path, shape)
    if kernel is None:
        kernel = _generate_kernel(spacing, shape, medium_name, nuclide_name)
        if path is not None:
            _save_cached(path, kernel)
    kernel.setflags(write=False)
    _memory_cache[key] = kernel
    while len(_memory_cache) > _MEMORY_CACHE_ENTRIES:
        _memory_cache.popitem(last=False)
    return kernel.copy()


def kernel_energy_per_decay_mev(
    kernel_mgy_per_mbq_s: npt.ArrayLike, spacing_zyx_mm: Sequence[float] | float, medium: str = "soft_tissue"
) -> float:
    """Energy per decay absorbed within the kernel's extent, Σ K · m_voxel, in MeV (a conservation check)."""
    spacing = _validate_spacing(spacing_zyx_mm)
    if medium not in MEDIA:
        raise KernelError(f"unknown kernel medium {medium!r}; choose one of {sorted(MEDIA)}")
    k = np.asarray(kernel_mgy_per_mbq_s, dtype=np.float64)
    voxel_mass_g = MEDIA[medium].density_g_per_ml * float(np.prod(spacing)) * 1e-3
    return float(k.sum() * voxel_mass_g / _MGY_PER_MBQ_S_PER_MEV_PER_G)
