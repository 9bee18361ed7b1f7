"""Simulate and write one patient's images (PET, SPECT beds, CTs, label map) and its truth maps.

Stages, in the order they draw from the patient's imaging generator: activity models (extravasation site),
the SPECT camera, PET and its CT, then per cycle and time point the SPECT beds and their CT; last the true TIA
and dose maps and the region truth rows.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.io.atomic import atomic_write_text
from ludl.io.manifest import ManifestRow
from ludl.io.nifti import write_nifti
from ludl.io.nm_write import write_nm_spect
from ludl.synth.activity import ActivityModel, build_activity_model, injection_site_index
from ludl.synth.blood import write_blood_csv
from ludl.synth.config import SynthConfig
from ludl.synth.imaging import (
    PetSpec,
    PoseSpec,
    SpectBedImage,
    SpectScan,
    SpectSpec,
    SpectSystem,
    ct_grid,
    pet_grid,
    plan_beds,
    random_pose,
    sample_spect_system,
    simulate_ct,
    simulate_pet,
    simulate_spect,
)
from ludl.synth.kinetics import PatientKinetics
from ludl.synth.labels import written_labels
from ludl.synth.pet_suv import pet_suv_truth
from ludl.synth.pose import Pose
from ludl.synth.presets import SynthPreset
from ludl.synth.protocol import ScanProtocol, manifest_injected_mbq
from ludl.synth.tables import csv_text, num_text
from ludl.synth.truth import RegionTruth, region_truth, tia_map_mbq_h_per_ml, true_dose_gy

__all__ = ["INJECTION_DATETIME", "SPECT_TRUTH_COLUMNS", "reported_deadtime_factor", "write_patient_images"]

FloatArray = npt.NDArray[np.float64]

# Hidden truth of every SPECT bed (truth/<patient>/spect.csv).
SPECT_TRUTH_COLUMNS = (
    "patient_id",
    "cycle",
    "timepoint_h",
    "bed",
    "fwhm_true_mm",
    "calibration_factor",
    "noise_cv",
    "deadtime_factor",
)
# Fixed calendar: every cycle-1 injection on the same day and hour (dates carry no information).
INJECTION_DATETIME = datetime(2024, 1, 8, 10, 0, 0)
# The dead-time factor a clinic records is the scanner's estimate, not the truth: its excess over 1 carries
# a log-normal model error (assumption: a few % for count-rate-based dead-time corrections) and is written
# rounded to 2 decimals as clinical records are. Without it the five factors of a patient are an exact
# whole-body activity meter (r 0.59 with the hidden patient factor; issue 10); recorded this way the best
# linear read-out of the five gives r 0.37 vs 0.64 exact (300 patients, tests/synth/test_response.py).
# Truth (spect.csv) keeps the exact value.
DEADTIME_EXCESS_SIGMA_LOG = 0.05
DEADTIME_DECIMALS = 2
# Its draws come from a stream of their own, so no other draw of the patient moves.
_DEADTIME_STREAM = 0x44454144


def reported_deadtime_factor(true_factor: float, rng: np.random.Generator) -> float:
    """The recorded dead-time factor: 1 + (true − 1) × log-normal error, rounded to `DEADTIME_DECIMALS` (≥ 1)."""
    excess = (true_factor - 1.0) * math.exp(DEADTIME_EXCESS_SIGMA_LOG * rng.standard_normal())
    return max(1.0, round(1.0 + excess, DEADTIME_DECIMALS))


def _deadtime_rng(seed: int, pid: str, cycle: int, timepoint_h: float, bed: int) -> np.random.Generator:
    """The dead-time error stream of one bed (keyed by patient, cycle, time point and bed)."""
    key = (_DEADTIME_STREAM, zlib.crc32(pid.encode()), cycle, round(timepoint_h * 1000), bed)
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


@dataclass(frozen=True, eq=False)
class _PatientImages:
    """What every stage of one patient's image writing shares."""

    config: SynthConfig
    out: Path
    pid: str
    anatomy: Any
    rng: np.random.Generator
    spect_spec: SpectSpec
    system: SpectSystem
    pose_spec: PoseSpec

    @property
    def folder(self) -> Path:
        """The patient's image folder."""
        return self.out / self.pid


def write_patient_images(
    config: SynthConfig,
    out: Path,
    pid: str,
    anatomy: Any,
    cycles: Sequence[PatientKinetics],
    protocols: Sequence[ScanProtocol],
    pet_factor: FloatArray,
    rng: np.random.Generator,
) -> tuple[list[ManifestRow], list[RegionTruth]]:
    """Simulate and write one patient's images (cycle 1; cycle 2 too with `cycle2_images`) and truth maps.

    Args:
        anatomy: the patient's `ludl.synth.anatomy.Anatomy`.
        rng: the patient's imaging generator (its draws follow the stage order of this module).

    Returns the patient's manifest rows and truth-table rows.
    """
    preset = config.preset
    truth_dir = out / "truth" / pid
    (out / pid).mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    models = _activity_models(anatomy, cycles, protocols[0], rng)
    spect_spec = _spect_spec(preset)
    system = sample_spect_system(rng, spect_spec)
    ctx = _PatientImages(config, out, pid, anatomy, rng, spect_spec, system, PoseSpec())
    interval_weeks = config.priors.treatment.cycle_interval_weeks
    rows = _write_pet(ctx, cycles[0], protocols[0], pet_factor, _manifest_fields(pid, 0, cycles[0], protocols[0], 0.0))
    fov_reference = None
    scan_cells: list[list[str]] = []
    image_cycles = [0] + ([1] if preset.cycle2_images and len(cycles) > 1 else [])
    for c in image_cycles:
        cdir = ctx.folder / f"c{c + 1}"
        cdir.mkdir(parents=True, exist_ok=True)
        common_c = _manifest_fields(pid, c, cycles[c], protocols[c], interval_weeks)
        for tp, times in zip(preset.timepoints_h, protocols[c].scan_times_h, strict=True):
            tp_rows, tp_cells, fov = _write_timepoint(ctx, c, tp, times, models[c], cdir, common_c)
            rows.extend(tp_rows)
            scan_cells.extend(tp_cells)
            if fov is not None and c == 0:
                fov_reference = fov
    region_rows = _write_truth_maps(ctx, truth_dir, cycles, models, fov_reference)
    atomic_write_text(truth_dir / "spect.csv", csv_text(SPECT_TRUTH_COLUMNS, scan_cells))
    write_blood_csv(ctx.folder, config.seed, pid, models, image_cycles)  # own random stream: nothing else moves
    return rows, region_rows


def _manifest_fields(
    pid: str, c: int, kinetics: PatientKinetics, protocol: ScanProtocol, interval_weeks: float
) -> dict[str, Any]:
    """Manifest fields every image of cycle index `c` (0-based) shares."""
    return {
        "patient_id": pid,
        "cycle": c + 1,
        "injected_mbq": manifest_injected_mbq(kinetics, protocol),
        "residual_mbq": protocol.residual_mbq,
        "extravasated_mbq": protocol.extravasated_mbq,
        "injection_datetime": INJECTION_DATETIME + timedelta(weeks=interval_weeks * c),
    }


def _activity_models(
    anatomy: Any, cycles: Sequence[PatientKinetics], protocol: ScanProtocol, rng: np.random.Generator
) -> list[ActivityModel]:
    """The true activity model of every cycle; extravasation (cycle 1 only) at a site drawn near the injection."""
    labels = anatomy.labels
    site = np.zeros(0, dtype=np.intp)
    if protocol.extravasated_mbq > 0:
        centre = dict(getattr(anatomy, "landmarks_xyz_mm", {}) or {}).get("injection_site")
        site = injection_site_index(labels, rng, centre_xyz_mm=centre)
    # An injection site outside the truth grid (arm outside the crop) keeps its activity off the map.
    ext_mbq = protocol.extravasated_mbq if site.size else 0.0
    kin1 = cycles[0]
    return [
        build_activity_model(
            kin,
            labels,
            anatomy.label_values,
            anatomy.uptake_weight,
            anatomy.clearance_shift_per_h,
            extravasated_mbq=ext_mbq if kin is kin1 else 0.0,
            extravasation_index=site,
        )
        for kin in cycles
    ]


def _write_pet(
    ctx: _PatientImages,
    kinetics: PatientKinetics,
    protocol: ScanProtocol,
    pet_factor: FloatArray,
    common: Mapping[str, Any],
) -> list[ManifestRow]:
    """PET and its CT: weeks before cycle 1, own grid and pose. Returns their manifest rows."""
    anatomy, rng = ctx.anatomy, ctx.rng
    labels = anatomy.labels
    pet_spec = PetSpec(spacing_mm=ctx.config.preset.pet_spacing_mm)
    pet_pose = random_pose(rng, ctx.pose_spec, labels)
    grid_pet = pet_grid(labels, pet_spec, rng)
    suv_truth = pet_suv_truth(anatomy, kinetics, ctx.config.priors, pet_factor, protocol.pet_tracer, rng)
    pet = simulate_pet(suv_truth, pet_spec, rng, pet_pose, grid=grid_pet)
    pet_ct = simulate_ct(anatomy.hu, grid_pet, pet_pose, rng)
    pet_extra: dict[str, Any] = {
        "time_h": round(protocol.pet_time_h, 3),
        "pet_tracer": protocol.pet_tracer,
        "pet_injected_mbq": protocol.pet_injected_mbq,
        "weight_kg": protocol.weight_kg,
    }
    c1 = ctx.folder / "c1"
    c1.mkdir(parents=True, exist_ok=True)
    write_nifti(pet, c1 / "pet.nii.gz", dtype=np.float32)
    write_nifti(pet_ct, c1 / "pet_ct.nii.gz", dtype=np.int16)
    return [
        ManifestRow(role="pet", path=_rel(c1 / "pet.nii.gz", ctx.out), **common, **pet_extra),
        ManifestRow(role="pet_ct", path=_rel(c1 / "pet_ct.nii.gz", ctx.out), **common, **pet_extra),
    ]


def _write_timepoint(
    ctx: _PatientImages,
    c: int,
    tp: float,
    times: tuple[float, ...],
    model: ActivityModel,
    cdir: Path,
    common_c: Mapping[str, Any],
) -> tuple[list[ManifestRow], list[list[str]], Any]:
    """One SPECT/CT time point of cycle index `c`: its beds, CT and (at the reference time) the label map.

    Returns the manifest rows, the SPECT truth cells of its beds and, at the reference time point, the FOV mask.
    """
    anatomy, rng, preset = ctx.anatomy, ctx.rng, ctx.config.preset
    labels, values = anatomy.labels, anatomy.label_values
    reference = math.isclose(tp, preset.reference_timepoint_h)
    pose = Pose.identity() if reference else random_pose(rng, ctx.pose_spec, labels)
    n_beds = len(times)
    centre = None
    if n_beds == 1 and "kidney_left" in values:
        kz = np.flatnonzero(np.any(np.asarray(labels.array) == values["kidney_left"], axis=(1, 2)))
        if kz.size:
            centre = float(labels.index_to_physical([float(kz.mean()), 0.0, 0.0])[2])
    beds = plan_beds(rng, ctx.spect_spec, times[0], labels, n_beds=n_beds, axial_centre_mm=centre)
    maps = [model.activity_bq_per_ml(b.start_h) for b in beds]
    scan = simulate_spect(maps, anatomy.hu, ctx.spect_spec, rng, pose, beds=beds, system=ctx.system)
    ct = simulate_ct(anatomy.hu, ct_grid(scan.grid), pose, rng)
    tag = f"{tp:g}h"
    rows: list[ManifestRow] = []
    cells: list[list[str]] = []
    for b, image in enumerate(scan.beds):
        row, cell = _write_spect_bed(ctx, scan, b, image, c, tp, cdir, common_c)
        rows.append(row)
        cells.append(cell)
    write_nifti(ct, cdir / f"ct_{tag}.nii.gz", dtype=np.int16)
    ct_path = _rel(cdir / f"ct_{tag}.nii.gz", ctx.out)
    rows.append(ManifestRow(role="ct", timepoint_h=tp, time_h=round(times[0], 4), path=ct_path, **common_c))
    if not reference:
        return rows, cells, None
    write_nifti(written_labels(anatomy), cdir / f"labels_{tag}.nii.gz", dtype=np.int16)
    mask_path = _rel(cdir / f"labels_{tag}.nii.gz", ctx.out)
    rows.append(ManifestRow(role="mask", timepoint_h=tp, time_h=round(times[0], 4), path=mask_path, **common_c))
    return rows, cells, scan.fov_mask


def _write_spect_bed(
    ctx: _PatientImages,
    scan: SpectScan,
    b: int,
    image: SpectBedImage,
    c: int,
    tp: float,
    cdir: Path,
    common_c: Mapping[str, Any],
) -> tuple[ManifestRow, list[str]]:
    """Write bed `b` of a scan (NIfTI, or a DICOM folder with one multi-frame NM file): its row and truth cells."""
    config, pid = ctx.config, ctx.pid
    tag = f"{tp:g}h"
    n_beds = len(scan.beds)
    stem = f"spect_{tag}" if n_beds == 1 else f"spect_{tag}_bed{b + 1}"
    fields = scan.manifest_fields(b)
    bed_image = image.activity_bq_per_ml(scan.sensitivity_cps_per_mbq)
    if config.preset.image_format == "dicom":
        name = stem  # a DICOM folder holding one multi-frame NM file
        write_nm_spect(
            bed_image,
            cdir / stem / "nm.dcm",
            patient_id=pid,
            uid_seed=f"{config.seed}/{pid}/c{c + 1}/{stem}",
            study_key=f"{config.seed}/{pid}/c{c + 1}/{tag}",
            acquisition=common_c["injection_datetime"] + timedelta(hours=float(fields["time_h"])),
            acquisition_s=float(fields["acquisition_s"]),
            frame_of_reference_key=f"{config.seed}/{pid}/c{c + 1}/{tag}",
        )
    else:
        name = f"{stem}.nii.gz"
        write_nifti(bed_image, cdir / name, dtype=np.float32)
    row = ManifestRow(
        role="spect",
        timepoint_h=tp,
        time_h=round(float(fields["time_h"]), 4),
        bed=None if n_beds == 1 else b + 1,
        path=_rel(cdir / name, ctx.out),
        acquisition_s=float(fields["acquisition_s"]),
        sensitivity_cps_per_mbq=float(fields["sensitivity_cps_per_mbq"]),
        fwhm_mm=float(fields["fwhm_mm"]),
        deadtime_factor=reported_deadtime_factor(
            float(fields["deadtime_factor"]), _deadtime_rng(config.seed, pid, c, tp, b)
        ),
        **common_c,
    )
    cells = [
        pid,
        str(c + 1),
        f"{tp:g}",
        str(b + 1),
        num_text(scan.truth.fwhm_true_mm),
        num_text(scan.truth.calibration_factor),
        num_text(scan.truth.noise_cv[b]),
        num_text(float(fields["deadtime_factor"])),
    ]
    return row, cells


def _write_truth_maps(
    ctx: _PatientImages,
    truth_dir: Path,
    cycles: Sequence[PatientKinetics],
    models: Sequence[ActivityModel],
    fov_reference: Any,
) -> list[RegionTruth]:
    """True TIA and dose maps (cycle 1 written) and the region truth rows of every cycle."""
    anatomy, pid = ctx.anatomy, ctx.pid
    labels, values = anatomy.labels, anatomy.label_values
    fractions = _fov_fractions(labels, values, fov_reference) if fov_reference is not None else None
    region_rows: list[RegionTruth] = []
    for c, (kin, model) in enumerate(zip(cycles, models, strict=True)):
        tia = tia_map_mbq_h_per_ml(model)
        dose = true_dose_gy(tia, anatomy.density_g_per_ml)
        region_rows.extend(region_truth(pid, kin, labels, values, dose, tia, fractions))
        if c == 0:
            write_nifti(tia, truth_dir / "tia_c1.nii.gz", dtype=np.float32)
            write_nifti(dose, truth_dir / "dose_c1.nii.gz", dtype=np.float32)
            write_nifti(anatomy.labels, truth_dir / "labels_c1.nii.gz", dtype=np.int16)
    return region_rows


def _spect_spec(preset: SynthPreset) -> SpectSpec:
    """The preset's SPECT protocol: two beds overlap so that they span the preset's SPECT field of view."""
    nz, ny, nx = preset.spect_shape_zyx
    bed = math.ceil(0.65 * nz)
    return SpectSpec(
        matrix_xy=max(ny, nx),
        spacing_mm=preset.spect_spacing_mm,
        bed_slices=bed,
        overlap_slices=max(0, 2 * bed - nz),
        fwhm_nominal_mm=preset.fwhm_mm,
    )


def _fov_fractions(labels: Any, label_values: Mapping[str, int], fov: Any) -> dict[str, float]:
    """Share of each region (and the body) inside the SPECT field of view."""
    lab = np.asarray(labels.array)
    seen = np.asarray(fov.array, dtype=bool)
    out: dict[str, float] = {}
    for name, value in label_values.items():
        mask = lab == value
        n = int(mask.sum())
        if n:
            out[name] = float(seen[mask].sum()) / n
    out["body"] = float(seen[lab > 0].sum()) / max(int((lab > 0).sum()), 1)
    return out


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
