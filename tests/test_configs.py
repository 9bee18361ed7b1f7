"""The packaged configs: composition, the schemas' refusals, job help, run folders, failures under every launcher."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from ludl import cli
from ludl.cli import CONFIG_DIR, CONFIG_MODULE, JOBS, main
from ludl.configs.schema import register_schemas
from ludl.dosimetry.options import DosimetryOptions
from ludl.synth.config import make_config
from ludl.synth.presets import PRESETS, get_preset
from ludl.synth.priors import default_priors

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    code = exit_info.value.code
    return int(code) if code is not None else 0


@pytest.fixture()
def composed() -> Iterator[Any]:
    """`compose(job, overrides)` on the packaged configs, as the CLI composes them."""
    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):

        def _compose(job: str, overrides: list[str] | None = None) -> DictConfig:
            return compose(config_name=job, overrides=overrides or [])

        yield _compose


# ------------------------------------------------------------------------------------------------ composition


@pytest.mark.parametrize("job", list(JOBS))
def test_every_primary_config_composes_and_resolves(job: str, composed: Any) -> None:
    cfg = composed(job)
    values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(values, dict) and values


def test_configs_are_package_data_beside_the_code() -> None:
    assert CONFIG_DIR == REPO_ROOT / "ludl" / "configs"
    assert not (REPO_ROOT / "configs").exists()  # one place for configs: inside the package
    for job in JOBS:
        assert (CONFIG_DIR / f"{job}.yaml").is_file()


def test_dosimetry_group_gives_the_documented_defaults(composed: Any) -> None:
    for job in ("dosimetry", "prepare"):
        group = OmegaConf.to_container(composed(job).dosimetry, resolve=True)
        options = DosimetryOptions.from_mapping(group)  # type: ignore[arg-type]
        # the dataclass's own defaults (ludl/dosimetry/options.py) are what the group gives
        assert dataclasses.replace(options, kernel_cache_dir=None) == DosimetryOptions()
        assert options.kernel_cache_dir is not None and options.kernel_cache_dir.parts[-2:] == ("ludl", "kernels")


def test_one_kernel_cache_dir_follows_paths(composed: Any, tmp_path: Path) -> None:
    override = [f"paths.kernel_cache_dir={tmp_path}"]
    assert composed("dosimetry", override).dosimetry.kernel_cache_dir == str(tmp_path)
    assert composed("prepare", override).dosimetry.kernel_cache_dir == str(tmp_path)
    assert composed("phantom", override).kernel_cache_dir == str(tmp_path)


def test_kernel_cache_dir_is_xdg_aware(composed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert composed("dosimetry").dosimetry.kernel_cache_dir == f"{tmp_path}/ludl/kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert composed("dosimetry").dosimetry.kernel_cache_dir == f"{tmp_path}/home/.cache/ludl/kernels"


@pytest.mark.parametrize("name", ["tiny", "demo", "clinical"])
def test_preset_group_is_the_presets_of_the_code(name: str, composed: Any) -> None:
    group = OmegaConf.to_container(composed("synth", [f"preset={name}"]).preset, resolve=True)
    assert isinstance(group, dict) and group["name"] == name
    preset = get_preset(name)
    for key, value in group.items():
        got = getattr(preset, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert set(group) == {f.name for f in dataclasses.fields(preset)}


def test_scenario_group_sets_the_priors_it_documents(composed: Any) -> None:
    published = composed("synth")
    assert OmegaConf.to_container(published.overrides.priors) == {}
    cfg = composed("synth", ["scenario=dosimetry_sensitive", "overrides.max_lesions=4"])
    overrides = OmegaConf.to_container(cfg.overrides, resolve=True)
    assert isinstance(overrides, dict)
    priors = make_config("tiny", 2, 0, images=False, overrides=overrides).priors
    # docs/synthetic-cohort.md: peaks 12–96 h, 70 % patient-level, dose–response 2 × the default.
    assert priors.lesions.uptake_peak_h_range == (12.0, 96.0)
    assert priors.lesions.uptake_peak_patient_variance_fraction == 0.7
    assert priors.response.dose_response_strength == 2.0 * default_priors().response.dose_response_strength
    assert priors.lesions.max_lesions == 4  # the other overrides still apply
    assert (
        make_config("tiny", 2, 0, images=False).priors
        == make_config(
            "tiny", 2, 0, images=False, overrides=OmegaConf.to_container(published.overrides, resolve=True)
        ).priors
    )


def test_presets_read_from_the_packaged_yaml() -> None:
    assert set(PRESETS) == {p.stem for p in (CONFIG_DIR / "preset").glob("*.yaml")}
    # docs/synthetic-cohort.md, README: lesion caps tiny 8, demo 40, clinical 150; clinical is 4.8 mm whole body in
    # DICOM
    assert {name: p.max_lesions for name, p in PRESETS.items()} == {"tiny": 8, "demo": 40, "clinical": 150}
    clinical = PRESETS["clinical"]
    assert (clinical.spect_spacing_mm, clinical.extent, clinical.image_format) == (4.8, "whole_body", "dicom")
    assert isinstance(PRESETS["tiny"].spect_spacing_mm, float) and isinstance(PRESETS["tiny"].timepoints_h, tuple)


def test_slurm_launcher_extends_the_plugins_config() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("prepare", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        plugin = compose("prepare", overrides=["hydra/launcher=submitit_slurm"], return_hydra_config=True)
    # Unresolved: `submitit_folder` interpolates the run folder, whose name holds the time of each compose.
    ours = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    theirs = OmegaConf.to_container(plugin.hydra.launcher, resolve=False)
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    mine = yaml.safe_load((CONFIG_DIR / "hydra" / "launcher" / "slurm.yaml").read_text())
    changed = {key for key in theirs if ours[key] != theirs[key]}
    assert changed == set(mine) - {"defaults"}  # only the keys the file sets differ from the plugin's
    assert ours["_target_"] == theirs["_target_"]


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("job", "override", "key", "fix"),
    [
        ("synth", "+n_patient=1", "n_patient", "did you mean n_patients"),
        ("synth", "n_patient=1", "n_patient", "did you mean n_patients"),
        ("synth", "presett=tiny", "presett", "did you mean preset"),
        ("dosimetry", "tia_mode=region", "tia_mode", "did you mean dosimetry.tia_mode"),
        ("dosimetry", "cycle=one", "cycle=one", "Integer"),
        ("synth", "preset=tiyn", "preset/tiyn", "tiny"),
        ("synth", "n_patients=many", "n_patients=many", "Integer"),
    ],
)
def test_wrong_key_or_value_exits_2_with_one_line(
    job: str, override: str, key: str, fix: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert _run(job, override, f"out={tmp_path / 'out'}") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert key in lines[0] and fix in lines[0]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_unknown_key_message_lists_the_known_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("prepare", "+shards=0/2") == 2
    err = capsys.readouterr().err
    assert "known keys:" in err and "shard" in err and "dosimetry.pvc" in err


def test_free_mappings_and_hydra_flags_pass_the_key_check() -> None:
    from ludl.configs.keys import unknown_override_message

    ok = ["-m", "+overrides.priors.lesions.t_eff_h=70", "preset.max_lesions=3", "hydra/launcher=joblib", "seed=1"]
    assert unknown_override_message("synth", ok) is None


def test_missing_launcher_plugin_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def without_joblib(name: str, *args: Any) -> Any:
        return None if name == "hydra_plugins.hydra_joblib_launcher" else real(name, *args)

    monkeypatch.setattr(cli.importlib.util, "find_spec", without_joblib)
    assert _run("prepare", "-m", "cohort=/c", "shard=0/2,1/2", "hydra/launcher=joblib") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'ludl[sweep]'" in err


def test_ctrl_c_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def interrupted(cfg: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(JOBS, "validate", (interrupted, "test"))
    assert _run("validate", f"cohort={tmp_path}") == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rerun the same command to resume" in err


# ------------------------------------------------------------------------------------------------ help


def test_job_help_lists_each_key_with_default_and_comment(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("synth", "--help") == 0
    out = capsys.readouterr().out
    # the comment as written in the packaged YAML: the one place a key is explained
    comment = next(
        line.split("#", 1)[1].strip()
        for line in (CONFIG_DIR / "synth.yaml").read_text().splitlines()
        if line.startswith("n_patients:")
    )
    row = next(line for line in out.splitlines() if line.strip().startswith("n_patients "))
    assert "20" in row and comment in row
    assert any(line.strip().startswith("preset ") and "tiny" in line for line in out.splitlines())


def test_dosimetry_help_shows_the_group_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("prepare", "--help") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("dosimetry.pvc "))
    assert "gtm" in row and "geometric transfer matrix" in row


# ------------------------------------------------------------------------------------------------ run folders


def test_validate_writes_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.io.test_manifest import _make_cohort

    cohort = _make_cohort(tmp_path / "cohort")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _run("validate", f"cohort={cohort}") == 0
    assert list(work.iterdir()) == []


def test_synth_keeps_its_run_config_under_out_not_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "cohort"
    assert _run("synth", "preset=tiny", "n_patients=2", "images=false", "workers=1", f"out={out}") == 0
    assert list(work.iterdir()) == []
    (run_dir,) = (out / ".ludl").iterdir()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["n_patients"] == 2 and saved["preset"]["name"] == "tiny"


# ------------------------------------------------------------------------------------------------ launchers


def test_multirun_with_a_failing_job_exits_nonzero_and_keeps_the_working_folder_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.io.test_manifest import _make_cohort

    good = _make_cohort(tmp_path / "cohort")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert _run("validate", "-m", f"cohort={good},{tmp_path / 'missing'}") != 0  # Hydra's basic launcher
    assert _run("validate", "-m", f"cohort={good},{good}") == 0
    assert list(work.iterdir()) == []


@pytest.mark.slow
def test_joblib_multirun_with_a_failing_job_exits_nonzero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from tests.dosimetry import cohort_factory as cf

    # the joblib workers are new processes: they import this checkout of ludl
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    good = cf.write_cohort(tmp_path / "cohort", cf.CohortSpec())
    missing = tmp_path / "no_such_cohort"
    out = tmp_path / "prepared"
    common = [f"out={out}", "workers=1", "stp_baselines=false", f"paths.kernel_cache_dir={tmp_path / 'k'}"]
    code = _run(
        "prepare", "-m", f"cohort={good},{missing}", *common, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    err = capfd.readouterr().err  # file-descriptor level: the workers are other processes
    assert code != 0
    assert str(missing) in err  # the failing job's own message, from its worker process
    assert (out / "cases" / "P01_c1" / "case.json").is_file()  # the other job did its work
    assert len(list((out / ".ludl").iterdir())) == 1  # one multirun folder, one subfolder per job


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path: Path) -> None:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the wheel")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "ludl", source / "ludl", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*command, str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("ludl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"ludl/configs/{p.relative_to(CONFIG_DIR)}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert "ludl/configs/dosimetry/default.yaml" in expected and "ludl/configs/preset/tiny.yaml" in expected
    assert expected <= names
