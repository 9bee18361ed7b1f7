"""Training: losses (and, to come, the LightningModule, metrics, callbacks, `train(cfg)` and the model artifact).

Modules: `losses` (`masked_dice_ce`, `relative_dose_loss`, `dose_weight_map`, `region_mean_dose_loss`, `focal_bce`).
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
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
