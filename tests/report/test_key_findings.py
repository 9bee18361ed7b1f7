"""The key findings state a limit's share together with the mean dose's 90 % interval where the method gives one."""

from __future__ import annotations

import re

from ludl.report.page import key_findings
from tests.report.synthetic import content


def test_marrow_finding_carries_its_interval_and_caution() -> None:
    report = content()
    marrow = next(r for r in report.regions if r.name == "red_marrow")
    assert marrow.dose_interval_90_gy is not None
    line = next(line for line in key_findings(report) if line.startswith("Red marrow"))
    low, high = (float(v) for v in re.search(r"90 % interval ([\d.]+)–([\d.]+) Gy", line).groups())  # type: ignore[union-attr]
    assert abs(low - marrow.dose_interval_90_gy[0]) < 0.01 and abs(high - marrow.dose_interval_90_gy[1]) < 0.01
    assert "Caution: see the warnings." in line and "% of the 2 Gy limit" in line
