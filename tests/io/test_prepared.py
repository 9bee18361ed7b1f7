"""The prepared-case store: round trip, memory mapping, atomic writes, versions, listing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ludl.io.prepared as store
from ludl.errors import GeometryError, InputError
from ludl.imaging import Volume
from ludl.io.nifti import read_nifti
from ludl.io.prepared import (
    FORMAT_VERSION,
    SIDECAR,
    CaseTimepoint,
    case_is_complete,
    clean_stale,
    list_cases,
    read_case,
    timepoint_folder,
    to_jsonable,
    write_case,
)

# A non-trivial direction (axes permuted, z flipped) and anisotropic voxels: geometry must survive the round trip.
DIRECTION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def _grid(shape: tuple[int, int, int] = (4, 5, 6), spacing: tuple[float, float, float] = (3.0, 2.0, 1.5)) -> Volume:
    rng = np.random.default_rng(1)
    return Volume(rng.uniform(0, 1e5, shape).astype(np.float32), spacing, (5.0, -3.0, 7.0), DIRECTION, unit="Bq/mL")


def _timepoint(t_h: float, grid: Volume | None = None) -> CaseTimepoint:
    g = grid or _grid()
    labels = np.zeros(g.shape, dtype=np.int32)
    labels[1:3, 1:3, 1:3] = 4
    volumes = {
        "spect": g,
        "tia": g.with_array(np.asarray(g.array) * 1e-6 * 50.0, unit="MBq*h/mL"),
        "dose": g.with_array(np.full(g.shape, 2.5, dtype=np.float64), unit="Gy"),
        "labels": g.with_array(labels, unit="label"),
        "gt_fov": g.with_array(np.ones(g.shape, dtype=bool), unit="mask"),
    }
    return CaseTimepoint(t_h, volumes, {"time_h": t_h + 0.3, "registration": {"hu_correlation": math.nan}})


def test_round_trip_keeps_arrays_geometry_and_sidecar(tmp_path: Path) -> None:
    tp4, tp24 = _timepoint(4.0), _timepoint(24.0, _grid((3, 4, 5), (4.8, 4.8, 4.8)))
    path = write_case(tmp_path, "P01_c1", [tp24, tp4], {"patient_id": "P01", "cycle": 1, "injected_mbq": 7400.0})
    case = read_case(path)
    assert (case.case_id, case.patient_id, case.cycle) == ("P01_c1", "P01", 1)
    assert case.sidecar["format_version"] == FORMAT_VERSION and case.sidecar["injected_mbq"] == 7400.0
    assert [t.timepoint_h for t in case.timepoints] == [4.0, 24.0]  # sorted by time
    for written, tp in ((tp4, case.timepoint(4.0)), (tp24, case.timepoint(24.0))):
        assert tp.folder.name == timepoint_folder(written.timepoint_h)
        assert tp.info["time_h"] == written.timepoint_h + 0.3
        assert tp.info["registration"]["hu_correlation"] is None  # NaN is not JSON: stored as null
        for channel, volume in written.volumes.items():
            back = tp.volume(channel)
            assert back.same_grid(volume) and np.allclose(back.direction, DIRECTION)
            assert back.unit == volume.unit
            np.testing.assert_array_equal(np.asarray(back.array), np.asarray(volume.array).astype(back.array.dtype))
    dose = case.timepoint(4.0).array("dose")
    assert dose.dtype == np.float32 and (isinstance(dose, np.memmap) or isinstance(dose.base, np.memmap))
    with pytest.raises(InputError, match="no channel 'pet'"):
        case.timepoint(4.0).array("pet")
    with pytest.raises(InputError, match="no time point 48"):
        case.timepoint(48.0)


def test_arrays_are_plain_npy_and_memory_mapped(tmp_path: Path) -> None:
    path = write_case(tmp_path, "A_c1", [_timepoint(4.0)], {"patient_id": "A", "cycle": 1})
    file = path / "tp_4h" / "spect_bq_per_ml.npy"
    mapped = np.load(file, mmap_mode="r")  # any NumPy reader, no ludl needed
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert file.stat().st_size == mapped.nbytes + 128  # uncompressed: data plus the .npy header


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store._write_array
    calls = {"n": 0}

    def fail_on_third(path: Path, array: Any, dtype: str) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real(path, array, dtype)

    monkeypatch.setattr(store, "_write_array", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        write_case(tmp_path, "A_c1", [_timepoint(4.0)], {"patient_id": "A", "cycle": 1})
    assert list(tmp_path.iterdir()) == []


def test_existing_case_needs_overwrite_and_is_replaced_whole(tmp_path: Path) -> None:
    write_case(tmp_path, "A_c1", [_timepoint(4.0), _timepoint(24.0)], {"patient_id": "A", "cycle": 1, "v": 1})
    with pytest.raises(InputError, match="overwrite"):
        write_case(tmp_path, "A_c1", [_timepoint(4.0)], {"patient_id": "A", "cycle": 1, "v": 2})
    write_case(tmp_path, "A_c1", [_timepoint(48.0)], {"patient_id": "A", "cycle": 1, "v": 2}, overwrite=True)
    case = read_case(tmp_path / "A_c1")
    assert case.sidecar["v"] == 2 and [t.timepoint_h for t in case.timepoints] == [48.0]
    assert sorted(p.name for p in (tmp_path / "A_c1").iterdir()) == [SIDECAR, "tp_48h"]  # old time points gone
    assert [p.name for p in tmp_path.iterdir()] == ["A_c1"]  # no temporary folders left


def test_incomplete_and_other_versions_are_not_complete(tmp_path: Path) -> None:
    path = write_case(tmp_path, "A_c1", [_timepoint(4.0)], {"patient_id": "A", "cycle": 1})
    write_case(tmp_path, "B_c1", [_timepoint(4.0)], {"patient_id": "B", "cycle": 1})
    (tmp_path / "C_c1").mkdir()  # a folder without sidecar
    (tmp_path / ".B_c1.tmp-0123abcd").mkdir()  # a killed writer's leftovers
    assert [p.name for p in list_cases(tmp_path)] == ["A_c1", "B_c1"]
    doc = json.loads((path / SIDECAR).read_text())
    doc["format_version"] = FORMAT_VERSION + 1
    (path / SIDECAR).write_text(json.dumps(doc))
    assert not case_is_complete(path)
    with pytest.raises(InputError, match="format version"):
        read_case(path)
    with pytest.raises(InputError, match="not a prepared case"):
        read_case(tmp_path / "C_c1")
    assert [p.name for p in clean_stale(tmp_path, "B_c1")] == [".B_c1.tmp-0123abcd"]
    assert not (tmp_path / ".B_c1.tmp-0123abcd").exists() and case_is_complete(tmp_path / "B_c1")


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    g = _grid()
    other = _grid((4, 5, 7))
    with pytest.raises(GeometryError):
        write_case(tmp_path, "A_c1", [CaseTimepoint(4.0, {"spect": g, "dose": other})], {})
    with pytest.raises(InputError, match="unknown channel"):
        write_case(tmp_path, "A_c1", [CaseTimepoint(4.0, {"spect": g, "ct": g})], {})
    with pytest.raises(InputError, match="no spect"):
        write_case(tmp_path, "A_c1", [CaseTimepoint(4.0, {"dose": g})], {})
    for bad in ("../x", ".hidden", "a b", ""):
        with pytest.raises(InputError, match="safe folder name"):
            write_case(tmp_path, bad, [CaseTimepoint(4.0, {"spect": g})], {})
    assert list(tmp_path.iterdir()) == []


def test_nifti_copies_match_the_arrays(tmp_path: Path) -> None:
    tp = _timepoint(4.0)
    path = write_case(tmp_path, "A_c1", [tp], {"patient_id": "A", "cycle": 1}, nifti=True)
    info = read_case(path).timepoint(4.0).info
    for channel in ("spect", "labels", "gt_fov"):
        copy = read_nifti(path / "tp_4h" / info["files"][channel]["nifti"])
        assert copy.same_grid(tp.volumes[channel])
        np.testing.assert_array_equal(
            np.asarray(copy.array, dtype=np.float64), np.asarray(tp.volumes[channel].array, dtype=np.float64)
        )


def test_to_jsonable_makes_plain_json() -> None:
    value = {"a": np.float32(1.5), "b": (np.int64(2), math.inf), "c": np.array([[1, 2]]), "d": np.bool_(True)}
    assert json.loads(json.dumps(to_jsonable(value), allow_nan=False)) == {
        "a": 1.5,
        "b": [2, None],
        "c": [[1, 2]],
        "d": True,
    }
    assert timepoint_folder(0.5) == "tp_0p5h" and timepoint_folder(168) == "tp_168h"


def test_a_version_1_case_is_refused_with_the_rerun_message(tmp_path: Path) -> None:
    path = write_case(tmp_path, "A_c1", [_timepoint(4.0)], {"patient_id": "A", "cycle": 1})
    doc = json.loads((path / SIDECAR).read_text())
    doc["format_version"] = 1  # what ludl wrote before the classes channel and the typed sidecars
    (path / SIDECAR).write_text(json.dumps(doc))
    assert FORMAT_VERSION == 2 and not case_is_complete(path) and list_cases(tmp_path) == ()
    with pytest.raises(InputError) as caught:
        read_case(path)
    message = str(caught.value)
    assert str(path / SIDECAR) in message and "format version 1" in message
    assert "rerun `ludl prepare … overwrite=true`" in message


def test_intensity_statistics_of_the_stored_values_over_body_voxels(tmp_path: Path) -> None:
    tp = _timepoint(4.0)
    g = tp.volumes["spect"]
    density = np.full(g.shape, 1.0, dtype=np.float32)
    density[0] = 0.0012  # an air slab: not body
    volumes = {**tp.volumes, "density": g.with_array(density, unit="g/mL")}
    path = write_case(tmp_path, "A_c1", [CaseTimepoint(4.0, volumes)], {"patient_id": "A", "injected_mbq": 7400.0})
    written = read_case(path).timepoint(4.0)
    stats = written.intensity
    assert set(stats) == {"spect", "density", "tia", "dose", "spect_per_gbq"}
    spect = np.asarray(written.array("spect"), dtype=np.float64)[1:].ravel()
    assert stats["spect"].n_voxels == spect.size
    assert stats["spect"].mean == pytest.approx(spect.mean(), rel=1e-12)
    assert stats["spect"].std == pytest.approx(spect.std(), rel=1e-12)
    assert stats["spect"].p0_5 == pytest.approx(np.percentile(spect, 0.5), rel=1e-12)
    assert stats["spect"].p99_5 == pytest.approx(np.percentile(spect, 99.5), rel=1e-12)
    assert stats["spect_per_gbq"].p50 == pytest.approx(np.median(spect) / 7.4, rel=1e-12)
    assert (stats["dose"].mean, stats["dose"].std) == (2.5, 0.0)
    assert stats["density"].n_voxels == spect.size and stats["density"].mean == 1.0
