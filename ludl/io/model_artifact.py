"""The model artifact's files: one folder with ``weights.pt``, ``model.json`` and ``metrics.json``.

- ``weights.pt``: the network's state dict (and the response head's, under ``response.``), tensors only, so
  ``torch.load(..., weights_only=True)`` reads it;
- ``model.json``: artifact format version, ludl version, the resolved network config (plain dict: `build_dosenet`
  rebuilds the network from it), input normalisation, the class table, training time points, kernel
  spacing/medium, the training cohort summary (the ``dataset.json`` descriptor), the response head's settings;
- ``metrics.json``: validation and held-out metrics.

Each file is written to a temporary name and renamed (atomic): a crash leaves the previous artifact or none.
Here in ``ludl.io`` so that both training (which writes it) and inference (which reads it) use one format; the
network is rebuilt from ``model.json`` by `ludl.models.build.build_dosenet`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ludl.errors import LudlError

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "METRICS_FILE",
    "MODEL_FILE",
    "WEIGHTS_FILE",
    "ArtifactError",
    "ModelArtifact",
    "load_artifact",
    "save_artifact",
]

ARTIFACT_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
MODEL_FILE = "model.json"
METRICS_FILE = "metrics.json"


class ArtifactError(LudlError):
    """A model artifact that cannot be read: missing, truncated, corrupt or of another format version."""


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded artifact.

    Attributes:
        folder: where it was read from.
        state_dict: the weights (``net.*`` DoseNet, ``response.*`` the non-response head, if any).
        model: the ``model.json`` document.
        metrics: the ``metrics.json`` document ({} when absent).
    """

    folder: Path
    state_dict: Mapping[str, torch.Tensor]
    model: Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def network_state(self) -> dict[str, torch.Tensor]:
        """The DoseNet weights (prefix ``net.`` removed)."""
        return {k[4:]: v for k, v in self.state_dict.items() if k.startswith("net.")}

    def response_state(self) -> dict[str, torch.Tensor]:
        """The response head's weights (prefix ``response.`` removed); {} without one."""
        return {k[9:]: v for k, v in self.state_dict.items() if k.startswith("response.")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(
    folder: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    model: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write the artifact folder (weights, ``model.json`` with the format and ludl versions added, metrics)."""
    from ludl import __version__

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    weights = {str(k): v.detach().cpu().clone() for k, v in state_dict.items()}
    document = {"format_version": ARTIFACT_FORMAT_VERSION, "ludl_version": __version__, **_jsonable(dict(model))}
    _atomic_write(out / WEIGHTS_FILE, lambda p: torch.save(weights, p))
    _atomic_write(out / METRICS_FILE, lambda p: p.write_text(json.dumps(_jsonable(metrics or {}), indent=2)))
    # model.json last: its presence marks a complete artifact
    _atomic_write(out / MODEL_FILE, lambda p: p.write_text(json.dumps(document, indent=2)))
    return out


def _read_json(path: Path, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ArtifactError(f"{path} is missing: not a complete ludl model artifact; train again (python train.py)")
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(
            f"{path} is truncated or corrupt ({err}); copy the artifact again or retrain (python train.py)"
        ) from err
    if not isinstance(document, dict):
        raise ArtifactError(f"{path} does not hold a JSON object; copy the artifact again or retrain")
    return document


def load_artifact(folder: str | Path) -> ModelArtifact:
    """Read an artifact folder (weights with ``weights_only=True``); refuses other format versions and bad files."""
    root = Path(folder)
    model = _read_json(root / MODEL_FILE, required=True)
    version = model.get("format_version")
    if version != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{root / MODEL_FILE}: artifact format version {version!r}, this ludl reads version "
            f"{ARTIFACT_FORMAT_VERSION}; use the ludl version that wrote it ({model.get('ludl_version', '?')}) or "
            "retrain with this one"
        )
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing; copy the whole artifact folder or retrain (python train.py)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError … for bad files
        raise ArtifactError(
            f"{weights} is truncated or corrupt ({type(err).__name__}); copy the artifact again or retrain "
            "(python train.py)"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{weights} does not hold a state dict of tensors; copy the artifact again or retrain")
    return ModelArtifact(root, state, model, _read_json(root / METRICS_FILE, required=False))
