"""The model(s) `ludl.inference` runs: one artifact or a fold ensemble, loaded once, checked against each other.

An artifact (`ludl.io.model_artifact`) holds the network config, weights and what the model was trained on:
classes, training time points, voxel sizes, nuclide. Several artifacts (the folds of one cross-validation) form an
ensemble: their dose maps are averaged and their spread is part of the uncertainty. They must share the class
table, the nuclide and the input normalisation; otherwise their outputs do not mean the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ludl.errors import InputError
from ludl.io.model_artifact import ArtifactError, ModelArtifact, load_artifact
from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.build import network_from_artifact
from ludl.models.heads import ResponseHead
from ludl.models.network import DoseNet
from ludl.models.region_model import region_factor
from ludl.models.uncertainty import Z_90, kind_group, nearest_half_width

__all__ = ["LoadedModel", "ModelSet", "load_models"]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One artifact's network (eval mode), its optional response head and the artifact."""

    net: DoseNet
    response_head: ResponseHead | None
    artifact: ModelArtifact

    @property
    def name(self) -> str:
        """Folder name of the artifact (``model`` of a run folder: the run folder's name)."""
        folder = self.artifact.folder
        return f"{folder.parent.name}/{folder.name}" if folder.name == "model" else folder.name


@dataclass(frozen=True, eq=False)
class ModelSet:
    """The loaded models (one, or a fold ensemble) and what they were trained on."""

    models: tuple[LoadedModel, ...]

    @property
    def first(self) -> ModelArtifact:
        """The first artifact (its model.json describes the training of the set)."""
        return self.models[0].artifact

    @property
    def training_timepoints_h(self) -> tuple[float, ...]:
        """Nominal scan times the models were trained on, h (union over the set)."""
        times = {float(t) for m in self.models for t in m.artifact.model.get("training_timepoints_h", ())}
        return tuple(sorted(times))

    def region_factor(self, region_class: str, time_h: float, features: Mapping[str, float]) -> float:
        """The factor on a region's corrected mean dose (`ludl.models.region_model.region_factor` of each member's
        ``region_calibration`` and ``region_model``), averaged over an ensemble's members; 1.0 where the training
        calibrated nothing."""
        values = [
            region_factor(
                m.artifact.model.get("region_model"),
                m.artifact.model.get("region_calibration") or {},
                region_class,
                time_h,
                features,
            )
            for m in self.models
        ]
        return sum(values) / len(values)

    @property
    def spacings_zyx_mm(self) -> tuple[tuple[float, float, float], ...]:
        """Voxel sizes the models were trained on."""
        kernel = self.first.model.get("kernel") or {}
        return tuple(tuple(float(v) for v in s) for s in kernel.get("spacings_zyx_mm", ()))  # type: ignore[misc]

    @property
    def nuclide(self) -> str:
        """Nuclide of the models' dose kernels."""
        return str((self.first.model.get("kernel") or {}).get("nuclide", "Lu-177"))

    @property
    def description(self) -> str:
        """Model names and ludl versions, for the report and summary."""
        names = ", ".join(m.name for m in self.models)
        version = self.first.model.get("ludl_version", "?")
        return f"{names} (ludl {version}{', ensemble of ' + str(len(self.models)) if len(self.models) > 1 else ''})"

    def region_relative_sds(self, time_h: float) -> dict[str, float]:
        """Relative SD of one model's region mean at scan `time_h`, per region class (``kidneys``, ``lesions`` …) the
        training fitted and per kind group (``lesion``/``organ``): the validation fold's conformal 90 % half-width
        (`model.json` ``region_uncertainty``, `ludl.models.uncertainty`) / Z_90, averaged over members. Artifacts
        written before it existed: the groups from their held-out median |error| (`legacy_relative_sd`)."""
        tables = [m.artifact.model.get("region_uncertainty") or {} for m in self.models]
        keys = sorted({str(k) for table in tables for k in table} | {"lesion", "organ"})
        out: dict[str, float] = {}
        for key in keys:
            widths = [nearest_half_width(table, key, key, time_h) for table in tables]
            finite = [w for w in widths if math.isfinite(w)]
            if finite:
                out[key] = sum(finite) / len(finite) / Z_90
        if not any(tables):
            out = {k: self.legacy_relative_sd(k) for k in ("lesion", "organ")}
        return out

    def legacy_relative_sd(self, kind: str) -> float:
        """Relative SD from the held-out median |error| % (SD = median|e| / 0.6745) over all scan times of `kind`:
        only for artifacts without ``region_uncertainty`` (its coverage is in-sample, the report says so)."""
        values = []
        group = kind_group(kind)
        for m in self.models:
            for key, value in m.artifact.metrics.items():
                if key.startswith("held_out/mae_") and key.endswith(f"_{group}_pct"):
                    try:
                        values.append(float(value))
                    except (TypeError, ValueError):
                        continue
        finite = [v for v in values if math.isfinite(v)]
        return (sum(finite) / len(finite)) / 100.0 / 0.6745 if finite else math.nan

    @property
    def interval_coverage(self) -> dict[str, float]:
        """The 90 % interval coverage the training measured on its held-out patients (``held_out/coverage_90*``
        and region counts), averaged over members; {} when not recorded."""
        pooled: dict[str, list[float]] = {}
        for m in self.models:
            for key, value in m.artifact.metrics.items():
                if key.startswith(("held_out/coverage_90", "held_out/n_intervals")):
                    pooled.setdefault(key.removeprefix("held_out/"), []).append(float(value))
        return {k: sum(v) / len(v) for k, v in pooled.items()}


def _response_head(artifact: ModelArtifact) -> ResponseHead | None:
    """The non-response head of an artifact (its size read from the weights), None without one."""
    state = artifact.response_state()
    first = state.get("mlp.0.weight")
    if first is None:
        return None
    head = ResponseHead(int(first.shape[1]), hidden=int(first.shape[0]))
    try:
        head.load_state_dict(state)
    except RuntimeError:  # a response head of another layout: no P(non-response) rather than a wrong one
        return None
    return head.eval()


def _check_same(models: Sequence[LoadedModel]) -> None:
    first = models[0].artifact
    for other in models[1:]:
        for key in ("classes", "normalisation"):
            if other.artifact.model.get(key) != first.model.get(key):
                raise InputError(
                    f"{other.artifact.folder}: its {key} differ from those of {first.folder}; an ensemble needs "
                    "artifacts of one training setup (the folds of one run): give model= only those"
                )
        k1, k2 = first.model.get("kernel") or {}, other.artifact.model.get("kernel") or {}
        if k1.get("nuclide") != k2.get("nuclide"):
            raise InputError(f"{other.artifact.folder}: another nuclide than {first.folder}; give one nuclide's models")


def load_models(folders: str | Path | Sequence[str | Path], device: str | torch.device = "cpu") -> ModelSet:
    """Load one artifact folder or several (fold ensemble) once, networks in eval mode on `device`.

    Raises:
        ArtifactError: a missing, truncated or other-version artifact (naming the file and the fix).
        InputError: artifacts that cannot form an ensemble.
    """
    paths = [folders] if isinstance(folders, str | Path) else list(folders)
    if not paths:
        raise InputError("no model artifact given: pass model=<run folder>/model (or a list of fold artifacts)")
    n_classes = len(SEGMENTATION_CLASSES)
    loaded = []
    for path in paths:
        artifact = load_artifact(path)
        classes = artifact.model.get("classes")
        if classes and len(classes) != n_classes:
            raise ArtifactError(
                f"{Path(path) / 'model.json'}: {len(classes)} segmentation classes, this ludl has {n_classes}; use "
                f"the ludl version that wrote it ({artifact.model.get('ludl_version', '?')}) or retrain"
            )
        try:
            net = network_from_artifact(artifact.model, artifact.network_state(), n_classes, artifact.folder)
        except InputError as err:
            raise ArtifactError(str(err)) from err
        loaded.append(LoadedModel(net.to(device), _response_head(artifact), artifact))
    _check_same(loaded)
    return ModelSet(tuple(loaded))
