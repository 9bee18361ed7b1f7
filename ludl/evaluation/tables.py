"""Method-comparison tables: region mean-dose errors per method × scan time × region class (issue 11 item 7).

Inputs, held-out patients only (``fold`` = the test fold):

- ``predictions/regions.csv`` (training): the network's region means inside the REFERENCE masks (so lesion dose is
  scored apart from segmentation), ``net_mean_dose_corrected_gy`` (single-scan partial-volume correction; the
  method ``network``; NaN → the uncorrected mean) and ``net_mean_dose_gy`` (``network_uncorrected``);
- ``stp_regions.csv`` (`ludl.dosimetry.baselines.STP_COLUMNS`): Hänscheid, Madsen, prior-informed, and from its
  ground-truth columns the multi-time-point pipeline's own error against the synthetic truth (``multi_tp``);
- the cohort's single-scan reference: ``truth/single_scan_reference.csv`` (per region and scan time) when present,
  else the summary ``truth/single_scan_bound.csv`` (median |error| per class and scan time).

Each row of the comparison holds `ludl.evaluation.stats.STATISTICS` with patient-bootstrap 95 % CIs, against the
multi-TP ground truth (``against = ground_truth``) and against the synthetic truth (``against = truth``). The paired
table holds network − method of the median |error| on the same regions of the same patients; the reference table
the ratio network / reference of the median |error| against the truth.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ludl.dosimetry.baselines import region_class
from ludl.errors import InputError
from ludl.evaluation.csvfiles import num, read_rows
from ludl.evaluation.stats import (
    STATISTICS,
    bootstrap_error_statistics,
    paired_median_abs_interval,
    relative_error_pct,
)
from ludl.models.uncertainty import SMALL_LESION_ML

__all__ = [
    "AGAINST",
    "CLASS_LABELS",
    "COMPARISON_COLUMNS",
    "EVAL_CLASSES",
    "LESION_MIN_VOLUME_ML",
    "METHOD_LABELS",
    "PAIRED_COLUMNS",
    "REFERENCE_COLUMNS",
    "SCAN_TIMES_H",
    "ComparisonTables",
    "ScoredRegion",
    "comparison_table",
    "comparison_tables",
    "network_regions",
    "paired_table",
    "reference_regions",
    "reference_summary",
    "reference_table",
    "stp_regions",
]

SCAN_TIMES_H: tuple[float, ...] = (4.0, 24.0, 48.0, 96.0, 168.0)
# Region classes scored, in table order; salivary and red marrow only appear where the cohort has them.
EVAL_CLASSES: tuple[str, ...] = ("kidneys", "liver", "spleen", "lesions", "salivary", "red_marrow")
LESION_MIN_VOLUME_ML = SMALL_LESION_ML  # smaller lesions are dominated by partial volume (≈ 10 mm FWHM)
AGAINST: tuple[str, ...] = ("ground_truth", "truth")
NETWORK = "network"
MULTI_TP = "multi_tp"
REFERENCE = "reference"
METHOD_LABELS: dict[str, str] = {
    NETWORK: "Network",
    "network_uncorrected": "Network (no PVC)",
    "haenscheid": "Hänscheid",
    "madsen": "Madsen",
    "prior": "Prior-informed",
    MULTI_TP: "Multi-TP pipeline",
    REFERENCE: "Single-scan reference",
}
CLASS_LABELS: dict[str, str] = {
    "kidneys": "Kidneys",
    "liver": "Liver",
    "spleen": "Spleen",
    "lesions": "Lesions ≥ 4 mL",
    "salivary": "Salivary glands",
    "red_marrow": "Red marrow",
}
_CI = tuple(f"{s}_{end}" for s in STATISTICS for end in ("", "low", "high"))
COMPARISON_COLUMNS: tuple[str, ...] = (
    "method",
    "against",
    "timepoint_h",
    "region_class",
    "n_regions",
    "n_patients",
    *(c.rstrip("_") for c in _CI),
)
PAIRED_COLUMNS: tuple[str, ...] = (
    "method",
    "against",
    "timepoint_h",
    "region_class",
    "n_regions",
    "n_patients",
    "network_median_abs_error_pct",
    "method_median_abs_error_pct",
    "difference_pct",
    "difference_low_pct",
    "difference_high_pct",
    "network_better",
)
REFERENCE_COLUMNS: tuple[str, ...] = (
    "timepoint_h",
    "region_class",
    "source",
    "n_regions",
    "network_median_abs_error_pct",
    "reference_median_abs_error_pct",
    "ratio",
    "ratio_low",
    "ratio_high",
)
_REGIONS_CSV = "predictions/regions.csv (written by `python train.py` / the predict step)"
_STP_CSV = "stp_regions.csv (written by `ludl prepare`)"


class ScoredRegion(NamedTuple):
    """One region's mean dose by one method at one scan time, beside the multi-TP ground truth and the truth."""

    method: str
    patient_id: str
    cycle: int
    timepoint_h: float  # NaN for methods that use every time point (the multi-TP pipeline)
    region: str
    region_class: str
    estimate_gy: float
    ground_truth_gy: float
    truth_gy: float

    @property
    def key(self) -> tuple[str, int, float, str]:
        """What pairs two methods' rows: same patient, cycle, scan time and region."""
        return (self.patient_id, self.cycle, self.timepoint_h, self.region)


def _eval_class(row: Mapping[str, str]) -> str | None:
    """The evaluation class of a row, None when it is not scored (other regions, lesions < 4 mL)."""
    cls = (row.get("region_class") or "").strip() or region_class(row.get("region", ""), row.get("kind", ""))
    if cls == "lesions" and not num(row.get("volume_ml")) >= LESION_MIN_VOLUME_ML:
        return None
    return cls if cls in EVAL_CLASSES else None


def _held_out(rows: Iterable[dict[str, str]], fold: int | None, file: str) -> list[dict[str, str]]:
    if fold is None:
        return list(rows)
    out = []
    for row in rows:
        value = num(row.get("fold"))
        if not math.isfinite(value):
            raise InputError(
                f"{file}: a row of patient {row.get('patient_id')} has no fold; rerun the job that wrote it"
            )
        if int(value) == fold:
            out.append(row)
    return out


def network_regions(path: str | Path, fold: int | None) -> list[ScoredRegion]:
    """The network's held-out region rows (methods ``network`` and, where PVC was applied, ``network_uncorrected``)."""
    required = ("patient_id", "cycle", "fold", "timepoint_h", "region", "kind", "net_mean_dose_gy", "gt_mean_dose_gy")
    rows = _held_out(read_rows(path, required, producer=_REGIONS_CSV), fold, str(path))
    out: list[ScoredRegion] = []
    any_corrected = any(math.isfinite(num(r.get("net_mean_dose_corrected_gy"))) for r in rows)
    for row in rows:
        cls = _eval_class(row)
        if cls is None:
            continue
        raw, corrected = num(row["net_mean_dose_gy"]), num(row.get("net_mean_dose_corrected_gy"))
        base = (str(row["patient_id"]), int(num(row["cycle"])), num(row["timepoint_h"]), str(row["region"]), cls)
        refs = (num(row["gt_mean_dose_gy"]), num(row.get("true_mean_dose_gy")))
        out.append(ScoredRegion(NETWORK, *base, corrected if math.isfinite(corrected) else raw, *refs))
        if any_corrected:
            out.append(ScoredRegion("network_uncorrected", *base, raw, *refs))
    return out


def stp_regions(path: str | Path, fold: int | None) -> list[ScoredRegion]:
    """Held-out rows of ``stp_regions.csv`` per STP method, plus the multi-TP ground truth against the truth."""
    required = ("patient_id", "cycle", "fold", "region", "method", "timepoint_h", "mean_dose_gy", "gt_mean_dose_gy")
    rows = _held_out(read_rows(path, required, producer=_STP_CSV), fold, str(path))
    out: list[ScoredRegion] = []
    multi_tp: dict[tuple[str, int, str], ScoredRegion] = {}
    for row in rows:
        cls = _eval_class(row)
        if cls is None:
            continue
        patient, cycle, region = str(row["patient_id"]), int(num(row["cycle"])), str(row["region"])
        gt, true = num(row["gt_mean_dose_gy"]), num(row.get("true_mean_dose_gy"))
        out.append(
            ScoredRegion(
                str(row["method"]),
                patient,
                cycle,
                num(row["timepoint_h"]),
                region,
                cls,
                num(row["mean_dose_gy"]),
                gt,
                true,
            )
        )
        # The multi-TP pipeline uses every scan: one row per region, whatever scan time the STP row came from.
        multi_tp.setdefault(
            (patient, cycle, region), ScoredRegion(MULTI_TP, patient, cycle, math.nan, region, cls, gt, gt, true)
        )
    return out + list(multi_tp.values())


_REF_TIME = ("scan_h", "timepoint_h")
# (estimate, truth) column pairs in order of preference: the measurement-noise variant first (issue 11 "Must show").
_REF_PAIRS = (
    ("dose_ref_noisy_gy", "dose_true_gy"),
    ("dose_ref_noise_free_gy", "dose_true_gy"),
    ("dose_ref_gy", "dose_true_gy"),
    ("mean_dose_gy", "true_mean_dose_gy"),
    ("tia_ref_noisy_mbq_h", "tia_true_mbq_h"),
    ("tia_ref_noise_free_mbq_h", "tia_true_mbq_h"),
    ("tia_ref_mbq_h", "tia_true_mbq_h"),
)


def reference_regions(path: str | Path, scored: Iterable[tuple[str, str]]) -> tuple[list[ScoredRegion], str]:
    """The single-scan reference's rows of the scored (patient, region) pairs (method ``reference``, against the
    truth) and the columns used.

    Only regions the network was scored on enter (held-out patients, lesions ≥ 4 mL: the reference file need not
    carry volumes). A TIA-only reference scores the same relative error as its dose: the dose per TIA of a region
    is common to both.
    """
    rows = read_rows(path, ("patient_id", "region"), producer="`ludl synth` (cohort v2)")
    if not rows:
        return [], ""
    columns = set(rows[0])
    time_col = next((c for c in _REF_TIME if c in columns), None)
    pair = next(((e, t) for e, t in _REF_PAIRS if e in columns and t in columns), None)
    if time_col is None or pair is None:
        raise InputError(
            f"{path}: no scan-time column ({' or '.join(_REF_TIME)}) or reference/truth column pair "
            f"({', '.join('/'.join(p) for p in _REF_PAIRS)}); regenerate the cohort with this ludl version"
        )
    keep = set(scored)
    out = []
    for row in rows:
        if (row["patient_id"], row["region"]) not in keep:
            continue
        cls = (row.get("region_class") or "").strip() or region_class(row["region"], row.get("kind", ""))
        if cls not in EVAL_CLASSES:
            continue
        est, true = num(row[pair[0]]), num(row[pair[1]])
        cycle = int(num(row.get("cycle"))) if math.isfinite(num(row.get("cycle"))) else 1
        out.append(
            ScoredRegion(
                REFERENCE, row["patient_id"], cycle, num(row[time_col]), row["region"], cls, est, math.nan, true
            )
        )
    return out, f"{pair[0]} vs {pair[1]}"


def reference_summary(path: str | Path) -> dict[tuple[float, str], float]:
    """(scan time h, class) → median |error| % of the cohort's summary ``single_scan_bound.csv``."""
    rows = read_rows(path, ("region_class", "timepoint_h", "median_abs_error_pct"), producer="`ludl synth`")
    return {(num(r["timepoint_h"]), str(r["region_class"])): num(r["median_abs_error_pct"]) for r in rows}


def _errors(rows: Sequence[ScoredRegion], against: str) -> np.ndarray:
    ref = [r.ground_truth_gy if against == "ground_truth" else r.truth_gy for r in rows]
    return relative_error_pct([r.estimate_gy for r in rows], ref)


def _groups(rows: Iterable[ScoredRegion]) -> dict[tuple[str, float, str], list[ScoredRegion]]:
    groups: dict[tuple[str, float, str], list[ScoredRegion]] = defaultdict(list)
    for r in rows:
        groups[(r.method, -1.0 if math.isnan(r.timepoint_h) else r.timepoint_h, r.region_class)].append(r)
    return groups


def _order(method: str) -> int:
    names = list(METHOD_LABELS)
    return names.index(method) if method in names else len(names)


def _sort_key(key: tuple[str, float, str]) -> tuple[int, float, int]:
    method, time_h, cls = key
    return (_order(method), time_h, EVAL_CLASSES.index(cls))


def comparison_table(rows: Sequence[ScoredRegion], *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Error statistics with patient-bootstrap CIs per method × scan time × class × reference (`COMPARISON_COLUMNS`)."""
    table = []
    for key, group in sorted(_groups(rows).items(), key=lambda kv: _sort_key(kv[0])):
        method, time_h, cls = key
        for against in AGAINST:
            if (method == MULTI_TP and against == "ground_truth") or (method == REFERENCE and against != "truth"):
                continue  # the ground truth against itself is 0; the reference only has the truth
            errors = _errors(group, against)
            ok = np.isfinite(errors)
            if not ok.any():
                continue
            patients = [r.patient_id for r, good in zip(group, ok, strict=True) if good]
            stats = bootstrap_error_statistics(errors[ok], patients, n_boot=n_boot, seed=seed)
            row: dict[str, Any] = {
                "method": method,
                "against": against,
                "timepoint_h": math.nan if time_h < 0 else time_h,
                "region_class": cls,
                "n_regions": int(ok.sum()),
                "n_patients": len(set(patients)),
            }
            for name, interval in stats.items():
                row[name], row[f"{name}_low"], row[f"{name}_high"] = interval.value, interval.low, interval.high
            table.append(row)
    return table


def _median_abs(values: np.ndarray) -> float:
    return float(np.median(np.abs(values))) if values.size else math.nan


def _paired(
    a: Sequence[ScoredRegion], b: Sequence[ScoredRegion], against: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Errors of two methods on the regions both scored (same patient, cycle, scan time, region)."""
    by_key = {r.key: r for r in b}
    shared = [(r, by_key[r.key]) for r in a if r.key in by_key]
    ea = _errors([x for x, _ in shared], against)
    eb = _errors([y for _, y in shared], against)
    ok = np.isfinite(ea) & np.isfinite(eb)
    return ea[ok], eb[ok], [x.patient_id for (x, _), good in zip(shared, ok, strict=True) if good]


def paired_table(rows: Sequence[ScoredRegion], *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Network − method of the median |error| on shared regions, with paired patient-bootstrap CIs."""
    groups = _groups(rows)
    table = []
    for key, group in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        method, time_h, cls = key
        net = groups.get((NETWORK, time_h, cls))
        if net is None or method in (NETWORK, "network_uncorrected", MULTI_TP, REFERENCE):
            continue
        for against in AGAINST:
            ea, eb, patients = _paired(net, group, against)
            if ea.size == 0:
                continue
            diff = paired_median_abs_interval(ea, eb, patients, n_boot=n_boot, seed=seed)
            table.append(
                {
                    "method": method,
                    "against": against,
                    "timepoint_h": time_h,
                    "region_class": cls,
                    "n_regions": int(ea.size),
                    "n_patients": len(set(patients)),
                    "network_median_abs_error_pct": _median_abs(ea),
                    "method_median_abs_error_pct": _median_abs(eb),
                    "difference_pct": diff.value,
                    "difference_low_pct": diff.low,
                    "difference_high_pct": diff.high,
                    "network_better": bool(diff.high < 0),
                }
            )
    return table


def reference_table(
    rows: Sequence[ScoredRegion],
    summary: Mapping[tuple[float, str], float] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Network / reference median |error| against the truth per scan time and class.

    With region-level reference rows the ratio is paired (same regions) with a paired patient-bootstrap CI; with
    only the cohort's summary (`reference_summary`) it is the network's median |error| over the summary's value.
    """
    groups = _groups(rows)
    table = []
    for (method, time_h, cls), net in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        if method != NETWORK:
            continue
        ref = groups.get((REFERENCE, time_h, cls))
        row: dict[str, Any] = {"timepoint_h": time_h, "region_class": cls}
        if ref is not None:
            ea, eb, patients = _paired(net, ref, "truth")
            if ea.size == 0:
                continue
            r = paired_median_abs_interval(ea, eb, patients, ratio=True, n_boot=n_boot, seed=seed)
            row.update(source="per region", n_regions=int(ea.size), network_median_abs_error_pct=_median_abs(ea))
            row.update(
                reference_median_abs_error_pct=_median_abs(eb), ratio=r.value, ratio_low=r.low, ratio_high=r.high
            )
        elif summary and (time_h, cls) in summary:
            e = _errors(net, "truth")
            e = e[np.isfinite(e)]
            ref_value = summary[(time_h, cls)]
            row.update(source="cohort summary", n_regions=int(e.size), network_median_abs_error_pct=_median_abs(e))
            row.update(
                reference_median_abs_error_pct=ref_value,
                ratio=_median_abs(e) / ref_value if ref_value > 0 else math.nan,
            )
            row.update(ratio_low=math.nan, ratio_high=math.nan)
        else:
            continue
        table.append(row)
    return sorted(table, key=lambda r: (EVAL_CLASSES.index(r["region_class"]), r["timepoint_h"]))


@dataclass(frozen=True)
class ComparisonTables:
    """The three region-dose tables of one evaluation (rows as dicts with the module's column tuples)."""

    comparison: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    reference: list[dict[str, Any]]
    reference_source: str


def comparison_tables(
    regions_csv: str | Path,
    stp_csv: str | Path | None,
    fold: int | None,
    *,
    cohort_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> ComparisonTables:
    """All region-dose tables from the network's and the STP baselines' CSVs and the cohort's reference."""
    rows = network_regions(regions_csv, fold)
    if not rows:
        raise InputError(f"{regions_csv}: no scored region of fold {fold}; predict the held-out fold first")
    if stp_csv is not None and Path(stp_csv).is_file():
        rows += stp_regions(stp_csv, fold)
    summary: dict[tuple[float, str], float] | None = None
    source = "none"
    truth = Path(cohort_dir) / "truth" if cohort_dir is not None else None
    if truth is not None and (truth / "single_scan_reference.csv").is_file():
        ref_rows, columns = reference_regions(
            truth / "single_scan_reference.csv", {(r.patient_id, r.region) for r in rows if r.method == NETWORK}
        )
        rows += ref_rows
        source = f"truth/single_scan_reference.csv ({columns})"
    elif truth is not None and (truth / "single_scan_bound.csv").is_file():
        summary = reference_summary(truth / "single_scan_bound.csv")
        source = "truth/single_scan_bound.csv (cohort summary, TIA error)"
    return ComparisonTables(
        comparison=comparison_table(rows, n_boot=n_boot, seed=seed),
        paired=paired_table(rows, n_boot=n_boot, seed=seed),
        reference=reference_table(rows, summary, n_boot=n_boot, seed=seed),
        reference_source=source,
    )
