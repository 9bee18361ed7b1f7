"""Organs and vessels: thorax (lungs, heart), abdomen (kidneys, liver, spleen, stomach, bladder), bowel, head glands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ludl.synth.anatomy.canvas import Canvas
from ludl.synth.anatomy.reference import RIBCAGE_KNOTS, PatientShape
from ludl.synth.anatomy.solids import Lobes, rot_x, rot_y, rot_z, tube_segments
from ludl.synth.anatomy.spec import ANATOMY_LABELS, BLOOD, BOWEL, LUNG, PROFILE_FAT, SOFT, BoolArray, Slices
from ludl.synth.fields import gaussian_random_field

__all__ = [
    "paint_abdomen",
    "paint_head_glands",
    "paint_thorax",
]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, hi))


def _jitter(rng: np.random.Generator, x: float, y: float, s: float, mm: float) -> tuple[float, float, float]:
    d = mm * rng.standard_normal(3)
    return (x + float(d[0]), y + float(d[1]), s + float(d[2]))


def paint_thorax(cv: Canvas) -> dict[str, tuple[float, float, float]]:
    """Lungs under the diaphragm domes and the heart; returns landmarks (``heart``)."""
    g, pat, rng = cv.grid, cv.pat, cv.rng
    lung_hu = float(rng.uniform(-860.0, -780.0))
    k = RIBCAGE_KNOTS
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
        lung = (q <= 1.0) & inside_cage & above & ~mediast & (side * x > 0) & cv.allowed(sl, (SOFT,))
        cv.paint(sl, lung, LUNG, lung_hu)
    # Trachea and main bronchi (air; labelled lung).
    tr = [pat.p(0.0, -30.0, 215.0), pat.p(0.0, -5.0, 330.0), pat.p(0.0, 12.0, 372.0)]
    _paint_tube(cv, LUNG, -950.0, tr, [9.0 * pat.frame] * 3, (SOFT,))
    for side in (-1.0, 1.0):
        _paint_tube(cv, LUNG, -950.0, [tr[-1], pat.p(side * 45.0, 22.0, 395.0)], [6.5 * pat.frame] * 2, (SOFT, LUNG))
    # Heart (chambers and myocardium: blood pool), long axis to the left, front and down.
    heart_c = pat.p(*_jitter(rng, 22.0, -28.0, 425.0, 5.0))
    rot = rot_z(-35.0) @ rot_y(40.0)
    cv.organ(
        BLOOD,
        40.0,
        _lognormal(rng, 650.0, 0.12, 480.0, 900.0),
        heart_c,
        pat.axes(48.0, 45.0, 65.0),
        rot,
        (SOFT, LUNG),
        lobes=Lobes.random(rng, 0.04),
    )
    return {"heart": heart_c}


def _paint_tube(
    cv: Canvas, label: int, hu: float, pts: Sequence[Sequence[float]], radii: Sequence[float], allowed: Sequence[int]
) -> None:
    for sl, q, _ in tube_segments(cv.grid, pts, radii):
        cv.paint(sl, (q <= 1.0) & cv.allowed(sl, allowed), label, hu)


def _vessels(pat: PatientShape, s_l5: float) -> dict[str, tuple[list[tuple[float, float, float]], list[float]]]:
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


def _paint_kidneys(
    cv: Canvas, kidneys: dict[str, tuple[Slices, BoolArray, Any]], marks: dict[str, tuple[float, float, float]]
) -> None:
    """Kidneys: cortex + medulla; tilted (upper pole medial and posterior), hilum facing antero-medially."""
    pat, rng = cv.pat, cv.rng
    v_common = 0.08 * rng.standard_normal()
    for side, name in ((1.0, "kidney_left"), (-1.0, "kidney_right")):
        v = float(np.clip(150.0 * math.exp(v_common + 0.06 * rng.standard_normal()), 125.0, 195.0))
        c = pat.p(*_jitter(rng, side * 75.0, 48.0, 600.0 if side > 0 else 612.0, 5.0))
        rot = rot_y(side * 12.0) @ rot_x(-12.0) @ rot_z(side * 30.0)
        medial = rot.T @ np.array([-side, 0.0, 0.0])
        lobes = Lobes.random(rng, 0.04, n=3)
        lobes = Lobes(lobes.amplitudes, lobes.degrees, lobes.directions, medial, 0.3)
        got = cv.organ(ANATOMY_LABELS[name], 32.0, v, c, pat.axes(30.0, 23.0, 55.0), rot, (SOFT,), lobes=lobes)
        if got is not None:
            kidneys[name] = got
        marks[name] = c


def paint_abdomen(
    cv: Canvas, s_l5: float, kidneys: dict[str, tuple[Slices, BoolArray, Any]]
) -> dict[str, tuple[float, float, float]]:
    """Vessels, kidneys (their box, mask and shape function go into `kidneys`), liver, spleen, GI, bladder."""
    g, pat, rng = cv.grid, cv.pat, cv.rng
    soft = (SOFT,)
    marks: dict[str, tuple[float, float, float]] = {}
    for pts, radii in _vessels(pat, s_l5).values():
        _paint_tube(cv, BLOOD, 40.0, pts, radii, (SOFT, LUNG))
    _paint_kidneys(cv, kidneys, marks)
    # Liver: a cut ellipsoid under the right dome, thinning towards the left lobe.
    c = pat.p(*_jitter(rng, -55.0, 5.0, 532.0, 6.0))
    cv.organ(
        ANATOMY_LABELS["liver"],
        float(rng.uniform(50.0, 65.0)),
        _lognormal(rng, 1600.0, 0.12, 1300.0, 1950.0),
        c,
        pat.axes(105.0, 85.0, 82.0),
        rot_y(-10.0),
        soft,
        lobes=Lobes.random(rng, 0.04),
        cuts=[((0.55, 0.0, -0.6), 0.55), ((0.0, -0.3, -0.9), 0.7)],
    )
    marks["liver"] = c
    # Spleen: left, posterior, long axis along the 10th rib.
    c = pat.p(*_jitter(rng, 92.0, 42.0, 545.0, 6.0))
    cv.organ(
        ANATOMY_LABELS["spleen"],
        45.0,
        _lognormal(rng, 160.0, 0.2, 110.0, 240.0),
        c,
        pat.axes(24.0, 55.0, 45.0),
        rot_z(-35.0),
        soft,
        lobes=Lobes.random(rng, 0.05),
    )
    # Stomach (GI: bowel label), with a gas cap.
    c = pat.p(*_jitter(rng, 55.0, -30.0, 530.0, 6.0))
    got = cv.organ(
        BOWEL,
        20.0,
        _lognormal(rng, 300.0, 0.3, 150.0, 700.0),
        c,
        pat.axes(42.0, 35.0, 60.0),
        rot_y(25.0),
        soft,
        lobes=Lobes.random(rng, 0.06),
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
        ANATOMY_LABELS["bladder"],
        8.0,
        v_bl,
        c,
        pat.axes(50.0, 42.0, 40.0),
        np.eye(3),
        soft,
        lobes=Lobes.random(rng, 0.04),
    )
    marks["bladder"] = c
    _paint_bowel(cv, s_l5)
    return marks


def _paint_bowel(cv: Canvas, s_l5: float) -> None:
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
    for sl, q, _ in tube_segments(g, pts, radii):
        m = (q <= 1.0) & cv.allowed(sl, (SOFT,))
        gas_field = gaussian_random_field(rng, m.shape, g.spacing, 10.0)
        cv.paint(sl, m, BOWEL, 20.0)
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
    cav = (q <= 1.0) & cv.allowed(sl, (SOFT,)) & (cv.profile[sl] != PROFILE_FAT)
    loops = gaussian_random_field(rng, cav.shape, g.spacing, 7.0) > 0.0
    cv.paint(sl, cav & loops, BOWEL, 25.0)
    cv.paint(sl, cav & ~loops, SOFT, -90.0, PROFILE_FAT)


def paint_head_glands(cv: Canvas) -> None:
    """Parotid, submandibular and lacrimal glands, left and right, with a shared and an own volume factor."""
    pat, rng = cv.pat, cv.rng
    soft = (SOFT,)
    v_par = 0.07 * rng.standard_normal()
    v_sm = 0.08 * rng.standard_normal()
    v_lac = 0.12 * rng.standard_normal()
    for side, tag in ((1.0, "left"), (-1.0, "right")):
        # Parotid: lateral to the mandibular ramus, in front of the ear (ICRP 89: 50 g the pair).
        v = float(np.clip(25.0 * math.exp(v_par + 0.05 * rng.standard_normal()), 21.0, 33.0))
        cv.organ(
            ANATOMY_LABELS[f"parotid_{tag}"],
            float(rng.uniform(-20.0, 20.0)),
            v,
            pat.p(*_jitter(rng, side * 52.0, 8.0, 175.0, 3.0)),
            pat.axes(13.0, 20.0, 26.0),
            rot_z(side * 10.0),
            soft,
            lobes=Lobes.random(rng, 0.05),
        )
        v = float(np.clip(12.5 * math.exp(v_sm + 0.05 * rng.standard_normal()), 8.0, 18.0))
        cv.organ(
            ANATOMY_LABELS[f"submandibular_{tag}"],
            40.0,
            v,
            pat.p(*_jitter(rng, side * 36.0, -22.0, 222.0, 3.0)),
            pat.axes(13.0, 16.0, 12.0),
            np.eye(3),
            soft,
            lobes=Lobes.random(rng, 0.05),
        )
        # Lacrimal: supero-lateral in the orbit, ≈ 0.7 mL (Bukhari 2014 MRI volumes, as in the priors).
        v = float(np.clip(0.73 * math.exp(v_lac + 0.08 * rng.standard_normal()), 0.45, 1.1))
        cv.organ(
            ANATOMY_LABELS[f"lacrimal_{tag}"],
            40.0,
            v,
            pat.p(*_jitter(rng, side * 36.0, -70.0, 96.0, 1.5)),
            pat.axes(9.0, 5.0, 4.0),
            rot_z(side * 20.0),
            soft,
        )
