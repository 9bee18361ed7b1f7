"""`DosimetryOptions`: the one definition of the ground-truth dosimetry settings.

`ludl dosimetry`, `ludl prepare` (and later `evaluate`) compose the ``dosimetry`` config group into this frozen,
validated dataclass; the pipeline functions take it whole. A prepared case records `to_dict()` so a change of any
setting is visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ludl.errors import InputError
from ludl.physics.kinetics import MODELS

__all__ = ["DOSE_METHODS", "PVC_METHODS", "TIA_MODES", "DosimetryOptions"]

# docs/physics.md §2: voxel-wise fits | region kinetics × voxel activity
TIA_MODES: tuple[str, ...] = ("voxel", "region")
DOSE_METHODS: tuple[str, ...] = ("dvk", "ldm")  # voxel S kernel ⊛ TIA · ρ_k/ρ_CT | local energy deposition
PVC_METHODS: tuple[str, ...] = ("none", "rc", "gtm")  # partial-volume correction of region means


@dataclass(frozen=True)
class DosimetryOptions:
    """Settings of multi-time-point dosimetry (see ``ludl/configs/dosimetry/default.yaml`` for each key's meaning).

    Args:
        tia_mode: ``voxel`` (voxel-wise fits) or ``region`` (region kinetics × voxel activity).
        model: TAC model, one of `ludl.physics.kinetics.MODELS` or ``auto``.
        dose_method: ``dvk`` or ``ldm``.
        pvc: ``none``, ``rc`` or ``gtm``.
        reference_timepoint: nominal time point (h) whose pose and grid the result is on; None = the label map's.
        kernel_cache_dir: folder caching generated voxel S kernels; None = no disk cache.
    """

    tia_mode: str = "voxel"
    model: str = "auto"
    dose_method: str = "dvk"
    pvc: str = "gtm"
    reference_timepoint: float | None = None
    kernel_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        for name, choices in (
            ("tia_mode", TIA_MODES),
            ("model", (*MODELS, "auto")),
            ("dose_method", DOSE_METHODS),
            ("pvc", PVC_METHODS),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise InputError(f"dosimetry option {name}={value!r} is not known; use one of {', '.join(choices)}")
        if self.reference_timepoint is not None:
            try:
                reference = float(self.reference_timepoint)
            except (TypeError, ValueError):
                raise InputError(
                    f"dosimetry option reference_timepoint={self.reference_timepoint!r} must be a number of hours "
                    "(a nominal time point such as 24) or null"
                ) from None
            object.__setattr__(self, "reference_timepoint", reference)
        if self.kernel_cache_dir is not None:
            object.__setattr__(self, "kernel_cache_dir", Path(self.kernel_cache_dir))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> DosimetryOptions:
        """Options from a plain mapping (a config group); an unknown key is refused with the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(
                f"unknown dosimetry option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
            )
        return cls(**dict(options))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dictionary (the kernel cache folder as text)."""
        out = asdict(self)
        out["kernel_cache_dir"] = None if self.kernel_cache_dir is None else str(self.kernel_cache_dir)
        return out

    def settings(self) -> dict[str, Any]:
        """The settings that change results (everything but where kernels are cached): what provenance hashes."""
        out = self.to_dict()
        del out["kernel_cache_dir"]
        return out
