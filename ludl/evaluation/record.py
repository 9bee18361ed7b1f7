"""What an evaluation keeps beside its tables so `ludl evaluate` can redo it: ``inputs.json`` (the folders and
fold it read) and ``dose_slices.npz`` (the page's network vs ground-truth dose slices, which need the network)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import InputError
from ludl.evaluation.page import DoseSlice
from ludl.io.atomic import atomic_write_text

__all__ = ["DOSE_SLICES_FILE", "INPUTS_FILE", "load_dose_slices", "read_inputs", "save_dose_slices", "write_inputs"]

INPUTS_FILE = "inputs.json"
DOSE_SLICES_FILE = "dose_slices.npz"


def save_dose_slices(path: str | Path, slices: Sequence[DoseSlice]) -> Path:
    """The page's dose slices as one ``.npz`` (arrays + a JSON index), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    index = []
    for i, s in enumerate(slices):
        arrays[f"network_{i}"] = np.asarray(s.network_gy, dtype=np.float32)
        arrays[f"ground_truth_{i}"] = np.asarray(s.ground_truth_gy, dtype=np.float32)
        index.append(
            {
                "case_id": s.case_id,
                "timepoint_h": float(s.timepoint_h),
                "spacing_mm": [float(v) for v in s.spacing_mm],
                "orientation": s.orientation,
            }
        )
    arrays["index"] = np.asarray(json.dumps(index))
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(handle)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_dose_slices(path: str | Path) -> list[DoseSlice]:
    """The slices `save_dose_slices` wrote ([] when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with np.load(path, allow_pickle=False) as data:
            index = json.loads(str(data["index"]))
            return [
                DoseSlice(
                    str(item["case_id"]),
                    float(item["timepoint_h"]),
                    np.array(data[f"network_{i}"]),
                    np.array(data[f"ground_truth_{i}"]),
                    (float(item["spacing_mm"][0]), float(item["spacing_mm"][1])),
                    str(item.get("orientation", "coronal")),
                )
                for i, item in enumerate(index)
            ]
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{path} is not a dose-slice file of `ludl evaluate` ({err}); delete it") from err


def read_inputs(out_dir: str | Path) -> dict[str, Any]:
    """What an earlier evaluation in `out_dir` read (``inputs.json``), {} when there was none."""
    path = Path(out_dir) / INPUTS_FILE
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is unreadable ({err}); give prepared=, cohort= and fold= instead") from err
    return value if isinstance(value, dict) else {}


def write_inputs(out_dir: str | Path, inputs: Mapping[str, Any]) -> Path:
    """``inputs.json`` of an evaluation (plain JSON values), atomically."""
    return atomic_write_text(Path(out_dir) / INPUTS_FILE, json.dumps(dict(inputs), indent=1) + "\n")
