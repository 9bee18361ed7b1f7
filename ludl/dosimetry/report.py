"""Human-readable outputs of a dosimetry run: a DVH plot (PNG, matplotlib Agg) and a short HTML summary.

Both are de-identified: no patient name, ID or date appears in them (the caller names the output folder).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ludl.dosimetry.regions import RegionSet
from ludl.io.atomic import atomic_write, atomic_write_text
from ludl.physics.radiobiology import dvh

__all__ = ["plot_dvh", "summary_html"]

_MAX_CURVES = 24  # beyond this a legend is unreadable; the largest lesions are kept


def plot_dvh(
    dose_gy: npt.ArrayLike, regions: RegionSet, path: str | Path, *, exclude_kinds: Sequence[str] = ("body",)
) -> Path:
    """Cumulative DVH of every region (organs solid, lesions dashed, marrow dotted) written as PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    dose = np.asarray(dose_gy, dtype=np.float64)
    names = [n for n, k in regions.kinds.items() if k not in exclude_kinds]
    sizes = {n: int(np.count_nonzero(regions.labels == regions.values[n])) for n in names}
    names = sorted(names, key=lambda n: (regions.kinds[n] == "lesion", -sizes[n]))[:_MAX_CURVES]
    styles = {"organ": "-", "lesion": "--", "marrow": ":", "body": "-."}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=100)
    try:
        for name in names:
            if sizes[name] == 0:
                continue
            axis, frac = dvh(dose, regions.mask(name), bins=256)
            ax.plot(axis, 100.0 * frac, styles.get(regions.kinds[name], "-"), label=name, linewidth=1.2)
        ax.set_xlabel("absorbed dose (Gy)")
        ax.set_ylabel("volume (%)")
        ax.set_ylim(0, 102)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=7, ncol=2, loc="upper right")
        ax.set_title("cumulative dose–volume histograms")
        fig.tight_layout()
        with atomic_write(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}g}"
    return html.escape(str(value))


def summary_html(
    path: str | Path,
    *,
    rows: Sequence[Mapping[str, Any]],
    registrations: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    notes: Sequence[str],
    whole_body_tumour_dose_gy: float | None,
    dvh_png: str | None = "dvh.png",
) -> Path:
    """Write a one-page HTML summary (settings, region table, registration quality, warnings), atomically."""
    cols = (
        "region",
        "kind",
        "volume_ml",
        "mean_dose_gy",
        "mean_dose_uncorrected_gy",
        "d2_gy",
        "d98_gy",
        "tia_mbq_h",
        "model",
        "t_eff_h",
        "pvc_factor",
        "bed_gy",
        "scored",
    )
    reg_cols = (
        "timepoint_h",
        "reference",
        "tx_mm",
        "ty_mm",
        "tz_mm",
        "rx_deg",
        "ry_deg",
        "rz_deg",
        "hu_correlation",
        "mean_abs_diff_hu",
        "large_diff_fraction",
        "flags",
    )

    def table(columns: Sequence[str], data: Sequence[Mapping[str, Any]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in data)
        return f"<table><tr>{head}</tr>{body}</table>"

    settings_text = ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in settings.items())
    wbtd = "–" if whole_body_tumour_dose_gy is None else f"{whole_body_tumour_dose_gy:.3g} Gy"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ludl dosimetry</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:0.85em}"
        "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}th{background:#eee}</style></head><body>",
        "<h1>Multi-time-point dosimetry (177Lu)</h1>",
        f"<p>{settings_text}</p>",
        f"<p>whole-body tumour dose (scored lesions, volume-weighted): <b>{wbtd}</b></p>",
        "<h2>Regions</h2>",
        table(cols, rows),
        "<p>mean_dose_gy is partial-volume corrected (method in settings); voxel statistics are uncorrected.</p>",
        "<h2>Registration to the reference time point</h2>",
        table(reg_cols, registrations),
    ]
    if notes:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if dvh_png:
        parts.append(f"<h2>Dose–volume histograms</h2><img src='{html.escape(dvh_png)}' alt='DVH'>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))
