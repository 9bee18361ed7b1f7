"""The skeleton: tubular bones, spine (red marrow in L2–L4), ribs, pelvis, femora and skull."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ludl.synth.anatomy.canvas import Canvas
from ludl.synth.anatomy.reference import C1_TOP_S, RIBCAGE_KNOTS, SPINE_Y_KNOTS, VERTEBRAE
from ludl.synth.anatomy.solids import Grid, rot_z, tube_segments
from ludl.synth.anatomy.spec import BONE, MARROW, PROFILE_BRAIN, RED, SOFT, FloatArray, Slices

__all__ = [
    "bone_tube",
    "level_centres",
    "paint_pelvis_femora",
    "paint_ribs",
    "paint_skull",
    "paint_spine",
    "spine_y",
]


# Vertebral bodies are waisted: ≈ 10 % narrower at mid-height than at the endplates (assumption).
_VERTEBRAL_WAIST = 0.1


def bone_tube(cv: Canvas, group: str, pts: Sequence[Sequence[float]], radii: Sequence[float]) -> None:
    """A tubular bone: cortical shell, marrow inside where the tube is thick enough."""
    shell = _cortex_mm(cv.grid)
    for sl, q, r in tube_segments(cv.grid, pts, radii):
        bone = (q <= 1.0) & cv.allowed(sl, (SOFT,))
        marrow = bone & (q <= 1.0 - shell / r)
        cv.paint(sl, bone & ~marrow, BONE, cv.pat.cortical_hu)
        cv.paint(sl, marrow, MARROW, cv.pat.marrow_hu)
        cv.record_bone(group, sl, bone)


def _cortex_mm(g: Grid) -> float:
    # A cortical shell about one truth voxel thick (its HU is a partial-volume value).
    return max(2.0, 0.9 * max(g.spacing[1:]))


def level_centres() -> tuple[FloatArray, FloatArray, FloatArray]:
    """Reference depth below the vertex (mm) of each vertebra's top, bottom and centre, C1 to L5."""
    h = np.array([r[1] for r in VERTEBRAE])
    top = C1_TOP_S + np.concatenate([[0.0], np.cumsum(h)[:-1]])
    return top, top + h, top + h / 2


def spine_y(s: Any) -> Any:
    """Reference AP position (mm, + posterior) of the vertebral body centre at depth `s` below the vertex."""
    k = np.array(SPINE_Y_KNOTS)
    return np.interp(s, k[:, 0], k[:, 1])


def paint_spine(cv: Canvas) -> dict[str, float]:
    """Vertebrae C1–L5 and the sacrum; returns the s of L2 top and L4 bottom."""
    g, pat = cv.grid, cv.pat
    tops, bots, _ = level_centres()
    shell = _cortex_mm(g)
    levels: dict[str, float] = {}
    for (name, height, a_ref, b_ref, disc), s0, s1 in zip(VERTEBRAE, tops, bots, strict=True):
        levels[name + "_top"], levels[name + "_bottom"] = float(s0), float(s1)
        sc = 0.5 * (s0 + s1)
        yb = float(spine_y(sc))
        a, b = a_ref * pat.frame, b_ref * pat.frame
        rc = (8.0 if name[0] != "T" else 7.0) * pat.frame
        y_canal = yb * pat.frame + b + rc + 1.0
        half_h = 0.5 * height * (1.0 - disc) * pat.stature
        zc = pat.vertex_z - pat.stature * sc
        reach = a + 45.0 * pat.frame
        # Thoracic spinous processes slope down over the next vertebra: the box reaches below this level.
        drop = _SPINOUS[name[0]][0] * _SPINOUS[name[0]][1] * pat.frame
        sl = g.box(
            (-reach, yb * pat.frame - b - 2, zc - 0.5 * height * pat.stature - drop),
            (reach, y_canal + rc + 40.0 * pat.frame, zc + 0.5 * height * pat.stature),
        )
        if sl is None:
            continue
        x, y, z = g.coords(sl)
        dz = np.abs(z - zc)
        # Waisted body: concave at mid-height, flaring to the endplates (squared radius factor).
        waist2 = (1.0 - _VERTEBRAL_WAIST * (1.0 - np.clip(dz / half_h, 0.0, 1.0) ** 2)) ** 2
        ell = ((x / a) ** 2 + ((y - yb * pat.frame) / b) ** 2) / waist2
        body = (ell <= 1.0) & (dz <= half_h)
        inner_ell = (x / max(a - shell, 1e-3)) ** 2 + ((y - yb * pat.frame) / max(b - shell, 1e-3)) ** 2
        inner = (inner_ell <= waist2) & (dz <= half_h - shell)
        canal = (np.sqrt(x**2 + (y - y_canal) ** 2) < rc) & (dz <= 0.5 * height * pat.stature)
        posterior = _posterior_elements(x, y - y_canal, z - zc, name[0], rc, a, half_h, pat.frame)
        ok = cv.allowed(sl, (SOFT,))
        marrow = body & inner & ok
        bone = (body | posterior) & ok & ~marrow
        cv.paint(sl, np.broadcast_to(canal, ok.shape) & ok, SOFT, 25.0)
        cv.paint(sl, bone, BONE, pat.cortical_hu)
        cv.paint(sl, marrow, RED if name in ("L2", "L3", "L4") else MARROW, pat.marrow_hu)
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


# Posterior elements by region (reference mm; typical adult anatomy, assumption at this grid's resolution):
# spinous process length and downward slope (dz per mm of length: thoracic ones point steeply down, overlapping the
# next level; lumbar ones are horizontal hatchets), half-height factor of its blade.
_SPINOUS = {"C": (22.0, 0.35, 0.35), "T": (34.0, 0.8, 0.3), "L": (30.0, 0.1, 0.55)}
# Transverse process reach beyond the body (mm) and backward sweep at its tip (mm).
_TRANSVERSE = {"C": (8.0, 0.0), "T": (20.0, 10.0), "L": (24.0, 0.0)}


def _posterior_elements(
    x: FloatArray, v: FloatArray, w: FloatArray, region: str, rc: float, a: float, half_h: float, f: float
) -> Any:
    """Neural arch of one vertebra: pedicles, laminae, spinous and transverse processes (mask on the box).

    x lateral, v AP from the canal centre (+ posterior), w cranio-caudal from the body centre; rc canal radius,
    a body lateral semi-axis, half_h half the body height, f the patient's frame.
    """
    wall = 4.5 * f  # pedicle and lamina thickness
    ax = np.abs(x)
    # Pedicles: two bars beside the canal, from the back of the body to the canal's mid-depth, on the upper part of
    # the body (the inferior vertebral notch lies below them).
    pedicles = (
        (ax >= rc) & (ax <= rc + wall) & (v >= -rc - 2.0) & (v <= 0.3 * rc) & (np.abs(w - 0.3 * half_h) <= 0.6 * half_h)
    )
    # Laminae: the posterior half-ring closing the canal, sloping down behind the disc below.
    rr = np.sqrt(x * x + v * v)
    laminae = (rr >= rc) & (rr <= rc + wall) & (v >= 0.0) & (np.abs(w + 0.15 * half_h) <= 0.8 * half_h)
    # Articular pillars: the superior and inferior facets at the pedicle–lamina junction reach the levels above and
    # below, so a coronal section through the arch shows continuous facet columns.
    pillars = (np.abs(ax - rc - 0.5 * wall) <= 0.5 * wall + 1.0) & (np.abs(v - 0.5 * rc) <= 0.5 * rc + 1.0)
    pillars = pillars & (np.abs(w) <= 1.15 * half_h)
    length, slope, blade = _SPINOUS[region]
    t = v - rc  # distance behind the laminae
    w_axis = -slope * np.clip(t, 0.0, None)
    spinous = (ax <= 0.5 * wall) & (t >= -1.0) & (t <= length * f) & (np.abs(w - w_axis) <= blade * half_h + 2.0)
    reach, sweep = _TRANSVERSE[region]
    lateral = np.clip((ax - rc) / max(a + reach * f - rc, 1e-3), 0.0, 1.0)
    transverse = (
        (ax >= rc)
        & (ax <= a + reach * f)
        & (np.abs(v - sweep * f * lateral) <= 0.5 * wall + 1.0)
        & (np.abs(w) <= 0.35 * half_h + 1.0)
    )
    return pedicles | laminae | pillars | spinous | transverse


def paint_ribs(cv: Canvas) -> None:
    """Twelve pairs of ribs (T1–T12) along the rib-cage outline, the sternum, clavicles and scapulae."""
    g, pat = cv.grid, cv.pat
    _, _, centres = level_centres()
    names = [r[0] for r in VERTEBRAE]
    i_t1, i_t12 = names.index("T1"), names.index("T12")
    s_lo, s_hi = float(centres[i_t1]) - 10.0, float(centres[i_t12]) + 110.0
    k = RIBCAGE_KNOTS
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
    r_mean = 0.5 * (a + b)
    depth = (rho - 1.0) * r_mean  # mm outward from the inner surface of the rib cage
    ring = (depth >= 0.0) & (depth <= thick)
    theta = np.arctan2(np.abs(ux), uy)  # 0 posterior, π anterior
    # Ribs fall ≈ 70 mm from their vertebra to their anterior end (assumption, typical rib obliquity).
    s_back = s - 70.0 * (1.0 - np.cos(theta)) / 2.0
    lvl = np.interp(s_back, centres, np.arange(len(centres), dtype=np.float64))
    nearest = np.rint(lvl)
    # Distance (mm) from the rib's mid-line along the body axis: level fraction × that level's height.
    heights = np.array([r[1] for r in VERTEBRAE]) * pat.stature
    off_mm = np.abs(lvl - nearest) * np.interp(lvl, np.arange(len(heights), dtype=np.float64), heights)
    half_band = 0.27 * np.interp(lvl, np.arange(len(heights), dtype=np.float64), heights)
    band = off_mm <= half_band
    rib_no = nearest - i_t1 + 1  # 1 … 12
    # Anterior end of each rib (angle from posterior): 1–7 reach the sternum through cartilage, 8–10 the costal
    # margin, 11–12 float.
    end = np.where(rib_no <= 7, math.pi - 0.35, np.where(rib_no <= 10, math.pi - 0.9 + 0.1 * (10 - rib_no), 1.7))
    ribs = ring & band & (rib_no >= 1) & (rib_no <= 12) & (theta <= end) & (np.abs(x) > 22.0 * pat.frame)
    ribs &= cv.allowed(sl, (SOFT,))
    # A flat tube: cortical shell around a marrow core (ribs hold red marrow), where the rib is thick enough.
    shell = _cortex_mm(g)
    core = ribs & (depth >= shell) & (depth <= thick - shell) & (off_mm <= half_band - shell)
    cv.paint(sl, ribs & ~core, BONE, pat.cortical_hu)
    cv.paint(sl, core, MARROW, pat.marrow_hu)
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
        bone_tube(cv, "thorax", [a_cl, b_cl], [7.0 * pat.frame, 7.0 * pat.frame])
        # Scapula: a plate on the postero-lateral rib cage, tangent to it (≈ 40° from the coronal plane).
        c = pat.p(side * 100.0, 76.0, float(centres[names.index("T4")]))
        got = cv.solid(c, pat.axes(42.0, 5.0, 75.0), rot_z(-side * 40.0))
        if got is not None:
            ssl, q = got
            m = (q <= 1.0) & cv.allowed(ssl, (SOFT,))
            cv.paint(ssl, m, BONE, 0.6 * pat.cortical_hu + 0.4 * pat.marrow_hu)
            cv.record_bone("thorax", ssl, m)


def _bone_slab(cv: Canvas, group: str, pts: Sequence[Sequence[float]], half_width: float, half_depth: float) -> None:
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
    ok = cv.allowed(sl, (SOFT,))
    slab = np.broadcast_to(slab, ok.shape) & ok
    marrow = slab & inner
    cv.paint(sl, slab & ~marrow, BONE, cv.pat.cortical_hu)
    cv.paint(sl, marrow, MARROW, cv.pat.marrow_hu)
    cv.record_bone(group, sl, slab)


def _bone_shell(cv: Canvas, group: str, sl: Slices, q: Any, mid_radius_mm: float, thick_mm: float, keep: Any) -> None:
    """Paint |q − 1|·R ≤ thick/2 (bone) with a marrow core, restricted to `keep`."""
    dist = np.abs(q - 1.0) * mid_radius_mm
    ok = cv.allowed(sl, (SOFT,))
    plate = (dist <= 0.5 * thick_mm) & keep & ok
    marrow = plate & (dist <= 0.5 * thick_mm - _cortex_mm(cv.grid))
    cv.paint(sl, plate & ~marrow, BONE, cv.pat.cortical_hu)
    cv.paint(sl, marrow, MARROW, cv.pat.marrow_hu)
    cv.record_bone(group, sl, plate)


def _paint_iliac_wings(cv: Canvas, s_crest: float, s_low: float) -> None:
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


def _paint_sacrum(cv: Canvas, s_top: float) -> None:
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
    yc = f * spine_y(s) + 5.0 * f
    rho = np.sqrt((x / a_lat) ** 2 + ((y - yc) / b_ap) ** 2)
    inside = (rho <= 1.0) & (s >= s_top) & (s <= s_bot)
    ok = cv.allowed(sl, (SOFT,))
    bone = inside & ok
    marrow = bone & (rho <= 1.0 - _cortex_mm(g) / b_ap)
    cv.paint(sl, bone & ~marrow, BONE, pat.cortical_hu)
    cv.paint(sl, marrow, MARROW, pat.marrow_hu)
    cv.record_bone("pelvis", sl, bone)


def paint_pelvis_femora(cv: Canvas, s_l5: float) -> dict[str, tuple[float, float, float]]:
    """Iliac wings, acetabula, pubic and ischial rami and femora; returns landmarks (femoral heads, symphysis)."""
    g, pat = cv.grid, cv.pat
    crest = s_l5 - 50.0  # iliac crest at the L4 level
    s_fh = s_l5 + 130.0  # femoral heads
    marks: dict[str, tuple[float, float, float]] = {}
    _paint_iliac_wings(cv, crest, s_fh - 25.0)
    s_sacrum = s_l5 + 3.0
    for side in (-1.0, 1.0):
        # Posterior ilium: from the crest's back end over the sacro-iliac joint (S1–S3, against the sacrum's
        # lateral edge) to the posterior superior iliac spine (assumption on the exact course).
        bone_tube(
            cv,
            "pelvis",
            [
                pat.p(side * 42.0, 50.0, crest + 20.0),
                pat.p(side * 52.0, 58.0, s_sacrum + 30.0),
                pat.p(side * 44.0, 52.0, s_sacrum + 75.0),
            ],
            [10.0 * pat.frame, 13.0 * pat.frame, 8.0 * pat.frame],
        )
        # Body of the ilium above the acetabulum: the thick column joining the wing to the acetabular roof.
        bone_tube(
            cv,
            "pelvis",
            [pat.p(side * 100.0, -5.0, s_fh - 75.0), pat.p(side * 86.0, 5.0, s_fh - 28.0)],
            [9.0 * pat.frame, 15.0 * pat.frame],
        )
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
        bone_tube(
            cv,
            "pelvis",
            [pat.p(side * 75.0, -20.0, s_fh + 5.0), pat.p(side * 14.0, -68.0, s_fh + 25.0)],
            [10.0 * pat.frame, 9.0 * pat.frame],
        )
        bone_tube(
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
        bone_tube(cv, "femur", [fh, pat.p(side * 125.0, 10.0, s_fh + 30.0)], [24.0 * pat.frame, 17.0 * pat.frame])
        bone_tube(
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


def paint_skull(cv: Canvas) -> None:
    """Skull vault with the brain inside (almost no uptake) and the mandible."""
    g, pat = cv.grid, cv.pat
    c = pat.p(0.0, -2.0, 110.0)
    got = cv.solid(c, pat.axes(69.0, 88.0, 106.0), np.eye(3), margin=1.1)
    if got is not None:
        sl, q = got
        _, y, z = g.coords(sl)
        s = pat.s_of_z(z)
        vault = (s <= 85.0) | ((y > -30.0 * pat.frame) & (s <= 175.0))
        # Brain: inside the vault, almost no uptake.
        brain = (q <= 1.0 - 4.0 / 80.0) & vault & (s <= 150.0) & cv.allowed(sl, (SOFT,))
        cv.paint(sl, brain, SOFT, 35.0, PROFILE_BRAIN)
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
        bone_tube(
            cv,
            "skull",
            [pat.p(side * 47.0, -18.0, 218.0), pat.p(side * 50.0, 8.0, 150.0)],
            [6.0 * pat.frame, 6.0 * pat.frame],
        )
