"""The time-point cache: `none`, `memory` (CacheDataset-like) or `disk` (PersistentDataset-like).

What is cached is the deterministic part of a sample, `ludl.data.cases.TimepointData`; the random crop and
augmentation run on every draw.

- ``none``: arrays stay memory-mapped from the prepared store (a patch reads only its voxels); the small sampling
  index (class voxels, region boxes) is built on a time point's first read in each process and kept.
- ``memory``: every time point's arrays are read into memory once, up front (`TimepointStore.fill`, before the
  workers fork, so they share the pages); fastest, costs the cohort's size in RAM.
- ``disk``: arrays memory-mapped as with ``none``; the sampling index is written under `cache_dir` (one ``.npz``
  per time point, keyed by a hash of the case's sidecar so that a re-prepared case is re-indexed) and read back
  by every later process and run instead of being rebuilt. The finite-value check ran when it was written.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ludl.data.cases import TimepointData, TimepointRecord, load_timepoint
from ludl.errors import InputError
from ludl.io.prepared import SIDECAR, read_case

__all__ = ["CACHE_MODES", "TimepointStore"]

CACHE_MODES: tuple[str, ...] = ("none", "memory", "disk")
_INDEX_VERSION = 1


class TimepointStore:
    """Hands out `TimepointData` per time point under one cache mode.

    Args:
        cache: ``none``, ``memory`` or ``disk``.
        cache_dir: the folder of the ``disk`` cache (created when missing).
    """

    def __init__(self, cache: str = "memory", cache_dir: str | Path | None = None) -> None:
        if cache not in CACHE_MODES:
            raise InputError(f"cache={cache!r} is not one of {', '.join(CACHE_MODES)}; set data.cache")
        if cache == "disk" and cache_dir is None:
            raise InputError("cache=disk needs a cache folder: set data.cache_dir (or use cache=memory or none)")
        self.cache = cache
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._held: dict[tuple[str, float], TimepointData] = {}

    def get(self, record: TimepointRecord) -> TimepointData:
        """The time point's data (built, or read from the cache, on first use in this process)."""
        key = (record.case_id, record.timepoint_h)
        data = self._held.get(key)
        if data is None:
            data = self._build(record)
            self._held[key] = data
        return data

    def fill(self, records: list[TimepointRecord]) -> None:
        """Build every time point now (the ``memory`` cache fills up front; others index up front, so bad input
        fails at setup and not in a worker)."""
        for record in records:
            self.get(record)

    def _build(self, record: TimepointRecord) -> TimepointData:
        if self.cache == "memory":
            return load_timepoint(record, in_memory=True)
        if self.cache == "none":
            return load_timepoint(record, in_memory=False)
        return self._from_disk(record)

    def _index_file(self, record: TimepointRecord) -> Path:
        if self.cache_dir is None:  # refused in __init__; narrows the type
            raise InputError("cache=disk needs data.cache_dir")
        sidecar = (record.folder.parent / SIDECAR).read_bytes()
        digest = hashlib.sha1(sidecar).hexdigest()[:16]
        return self.cache_dir / record.case_id / f"{record.folder.name}-{digest}-v{_INDEX_VERSION}.npz"

    def _from_disk(self, record: TimepointRecord) -> TimepointData:
        file = self._index_file(record)
        if file.is_file():
            try:
                return _read_index(record, file)
            except (OSError, ValueError, KeyError) as err:
                raise InputError(
                    f"{file}: unreadable cache entry ({err}); delete {self.cache_dir} to rebuild it"
                ) from err
        data = load_timepoint(record, in_memory=False)
        _write_index(data, file)
        return data


def _write_index(data: TimepointData, file: Path) -> None:
    """Write the sampling index atomically (a temporary file renamed onto `file`)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    classes = sorted(data.class_voxels)
    values = sorted(data.region_boxes)
    arrays: dict[str, Any] = {
        "classes": np.asarray(classes, dtype=np.int64),
        "class_counts": np.asarray([len(data.class_voxels[c]) for c in classes], dtype=np.int64),
        "class_voxels": np.concatenate([data.class_voxels[c] for c in classes]) if classes else np.zeros(0, np.int64),
        "region_values": np.asarray(values, dtype=np.int64),
        "region_boxes": np.asarray(
            [[*data.region_boxes[v][0], *data.region_boxes[v][1]] for v in values], np.int64
        ).reshape(-1, 6),
    }
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, file)


def _read_index(record: TimepointRecord, file: Path) -> TimepointData:
    with np.load(file, allow_pickle=False) as z:
        classes, counts, voxels = z["classes"], z["class_counts"], z["class_voxels"]
        values, boxes = z["region_values"], z["region_boxes"]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    class_voxels = {int(c): voxels[offsets[i] : offsets[i + 1]] for i, c in enumerate(classes)}
    region_boxes = {
        int(v): ((int(b[0]), int(b[1]), int(b[2])), (int(b[3]), int(b[4]), int(b[5])))
        for v, b in zip(values, boxes, strict=True)
    }
    tp = read_case(record.folder.parent).timepoint(record.timepoint_h)
    arrays = {channel: tp.array(channel, mmap=True) for channel in tp.channels}
    return TimepointData(arrays=arrays, class_voxels=class_voxels, region_boxes=region_boxes)
