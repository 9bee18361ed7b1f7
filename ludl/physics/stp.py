"""Single-time-point (STP) TIA estimates: Hänscheid, Madsen, and a prior-informed population estimator.

docs/physics.md §3. These are the classical baselines a single-scan network must beat. Activities are not
decay-corrected; TIA is in activity unit × h (MBq·h for MBq).

- `haenscheid_tia`: A(t)·2t/ln2 (Hänscheid et al. 2018, J Nucl Med 59:75), exact for mono-exponential
  clearance at t = T_eff and t = 2·T_eff.
- `madsen_tia`: A(t)·e^{λt}/λ with a population λ = ln2/T_eff (Madsen et al. 2018, Med Phys 45:2318).
- `PriorInformedEstimator`: the posterior TIA (mean, SD, median) under a population model of the ``biexp_uptake``
  kinetics per region class (`RegionPrior`), with an optional patient factor shared by all regions of a
  patient (in the spirit of Devasia et al. 2021's nonlinear mixed models).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp, ndtri
from scipy.stats import qmc

from ludl.errors import InputError
from ludl.physics._tac_models import MIN_RATE_RATIO
from ludl.physics.nuclides import get_nuclide

__all__ = [
    "LOG_PARAM_NAMES",
    "PosteriorTia",
    "PriorInformedEstimator",
    "RegionPrior",
    "haenscheid_tia",
    "madsen_tia",
]

LN2 = math.log(2.0)
# Components of a RegionPrior's mean vector: A(t) = f·A_inj·(e^{−λ_eff t} − e^{−λ_u t}), the biexp_uptake
# model of ludl.physics.kinetics with a0 = f·A_inj, lambda1_per_h = λ_eff, lambda2_per_h = λ_u.
LOG_PARAM_NAMES = ("log_uptake_fraction", "log_lambda_eff_per_h", "log_lambda_uptake_per_h")
# Points of the posterior CDF grid per class (log-spaced over the prior samples' TIA): a median to ≈ 0.5 %.
_CDF_POINTS = 1024
# Ridge added to covariances built from fits so that a class with collinear or clamped fits stays
# positive definite (variance 1e-6 in log units is a 0.1 % spread).
_COV_RIDGE = 1e-6


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _check_positive(name: str, x: Any) -> None:
    values = x.detach().cpu().numpy() if _is_tensor(x) else np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"{name} must be finite and > 0 (hours after injection), got {values}")


def _check_activity(x: Any) -> None:
    values = x.detach().cpu().numpy() if _is_tensor(x) else np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise InputError("activity must be finite and ≥ 0 (not decay-corrected, as the scanner shows it)")


def haenscheid_tia(activity: Any, time_h: Any) -> Any:
    """TIA ≈ A(t)·2t/ln2 (Hänscheid 2018); numpy or torch, broadcasting.

    Args:
        activity: activity at the scan, not decay-corrected (e.g. MBq; a map works too).
        time_h: scan time after injection in h (> 0).
    """
    _check_positive("time_h", time_h)
    _check_activity(activity)
    if _is_tensor(activity) or _is_tensor(time_h):
        return activity * time_h * (2.0 / LN2)
    return np.asarray(activity, dtype=np.float64) * np.asarray(time_h, dtype=np.float64) * (2.0 / LN2)


def madsen_tia(activity: Any, time_h: Any, t_eff_h: Any) -> Any:
    """TIA = A(t)·e^{λt}/λ, λ = ln2/T_eff (Madsen 2018): mono-exponential back- and forward-extrapolation.

    Args:
        activity: activity at the scan, not decay-corrected.
        time_h: scan time after injection in h (> 0).
        t_eff_h: effective half-life of the region class in h (> 0), e.g. a population value.
    """
    _check_positive("time_h", time_h)
    _check_positive("t_eff_h", t_eff_h)
    _check_activity(activity)
    if _is_tensor(activity) or _is_tensor(time_h) or _is_tensor(t_eff_h):
        import torch

        lam = LN2 / t_eff_h
        return activity * torch.exp(torch.as_tensor(lam * time_h)) / lam
    lam = LN2 / np.asarray(t_eff_h, dtype=np.float64)
    return np.asarray(activity, dtype=np.float64) * np.exp(lam * np.asarray(time_h, dtype=np.float64)) / lam


@dataclass(frozen=True, eq=False)
class RegionPrior:
    """Population distribution of one region class's ``biexp_uptake`` kinetics.

    A region's curve is A(t) = f·A_inj·(e^{−λ_eff t} − e^{−λ_u t}) with θ = (ln f, ln λ_eff, ln λ_u)
    (`LOG_PARAM_NAMES`; f is the uptake fraction of the injected activity A_inj, rates in 1/h) and

        θ = mean + patient_loading·z + ε,   ε ~ N(0, cov),   z ~ N(0, 1) shared by all regions of a patient.

    Samples are clamped to λ_eff ≥ λ_phys and λ_u ≥ 1.05·λ_eff, like the fits. The measured activity is
    log-normal around the model: ln A_obs ~ N(ln A(t), σ²), σ² = ln(1 + noise_cv²).

    Attributes:
        mean: (3,) mean of θ.
        cov: (3, 3) covariance of the region-specific part ε.
        noise_cv: coefficient of variation of a measured activity (SPECT noise, partial volume…).
        patient_loading: (3,) effect of the shared patient factor z on θ (zeros: regions independent).
        n_fits: number of fitted curves the prior was estimated from (0 when given by hand).
    """

    mean: npt.NDArray[np.float64]
    cov: npt.NDArray[np.float64]
    noise_cv: float = 0.1
    patient_loading: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(3))
    n_fits: int = 0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        loading = np.asarray(self.patient_loading, dtype=np.float64)
        if mean.shape != (3,) or cov.shape != (3, 3) or loading.shape != (3,):
            raise InputError(
                f"RegionPrior needs mean (3,), cov (3, 3) and patient_loading (3,) over {LOG_PARAM_NAMES}; "
                f"got {mean.shape}, {cov.shape}, {loading.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov)) and np.all(np.isfinite(loading))):
            raise InputError("RegionPrior mean, cov and patient_loading must be finite")
        if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
            raise InputError("RegionPrior cov must be symmetric")
        try:
            np.linalg.cholesky(cov + 1e-12 * np.eye(3))
        except np.linalg.LinAlgError as exc:
            raise InputError("RegionPrior cov must be positive semi-definite") from exc
        if not (math.isfinite(self.noise_cv) and self.noise_cv > 0):
            raise InputError(f"noise_cv must be > 0, got {self.noise_cv}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "patient_loading", loading)

    @property
    def marginal_cov(self) -> npt.NDArray[np.float64]:
        """Covariance of θ across all regions of the class (region part + shared patient part)."""
        return self.cov + np.outer(self.patient_loading, self.patient_loading)

    @classmethod
    def from_fits(
        cls,
        fits: Sequence[Any],
        injected_mbq: float | Sequence[float],
        *,
        noise_cv: float | None = None,
        patient_ids: Sequence[Any] | None = None,
    ) -> RegionPrior:
        """Moment estimates of θ from fitted ``biexp_uptake`` curves of one region class.

        Args:
            fits: `ludl.physics.kinetics.TacFit` results with model ``biexp_uptake`` (activity in MBq), or
                mappings with ``a0``, ``lambda1_per_h``, ``lambda2_per_h``.
            injected_mbq: injected activity of each fit's patient-cycle (one value for all, or one per fit).
            noise_cv: measurement CV; default: the median over `TacFit`s of sqrt(RSS/(n − 3)) / mean activity.
            patient_ids: patient of each fit. With several fits per patient the covariance splits into the
                within-patient part (`cov`) and a rank-1 shared part (`patient_loading`, one-way random
                effects moment estimator; its sign makes the λ_eff loading ≥ 0). Default: independent.
        """
        n = len(fits)
        if n < 2:
            raise InputError(f"RegionPrior.from_fits needs at least 2 fitted curves, got {n}")
        inj = np.broadcast_to(np.asarray(injected_mbq, dtype=np.float64), (n,)).copy()
        if not np.all(np.isfinite(inj)) or np.any(inj <= 0):
            raise InputError("injected_mbq must be > 0 for every fit")
        theta = np.empty((n, 3))
        cvs: list[float] = []
        for i, fit in enumerate(fits):
            params = _fit_params(fit, i)
            theta[i] = (
                math.log(params["a0"] / inj[i]),
                math.log(params["lambda1_per_h"]),
                math.log(params["lambda2_per_h"]),
            )
            if not isinstance(fit, Mapping) and getattr(fit, "n_points", 0) > 3:
                mean_activity = float(np.mean(fit.activity))
                if mean_activity > 0:
                    cvs.append(math.sqrt(fit.rss / (fit.n_points - 3)) / mean_activity)
        if noise_cv is None:
            if not cvs:
                raise InputError("noise_cv cannot be estimated from parameter mappings; pass noise_cv=")
            # Fits that interpolate their points have RSS ≈ 0; a CV below 1 % would make the likelihood
            # spuriously sharp, so the estimate is floored there.
            noise_cv = max(float(np.median(cvs)), 0.01)
        mean = theta.mean(axis=0)
        loading = np.zeros(3)
        if patient_ids is None:
            cov = np.cov(theta, rowvar=False, ddof=1)
        else:
            cov, loading = _split_patient_covariance(theta, patient_ids)
        return cls(mean=mean, cov=cov + _COV_RIDGE * np.eye(3), noise_cv=noise_cv, patient_loading=loading, n_fits=n)


def _fit_params(fit: Any, i: int) -> Mapping[str, float]:
    if isinstance(fit, Mapping):
        params = fit
    else:
        model = getattr(fit, "model", None)
        if model != "biexp_uptake":
            raise InputError(f"fit {i} has model {model!r}; RegionPrior.from_fits needs biexp_uptake fits")
        params = fit.params
    try:
        a0, l1, l2 = (float(params[k]) for k in ("a0", "lambda1_per_h", "lambda2_per_h"))
    except KeyError as exc:
        raise InputError(f"fit {i} lacks {exc}; give a0, lambda1_per_h and lambda2_per_h") from exc
    if not (a0 > 0 and l1 > 0 and l2 > l1 and all(map(math.isfinite, (a0, l1, l2)))):
        raise InputError(f"fit {i} has parameters a0={a0}, λ1={l1}, λ2={l2}; need a0 > 0 and 0 < λ1 < λ2")
    return {"a0": a0, "lambda1_per_h": l1, "lambda2_per_h": l2}


def _split_patient_covariance(
    theta: npt.NDArray[np.float64], patient_ids: Sequence[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Within-patient covariance and rank-1 between-patient loading (one-way random-effects moments)."""
    ids = list(patient_ids)
    if len(ids) != theta.shape[0]:
        raise InputError(f"patient_ids has {len(ids)} entries for {theta.shape[0]} fits")
    groups: dict[Any, list[int]] = {}
    for i, pid in enumerate(ids):
        groups.setdefault(pid, []).append(i)
    sizes = np.array([len(g) for g in groups.values()], dtype=np.float64)
    n, n_pat = theta.shape[0], len(groups)
    if n_pat < 2 or n - n_pat < 1:
        raise InputError("splitting the covariance by patient needs ≥ 2 patients and a patient with ≥ 2 fits")
    means = np.array([theta[g].mean(axis=0) for g in groups.values()])
    resid = np.concatenate([theta[g] - theta[g].mean(axis=0) for g in groups.values()])
    within = resid.T @ resid / (n - n_pat)
    # E[cov of patient means] = B + W·mean(1/n_p) (unbalanced design: the average is an approximation).
    between = np.cov(means, rowvar=False, ddof=1) - within * float(np.mean(1.0 / sizes))
    values, vectors = np.linalg.eigh(between)
    top, vec = values[-1], vectors[:, -1]
    loading = math.sqrt(top) * vec if top > 0 else np.zeros(3)
    if loading[1] < 0:
        loading = -loading
    return within, loading


@dataclass(frozen=True)
class PosteriorTia:
    """Posterior of the TIA per region: mean, SD and median (activity unit × h), importance-sampling ESS.

    The median is the estimate for relative errors: TIA = A(t)·e^{λt}/λ is convex in λ, so with a wide λ prior a late
    scan's posterior has a long upper tail that pulls the mean far above the typical value.
    """

    mean: npt.NDArray[np.float64]
    sd: npt.NDArray[np.float64]
    ess: npt.NDArray[np.float64]
    median: npt.NDArray[np.float64]


class PriorInformedEstimator:
    """Posterior-mean TIA from one scan per region, given per-class population priors.

    The posterior is computed numerically: the region-specific effects by importance sampling over
    `n_samples` prior draws (scrambled Sobol points with a fixed seed: deterministic), the shared patient
    factor z by Gauss–Hermite quadrature with `n_patient_nodes` nodes (one node when no prior has a
    loading). Regions of one patient are combined through z; everything is vectorised over regions.

    Example:
        >>> est = PriorInformedEstimator({"kidney": kidney_prior})
        >>> est.tia([120.0, 115.0], 24.0, ["kidney", "kidney"], injected_mbq=7400.0)
    """

    def __init__(
        self,
        priors: Mapping[str, RegionPrior],
        *,
        nuclide: str = "Lu-177",
        n_samples: int = 4096,
        n_patient_nodes: int = 24,
        seed: int = 0,
    ) -> None:
        if not priors:
            raise InputError("PriorInformedEstimator needs at least one RegionPrior")
        for name, prior in priors.items():
            if not isinstance(prior, RegionPrior):
                raise InputError(f"prior {name!r} is a {type(prior).__name__}, not a RegionPrior")
        if n_samples < 16 or n_patient_nodes < 1:
            raise InputError("n_samples must be ≥ 16 and n_patient_nodes ≥ 1")
        self.priors = dict(priors)
        self.lambda_phys_per_h = get_nuclide(nuclide).decay_constant_per_h
        m = int(2 ** math.ceil(math.log2(n_samples)))  # Sobol points come in powers of 2
        self._eps = ndtri(qmc.Sobol(d=3, scramble=True, seed=seed).random(m))  # (M, 3) standard normal
        shared = any(np.any(p.patient_loading != 0) for p in self.priors.values())
        nodes, weights = np.polynomial.hermite_e.hermegauss(n_patient_nodes if shared else 1)
        self._z = nodes
        self._log_wz = np.log(weights / weights.sum())

    def tia(
        self,
        activity_mbq: npt.ArrayLike,
        time_h: npt.ArrayLike,
        region_class: str | Sequence[str],
        injected_mbq: npt.ArrayLike,
        patient_ids: Sequence[Any] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Posterior-mean TIA (MBq·h) per region; arguments as in `posterior`."""
        return self.posterior(activity_mbq, time_h, region_class, injected_mbq, patient_ids).mean

    def posterior(
        self,
        activity_mbq: npt.ArrayLike,
        time_h: npt.ArrayLike,
        region_class: str | Sequence[str],
        injected_mbq: npt.ArrayLike,
        patient_ids: Sequence[Any] | None = None,
    ) -> PosteriorTia:
        """Posterior TIA of each region from its single measured activity.

        Args:
            activity_mbq: (R,) region activities at the scan (MBq, not decay-corrected, > 0).
            time_h: scan time(s) in h, scalar or (R,).
            region_class: class of each region (a key of the priors), or one class for all.
            injected_mbq: injected activity, scalar or (R,).
            patient_ids: patient of each region; regions of one patient share the patient factor.
                Default: all regions belong to one patient.
        """
        a = np.atleast_1d(np.asarray(activity_mbq, dtype=np.float64))
        n = a.size
        if a.ndim != 1:
            raise InputError(f"activity_mbq must be 1-D (one value per region), got shape {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise InputError("activity_mbq must be finite and > 0 for every region (log-normal noise model)")
        t = _per_region("time_h", time_h, n)
        inj = _per_region("injected_mbq", injected_mbq, n)
        classes = [region_class] * n if isinstance(region_class, str) else list(region_class)
        if len(classes) != n:
            raise InputError(f"region_class has {len(classes)} entries for {n} regions")
        unknown = sorted({c for c in classes if c not in self.priors})
        if unknown:
            raise InputError(f"no RegionPrior for class(es) {unknown}; known: {sorted(self.priors)}")
        pids = [0] * n if patient_ids is None else list(patient_ids)
        if len(pids) != n:
            raise InputError(f"patient_ids has {len(pids)} entries for {n} regions")

        k = self._z.size
        log_lik = np.empty((n, k))  # log of the mean likelihood over region effects, per z node
        m1 = np.empty((n, k))  # E[TIA | y_r, z_k]
        m2 = np.empty((n, k))  # E[TIA² | y_r, z_k]
        ess = np.empty((n, k))
        cdf = np.empty((n, k, _CDF_POINTS))  # P(TIA ≤ grid_g | y_r, z_k)
        grid = np.empty((n, _CDF_POINTS))  # TIA grid of each region's class (activity unit × h)
        for name in sorted(set(classes)):
            rows = np.array([i for i, c in enumerate(classes) if c == name])
            for start in range(0, rows.size, 64):  # bounds memory at 64 × K × M
                sel = rows[start : start + 64]
                log_lik[sel], m1[sel], m2[sel], ess[sel], cdf[sel], grid[sel] = self._class_moments(
                    self.priors[name], a[sel], t[sel], inj[sel]
                )
        # Combine regions of one patient through the shared factor: posterior over the z nodes.
        mean, var, ess_out, median = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        groups: dict[Any, list[int]] = {}
        for i, pid in enumerate(pids):
            groups.setdefault(pid, []).append(i)
        for idx in groups.values():
            log_post = self._log_wz + log_lik[idx].sum(axis=0)
            post = np.exp(log_post - logsumexp(log_post))  # (K,)
            mean[idx] = m1[idx] @ post
            var[idx] = np.maximum(m2[idx] @ post - mean[idx] ** 2, 0.0)
            ess_out[idx] = ess[idx] @ post
            for i, mixture in zip(idx, np.einsum("rkg,k->rg", cdf[idx], post), strict=True):
                median[i] = _quantile_from_cdf(grid[i], mixture, 0.5)
        return PosteriorTia(mean=mean, sd=np.sqrt(var), ess=ess_out, median=median)

    def _class_moments(
        self,
        prior: RegionPrior,
        a: npt.NDArray[np.float64],
        t: npt.NDArray[np.float64],
        inj: npt.NDArray[np.float64],
    ) -> tuple[npt.NDArray[np.float64], ...]:
        chol = np.linalg.cholesky(prior.cov + 1e-12 * np.eye(3))
        # θ for every (z node, sample): (K, M, 3), shared by all regions of the class.
        theta = prior.mean + self._z[:, None, None] * prior.patient_loading + (self._eps @ chol.T)[None]
        f = np.exp(theta[..., 0])
        lam_eff = np.maximum(np.exp(theta[..., 1]), self.lambda_phys_per_h)
        # λ_u ≥ ratio·λ_eff, as in the kinetics fits.
        lam_u = np.maximum(np.exp(theta[..., 2]), lam_eff * MIN_RATE_RATIO)
        tia_per_mbq = f * (1.0 / lam_eff - 1.0 / lam_u)  # (K, M)
        tt = t[:, None, None]
        pred = f * (np.exp(-lam_eff * tt) - np.exp(-lam_u * tt))  # (R, K, M) per injected MBq
        sigma2 = math.log1p(prior.noise_cv**2)
        with np.errstate(divide="ignore"):
            resid = np.log(a / inj)[:, None, None] - np.log(pred)
        ll = -0.5 * resid * resid / sigma2  # −inf where the sample predicts no activity at t
        norm = logsumexp(ll, axis=2)  # (R, K)
        w = np.exp(ll - norm[..., None])
        tia = inj[:, None, None] * tia_per_mbq[None]
        m1 = np.sum(w * tia, axis=2)
        m2 = np.sum(w * tia * tia, axis=2)
        ess = 1.0 / np.sum(w * w, axis=2)
        # Weighted CDF per (region, z node) on one log grid of the class's TIA per injected MBq.
        grid = np.geomspace(tia_per_mbq.min(), tia_per_mbq.max(), _CDF_POINTS)
        order = np.argsort(tia_per_mbq, axis=1)  # (K, M)
        below = np.stack([np.searchsorted(tia_per_mbq[j][order[j]], grid, side="right") for j in range(order.shape[0])])
        sorted_w = np.take_along_axis(w, np.broadcast_to(order[None], w.shape), axis=2)
        cum = np.concatenate([np.zeros((*w.shape[:2], 1)), np.cumsum(sorted_w, axis=2)], axis=2)  # (R, K, M + 1)
        cdf = np.take_along_axis(cum, np.broadcast_to(below[None], (*w.shape[:2], grid.size)), axis=2)
        return norm - math.log(theta.shape[1]), m1, m2, ess, cdf, inj[:, None] * grid[None]


def _quantile_from_cdf(grid: npt.NDArray[np.float64], cdf: npt.NDArray[np.float64], q: float) -> float:
    """The q-quantile of a distribution given by its CDF on an increasing grid (log-linear interpolation)."""
    i = int(np.searchsorted(cdf, q, side="left"))
    if i <= 0:
        return float(grid[0])
    if i >= grid.size:
        return float(grid[-1])
    lo, hi = cdf[i - 1], cdf[i]
    share = 0.0 if hi <= lo else (q - lo) / (hi - lo)
    return float(math.exp(math.log(grid[i - 1]) + share * (math.log(grid[i]) - math.log(grid[i - 1]))))


def _per_region(name: str, value: npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size not in (1, n)):
        raise InputError(f"{name} must be a scalar or one value per region ({n}), got shape {arr.shape}")
    out = np.broadcast_to(arr.reshape(-1) if arr.ndim else arr, (n,)).astype(np.float64)
    if not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise InputError(f"{name} must be finite and > 0")
    return out
