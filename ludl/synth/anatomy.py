"""Procedural male anatomy and lesion placement on the truth grid of one synthetic patient.

The patient is built from simple solids (superquadric body sections, ellipsoids, tubes, shells) placed in a
reference adult male (stature ≈ 176 cm; positions as mm below the vertex, lateral and antero-posterior offsets)
and scaled per patient: a frame factor (skeleton, organ positions), a stature factor (cranio-caudal), a habitus
factor (body outline, subcutaneous fat) and an own volume factor per organ. Organs are painted onto the tissue
already there in a fixed order; an organ with a target volume takes exactly that many voxels (the level set of
its shape function that fits the free space), so organ and lesion volumes do not depend on the voxel size.

World coordinates are LPS (x to the patient's left, y posterior, z superior), identity direction, the vertex at
z = 0. Reference anatomy numbers are typical adult-male values (ICRP Publication 89 organ masses; positions and
sizes from standard anatomy texts): assumptions unless a source is named.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.physics.dose import density_from_hu
from ludl.synth.fields import gaussian_random_field
from ludl.synth.kinetics import Lesions, lesion_name

__all__ = [
    "LESION_LABEL_BASE",
    "TISSUE_LABELS",
    "Anatomy",
    "AnatomySpec",
    "make_anatomy",
]

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Slices = tuple[slice, slice, slice]
Point = Sequence[float] | FloatArray  # (x, y, z) in mm, or three semi-axes

# Fixed label values: tissue classes the kinetics and the physics need, then the DESIGN.md regions, then the
# lesions (lesion_001 → 101, …). Fixed per name, so they carry nothing about the patient.
TISSUE_LABELS: Mapping[str, int] = {
    "rest_of_body": 1,
    "lung": 2,
    "bone": 3,
    "marrow_other": 4,
    "bowel": 5,
    "blood_pool": 6,
}
_ORGAN_LABELS: Mapping[str, int] = {
    "kidney_left": 10,
    "kidney_right": 11,
    "parotid_left": 12,
    "parotid_right": 13,
    "submandibular_left": 14,
    "submandibular_right": 15,
    "lacrimal_left": 16,
    "lacrimal_right": 17,
    "liver": 18,
    "spleen": 19,
    "bladder": 20,
    "red_marrow": 21,
}
LESION_LABEL_BASE = 100

_SOFT = TISSUE_LABELS["rest_of_body"]
_LUNG = TISSUE_LABELS["lung"]
_BONE = TISSUE_LABELS["bone"]
_MARROW = TISSUE_LABELS["marrow_other"]
_BOWEL = TISSUE_LABELS["bowel"]
_BLOOD = TISSUE_LABELS["blood_pool"]
_RED = _ORGAN_LABELS["red_marrow"]
_SKELETON = (_BONE, _MARROW, _RED)

# Uptake profile inside rest_of_body (relative PSMA-ligand concentration; assumption): fat takes up less than
# muscle, the brain almost none (blood–brain barrier; PSMA PET shows no brain uptake).
_PROFILE_FAT = 0.3
_PROFILE_BRAIN = 0.05


@dataclass(frozen=True)
class AnatomySpec:
    """Truth grid and body extent of a synthetic patient.

    Args:
        shape_zyx: truth-grid shape (z, y, x).
        spacing_zyx_mm: truth-grid voxel size (mm) along (z, y, x).
        extent: "torso" (a crop from the chest to the pelvis, as the grid length allows; kidneys, liver and
            L2–L4 always inside) or "whole_body" (from the vertex down, as far as the grid reaches).
        arms: "up" (outside the grid, as for torso SPECT), "down" (along the body) or "auto" (down for
            whole_body, up for torso).
        lesion_uptake_sigma_log: spread of the smooth uptake field inside lesions (log units).
        kidney_uptake_sigma_log: spread of the smooth uptake field inside kidneys (log units).
        lesion_clearance_sd_per_h: SD of the voxel clearance shift inside lesions (1/h); 0.002/h ≈ ±20 % of a
            70 h T_eff (assumption).
        kidney_clearance_sd_per_h: SD of the voxel clearance shift inside kidneys (1/h) (assumption).
        pet_voxel_correlation: correlation of the PET expression field with the 177Lu uptake field inside a
            region (the lesion-level correlation comes from `sample_pet_lesion_factor`).
        field_sigma_mm: correlation length of the heterogeneity fields (mm).
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    extent: Literal["torso", "whole_body"] = "torso"
    arms: Literal["auto", "up", "down"] = "auto"
    lesion_uptake_sigma_log: float = 0.3
    kidney_uptake_sigma_log: float = 0.15
    lesion_clearance_sd_per_h: float = 0.002
    kidney_clearance_sd_per_h: float = 0.002
    pet_voxel_correlation: float = 0.7
    field_sigma_mm: float = 6.0

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape_zyx)
        spacing = tuple(float(s) for s in self.spacing_zyx_mm)
        if len(shape) != 3 or min(shape) < 8:
            raise InputError(f"AnatomySpec.shape_zyx must be three sizes ≥ 8, got {self.shape_zyx}")
        if len(spacing) != 3 or not all(math.isfinite(s) and 0.3 <= s <= 20.0 for s in spacing):
            raise InputError(f"AnatomySpec.spacing_zyx_mm must be three lengths in [0.3, 20] mm, got {spacing}")
        if self.extent not in ("torso", "whole_body"):
            raise InputError(f"AnatomySpec.extent must be 'torso' or 'whole_body', got {self.extent!r}")
        if self.arms not in ("auto", "up", "down"):
            raise InputError(f"AnatomySpec.arms must be 'auto', 'up' or 'down', got {self.arms!r}")
        if not -1.0 <= self.pet_voxel_correlation <= 1.0:
            raise InputError(f"pet_voxel_correlation must be in [-1, 1], got {self.pet_voxel_correlation}")
        for name in (
            "lesion_uptake_sigma_log",
            "kidney_uptake_sigma_log",
            "lesion_clearance_sd_per_h",
            "kidney_clearance_sd_per_h",
        ):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InputError(f"AnatomySpec.{name} must be ≥ 0, got {getattr(self, name)}")
        if not self.field_sigma_mm > 0:
            raise InputError(f"AnatomySpec.field_sigma_mm must be > 0, got {self.field_sigma_mm}")
        object.__setattr__(self, "shape_zyx", shape)
        object.__setattr__(self, "spacing_zyx_mm", spacing)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one truth voxel (mL)."""
        return math.prod(self.spacing_zyx_mm) / 1000.0


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One patient's truth anatomy on the truth grid (hidden truth: never written as such into a cohort).

    Attributes:
        labels: int16 label map (unit "label"), 0 outside the body.
        label_values: name → label value for every region and tissue class present (DESIGN.md regions,
            ``rest_of_body``, ``lung``, ``bone``, ``marrow_other``, ``bowel``, ``blood_pool``, ``lesion_001`` …).
        hu: CT numbers of the truth (float32, "HU"), −1000 outside the body.
        density_g_per_ml: mass density from `hu` (`ludl.physics.dose.density_from_hu`), float32.
        uptake_weight: relative 177Lu concentration inside each region (float32, ≥ 0, voxel mean 1 per label).
        clearance_shift_per_h: voxel shift of the clearance rate (1/h), zero-mean per lesion and kidney, 0
            elsewhere; independent of `uptake_weight`.
        pet_weight: relative PET concentration inside each region (voxel mean 1 per label); lesion level comes
            from `ludl.synth.kinetics.sample_pet_lesion_factor`.
        kidney_cortex: boolean mask of kidney cortex (kidney voxels outside it are medulla).
        lesion_sites: site of each lesion, in lesion order.
        lesion_volumes_ml: realised volume of each lesion (mL), in lesion order.
        requested_lesion_volumes_ml: the volumes asked for (mL).
        lesion_in_fov: per lesion, inside the SPECT field of view (filled later by the imaging/cohort code).
        landmarks_xyz_mm: named points (LPS mm): ``vertex``, ``heart``, ``bladder``, ``injection_site`` (may lie
            outside the grid), ``l2_top``, ``l4_bottom``.
        meta: the patient's hidden shape parameters (stature/frame/habitus factors, …).
    """

    labels: Volume
    label_values: Mapping[str, int]
    hu: Volume
    density_g_per_ml: Volume
    uptake_weight: F32
    clearance_shift_per_h: F32
    pet_weight: F32
    kidney_cortex: BoolArray
    lesion_sites: tuple[str, ...]
    lesion_volumes_ml: FloatArray
    requested_lesion_volumes_ml: FloatArray
    lesion_in_fov: npt.NDArray[np.bool_] | None = None
    landmarks_xyz_mm: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lesion_regions(self) -> tuple[str, ...]:
        """Lesion region names in order: ``lesion_001`` …"""
        return tuple(lesion_name(i) for i in range(len(self.lesion_sites)))

    def mask(self, region: str) -> BoolArray:
        """Boolean mask of a region (``body`` = every labelled voxel)."""
        if region == "body":
            out: BoolArray = self.labels.array > 0
            return out
        if region not in self.label_values:
            raise InputError(f"region {region!r} is not in this anatomy; present: {sorted(self.label_values)}")
        m: BoolArray = self.labels.array == self.label_values[region]
        return m

    def region_volumes_ml(self) -> dict[str, float]:
        """Volume (mL) of every labelled region and tissue class, plus ``body``."""
        counts = np.bincount(self.labels.array.ravel().astype(np.int64), minlength=1)
        vox = self.labels.voxel_volume_ml
        out = {name: float(counts[v]) * vox if v < counts.size else 0.0 for name, v in self.label_values.items()}
        out["body"] = float(counts[1:].sum()) * vox
        return out


# ============================================================================ geometry helpers


@dataclass(frozen=True)
class _Grid:
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


def _rotation(rng: np.random.Generator, max_deg: float | None = None) -> FloatArray:
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


def _rot_z(deg: float) -> FloatArray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(deg: float) -> FloatArray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(deg: float) -> FloatArray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass(frozen=True)
class _Lobes:
    """Direction-only surface perturbation 1 + Σ a_k P_l(û·v_k) (Legendre, zero mean on the sphere)."""

    amplitudes: FloatArray
    degrees: npt.NDArray[np.int64]
    directions: FloatArray  # (k, 3)
    dent_direction: FloatArray | None = None
    dent_depth: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude: float, n: int = 4) -> _Lobes:
        d = rng.standard_normal((n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return cls(amplitude * rng.standard_normal(n), rng.integers(2, 5, size=n), d)

    def factor(self, ux: FloatArray, uy: FloatArray, uz: FloatArray) -> Any:
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


def _solid_q(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    centre: Point,
    axes: Point,
    rotation: FloatArray,
    lobes: _Lobes | None = None,
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


def _take_connected(q: Any, allowed: BoolArray, n_voxels: int, q_max: float) -> BoolArray:
    """`_take_volume`, kept in one piece: the largest 6-connected part, regrown through allowed neighbours in
    order of q until it has n_voxels again (or nothing is left to add)."""
    mask = _take_volume(q, allowed, n_voxels, q_max)
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


def _tube_segments(
    grid: _Grid, points: Sequence[Sequence[float]], radii: Sequence[float]
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


def _take_volume(q: Any, allowed: BoolArray, n_voxels: int, q_max: float) -> BoolArray:
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


# ============================================================================ the reference male


# Vertebral levels (name, height incl. disc (mm), body lateral semi-axis, body AP semi-axis, disc fraction),
# from C1 (top at 160 mm below the vertex) down; sums give C7/T1 ≈ 272, T12/L1 ≈ 552, L5/S1 ≈ 727 mm below the
# vertex for a 176 cm man (cervicale ≈ 1500 mm, iliac crest ≈ 1040 mm above the floor: typical anthropometry).
def _vertebra_table() -> list[tuple[str, float, float, float, float]]:
    rows = [(f"C{i}", 16.0, 10.0 + 0.7 * (i - 1), 8.0 + 0.35 * (i - 1), 0.22) for i in range(1, 8)]
    rows += [
        (f"T{i}", 20.0 + 6.0 * (i - 1) / 11.0, 15.0 + 7.0 * (i - 1) / 11.0, 11.0 + 5.0 * (i - 1) / 11.0, 0.2)
        for i in range(1, 13)
    ]
    rows += [(f"L{i}", 35.0, 23.0 + 0.8 * (i - 1), 16.0 + 0.5 * (i - 1), 0.25) for i in range(1, 6)]
    return rows


_VERTEBRAE = _vertebra_table()
_C1_TOP_S = 160.0

# Spine centre line: AP position of the vertebral body centre (mm, + posterior) vs depth below the vertex.
_SPINE_Y_KNOTS = (
    (150.0, 10.0),
    (260.0, 22.0),
    (350.0, 48.0),
    (450.0, 55.0),
    (550.0, 45.0),
    (640.0, 30.0),
    (730.0, 35.0),
    (800.0, 58.0),
    (880.0, 78.0),
)

# Trunk outline: depth s (mm below vertex), lateral semi-axis a, AP semi-axis b, AP centre yc, exponent p.
_TRUNK_KNOTS = np.array(
    [
        [250.0, 75.0, 62.0, 12.0, 2.0],
        [285.0, 150.0, 90.0, 12.0, 2.4],
        [310.0, 185.0, 105.0, 10.0, 2.7],
        [360.0, 175.0, 112.0, 5.0, 2.6],
        [450.0, 165.0, 115.0, 0.0, 2.5],
        [550.0, 155.0, 110.0, 0.0, 2.4],
        [650.0, 150.0, 105.0, -3.0, 2.3],
        [750.0, 165.0, 105.0, 0.0, 2.4],
        [850.0, 180.0, 105.0, 0.0, 2.6],
        [935.0, 170.0, 100.0, 5.0, 2.6],
    ]
)
# Rib cage ellipse (inside of the ribs): s, lateral semi-axis, AP semi-axis, AP centre.
_RIBCAGE_KNOTS = np.array(
    [
        [275.0, 50.0, 40.0, 25.0],
        [320.0, 95.0, 70.0, 18.0],
        [400.0, 128.0, 90.0, 10.0],
        [480.0, 138.0, 95.0, 5.0],
        [560.0, 138.0, 90.0, 5.0],
        [640.0, 130.0, 82.0, 8.0],
    ]
)


@dataclass(frozen=True)
class _Patient:
    """Per-patient scale factors and the map from reference to world coordinates."""

    frame: float  # lateral/AP skeleton and organ positions
    stature: float  # cranio-caudal
    habitus_lat: float  # body outline
    habitus_ap: float
    belly: float
    fat_mm: float
    marrow_hu: float
    cortical_hu: float
    vertex_z: float = 0.0

    def p(self, x: float, y: float, s: float) -> tuple[float, float, float]:
        """World point of a reference point (x lateral, y AP, s below vertex)."""
        return (self.frame * x, self.frame * y, self.vertex_z - self.stature * s)

    def axes(self, a: float, b: float, c: float) -> tuple[float, float, float]:
        """World semi-axes of reference semi-axes (lateral, AP, cranio-caudal)."""
        return (self.frame * a, self.frame * b, self.stature * c)

    def s_of_z(self, z: Any) -> Any:
        return (self.vertex_z - z) / self.stature


def _sample_patient(rng: np.random.Generator) -> _Patient:
    frame = math.exp(0.035 * rng.standard_normal())
    stature = frame * math.exp(0.02 * rng.standard_normal())
    # Habitus (BMI): lateral factor, AP follows with its own jitter; elderly mCRPC men, mostly normal to obese.
    hab = float(np.clip(math.exp(0.05 + 0.09 * rng.standard_normal()), 0.9, 1.35))
    hab_ap = float(np.clip(hab * math.exp(0.05 * rng.standard_normal()), 0.9, 1.4))
    fat = float(np.clip(8.0 + 70.0 * (hab - 0.95) + 3.0 * rng.standard_normal(), 4.0, 40.0))
    belly = float(np.clip(rng.uniform(0.0, 0.25) * (hab - 0.85) / 0.3, 0.0, 0.3))
    return _Patient(
        frame=frame,
        stature=stature,
        habitus_lat=hab,
        habitus_ap=hab_ap,
        belly=belly,
        fat_mm=fat,
        # Cancellous vertebral bone ≈ 100–300 HU, falling with age / osteopenia (assumption on the spread).
        marrow_hu=float(rng.uniform(130.0, 260.0)),
        # Cortical shells at truth-voxel size are partial-volumed: 400–1200 HU (task brief), per patient.
        cortical_hu=float(rng.uniform(550.0, 900.0)),
    )


# ============================================================================ the canvas

# Shape-function limits tried in turn: a tight box first (the solid fits freely), a wide one when neighbours,
# cuts or the grid edge take room.
_Q_MAX_TRIES = (1.2, 1.7)


class _Canvas:
    """Label, HU and uptake-profile arrays being painted, with the grid and the patient."""

    def __init__(self, grid: _Grid, pat: _Patient, rng: np.random.Generator) -> None:
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
        lab, h, pr = self.labels[sl], self.hu[sl], self.profile[sl]
        lab[mask] = label
        h[mask] = hu if np.isscalar(hu) else np.broadcast_to(hu, mask.shape)[mask]
        pr[mask] = profile

    def allowed(self, sl: Slices, labels: Sequence[int]) -> BoolArray:
        out: BoolArray = np.isin(self.labels[sl], np.asarray(labels, dtype=np.int16))
        return out

    def record_bone(self, group: str, sl: Slices, mask: BoolArray, max_points: int = 4000) -> None:
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
        lobes: _Lobes | None = None,
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
        return sl, _solid_q(x, y, z, centre, axes, rotation, lobes, cuts)

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
        lobes: _Lobes | None = None,
        cuts: Sequence[tuple[Sequence[float], float]] = (),
        profile: float = 1.0,
    ) -> tuple[Slices, BoolArray, Any] | None:
        """Paint a solid of exactly `volume_ml` (as far as free space and the grid allow): box, mask, q."""
        # Axes are rescaled so that the unperturbed ellipsoid has the target volume; q_max leaves room for
        # cuts and occupied neighbours.
        scale = (volume_ml / (4.0 / 3.0 * math.pi * math.prod(axes) / 1000.0)) ** (1.0 / 3.0)
        axes = [a * scale for a in axes]
        n_vox = round(volume_ml / self.vox_ml)
        for q_max in _Q_MAX_TRIES:
            got = self.solid(centre, axes, rotation, lobes=lobes, cuts=cuts, margin=q_max)
            if got is None:
                return None
            sl, q = got
            mask = _take_volume(q, self.allowed(sl, allowed), n_vox, q_max)
            if mask.sum() >= n_vox:
                break
        if not mask.any():
            return None
        self.paint(sl, mask, label, hu, profile)
        return sl, mask, q


# ============================================================================ body outline


def _interp_trunk(pat: _Patient, s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    k = _TRUNK_KNOTS
    a = np.interp(s, k[:, 0], k[:, 1]) * pat.frame * pat.habitus_lat
    b = np.interp(s, k[:, 0], k[:, 2]) * pat.frame * pat.habitus_ap
    yc = np.interp(s, k[:, 0], k[:, 3]) * pat.frame
    p = np.interp(s, k[:, 0], k[:, 4])
    # Belly: the abdomen bulges anteriorly in heavier patients.
    bump = pat.belly * np.clip(1.0 - ((s - 680.0) / 130.0) ** 2, 0.0, None)
    b = b * (1.0 + bump)
    yc = yc - b * bump / (1.0 + bump) * 0.8
    return a, b, yc, p


def _paint_body(cv: _Canvas, arms_down: bool) -> None:
    g, pat = cv.grid, cv.pat
    x, y, z = g.coords((slice(None), slice(None), slice(None)))
    s = pat.s_of_z(z[:, 0, 0])
    muscle_hu = 45.0
    fat_hu = float(cv.rng.uniform(-110.0, -90.0))
    # Trunk: superquadric sections; the fat layer is the outer band of thickness fat_mm.
    in_trunk = (s >= 250.0) & (s <= 935.0)
    if in_trunk.any():
        zs = np.flatnonzero(in_trunk)
        sl = (slice(int(zs[0]), int(zs[-1]) + 1), slice(None), slice(None))
        a, b, yc, p = _interp_trunk(pat, s[sl[0]])
        a3, b3, yc3, p3 = (v[:, None, None] for v in (a, b, yc, p))
        sx = ((np.abs(x) / a3) ** p3).astype(np.float32)
        sy = ((np.abs(y - yc3) / b3) ** p3).astype(np.float32)
        tot = sx + sy
        body = tot <= 1.0
        inner = ((1.0 - pat.fat_mm / (0.5 * (a3 + b3))) ** p3).astype(np.float32)
        fat = body & (tot > inner)
        cv.paint(sl, body & ~fat, _SOFT, muscle_hu)
        cv.paint(sl, fat, _SOFT, fat_hu, _PROFILE_FAT)
    # Head (ellipsoid) and neck (elliptic cylinder).
    hc, ha = pat.p(0.0, -5.0, 118.0), pat.axes(75.0, 95.0, 118.0)
    got = cv.solid(hc, ha, np.eye(3))
    if got is not None:
        cv.paint(got[0], got[1] <= 1.0, _SOFT, muscle_hu)
    top, bot = pat.p(0.0, 12.0, 150.0), pat.p(0.0, 12.0, 300.0)
    box: Slices | None = g.box((-70.0 * pat.frame, -80.0, bot[2]), (70.0 * pat.frame, 90.0, top[2]))
    if box is not None:
        xx, yy, _ = g.coords(box)
        neck = (xx / (55.0 * pat.frame * pat.habitus_lat)) ** 2 + ((yy - 12.0 * pat.frame) / (60.0 * pat.frame)) ** 2
        cv.paint(box, np.broadcast_to(neck <= 1.0, cv.labels[box].shape), _SOFT, muscle_hu)
    # Thighs: two cones below the crotch, with their fat layer.
    for side in (-1.0, 1.0):
        top, bot = pat.p(side * 92.0, 0.0, 870.0), pat.p(side * 92.0, 0.0, 1400.0)
        r_top = 88.0 * pat.frame * pat.habitus_lat
        box = g.box((top[0] - r_top, -r_top, bot[2]), (top[0] + r_top, r_top, top[2]))
        if box is None:
            continue
        sl = box
        xx, yy, zz = g.coords(sl)
        ss = pat.s_of_z(zz)
        r = r_top * (1.0 - 0.25 * np.clip((ss - 870.0) / 500.0, 0.0, 1.0))
        d = np.sqrt((xx - top[0]) ** 2 + yy**2)
        leg = (d <= r) & (cv.labels[sl] == 0)
        fat = leg & (d > r - pat.fat_mm)
        cv.paint(sl, leg & ~fat, _SOFT, muscle_hu)
        cv.paint(sl, fat, _SOFT, fat_hu, _PROFILE_FAT)
    if arms_down:
        _paint_arms(cv, muscle_hu, fat_hu)


def _arm_line(pat: _Patient, side: float) -> tuple[list[tuple[float, float, float]], list[float]]:
    """Centre line and radii (world) of an arm hanging along the body."""
    pts, radii = [], []
    for s_ref, r_ref in ((300.0, 45.0), (460.0, 42.0), (640.0, 36.0), (790.0, 32.0), (880.0, 26.0), (1040.0, 22.0)):
        a, _, _, _ = _interp_trunk(pat, np.array([min(max(s_ref, 330.0), 900.0)]))
        r = r_ref * pat.frame * math.sqrt(pat.habitus_lat)
        x = side * (float(a[0]) + r + 6.0)
        pts.append((x, 5.0 * pat.frame, pat.vertex_z - pat.stature * s_ref))
        radii.append(r)
    return pts, radii


def _paint_arms(cv: _Canvas, muscle_hu: float, fat_hu: float) -> None:
    g, pat = cv.grid, cv.pat
    for side in (-1.0, 1.0):
        pts, radii = _arm_line(pat, side)
        for sl, q, r in _tube_segments(g, pts, radii):
            arm = (q <= 1.0) & (cv.labels[sl] == 0)
            fat = arm & (q > 1.0 - 0.5 * pat.fat_mm / r)
            cv.paint(sl, arm & ~fat, _SOFT, muscle_hu)
            cv.paint(sl, fat, _SOFT, fat_hu, _PROFILE_FAT)
        # Humerus and the forearm bones (one tube for radius + ulna), cortex + marrow.
        for a, b, r in ((pts[0], pts[2], 11.0), (pts[2], pts[4], 9.0)):
            a2 = (a[0] * 0.98, a[1], a[2] - 15.0)
            _bone_tube(cv, "humerus", [a2, b], [r * pat.frame, r * pat.frame])


# ============================================================================ skeleton


def _bone_tube(cv: _Canvas, group: str, pts: Sequence[Sequence[float]], radii: Sequence[float]) -> None:
    """A tubular bone: cortical shell, marrow inside where the tube is thick enough."""
    shell = _cortex_mm(cv.grid)
    for sl, q, r in _tube_segments(cv.grid, pts, radii):
        bone = (q <= 1.0) & cv.allowed(sl, (_SOFT,))
        marrow = bone & (q <= 1.0 - shell / r)
        cv.paint(sl, bone & ~marrow, _BONE, cv.pat.cortical_hu)
        cv.paint(sl, marrow, _MARROW, cv.pat.marrow_hu)
        cv.record_bone(group, sl, bone)


def _cortex_mm(g: _Grid) -> float:
    # A cortical shell about one truth voxel thick (its HU is a partial-volume value).
    return max(2.0, 0.9 * max(g.spacing[1:]))


def _level_centres() -> tuple[FloatArray, FloatArray, FloatArray]:
    h = np.array([r[1] for r in _VERTEBRAE])
    top = _C1_TOP_S + np.concatenate([[0.0], np.cumsum(h)[:-1]])
    return top, top + h, top + h / 2


def _spine_y(s: Any) -> Any:
    k = np.array(_SPINE_Y_KNOTS)
    return np.interp(s, k[:, 0], k[:, 1])


def _paint_spine(cv: _Canvas) -> dict[str, float]:
    """Vertebrae C1–L5 and the sacrum; returns the s of L2 top and L4 bottom."""
    g, pat = cv.grid, cv.pat
    tops, bots, _ = _level_centres()
    shell = _cortex_mm(g)
    levels: dict[str, float] = {}
    for (name, height, a_ref, b_ref, disc), s0, s1 in zip(_VERTEBRAE, tops, bots, strict=True):
        levels[name + "_top"], levels[name + "_bottom"] = float(s0), float(s1)
        sc = 0.5 * (s0 + s1)
        yb = float(_spine_y(sc))
        a, b = a_ref * pat.frame, b_ref * pat.frame
        rc = (8.0 if name[0] != "T" else 7.0) * pat.frame
        y_canal = yb * pat.frame + b + rc + 1.0
        half_h = 0.5 * height * (1.0 - disc) * pat.stature
        zc = pat.vertex_z - pat.stature * sc
        reach = a + 45.0 * pat.frame
        sl = g.box(
            (-reach, yb * pat.frame - b - 2, zc - 0.5 * height * pat.stature),
            (reach, y_canal + rc + 40.0 * pat.frame, zc + 0.5 * height * pat.stature),
        )
        if sl is None:
            continue
        x, y, z = g.coords(sl)
        dz = np.abs(z - zc)
        ell = (x / a) ** 2 + ((y - yb * pat.frame) / b) ** 2
        body = (ell <= 1.0) & (dz <= half_h)
        inner = ((x / max(a - shell, 1e-3)) ** 2 + ((y - yb * pat.frame) / max(b - shell, 1e-3)) ** 2 <= 1.0) & (
            dz <= half_h - shell
        )
        rr = np.sqrt(x**2 + (y - y_canal) ** 2)
        canal = (rr < rc) & (dz <= 0.5 * height * pat.stature)
        arch = (rr >= rc) & (rr <= rc + 5.0 * pat.frame) & (dz <= half_h)
        spin_len = {"C": 20.0, "T": 32.0, "L": 28.0}[name[0]] * pat.frame
        spinous = (np.abs(x) <= 4.0 * pat.frame) & (y > y_canal) & (y <= y_canal + rc + spin_len) & (dz <= 0.6 * half_h)
        tp_len = a + {"C": 8.0, "T": 18.0, "L": 22.0}[name[0]] * pat.frame
        transverse = (np.abs(x) <= tp_len) & (np.abs(y - y_canal + rc) <= 4.5) & (dz <= 0.45 * half_h)
        ok = cv.allowed(sl, (_SOFT,))
        marrow = body & inner & ok
        bone = (body | arch | spinous | transverse) & ok & ~marrow
        cv.paint(sl, np.broadcast_to(canal, ok.shape) & ok, _SOFT, 25.0)
        cv.paint(sl, bone, _BONE, pat.cortical_hu)
        cv.paint(sl, marrow, _RED if name in ("L2", "L3", "L4") else _MARROW, pat.marrow_hu)
        cv.record_bone("spine", sl, bone | marrow)
    # Sacrum: a tapering, backward-curving wedge from S1 to the coccyx.
    s_top = levels["L5_bottom"] + 3.0
    s_bot = s_top + 140.0
    del s_bot
    _paint_sacrum(cv, s_top)
    return {
        "l2_top": levels["L2_top"],
        "l4_bottom": levels["L4_bottom"],
        "l5_bottom": levels["L5_bottom"],
        "t1_top": levels["T1_top"],
    }


def _paint_ribs(cv: _Canvas) -> None:
    g, pat = cv.grid, cv.pat
    _, _, centres = _level_centres()
    names = [r[0] for r in _VERTEBRAE]
    i_t1, i_t12 = names.index("T1"), names.index("T12")
    s_lo, s_hi = float(centres[i_t1]) - 10.0, float(centres[i_t12]) + 110.0
    k = _RIBCAGE_KNOTS
    amax = float(k[:, 1].max()) * pat.frame + 20.0
    sl = g.box(
        (-amax, -140.0 * pat.frame, pat.vertex_z - pat.stature * s_hi),
        (amax, 140.0 * pat.frame, pat.vertex_z - pat.stature * s_lo),
    )
    if sl is None:
        return
    x, y, z = g.coords(sl)
    s = pat.s_of_z(z)
    a = np.interp(s, k[:, 0], k[:, 1]) * pat.frame
    b = np.interp(s, k[:, 0], k[:, 2]) * pat.frame
    yc = np.interp(s, k[:, 0], k[:, 3]) * pat.frame
    ux, uy = x / a, (y - yc) / b
    rho = np.sqrt(ux * ux + uy * uy)
    thick = 9.0 * pat.frame
    ring = (rho >= 1.0) & (rho <= 1.0 + thick / (0.5 * (a + b)))
    theta = np.arctan2(np.abs(ux), uy)  # 0 posterior, π anterior
    # Ribs fall ≈ 70 mm from their vertebra to their anterior end (assumption, typical rib obliquity).
    s_back = s - 70.0 * (1.0 - np.cos(theta)) / 2.0
    lvl = np.interp(s_back, centres, np.arange(len(centres), dtype=np.float64))
    nearest = np.rint(lvl)
    band = np.abs(lvl - nearest) <= 0.27
    rib_no = nearest - i_t1 + 1  # 1 … 12
    # Anterior end of each rib (angle from posterior): 1–7 reach the sternum through cartilage, 8–10 the costal
    # margin, 11–12 float.
    end = np.where(rib_no <= 7, math.pi - 0.35, np.where(rib_no <= 10, math.pi - 0.9 + 0.1 * (10 - rib_no), 1.7))
    ribs = ring & band & (rib_no >= 1) & (rib_no <= 12) & (theta <= end) & (np.abs(x) > 22.0 * pat.frame)
    ribs &= cv.allowed(sl, (_SOFT,))
    cv.paint(sl, ribs, _BONE, 0.75 * pat.cortical_hu + 0.25 * pat.marrow_hu)
    cv.record_bone("ribs", sl, ribs)
    # Sternum: a plate in front of the rib cage from the manubrium to the xiphoid.
    s1, s2 = float(centres[i_t1]) + 15.0, float(centres[names.index("T9")])
    pts = [
        pat.p(0.0, -float(np.interp(s, k[:, 0], k[:, 2]) - np.interp(s, k[:, 0], k[:, 3])) - 6.0, s) for s in (s1, s2)
    ]
    _bone_slab(cv, "thorax", pts, 16.0 * pat.frame, 6.0 * pat.frame)
    # Clavicles and scapulae.
    for side in (-1.0, 1.0):
        a_cl = pat.p(side * 22.0, -55.0, float(centres[i_t1]) + 5.0)
        b_cl = pat.p(side * 150.0, 10.0, float(centres[i_t1]) - 8.0)
        _bone_tube(cv, "thorax", [a_cl, b_cl], [7.0 * pat.frame, 7.0 * pat.frame])
        # Scapula: a plate on the postero-lateral rib cage, tangent to it (≈ 40° from the coronal plane).
        c = pat.p(side * 100.0, 76.0, float(centres[names.index("T4")]))
        got = cv.solid(c, pat.axes(42.0, 5.0, 75.0), _rot_z(-side * 40.0))
        if got is not None:
            ssl, q = got
            m = (q <= 1.0) & cv.allowed(ssl, (_SOFT,))
            cv.paint(ssl, m, _BONE, 0.6 * pat.cortical_hu + 0.4 * pat.marrow_hu)
            cv.record_bone("thorax", ssl, m)


def _bone_slab(cv: _Canvas, group: str, pts: Sequence[Sequence[float]], half_width: float, half_depth: float) -> None:
    """A flat bone (x half-width, y half-depth) between two points along z: cortex with marrow inside."""
    g = cv.grid
    (x0, y0, z0), (_, y1, z1) = pts[0], pts[1]
    sl = g.box(
        (x0 - half_width, min(y0, y1) - half_depth, min(z0, z1)),
        (x0 + half_width, max(y0, y1) + half_depth, max(z0, z1)),
    )
    if sl is None:
        return
    x, y, z = g.coords(sl)
    t = np.clip((z - z0) / (z1 - z0), 0.0, 1.0)
    yc = y0 + t * (y1 - y0)
    dx, dy = np.abs(x - x0) / half_width, np.abs(y - yc) / half_depth
    slab = (dx <= 1.0) & (dy <= 1.0) & (z >= min(z0, z1)) & (z <= max(z0, z1))
    shell = _cortex_mm(g)
    inner = (np.abs(x - x0) <= half_width - shell) & (np.abs(y - yc) <= half_depth - shell)
    ok = cv.allowed(sl, (_SOFT,))
    slab = np.broadcast_to(slab, ok.shape) & ok
    marrow = slab & inner
    cv.paint(sl, slab & ~marrow, _BONE, cv.pat.cortical_hu)
    cv.paint(sl, marrow, _MARROW, cv.pat.marrow_hu)
    cv.record_bone(group, sl, slab)


def _bone_shell(cv: _Canvas, group: str, sl: Slices, q: Any, mid_radius_mm: float, thick_mm: float, keep: Any) -> None:
    """Paint |q − 1|·R ≤ thick/2 (bone) with a marrow core, restricted to `keep`."""
    dist = np.abs(q - 1.0) * mid_radius_mm
    ok = cv.allowed(sl, (_SOFT,))
    plate = (dist <= 0.5 * thick_mm) & keep & ok
    marrow = plate & (dist <= 0.5 * thick_mm - _cortex_mm(cv.grid))
    cv.paint(sl, plate & ~marrow, _BONE, cv.pat.cortical_hu)
    cv.paint(sl, marrow, _MARROW, cv.pat.marrow_hu)
    cv.record_bone(group, sl, plate)


def _paint_iliac_wings(cv: _Canvas, s_crest: float, s_low: float) -> None:
    """Both iliac wings: curved plates whose axial section is an arc from the anterior superior iliac spine to the
    sacro-iliac joint, narrowing down to the acetabular roof (so a coronal section is a slanted bar)."""
    g, pat = cv.grid, cv.pat
    f = pat.frame
    sl = g.box(
        (-140.0 * f, -70.0 * f, pat.vertex_z - pat.stature * s_low),
        (140.0 * f, 75.0 * f, pat.vertex_z - pat.stature * s_crest),
    )
    if sl is None:
        return
    x, y, z = g.coords(sl)
    t = np.clip((pat.s_of_z(z) - s_crest) / (s_low - s_crest), 0.0, 1.0)
    a_lat = 110.0 * f * (1.0 - 0.3 * t)
    b_ap = 65.0 * f * (1.0 - 0.5 * t)
    ux, uy = (np.abs(x) - 20.0 * f) / a_lat, (y + 10.0 * f) / b_ap
    rho = np.sqrt(ux * ux + uy * uy)
    keep = (np.abs(x) >= 35.0 * f) & (uy >= -0.6)  # from the ASIS back to the sacro-iliac joint
    _bone_shell(cv, "pelvis", sl, rho, 0.5 * (a_lat + b_ap), 11.0 * f, keep)


def _paint_sacrum(cv: _Canvas, s_top: float) -> None:
    """Sacrum and coccyx: an elliptic section, wide and flat, tapering and curving backwards."""
    g, pat = cv.grid, cv.pat
    f, s_bot = pat.frame, s_top + 140.0
    sl = g.box(
        (-60.0 * f, 0.0, pat.vertex_z - pat.stature * s_bot), (60.0 * f, 110.0 * f, pat.vertex_z - pat.stature * s_top)
    )
    if sl is None:
        return
    x, y, z = g.coords(sl)
    s = pat.s_of_z(z)
    t = np.clip((s - s_top) / (s_bot - s_top), 0.0, 1.0)
    a_lat = f * (52.0 - 40.0 * t)
    b_ap = f * (20.0 - 12.0 * t)
    yc = f * _spine_y(s) + 5.0 * f
    rho = np.sqrt((x / a_lat) ** 2 + ((y - yc) / b_ap) ** 2)
    inside = (rho <= 1.0) & (s >= s_top) & (s <= s_bot)
    ok = cv.allowed(sl, (_SOFT,))
    bone = inside & ok
    marrow = bone & (rho <= 1.0 - _cortex_mm(g) / b_ap)
    cv.paint(sl, bone & ~marrow, _BONE, pat.cortical_hu)
    cv.paint(sl, marrow, _MARROW, pat.marrow_hu)
    cv.record_bone("pelvis", sl, bone)


def _paint_pelvis_femora(cv: _Canvas, s_l5: float) -> dict[str, tuple[float, float, float]]:
    g, pat = cv.grid, cv.pat
    crest = s_l5 - 50.0  # iliac crest at the L4 level
    s_fh = s_l5 + 130.0  # femoral heads
    marks: dict[str, tuple[float, float, float]] = {}
    _paint_iliac_wings(cv, crest, s_fh - 25.0)
    for side in (-1.0, 1.0):
        fh = pat.p(side * 88.0, 5.0, s_fh)
        marks[f"femoral_head_{'left' if side > 0 else 'right'}"] = fh
        # Acetabulum: the upper-medial part of a shell around the femoral head.
        got = cv.solid(fh, pat.axes(32.0, 32.0, 32.0), np.eye(3), margin=1.4)
        if got is not None:
            sl, q = got
            x, _, z = g.coords(sl)
            keep = (z >= fh[2] - 8.0) | (side * x <= side * fh[0] - 10.0)
            _bone_shell(cv, "pelvis", sl, q, 32.0 * pat.frame, 10.0 * pat.frame, keep)
        # Pubic and ischial rami.
        _bone_tube(
            cv,
            "pelvis",
            [pat.p(side * 75.0, -20.0, s_fh + 5.0), pat.p(side * 14.0, -68.0, s_fh + 25.0)],
            [10.0 * pat.frame, 9.0 * pat.frame],
        )
        _bone_tube(
            cv,
            "pelvis",
            [
                pat.p(side * 80.0, 25.0, s_fh + 15.0),
                pat.p(side * 58.0, 35.0, s_fh + 70.0),
                pat.p(side * 16.0, -58.0, s_fh + 45.0),
            ],
            [13.0 * pat.frame, 11.0 * pat.frame, 7.0 * pat.frame],
        )
        # Femur: head, neck, greater trochanter and shaft.
        _bone_tube(cv, "femur", [fh, pat.p(side * 125.0, 10.0, s_fh + 30.0)], [24.0 * pat.frame, 17.0 * pat.frame])
        _bone_tube(
            cv,
            "femur",
            [
                pat.p(side * 122.0, 10.0, s_fh + 25.0),
                pat.p(side * 112.0, 10.0, s_fh + 120.0),
                pat.p(side * 95.0, 5.0, s_fh + 430.0),
            ],
            [18.0 * pat.frame, 14.0 * pat.frame, 13.0 * pat.frame],
        )
    marks["pubic_symphysis"] = pat.p(0.0, -68.0, s_fh + 27.0)
    return marks


def _paint_skull(cv: _Canvas) -> None:
    g, pat = cv.grid, cv.pat
    c = pat.p(0.0, -2.0, 110.0)
    got = cv.solid(c, pat.axes(69.0, 88.0, 106.0), np.eye(3), margin=1.1)
    if got is not None:
        sl, q = got
        _, y, z = g.coords(sl)
        s = pat.s_of_z(z)
        vault = (s <= 85.0) | ((y > -30.0 * pat.frame) & (s <= 175.0))
        # Brain: inside the vault, almost no uptake.
        brain = (q <= 1.0 - 4.0 / 80.0) & vault & (s <= 150.0) & cv.allowed(sl, (_SOFT,))
        cv.paint(sl, brain, _SOFT, 35.0, _PROFILE_BRAIN)
        _bone_shell(cv, "skull", sl, q, 85.0 * pat.frame, 8.0 * pat.frame, vault)
    # Mandible: a U-shaped bar and two rami.
    got = cv.solid(pat.p(0.0, -20.0, 215.0), pat.axes(48.0, 62.0, 400.0), np.eye(3), margin=1.1)
    if got is not None:
        sl, q = got
        _, y, z = g.coords(sl)
        s = pat.s_of_z(z)
        keep = (y <= -20.0 * pat.frame) & (np.abs(s - 215.0) <= 11.0)
        _bone_shell(cv, "skull", sl, q, 50.0 * pat.frame, 9.0 * pat.frame, keep)
    for side in (-1.0, 1.0):
        _bone_tube(
            cv,
            "skull",
            [pat.p(side * 47.0, -18.0, 218.0), pat.p(side * 50.0, 8.0, 150.0)],
            [6.0 * pat.frame, 6.0 * pat.frame],
        )


# ============================================================================ organs and vessels


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, hi))


def _jitter(rng: np.random.Generator, x: float, y: float, s: float, mm: float) -> tuple[float, float, float]:
    d = mm * rng.standard_normal(3)
    return (x + float(d[0]), y + float(d[1]), s + float(d[2]))


def _paint_thorax(cv: _Canvas) -> dict[str, tuple[float, float, float]]:
    g, pat, rng = cv.grid, cv.pat, cv.rng
    lung_hu = float(rng.uniform(-860.0, -780.0))
    k = _RIBCAGE_KNOTS
    dome = {-1.0: 462.0 + 8.0 * rng.standard_normal(), 1.0: 478.0 + 8.0 * rng.standard_normal()}
    for side in (-1.0, 1.0):
        c = pat.p(side * 72.0, 15.0, 400.0)
        got = cv.solid(c, pat.axes(75.0, 100.0, 150.0), np.eye(3), margin=1.05)
        if got is None:
            continue
        sl, q = got
        x, y, z = g.coords(sl)
        s = pat.s_of_z(z)
        a = np.interp(s, k[:, 0], k[:, 1]) * pat.frame
        b = np.interp(s, k[:, 0], k[:, 2]) * pat.frame
        yc = np.interp(s, k[:, 0], k[:, 3]) * pat.frame
        inside_cage = (x / (a - 3.0)) ** 2 + ((y - yc) / (b - 3.0)) ** 2 <= 1.0
        # Diaphragm: a dome highest near the middle of each side, deepest at the costophrenic recesses.
        r2 = ((x - c[0]) / (90.0 * pat.frame)) ** 2 + ((y - 5.0 * pat.frame) / (80.0 * pat.frame)) ** 2
        above = s <= dome[side] + 70.0 * r2
        mediast = np.abs(x - 12.0 * pat.frame) <= 18.0 * pat.frame + 12.0 * np.clip((s - 330.0) / 100.0, 0, 1)
        lung = (q <= 1.0) & inside_cage & above & ~mediast & (side * x > 0) & cv.allowed(sl, (_SOFT,))
        cv.paint(sl, lung, _LUNG, lung_hu)
    # Trachea and main bronchi (air; labelled lung).
    tr = [pat.p(0.0, -30.0, 215.0), pat.p(0.0, -5.0, 330.0), pat.p(0.0, 12.0, 372.0)]
    _paint_tube(cv, _LUNG, -950.0, tr, [9.0 * pat.frame] * 3, (_SOFT,))
    for side in (-1.0, 1.0):
        _paint_tube(cv, _LUNG, -950.0, [tr[-1], pat.p(side * 45.0, 22.0, 395.0)], [6.5 * pat.frame] * 2, (_SOFT, _LUNG))
    # Heart (chambers and myocardium: blood pool), long axis to the left, front and down.
    heart_c = pat.p(*_jitter(rng, 22.0, -28.0, 425.0, 5.0))
    rot = _rot_z(-35.0) @ _rot_y(40.0)
    cv.organ(
        _BLOOD,
        40.0,
        _lognormal(rng, 650.0, 0.12, 480.0, 900.0),
        heart_c,
        pat.axes(48.0, 45.0, 65.0),
        rot,
        (_SOFT, _LUNG),
        lobes=_Lobes.random(rng, 0.04),
    )
    return {"heart": heart_c}


def _paint_tube(
    cv: _Canvas, label: int, hu: float, pts: Sequence[Sequence[float]], radii: Sequence[float], allowed: Sequence[int]
) -> None:
    for sl, q, _ in _tube_segments(cv.grid, pts, radii):
        cv.paint(sl, (q <= 1.0) & cv.allowed(sl, allowed), label, hu)


def _vessels(pat: _Patient, s_l5: float) -> dict[str, tuple[list[tuple[float, float, float]], list[float]]]:
    """Centre lines (world) and radii of the aorta, iliac arteries and inferior vena cava."""
    f = pat.frame
    bif = s_l5 - 55.0
    aorta = [
        (-10.0, -22.0, 425.0),
        (-8.0, -15.0, 345.0),
        (8.0, 10.0, 322.0),
        (22.0, 38.0, 350.0),
        (22.0, 38.0, 470.0),
        (12.0, 15.0, 560.0),
        (12.0, 2.0, 640.0),
        (8.0, 3.0, bif),
    ]
    r_ao = [15.0, 15.0, 13.0, 12.0, 12.0, 11.0, 10.0, 9.0]
    out = {"aorta": ([pat.p(*p) for p in aorta], [r * f for r in r_ao])}
    for side, name in ((1.0, "left"), (-1.0, "right")):
        il = [
            (8.0, 3.0, bif),
            (side * 50.0, 18.0, bif + 70.0),
            (side * 72.0, -20.0, bif + 160.0),
            (side * 82.0, -40.0, bif + 215.0),
            (side * 88.0, -35.0, bif + 450.0),
        ]
        out[f"iliac_{name}"] = ([pat.p(*p) for p in il], [7.0 * f, 6.5 * f, 6.0 * f, 5.5 * f, 5.0 * f])
    ivc = [(-22.0, 12.0, bif + 10.0), (-24.0, 12.0, 600.0), (-25.0, 15.0, 520.0), (-20.0, -5.0, 465.0)]
    out["ivc"] = ([pat.p(*p) for p in ivc], [10.0 * f] * 4)
    return out


def _paint_abdomen(
    cv: _Canvas, s_l5: float, kidneys: dict[str, tuple[Slices, BoolArray, Any]]
) -> dict[str, tuple[float, float, float]]:
    """Vessels, kidneys (their box, mask and shape function go into `kidneys`), liver, spleen, GI, bladder."""
    g, pat, rng = cv.grid, cv.pat, cv.rng
    soft = (_SOFT,)
    marks: dict[str, tuple[float, float, float]] = {}
    for pts, radii in _vessels(pat, s_l5).values():
        _paint_tube(cv, _BLOOD, 40.0, pts, radii, (_SOFT, _LUNG))
    # Kidneys: cortex + medulla; tilted (upper pole medial and posterior), hilum facing antero-medially.
    v_common = 0.08 * rng.standard_normal()
    for side, name in ((1.0, "kidney_left"), (-1.0, "kidney_right")):
        v = float(np.clip(150.0 * math.exp(v_common + 0.06 * rng.standard_normal()), 125.0, 195.0))
        c = pat.p(*_jitter(rng, side * 75.0, 48.0, 600.0 if side > 0 else 612.0, 5.0))
        rot = _rot_y(side * 12.0) @ _rot_x(-12.0) @ _rot_z(side * 30.0)
        medial = rot.T @ np.array([-side, 0.0, 0.0])
        lobes = _Lobes.random(rng, 0.04, n=3)
        lobes = _Lobes(lobes.amplitudes, lobes.degrees, lobes.directions, medial, 0.3)
        got = cv.organ(_ORGAN_LABELS[name], 32.0, v, c, pat.axes(30.0, 23.0, 55.0), rot, soft, lobes=lobes)
        if got is not None:
            kidneys[name] = got
        marks[name] = c
    # Liver: a cut ellipsoid under the right dome, thinning towards the left lobe.
    c = pat.p(*_jitter(rng, -55.0, 5.0, 532.0, 6.0))
    cv.organ(
        _ORGAN_LABELS["liver"],
        float(rng.uniform(50.0, 65.0)),
        _lognormal(rng, 1600.0, 0.12, 1300.0, 1950.0),
        c,
        pat.axes(105.0, 85.0, 82.0),
        _rot_y(-10.0),
        soft,
        lobes=_Lobes.random(rng, 0.04),
        cuts=[((0.55, 0.0, -0.6), 0.55), ((0.0, -0.3, -0.9), 0.7)],
    )
    marks["liver"] = c
    # Spleen: left, posterior, long axis along the 10th rib.
    c = pat.p(*_jitter(rng, 92.0, 42.0, 545.0, 6.0))
    cv.organ(
        _ORGAN_LABELS["spleen"],
        45.0,
        _lognormal(rng, 160.0, 0.2, 110.0, 240.0),
        c,
        pat.axes(24.0, 55.0, 45.0),
        _rot_z(-35.0),
        soft,
        lobes=_Lobes.random(rng, 0.05),
    )
    # Stomach (GI: bowel label), with a gas cap.
    c = pat.p(*_jitter(rng, 55.0, -30.0, 530.0, 6.0))
    got = cv.organ(
        _BOWEL,
        20.0,
        _lognormal(rng, 300.0, 0.3, 150.0, 700.0),
        c,
        pat.axes(42.0, 35.0, 60.0),
        _rot_y(25.0),
        soft,
        lobes=_Lobes.random(rng, 0.06),
    )
    if got is not None:
        sl, m, _ = got
        zz = g.coords(sl)[2]
        gas = m & (zz > c[2] + 0.4 * 60.0 * pat.stature)
        cv.hu[sl][gas] = -900.0
    # Bladder behind the pubic symphysis; its filling is that of the reference scan (random).
    s_fh = s_l5 + 130.0
    c = pat.p(*_jitter(rng, 0.0, -30.0, s_fh - 12.0, 4.0))
    v_bl = _lognormal(rng, 200.0, 0.4, 80.0, 500.0)
    cv.organ(
        _ORGAN_LABELS["bladder"],
        8.0,
        v_bl,
        c,
        pat.axes(50.0, 42.0, 40.0),
        np.eye(3),
        soft,
        lobes=_Lobes.random(rng, 0.04),
    )
    marks["bladder"] = c
    _paint_bowel(cv, s_l5)
    return marks


def _paint_bowel(cv: _Canvas, s_l5: float) -> None:
    g, pat, rng = cv.grid, cv.pat, cv.rng
    s_fh = s_l5 + 130.0
    # Colon frame: caecum → ascending → transverse → descending → sigmoid → rectum.
    colon = [
        (-80.0, -15.0, s_l5 + 30.0),
        (-95.0, 15.0, 640.0),
        (-85.0, -25.0, 595.0),
        (0.0, -70.0, 640.0),
        (85.0, 0.0, 565.0),
        (95.0, 25.0, 680.0),
        (40.0, -15.0, s_l5 + 60.0),
        (0.0, 55.0, s_fh - 20.0),
        (0.0, 62.0, s_fh + 40.0),
    ]
    pts = [pat.p(*_jitter(rng, *p, 6.0)) for p in colon]
    radii = list(pat.frame * np.clip(24.0 + 4.0 * rng.standard_normal(len(pts)), 15.0, 32.0))
    for sl, q, _ in _tube_segments(g, pts, radii):
        m = (q <= 1.0) & cv.allowed(sl, (_SOFT,))
        gas_field = gaussian_random_field(rng, m.shape, g.spacing, 10.0)
        cv.paint(sl, m, _BOWEL, 20.0)
        cv.hu[sl][m & (gas_field > 1.2)] = -900.0  # ≈ 12 % of the colon: gas pockets
    # Small bowel: loops (a thresholded smooth field) filling the central abdomen; the rest of the peritoneal
    # cavity is mesenteric fat.
    c = pat.p(0.0, -30.0, 0.5 * (600.0 + s_l5 + 60.0))
    half = 0.5 * (s_l5 + 60.0 - 600.0)
    ax = (110.0 * pat.frame * pat.habitus_lat, 65.0 * pat.frame * pat.habitus_ap, half * pat.stature)
    got = cv.solid(c, ax, np.eye(3))
    if got is None:
        return
    sl, q = got
    cav = (q <= 1.0) & cv.allowed(sl, (_SOFT,)) & (cv.profile[sl] != _PROFILE_FAT)
    loops = gaussian_random_field(rng, cav.shape, g.spacing, 7.0) > 0.0
    cv.paint(sl, cav & loops, _BOWEL, 25.0)
    cv.paint(sl, cav & ~loops, _SOFT, -90.0, _PROFILE_FAT)


def _paint_head_glands(cv: _Canvas) -> None:
    pat, rng = cv.pat, cv.rng
    soft = (_SOFT,)
    v_par = 0.07 * rng.standard_normal()
    v_sm = 0.08 * rng.standard_normal()
    v_lac = 0.12 * rng.standard_normal()
    for side, tag in ((1.0, "left"), (-1.0, "right")):
        # Parotid: lateral to the mandibular ramus, in front of the ear (ICRP 89: 50 g the pair).
        v = float(np.clip(25.0 * math.exp(v_par + 0.05 * rng.standard_normal()), 21.0, 33.0))
        cv.organ(
            _ORGAN_LABELS[f"parotid_{tag}"],
            float(rng.uniform(-20.0, 20.0)),
            v,
            pat.p(*_jitter(rng, side * 52.0, 8.0, 175.0, 3.0)),
            pat.axes(13.0, 20.0, 26.0),
            _rot_z(side * 10.0),
            soft,
            lobes=_Lobes.random(rng, 0.05),
        )
        v = float(np.clip(12.5 * math.exp(v_sm + 0.05 * rng.standard_normal()), 8.0, 18.0))
        cv.organ(
            _ORGAN_LABELS[f"submandibular_{tag}"],
            40.0,
            v,
            pat.p(*_jitter(rng, side * 36.0, -22.0, 222.0, 3.0)),
            pat.axes(13.0, 16.0, 12.0),
            np.eye(3),
            soft,
            lobes=_Lobes.random(rng, 0.05),
        )
        # Lacrimal: supero-lateral in the orbit, ≈ 0.7 mL (Bukhari 2014 MRI volumes, as in the priors).
        v = float(np.clip(0.73 * math.exp(v_lac + 0.08 * rng.standard_normal()), 0.45, 1.1))
        cv.organ(
            _ORGAN_LABELS[f"lacrimal_{tag}"],
            40.0,
            v,
            pat.p(*_jitter(rng, side * 36.0, -70.0, 96.0, 1.5)),
            pat.axes(9.0, 5.0, 4.0),
            _rot_z(side * 20.0),
            soft,
        )


# ============================================================================ lesions


# Share of bone metastases by bone group (assumption: axial predominance as on bone scans of mCRPC).
_BONE_GROUP_WEIGHT: Mapping[str, float] = {
    "spine": 0.38,
    "pelvis": 0.27,
    "ribs": 0.14,
    "thorax": 0.05,
    "femur": 0.08,
    "skull": 0.04,
    "humerus": 0.04,
}


# Lymph-node chains (reference x, y, s of polylines) and their shares (assumption: pelvic and retroperitoneal
# nodes dominate in prostate cancer, then mediastinal and supraclavicular).
def _node_chains(s_l5: float) -> list[tuple[float, list[tuple[float, float, float]]]]:
    bif = s_l5 - 55.0
    s_fh = s_l5 + 130.0
    chains: list[tuple[float, list[tuple[float, float, float]]]] = []
    for side in (-1.0, 1.0):
        chains.append(
            (
                0.17,
                [(side * 35.0, 20.0, bif + 60.0), (side * 65.0, 5.0, bif + 140.0), (side * 70.0, -15.0, s_fh - 30.0)],
            )
        )  # common/external/internal iliac, obturator
        chains.append((0.14, [(side * 30.0, 8.0, 585.0), (side * 28.0, 10.0, bif + 20.0)]))  # para-aortic
        chains.append((0.02, [(side * 82.0, -55.0, s_fh + 40.0), (side * 85.0, -60.0, s_fh + 70.0)]))  # inguinal
        chains.append((0.03, [(side * 45.0, 0.0, 268.0), (side * 65.0, 10.0, 285.0)]))  # supraclavicular
    chains.append((0.10, [(0.0, -10.0, 340.0), (15.0, 5.0, 380.0), (-15.0, 20.0, 400.0), (0.0, 20.0, 420.0)]))
    chains.append((0.02, [(0.0, 25.0, 520.0), (0.0, 20.0, 570.0)]))  # retrocrural
    return chains


@dataclass
class _Placed:
    centres: list[FloatArray]
    radii: list[float]


def _site_candidates(cv: _Canvas, site: str, s_l5: float, r0: float, placed: _Placed) -> list[FloatArray]:
    """A handful of candidate centres (world mm) for a lesion at `site` (empty if none fits the grid)."""
    g, rng, pat = cv.grid, cv.rng, cv.pat
    out: list[FloatArray] = []
    origin = np.array(g.origin_xyz)
    sp_xyz = np.array(g.spacing[::-1])
    if site == "bone":
        groups = [k for k in _BONE_GROUP_WEIGHT if k in cv.bone_sites]
        if not groups:
            return out
        w = np.array([_BONE_GROUP_WEIGHT[k] for k in groups])
        for _ in range(8):
            grp = groups[int(rng.choice(len(groups), p=w / w.sum()))]
            pts = np.concatenate(cv.bone_sites[grp])
            zyx = pts[int(rng.integers(len(pts)))]
            out.append(origin + sp_xyz * zyx[::-1].astype(np.float64))
    elif site == "liver":
        liver = (
            np.argwhere(cv.labels == _ORGAN_LABELS["liver"]) if (cv.labels == _ORGAN_LABELS["liver"]).any() else None
        )
        if liver is None:
            return out
        for _ in range(8):
            zyx = liver[int(rng.integers(len(liver)))]
            out.append(origin + sp_xyz * zyx[::-1].astype(np.float64))
    else:  # lymph node
        chains = _node_chains(s_l5)
        w = np.array([c[0] for c in chains])
        for _ in range(40):
            line = chains[int(rng.choice(len(chains), p=w / w.sum()))][1]
            seg = int(rng.integers(len(line) - 1))
            t = rng.random()
            p = np.add(line[seg], t * np.subtract(line[seg + 1], line[seg]))
            ang = rng.uniform(0.0, 2.0 * math.pi)
            off = rng.uniform(4.0, 14.0) + 0.5 * r0
            world = np.array(pat.p(p[0], p[1], p[2])) + np.array([off * math.cos(ang), off * math.sin(ang), 0.0])
            idx = np.rint((world - origin) / sp_xyz).astype(int)[::-1]
            if np.all(idx >= 0) and np.all(idx < np.array(g.shape)) and cv.labels[tuple(idx)] == _SOFT:
                out.append(world)
            if len(out) >= 8:
                break
    return out


def _candidate_score(cv: _Canvas, c: FloatArray, r0: float, placed: _Placed, allowed: Sequence[int]) -> float:
    """Free room around a candidate centre: allowed share of its box plus distance to other lesions (≤ 1 each)."""
    sl = cv.grid.around(c, (r0, r0, r0))
    free = float(cv.allowed(sl, allowed).mean()) if sl is not None else 0.0
    return free + min(_clearance(c, r0, placed) / max(r0, 1.0), 1.0)


def _clearance(c: FloatArray, r: float, placed: _Placed) -> float:
    if not placed.centres:
        return math.inf
    d = np.linalg.norm(np.asarray(placed.centres) - c, axis=1) - np.asarray(placed.radii) - r
    return float(d.min())


def _place_lesions(
    cv: _Canvas, lesions: Lesions, s_l5: float, spec: AnatomySpec
) -> tuple[FloatArray, list[dict[str, Any]]]:
    """Paint the lesions (largest first, labelled in the given order); returns realised volumes and shape info."""
    g, rng = cv.grid, cv.rng
    n = lesions.n
    realised = np.zeros(n)
    info: list[dict[str, Any]] = [{} for _ in range(n)]
    placed = _Placed([], [])
    # Where a lesion may grow, tried in turn with the shape-function limit: bone lesions stay inside the skeleton
    # (prostate-cancer metastases are mostly intra-osseous, osteoblastic) and break out into soft tissue only when
    # the bone around cannot hold them; bulky nodes may displace bowel loops.
    skeleton = (_BONE, _MARROW, _RED)
    tries_by_site: dict[str, list[tuple[float, tuple[int, ...]]]] = {
        "bone": [(1.2, skeleton), (1.7, skeleton), (1.7, (*skeleton, _SOFT))],
        "lymph_node": [(q, (_SOFT, _BOWEL)) for q in _Q_MAX_TRIES],
        "liver": [(q, (_ORGAN_LABELS["liver"],)) for q in _Q_MAX_TRIES],
    }
    soft_tries = [(q, (_SOFT,)) for q in _Q_MAX_TRIES]
    order = np.argsort(-np.asarray(lesions.volumes_ml), kind="stable")
    for i in order:
        site = lesions.sites[i]
        vol = float(lesions.volumes_ml[i])
        r0 = (3.0 * vol * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
        cands = _site_candidates(cv, site, s_l5, r0, placed)
        tries = tries_by_site.get(site, soft_tries)
        if not cands:
            # The site is not on this grid (e.g. no liver in a crop): the lesion becomes a soft-tissue deposit.
            cands = _site_candidates(cv, "lymph_node", s_l5, r0, placed)
            tries = soft_tries
        if not cands:
            body = np.argwhere(cv.labels[::4, ::4, ::4] == _SOFT) * 4
            zyx = body[int(rng.integers(len(body)))]
            cands = [np.array(g.origin_xyz) + np.array(g.spacing[::-1]) * zyx[::-1]]
        centre = max(cands, key=lambda c: _candidate_score(cv, c, r0, placed, tries[0][1]))
        axes = r0 * np.exp(0.15 * rng.standard_normal(3))
        axes *= r0 / math.prod(axes) ** (1.0 / 3.0)
        rot = _rotation(rng)
        lobes = _Lobes.random(rng, 0.08)
        label = LESION_LABEL_BASE + int(i) + 1
        n_vox = max(1, round(vol / cv.vox_ml))
        got = None
        for q_max, allowed in tries:
            got = cv.solid(centre, axes, rot, lobes=lobes, margin=q_max)
            if got is None:
                break
            sl, q = got
            # Small-scale irregularity on top of the lobes (breaks exact homogeneity; the volume stays exact).
            noise = gaussian_random_field(rng, q.shape, g.spacing, max(0.4 * r0, 1.5))
            q = q * (1.0 + 0.08 * noise)
            mask = _take_connected(q, cv.allowed(sl, allowed), n_vox, q_max)
            if mask.sum() >= n_vox:
                break
        if got is None:
            continue
        prev = cv.labels[sl].copy()
        if site == "bone":
            hu = np.where(np.isin(prev, _SKELETON), rng.uniform(300.0, 900.0), 45.0)
        elif site == "liver":
            hu = np.full(prev.shape, rng.uniform(25.0, 45.0))
        else:
            hu = np.full(prev.shape, rng.uniform(28.0, 48.0))
        cv.paint(sl, mask, label, hu)
        realised[i] = float(mask.sum()) * cv.vox_ml
        placed.centres.append(np.asarray(centre, dtype=np.float64))
        placed.radii.append(r0)
        # Necrotic core in larger lesions: the lowest-q voxels, a random share (assumption).
        p_nec = float(np.clip((math.log(max(vol, 1e-3)) - math.log(4.0)) / math.log(10.0), 0.0, 0.7))
        core = np.zeros_like(mask)
        if mask.sum() >= 30 and rng.random() < p_nec:
            frac = rng.uniform(0.05, 0.25)
            qm = np.where(mask, q, np.inf)
            k = max(1, int(frac * mask.sum()))
            thr = np.partition(qm[mask], k - 1)[k - 1]
            core = mask & (qm <= thr)
            cv.hu[sl][core] = float(rng.uniform(10.0, 25.0))
        info[i] = {"slices": sl, "mask": mask, "core": core, "q": np.where(mask, q, np.nan)}
    return realised, info


# ============================================================================ fields


def _normalise_per_label(values: F32, labels: npt.NDArray[np.int16]) -> F32:
    """Divide values by their voxel mean within each label (label 0 set to 0)."""
    lab = labels.ravel().astype(np.intp)
    sums = np.bincount(lab, weights=values.ravel().astype(np.float64))
    counts = np.bincount(lab, minlength=sums.size)
    means = np.divide(sums, counts, out=np.ones_like(sums), where=(counts > 0) & (sums > 0))
    scale = (1.0 / means).astype(np.float32)
    scale[0] = 0.0
    out: F32 = (values * scale[labels]).astype(np.float32)
    return out


def _fields(
    cv: _Canvas,
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
        m = kmask & (cv.labels[sl] == _ORGAN_LABELS[name])
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
    soft = cv.labels == _SOFT
    uptake[soft] /= float(uptake[soft].mean()) if soft.any() else 1.0
    pet[soft] /= float(pet[soft].mean()) if soft.any() else 1.0
    return uptake, shift, pet, cortex


# ============================================================================ placement and assembly


def _place_grid(spec: AnatomySpec, pat: _Patient, rng: np.random.Generator, s_l4_bottom: float) -> _Grid:
    """Put the truth grid on the patient: vertex at the top (whole body) or a torso crop."""
    nz, ny, nx = spec.shape_zyx
    dz, dy, dx = spec.spacing_zyx_mm
    length = nz * dz
    if spec.extent == "whole_body":
        top_s = -rng.uniform(5.0, 25.0)  # a margin above the vertex
    else:
        # Must hold the liver dome to L4; prefer reaching the bladder floor, then the lung apices.
        req_top, req_bot = 470.0 * pat.stature, (s_l4_bottom + 10.0) * pat.stature
        want_top, want_bot = 265.0 * pat.stature, (s_l4_bottom + 220.0) * pat.stature
        top_s_mm = want_bot - length
        if top_s_mm < want_top:
            top_s_mm = 0.5 * (want_top + want_bot) - 0.5 * length
        top_s_mm = min(top_s_mm, req_top)
        top_s_mm = max(top_s_mm, req_bot - length) if req_bot - length <= req_top else top_s_mm
        top_s_mm += rng.uniform(-10.0, 10.0)
        top_s = top_s_mm / pat.stature
    z_top = pat.vertex_z - pat.stature * top_s
    z0 = z_top - (nz - 1) * dz
    x0 = -0.5 * (nx - 1) * dx + rng.uniform(-0.5, 0.5) * dx
    y0 = -0.5 * (ny - 1) * dy + rng.uniform(-5.0, 5.0)
    return _Grid((nz, ny, nx), (dz, dy, dx), (x0, y0, z0))


def _density(hu: F32) -> F32:
    """`density_from_hu` slab by slab (it works in float64; slabs keep that cache-sized), as float32."""
    out = np.empty(hu.shape, dtype=np.float32)
    step = max(1, 1_000_000 // max(1, hu.shape[1] * hu.shape[2]))
    for k in range(0, hu.shape[0], step):
        out[k : k + step] = density_from_hu(hu[k : k + step])
    return out


def make_anatomy(rng: np.random.Generator, spec: AnatomySpec, lesions: Lesions) -> Anatomy:
    """Build one patient's truth anatomy with its lesions on the grid of `spec`.

    Args:
        rng: the patient's generator (e.g. `ludl.synth.kinetics.patient_rng`); the same state gives the same
            anatomy.
        spec: truth grid and extent.
        lesions: the patient's lesions (volumes in mL, sites); labelled ``lesion_001`` … in this order.

    Returns:
        The `Anatomy` (labels, CT truth, density, heterogeneity fields, realised lesion volumes).
    """
    if not isinstance(spec, AnatomySpec):
        raise InputError(f"spec must be an AnatomySpec, got {type(spec).__name__}")
    vols = np.asarray(lesions.volumes_ml, dtype=np.float64).reshape(-1)
    if vols.shape != (lesions.n,) or not np.all(np.isfinite(vols)) or np.any(vols <= 0):
        raise InputError(f"lesions.volumes_ml must hold {lesions.n} positive volumes (mL), got {lesions.volumes_ml}")
    pat = _sample_patient(rng)
    _, bots, _ = _level_centres()
    names = [r[0] for r in _VERTEBRAE]
    grid = _place_grid(spec, pat, rng, float(bots[names.index("L4")]))
    cv = _Canvas(grid, pat, rng)
    arms_down = spec.arms == "down" or (spec.arms == "auto" and spec.extent == "whole_body")
    _paint_body(cv, arms_down)
    levels = _paint_spine(cv)
    s_l5 = levels["l5_bottom"]
    _paint_ribs(cv)
    pelvis_marks = _paint_pelvis_femora(cv, s_l5)
    _paint_skull(cv)
    thorax_marks = _paint_thorax(cv)
    kidneys: dict[str, tuple[Slices, BoolArray, Any]] = {}
    abdomen_marks = _paint_abdomen(cv, s_l5, kidneys)
    _paint_head_glands(cv)
    realised, lesion_info = _place_lesions(cv, lesions, s_l5, spec)
    uptake, shift, pet, cortex = _fields(cv, spec, lesion_info, kidneys)

    present = np.flatnonzero(np.bincount(cv.labels.ravel().astype(np.intp)))
    label_values = {n: v for n, v in {**TISSUE_LABELS, **_ORGAN_LABELS}.items() if v in present}
    for i in range(lesions.n):
        label_values[lesion_name(i)] = LESION_LABEL_BASE + i + 1
    vol_kw: dict[str, Any] = {"spacing_zyx_mm": grid.spacing, "origin_xyz_mm": grid.origin_xyz}
    labels = Volume(cv.labels, unit="label", **vol_kw)
    hu = Volume(cv.hu, unit="HU", **vol_kw)
    density = Volume(_density(cv.hu), unit="g/mL", **vol_kw)
    side = 1.0 if rng.random() < 0.5 else -1.0
    if arms_down:
        pts, _ = _arm_line(pat, side)
        injection = (pts[2][0], pts[2][1] - 10.0, pts[2][2])
    else:
        injection = pat.p(side * 120.0, 0.0, -250.0)  # arms raised above the head: outside the grid
    marks = {
        "vertex": pat.p(0.0, 0.0, 0.0),
        "l2_top": pat.p(0.0, float(_spine_y(levels["l2_top"])), levels["l2_top"]),
        "l4_bottom": pat.p(0.0, float(_spine_y(levels["l4_bottom"])), levels["l4_bottom"]),
        "injection_site": injection,
        **thorax_marks,
        **abdomen_marks,
        **pelvis_marks,
    }
    meta = {
        "frame": pat.frame,
        "stature": pat.stature,
        "habitus_lat": pat.habitus_lat,
        "habitus_ap": pat.habitus_ap,
        "fat_mm": pat.fat_mm,
        "arms_down": arms_down,
    }
    return Anatomy(
        labels=labels,
        label_values=label_values,
        hu=hu,
        density_g_per_ml=density,
        uptake_weight=uptake,
        clearance_shift_per_h=shift,
        pet_weight=pet,
        kidney_cortex=cortex,
        lesion_sites=tuple(lesions.sites),
        lesion_volumes_ml=realised,
        requested_lesion_volumes_ml=vols.copy(),
        landmarks_xyz_mm={k: tuple(float(c) for c in v) for k, v in marks.items()},  # type: ignore[misc]
        meta=meta,
    )
