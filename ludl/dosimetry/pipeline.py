"""Conventional multi-time-point dosimetry of one patient-cycle: register → TIA → dose → region statistics → report.

`run_dosimetry` is the public entry (``ludl dosimetry cohort=… patient=… cycle=… out=…``); `compute_dosimetry`
does the same work on an already-loaded `CycleData` without writing files, for `ludl prepare` and the STP baselines.

Stages (docs/physics.md §2, §4, §6), one function each here, the work in the modules named:
1. every time point's CT is registered rigidly to the reference time point's CT (default: the one the label map was
   drawn on); its SPECT is resampled onto the reference SPECT grid conserving activity (`ludl.dosimetry.registration`);
   the label map goes onto that grid by the exact overlaps of its voxels (majority labels and tissue fractions,
   `ludl.imaging.label_grid`), the CT by trilinear sampling or, when finer, by box means (`hu_on_grid`);
2. TIA: voxel or region fits (`ludl.dosimetry.tia`);
3. dose: the generated 177Lu voxel S kernel for the SPECT voxel size, D = (K ⊛ TIA)·ρ_k/ρ_CT, ρ_CT from the reference
   CT (bilinear HU → density); or local deposition (`ludl.dosimetry.dose`);
4. partial-volume correction of region means with the cohort's nominal FWHM (`ludl.dosimetry.pvc`; GTM per time
   point with the label map's tissue fractions of every SPECT voxel, `ludl.dosimetry.gtm_partition`), reported beside
   the uncorrected values; the corrected mean dose is that of the corrected activity distribution over each
   region's tissue-fraction extent, and `volume_ml` that of the label map itself (`corrected_doses_on_extent`,
   docs/physics.md §4 "Region statistics"); region statistics, kidney BED, whole-body tumour dose
   (`ludl.dosimetry.regions`);
5. files (`ludl.dosimetry.outputs`, `run_dosimetry` only).

Bed positions with their own start times: each voxel keeps the start time of the bed it was acquired in (resampled
with it into the reference pose), and voxel fits are run once per distinct set of voxel times — exact, no decay
correction between beds. Region curves, whose voxels may come from two beds, use the activity-weighted mean time of
their voxels at each time point: an approximation whose error is about λ_bio·Δt_bed·(share of the other bed), below
1 % for beds minutes apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ludl.dosimetry.dose import dose_map_gy
from ludl.dosimetry.gtm_partition import (
    Fractions,
    body_mask,
    gtm_per_timepoint,
    region_fractions,
    resampling_variance_zyx_mm2,
)
from ludl.dosimetry.marrow import annotate_marrow  # resol
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.outputs import write_outputs
from ludl.dosimetry.pvc import pvc_factors
from ludl.dosimetry.regions import (
    RegionExtent,
    RegionSet,
    corrected_doses_on_extent,
    expand_regions,
    label_volumes_ml,
    region_extents,
    region_table,
    whole_body_tumour_dose_gy,
)
from ludl.dosimetry.registration import (
    AlignedTimePoint,
    TimepointRegistration,
    align_timepoints,
    register_timepoints,
    resample_errors,
)
from ludl.dosimetry.resolution import annotate_resolution  # resol
from ludl.dosimetry.resolution_estimate import case_resolution  # resol
from ludl.dosimetry.result import DosimetryResult
from ludl.dosimetry.tia import check_points, region_fits, region_tia_map, voxel_tia_map
from ludl.dosimetry.timepoints import CycleData, TimePoint, load_cycle
from ludl.errors import InputError
from ludl.imaging.label_grid import labels_with_fractions
from ludl.imaging.resample import hu_on_grid, resample_to
from ludl.imaging.volume import Volume
from ludl.io.blood import load_blood_samples  # resol
from ludl.physics.kinetics import TacFit

__all__ = [
    "STAGES",
    "DosimetryResult",
    "OnGrid",
    "compute_dosimetry",
    "on_reference_grid",
    "run_dosimetry",
]

# Activity seen in the field of view above this share of the administered activity means a calibration problem.
_MAX_FOV_SHARE = 1.10


def _reference_index(data: CycleData, reference_timepoint: float | None) -> int:
    nominal = [t.timepoint_h for t in data.timepoints]
    wanted = data.mask_timepoint_h if reference_timepoint is None else float(reference_timepoint)
    for i, t in enumerate(nominal):
        if math.isclose(t, wanted, abs_tol=1e-6):
            return i
    if reference_timepoint is None:
        return 0
    raise InputError(
        f"reference_timepoint={reference_timepoint:g} h is not a SPECT time point of patient {data.patient_id} "
        f"cycle {data.cycle}; time points: {', '.join(f'{t:g}' for t in nominal)} h"
    )


def _in_fov_fractions(
    data: CycleData,
    aligned: Sequence[AlignedTimePoint],
    grid: Volume,
    label_transform: Any,
    regions: RegionSet,
) -> dict[str, float]:
    """Smallest share of each region inside the SPECT field of view over time points, on the label map's own grid.

    Measured on the resampled labels, a region cut by the reference grid's edge would count only its part inside
    the grid and read 100 %; on the label map's grid the part beyond the edge counts as outside.
    """
    fine = np.asarray(data.labels.array)
    named = {n: int(v) for n, v in data.label_values.items() if n in regions.values}
    out = {name: float(min(np.mean(a.fov[regions.mask(name)]) for a in aligned)) for name in regions.values}
    if not named:
        return out
    inverse = label_transform.GetInverse() if label_transform is not None else None
    index = list(named.values())
    worst = np.ones(len(index))
    for a in aligned:
        fov = grid.with_array(np.asarray(a.fov, dtype=np.uint8), unit="mask")
        on_labels = np.asarray(resample_to(fov, data.labels, transform=inverse).array, dtype=np.float64)
        worst = np.minimum(worst, np.asarray(ndimage.mean(on_labels, labels=fine, index=index), dtype=np.float64))
    for name, share in zip(named, worst, strict=True):
        if math.isfinite(share):
            out[name] = float(share)
    return out


@contextmanager
def _timed(seconds: dict[str, float], stage: str, on_stage: Callable[[str], None] | None = None) -> Iterator[None]:
    """Add the wall time of the block to ``seconds[stage]``; tell `on_stage` when the stage is done."""
    start = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - start
    if on_stage is not None:
        on_stage(stage)


@dataclass(frozen=True, eq=False)
class OnGrid:
    """Every time point, the regions and the CT on the reference SPECT grid."""

    grid: Volume
    aligned: Sequence[AlignedTimePoint]
    regions: RegionSet
    fractions: Fractions | None  # tissue fractions of shared voxels, in region values (None: whole voxels)
    label_transform: Any  # reference → label-map time point pose (None: the label map is in the reference pose)
    hu: npt.NDArray[np.float64]
    density_g_per_ml: npt.NDArray[np.float64]
    extents: dict[str, RegionExtent] = field(default_factory=dict)  # each region's tissue fractions on the grid
    volume_ml: dict[str, float] = field(default_factory=dict)  # region volumes on the label map's own grid
    # Per time point: the blur (variance per axis, mm²) its resampling onto the reference grid added (0: reference).
    resampling_variance_zyx_mm2: tuple[tuple[float, ...], ...] = ()


def _register(data: CycleData, ref_index: int) -> tuple[tuple[TimepointRegistration, ...], list[str]]:
    """Rigid registration of every time point's CT to the reference one, with a note per flagged residual."""
    registrations = tuple(register_timepoints(data, ref_index))
    notes = [
        f"{reg.timepoint_h:g} h: rigid registration leaves a residual: {'; '.join(reg.flags)}"
        for reg in registrations
        if reg.flags
    ]
    return registrations, notes


def _labels_on_grid(
    data: CycleData, registrations: tuple[TimepointRegistration, ...], ref_index: int, grid: Volume
) -> tuple[RegionSet, Fractions | None, Any]:
    """The label map on the SPECT grid (majority of its exact overlaps in the same pose, else nearest neighbour).

    Returns:
        (regions, tissue fractions of the shared voxels or None, reference → label pose transform or None).
    """
    mask_index = next(
        (i for i, t in enumerate(data.timepoints) if math.isclose(t.timepoint_h, data.mask_timepoint_h)), ref_index
    )
    label_transform = registrations[mask_index].transform if mask_index != ref_index else None
    labels = data.labels
    fractions = None
    if label_transform is not None or not labels.same_grid(grid):
        found = labels_with_fractions(labels, grid) if label_transform is None else None
        if found is not None:
            labels, fractions = found
        else:
            with resample_errors(data, "mask"):
                labels = resample_to(labels, grid, transform=label_transform)
    regions = expand_regions(np.asarray(labels.array), data.label_values)
    if fractions is not None:
        fractions = region_fractions(fractions, data.label_values, regions.values)
    return regions, fractions, label_transform


def on_reference_grid(data: CycleData, registrations: tuple[TimepointRegistration, ...], ref_index: int) -> OnGrid:
    """SPECTs, labels and the reference CT (HU, density) on the reference SPECT grid."""
    from ludl.physics.dose import density_from_hu

    ref_tp = data.timepoints[ref_index]
    grid = ref_tp.spect
    aligned = align_timepoints(data, registrations, grid)
    regions, fractions, label_transform = _labels_on_grid(data, registrations, ref_index, grid)
    with resample_errors(data, "ct", ref_tp.timepoint_h):
        hu = np.asarray(hu_on_grid(ref_tp.ct, grid).array, dtype=np.float64)  # air outside the CT's field
    density = np.asarray(density_from_hu(hu), dtype=np.float64)
    extents = region_extents(regions, fractions)
    volumes = label_volumes_ml(data.labels, data.label_values, regions, extents, grid.voxel_volume_ml)
    variances = tuple(
        resampling_variance_zyx_mm2(tp.spect, grid, reg.transform)
        for tp, reg in zip(data.timepoints, registrations, strict=True)
    )
    return OnGrid(grid, aligned, regions, fractions, label_transform, hu, density, extents, volumes, variances)


@dataclass(frozen=True, eq=False)
class _Integrated:
    """Region fits and curves (time h, activity MBq), the TIA map (MBq·h/mL) and the fits' notes."""

    fits: dict[str, TacFit | None]
    curves: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]
    tia: npt.NDArray[np.float64]
    notes: list[str]


def _integrate(g: OnGrid, options: DosimetryOptions, ref_index: int) -> _Integrated:
    """Region fits (always: their kinetics go into the table) and the TIA map of the chosen mode."""
    fits, curves, notes = region_fits(g.aligned, g.regions, options.model, g.grid.voxel_volume_ml)
    if options.tia_mode == "voxel":
        tia, voxel_notes = voxel_tia_map(g.aligned, options.model)
        notes += voxel_notes
    else:
        tia = region_tia_map(g.aligned, g.regions, fits, curves, ref_index)
    return _Integrated(fits, curves, tia, notes)


def _region_rows(
    data: CycleData,
    g: OnGrid,
    ref_tp: TimePoint,
    integrated: _Integrated,
    dose: npt.NDArray[np.float64],
    options: DosimetryOptions,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Partial-volume correction and the region table (one row per region)."""
    fits, curves, tia = integrated.fits, integrated.curves, integrated.tia
    regions, spacing = g.regions, g.grid.spacing_zyx_mm
    notes: list[str] = []
    kinetics: Mapping[str, TacFit | None] = fits
    in_fov = _in_fov_fractions(data, g.aligned, g.grid, g.label_transform, regions)
    if options.pvc == "gtm":
        factors, corrected_fits, notes = gtm_per_timepoint(
            g.aligned, regions, body_mask(g.hu), spacing, ref_tp.fwhm_mm, curves, fits, options.model, tia,
            g.fractions, in_fov, resampling_variance_zyx_mm2=g.resampling_variance_zyx_mm2 or None,
        )  # fmt: skip
        kinetics = {**fits, **corrected_fits}
    else:
        observed = {name: float(tia[regions.mask(name)].mean()) for name in regions.values}
        pvc_values = {n: v for n, v in regions.values.items() if regions.kinds[n] != "body"}
        factors = pvc_factors(options.pvc, regions.labels, pvc_values, observed, spacing, ref_tp.fwhm_mm)
    corrected_dose = None
    if options.pvc != "none":
        corrected_dose = _corrected_doses(g, tia, factors, options)
    rows = region_table(
        dose,
        tia,
        regions,
        g.grid.voxel_volume_ml,
        kinetics=kinetics,
        pvc=options.pvc,
        pvc_factor=factors,
        in_fov_fraction=in_fov,
        corrected_mean_dose_gy=corrected_dose,
        volume_ml=g.volume_ml,
    )
    return rows, notes


def _corrected_doses(
    g: OnGrid, tia: npt.NDArray[np.float64], factors: Mapping[str, float], options: DosimetryOptions
) -> dict[str, float]:
    """Corrected mean dose of every corrected region over its true extent (`corrected_doses_on_extent`).

    A region's corrected TIA is its factor × its TIA on its whole-voxel mask (the `tia_mbq_h` column); GTM solves
    for the concentration of the true extent, so that TIA spread over the extent's volume is that concentration.
    The RC method corrects the whole-voxel mean concentration, which is kept as it is.
    """
    from ludl.physics.dose import DENSITY_FLOOR_G_PER_ML

    spacing = g.grid.spacing_zyx_mm
    concentration: dict[str, float] = {}
    for name, kind in g.regions.kinds.items():
        factor = factors.get(name, math.nan)
        extent = g.extents.get(name)
        mask = g.regions.mask(name)
        if kind == "body" or not math.isfinite(factor) or extent is None or not mask.any():
            continue
        if options.pvc == "gtm" and extent.voxel_count > 0:
            concentration[name] = factor * float(tia[mask].sum()) / extent.voxel_count
        else:
            concentration[name] = factor * float(tia[mask].mean())

    def dose_of(tia_map: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return dose_map_gy(tia_map, g.density_g_per_ml, spacing, options.dose_method, options.kernel_cache_dir)

    # Dose of 1 MBq·h/mL in one voxel alone, to that voxel, at density 1 (it scales as 1/ρ, docs/physics.md §4).
    impulse = np.zeros((5, 5, 5))
    impulse[2, 2, 2] = 1.0
    self_dose = float(
        dose_map_gy(impulse, np.ones((5, 5, 5)), spacing, options.dose_method, options.kernel_cache_dir)[2, 2, 2]
    )
    density = np.maximum(g.density_g_per_ml, DENSITY_FLOOR_G_PER_ML)  # as the dose uses it
    return corrected_doses_on_extent(tia, g.extents, concentration, dose_of, density, self_dose)


def _activity_notes(data: CycleData, aligned: Sequence[AlignedTimePoint]) -> list[str]:
    """Calibration, extravasation and bed-position remarks on the activity seen."""
    administered = data.net_administered_mbq
    notes = [
        f"{a.timepoint_h:g} h: {a.total_before_mbq:.0f} MBq in the field of view exceeds the administered "
        f"{administered:.0f} MBq by more than {100 * (_MAX_FOV_SHARE - 1):.0f} %: check the calibration"
        for a in aligned
        if a.total_before_mbq > _MAX_FOV_SHARE * administered
    ]
    if data.extravasated_mbq > 0:
        notes.append(
            f"{data.extravasated_mbq:.0f} MBq extravasated at the injection site: in the images and the dose, "
            "not in the systemic kinetics"
        )
    if any(len(t.bed_times_h) > 1 for t in data.timepoints):
        notes.append("several bed positions: voxel times follow their bed; region curves use activity-weighted times")
    return notes


def _settings(options: DosimetryOptions, data: CycleData, ref_tp: TimePoint, grid: Volume) -> dict[str, Any]:
    """The options used and the case's own acquisition settings, as reported."""
    return {
        "tia_mode": options.tia_mode,
        "model": options.model,
        "dose_method": options.dose_method,
        "pvc": options.pvc,
        "reference_timepoint_h": ref_tp.timepoint_h,
        "fwhm_mm": ref_tp.fwhm_mm,
        "timepoints_h": ", ".join(f"{t.timepoint_h:g}" for t in data.timepoints),
        "voxel_mm": "×".join(f"{s:.2f}" for s in grid.spacing_zyx_mm),
    }


# The stages `compute_dosimetry` times (and reports to its `on_stage` callback), in order.
STAGES: tuple[str, ...] = ("register", "resample", "tia", "dose", "regions")


def compute_dosimetry(
    data: CycleData, options: DosimetryOptions | None = None, on_stage: Callable[[str], None] | None = None
) -> DosimetryResult:
    """Register, integrate, convolve and tabulate one loaded patient-cycle; writes nothing (see `run_dosimetry`).

    `on_stage(name)` is called after each of `STAGES` (e.g. to advance a progress bar).
    """
    o = DosimetryOptions() if options is None else options
    check_points(data, o.model)
    seconds: dict[str, float] = {}
    with _timed(seconds, "register", on_stage):
        ref_index = _reference_index(data, o.reference_timepoint)
        ref_tp = data.timepoints[ref_index]
        registrations, notes = _register(data, ref_index)
    with _timed(seconds, "resample", on_stage):
        g = on_reference_grid(data, registrations, ref_index)
    with _timed(seconds, "tia", on_stage):
        integrated = _integrate(g, o, ref_index)
        notes += integrated.notes
    tia = integrated.tia
    with _timed(seconds, "dose", on_stage):
        dose = dose_map_gy(tia, g.density_g_per_ml, g.grid.spacing_zyx_mm, o.dose_method, o.kernel_cache_dir)
    with _timed(seconds, "regions", on_stage):
        resolution = case_resolution(data, ref_tp, g)  # resol: the FWHM PVC uses (nominal, measured or estimated)
        rows, pvc_notes = _region_rows(data, g, replace(ref_tp, fwhm_mm=resolution.fwhm_mm), integrated, dose, o)
        notes += [*resolution.notes, *pvc_notes]
        rows, marrow_notes = annotate_marrow(  # blood-based marrow (self + EANM cross-dose), flag on the image one
            annotate_resolution(rows, resolution), g.regions, tia, g.density_g_per_ml, g.grid.spacing_zyx_mm,
            resolution.fwhm_mm, load_blood_samples(data.manifest.file.parent, data.patient_id, data.cycle),
            lambda t: dose_map_gy(t, g.density_g_per_ml, g.grid.spacing_zyx_mm, o.dose_method, o.kernel_cache_dir),
        )  # fmt: skip
        notes += marrow_notes
    notes += _activity_notes(data, g.aligned)
    grid = g.grid
    return DosimetryResult(
        regions=tuple(rows),
        registrations=registrations,
        dose=Volume(dose.astype(np.float32), grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit="Gy"),
        tia=Volume(tia.astype(np.float32), grid.spacing_zyx_mm, grid.origin_xyz_mm, grid.direction, unit="MBq*h/mL"),
        regions_map=g.regions,
        whole_body_tumour_dose_gy=whole_body_tumour_dose_gy(rows),
        activity_in_fov_mbq=tuple(a.total_before_mbq for a in g.aligned),
        net_administered_mbq=data.net_administered_mbq,
        settings={**_settings(o, data, ref_tp, grid), **resolution.settings()},
        notes=tuple(notes),
        seconds=seconds,
    )


def run_dosimetry(
    cohort_dir: str | Path,
    patient_id: str,
    cycle: int,
    out_dir: str | Path,
    options: DosimetryOptions | None = None,
    *,
    overwrite: bool = False,
) -> DosimetryResult:
    """Multi-time-point dosimetry of one patient-cycle of a cohort, written to `out_dir`.

    Args:
        cohort_dir: cohort folder (cohort.yaml, manifest.csv, images).
        patient_id, cycle: the case (as in the manifest).
        out_dir: output folder: ``dose_gy.nii.gz``, ``dose_rtdose.dcm``, ``tia_mbq_h_per_ml.nii.gz``,
            ``regions.csv``, ``registration.csv``, ``dvh.png``, the report ``summary.html`` and ``summary.pdf``
            (written atomically; no patient identifiers in them).
        options: the dosimetry settings (`DosimetryOptions`; default: voxel fits, auto model, DVK, GTM).
        overwrite: replace another patient's (or cohort's) results in `out_dir` (refused otherwise, before any work).

    Raises:
        LudlError: bad input — unknown patient or cycle, a SPECT without calibration, a CT that cannot be registered,
            fewer time points than the model needs — with the file and manifest line; `out_dir` holding another
            case's results without `overwrite`.
    """
    from ludl.io.provenance import (
        DOSIMETRY_OUTPUTS,
        claim_output_dir,
        dosimetry_owner,
        is_fresh_output_dir,
        release_output_dir,
    )

    options = DosimetryOptions() if options is None else options
    # Another patient's (or cohort's) results in `out_dir` are refused unless asked: never mixed up.
    fresh = is_fresh_output_dir(out_dir)
    owner = dosimetry_owner(Path(cohort_dir), patient_id, int(cycle))
    claim_output_dir(Path(out_dir), owner, overwrite=overwrite, outputs=DOSIMETRY_OUTPUTS)
    try:
        return _run_claimed(cohort_dir, patient_id, int(cycle), Path(out_dir), options)
    except Exception:
        if fresh:
            release_output_dir(out_dir)
        raise


def _run_claimed(
    cohort_dir: str | Path, patient_id: str, cycle: int, out_dir: Path, options: DosimetryOptions
) -> DosimetryResult:
    """`run_dosimetry` once the output folder is this case's."""
    from ludl.progress import progress

    with progress(len(STAGES) + 2, "dosimetry", unit="stage") as step:
        start = time.perf_counter()
        data = load_cycle(cohort_dir, patient_id, int(cycle))
        load_s = time.perf_counter() - start
        step(note="load")
        result = compute_dosimetry(data, options, on_stage=lambda stage: step(note=stage))
        start = time.perf_counter()
        files = write_outputs(result, data, _reference_index(data, options.reference_timepoint), Path(out_dir))
        step(note="write")
    seconds = {"load": load_s, **result.seconds, "write": time.perf_counter() - start}
    return DosimetryResult(
        regions=result.regions,
        registrations=result.registrations,
        dose=result.dose,
        tia=result.tia,
        regions_map=result.regions_map,
        whole_body_tumour_dose_gy=result.whole_body_tumour_dose_gy,
        activity_in_fov_mbq=result.activity_in_fov_mbq,
        net_administered_mbq=result.net_administered_mbq,
        settings=result.settings,
        notes=result.notes,
        seconds=seconds,
        files=files,
    )
