"""``dataset.json``: the dataset-level descriptor of a folder of prepared cases, as nnU-Net's plans are of theirs.

`ludl prepare` writes it beside ``splits.json`` once every case of the cohort is settled; a model artifact copies
it, so that inference knows the channels and units, the class table, the spacings and the intensity statistics
the network was trained on. It is built from the case sidecars alone (`build_dataset_descriptor`; no array is read
again) and holds nothing that changes between runs (no times, no paths): a resumed run rewrites it byte for byte.

Intensity statistics per channel over the body voxels of every time point of every case (`IntensityStats.pooled`:
exact pooled mean and std; percentiles are the medians of the per-time-point ones); PET per tracer; SPECT also per
injected GBq.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text
from ludl.io.prepared import CHANNELS, FORMAT_NAME, FORMAT_VERSION, PreparedCase, read_versioned_json
from ludl.io.prepared_sidecar import to_jsonable
from ludl.io.prepared_stats import IntensityStats
from ludl.io.regions import SEGMENTATION_CLASSES

__all__ = [
    "DATASET_FILE",
    "DATASET_FORMAT",
    "DatasetDescriptor",
    "build_dataset_descriptor",
    "read_dataset_descriptor",
    "write_dataset_descriptor",
]

DATASET_FILE = "dataset.json"
DATASET_FORMAT = "ludl-prepared-dataset"
_UNKNOWN_TRACER = "unknown"
_RERUN = "rerun `ludl prepare … overwrite=true`"


@dataclass(frozen=True)
class DatasetDescriptor:
    """What a set of prepared cases holds (the ``dataset.json`` document).

    Attributes:
        format, format_version: `DATASET_FORMAT` and the prepared-case `FORMAT_VERSION` it describes.
        channels: channel → ``file`` stem, ``unit`` and ``dtype`` (`ludl.io.prepared.CHANNELS`).
        classes: the class table (``index, name, kind``: `ludl.io.regions.SEGMENTATION_CLASSES`).
        labelled_classes: classes contoured in every case; unlabeled: classes unknown in at least one case.
        nuclides: radionuclides of the cases.
        n_cases, n_patients, case_ids: the cases described (sorted).
        timepoints_h: nominal time point → number of cases that have it.
        spacings: ``case_id, timepoint_h, spacing_zyx_mm`` of every time point; median_spacing_zyx_mm: their median.
        intensity: channel (and ``spect_per_gbq``) → statistics over body voxels of every case and time point.
        pet_intensity: PET tracer → statistics of the ``pet`` channel.
        dosimetry: the dosimetry settings of the ground truth (`DosimetryOptions.settings()`).
    """

    format: str
    format_version: int
    channels: Mapping[str, Mapping[str, str]]
    classes: tuple[Mapping[str, Any], ...]
    labelled_classes: tuple[str, ...]
    unlabeled: tuple[str, ...]
    nuclides: tuple[str, ...]
    n_cases: int
    n_patients: int
    case_ids: tuple[str, ...]
    timepoints_h: Mapping[str, int]
    spacings: tuple[Mapping[str, Any], ...]
    median_spacing_zyx_mm: tuple[float, float, float]
    intensity: Mapping[str, IntensityStats]
    pet_intensity: Mapping[str, IntensityStats]
    dosimetry: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (NaN as None)."""
        out: dict[str, Any] = {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)}
        out["intensity"] = {k: v.to_dict() for k, v in self.intensity.items()}
        out["pet_intensity"] = {k: v.to_dict() for k, v in self.pet_intensity.items()}
        return out

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> DatasetDescriptor:
        """What `to_dict` wrote; raises `InputError` for anything else."""
        try:
            spacing = [float(v) for v in document["median_spacing_zyx_mm"]]
            return cls(
                format=str(document["format"]),
                format_version=int(document["format_version"]),
                channels={str(k): {str(a): str(b) for a, b in v.items()} for k, v in document["channels"].items()},
                classes=tuple(dict(c) for c in document["classes"]),
                labelled_classes=tuple(str(c) for c in document["labelled_classes"]),
                unlabeled=tuple(str(c) for c in document["unlabeled"]),
                nuclides=tuple(str(n) for n in document["nuclides"]),
                n_cases=int(document["n_cases"]),
                n_patients=int(document["n_patients"]),
                case_ids=tuple(str(c) for c in document["case_ids"]),
                timepoints_h={str(k): int(v) for k, v in document["timepoints_h"].items()},
                spacings=tuple(dict(s) for s in document["spacings"]),
                median_spacing_zyx_mm=(spacing[0], spacing[1], spacing[2]),
                intensity={str(k): IntensityStats.from_dict(v) for k, v in document["intensity"].items()},
                pet_intensity={str(k): IntensityStats.from_dict(v) for k, v in document["pet_intensity"].items()},
                dosimetry=dict(document["dosimetry"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise InputError(f"not a {DATASET_FILE} document ({type(err).__name__}: {err}); {_RERUN}") from err


def _timepoint_key(timepoint_h: float) -> str:
    return f"{float(timepoint_h):g}"


def build_dataset_descriptor(cases: Sequence[PreparedCase], dosimetry: Mapping[str, Any]) -> DatasetDescriptor:
    """The descriptor of these cases (any order) from their sidecars; every case must share `dosimetry`.

    Raises:
        InputError: no case, or a case prepared with other dosimetry settings (naming its sidecar).
    """
    if not cases:
        raise InputError(f"no prepared case to describe in {DATASET_FILE}; run `ludl prepare`")
    ordered = sorted(cases, key=lambda c: c.case_id)
    settings = to_jsonable(dict(dosimetry))
    per_channel: dict[str, list[IntensityStats]] = {}
    per_tracer: dict[str, list[IntensityStats]] = {}
    spacings: list[dict[str, Any]] = []
    counts: dict[float, int] = {}
    labelled = {c.name for c in SEGMENTATION_CLASSES}
    unlabeled: set[str] = set()
    nuclides: set[str] = set()
    for case in ordered:
        meta = case.meta
        if to_jsonable(dict(meta.dosimetry)) != settings:
            raise InputError(
                f"{case.path / 'case.json'} was prepared with dosimetry settings {dict(meta.dosimetry)}, not "
                f"{settings}; {_RERUN} with one set of settings"
            )
        labelled &= set(meta.labelled_classes)
        unlabeled |= set(meta.unlabeled)
        nuclides.add(meta.nuclide)
        tracer = meta.pet.tracer if meta.pet is not None and meta.pet.tracer else _UNKNOWN_TRACER
        for tp in case.timepoints:
            counts[tp.timepoint_h] = counts.get(tp.timepoint_h, 0) + 1
            spacings.append(
                {"case_id": case.case_id, "timepoint_h": tp.timepoint_h, "spacing_zyx_mm": list(tp.spacing_zyx_mm)}
            )
            for channel, stats in tp.intensity.items():
                if channel == "pet":
                    per_tracer.setdefault(tracer, []).append(stats)
                else:
                    per_channel.setdefault(channel, []).append(stats)
    median = np.median(np.asarray([s["spacing_zyx_mm"] for s in spacings], dtype=np.float64), axis=0)
    return DatasetDescriptor(
        format=DATASET_FORMAT,
        format_version=FORMAT_VERSION,
        channels={name: {"file": stem, "unit": unit, "dtype": dtype} for name, (stem, unit, dtype) in CHANNELS.items()},
        classes=tuple({"index": c.index, "name": c.name, "kind": c.kind} for c in SEGMENTATION_CLASSES),
        labelled_classes=tuple(c.name for c in SEGMENTATION_CLASSES if c.name in labelled and c.index > 0),
        unlabeled=tuple(c.name for c in SEGMENTATION_CLASSES if c.name in unlabeled),
        nuclides=tuple(sorted(nuclides)),
        n_cases=len(ordered),
        n_patients=len({c.patient_id for c in ordered}),
        case_ids=tuple(c.case_id for c in ordered),
        timepoints_h={_timepoint_key(t): counts[t] for t in sorted(counts)},
        spacings=tuple(spacings),
        median_spacing_zyx_mm=(float(median[0]), float(median[1]), float(median[2])),
        intensity={k: IntensityStats.pooled(v) for k, v in sorted(per_channel.items())},
        pet_intensity={k: IntensityStats.pooled(v) for k, v in sorted(per_tracer.items())},
        dosimetry=settings,
    )


def write_dataset_descriptor(descriptor: DatasetDescriptor, path: str | Path) -> Path:
    """Write ``dataset.json`` atomically (`path`: the file or its folder); returns the file."""
    file = Path(path)
    if file.is_dir():
        file = file / DATASET_FILE
    document = {"case_format": FORMAT_NAME, **descriptor.to_dict()}
    return atomic_write_text(file, json.dumps(document, indent=1, allow_nan=False) + "\n")


def read_dataset_descriptor(path: str | Path) -> DatasetDescriptor:
    """Read ``dataset.json`` (the file or its folder); refuses another format or format version."""
    file = Path(path)
    if file.is_dir():
        file = file / DATASET_FILE
    missing = f"{file} not found; `ludl prepare` writes it once every case is prepared"
    document = read_versioned_json(file, DATASET_FORMAT, missing=missing, what="the cases and the descriptor")
    return DatasetDescriptor.from_dict(document)
