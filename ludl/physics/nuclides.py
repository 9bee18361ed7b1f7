"""Radionuclide decay data (ICRP Publication 107) and decay helpers.

Numbers are read from the packaged ICRP-107 tables (`icrp107-database` on PyPI), never
retyped: a nuclide is a data entry. 177Lu reference values (docs/physics.md §1): T½ = 6.647 d,
mean β⁻ 133.27 keV, IE 13.52 keV, Auger 1.13 keV, photons 35.10 keV per decay.

Only single-step decays are modelled now; `Nuclide.progeny` is where a chain (225Ac) will
hang its daughters, so callers that integrate activity go through `Nuclide` methods.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError

__all__ = [
    "J_PER_MEV",
    "Nuclide",
    "decay_correct",
    "decay_factor",
    "get_nuclide",
]

J_PER_MEV = 1.602176634e-13  # CODATA 2018, exact by SI definition of e

_TIME_UNIT_H = {"s": 1.0 / 3600.0, "m": 1.0 / 60.0, "h": 1.0, "d": 24.0, "y": 365.25 * 24.0}

# Alternative spellings accepted for a nuclide name: "Lu-177", "177Lu", "lu177", "Lu177".
_NAME_PATTERNS = (
    re.compile(r"^(?P<el>[A-Za-z]{1,2})-?(?P<a>\d{1,3})(?P<m>m?)$"),
    re.compile(r"^(?P<a>\d{1,3})(?P<m>m?)-?(?P<el>[A-Za-z]{1,2})$"),
)


@dataclass(frozen=True)
class Nuclide:
    """Decay data of one radionuclide; energies in MeV, yields per decay.

    Attributes:
        name: canonical name such as ``"Lu-177"``.
        half_life_h: physical half-life in hours.
        beta_spectrum_mev: (E, dN/dE) pairs of the continuous β⁻ spectrum (per MeV per decay).
        electron_lines_mev: discrete electrons (internal conversion and Auger): (E, yield).
        photon_lines_mev: discrete photons (γ and X): (E, yield).
        beta_mean_mev: mean β⁻ energy emitted per decay (yield-weighted sum of branch means).
        emission_kinds: ICRP-107 emission types present ("beta-", "gamma", "alpha", "beta+", …), so physics that
            covers only some of them can refuse the rest.
        progeny: daughters that are themselves radioactive (empty for single-step decays).
        source: bibliographic source of the data.
    """

    name: str
    half_life_h: float
    beta_spectrum_mev: npt.NDArray[np.float64]
    electron_lines_mev: npt.NDArray[np.float64]
    photon_lines_mev: npt.NDArray[np.float64]
    beta_mean_mev: float
    emission_kinds: frozenset[str] = frozenset()
    progeny: tuple[str, ...] = ()
    source: str = "ICRP Publication 107 (2008), via the icrp107-database package"
    _extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def decay_constant_per_h(self) -> float:
        """Physical decay constant λ = ln2 / T½ in 1/h."""
        return math.log(2.0) / self.half_life_h

    @property
    def mean_life_h(self) -> float:
        """Mean life 1/λ in h: the TIA (MBq·h) of 1 MBq decaying physically from t = 0."""
        return self.half_life_h / math.log(2.0)

    @property
    def conversion_auger_mev(self) -> float:
        """Energy per decay carried by discrete electrons (IE + Auger), MeV."""
        return float(np.sum(self.electron_lines_mev[:, 0] * self.electron_lines_mev[:, 1]))

    @property
    def electron_energy_mev(self) -> float:
        """All electron energy per decay (β⁻ + IE + Auger), MeV."""
        return self.beta_mean_mev + self.conversion_auger_mev

    @property
    def photon_energy_mev(self) -> float:
        """All photon energy per decay (γ + X), MeV."""
        return float(np.sum(self.photon_lines_mev[:, 0] * self.photon_lines_mev[:, 1]))

    @property
    def electron_energy_j_per_mbq_s(self) -> float:
        """Electron energy released per MBq·s of time-integrated activity, J."""
        return self.electron_energy_mev * J_PER_MEV * 1e6

    def photon_lines_above(self, min_energy_mev: float, min_yield: float = 0.0) -> npt.NDArray[np.float64]:
        """Photon lines with energy ≥ `min_energy_mev` and yield ≥ `min_yield`: (E, yield) rows."""
        lines = self.photon_lines_mev
        keep = (lines[:, 0] >= min_energy_mev) & (lines[:, 1] >= min_yield)
        return lines[keep]

    def decay_factor(self, time_h: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Fraction of activity left after `time_h` hours of physical decay."""
        return decay_factor(time_h, self.half_life_h)


@cache
def _load_icrp107(canonical: str) -> dict[str, Any]:
    root = resources.files("icrp107_database") / "icrp107"
    path = root / f"{canonical}.json"
    if not path.is_file():
        raise InputError(
            f"nuclide {canonical!r} is not in the ICRP-107 tables shipped with icrp107-database; "
            "check the spelling (e.g. 'Lu-177', 'Tb-161')"
        )
    raw = json.loads(path.read_text())
    # The package stores each record as a JSON string inside a JSON file.
    data: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else raw
    return data


def _canonical_name(name: str) -> str:
    text = name.strip().replace(" ", "")
    for pattern in _NAME_PATTERNS:
        match = pattern.match(text)
        if match:
            element = match["el"].capitalize()
            return f"{element}-{int(match['a'])}{match['m']}"
    raise InputError(f"cannot read nuclide name {name!r}; write it like 'Lu-177' or '177Lu'")


def _lines(emissions: dict[str, Any], *kinds: str) -> npt.NDArray[np.float64]:
    rows = [row for kind in kinds for row in emissions.get(kind, [])]
    if not rows:
        return np.zeros((0, 2))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


@cache
def get_nuclide(name: str) -> Nuclide:
    """Return decay data for a nuclide name such as ``"Lu-177"`` (also ``"177Lu"``, ``"lu177"``)."""
    canonical = _canonical_name(name)
    data = _load_icrp107(canonical)
    unit = str(data["time_unit"]).strip()
    if unit not in _TIME_UNIT_H:
        raise InputError(f"ICRP-107 record {canonical} has an unknown half-life unit {unit!r}")
    half_life_h = float(data["half_life"]) * _TIME_UNIT_H[unit]
    emissions = data["emissions"]
    beta_branches = _lines(emissions, "beta-")
    spectrum = _lines(emissions, "b-spectra")
    if spectrum.size:
        # Tabulated spectra integrate to ≈ 1.0017 β per decay for 177Lu; normalise to the
        # branch yields so the spectrum's mean equals the tabulated mean β energy exactly.
        total_yield = float(beta_branches[:, 1].sum()) if beta_branches.size else 1.0
        area = float(np.trapezoid(spectrum[:, 1], spectrum[:, 0]))
        spectrum = np.column_stack([spectrum[:, 0], spectrum[:, 1] * total_yield / area])
    beta_mean = float(np.sum(beta_branches[:, 0] * beta_branches[:, 1])) if beta_branches.size else 0.0
    return Nuclide(
        name=canonical,
        half_life_h=half_life_h,
        beta_spectrum_mev=spectrum,
        electron_lines_mev=_lines(emissions, "IE", "auger"),
        photon_lines_mev=_lines(emissions, "gamma", "X"),
        beta_mean_mev=beta_mean,
        emission_kinds=frozenset(kind for kind, rows in emissions.items() if rows),
    )


def decay_factor(time_h: npt.ArrayLike, half_life_h: float) -> npt.NDArray[np.float64]:
    """exp(−λ t): the fraction of activity left after `time_h` hours (negative t: growth back)."""
    if not half_life_h > 0:
        raise InputError(f"half-life must be positive, got {half_life_h} h")
    return np.exp(-math.log(2.0) / half_life_h * np.asarray(time_h, dtype=np.float64))


def decay_correct(
    activity: npt.ArrayLike, from_time_h: npt.ArrayLike, to_time_h: npt.ArrayLike, half_life_h: float
) -> npt.NDArray[np.float64]:
    """Activity measured at `from_time_h` expressed at `to_time_h` under physical decay only."""
    elapsed = np.asarray(to_time_h, dtype=np.float64) - np.asarray(from_time_h, dtype=np.float64)
    return np.asarray(activity, dtype=np.float64) * decay_factor(elapsed, half_life_h)
