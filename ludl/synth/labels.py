"""Label values of the written label maps: the canonical class table for organs and red marrow, lesions above.

One table for the whole cohort (as `cohort.yaml` needs): organs and red marrow take their index in
`ludl.io.regions.SEGMENTATION_CLASSES`, lesion_NNN = `COHORT_LESION_LABEL_OFFSET` + NNN (individual lesions,
numbered in random order). The anatomy's own label values (`ludl.synth.anatomy.ANATOMY_LABELS`) are
generator-internal; `written_labels` maps them onto these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ludl.io.regions import SEGMENTATION_CLASSES, lesion_name

__all__ = ["COHORT_LESION_LABEL_OFFSET", "cohort_label_values", "written_labels"]

# lesion_001 → 101, …: above every class index, so a label map keeps each lesion apart.
COHORT_LESION_LABEL_OFFSET = 100


def cohort_label_values(max_lesions: int = 150) -> dict[str, int]:
    """Region name → written label value: organs and red marrow (class table order), then lesion_001 …"""
    values = {c.name: c.index for c in SEGMENTATION_CLASSES if c.kind in ("organ", "marrow")}
    values.update({lesion_name(j): COHORT_LESION_LABEL_OFFSET + j for j in range(1, max_lesions + 1)})
    return values


def written_labels(anatomy: Any) -> Any:
    """The anatomy's labels remapped to the cohort's label values (organs, red marrow, lesions; rest 0)."""
    lab = np.asarray(anatomy.labels.array)
    cohort = cohort_label_values(10_000)
    lut = np.zeros(int(lab.max()) + 1, dtype=np.int16)
    for name, value in anatomy.label_values.items():
        if name in cohort and 0 <= value < lut.size:
            lut[value] = cohort[name]
    return anatomy.labels.with_array(lut[np.clip(lab, 0, None)], unit="label")
