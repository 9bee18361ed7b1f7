"""The model artifact: round trip gives identical predictions; weights_only loading; bad files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ludl.errors import LudlError
from ludl.training.artifact import MODEL_FILE, WEIGHTS_FILE, load_artifact, load_network, save_artifact
from ludl.training.module import build_dosenet
from tests.training.standins import TINY_MODEL, make_batch


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    net = build_dosenet(TINY_MODEL).eval()
    folder = tmp_path_factory.mktemp("artifact") / "model"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    save_artifact(folder, state, {"network": TINY_MODEL, "classes": []}, {"val/region_mae": 12.5})
    return folder, net


def test_round_trip_gives_identical_predictions(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, net = saved
    loaded, artifact = load_network(folder)
    batch = make_batch(1)
    with torch.inference_mode():
        a, b = net(batch), loaded(batch)
    assert torch.equal(a.dose_gy, b.dose_gy) and torch.equal(a.seg_logits, b.seg_logits)
    assert artifact.metrics["val/region_mae"] == 12.5
    assert artifact.model["format_version"] == 1 and artifact.model["ludl_version"]
    # the weights file is plain tensors: torch's safe loader reads it
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    assert set(state) == {f"net.{k}" for k in net.state_dict()}


def test_truncated_weights_are_refused(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    folder, _ = saved
    copy = tmp_path / "model"
    copy.mkdir()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        (copy / name).write_bytes((folder / name).read_bytes())
    data = (copy / WEIGHTS_FILE).read_bytes()
    (copy / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(LudlError, match=r"weights\.pt is truncated or corrupt.*retrain"):
        load_artifact(copy)
    (copy / MODEL_FILE).write_text('{"format_version": 1, "netw')
    with pytest.raises(LudlError, match=r"model\.json is truncated or corrupt"):
        load_artifact(copy)


def test_other_format_version_is_refused(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    folder, _ = saved
    copy = tmp_path / "model"
    copy.mkdir()
    document = json.loads((folder / MODEL_FILE).read_text())
    document["format_version"] = 99
    (copy / MODEL_FILE).write_text(json.dumps(document))
    (copy / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes())
    with pytest.raises(LudlError, match=r"model\.json: artifact format version 99, this ludl reads version 1"):
        load_artifact(copy)
    with pytest.raises(LudlError, match=r"model\.json is missing"):
        load_artifact(tmp_path / "nothing")
