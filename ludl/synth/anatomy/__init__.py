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

Modules, in painting order: `spec` (labels, `AnatomySpec`, `Anatomy`), `solids` (grid and shape functions),
`reference` (the reference male, per-patient factors), `canvas`, `body`, `skeleton`, `organs`, `lesions`,
`textures` (heterogeneity fields) and `build` (`make_anatomy`).
"""

from __future__ import annotations

from ludl.synth.anatomy.build import make_anatomy
from ludl.synth.anatomy.spec import ANATOMY_LABELS, LESION_LABEL_BASE, TISSUE_LABELS, Anatomy, AnatomySpec

__all__ = [
    "ANATOMY_LABELS",
    "LESION_LABEL_BASE",
    "TISSUE_LABELS",
    "Anatomy",
    "AnatomySpec",
    "make_anatomy",
]
