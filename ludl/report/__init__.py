"""The clinical report shared by `ludl dosimetry` and `infer.py`: content dataclasses and their HTML/PDF rendering."""

from ludl.report.content import (
    RegionDose,
    ReportContent,
    ReportHeader,
    ReportImages,
    ResponseEstimate,
    TimeActivityCurve,
)
from ludl.report.limits import ORGAN_LIMITS, OrganLimit
from ludl.report.writer import write_report

__all__ = [
    "ORGAN_LIMITS",
    "OrganLimit",
    "RegionDose",
    "ReportContent",
    "ReportHeader",
    "ReportImages",
    "ResponseEstimate",
    "TimeActivityCurve",
    "write_report",
]
