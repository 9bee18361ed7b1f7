"""What the data module knows of a prepared case before any patch is cut: its time points and their sampling index.

A `CaseRecord` is read from the case's sidecar alone (cheap, done for every case when the data module is set up).
A `TimepointData` is one time point's channel arrays (memory-mapped from the prepared store, or held in memory) plus
the index a sampler needs — the voxels of each segmentation class (for lesion-aware patch centres) and each
region's bounding box (for the "regions wholly inside the patch" lists). Building it reads every channel once and
refuses NaN/inf, naming case, time point and channel: that is the "first read" of a case.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.errors import InputError
from ludl.io.prepared import CASES_FOLDER, SIDECAR, PreparedCase, PreparedTimepoint, list_cases, read_case
from ludl.io.regions import SEGMENTATION_CLASSES, class_index, is_lesion_name
from ludl.physics.units import MBQ_PER_GBQ

__all__ = [
    "CASES_FOLDER",
    "INPUT_CHANNELS",
    "TARGET_CHANNELS",
    "CaseRecord",
    "TimepointData",
    "TimepointRecord",
    "cases_folder",
    "load_timepoint",
    "read_records",
]

INPUT_CHANNELS: tuple[str, ...] = ("spect", "pet", "density")
TARGET_CHANNELS: tuple[str, ...] = ("dose", "tia")
_N_CLASSES = len(SEGMENTATION_CLASSES)
_NEEDED = ("spect", "density", "dose", "tia", "labels", "classes", "gt_fov")  # every channel but the optional PET


@dataclass(frozen=True)
class TimepointRecord:
    """One time point of a case as a sample source: where it is and the scalars a sample carries.

    Attributes:
        case_id, folder: the case and the time point's folder; timepoint_h: nominal time; time_h: actual scan time.
        spacing_zyx_mm, shape_zyx: its grid; has_pet: a PET channel is stored; acquisition_s: scan time per bed
            (None where unknown), for the count-noise model; lr_axis: the array axis along the patient's left-right.
    """

    case_id: str
    folder: Path
    timepoint_h: float
    time_h: float
    spacing_zyx_mm: tuple[float, float, float]
    shape_zyx: tuple[int, int, int]
    has_pet: bool
    acquisition_s: float | None
    lr_axis: int


@dataclass(frozen=True)
class CaseRecord:
    """A prepared case as the data module sees it (sidecar only, no array read).

    Attributes:
        case_id, patient_id, cycle, path: the case.
        injected_gbq: net administered activity of the cycle (GBq).
        labelled: (n_classes,) bool, False for the classes the cohort did not contour (background always True).
        region_values: region name → value in the ``labels`` channel.
        region_dose_gy, region_dose_uncorrected_gy: region → ground-truth mean dose, partial-volume corrected and
            not (sidecar ground-truth rows; NaN where missing).
        timepoints: the time points used (ascending nominal time).
    """

    case_id: str
    patient_id: str
    cycle: int
    path: Path
    injected_gbq: float
    labelled: npt.NDArray[np.bool_]
    region_values: Mapping[str, int]
    region_dose_gy: Mapping[str, float]
    region_dose_uncorrected_gy: Mapping[str, float]
    timepoints: tuple[TimepointRecord, ...]

    def region_table(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.float32], Any]:
        """Region values, corrected and uncorrected mean doses and lesion flags, in region-value order."""
        names = sorted(self.region_values, key=lambda n: self.region_values[n])
        values = np.array([self.region_values[n] for n in names], dtype=np.int32)
        dose = np.array([self.region_dose_gy.get(n, math.nan) for n in names], dtype=np.float32)
        uncorrected = np.array([self.region_dose_uncorrected_gy.get(n, math.nan) for n in names], dtype=np.float32)
        lesion = np.array([is_lesion_name(n) for n in names], dtype=bool)
        return values, dose, uncorrected, lesion


@dataclass(frozen=True, eq=False)
class TimepointData:
    """One time point's arrays (z, y, x) and its sampling index.

    Attributes:
        arrays: channel (`ludl.io.prepared.CHANNELS` names) → array as stored (memory-mapped or in memory).
        class_voxels: class index (> 0) → flat indices of its voxels (lesion-aware patch centres).
        region_boxes: region value → (lo, hi) inclusive voxel bounds (z, y, x) of its voxels on this grid.
    """

    arrays: Mapping[str, npt.NDArray[Any]]
    class_voxels: Mapping[int, npt.NDArray[np.int64]]
    region_boxes: Mapping[int, tuple[tuple[int, int, int], tuple[int, int, int]]]


def cases_folder(prepared_dir: str | Path) -> Path:
    """The folder holding the case folders: ``<prepared>/cases``, or the folder itself when it holds cases."""
    root = Path(prepared_dir)
    if not root.is_dir():
        raise InputError(
            f"prepared folder {root} does not exist; run `ludl prepare cohort=… out={root}` or point the config's "
            "data.prepared_dir at an existing prepared folder"
        )
    return root / CASES_FOLDER if (root / CASES_FOLDER).is_dir() else root


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _labelled_mask(case: PreparedCase) -> npt.NDArray[np.bool_]:
    meta = case.sidecar
    labelled = np.zeros(_N_CLASSES, dtype=bool)
    for name in meta.get("labelled_classes", ()):
        labelled[class_index(str(name))] = True
    for name in meta.get("unlabeled", ()):
        labelled[class_index(str(name))] = False
    labelled[0] = True  # background is what every contoured class is not: always known
    return labelled


def _left_right_axis(direction: Any) -> int:
    """Array axis (0 z, 1 y, 2 x) that runs along the patient's left-right (LPS x): the one to swap sides on."""
    if direction is None:
        return 2
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    column = int(np.argmax(np.abs(matrix[0, :])))  # ITK direction: column j is index axis j (x, y, z) in LPS
    return 2 - column


def _timepoint_record(case: PreparedCase, tp: PreparedTimepoint) -> TimepointRecord:
    info = tp.info
    beds = [a for a in info.get("acquisition_s") or () if a is not None]
    shape = [int(s) for s in info["shape_zyx"]]
    return TimepointRecord(
        case_id=case.case_id,
        folder=tp.folder,
        timepoint_h=tp.timepoint_h,
        time_h=float(info.get("time_h", tp.timepoint_h)),
        spacing_zyx_mm=tp.spacing_zyx_mm,
        shape_zyx=(shape[0], shape[1], shape[2]),
        has_pet="pet" in info["files"] and case.sidecar.get("pet") is not None,
        acquisition_s=float(np.median(beds)) if beds else None,
        lr_axis=_left_right_axis(info.get("direction")),
    )


def _record(case: PreparedCase, timepoints_h: Sequence[float] | None) -> CaseRecord:
    rows = {str(r["region"]): r for r in case.sidecar.get("regions", ())}
    tps = [
        tp
        for tp in case.timepoints
        if timepoints_h is None or any(math.isclose(tp.timepoint_h, float(t), abs_tol=1e-6) for t in timepoints_h)
    ]
    for tp in tps:
        lacking = [c for c in _NEEDED if c not in tp.info["files"]]
        if lacking:
            raise InputError(
                f"{tp.folder}: no {', '.join(lacking)} channel, which training needs; rerun "
                "`ludl prepare … overwrite=true` with ground truth"
            )
    return CaseRecord(
        case_id=case.case_id,
        patient_id=case.patient_id,
        cycle=case.cycle,
        path=case.path,
        injected_gbq=float(case.sidecar["net_administered_mbq"]) / MBQ_PER_GBQ,
        labelled=_labelled_mask(case),
        region_values=case.region_values,
        region_dose_gy={n: _float_or_nan(r.get("mean_dose_gy")) for n, r in rows.items()},
        region_dose_uncorrected_gy={n: _float_or_nan(r.get("mean_dose_uncorrected_gy")) for n, r in rows.items()},
        timepoints=tuple(_timepoint_record(case, tp) for tp in tps),
    )


def read_records(prepared_dir: str | Path, timepoints_h: Sequence[float] | None = None) -> tuple[CaseRecord, ...]:
    """Every complete case of a prepared folder, sorted by case id; `timepoints_h` keeps only those nominal times.

    Raises:
        InputError: no such folder, no case of the current format (a case of another format version is read to
            give its message), or a case without the wanted time points.
    """
    folder = cases_folder(prepared_dir)
    paths = list_cases(folder)
    if not paths:
        # list_cases skips other format versions silently: read one to surface its "rerun ludl prepare" message.
        for candidate in sorted(p for p in folder.iterdir() if (p / SIDECAR).is_file()):
            read_case(candidate)
        raise InputError(f"{folder} holds no prepared case; run `ludl prepare cohort=… out={Path(prepared_dir)}`")
    others = [p for p in sorted(folder.iterdir()) if (p / SIDECAR).is_file() and p not in paths]
    for path in others:
        read_case(path)  # raises the format-version message for a stale case instead of silently dropping it
    records = []
    for path in paths:
        record = _record(read_case(path), timepoints_h)
        if not record.timepoints:
            raise InputError(
                f"{path}: none of the time points {', '.join(f'{t:g}' for t in timepoints_h or ())} h; drop "
                "data.timepoints_h or pick times every case has (dataset.json lists them)"
            )
        records.append(record)
    return tuple(records)


def _check_finite(record: TimepointRecord, channel: str, array: npt.NDArray[Any]) -> None:
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        what = "input channel" if channel in INPUT_CHANNELS else "target channel"
        raise InputError(
            f"case {record.case_id}, time point {record.timepoint_h:g} h: {bad} NaN/inf voxel(s) in {what} "
            f"{channel!r} ({record.folder}); fix the source image and rerun `ludl prepare … overwrite=true`"
        )


def load_timepoint(record: TimepointRecord, *, in_memory: bool) -> TimepointData:
    """Open one time point (memory-mapped, or read into memory), check every float channel is finite, index it."""
    tp = read_case(record.folder.parent).timepoint(record.timepoint_h)
    arrays: dict[str, npt.NDArray[Any]] = {}
    for channel in tp.channels:
        array = tp.array(channel, mmap=not in_memory)
        _check_finite(record, channel, array)
        arrays[channel] = array
    classes = np.asarray(arrays["classes"]).ravel()
    # One stable argsort gives every class's voxels at once (faster than one np.flatnonzero per class).
    order = np.argsort(classes, kind="stable")
    bounds = np.searchsorted(classes[order], np.arange(_N_CLASSES + 1))
    class_voxels = {
        c: order[bounds[c] : bounds[c + 1]].astype(np.int64) for c in range(1, _N_CLASSES) if bounds[c + 1] > bounds[c]
    }
    labels = np.asarray(arrays["labels"])
    boxes: dict[int, tuple[tuple[int, int, int], tuple[int, int, int]]] = {}
    if labels.size and labels.max() > 0:
        for value, box in enumerate(ndimage.find_objects(np.clip(labels, 0, None)), start=1):
            if box is not None:
                lo = (box[0].start, box[1].start, box[2].start)
                hi = (box[0].stop - 1, box[1].stop - 1, box[2].stop - 1)
                boxes[value] = (lo, hi)
    return TimepointData(arrays=arrays, class_voxels=class_voxels, region_boxes=boxes)
