"""Training: losses, the LightningModule, whole-volume prediction, metrics, callbacks, the model artifact, `train`.

Modules: `losses` (`masked_dice_ce`, `relative_dose_loss`, `dose_weight_map`, `region_mean_dose_loss`, `focal_bce`),
`module` (`DoseLightningModule`, `build_dosenet`, `LossConfig`), `inference` (re-exports `VolumePredictor` of
`ludl.models.whole_volume`: sliding window over the network, physics on the whole volume), `metrics`, `callbacks`
(`EmaCallback`, `SliceImages`), `artifact` (the file format of `ludl.io.model_artifact` re-exported, and
`load_network`), `predict` (held-out CSVs), `response` (the non-response head's
second stage), `train` (`train(cfg) -> TrainResult`). The public names load their module on first use.
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
    "DEFAULT_DOSE_FLOOR_GY": "ludl.training.losses",
    "dose_weight_map": "ludl.training.losses",
    "focal_bce": "ludl.training.losses",
    "masked_dice_ce": "ludl.training.losses",
    "region_mean_dose_loss": "ludl.training.losses",
    "relative_dose_loss": "ludl.training.losses",
    "DoseLightningModule": "ludl.training.module",
    "LossConfig": "ludl.training.module",
    "build_dosenet": "ludl.training.module",
    "VolumePredictor": "ludl.training.inference",
    "EmaCallback": "ludl.training.callbacks",
    "SliceImages": "ludl.training.callbacks",
    "ARTIFACT_FORMAT_VERSION": "ludl.training.artifact",
    "ArtifactError": "ludl.training.artifact",
    "ModelArtifact": "ludl.training.artifact",
    "load_artifact": "ludl.training.artifact",
    "load_network": "ludl.training.artifact",
    "save_artifact": "ludl.training.artifact",
    "RegionScoring": "ludl.training.predict",
    "CorrectionInput": "ludl.training.predict",
    "CheckpointError": "ludl.training.train",
    "TrainResult": "ludl.training.train",
    "train": "ludl.training.train",
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
