"""Exact activity curves of one patient-cycle (eigen-decomposition of the mammillary system), TIA and dose."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.synth.kinetics.rates import (
    BLADDER,
    BLOOD,
    DELIVERY_PREFIX,
    EXCRETED_FECES,
    EXCRETED_URINE,
    LN2,
    REST,
    CompartmentRates,
    FloatArray,
    decay_constant_per_h,
    eigh,
    expm1_over,
    sphere_s_gy_per_mbq_h,
)

__all__ = [
    "PatientKinetics",
]


@dataclass(frozen=True, eq=False)
class PatientKinetics:
    """Exact activity curves of one patient-cycle, for every region, per injected activity.

    Rows (`regions`): ``blood``, ``interstitial``, the organs in prior order (docs/architecture.md names, ``red_marrow``
    last), ``bowel``, ``rest_of_body``, ``lesion_001`` …, then ``bladder``, ``excreted_urine`` (voided) and
    ``excreted_feces``.
    The rows sum to injected × e^{−λt} at every time.

    Attributes:
        regions: row names.
        kinds: per row: ``organ``, ``marrow``, ``lesion``, ``blood``, ``background`` or ``excreta``.
        volumes_ml: per row; NaN where no self-dose is computed (blood, interstitial, bowel, rest, excreta).
        lesion_sites: site of each lesion row, in row order.
        injected_mbq: administered activity of the cycle (MBq).
        rates: rate constants of the model.
        void_times_h, voided_mbq: voiding times and the activity voided at each (at that time).
        latent: the generator's hidden draws (patient factor …): truth only, never an input of a method.
        cycle: treatment cycle (1-based).
    """

    regions: tuple[str, ...]
    kinds: tuple[str, ...]
    volumes_ml: FloatArray
    lesion_sites: tuple[str, ...]
    injected_mbq: float
    rates: CompartmentRates
    void_times_h: FloatArray
    voided_mbq: FloatArray
    latent: Mapping[str, Any]
    cycle: int
    decay_constant_per_h: float
    _modes_per_h: FloatArray = field(repr=False)
    _coef: FloatArray = field(repr=False)
    # Every compartment's row, hidden delivery pools included (`_coef` counts them in rest_of_body): the faecal
    # leak is summed over these. The same array as `_coef` when there are no hidden compartments.
    _coef_full: FloatArray = field(repr=False)

    # ---- construction
    @classmethod
    def from_rates(
        cls,
        rates: CompartmentRates,
        *,
        kinds: Sequence[str],
        volumes_ml: npt.ArrayLike,
        lesion_sites: Sequence[str],
        injected_mbq: float,
        void_times_h: npt.ArrayLike,
        void_residual_fraction: npt.ArrayLike,
        latent: Mapping[str, Any] | None = None,
        cycle: int = 1,
    ) -> PatientKinetics:
        """Solve the model for given rates (one patient-cycle, no batch dimensions) and voiding schedule."""
        a = np.asarray(rates.uptake_per_h, dtype=np.float64)
        b = np.asarray(rates.release_per_h, dtype=np.float64)
        leak = np.asarray(rates.leak_per_h, dtype=np.float64)
        k_u = float(np.asarray(rates.renal_per_h))
        n = len(rates.names)
        if a.shape != (n,) or b.shape != (n,) or leak.shape != (n,):
            raise InputError(f"rates must be 1-D of length {n} (one per compartment), got {a.shape}, {b.shape}")
        if not (np.all(a > 0) and np.all(b > 0) and np.all(leak >= 0) and k_u > 0):
            raise InputError("uptake, release and renal rates must be > 0 and leaks ≥ 0 (detailed balance needs b > 0)")
        if not (math.isfinite(injected_mbq) and injected_mbq > 0):
            raise InputError(f"injected_mbq must be positive, got {injected_mbq}")
        lam = decay_constant_per_h()
        if rates.parent is None:
            # Symmetrised rate matrix (blood first): S = D^{-1/2} K D^{1/2}, D = diag(1, a/b).
            sym = np.zeros((n + 1, n + 1))
            sym[0, 0] = -(k_u + a.sum())
            sym[np.arange(1, n + 1), np.arange(1, n + 1)] = -(b + leak)
            off = np.sqrt(a * b)
            sym[0, 1:] = off
            sym[1:, 0] = off
            modes, q = eigh(sym)
            d_half = np.concatenate([[1.0], np.sqrt(a / b)])
        else:
            sym, d_half = _tree_symmetric_matrix(rates, a, b, leak, k_u)
            modes, q = eigh(sym)
        # x(t) = D^{1/2} Q e^{Λt} Q^T D^{-1/2} e_blood, and D^{-1/2} e_blood = e_blood.
        coef = d_half[:, None] * q * q[0][None, :]
        times = np.asarray(void_times_h, dtype=np.float64)
        residual = np.asarray(void_residual_fraction, dtype=np.float64)
        if times.ndim != 1 or residual.shape != times.shape or np.any(np.diff(times) <= 0) or np.any(times < 0):
            raise InputError("void_times_h must be increasing, ≥ 0, with one residual fraction per void")
        if np.any((residual < 0) | (residual >= 1)):
            raise InputError("void_residual_fraction must be in [0, 1)")
        # Urine made up to each void (biological, per injected MBq): k_u ∫ blood.
        made = k_u * (coef[0] @ expm1_over(modes, times)) if times.size else np.zeros(0)
        voided_bio = np.empty_like(made)
        gone = 0.0  # biological amount voided so far
        for i, (m, r) in enumerate(zip(made, residual, strict=True)):
            voided_bio[i] = (1.0 - r) * (m - gone)
            gone += voided_bio[i]
        visible, coef_visible = _fold_hidden(rates.names, coef)
        names = (BLOOD, *visible, BLADDER, EXCRETED_URINE, EXCRETED_FECES)
        if len(kinds) != len(names) or np.shape(volumes_ml) != (len(names),):
            raise InputError(f"kinds and volumes_ml need one entry per region ({len(names)})")
        return cls(
            regions=names,
            kinds=tuple(kinds),
            volumes_ml=np.asarray(volumes_ml, dtype=np.float64),
            lesion_sites=tuple(lesion_sites),
            injected_mbq=float(injected_mbq),
            rates=CompartmentRates(rates.names, a, b, leak, np.asarray(k_u), rates.parent),
            void_times_h=times,
            voided_mbq=injected_mbq * voided_bio * np.exp(-lam * times),
            latent=dict(latent or {}),
            cycle=cycle,
            decay_constant_per_h=lam,
            _modes_per_h=modes,
            _coef=coef_visible,
            _coef_full=coef,
        )

    # ---- lookups
    def blood_exponentials(self) -> tuple[FloatArray, FloatArray]:
        """Blood activity per injected activity as Σ w_i e^{ν_i t}: the exponents ν (1/h, physical decay included, all
        negative) and the weights w — the input function the single-scan oracle convolves with."""
        return self._modes_per_h - self.decay_constant_per_h, self._coef[0]

    def index(self, region: str) -> int:
        """Row of `region`."""
        try:
            return self.regions.index(region)
        except ValueError:
            raise InputError(f"no region {region!r}; known: {', '.join(self.regions)}") from None

    @property
    def lesion_regions(self) -> tuple[str, ...]:
        """Names of the lesion rows."""
        return tuple(r for r, k in zip(self.regions, self.kinds, strict=True) if k == "lesion")

    @property
    def lesion_rows(self) -> npt.NDArray[np.intp]:
        """Row indices of the lesions."""
        return np.flatnonzero(np.array(self.kinds) == "lesion")

    @property
    def n_transient(self) -> int:
        """Blood plus peripheral compartments (the rows before the bladder)."""
        return int(self._coef.shape[0])

    def _select(self, values: FloatArray, region: str | None) -> Any:
        return values if region is None else float(values[self.index(region)])

    # ---- curves
    def activity_mbq(self, time_h: npt.ArrayLike) -> FloatArray:
        """Activity (MBq, not decay-corrected) of every region at the given times; shape (n_regions, n_times).

        Args:
            time_h: times after injection in h (scalar or 1-D, ≥ 0); any grid, e.g. fine curves for images.
        """
        t = np.atleast_1d(np.asarray(time_h, dtype=np.float64))
        if t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(t < 0):
            raise InputError("time_h must be a scalar or 1-D array of finite times ≥ 0 h")
        lam, inj, mu, coef = self.decay_constant_per_h, self.injected_mbq, self._modes_per_h, self._coef
        decay = np.exp(-lam * t)
        transient = inj * coef @ np.exp(np.multiply.outer(mu, t)) * decay
        phi = expm1_over(mu, t)
        urine_made = inj * decay * float(self.rates.renal_per_h) * (coef[0] @ phi)
        feces = inj * decay * ((self.rates.leak_per_h @ self._coef_full[1:]) @ phi)
        # Voided so far, decayed to t: cumulative sum of voids in decay-corrected units.
        idx = np.searchsorted(self.void_times_h, t, side="right")
        cum = np.concatenate([[0.0], np.cumsum(self.voided_mbq * np.exp(lam * self.void_times_h))])
        voided = cum[idx] * decay
        out: FloatArray = np.vstack([transient, urine_made - voided, voided, feces])
        return out

    def total_mbq(self, time_h: npt.ArrayLike) -> FloatArray:
        """Injected activity decayed to each time (MBq): what all rows must add up to."""
        t = np.atleast_1d(np.asarray(time_h, dtype=np.float64))
        out: FloatArray = self.injected_mbq * np.exp(-self.decay_constant_per_h * t)
        return out

    def urinary_output_fraction(self, time_h: npt.ArrayLike) -> FloatArray:
        """Fraction of the (decayed) activity that has left the body as urine, bladder content included."""
        a = self.activity_mbq(time_h)
        i = self.index(BLADDER)
        out: FloatArray = (a[i] + a[i + 1]) / self.total_mbq(time_h)
        return out

    def excreted_fraction(self, time_h: npt.ArrayLike) -> FloatArray:
        """Fraction of the (decayed) activity voided or in faeces by each time (bladder content not counted)."""
        a = self.activity_mbq(time_h)
        i = self.index(EXCRETED_URINE)
        out: FloatArray = (a[i] + a[i + 1]) / self.total_mbq(time_h)
        return out

    # ---- integrals
    @cached_property
    def _tia_all(self) -> FloatArray:
        lam, inj, mu, coef = self.decay_constant_per_h, self.injected_mbq, self._modes_per_h, self._coef
        transient_full = inj * self._coef_full @ (1.0 / (lam - mu))
        transient = transient_full if self._coef_full is coef else inj * coef @ (1.0 / (lam - mu))
        urine_made = float(self.rates.renal_per_h) * transient[0] / lam
        voided = float(np.sum(self.voided_mbq)) / lam
        feces = float(self.rates.leak_per_h @ transient_full[1:]) / lam
        out: FloatArray = np.concatenate([transient, [urine_made - voided, voided, feces]])
        return out

    def tia_mbq_h(self, region: str | None = None) -> Any:
        """Time-integrated activity ∫₀^∞ A dt (MBq·h), exact from the eigen-decomposition; all rows if None."""
        return self._select(self._tia_all, region)

    @cached_property
    def _peaks(self) -> tuple[FloatArray, FloatArray]:
        lam, inj, coef = self.decay_constant_per_h, self.injected_mbq, self._coef
        nu = self._modes_per_h - lam
        grid = np.concatenate([[0.0], np.geomspace(0.01, 5000.0, 600)])
        curves = coef @ np.exp(np.multiply.outer(nu, grid))
        k = np.argmax(curves, axis=1)
        lo, hi = grid[np.maximum(k - 1, 0)], grid[np.minimum(k + 1, grid.size - 1)]
        t = grid[k]
        inner = k > 0
        for _ in range(40):
            # Newton on A'(t) = 0 inside the bracket of the grid maximum.
            e = np.exp(t[:, None] * nu[None, :])
            d1 = np.sum(coef * nu * e, axis=1)
            d2 = np.sum(coef * nu**2 * e, axis=1)
            step = np.where(d2 < 0, -d1 / np.where(d2 < 0, d2, -1.0), 0.0)
            t = np.where(inner, np.clip(t + step, lo, hi), t)
        e = np.exp(t[:, None] * nu[None, :])
        peak = inj * np.sum(coef * e, axis=1)
        post = inj * np.sum(-coef * e / nu, axis=1)
        t_eff = np.minimum(LN2 * post / peak, LN2 / lam)
        return t, t_eff

    def time_to_peak_h(self, region: str | None = None) -> Any:
        """Time of maximum activity (h) of blood and the peripheral compartments (NaN for excreta rows)."""
        out = np.full(len(self.regions), np.nan)
        out[: self.n_transient] = self._peaks[0]
        return self._select(out, region)

    def t_eff_h(self, region: str | None = None) -> Any:
        """Effective half-life (h): ln2 × post-peak TIA / peak activity, capped at T½ (NaN for excreta rows)."""
        out = np.full(len(self.regions), np.nan)
        out[: self.n_transient] = self._peaks[1]
        return self._select(out, region)

    # ---- dose (self-dose only, for the images=false path)
    @cached_property
    def _s_gy_per_mbq_h(self) -> FloatArray:
        v = self.volumes_ml
        out = np.full(v.shape, np.nan)
        ok = np.isfinite(v)
        out[ok] = sphere_s_gy_per_mbq_h(v[ok])
        return out

    def s_value_gy_per_mbq_h(self, region: str | None = None) -> Any:
        """Self-dose S value of each region's volume (unit-density sphere), Gy/(MBq·h); NaN where no volume."""
        return self._select(self._s_gy_per_mbq_h, region)

    def mean_dose_gy(self, region: str | None = None) -> Any:
        """Mean absorbed self-dose (Gy) = TIA × sphere S value of the region volume (NaN where no volume)."""
        return self._select(self._tia_all * self._s_gy_per_mbq_h, region)

    def dose_gy_per_gbq(self, region: str | None = None) -> Any:
        """Mean absorbed self-dose per injected GBq (Gy/GBq)."""
        return self._select(self._tia_all * self._s_gy_per_mbq_h * 1000.0 / self.injected_mbq, region)


def _tree_symmetric_matrix(
    rates: CompartmentRates, a: FloatArray, b: FloatArray, leak: FloatArray, k_u: float
) -> tuple[FloatArray, FloatArray]:
    """S = D^{-1/2} K D^{1/2} of a tree of reversible exchanges rooted at blood, and D^{1/2}.

    Detailed balance holds on any tree: d_child = d_parent · a/b makes S symmetric with off-diagonal √(ab)
    between each compartment and its parent (blood is row 0, compartment j row j + 1).
    """
    n = len(rates.names)
    parent = np.asarray(rates.parent, dtype=np.intp) + 1  # rows; blood → 0
    order = rates.depth_order()
    sym = np.zeros((n + 1, n + 1))
    sym[0, 0] = -k_u
    rows = np.arange(1, n + 1)
    sym[rows, rows] = -(b + leak)
    np.add.at(sym, (parent, parent), -a)
    off = np.sqrt(a * b)
    sym[parent, rows] = off
    sym[rows, parent] = off
    d = np.ones(n + 1)
    for j in reversed(order):  # parents before their children
        d[j + 1] = d[parent[j]] * a[j] / b[j]
    return sym, np.sqrt(d)


def _fold_hidden(names: tuple[str, ...], coef: FloatArray) -> tuple[tuple[str, ...], FloatArray]:
    """Drop the hidden delivery pools' rows (`DELIVERY_PREFIX`) and count them in rest_of_body (blood row 0)."""
    hidden = [j for j, name in enumerate(names) if name.startswith(DELIVERY_PREFIX)]
    if not hidden:
        return names, coef
    if REST not in names:
        raise InputError(f"hidden delivery compartments need a {REST!r} compartment to be counted in")
    keep = [0, *(j + 1 for j, name in enumerate(names) if not name.startswith(DELIVERY_PREFIX))]
    folded = coef[keep].copy()
    rest_row = keep.index(names.index(REST) + 1)
    folded[rest_row] += coef[[j + 1 for j in hidden]].sum(axis=0)
    return tuple(names[k - 1] for k in keep[1:]), folded
