"""Body outline (trunk, head, neck, legs; skin, fat, muscle) and the arms."""

from __future__ import annotations

import math

import numpy as np

from ludl.synth.anatomy.canvas import Canvas
from ludl.synth.anatomy.reference import TRUNK_KNOTS, PatientShape
from ludl.synth.anatomy.skeleton import bone_tube
from ludl.synth.anatomy.solids import tube_segments
from ludl.synth.anatomy.spec import PROFILE_FAT, SOFT, FloatArray, Slices

__all__ = [
    "arm_line",
    "paint_body",
]


def _interp_trunk(pat: PatientShape, s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    k = TRUNK_KNOTS
    a = np.interp(s, k[:, 0], k[:, 1]) * pat.frame * pat.habitus_lat
    b = np.interp(s, k[:, 0], k[:, 2]) * pat.frame * pat.habitus_ap
    yc = np.interp(s, k[:, 0], k[:, 3]) * pat.frame
    p = np.interp(s, k[:, 0], k[:, 4])
    # Belly: the abdomen bulges anteriorly in heavier patients.
    bump = pat.belly * np.clip(1.0 - ((s - 680.0) / 130.0) ** 2, 0.0, None)
    b = b * (1.0 + bump)
    yc = yc - b * bump / (1.0 + bump) * 0.8
    return a, b, yc, p


def paint_body(cv: Canvas, arms_down: bool) -> None:
    """Trunk, neck, head and legs (skin, fat and muscle), and the arms when they hang down."""
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
        cv.paint(sl, body & ~fat, SOFT, muscle_hu)
        cv.paint(sl, fat, SOFT, fat_hu, PROFILE_FAT)
    # Head (ellipsoid) and neck (elliptic cylinder).
    hc, ha = pat.p(0.0, -5.0, 118.0), pat.axes(75.0, 95.0, 118.0)
    got = cv.solid(hc, ha, np.eye(3))
    if got is not None:
        cv.paint(got[0], got[1] <= 1.0, SOFT, muscle_hu)
    top, bot = pat.p(0.0, 12.0, 150.0), pat.p(0.0, 12.0, 300.0)
    box: Slices | None = g.box((-70.0 * pat.frame, -80.0, bot[2]), (70.0 * pat.frame, 90.0, top[2]))
    if box is not None:
        xx, yy, _ = g.coords(box)
        neck = (xx / (55.0 * pat.frame * pat.habitus_lat)) ** 2 + ((yy - 12.0 * pat.frame) / (60.0 * pat.frame)) ** 2
        cv.paint(box, np.broadcast_to(neck <= 1.0, cv.labels[box].shape), SOFT, muscle_hu)
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
        cv.paint(sl, leg & ~fat, SOFT, muscle_hu)
        cv.paint(sl, fat, SOFT, fat_hu, PROFILE_FAT)
    if arms_down:
        _paint_arms(cv, muscle_hu, fat_hu)


def arm_line(pat: PatientShape, side: float) -> tuple[list[tuple[float, float, float]], list[float]]:
    """Centre line and radii (world) of an arm hanging along the body."""
    pts, radii = [], []
    for s_ref, r_ref in ((300.0, 45.0), (460.0, 42.0), (640.0, 36.0), (790.0, 32.0), (880.0, 26.0), (1040.0, 22.0)):
        a, _, _, _ = _interp_trunk(pat, np.array([min(max(s_ref, 330.0), 900.0)]))
        r = r_ref * pat.frame * math.sqrt(pat.habitus_lat)
        x = side * (float(a[0]) + r + 6.0)
        pts.append((x, 5.0 * pat.frame, pat.vertex_z - pat.stature * s_ref))
        radii.append(r)
    return pts, radii


def _paint_arms(cv: Canvas, muscle_hu: float, fat_hu: float) -> None:
    g, pat = cv.grid, cv.pat
    for side in (-1.0, 1.0):
        pts, radii = arm_line(pat, side)
        for sl, q, r in tube_segments(g, pts, radii):
            arm = (q <= 1.0) & (cv.labels[sl] == 0)
            fat = arm & (q > 1.0 - 0.5 * pat.fat_mm / r)
            cv.paint(sl, arm & ~fat, SOFT, muscle_hu)
            cv.paint(sl, fat, SOFT, fat_hu, PROFILE_FAT)
        # Humerus and the forearm bones (one tube for radius + ulna), cortex + marrow.
        for a, b, r in ((pts[0], pts[2], 11.0), (pts[2], pts[4], 9.0)):
            a2 = (a[0] * 0.98, a[1], a[2] - 15.0)
            bone_tube(cv, "humerus", [a2, b], [r * pat.frame, r * pat.frame])
