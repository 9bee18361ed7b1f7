"""The single-scan report's registration table: one column per axis, numbers rounded, flags in words."""

from __future__ import annotations

import re


def test_pet_registration_row_renders_as_readable_columns() -> None:
    from ludl.inference.report import _registration_row
    from ludl.report.page import _registration_html

    info = {
        "translation_mm": [-0.0216162, -4.8985668, -2.0961719],
        "rotation_deg": [2.2513112, 0.3641281, 0.3872215],
        "hu_correlation": 0.99187,
        "mean_abs_diff_hu": 17.0612,
        "flags": [],
        "ok": True,
    }
    page = _registration_html([_registration_row(info)])
    assert "<h2>Registration</h2>" in page
    cells = re.findall(r"<td>(.*?)</td>", page)
    assert cells == ["PET/CT → SPECT/CT", "0.0", "-4.9", "-2.1", "2.3", "0.4", "0.4", "0.992", "17.1", "none"]
    assert "[" not in page and "Shift y (mm)" in page and "Rotation x (°)" in page
    flagged = _registration_html([_registration_row({**info, "flags": ["low CT correlation"], "ok": False})])
    assert "low CT correlation" in flagged
