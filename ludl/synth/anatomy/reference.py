"""The reference adult male (vertebral levels, trunk and rib-cage outlines) and the per-patient scale factors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "C1_TOP_S",
    "RIBCAGE_KNOTS",
    "SPINE_Y_KNOTS",
    "TRUNK_KNOTS",
    "VERTEBRAE",
    "PatientShape",
    "sample_patient_shape",
]


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


VERTEBRAE = _vertebra_table()
C1_TOP_S = 160.0

# Spine centre line: AP position of the vertebral body centre (mm, + posterior) vs depth below the vertex.
SPINE_Y_KNOTS = (
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
TRUNK_KNOTS = np.array(
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
RIBCAGE_KNOTS = np.array(
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
class PatientShape:
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
        """Reference depth below the vertex of world z."""
        return (self.vertex_z - z) / self.stature


def sample_patient_shape(rng: np.random.Generator) -> PatientShape:
    """Draw a patient's frame, stature, habitus, fat layer and bone HU."""
    frame = math.exp(0.035 * rng.standard_normal())
    stature = frame * math.exp(0.02 * rng.standard_normal())
    # Habitus (BMI): lateral factor, AP follows with its own jitter; elderly mCRPC men, mostly normal to obese.
    hab = float(np.clip(math.exp(0.05 + 0.09 * rng.standard_normal()), 0.9, 1.35))
    hab_ap = float(np.clip(hab * math.exp(0.05 * rng.standard_normal()), 0.9, 1.4))
    fat = float(np.clip(8.0 + 70.0 * (hab - 0.95) + 3.0 * rng.standard_normal(), 4.0, 40.0))
    belly = float(np.clip(rng.uniform(0.0, 0.25) * (hab - 0.85) / 0.3, 0.0, 0.3))
    return PatientShape(
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
