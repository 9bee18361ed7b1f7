"""`cohort.yaml` ``resolution``: the SPECT resolution a clinic measured (a FWHM or a NEMA sphere recovery curve,
cohort-wide or per camera) and which FWHM partial-volume correction uses (docs/cohort-format.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RESOLUTION_USES", "MeasuredResolution", "ResolutionConfig", "is_number", "parse_resolution"]

# `resolution.use`: which FWHM partial-volume correction uses (docs/cohort-format.md "System resolution").
RESOLUTION_USES: tuple[str, ...] = ("auto", "nominal", "measured", "estimated")
_MEASURED_KEYS: tuple[str, ...] = ("fwhm_mm", "recovery")
_RESOLUTION_KEYS: tuple[str, ...] = ("use", *_MEASURED_KEYS, "cameras")


@dataclass(frozen=True)
class MeasuredResolution:
    """A resolution the clinic measured: a FWHM (mm) or a sphere recovery curve (volumes mL, recovery 0–1)."""

    fwhm_mm: float | None = None
    volume_ml: tuple[float, ...] = ()
    recovery: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The `cohort.yaml` layout."""
        if self.fwhm_mm is not None:
            return {"fwhm_mm": self.fwhm_mm}
        return {"recovery": {"volume_ml": list(self.volume_ml), "recovery": list(self.recovery)}}


@dataclass(frozen=True)
class ResolutionConfig:
    """`cohort.yaml` ``resolution``: which FWHM to use, the cohort's measurement and per-camera ones."""

    use: str = "auto"
    measured: MeasuredResolution | None = None
    cameras: Mapping[str, MeasuredResolution] = field(default_factory=dict, hash=False)

    def for_camera(self, camera: str | None) -> tuple[MeasuredResolution | None, str]:
        """(the measurement that applies to a row's camera, where it came from) — the camera's, else the cohort's."""
        if camera and camera in self.cameras:
            return self.cameras[camera], f"cohort.yaml resolution.cameras.{camera}"
        return self.measured, "cohort.yaml resolution"

    def to_dict(self) -> dict[str, Any]:
        """The `cohort.yaml` layout."""
        out: dict[str, Any] = {"use": self.use}
        if self.measured is not None:
            out.update(self.measured.to_dict())
        if self.cameras:
            out["cameras"] = {name: m.to_dict() for name, m in self.cameras.items()}
        return out


def _numbers(value: object, where: str, problems: list[str]) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(is_number(v) for v in value):
        problems.append(f"'{where}' must be a list of numbers, got {value!r}")
        return ()
    return tuple(float(v) for v in value)


def _parse_measured(raw: Mapping[str, Any], where: str, problems: list[str]) -> MeasuredResolution | None:
    """A measured FWHM or a recovery curve (exactly one), checked."""
    given = [k for k in _MEASURED_KEYS if raw.get(k) is not None]
    if not given:
        return None
    if len(given) > 1:
        problems.append(f"'{where}' gives both fwhm_mm and recovery; give one measurement")
        return None
    if given == ["fwhm_mm"]:
        value = raw["fwhm_mm"]
        if not is_number(value) or not (math.isfinite(value) and value > 0):
            problems.append(f"'{where}.fwhm_mm' must be a positive number (mm), got {value!r}")
            return None
        return MeasuredResolution(fwhm_mm=float(value))
    curve = raw["recovery"]
    if not isinstance(curve, Mapping) or set(curve) != {"volume_ml", "recovery"}:
        problems.append(
            f"'{where}.recovery' must map volume_ml: [sphere volumes, mL] and recovery: [one value per sphere]"
        )
        return None
    volumes = _numbers(curve["volume_ml"], f"{where}.recovery.volume_ml", problems)
    recovery = _numbers(curve["recovery"], f"{where}.recovery.recovery", problems)
    if not volumes or not recovery:
        return None
    if len(volumes) != len(recovery) or len(volumes) < 2:
        problems.append(f"'{where}.recovery' needs ≥ 2 spheres and one recovery per volume_ml entry")
    elif any(v <= 0 for v in volumes) or any(not 0 < r <= 1.2 for r in recovery):
        problems.append(f"'{where}.recovery': volumes must be > 0 mL and recoveries in (0, 1.2] (fractions, not %)")
    else:
        return MeasuredResolution(volume_ml=volumes, recovery=recovery)
    return None


def parse_resolution(raw: object, problems: list[str]) -> ResolutionConfig | None:
    """The ``resolution`` mapping of `cohort.yaml`, every problem appended to `problems`; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"'resolution' must be a mapping with {', '.join(_RESOLUTION_KEYS)}")
        return None
    for key in raw:
        if key not in _RESOLUTION_KEYS:
            problems.append(f"'resolution' has unknown key {key!r}; allowed keys are {', '.join(_RESOLUTION_KEYS)}")
    use = raw.get("use", "auto")
    if use not in RESOLUTION_USES:
        problems.append(f"'resolution.use' is {use!r}; use one of {', '.join(RESOLUTION_USES)}")
    cameras: dict[str, MeasuredResolution] = {}
    raw_cameras = raw.get("cameras") or {}
    if not isinstance(raw_cameras, Mapping):
        problems.append("'resolution.cameras' must map camera name → {fwhm_mm: …} or {recovery: …}")
        raw_cameras = {}
    for name, entry in raw_cameras.items():
        where = f"resolution.cameras.{name}"
        if not isinstance(entry, Mapping) or set(entry) - set(_MEASURED_KEYS):
            problems.append(f"'{where}' must be {{fwhm_mm: …}} or {{recovery: …}}")
            continue
        measured = _parse_measured(entry, where, problems)
        if measured is None:
            problems.append(f"'{where}' gives no measurement; give fwhm_mm or recovery")
        else:
            cameras[str(name)] = measured
    measured = _parse_measured(raw, "resolution", problems)
    if use == "measured" and measured is None and not cameras:
        problems.append("'resolution.use' is measured but no fwhm_mm or recovery is given; add one or use auto")
    return ResolutionConfig(use=str(use), measured=measured, cameras=cameras)


def is_number(value: object) -> bool:
    """A YAML number (int or float, not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
