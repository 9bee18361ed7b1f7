"""Networks: MONAI backbones, voxel heads, the differentiable physics layer (τ → TIA → dose), the response head.

Modules: `backbones` (`dynunet`, `unet`, `segresnet`, `swinunetr`), `physics_layer` (`bounded_tau`,
`DosePhysicsLayer`), `heads` (`VoxelHeads`: segmentation, kinetics τ, residual or direct dose; `ResponseHead`,
`response_features`), `network` (`DoseNet`, `DoseNetOutput`, `InputNormalisation`). Nothing here reads files.
"""

from __future__ import annotations

from ludl._lazy import lazy_getattr

_PUBLIC = {
    "dynunet": "ludl.models.backbones",
    "unet": "ludl.models.backbones",
    "segresnet": "ludl.models.backbones",
    "swinunetr": "ludl.models.backbones",
    "TauBounds": "ludl.models.physics_layer",
    "bounded_tau": "ludl.models.physics_layer",
    "DosePhysicsLayer": "ludl.models.physics_layer",
    "PhysicsOutput": "ludl.models.physics_layer",
    "VoxelHeads": "ludl.models.heads",
    "VoxelHeadOutput": "ludl.models.heads",
    "ResponseHead": "ludl.models.heads",
    "RESPONSE_FEATURES": "ludl.models.heads",
    "response_features": "ludl.models.heads",
    "DoseNet": "ludl.models.network",
    "DoseNetOutput": "ludl.models.network",
    "BATCH_KEYS": "ludl.models.network",
    "haenscheid_tau_h": "ludl.models.physics_layer",
    "InputNormalisation": "ludl.models.network",
}
__all__ = sorted(_PUBLIC)
__getattr__ = lazy_getattr(__name__, _PUBLIC)
