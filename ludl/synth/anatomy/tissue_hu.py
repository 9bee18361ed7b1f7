"""CT texture of the truth: within-tissue HU heterogeneity by tissue class, and diffuse marrow involvement.

The painters give every tissue one CT number per patient (fat, muscle, liver …); real tissue is not uniform.
A smooth random field (2 mm correlation) scaled per tissue class adds the within-tissue spread of a
non-contrast CT before any scanner noise (the scanner's low-dose noise is added by `imaging.ct`). SDs are
assumptions sized to typical non-contrast CT: soft tissues vary by 5–10 HU, fat by ≈ 10 HU, aerated lung by tens
of HU (vessels, airways, gravity), trabecular bone by tens of HU, cortical shells by ≈ 100 HU.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from ludl.synth.anatomy.canvas import Canvas
from ludl.synth.anatomy.spec import ANATOMY_LABELS, LESION_LABEL_BASE, MARROW, RED
from ludl.synth.fields import gaussian_random_field

__all__ = [
    "DIFFUSE_MARROW_EXTRA_HU",
    "TISSUE_TEXTURE_SD_HU",
    "add_diffuse_marrow_sclerosis",
    "add_tissue_texture",
]

# Within-tissue HU SD by anatomy label (assumption, see the module docstring); lesions 12 HU.
TISSUE_TEXTURE_SD_HU: Mapping[str, float] = MappingProxyType(
    {
        "rest_of_body": 10.0,  # muscle and fat
        "lung": 40.0,
        "bone": 100.0,
        "marrow_other": 35.0,
        "red_marrow": 35.0,
        "bowel": 10.0,
        "blood_pool": 5.0,
        "kidney_left": 8.0,
        "kidney_right": 8.0,
        "liver": 6.0,
        "spleen": 5.0,
        "parotid_left": 10.0,
        "parotid_right": 10.0,
        "submandibular_left": 8.0,
        "submandibular_right": 8.0,
        "lacrimal_left": 8.0,
        "lacrimal_right": 8.0,
        "bladder": 4.0,
    }
)
_LESION_TEXTURE_SD_HU = 12.0
_TEXTURE_CORRELATION_MM = 2.0
# Diffuse marrow involvement: patchy sclerosis of the trabecular bone (assumption: up to a few hundred HU).
DIFFUSE_MARROW_EXTRA_HU = (80.0, 300.0)


def add_tissue_texture(cv: Canvas) -> None:
    """Add the within-tissue HU texture to the canvas's CT (in place); air stays −1000 HU."""
    lut = np.zeros(max(int(cv.labels.max()) + 1, LESION_LABEL_BASE + 1), dtype=np.float32)
    for name, sd in TISSUE_TEXTURE_SD_HU.items():
        lut[ANATOMY_LABELS[name]] = sd
    lut[LESION_LABEL_BASE + 1 :] = _LESION_TEXTURE_SD_HU
    sd_map = lut[cv.labels]
    field = gaussian_random_field(cv.rng, cv.labels.shape, cv.grid.spacing, _TEXTURE_CORRELATION_MM)
    cv.hu += sd_map * field


def add_diffuse_marrow_sclerosis(cv: Canvas) -> None:
    """Patchy sclerosis through the marrow (diffuse involvement): HU raised in blotches of ≈ 5 mm."""
    marrow = np.isin(cv.labels, (MARROW, RED))
    if not marrow.any():
        return
    extra = float(cv.rng.uniform(*DIFFUSE_MARROW_EXTRA_HU))
    field = gaussian_random_field(cv.rng, cv.labels.shape, cv.grid.spacing, 5.0)
    cv.hu[marrow] += extra * np.clip(field[marrow], 0.0, None).astype(np.float32)
