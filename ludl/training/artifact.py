"""The model artifact (``weights.pt``, ``model.json``, ``metrics.json``): the file format lives in
`ludl.io.model_artifact` (shared with `ludl.inference`); this module re-exports it and adds `load_network`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ludl.io.model_artifact import (
    ARTIFACT_FORMAT_VERSION,
    METRICS_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    ModelArtifact,
    load_artifact,
    save_artifact,
)

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "METRICS_FILE",
    "MODEL_FILE",
    "WEIGHTS_FILE",
    "ArtifactError",
    "ModelArtifact",
    "load_artifact",
    "load_network",
    "save_artifact",
]


def load_network(folder: str | Path) -> tuple[Any, ModelArtifact]:
    """The `DoseNet` of an artifact, weights loaded, in eval mode, and the artifact."""
    from ludl.io.regions import SEGMENTATION_CLASSES
    from ludl.models.build import network_from_artifact

    artifact = load_artifact(folder)
    return network_from_artifact(artifact.model, artifact.network_state(), len(SEGMENTATION_CLASSES), folder), artifact
