"""Packaged physics data of the dose-kernel model: media, table reading, photon build-up, scaled electron kernels.

The tables (``ludl/physics/data/*.csv``, sources in their headers and in docs/physics.md §4):

- ``electron_scaled_dpk_water.csv``: Monte Carlo scaled dose point kernels F(x, E) of monoenergetic electrons in
  water, x = r / r0(E) (EGSnrc/EDKnrc, Mainegra-Hing, Rogers & Kawrakow 2005, Med Phys 32:685; 10 keV, 15 keV,
  100 keV, 1 MeV);
- ``estar_csda_range.csv``: CSDA ranges from NIST ESTAR ("Tissue, soft (ICRP)", "Bone, cortical (ICRP)");
- ``photon_attenuation.csv``: μ/ρ and μ_en/ρ from Hubbell & Seltzer (NIST SRD 126, ICRU-44 skeletal muscle and
  cortical bone);
- ``buildup_gp_coefficients.csv``: ANSI/ANS-6.4.3 geometric-progression build-up fit coefficients.

`data_fingerprint` hashes them for the kernel disk-cache key (`ludl.physics.kernels`), so editing a table
invalidates cached kernels. `ludl.physics.point_kernel` builds the radial dose model from these.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DATA_FILES",
    "MAX_ELECTRON_MEV",
    "MAX_PHOTON_MEV",
    "MEDIA",
    "Medium",
    "data_fingerprint",
    "gp_buildup",
    "loglog_interp",
    "scaled_electron_kernel_cdf",
    "tables",
]

MAX_ELECTRON_MEV = 1.0  # highest tabulated scaled kernel
MAX_PHOTON_MEV = 3.0  # last row of the photon tables kept here

DATA_FILES = (
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
        density_g_per_ml=1.04,  # ICRU Report 44 soft tissue (docs/physics.md §4), as in Lanconelli et al. 2012
        estar_column="soft_tissue_icrp",
        photon_columns=("muscle_mu", "muscle_muen"),
        buildup_material="water",
        source="ρ 1.04 g/cm³ (ICRU 44); electron ranges ESTAR Tissue, soft (ICRP); photons Hubbell-Seltzer "
        "ICRU-44 skeletal muscle; build-up ANS-6.4.3 water",
    ),
    "bone": Medium(
        name="bone",
        density_g_per_ml=1.85,  # cortical/compact bone as pinned in docs/physics.md §4 (ICRU 46 lists 1.92)
        estar_column="bone_cortical_icrp",
        photon_columns=("bone_mu", "bone_muen"),
        buildup_material="aluminum",
        source="ρ 1.85 g/cm³ (cortical bone, docs/physics.md §4); electron ranges ESTAR Bone, cortical (ICRP); "
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
def tables() -> dict[str, dict[str, npt.NDArray[np.float64]]]:
    """Every packaged table, file name → column name → values (read once per process)."""
    return {name: _read_table(name) for name in DATA_FILES}


@lru_cache(maxsize=1)
def data_fingerprint() -> str:
    """First 16 hex digits of the SHA-256 of the packaged tables: part of every kernel disk-cache key."""
    digest = hashlib.sha256()
    for name in DATA_FILES:
        digest.update((resources.files("ludl.physics.data") / name).read_bytes())
    return digest.hexdigest()[:16]


def loglog_interp(x: npt.ArrayLike, xp: npt.NDArray[np.float64], fp: npt.NDArray[np.float64]) -> Any:
    """Interpolation linear in log x and log y (attenuation coefficients, CSDA ranges)."""
    return np.exp(np.interp(np.log(np.asarray(x, dtype=np.float64)), np.log(xp), np.log(fp)))


# ------------------------------------------------------------------------------------------- physics tables


def gp_buildup(energy_mev: float, x: npt.NDArray[np.float64], material: str) -> npt.NDArray[np.float64]:
    """ANS-6.4.3 GP build-up factor at `x` mean free paths, log-log interpolated between tabulated energies."""
    table = tables()["buildup_gp_coefficients.csv"]
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


def scaled_electron_kernel_cdf(
    x: npt.NDArray[np.float64], energy_mev: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Fraction of a monoenergetic electron's energy absorbed within x = r/r0; x (K, N), energy (K,) → (K, N)."""
    table = tables()["electron_scaled_dpk_water.csv"]
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
