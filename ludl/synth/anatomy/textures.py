"""Heterogeneity fields: uptake, clearance shift and PET expression inside lesions and kidneys, kidney cortex."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ludl.synth.anatomy.canvas import Canvas
from ludl.synth.anatomy.spec import ANATOMY_LABELS, F32, SOFT, AnatomySpec, BoolArray, Slices
from ludl.synth.fields import gaussian_random_field

__all__ = [
    "heterogeneity_fields",
]


def heterogeneity_fields(
    cv: Canvas,
    spec: AnatomySpec,
    lesion_info: list[dict[str, Any]],
    kidneys: Mapping[str, tuple[Slices, BoolArray, Any]],
) -> tuple[F32, F32, F32, BoolArray]:
    """uptake_weight, clearance_shift_per_h, pet_weight and the kidney-cortex mask."""
    g, rng = cv.grid, cv.rng
    uptake = cv.profile.copy()
    pet = cv.profile.copy()
    shift = np.zeros(g.shape, dtype=np.float32)
    cortex = np.zeros(g.shape, dtype=bool)
    rho = spec.pet_voxel_correlation

    def block(sl: Slices, mask: BoolArray, base: F32, sigma_u: float, sd_shift: float) -> None:
        # Three independent fields: 177Lu uptake, clearance shift, and the PET's own part of the expression.
        # Each region (a lesion, a kidney) is normalised here to voxel mean 1 / mean shift 0.
        f1, f2, f3 = gaussian_random_field(rng, mask.shape, g.spacing, spec.field_sigma_mm, count=3)
        u = (base * np.exp(sigma_u * f1))[mask]
        p = (base * np.exp(sigma_u * (rho * f1 + math.sqrt(max(0.0, 1.0 - rho * rho)) * f3)))[mask]
        d = sd_shift * f2[mask]
        uptake[sl][mask] = u / u.mean()
        pet[sl][mask] = p / p.mean()
        shift[sl][mask] = d - d.mean()

    for name, (sl, kmask, q) in kidneys.items():
        m = kmask & (cv.labels[sl] == ANATOMY_LABELS[name])
        if not m.any():
            continue
        # Medulla: the inner ≈ 30 % of the kidney, lobulated by a noise field; PSMA ligands accumulate in the
        # proximal tubules of the cortex (medulla/cortex uptake 0.25–0.45, assumption).
        lob = 1.0 + 0.15 * gaussian_random_field(rng, m.shape, g.spacing, 5.0)
        rank = np.where(m, np.broadcast_to(q, m.shape) * lob, np.inf)
        k = int(rng.uniform(0.25, 0.35) * m.sum())
        med = np.zeros_like(m)
        if k > 0:
            med = m & (rank <= np.partition(rank[m], k - 1)[k - 1])
        cortex[sl] |= m & ~med
        base = np.where(med, np.float32(rng.uniform(0.25, 0.45)), np.float32(1.0)).astype(np.float32)
        block(sl, m, base, spec.kidney_uptake_sigma_log, spec.kidney_clearance_sd_per_h)
    for info in lesion_info:
        if not info or not info["mask"].any():
            continue
        sl, m, core = info["slices"], info["mask"], info["core"]
        base = np.ones(m.shape, dtype=np.float32)
        if core.any():
            # Necrotic core ≈ 0.1; the viable rim just around it is the most avid (assumption).
            q = np.nan_to_num(info["q"], nan=np.inf)
            qc = float(np.max(q[core]))
            base[m & ~core & (q <= 1.3 * qc)] = 1.3
            base[core] = 0.1
        block(sl, m, base, spec.lesion_uptake_sigma_log, spec.lesion_clearance_sd_per_h)
    # Only rest_of_body has a profile (fat, muscle, brain) besides the blocks above; every other label is 1.
    soft = cv.labels == SOFT
    uptake[soft] /= float(uptake[soft].mean()) if soft.any() else 1.0
    pet[soft] /= float(pet[soft].mean()) if soft.any() else 1.0
    return uptake, shift, pet, cortex
