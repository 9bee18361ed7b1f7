"""Assembly of one patient's anatomy: the truth grid on the patient, painting order, landmarks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ludl.errors import InputError
from ludl.imaging.volume import Volume
from ludl.io.regions import lesion_name
from ludl.physics.dose import density_from_hu
from ludl.synth.anatomy.body import arm_line, paint_body
from ludl.synth.anatomy.canvas import Canvas
from ludl.synth.anatomy.lesions import place_lesions
from ludl.synth.anatomy.organs import paint_abdomen, paint_head_glands, paint_thorax
from ludl.synth.anatomy.reference import VERTEBRAE, PatientShape, sample_patient_shape
from ludl.synth.anatomy.skeleton import (
    level_centres,
    paint_pelvis_femora,
    paint_ribs,
    paint_skull,
    paint_spine,
    spine_y,
)
from ludl.synth.anatomy.solids import Grid
from ludl.synth.anatomy.spec import (
    ANATOMY_LABELS,
    F32,
    LESION_LABEL_BASE,
    Anatomy,
    AnatomySpec,
    BoolArray,
    Slices,
)
from ludl.synth.anatomy.textures import heterogeneity_fields
from ludl.synth.anatomy.tissue_hu import add_diffuse_marrow_sclerosis, add_tissue_texture
from ludl.synth.kinetics import Lesions

__all__ = [
    "make_anatomy",
]


def _place_grid(spec: AnatomySpec, pat: PatientShape, rng: np.random.Generator, s_l4_bottom: float) -> Grid:
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
    return Grid((nz, ny, nx), (dz, dy, dx), (x0, y0, z0))


def _density(hu: F32) -> F32:
    """`density_from_hu` slab by slab (it works in float64; slabs keep that cache-sized), as float32."""
    out = np.empty(hu.shape, dtype=np.float32)
    step = max(1, 1_000_000 // max(1, hu.shape[1] * hu.shape[2]))
    for k in range(0, hu.shape[0], step):
        out[k : k + step] = density_from_hu(hu[k : k + step])
    return out


def _injection_site(pat: PatientShape, rng: np.random.Generator, arms_down: bool) -> tuple[float, float, float]:
    """Injection site on a random arm (world mm); outside the grid when the arms are raised."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    if arms_down:
        pts, _ = arm_line(pat, side)
        return (pts[2][0], pts[2][1] - 10.0, pts[2][2])
    return pat.p(side * 120.0, 0.0, -250.0)  # arms raised above the head: outside the grid


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
    pat = sample_patient_shape(rng)
    _, bots, _ = level_centres()
    names = [r[0] for r in VERTEBRAE]
    grid = _place_grid(spec, pat, rng, float(bots[names.index("L4")]))
    cv = Canvas(grid, pat, rng)
    arms_down = spec.arms == "down" or (spec.arms == "auto" and spec.extent == "whole_body")
    paint_body(cv, arms_down)
    levels = paint_spine(cv)
    s_l5 = levels["l5_bottom"]
    paint_ribs(cv)
    pelvis_marks = paint_pelvis_femora(cv, s_l5)
    paint_skull(cv)
    thorax_marks = paint_thorax(cv)
    kidneys: dict[str, tuple[Slices, BoolArray, Any]] = {}
    abdomen_marks = paint_abdomen(cv, s_l5, kidneys)
    paint_head_glands(cv)
    realised, lesion_info = place_lesions(cv, lesions, s_l5, spec)
    if lesions.diffuse_marrow:
        add_diffuse_marrow_sclerosis(cv)
    add_tissue_texture(cv)
    uptake, shift, pet, cortex = heterogeneity_fields(cv, spec, lesion_info, kidneys)

    present = np.flatnonzero(np.bincount(cv.labels.ravel().astype(np.intp)))
    label_values = {n: v for n, v in ANATOMY_LABELS.items() if v in present}
    for i in range(lesions.n):
        label_values[lesion_name(i + 1)] = LESION_LABEL_BASE + i + 1
    vol_kw: dict[str, Any] = {"spacing_zyx_mm": grid.spacing, "origin_xyz_mm": grid.origin_xyz}
    labels = Volume(cv.labels, unit="label", **vol_kw)
    hu = Volume(cv.hu, unit="HU", **vol_kw)
    density = Volume(_density(cv.hu), unit="g/mL", **vol_kw)
    injection = _injection_site(pat, rng, arms_down)
    marks = {
        "vertex": pat.p(0.0, 0.0, 0.0),
        "l2_top": pat.p(0.0, float(spine_y(levels["l2_top"])), levels["l2_top"]),
        "l4_bottom": pat.p(0.0, float(spine_y(levels["l4_bottom"])), levels["l4_bottom"]),
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
