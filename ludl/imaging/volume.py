"""The `Volume`: a 3D array with its physical geometry and unit.

Conventions (one place, used everywhere):
- ``array`` is indexed (z, y, x), as SimpleITK's ``GetArrayFromImage`` returns it.
- ``spacing_zyx_mm`` follows the array's axis order.
- ``origin_xyz_mm`` is the LPS patient coordinate (x, y, z) of the centre of voxel [0, 0, 0].
- ``direction`` is ITK's 3×3 direction matrix: column c is the LPS unit vector along the
  index axis c of (i, j, k) = (x, y, z) index order — exactly SimpleITK's ``GetDirection``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ludl.errors import GeometryError, UnitsError

__all__ = ["ACTIVITY_UNITS", "AIR_HU", "UNITS", "ResampleKind", "Volume"]

# Units a Volume may carry. Activity images hold concentrations (docs/architecture.md "Units inside ludl").
UNITS = frozenset(
    {
        "Bq/mL",  # activity concentration
        "MBq/mL",
        "counts",  # raw reconstructed counts, before calibration
        "SUV",  # PET SUVbw (g/mL)
        "HU",  # CT
        "g/mL",  # mass density
        "Gy",  # absorbed dose
        "MBq*h/mL",  # TIA map
        "h",  # effective integration time τ, half-lives
        "label",  # integer label map
        "mask",  # boolean mask
        "1",  # dimensionless
    }
)

# Concentrations (and raw counts): resampled conserving ∫ value dV. SUV is a concentration scaled by one number.
ACTIVITY_UNITS = frozenset({"Bq/mL", "MBq/mL", "MBq*h/mL", "counts", "SUV"})
# A CT's value outside its field of view when resampled: air.
AIR_HU = -1000.0

ResampleKind = Literal["linear", "nearest", "activity"]


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: array (z, y, x) plus spacing, origin, direction and physical unit.

    Args:
        array: voxel values, shape (z, y, x).
        spacing_zyx_mm: voxel size along (z, y, x) in mm, all > 0.
        origin_xyz_mm: LPS coordinate (x, y, z) of the centre of voxel [0, 0, 0], mm.
        direction: 3×3 ITK direction matrix (columns = LPS direction of index axes x, y, z).
        unit: one of `UNITS`.
        meta: free-form, de-identified provenance (never patient identifiers).

    Example:
        >>> v = Volume(np.zeros((2, 3, 4)), (2.0, 1.0, 1.0), unit="Bq/mL")
        >>> v.shape, v.voxel_volume_ml
        ((2, 3, 4), 0.002)
    """

    array: npt.NDArray[Any]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: npt.NDArray[np.float64] = field(default_factory=lambda: np.eye(3))
    unit: str = "1"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise GeometryError(f"a Volume needs a 3D (z, y, x) array, got shape {array.shape}")
        spacing = tuple(float(s) for s in self.spacing_zyx_mm)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise GeometryError(f"spacing_zyx_mm must be three positive numbers, got {self.spacing_zyx_mm}")
        origin = tuple(float(o) for o in self.origin_xyz_mm)
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise GeometryError(f"origin_xyz_mm must be three finite numbers, got {self.origin_xyz_mm}")
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise GeometryError(f"direction must be an orthonormal 3×3 matrix, got {direction.tolist()}")
        if self.unit not in UNITS:
            raise UnitsError(f"unknown unit {self.unit!r}; use one of {sorted(UNITS)}")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing_zyx_mm", spacing)
        object.__setattr__(self, "origin_xyz_mm", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "meta", dict(self.meta))

    # -- geometry -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        z, y, x = self.array.shape
        return (int(z), int(y), int(x))

    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        """Spacing in ITK (x, y, z) order."""
        z, y, x = self.spacing_zyx_mm
        return (x, y, z)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm³)."""
        return float(np.prod(self.spacing_zyx_mm)) / 1000.0

    @property
    def affine_xyz(self) -> npt.NDArray[np.float64]:
        """4×4 matrix mapping (i, j, k, 1) = (x, y, z index, 1) to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction @ np.diag(self.spacing_xyz_mm)
        affine[:3, 3] = self.origin_xyz_mm
        return affine

    def index_to_physical(self, index_zyx: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """LPS (x, y, z) mm of (…, 3) continuous indices given in (z, y, x) order."""
        idx = np.asarray(index_zyx, dtype=np.float64)[..., ::-1]
        return idx @ (self.direction @ np.diag(self.spacing_xyz_mm)).T + np.asarray(self.origin_xyz_mm)

    def physical_to_index(self, point_xyz_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Continuous (z, y, x) indices of (…, 3) LPS points in mm."""
        rel = np.asarray(point_xyz_mm, dtype=np.float64) - np.asarray(self.origin_xyz_mm)
        ijk = rel @ np.linalg.inv(self.direction @ np.diag(self.spacing_xyz_mm)).T
        return np.asarray(ijk[..., ::-1])

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when both volumes share shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_zyx_mm, other.spacing_zyx_mm, atol=atol_mm)
            and np.allclose(self.origin_xyz_mm, other.origin_xyz_mm, atol=atol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-6)
        )

    def require_same_grid(self, other: Volume, what: str = "images") -> None:
        """Raise `GeometryError` naming both grids when `other` lies on another grid."""
        if not self.same_grid(other):
            raise GeometryError(
                f"{what} are on different grids: shape {self.shape} vs {other.shape}, spacing "
                f"{self.spacing_zyx_mm} vs {other.spacing_zyx_mm}, origin {self.origin_xyz_mm} vs "
                f"{other.origin_xyz_mm}; resample one onto the other first (ludl.imaging.resample)"
            )

    # -- resampling -----------------------------------------------------------------------------
    @property
    def resample_kind(self) -> ResampleKind:
        """How the unit says to resample: labels and masks nearest, concentrations conserving, the rest linear."""
        if self.unit in ("label", "mask"):
            return "nearest"
        if self.unit in ACTIVITY_UNITS:
            return "activity"
        return "linear"

    @property
    def fill_value(self) -> float:
        """The value outside the field of view when resampled: air for a CT, 0 for everything else."""
        return AIR_HU if self.unit == "HU" else 0.0

    # -- construction -------------------------------------------------------------------------
    def with_array(self, array: npt.ArrayLike, unit: str | None = None, **meta: Any) -> Volume:
        """A new Volume on the same grid holding `array` (and optionally another unit)."""
        new_meta = {**self.meta, **meta}
        return replace(self, array=np.asarray(array), unit=self.unit if unit is None else unit, meta=new_meta)

    @classmethod
    def from_sitk(cls, image: Any, unit: str = "1", meta: Mapping[str, Any] | None = None) -> Volume:
        """Build a Volume from a 3D SimpleITK image (geometry taken as the image states it)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise GeometryError(f"expected a 3D SimpleITK image, got {image.GetDimension()}D")
        sx, sy, sz = image.GetSpacing()
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing_zyx_mm=(sz, sy, sx),
            origin_xyz_mm=tuple(image.GetOrigin()),
            direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
            unit=unit,
            meta=meta or {},
        )

    def to_sitk(self) -> Any:
        """A SimpleITK image with this volume's array and geometry (unit is not carried)."""
        import SimpleITK as sitk

        array = self.array
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(self.spacing_xyz_mm)
        image.SetOrigin(self.origin_xyz_mm)
        image.SetDirection(tuple(float(d) for d in self.direction.ravel()))
        return image

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, spacing_zyx_mm={self.spacing_zyx_mm}, "
            f"origin_xyz_mm={tuple(round(o, 3) for o in self.origin_xyz_mm)}, unit={self.unit!r}, "
            f"dtype={self.array.dtype})"
        )
