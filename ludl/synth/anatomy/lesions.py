"""Lesion placement: bone, lymph-node chain and liver sites, exact volumes, necrotic cores."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.synth.anatomy.canvas import Q_MAX_TRIES, Canvas
from ludl.synth.anatomy.solids import Lobes, random_rotation, take_connected
from ludl.synth.anatomy.spec import (
    ANATOMY_LABELS,
    BONE,
    BOWEL,
    LESION_LABEL_BASE,
    MARROW,
    RED,
    SKELETON,
    SOFT,
    AnatomySpec,
    FloatArray,
)
from ludl.synth.fields import gaussian_random_field
from ludl.synth.kinetics import Lesions

__all__ = [
    "bone_lesion_hu",
    "place_lesions",
]

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


# CT appearance of bone metastases of prostate cancer: predominantly osteoblastic (sclerotic), some mixed and
# some lytic (assumption on the shares). Sclerotic bone adds HU to the host bone in blotches; lytic bone is
# replaced by soft tissue (HU ranges: assumption, typical CT values of sclerotic foci and tumour soft tissue).
_BONE_LESION_TYPES: Mapping[str, float] = {"sclerotic": 0.6, "mixed": 0.25, "lytic": 0.15}
_SCLEROTIC_EXTRA_HU = (150.0, 600.0)
_LYTIC_HU = (25.0, 60.0)
# Irregular outlines: lobes (Legendre surface modes) and small-scale roughness, as SDs of the radius factor.
_LOBE_AMPLITUDE = 0.18
_ROUGHNESS = 0.18


def bone_lesion_hu(
    rng: np.random.Generator, host_hu: FloatArray, in_bone: npt.NDArray[np.bool_], field: FloatArray
) -> tuple[str, FloatArray]:
    """CT numbers of a bone metastasis: its type and HU from the host bone HU and a unit random field.

    Outside the bone (a soft-tissue extension) the lesion is soft tissue (45 HU).
    """
    kinds = list(_BONE_LESION_TYPES)
    p = np.array([_BONE_LESION_TYPES[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    extra = rng.uniform(*_SCLEROTIC_EXTRA_HU)
    lytic = rng.uniform(*_LYTIC_HU)
    sclerotic = host_hu + extra * np.clip(0.6 + 0.5 * field, 0.1, None)
    soft = lytic + 12.0 * field
    if kind == "sclerotic":
        hu = sclerotic
    elif kind == "lytic":
        hu = soft
    else:
        hu = np.where(field > 0.0, sclerotic, soft)
    return kind, np.where(in_bone, hu, 45.0 + 8.0 * field).astype(np.float64)


@dataclass
class _Placed:
    centres: list[FloatArray]
    radii: list[float]


def _site_candidates(cv: Canvas, site: str, s_l5: float, r0: float, placed: _Placed) -> list[FloatArray]:
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
            np.argwhere(cv.labels == ANATOMY_LABELS["liver"]) if (cv.labels == ANATOMY_LABELS["liver"]).any() else None
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
            if np.all(idx >= 0) and np.all(idx < np.array(g.shape)) and cv.labels[tuple(idx)] == SOFT:
                out.append(world)
            if len(out) >= 8:
                break
    return out


def _candidate_score(cv: Canvas, c: FloatArray, r0: float, placed: _Placed, allowed: Sequence[int]) -> float:
    """Free room around a candidate centre: allowed share of its box plus distance to other lesions (≤ 1 each)."""
    sl = cv.grid.around(c, (r0, r0, r0))
    free = float(cv.allowed(sl, allowed).mean()) if sl is not None else 0.0
    return free + min(_clearance(c, r0, placed) / max(r0, 1.0), 1.0)


def _clearance(c: FloatArray, r: float, placed: _Placed) -> float:
    if not placed.centres:
        return math.inf
    d = np.linalg.norm(np.asarray(placed.centres) - c, axis=1) - np.asarray(placed.radii) - r
    return float(d.min())


def place_lesions(
    cv: Canvas, lesions: Lesions, s_l5: float, spec: AnatomySpec
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
    skeleton = (BONE, MARROW, RED)
    tries_by_site: dict[str, list[tuple[float, tuple[int, ...]]]] = {
        "bone": [(1.2, skeleton), (1.7, skeleton), (1.7, (*skeleton, SOFT))],
        "lymph_node": [(q, (SOFT, BOWEL)) for q in Q_MAX_TRIES],
        "liver": [(q, (ANATOMY_LABELS["liver"],)) for q in Q_MAX_TRIES],
    }
    soft_tries = [(q, (SOFT,)) for q in Q_MAX_TRIES]
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
            body = np.argwhere(cv.labels[::4, ::4, ::4] == SOFT) * 4
            zyx = body[int(rng.integers(len(body)))]
            cands = [np.array(g.origin_xyz) + np.array(g.spacing[::-1]) * zyx[::-1]]
        centre = max(cands, key=lambda c: _candidate_score(cv, c, r0, placed, tries[0][1]))
        axes = r0 * np.exp(0.15 * rng.standard_normal(3))
        axes *= r0 / math.prod(axes) ** (1.0 / 3.0)
        rot = random_rotation(rng)
        lobes = Lobes.random(rng, _LOBE_AMPLITUDE)
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
            q = q * (1.0 + _ROUGHNESS * noise)
            mask = take_connected(q, cv.allowed(sl, allowed), n_vox, q_max)
            if mask.sum() >= n_vox:
                break
        if got is None:
            continue
        prev = cv.labels[sl].copy()
        kind = site
        if site == "bone":
            field = gaussian_random_field(rng, prev.shape, g.spacing, 2.5)
            kind, hu = bone_lesion_hu(
                rng, cv.hu[sl].astype(np.float64), np.isin(prev, SKELETON), field.astype(np.float64)
            )
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
        info[i] = {"slices": sl, "mask": mask, "core": core, "q": np.where(mask, q, np.nan), "kind": kind}
    return realised, info
