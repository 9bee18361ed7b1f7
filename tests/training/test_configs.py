"""Every option of every group of the train config composes (and the schema refuses unknown keys)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from ludl.cli import CONFIG_DIR
from ludl.configs.schema import register_schemas

GROUPS = ("data", "model", "loss", "optim", "trainer", "logger", "callbacks", "experiment", "sweep")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONFIG_DIR / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_train_config_composes(group: str, option: str) -> None:
    if (group, option) == ("sweep", "optuna"):  # the sweeper plugin is the `sweep` extra (CI installs it)
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    register_schemas()
    with initialize_config_module(config_module="ludl.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"{group}={option}", "prepared=/tmp/prepared", "out=/tmp/run"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict) and plain["trainer"]["_target_"] == "pytorch_lightning.Trainer"
    assert plain["model"]["backbone"]["_target_"].startswith("ludl.models.backbones.")


def test_unknown_top_level_key_is_refused() -> None:
    register_schemas()
    with initialize_config_module(config_module="ludl.configs", version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            compose(config_name="train", overrides=["epochs=3"])


def test_calibration_settings_default_to_the_fit_the_docs_describe() -> None:
    from ludl.models.calibration import FIT_MIN_VOLUME_ML, SMALL_LESION_ML

    register_schemas()
    with initialize_config_module(config_module="ludl.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["calibration.min_volume_ml=null", "calibration.shrink=true"])
        default = compose(config_name="train")
    settings = OmegaConf.to_container(default.calibration)
    # docs/training.md "Region calibration": by patient, no shrinkage, lesions fitted on the ≥ 4 mL scored, on the
    # validation and training patients; the region kinetics model over the factors ("Region kinetics model")
    assert settings == {
        "enabled": True,
        "by_patient": True,
        "shrink": False,
        "min_volume_ml": {"lesions": 4.0},
        "fit_on": ["val", "train"],
        "region_model": {"enabled": True, "alpha": 0.3},
    }
    assert dict(FIT_MIN_VOLUME_ML) == {"lesions": 4.0} and SMALL_LESION_ML == 4.0  # the function's default agrees
    assert cfg.calibration.min_volume_ml is None and cfg.calibration.shrink is True


def test_calibration_splits_are_checked_before_training() -> None:
    from ludl.errors import LudlError
    from ludl.training.train import _calibration_splits

    assert _calibration_splits(OmegaConf.create({"calibration": {"fit_on": ["val"]}})) == ("val",)
    assert _calibration_splits(OmegaConf.create({})) == ("val",)
    with pytest.raises(LudlError, match=r"calibration\.fit_on names \['test'\]; give a list of \['val', 'train'\]"):
        _calibration_splits(OmegaConf.create({"calibration": {"fit_on": ["val", "test"]}}))
