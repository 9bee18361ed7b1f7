"""Grid geometry, shape functions of the solids (lobed ellipsoids, tubes) and exact-volume level sets."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.synth.anatomy.spec import BoolArray, FloatArray, Point, Slices

__all__ = [
    "Grid",
    "Lobes",
    "random_rotation",
    "rot_x",
    "rot_y",
    "rot_z",
    "solid_q",
    "take_connected",
    "take_volume",
    "tube_segments",
]


@dataclass(frozen=True)
class Grid:
    """The truth grid: shape and spacing (z, y, x), world origin (x, y, z) of voxel 0, identity direction."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # z, y, x
    origin_xyz: tuple[float, float, float]

    def axis(self, k: int) -> FloatArray:
        """World coordinate (mm) along array axis k (0 = z, 1 = y, 2 = x)."""
        o = self.origin_xyz[2 - k]
        out: FloatArray = o + self.spacing[k] * np.arange(self.shape[k], dtype=np.float64)
        return out

    def box(self, lo_xyz: Point, hi_xyz: Point) -> Slices | None:
        """Array slices covering the world box [lo, hi] (clipped to the grid); None if empty."""
        out = []
        for k in range(3):
            c = 2 - k
            o, s, n = self.origin_xyz[c], self.spacing[k], self.shape[k]
            lo, hi = float(min(lo_xyz[c], hi_xyz[c])), float(max(lo_xyz[c], hi_xyz[c]))
            i0 = max(0, math.floor((lo - o) / s))
            i1 = min(n, math.ceil((hi - o) / s) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return (out[0], out[1], out[2])

    def around(self, centre_xyz: Point, radius_xyz: Point) -> Slices | None:
        """Slices of the box centre ± radius."""
        c, r = np.asarray(centre_xyz, dtype=np.float64), np.abs(np.asarray(radius_xyz, dtype=np.float64))
        return self.box(c - r, c + r)

    def coords(self, sl: Slices) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Broadcastable world coordinates (X (1,1,nx), Y (1,ny,1), Z (nz,1,1)) of a box."""
        z = self.axis(0)[sl[0]][:, None, None]
        y = self.axis(1)[sl[1]][None, :, None]
        x = self.axis(2)[sl[2]][None, None, :]
        return x, y, z


def random_rotation(rng: np.random.Generator, max_deg: float | None = None) -> FloatArray:
    """Random rotation: uniform over SO(3) (max_deg None) or about a random axis by at most max_deg."""
    if max_deg is None:
        q = rng.standard_normal(4)
        w, x, y, z = q / np.linalg.norm(q)
    else:
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        half = math.radians(rng.uniform(-max_deg, max_deg)) / 2.0
        w, (x, y, z) = math.cos(half), axis * math.sin(half)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rot_z(deg: float) -> FloatArray:
    """Rotation matrix about z by `deg` degrees."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(deg: float) -> FloatArray:
    """Rotation matrix about y by `deg` degrees."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(deg: float) -> FloatArray:
    """Rotation matrix about x by `deg` degrees."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass(frozen=True)
class Lobes:
    """Direction-only surface perturbation 1 + Σ a_k P_l(û·v_k) (Legendre, zero mean on the sphere)."""

    amplitudes: FloatArray
    degrees: npt.NDArray[np.int64]
    directions: FloatArray  # (k, 3)
    dent_direction: FloatArray | None = None
    dent_depth: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude: float, n: int = 4) -> Lobes:
        """`n` random lobes (degrees 2–4, random directions) with amplitudes of SD `amplitude`."""
        d = rng.standard_normal((n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return cls(amplitude * rng.standard_normal(n), rng.integers(2, 5, size=n), d)

    def factor(self, ux: FloatArray, uy: FloatArray, uz: FloatArray) -> Any:
        """Radius factor along the unit directions (ux, uy, uz), at least 0.4."""
        # Python-float coefficients keep float32 inputs in float32 (NEP 50).
        out: Any = 1.0
        for a_np, deg, v_np in zip(self.amplitudes, self.degrees, self.directions, strict=True):
            a, v = float(a_np), [float(c) for c in v_np]
            t = ux * v[0] + uy * v[1] + uz * v[2]
            if deg == 2:
                p = 1.5 * t * t - 0.5
            elif deg == 3:
                p = 2.5 * t**3 - 1.5 * t
            else:
                t2 = t * t
                p = (35.0 * t2 * t2 - 30.0 * t2 + 3.0) / 8.0
            out = out + a * p
        if self.dent_direction is not None and self.dent_depth > 0:
            v = [float(c) for c in self.dent_direction]
            t = ux * v[0] + uy * v[1] + uz * v[2]
            out = out - self.dent_depth * np.exp(-((1.0 - t) ** 2) / 0.03)
        return np.maximum(out, 0.4)


def solid_q(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    centre: Point,
    axes: Point,
    rotation: FloatArray,
    lobes: Lobes | None = None,
    cuts: Sequence[tuple[Sequence[float], float]] = (),
) -> Any:
    """Shape function of a perturbed, cut ellipsoid, homogeneous of degree 1 about its centre.

    q = max(|u| / lobes(û), (u·n)/d over the cuts) with u = Rᵀ(p − c) / axes: the region q ≤ t is the solid
    scaled by t about its centre, so a volume target is met by choosing t.
    """
    # float32 on the (broadcast) box: these are the hot loops of the anatomy.
    dx = (x - centre[0]).astype(np.float32)
    dy = (y - centre[1]).astype(np.float32)
    dz = (z - centre[2]).astype(np.float32)
    r = [[float(c) for c in row] for row in rotation]
    ux = (r[0][0] * dx + r[1][0] * dy + r[2][0] * dz) / float(axes[0])
    uy = (r[0][1] * dx + r[1][1] * dy + r[2][1] * dz) / float(axes[1])
    uz = (r[0][2] * dx + r[1][2] * dy + r[2][2] * dz) / float(axes[2])
    rad = np.sqrt(ux * ux + uy * uy + uz * uz)
    q: Any = rad
    if lobes is not None:
        inv = 1.0 / np.maximum(rad, 1e-9)
        q = rad / lobes.factor(ux * inv, uy * inv, uz * inv)
    for normal, d in cuts:
        n = [float(c) for c in normal]
        q = np.maximum(q, (ux * n[0] + uy * n[1] + uz * n[2]) / float(d))
    return q


def _tube_q(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    points: Sequence[Sequence[float]],
    radii: Sequence[float],
) -> Any:
    """Distance to a polyline divided by the local radius (linear along each segment); ≤ 1 inside."""
    q: Any = np.inf
    for (a, b), (ra, rb) in zip(itertools.pairwise(points), itertools.pairwise(radii), strict=True):
        ab = np.subtract(b, a, dtype=np.float64)
        ll = float(ab @ ab) or 1e-9
        px, py, pz = x - a[0], y - a[1], z - a[2]
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / ll, 0.0, 1.0)
        d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
        q = np.minimum(q, d / (ra + t * (rb - ra)))
    return q


def take_connected(q: Any, allowed: BoolArray, n_voxels: int, q_max: float) -> BoolArray:
    """`take_volume`, kept in one piece: the largest 6-connected part, regrown through allowed neighbours in
    order of q until it has n_voxels again (or nothing is left to add)."""
    mask = take_volume(q, allowed, n_voxels, q_max)
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    mask = lab == int(np.argmax(sizes))
    q = np.broadcast_to(q, allowed.shape)
    for _ in range(64):
        deficit = n_voxels - int(mask.sum())
        if deficit <= 0:
            break
        ring = ndimage.binary_dilation(mask) & allowed & ~mask & (q <= 2.0 * q_max)
        k = int(ring.sum())
        if k == 0:
            break
        if k > deficit:
            thr = np.partition(q[ring], deficit - 1)[deficit - 1]
            ring &= q <= thr
        mask |= ring
    return mask


def tube_segments(
    grid: Grid, points: Sequence[Sequence[float]], radii: Sequence[float]
) -> list[tuple[Slices, Any, float]]:
    """Per segment of a polyline: its own box, q on it (`_tube_q`) and its larger radius."""
    out = []
    for i in range(len(points) - 1):
        r = max(radii[i], radii[i + 1])
        sl = grid.box(np.minimum(points[i], points[i + 1]) - r, np.maximum(points[i], points[i + 1]) + r)
        if sl is None:
            continue
        x, y, z = grid.coords(sl)
        out.append((sl, _tube_q(x, y, z, points[i : i + 2], radii[i : i + 2]), r))
    return out


def take_volume(q: Any, allowed: BoolArray, n_voxels: int, q_max: float) -> BoolArray:
    """The n_voxels allowed voxels of lowest q (at most those with q ≤ q_max): an exact-volume level set."""
    q = np.broadcast_to(q, allowed.shape)
    ok = allowed & (q <= q_max)
    vals = q[ok]
    if vals.size <= n_voxels:
        return ok
    if n_voxels <= 0:
        return np.zeros(allowed.shape, dtype=bool)
    thr = np.partition(vals, n_voxels - 1)[n_voxels - 1]
    out: BoolArray = ok & (q <= thr)
    return out
