"""The demo cohort cache of `python train.py`: reused for the same code, redone when generator or dosimetry change."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ludl.evaluation import pipeline


def _cfg(tmp_path: Path) -> Any:
    demo = SimpleNamespace(cache_dir=str(tmp_path), preset="tiny", n_patients=3, seed=0, workers=1, n_folds=3)
    return SimpleNamespace(demo=demo, paths=SimpleNamespace(kernel_cache_dir=str(tmp_path / "kernels")))


def test_cached_demo_is_reused_for_the_same_code_and_redone_after_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def synth(*args: Any, **kwargs: Any) -> None:
        calls.append("synth")

    def prepare(cohort: Path, prepared: Path, **kwargs: Any) -> Any:
        calls.append("prepare")
        Path(prepared).mkdir(parents=True, exist_ok=True)
        (Path(prepared) / "case.json").write_text("{}")
        return SimpleNamespace(ok=True)

    code = {"synth": "aaa", "prepared": "bbb"}
    monkeypatch.setattr("ludl.synth.cohort.run_synth", synth)
    monkeypatch.setattr("ludl.dosimetry.prepare.run_prepare", prepare)
    monkeypatch.setattr(
        "ludl.io.provenance.source_fingerprint", lambda *p: code["synth"] if p == ("synth",) else code["prepared"]
    )
    cfg = _cfg(tmp_path)
    pipeline.demo_cohort(cfg)
    pipeline.demo_cohort(cfg)
    assert calls == ["synth", "prepare"]  # the second call serves the cache
    code["prepared"] = "ccc"  # dosimetry changed: prepared again from scratch, the cohort kept
    _, prepared = pipeline.demo_cohort(cfg)
    assert calls == ["synth", "prepare", "prepare"]
    code["synth"] = "ddd"  # the generator changed: both redone
    pipeline.demo_cohort(cfg)
    assert calls == ["synth", "prepare", "prepare", "synth", "prepare"]
    assert (prepared / pipeline.PREPARED_COMPLETE).read_text().strip() == "ccc"


def test_an_interrupted_preparation_resumes_and_one_begun_by_other_code_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[set[str]] = []

    def prepare(cohort: Path, prepared: Path, **kwargs: Any) -> Any:
        seen.append({p.name for p in Path(prepared).iterdir()})  # what this call found already prepared
        (Path(prepared) / f"case{len(seen)}.json").write_text("{}")
        if len(seen) in (1, 3):
            raise KeyboardInterrupt  # stopped mid-way: no completion marker
        return SimpleNamespace(ok=True)

    code = {"prepared": "bbb"}
    monkeypatch.setattr("ludl.synth.cohort.run_synth", lambda *a, **k: None)
    monkeypatch.setattr("ludl.dosimetry.prepare.run_prepare", prepare)
    monkeypatch.setattr(
        "ludl.io.provenance.source_fingerprint", lambda *p: "aaa" if p == ("synth",) else code["prepared"]
    )
    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        pipeline.demo_cohort(cfg)
    pipeline.demo_cohort(cfg)  # the same code: the finished case is kept for run_prepare to skip
    assert "case1.json" in seen[1]
    (tmp_path / "tiny-n3-seed0" / "prepared" / pipeline.PREPARED_COMPLETE).unlink()
    with pytest.raises(KeyboardInterrupt):
        pipeline.demo_cohort(cfg)  # begun again, interrupted
    code["prepared"] = "ccc"  # then the dosimetry changed: the half-prepared cache is removed, not resumed
    _, prepared = pipeline.demo_cohort(cfg)
    assert seen[3] == {pipeline.PREPARED_STARTED}
    assert (prepared / pipeline.PREPARED_STARTED).read_text().strip() == "ccc"
