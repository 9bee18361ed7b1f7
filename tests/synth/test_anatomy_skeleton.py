"""The procedural skeleton on a seeded population: ribs, vertebral arches, pelvic ring, cortex vs cancellous bone.

Expected values are anatomy (which levels carry ribs, the vertebral canal between body and arch, a closed and
bilateral pelvic ring) and textbook CT numbers (cortical shells far denser than cancellous bone), not outputs of
the generator. The generator's own level table only locates the levels (the coordinate system of the assertions).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ludl.synth.anatomy import Anatomy, AnatomySpec, make_anatomy
from ludl.synth.anatomy.reference import VERTEBRAE
from ludl.synth.anatomy.skeleton import level_centres
from ludl.synth.kinetics import Lesions

# The demo preset's truth grid (torso crop, 3 mm) and three lesion-free patients.
DEMO = AnatomySpec((192, 128, 128), (3.0, 3.0, 3.0), "torso")
SEEDS = (1, 2, 3)
_NAMES = [r[0] for r in VERTEBRAE]


@pytest.fixture(scope="module")
def population() -> list[Anatomy]:
    none = Lesions(volumes_ml=np.zeros(0), sites=())
    return [make_anatomy(np.random.default_rng(seed), DEMO, none) for seed in SEEDS]


def _axes(a: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x (patient left +), y (posterior +), z (superior +) of the array axes."""
    (x0, y0, z0), (dz, dy, dx) = a.labels.origin_xyz_mm, a.labels.spacing_zyx_mm
    nz, ny, nx = a.labels.shape
    return x0 + dx * np.arange(nx), y0 + dy * np.arange(ny), z0 + dz * np.arange(nz)


def _level_z(a: Anatomy, name: str) -> float:
    """World z of the centre of vertebra `name` (reference level table scaled by the patient's stature)."""
    _, _, centres = level_centres()
    return float(a.landmarks_xyz_mm["vertex"][2] - a.meta["stature"] * centres[_NAMES.index(name)])


def _slab(a: Anatomy, z_mm: float) -> int | None:
    _, _, z = _axes(a)
    k = int(np.argmin(np.abs(z - z_mm)))
    return k if abs(z[k] - z_mm) <= a.labels.spacing_zyx_mm[0] else None


def _skeleton(a: Anatomy) -> np.ndarray:
    lv = a.label_values
    return np.isin(a.labels.array, [lv["bone"], lv["marrow_other"], lv["red_marrow"]])


def test_ribs_at_every_thoracic_level_and_none_at_mid_lumbar(population: list[Anatomy]) -> None:
    # Twelve rib pairs leave T1–T12; the lowest (floating) ribs end above the L2 level and the iliac crests lie
    # at L4. Lateral bone (|x| ≥ 60 mm, beyond every transverse process) in an axial slice is rib there (the torso
    # crop has the arms raised).
    for a in population:
        x, _, _ = _axes(a)
        skel = _skeleton(a)
        seen = 0
        for name in [f"T{i}" for i in range(3, 11)]:
            k = _slab(a, _level_z(a, name))
            if k is None:
                continue
            seen += 1
            lateral = skel[k][:, np.abs(x) >= 60.0]
            xs = x[np.abs(x) >= 60.0]
            assert lateral[:, xs > 0].any() and lateral[:, xs < 0].any(), (name, "ribs on both sides")
        assert seen >= 5  # the demo crop holds most of the thoracic spine
        for name in ("L2", "L3"):  # (the iliac crests reach up to L4)
            k = _slab(a, _level_z(a, name))
            assert k is not None
            assert not skel[k][:, np.abs(x) >= 60.0].any(), (name, "no ribs below the costal margin")


def test_vertebral_arch_behind_the_body_with_the_canal_between(population: list[Anatomy]) -> None:
    # Midline AP profile through each lumbar and lower thoracic vertebra: body, then the spinal canal (normal AP
    # diameter 12–25 mm, stenosis < 10 mm), then laminae and spinous process (lumbar vertebrae are 65–90 mm from
    # the front of the body to the spinous tip, bodies 25–40 mm deep).
    for a in population:
        x, y, _ = _axes(a)
        skel, hu = _skeleton(a), a.hu.array
        mid = int(np.argmin(np.abs(x)))
        for name in ("T8", "T10", "T12", "L1", "L2", "L3", "L4", "L5"):
            k = _slab(a, _level_z(a, name))
            if k is None:
                continue
            col = skel[k, :, mid - 1 : mid + 2].any(axis=1)
            lab, n = ndimage.label(col)
            assert n >= 2, (name, "body and arch are separate runs along AP")
            # The sternum lies far in front (y < −30 mm); the first run behind it is the vertebral body.
            runs = sorted((y[lab == i] for i in range(1, n + 1)), key=lambda r: float(r.min()))
            runs = [r for r in runs if r.min() > -30.0]
            body = runs[0]
            behind = [r for r in runs if r.min() > body.max()]
            assert behind, (name, "bone behind the body")
            canal_mm = float(behind[0].min() - body.max()) - a.labels.spacing_zyx_mm[1]
            assert 10.0 <= canal_mm <= 25.0, (name, canal_mm)
            depth_mm = float(body.max() - body.min())
            assert 20.0 <= depth_mm <= 45.0, (name, depth_mm)
            reach_mm = float(max(r.max() for r in behind) - body.max())
            # Lumbar spinous processes run straight back; thoracic ones slope down, so an axial slice through the
            # body may show only the laminae and the root of the process.
            assert (35.0 if name[0] == "L" else 20.0) <= reach_mm <= 70.0, (name, reach_mm)
            # The canal holds soft tissue (cord and CSF), not bone or air.
            gap = (y > body.max()) & (y < behind[0].min())
            assert np.all(np.abs(hu[k, gap, mid]) < 150.0), name


def test_pelvic_ring_is_closed_and_bilateral(population: list[Anatomy]) -> None:
    for a in population:
        x, y, z = _axes(a)
        skel = _skeleton(a)
        fh_l, fh_r = (np.asarray(a.landmarks_xyz_mm[f"femoral_head_{s}"]) for s in ("left", "right"))
        z_top = _level_z(a, "L5") - 20.0  # just below L5: the sacrum and the iliac wings
        z_bottom = min(fh_l[2], fh_r[2]) - 10.0
        ks = np.flatnonzero((z >= z_bottom) & (z <= z_top))
        pelvis = skel[ks]
        # Bilateral: bone volume on either side of the midline within 15 %, each wing reaching ≥ 100 mm out
        # (adult intercristal width ≈ 250–300 mm).
        left, right = pelvis[:, :, x > 0].sum(), pelvis[:, :, x < 0].sum()
        assert 0.85 <= left / right <= 1.15, (left, right)
        cols = np.flatnonzero(pelvis.any(axis=(0, 1)))
        assert x[cols].max() >= 100.0 and x[cols].min() <= -100.0
        # Closed: the sacrum, both sacro-iliac joints, the iliac bodies and both acetabula are one bone in the
        # slab; the acetabula lie within 40 mm of the femoral head centres (head radius ≈ 24 mm plus joint).
        lab, _ = ndimage.label(pelvis)
        zz, yy, xx = np.meshgrid(z[ks], y, x, indexing="ij")
        sacrum = lab[(np.abs(xx) <= 6.0) & pelvis & (zz <= z_top - 25.0) & (zz >= z_top - 45.0)]
        assert sacrum.size > 0
        ring = np.bincount(sacrum[sacrum > 0]).argmax()
        for fh in (fh_l, fh_r):
            near = (xx - fh[0]) ** 2 + (yy - fh[1]) ** 2 + (zz - fh[2]) ** 2 <= 40.0**2
            assert np.any(lab[near] == ring), ("acetabulum joined to the sacrum through the ilium", fh)


def test_cortical_rim_denser_than_cancellous_bone(population: list[Anatomy]) -> None:
    # Textbook CT numbers: cancellous vertebral bone of elderly men 100–300 HU, cortical bone > 1000 HU (seen as
    # 400–1200 HU in a one-voxel shell by partial volume). Vertebral bodies (L2–L4) and ribs both show the rim.
    for a in population:
        hu, lab, lv = a.hu.array, a.labels.array, a.label_values
        red = lab == lv["red_marrow"]
        rim = ndimage.binary_dilation(red) & (lab == lv["bone"])
        assert rim.sum() > 100
        assert 100.0 <= float(np.median(hu[red])) <= 300.0
        assert float(np.mean(hu[rim])) >= max(400.0, float(np.mean(hu[red])) + 250.0)
        x, _, _ = _axes(a)
        k = _slab(a, _level_z(a, "T7"))
        assert k is not None
        lateral = np.abs(x) >= 60.0
        rib_bone = lab[k][:, lateral] == lv["bone"]
        rib_core = lab[k][:, lateral] == lv["marrow_other"]
        assert rib_core.sum() >= 2, "ribs carry a marrow core"
        assert float(hu[k][:, lateral][rib_bone].mean()) >= float(hu[k][:, lateral][rib_core].mean()) + 250.0
