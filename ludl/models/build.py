"""A `DoseNet` from its plain ``model`` config, and from a model artifact's ``model.json`` + weights.

Training builds the network it fits from this config; inference rebuilds the same network from the artifact. Both
go through `build_dosenet`, so a trained artifact always loads into the architecture it was trained with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ludl.errors import InputError
from ludl.models.network import DoseNet, InputNormalisation
from ludl.models.physics_layer import DosePhysicsLayer

__all__ = ["build_dosenet", "network_from_artifact"]


def build_dosenet(config: Mapping[str, Any], n_classes: int) -> DoseNet:
    """A `DoseNet` from the ``model`` config: ``backbone`` (``_target_``), ``feature_channels``, ``physics``,
    ``normalisation`` and the remaining `DoseNet` keyword arguments; `n_classes` segmentation classes."""
    from hydra.utils import instantiate

    cfg = dict(config)
    try:
        backbone_cfg = dict(cfg.pop("backbone"))
        feature_channels = int(cfg.pop("feature_channels"))
    except KeyError as err:
        raise InputError(f"the model config lacks {err}; see ludl/configs/model/dosenet.yaml") from err
    physics_cfg = dict(cfg.pop("physics", None) or {})
    norm_cfg = dict(cfg.pop("normalisation", None) or {})
    in_channels = DoseNet.in_channels_for(str(cfg.get("time_conditioning", "film")))
    backbone = instantiate(backbone_cfg, in_channels=in_channels, out_channels=feature_channels)
    return DoseNet(
        backbone,
        feature_channels,
        int(n_classes),
        physics=DosePhysicsLayer(**physics_cfg),
        normalisation=InputNormalisation(**norm_cfg),
        **cfg,
    )


def network_from_artifact(
    model: Mapping[str, Any], state: Mapping[str, torch.Tensor], n_classes: int, where: str | Path = "the artifact"
) -> DoseNet:
    """The artifact's network (``model["network"]``) with its weights loaded, in eval mode.

    Raises:
        InputError: the weights do not fit the network the artifact describes (naming `where` and the fix).
    """
    if "network" not in model:
        raise InputError(f"{where}: model.json has no 'network' entry; copy the artifact again or retrain")
    network = dict(model["network"])
    # A config without the key (artifacts written before FiLM existed used the time channel): the weights say which.
    network.setdefault("time_conditioning", "film" if any(k.startswith("film.") for k in state) else "channel")
    net = build_dosenet(network, n_classes)
    try:
        net.load_state_dict(dict(state))
    except RuntimeError as err:
        raise InputError(
            f"{where}: weights.pt does not match the network of model.json ({err}); copy the artifact again or "
            "retrain (python train.py)"
        ) from err
    return net.eval()
