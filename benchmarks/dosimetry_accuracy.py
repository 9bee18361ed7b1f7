"""Accuracy of multi-time-point dosimetry against the synthetic truth, over seeds and resolution sources.

Generates synthetic cohorts (one per ``--seeds`` value, or reuses ``--cohort`` / ``--cohorts``), runs the pipeline
(`load_cycle` + `compute_dosimetry`: exactly `run_dosimetry` without writing files) on cycle 1 of every patient, joins
the region rows with ``truth/regions.csv`` and prints, per seed and pooled and per region class, the relative error of
the mean dose (pipeline / truth − 1): n, signed bias (median and mean), median |error|, P90 |error|, share of
|error| > 10 % and > 20 %, for the partial-volume-corrected mean and the uncorrected mean beside it. Lesions are
scored only where the pipeline marks them ``scored`` and split at 4 mL of true volume.

``--resolution`` runs the same cases once per source of the FWHM partial-volume correction uses (issue 13):
``nominal`` (the manifest's), ``recovery`` (cohort.yaml ``resolution.recovery``: the NEMA IEC recovery curve of the
synthetic camera, simulated with `ludl.dosimetry.nema` at the camera's mean true FWHM), ``estimated`` (the
image-based estimate) and ``true`` (each patient's true FWHM from ``truth/<patient>/spect.csv`` in the GTM's
convention, `gtm_convention_fwhm_mm`: an oracle, to tell resolution error from other causes). It also scores the
image-based estimate against the true FWHM, and the blood-based red-marrow dose (``blood_based_dose_gy``) against the
true marrow dose.

    python benchmarks/dosimetry_accuracy.py                                       # demo, 8 patients, seed 0
    python benchmarks/dosimetry_accuracy.py --seeds 0 1 2 --resolution nominal recovery estimated
    python benchmarks/dosimetry_accuracy.py --cohorts /tmp/c0 /tmp/c1 --resolution true --csv errors.csv

Bar (issue 13): per seed and pooled, kidneys, liver, spleen |bias| ≤ 5 % and P90 ≤ 12 %; lesions ≥ 4 mL
|median| ≤ 5 % and P90 ≤ 20 %. Smaller glands, red marrow and lesions < 4 mL are reported beside them.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _accuracy import add_cohort_arguments, cohort_path, dosimetry_options, summarise, truth_rows, write_csv

from ludl.evaluation.tables import LESION_MIN_VOLUME_ML
from ludl.physics.units import FWHM_PER_SIGMA

_BAR_ORGANS = ("kidneys", "liver", "spleen")
RESOLUTION_MODES = ("nominal", "recovery", "estimated", "true")
_CLASS_ORDER = (
    "kidneys",
    "liver",
    "spleen",
    "parotids",
    "submandibular",
    "lacrimal",
    "red_marrow",
    "bladder",
    "lesion>=4mL",
    "lesion<4mL",
)


def region_class(region: str, kind: str, true_volume_ml: float) -> str:
    """Reporting class of a region: organ pairs pooled, lesions split at 4 mL of true volume."""
    if kind == "lesion":
        return "lesion>=4mL" if true_volume_ml >= LESION_MIN_VOLUME_ML else "lesion<4mL"
    for prefix, name in (("kidney", "kidneys"), ("parotid", "parotids")):
        if region.startswith(prefix):
            return name
    if region.startswith(("submandibular", "lacrimal")):
        return region.split("_")[0]
    return region


def _patients(cohort: Path) -> list[str]:
    with open(cohort / "manifest.csv", encoding="utf-8") as fh:
        return sorted({r["patient_id"] for r in csv.DictReader(fh) if r["cycle"] == "1"})


def spect_truth(cohort: Path, patient: str, column: str) -> float:
    """A cycle-1 value of truth/<patient>/spect.csv (``fwhm_true_mm`` at the reference depth, ``calibration_factor``:
    activity read with the nominal calibration / true activity), NaN without it."""
    path = cohort / "truth" / patient / "spect.csv"
    if not path.is_file():
        return math.nan
    with open(path, encoding="utf-8") as fh:
        values = [float(r[column]) for r in csv.DictReader(fh) if r["cycle"] == "1"]
    return values[0] if values else math.nan


def true_fwhm_mm(cohort: Path, patient: str) -> float:
    """The patient's true SPECT FWHM at the reference depth, NaN without the truth file."""
    return spect_truth(cohort, patient, "fwhm_true_mm")


def gtm_convention_fwhm_mm(fwhm_mm: float, spacing_mm: float) -> float:
    """The synthetic camera's FWHM as the GTM models blur: a Gaussian on voxel-averaged tissue fractions.

    The synthetic camera quotes the resolution of its *image*: it narrows its Gaussian by the variance its
    discretisation adds, s²/12 (voxel averaging) + s²/6 (resampling into the scan's pose, mean over sub-voxel offsets)
    per axis (`ludl.synth.imaging.common.blur_variance_voxels`). The GTM (and the image-based estimate, and
    `ludl.dosimetry.nema`) put the voxel average into the tissue fractions, so the Gaussian they need is the image's
    less s²/12 per axis: √(F² − 8 ln 2 · s²/12), ≈ 3.5 % below F at 12.6 mm and 4.8 mm voxels.
    """
    return math.sqrt(fwhm_mm**2 - FWHM_PER_SIGMA**2 * spacing_mm**2 / 12.0)


def spect_spacing_mm(data: Any) -> float:
    """The voxel size of a loaded case's SPECT (isotropic in synthetic cohorts: 6 mm for `demo`, 4.8 mm `clinical`)."""
    return float(np.mean(data.timepoints[0].spect.spacing_zyx_mm))


def synthetic_camera_recovery(spacing_mm: float, fwhm_nominal_mm: float) -> Any:
    """The NEMA IEC recovery curve a clinic would measure on the synthetic camera of a cohort (its SPECT voxel size
    and nominal FWHM; its mean true FWHM, 90 mm deep).

    The phantom is blurred by the camera's FWHM in the GTM's convention (`gtm_convention_fwhm_mm`), as the camera
    would image it; `simulate_sphere_phantom` averages the blurred spheres into voxels itself.
    """
    from dataclasses import replace

    from ludl.dosimetry.nema import measure_recovery, simulate_sphere_phantom
    from ludl.io.cohort import MeasuredResolution
    from ludl.synth.imaging.spect import fwhm_at_depth_mm
    from ludl.synth.imaging.spect_protocol import SpectSpec

    spec = replace(SpectSpec(), spacing_mm=spacing_mm, fwhm_nominal_mm=fwhm_nominal_mm)
    mean_true = spec.fwhm_nominal_mm * 0.5 * sum(spec.fwhm_factor_range)
    fwhm = gtm_convention_fwhm_mm(float(fwhm_at_depth_mm(mean_true, 90.0, spec)), spec.spacing_mm)
    phantom = simulate_sphere_phantom(fwhm, spacing_mm=spec.spacing_mm, sphere_conc=10.0, background=0.0)
    curve = measure_recovery(phantom)
    return MeasuredResolution(volume_ml=tuple(phantom.volumes_ml), recovery=tuple(round(float(r), 4) for r in curve))


def cohort_camera_recovery(cohort: Path) -> Any:
    """`synthetic_camera_recovery` for a cohort's camera (its first patient's SPECT voxel size and nominal FWHM)."""
    from ludl.dosimetry.timepoints import load_cycle

    probe = load_cycle(cohort, _patients(cohort)[0], 1)
    recovery = synthetic_camera_recovery(spect_spacing_mm(probe), float(probe.timepoints[0].fwhm_mm))
    curve = ", ".join(f"{v:.2f} mL: {r:.3f}" for v, r in zip(recovery.volume_ml, recovery.recovery, strict=True))
    print(f"synthetic camera NEMA recovery ({cohort}): {curve}", flush=True)
    return recovery


def with_resolution(data: Any, mode: str, true_mm: float, recovery: Any) -> Any:
    """The loaded case with cohort.yaml ``resolution`` set for one mode."""
    from dataclasses import replace

    from ludl.io.cohort import MeasuredResolution, ResolutionConfig

    config = {
        "nominal": ResolutionConfig(use="nominal"),
        "recovery": ResolutionConfig(use="measured", measured=recovery),
        "estimated": ResolutionConfig(use="estimated"),
        "true": ResolutionConfig(use="measured", measured=MeasuredResolution(fwhm_mm=true_mm)),
    }[mode]
    return replace(data, config=replace(data.config, resolution=config))


def evaluate_patient(
    cohort: Path,
    patient: str,
    truth: dict[tuple[str, int, str], dict[str, str]],
    options: Any = None,
    mode: str | None = None,
    recovery: Any = None,
) -> list[dict[str, Any]]:
    """Pipeline rows of one patient (cycle 1) joined with truth: one dict per region with both relative errors."""
    from ludl.dosimetry.pipeline import compute_dosimetry
    from ludl.dosimetry.timepoints import load_cycle

    start = time.perf_counter()
    data = load_cycle(cohort, patient, 1)
    true_mm = true_fwhm_mm(cohort, patient)
    if mode is not None:
        # The oracle gets the true FWHM in the GTM's convention (as a NEMA measurement of this camera would give it).
        oracle_mm = gtm_convention_fwhm_mm(true_mm, spect_spacing_mm(data)) if math.isfinite(true_mm) else true_mm
        data = with_resolution(data, mode, oracle_mm, recovery)
    result = compute_dosimetry(data, options)
    seconds = time.perf_counter() - start
    calibration = spect_truth(cohort, patient, "calibration_factor")
    out: list[dict[str, Any]] = []
    for row in result.regions:
        true = truth.get((patient, 1, row["region"]))
        if true is None or row["kind"] == "body" or not row["scored"]:
            continue
        true_gy = float(true["mean_dose_gy"])
        if not (math.isfinite(true_gy) and true_gy > 0):
            continue
        out.append(
            {
                "patient_id": patient,
                "region": row["region"],
                "class": region_class(row["region"], row["kind"], float(true["volume_ml"])),
                "true_volume_ml": float(true["volume_ml"]),
                "volume_ml": row["volume_ml"],
                "true_gy": true_gy,
                "gy": row["mean_dose_gy"],
                "gy_uncorrected": row["mean_dose_uncorrected_gy"],
                "err": row["mean_dose_gy"] / true_gy - 1.0,
                "err_uncorrected": row["mean_dose_uncorrected_gy"] / true_gy - 1.0,
                # The error left once the patient's camera calibration error (±3 %, hidden truth) is divided out.
                "err_calibrated": row["mean_dose_gy"] / true_gy / calibration - 1.0,
                "calibration_factor": calibration,
                "true_t_eff_h": float(true["t_eff_h"]) if true["t_eff_h"] else math.nan,
                "t_eff_h": row["t_eff_h"],
                "pvc_factor": row["pvc_factor"],
                "seconds": seconds,
                "mode": mode or "",
                "fwhm_used_mm": result.settings.get("fwhm_used_mm", math.nan),
                "fwhm_estimated_mm": result.settings.get("fwhm_estimated_mm", math.nan),
                "fwhm_true_mm": true_mm,
                "spect_spacing_mm": spect_spacing_mm(data),
                "blood_gy": float(row.get("blood_based_dose_gy", math.nan) or math.nan),
                "err_blood": float(row.get("blood_based_dose_gy", math.nan) or math.nan) / true_gy - 1.0,
                "flag": row.get("flag", ""),
            }
        )
    return out


def _fmt(s: dict[str, float]) -> str:
    if not s.get("n"):
        return f"{0:>4}" + " " * 48
    pct = {k: 100 * v for k, v in s.items() if k != "n"}
    return (
        f"{s['n']:>4}{pct['median']:>+8.1f}{pct['mean']:>+8.1f}{pct['median_abs']:>7.1f}{pct['p90_abs']:>7.1f}"
        f"{pct['max_abs']:>7.1f}{pct['over10']:>6.0f}{pct['over20']:>6.0f}"
    )


def table(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Per-class table, corrected | uncorrected, errors in percent."""
    head = f"{'n':>4}{'med':>8}{'mean':>8}{'|med|':>7}{'P90':>7}{'max':>7}{'>10':>6}{'>20':>6}"
    lines = [title, f"{'class':<14}{head}   |{head}", f"{'':<14}{'PVC-corrected':^55}   |{'uncorrected':^55}"]
    classes = [c for c in _CLASS_ORDER if any(r["class"] == c for r in rows)]
    classes += sorted({r["class"] for r in rows} - set(classes))
    for c in classes:
        sel = [r for r in rows if r["class"] == c]
        lines.append(
            f"{c:<14}{_fmt(summarise([r['err'] for r in sel]))}   |"
            f"{_fmt(summarise([r['err_uncorrected'] for r in sel]))}"
        )
    organs = [r for r in rows if r["class"] in _BAR_ORGANS]
    lines.append(
        f"{'bar organs':<14}{_fmt(summarise([r['err'] for r in organs]))}   |"
        f"{_fmt(summarise([r['err_uncorrected'] for r in organs]))}"
    )
    return "\n".join(lines)


def verdict(rows: Sequence[dict[str, Any]], key: str = "err") -> str:
    """Issue 13's bar: kidneys, liver, spleen |bias| ≤ 5 %, P90 ≤ 12 %; lesions ≥ 4 mL |median| ≤ 5 %, P90 ≤ 20 %."""
    out = []
    for c in _BAR_ORGANS:
        s = summarise([r[key] for r in rows if r["class"] == c])
        if s.get("n"):
            ok = abs(s["median"]) <= 0.05 and s["p90_abs"] <= 0.12
            out.append(
                f"{c} {'PASS' if ok else 'FAIL'} (bias {100 * s['median']:+.1f} %, P90 {100 * s['p90_abs']:.1f} %)"
            )
    s = summarise([r[key] for r in rows if r["class"] == "lesion>=4mL"])
    if s.get("n"):
        ok = abs(s["median"]) <= 0.05 and s["p90_abs"] <= 0.20
        out.append(
            f"lesions>=4mL {'PASS' if ok else 'FAIL'} (median {100 * s['median']:+.1f} %, "
            f"P90 {100 * s['p90_abs']:.1f} %)"
        )
    return "; ".join(out)


def resolution_score(rows: Sequence[dict[str, Any]]) -> str:
    """The image-based FWHM estimate against each patient's true FWHM (one value per patient), as the camera quotes
    it and in the GTM's convention (`gtm_convention_fwhm_mm`)."""
    per_patient = {
        (r["seed"], r["patient_id"]): (r["fwhm_estimated_mm"], r["fwhm_true_mm"], r.get("spect_spacing_mm", math.nan))
        for r in rows
    }
    found = [(e, t, v) for e, t, v in per_patient.values() if math.isfinite(e) and math.isfinite(t) and t > 0]
    s = summarise([e / t - 1.0 for e, t, _ in found])
    if not s.get("n"):
        return "resolution estimate: none"
    # rows pooled from a CSV written before the spacing column have none: no GTM-convention figure for them
    g = summarise([e / gtm_convention_fwhm_mm(t, float(v)) - 1.0 for e, t, v in found if math.isfinite(float(v))])
    line = (
        f"image-based FWHM estimate vs true FWHM (60 mm deep), {s['n']} patients: median {100 * s['median']:+.1f} %, "
        f"P90 |error| {100 * s['p90_abs']:.1f} %, max {100 * s['max_abs']:.1f} %"
    )
    if g.get("n"):
        line += f"; in the GTM's convention: median {100 * g['median']:+.1f} %, P90 |error| {100 * g['p90_abs']:.1f} %"
    return line


def marrow_score(rows: Sequence[dict[str, Any]]) -> str:
    """Blood-based and image-based red-marrow dose against the truth, and how many image values were flagged."""
    marrow = [r for r in rows if r["class"] == "red_marrow"]
    blood = summarise([r["err_blood"] for r in marrow])
    image = summarise([r["err"] for r in marrow])
    flagged = sum(bool(r["flag"]) for r in marrow)
    if not blood.get("n"):
        return f"red marrow: no blood samples; image-based flagged {flagged}/{len(marrow)}"
    return (
        f"red marrow blood-based vs true ({blood['n']}): bias {100 * blood['median']:+.1f} % (mean "
        f"{100 * blood['mean']:+.1f} %), P90 |error| {100 * blood['p90_abs']:.1f} %; image-based bias "
        f"{100 * image['median']:+.1f} %, P90 {100 * image['p90_abs']:.1f} %, flagged {flagged}/{len(marrow)}"
    )


def _cohorts(args: argparse.Namespace, tmp: str) -> list[tuple[str, Path]]:
    """(seed label, cohort folder) of every cohort to evaluate."""
    if args.cohorts:
        return [(p.name, p) for p in args.cohorts]
    if args.cohort is not None:
        return [(str(args.seed), Path(args.cohort))]
    out = []
    for seed in args.seeds or [args.seed]:
        args.seed = seed
        out.append((str(seed), cohort_path(args, Path(tmp) / f"seed{seed}")))
    return out


def report(rows: Sequence[dict[str, Any]], modes: Sequence[str], label: str) -> None:
    """Per mode: the table, the bar (corrected, uncorrected, calibration error divided out), resolution, marrow."""
    for mode in modes:
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        n = len({(r["seed"], r["patient_id"]) for r in sel})
        seconds = float(np.mean([r["seconds"] for r in sel]))
        print(table(sel, f"[{mode}] {label}: mean dose error vs truth, % ({n} patients, {seconds:.0f} s/patient)"))
        print(f"[{mode}] {label} bar, corrected:   " + verdict(sel, "err"))
        print(f"[{mode}] {label} bar, uncorrected: " + verdict(sel, "err_uncorrected"))
        print(f"[{mode}] {label} bar, calibration error divided out: " + verdict(sel, "err_calibrated"))
        print(f"[{mode}] {label} " + resolution_score(sel))
        print(f"[{mode}] {label} " + marrow_score(sel), flush=True)


def _read_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Rows of earlier ``--csv`` files (numbers back to floats)."""
    rows: list[dict[str, Any]] = []
    text = {"patient_id", "region", "class", "mode", "seed", "flag"}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                rows.append(
                    {k: (v if k in text else float(v) if v not in ("", None) else math.nan) for k, v in r.items()}
                )
    return rows


def main() -> None:
    """Generate or reuse cohorts, run the pipeline on every patient in every resolution mode and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="one generated cohort per seed")
    parser.add_argument("--cohorts", type=Path, nargs="*", default=None, help="reuse these cohort folders")
    parser.add_argument("--resolution", nargs="*", default=["nominal"], choices=RESOLUTION_MODES)
    parser.add_argument("--pool", type=Path, nargs="*", default=None, help="only pool earlier --csv files")
    parser.add_argument("--detail", action="store_true", help="print every organ row")
    args = parser.parse_args()

    if args.pool:
        pooled = _read_rows(args.pool)
        seeds = sorted({r["seed"] for r in pooled})
        for seed in seeds:
            report([r for r in pooled if r["seed"] == seed], args.resolution, f"seed {seed}")
        report(pooled, args.resolution, f"pooled over seeds {', '.join(seeds)}")
        return
    options = dosimetry_options(args)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cohorts = _cohorts(args, tmp)
        for seed, cohort in cohorts:
            truth = truth_rows(cohort)
            recovery = cohort_camera_recovery(cohort) if "recovery" in args.resolution else None
            seed_rows: list[dict[str, Any]] = []
            for patient in _patients(cohort)[: args.patients]:
                for mode in args.resolution:  # every mode per patient: a partial run still compares them
                    found = evaluate_patient(cohort, patient, truth, options, mode, recovery)
                    seed_rows += [{**r, "seed": seed} for r in found]
                if args.csv:
                    write_csv(rows + seed_rows, args.csv)
            report(seed_rows, args.resolution, f"seed {seed}")
            rows += seed_rows
    if len(cohorts) > 1:
        report(rows, args.resolution, f"pooled over seeds {', '.join(s for s, _ in cohorts)}")
    if args.detail:
        head = f"{'patient':<9}{'region':<22}{'true mL':>9}{'mL':>8}{'true Gy':>9}{'Gy':>8}{'noPVC':>8}{'err%':>7}"
        print(f"{'mode':<10}{'seed':<5}" + head + f"{'Teff':>7}{'true':>7}")
        for r in rows:
            if r["class"] != "lesion<4mL":
                print(
                    f"{r['mode']:<10}{r['seed']:<5}{r['patient_id']:<9}{r['region']:<22}{r['true_volume_ml']:>9.1f}"
                    f"{r['volume_ml']:>8.1f}{r['true_gy']:>9.3f}{r['gy']:>8.3f}{r['gy_uncorrected']:>8.3f}"
                    f"{100 * r['err']:>+7.1f}{r['t_eff_h']:>7.1f}{r['true_t_eff_h']:>7.1f}"
                )
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
