"""What a clinical report shows: plain data filled by `ludl dosimetry` (multi-time-point) and `infer.py` (single scan).

The report package renders these; the jobs never format HTML themselves. Every number carries its unit in its name;
identifiers appear only in `ReportHeader.patient_label`, which the caller pseudonymises unless the user asked to keep
the real ID.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ludl.imaging.volume import Volume

__all__ = [
    "RegionDose",
    "ReportContent",
    "ReportHeader",
    "ReportImages",
    "ResponseEstimate",
    "TimeActivityCurve",
]


@dataclass(frozen=True)
class ReportHeader:
    """Who and what: pseudonymised patient label, cycle, scan dates, activity, method and model."""

    patient_label: str  # pseudonym (e.g. "SYN0001" for synthetic data) unless identifiers were asked for
    cycle: int
    scan_dates: tuple[str, ...]  # ISO dates (or "" when unknown), one per scan used
    scan_times_h: tuple[float, ...]  # hours after injection, one per scan used
    injected_mbq: float
    method: str  # e.g. "multi-time-point (5 SPECT/CT)" or "single scan at 24 h + PSMA PET (network)"
    nuclide: str = "Lu-177"
    model: str | None = None  # model artifact name/version for single-scan inference
    code_version: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)  # where a value came from, e.g. {"time_h": "command line"}
    administered_mbq: float | None = None  # net administered (injected − residual); Gy/GBq uses it when given


@dataclass(frozen=True)
class RegionDose:
    """One organ or lesion: volume, dose statistics (Gy), kinetics and how far the numbers can be trusted."""

    name: str  # canonical region name (kidney_left, lesion_003, red_marrow, …)
    kind: str  # organ | lesion | marrow | body
    volume_ml: float
    mean_dose_gy: float  # the region's reported mean dose (partial-volume corrected where the method does so)
    voxel_mean_dose_gy: float  # mean of the dose map's voxels in the region (uncorrected)
    median_dose_gy: float
    max_dose_gy: float
    d2_gy: float
    d50_gy: float
    d98_gy: float
    tia_mbq_h: float
    scored: bool = True  # False: partly outside the field of view at some time point; excluded from headline numbers
    t_eff_h: float | None = None  # effective half-life of the terminal (clearance) phase; None where not meaningful
    bed_gy: float | None = None  # biologically effective dose (kidneys, salivary glands, red marrow)
    dose_interval_90_gy: tuple[float, float] | None = None  # stated 90 % interval of mean_dose_gy
    correction_factor: float | None = None  # mean_dose_gy / voxel_mean_dose_gy (partial-volume correction)
    flags: tuple[str, ...] = ()  # e.g. "image-based red marrow dominated by spill-in from lesions"


@dataclass(frozen=True)
class TimeActivityCurve:
    """Measured region activities and the fitted (multi-TP) or predicted (single-scan) curve through them."""

    region: str
    times_h: tuple[float, ...]  # measured scan times
    activity_mbq: tuple[float, ...]  # measured activities at those times
    curve_times_h: tuple[float, ...]  # dense times of the fitted/predicted curve
    curve_activity_mbq: tuple[float, ...]
    model: str  # fit model name, or "predicted" for single-scan


@dataclass(frozen=True)
class ResponseEstimate:
    """P(non-response after two cycles) with its interval and what it is compared with."""

    probability: float
    interval_90: tuple[float, float]
    comparison: str  # e.g. "PET-only baseline 0.52; held-out AUC 0.78 [0.70, 0.85]; calibration slope 0.95"


@dataclass(frozen=True)
class ReportImages:
    """The volumes the report draws from, all on the dose grid (the SPECT's) except where stated."""

    dose_gy: Volume
    labels: Volume  # integer label map on the dose grid
    label_names: Mapping[int, str]  # label value → region name
    ct_hu: Volume | None = None  # on the dose grid or its own (resampled by the report)
    pet_suv: Volume | None = None  # registered to the SPECT/CT (any grid; resampled by the report)


@dataclass(frozen=True)
class ReportContent:
    """Everything one report shows; `ludl.report.write_report(content, out_dir)` renders it (HTML, PDF)."""

    title: str  # "Multi-time-point dosimetry" / "Single-scan dosimetry"
    header: ReportHeader
    regions: tuple[RegionDose, ...]
    images: ReportImages
    curves: tuple[TimeActivityCurve, ...] = ()
    response: ResponseEstimate | None = None
    warnings: tuple[str, ...] = ()  # shown in a box at the top
    notes: tuple[str, ...] = ()  # method details shown at the end
    registration_rows: tuple[Mapping[str, object], ...] = ()  # optional registration-quality table
