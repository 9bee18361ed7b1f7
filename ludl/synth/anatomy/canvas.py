"""The canvas being painted: label, HU and uptake-profile arrays with their grid, patient and generator."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.synth.anatomy.reference import PatientShape
from ludl.synth.anatomy.solids import Grid, Lobes, solid_q, take_volume
from ludl.synth.anatomy.spec import BoolArray, FloatArray, Point, Slices

__all__ = [
    "Q_MAX_TRIES",
    "Canvas",
]

# Shape-function limits tried in turn: a tight box first (the solid fits freely), a wide one when neighbours,
# cuts or the grid edge take room.
Q_MAX_TRIES = (1.2, 1.7)


class Canvas:
    """Label, HU and uptake-profile arrays being painted, with the grid and the patient."""

    def __init__(self, grid: Grid, pat: PatientShape, rng: np.random.Generator) -> None:
        self.grid = grid
        self.pat = pat
        self.rng = rng
        self.labels = np.zeros(grid.shape, dtype=np.int16)
        self.hu = np.full(grid.shape, -1000.0, dtype=np.float32)
        self.profile = np.zeros(grid.shape, dtype=np.float32)
        self.vox_ml = math.prod(grid.spacing) / 1000.0
        # Candidate voxels (global z, y, x index arrays) for bone lesions, per bone group.
        self.bone_sites: dict[str, list[npt.NDArray[np.int64]]] = {}

    def paint(self, sl: Slices, mask: BoolArray, label: int, hu: float | FloatArray, profile: float = 1.0) -> None:
        """Set label, HU and uptake profile of the masked voxels of box `sl`."""
        lab, h, pr = self.labels[sl], self.hu[sl], self.profile[sl]
        lab[mask] = label
        h[mask] = hu if np.isscalar(hu) else np.broadcast_to(hu, mask.shape)[mask]
        pr[mask] = profile

    def allowed(self, sl: Slices, labels: Sequence[int]) -> BoolArray:
        """Voxels of box `sl` that hold one of `labels` (where a solid may be painted)."""
        out: BoolArray = np.isin(self.labels[sl], np.asarray(labels, dtype=np.int16))
        return out

    def record_bone(self, group: str, sl: Slices, mask: BoolArray, max_points: int = 4000) -> None:
        """Keep up to `max_points` voxels of a painted bone as candidate sites of bone lesions in `group`."""
        idx = np.argwhere(mask)
        if idx.size == 0:
            return
        if len(idx) > max_points:
            idx = idx[self.rng.choice(len(idx), size=max_points, replace=False)]
        idx = idx + np.array([sl[0].start, sl[1].start, sl[2].start])
        self.bone_sites.setdefault(group, []).append(idx)

    def solid(
        self,
        centre: Point,
        axes: Point,
        rotation: FloatArray,
        *,
        lobes: Lobes | None = None,
        cuts: Sequence[tuple[Sequence[float], float]] = (),
        margin: float = 1.0,
    ) -> tuple[Slices, Any] | None:
        """Box holding q ≤ margin and the shape function q of a solid on it; None if it misses the grid."""
        bound = margin * (1.0 + (float(np.sum(np.abs(lobes.amplitudes))) if lobes is not None else 0.0))
        # Half-extent of the rotated ellipsoid along each world axis.
        half = bound * np.sqrt(np.sum((np.asarray(rotation) * np.asarray(axes)[None, :]) ** 2, axis=1))
        sl = self.grid.around(centre, half)
        if sl is None:
            return None
        x, y, z = self.grid.coords(sl)
        return sl, solid_q(x, y, z, centre, axes, rotation, lobes, cuts)

    def organ(
        self,
        label: int,
        hu: float,
        volume_ml: float,
        centre: Sequence[float],
        axes: Sequence[float],
        rotation: FloatArray,
        allowed: Sequence[int],
        *,
        lobes: Lobes | None = None,
        cuts: Sequence[tuple[Sequence[float], float]] = (),
        profile: float = 1.0,
    ) -> tuple[Slices, BoolArray, Any] | None:
        """Paint a solid of exactly `volume_ml` (as far as free space and the grid allow): box, mask, q."""
        # Axes are rescaled so that the unperturbed ellipsoid has the target volume; q_max leaves room for
        # cuts and occupied neighbours.
        scale = (volume_ml / (4.0 / 3.0 * math.pi * math.prod(axes) / 1000.0)) ** (1.0 / 3.0)
        axes = [a * scale for a in axes]
        n_vox = round(volume_ml / self.vox_ml)
        for q_max in Q_MAX_TRIES:
            got = self.solid(centre, axes, rotation, lobes=lobes, cuts=cuts, margin=q_max)
            if got is None:
                return None
            sl, q = got
            mask = take_volume(q, self.allowed(sl, allowed), n_vox, q_max)
            if mask.sum() >= n_vox:
                break
        if not mask.any():
            return None
        self.paint(sl, mask, label, hu, profile)
        return sl, mask, q
