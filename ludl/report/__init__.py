"""The clinical report shared by `ludl dosimetry` and `infer.py`: content dataclasses and their HTML/PDF rendering."""

from ludl.report.content import (
    RegionDose,
    ReportContent,
    ReportHeader,
    ReportImages,
    ResponseEstimate,
    TimeActivityCurve,
)

__all__ = [
    "RegionDose",
    "ReportContent",
    "ReportHeader",
    "ReportImages",
    "ResponseEstimate",
    "TimeActivityCurve",
]
