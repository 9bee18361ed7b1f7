"""The page's figures as inline PNG ``<img>`` tags: median |error| vs scan time, and network vs ground-truth dose."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ludl.evaluation.tables import CLASS_LABELS, METHOD_LABELS, SCAN_TIMES_H, ComparisonTables

if TYPE_CHECKING:
    from ludl.evaluation.page import DoseSlice

__all__ = ["error_figure", "slice_figure"]

AGAINST_LABELS = {"ground_truth": "multi-time-point ground truth", "truth": "synthetic truth"}


def _methods(rows: Sequence[Any]) -> list[str]:
    seen = list(dict.fromkeys(str(r["method"]) for r in rows))
    order = list(METHOD_LABELS)
    return sorted(seen, key=lambda m: order.index(m) if m in order else len(order))


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def error_figure(tables: ComparisonTables) -> str:
    """Median |error| vs scan time per method, one panel per class (columns) and reference (rows), with CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in tables.comparison if math.isfinite(float(r["timepoint_h"]))]
    classes = [c for c in CLASS_LABELS if any(r["region_class"] == c for r in rows)]
    if not classes:
        return ""
    methods = _methods(rows)
    fig, axes = plt.subplots(2, len(classes), figsize=(3.0 * len(classes) + 1.5, 6.4), squeeze=False, sharex=True)
    palette = plt.get_cmap("tab10")
    colours = {m: palette(i % 10) for i, m in enumerate(methods)}
    for i, against in enumerate(("ground_truth", "truth")):
        for j, cls in enumerate(classes):
            ax = axes[i, j]
            for k, m in enumerate(methods):
                pts = sorted(
                    (float(r["timepoint_h"]), r)
                    for r in rows
                    if r["method"] == m and r["against"] == against and r["region_class"] == cls
                )
                if not pts:
                    continue
                t = np.array([p[0] for p in pts]) * (1.0 + 0.03 * (k - len(methods) / 2))  # dodge the CI bars
                y = np.array([p[1]["median_abs_error_pct"] for p in pts])
                lo = y - np.array([p[1]["median_abs_error_pct_low"] for p in pts])
                hi = np.array([p[1]["median_abs_error_pct_high"] for p in pts]) - y
                ax.errorbar(
                    t,
                    y,
                    # A percentile interval need not hold its point estimate (few patients): draw what it covers.
                    yerr=[np.clip(np.nan_to_num(lo), 0, None), np.clip(np.nan_to_num(hi), 0, None)],
                    marker="o",
                    ms=4,
                    capsize=2,
                    lw=1.3,
                    color=colours[m],
                    label=METHOD_LABELS.get(m, m),
                )
            fixed = [
                r
                for r in tables.comparison
                if r["method"] == "multi_tp" and r["against"] == against and r["region_class"] == cls
            ]
            if fixed:
                ax.axhline(fixed[0]["median_abs_error_pct"], color="0.3", ls="--", lw=1, label="Multi-TP pipeline")
            ax.set_xscale("log")
            ax.set_xticks(SCAN_TIMES_H, [f"{t:g}" for t in SCAN_TIMES_H])
            ax.minorticks_off()
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(CLASS_LABELS[cls], fontsize=11)
            if i == 1:
                ax.set_xlabel("Scan time (h)")
            if j == 0:
                ax.set_ylabel(f"Median |error| (%)\nvs {AGAINST_LABELS[against]}")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        ncol=len(handles),
        frameon=False,
        bbox_to_anchor=(0.5, 1.04),
    )
    fig.tight_layout()
    return _png(fig)


def slice_figure(slices: Sequence[DoseSlice]) -> str:
    """Per case: network dose, ground-truth dose (same colour scale, Gy) and their difference (Gy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not slices:
        return '<p class="note">No dose slices were passed to the page.</p>'
    # Row height from the slices' physical aspect, so that tall or flat fields of view leave no blank bands.
    aspect = max(s.network_gy.shape[0] * s.spacing_mm[0] / (s.network_gy.shape[1] * s.spacing_mm[1]) for s in slices)
    fig, axes = plt.subplots(len(slices), 3, figsize=(12, len(slices) * (3.0 * min(aspect, 3.0) + 1.0)), squeeze=False)
    for row, s in zip(axes, slices, strict=True):
        net, gt = np.asarray(s.network_gy, dtype=np.float64), np.asarray(s.ground_truth_gy, dtype=np.float64)
        vmax = float(np.percentile(gt[np.isfinite(gt)], 99.5)) if np.isfinite(gt).any() else 1.0
        # Rows are z, which points superior in the prepared grid (LPS): origin="lower" puts the head at the top.
        extent = (0.0, net.shape[1] * s.spacing_mm[1], 0.0, net.shape[0] * s.spacing_mm[0])
        diff = net - gt
        dmax = max(float(np.nanpercentile(np.abs(diff), 99.5)), 1e-6)
        panels = (
            (net, "Network", "magma", 0.0, vmax),
            (gt, "Multi-TP ground truth", "magma", 0.0, vmax),
            (diff, "Network − ground truth", "RdBu_r", -dmax, dmax),
        )
        for ax, (img, name, cmap, lo, hi) in zip(row, panels, strict=True):
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, extent=extent, origin="lower", interpolation="nearest")
            ax.set_title(f"{name}\n{s.case_id}, {s.timepoint_h:g} h scan, {s.orientation}", fontsize=9)
            ax.set_xlabel("x (mm)", fontsize=8)
            ax.set_ylabel("z (mm)", fontsize=8)
            ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("Dose (Gy)", fontsize=8)
    fig.tight_layout()
    return _png(fig)
