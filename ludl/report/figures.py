"""The report's figures (matplotlib, Agg): PET and dose MIPs, dose-on-CT slices, time–activity curves, DVHs.

Every figure is a function of the `ReportContent` alone, returned as a `Figure`; the page embeds them as PNG and the
PDF fallback prints the same figures. Images are shown in the radiological convention: the patient's right on the
viewer's left, anterior up in axial slices, head up in coronal ones, with the true voxel aspect ratio.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume
from ludl.physics.radiobiology import dvh
from ludl.report.content import RegionDose, ReportContent, ReportImages
from ludl.report.format import region_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MAX_DVH_CURVES",
    "SliceTarget",
    "dvh_figure",
    "mip_figure",
    "png_bytes",
    "slice_figure",
    "slice_targets",
    "tac_figure",
]

MAX_DVH_CURVES = 12  # beyond this a legend stops being readable (issue 12: 24 curves with repeating colours)
_MAX_LESION_SLICES = 2  # the hottest scored lesions drawn on CT
_MAX_TAC_LESIONS = 5
_DOSE_CMAP = "turbo"
_DOSE_FLOOR = 0.10  # dose below this share of the panel's maximum is left transparent over the CT
_COLOURS = (  # Okabe–Ito and tab10 without repeats: 12 distinct colours, colour-blind friendly first
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8c564b",
    "#9467bd", "#7f7f7f", "#bcbd22", "#e6c700",
)  # fmt: skip


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _oriented(volume: Volume) -> npt.NDArray[np.float64]:
    """The array flipped so that x runs to the patient's left, y to posterior and z to head (LPS, axis-aligned)."""
    array = np.asarray(volume.array, dtype=np.float64)
    signs = np.sign(np.diag(np.asarray(volume.direction, dtype=np.float64)))  # x, y, z index axes
    for axis_xyz, sign in enumerate(signs):
        if sign < 0:
            array = np.flip(array, axis=2 - axis_xyz)
    return array


def _on_dose_grid(volume: Volume | None, images: ReportImages) -> npt.NDArray[np.float64] | None:
    if volume is None:
        return None
    if not volume.same_grid(images.dose_gy):
        volume = resample_to(volume, images.dose_gy, kind="linear")
    return _oriented(volume)


def _mask(images: ReportImages, names: Sequence[str]) -> npt.NDArray[np.bool_]:
    labels = _oriented(images.labels)
    values = [v for v, n in images.label_names.items() if n in names]
    return np.isin(labels, values)


def _coronal_mip(volume: Volume) -> tuple[npt.NDArray[np.float64], tuple[float, float, float, float]]:
    """Maximum along anterior–posterior, head up, with its extent in mm (true aspect)."""
    array = _oriented(volume)
    sz, _, sx = volume.spacing_zyx_mm
    return array.max(axis=1), (0.0, array.shape[2] * sx, 0.0, array.shape[0] * sz)


def mip_figure(images: ReportImages) -> Figure:
    """Coronal maximum-intensity projections: the PSMA PET (inverted grey, its own field of view) and the dose (Gy)."""
    plt = _pyplot()
    panels = [("dose", *_coronal_mip(images.dose_gy))]
    if images.pet_suv is not None:
        panels.insert(0, ("pet", *_coronal_mip(images.pet_suv)))
    height = 6.5
    widths = [height * e[1] / e[3] for _, _, e in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(min(12.0, sum(widths) + 1.6 * len(panels) + 0.4), height),
                             squeeze=False, gridspec_kw={"width_ratios": widths})  # fmt: skip
    for ax, (kind, mip, extent) in zip(axes[0], panels, strict=True):
        positive = mip[mip > 0]
        if kind == "pet":
            top = float(np.percentile(positive, 99.5)) if positive.size else 1.0
            shown = ax.imshow(mip, cmap="gray_r", vmin=0, vmax=top, origin="lower", extent=extent)
            fig.colorbar(shown, ax=ax, fraction=0.05, pad=0.02, label="SUV")
            ax.set_title("PSMA PET, maximum-intensity projection", fontsize=10)
        else:
            top = float(np.percentile(positive, 99.8)) if positive.size else 1.0
            shown = ax.imshow(mip, cmap="inferno", vmin=0, vmax=top, origin="lower", extent=extent)
            fig.colorbar(shown, ax=ax, fraction=0.05, pad=0.02, label="absorbed dose (Gy)")
            ax.set_title("Absorbed dose, maximum-intensity projection", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.02, 0.02, "R", transform=ax.transAxes, color="tab:blue", fontsize=11, fontweight="bold")
        ax.text(0.95, 0.02, "L", transform=ax.transAxes, color="tab:blue", fontsize=11, fontweight="bold")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class SliceTarget:
    """What one row of dose-on-CT slices goes through: a title and the regions whose centre it cuts."""

    title: str
    regions: tuple[str, ...]


def slice_targets(content: ReportContent) -> tuple[SliceTarget, ...]:
    """The hottest scored lesions (by mean dose) and the kidneys, where the label map holds them."""
    present = set(content.images.label_names.values())
    lesions = sorted(
        (r for r in content.regions if r.kind == "lesion" and r.scored and math.isfinite(r.mean_dose_gy)),
        key=lambda r: -r.mean_dose_gy,
    )
    targets = [
        SliceTarget(f"{region_label(r.name)}, mean {r.mean_dose_gy:.1f} Gy", (r.name,))
        for r in lesions[:_MAX_LESION_SLICES]
        if r.name in present
    ]
    kidneys = tuple(n for n in ("kidney_left", "kidney_right") if n in present)
    if kidneys:
        targets.append(SliceTarget("Kidneys", kidneys))
    return tuple(targets)


def _nice_levels(top: float) -> list[float]:
    """Three isodose levels at round numbers near 25, 50 and 75 % of the panel's maximum."""
    levels = []
    for share in (0.25, 0.5, 0.75):
        value = share * top
        step = 10 ** math.floor(math.log10(value)) if value > 0 else 1.0
        levels.append(round(value / step * 2) / 2 * step)
    return sorted({v for v in levels if v > 0})


def _dose_panel(ax: Any, ct: npt.NDArray[np.float64] | None, dose: npt.NDArray[np.float64],
                outline: npt.NDArray[np.bool_], top: float, extent: tuple[float, ...], origin: str) -> Any:  # fmt: skip
    """CT in grey, the dose washed over it in colour, isodose lines labelled in Gy, the target outlined."""
    if ct is not None:
        ax.imshow(ct, cmap="gray", vmin=-160, vmax=240, origin=origin, extent=extent, interpolation="bilinear")
    else:
        ax.set_facecolor("black")
    wash = np.ma.masked_less(dose, _DOSE_FLOOR * top)
    shown = ax.imshow(wash, cmap=_DOSE_CMAP, vmin=0, vmax=top, alpha=0.55, origin=origin, extent=extent,
                      interpolation="bilinear")  # fmt: skip
    levels = _nice_levels(top)
    if levels and float(dose.max()) > levels[0]:
        lines = ax.contour(dose, levels=levels, colors="white", linewidths=0.8, origin=origin, extent=extent)
        ax.clabel(lines, fmt=lambda v: f"{v:g} Gy", fontsize=7)
    if outline.any():
        ax.contour(outline.astype(float), levels=[0.5], colors="cyan", linewidths=1.0, linestyles="dashed",
                   origin=origin, extent=extent)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def slice_figure(content: ReportContent) -> Figure | None:
    """Axial and coronal dose-on-CT slices through each `slice_targets` region (None without a target)."""
    images = content.images
    masks = {t: _mask(images, t.regions) for t in slice_targets(content)}
    targets = [t for t, m in masks.items() if m.any()]
    if not targets:
        return None
    plt = _pyplot()
    dose = _oriented(images.dose_gy)
    ct = _on_dose_grid(images.ct_hu, images)
    sz, sy, sx = images.dose_gy.spacing_zyx_mm
    fig, axes = plt.subplots(len(targets), 2, figsize=(10.0, 4.3 * len(targets)), squeeze=False, layout="constrained")
    for row, target in zip(axes, targets, strict=True):
        mask = masks[target]
        z, y, _ = (round(float(c)) for c in np.argwhere(mask).mean(axis=0))
        half = max(20, int(110.0 / sz))  # coronal window ±110 mm around the target, head up
        z0, z1 = max(0, z - half), min(dose.shape[0], z + half + 1)
        axial, coronal = dose[z], dose[z0:z1, y, :]
        top = float(max(np.percentile(dose[mask], 99.5), 1e-6))
        shown = _dose_panel(row[0], None if ct is None else ct[z], axial, mask[z], top,
                            (0.0, dose.shape[2] * sx, dose.shape[1] * sy, 0.0), "upper")  # fmt: skip
        _dose_panel(row[1], None if ct is None else ct[z0:z1, y, :], coronal, mask[z0:z1, y, :], top,
                    (0.0, dose.shape[2] * sx, z0 * sz, z1 * sz), "lower")  # fmt: skip
        row[0].set_title(f"{target.title}: axial", fontsize=10)
        row[1].set_title(f"{target.title}: coronal", fontsize=10)
        for ax in row:
            ax.text(0.02, 0.03, "R", transform=ax.transAxes, color="yellow", fontsize=10, fontweight="bold")
            ax.text(0.94, 0.03, "L", transform=ax.transAxes, color="yellow", fontsize=10, fontweight="bold")
        fig.colorbar(shown, ax=list(row), fraction=0.04, pad=0.02, label="absorbed dose (Gy)")
    return fig


def tac_figure(content: ReportContent) -> Figure | None:
    """Measured region activities with their fitted (or predicted) curves: organs left, hottest lesions right."""
    if not content.curves:
        return None
    plt = _pyplot()
    by_name = {r.name: r for r in content.regions}
    lesion_rank = {
        r.name: i
        for i, r in enumerate(
            sorted((r for r in content.regions if r.kind == "lesion" and r.scored), key=lambda r: -r.mean_dose_gy)
        )
    }
    organs = [c for c in content.curves if by_name.get(c.region, None) is None or by_name[c.region].kind != "lesion"]
    lesions = sorted(
        (c for c in content.curves if c.region in lesion_rank and lesion_rank[c.region] < _MAX_TAC_LESIONS),
        key=lambda c: lesion_rank[c.region],
    )
    groups = [(title, curves) for title, curves in (("Organs", organs), ("Hottest lesions", lesions)) if curves]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.6 * len(groups), 5.2), squeeze=False)
    predicted = all(c.model == "predicted" for c in content.curves)
    for ax, (title, curves) in zip(axes[0], groups, strict=True):
        low, high = math.inf, 0.0
        for colour, curve in zip(_COLOURS, curves, strict=False):
            region = by_name.get(curve.region)
            label = region_label(curve.region)
            if region is not None and region.scored and region.t_eff_h is not None and math.isfinite(region.t_eff_h):
                label += f" (T½ eff {region.t_eff_h:.0f} h)"
            style = "--" if curve.model == "predicted" else "-"
            ax.plot(curve.curve_times_h, curve.curve_activity_mbq, style, color=colour, linewidth=1.3, label=label)
            ax.plot(curve.times_h, curve.activity_mbq, "o", color=colour, markersize=5)
            measured = [a for a in curve.activity_mbq if a > 0]
            low = min(low, *measured) if measured else low
            high = max(high, *measured, *curve.curve_activity_mbq)
        # Log scale: the terminal (clearance) phase is a straight line; the rise from zero is cut off below.
        ax.set_yscale("log")
        if math.isfinite(low) and high > 0:
            ax.set_ylim(0.3 * low, 2.0 * high)
        ax.set_xlim(left=0)
        ax.set_xlabel("time after injection (h)")
        ax.set_ylabel("activity in region (MBq, log scale)")
        ax.set_title(f"{title} (dots: measured; {'dashed: prediction' if predicted else 'line: fit'})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _dvh_regions(content: ReportContent) -> list[RegionDose]:
    organs = [r for r in content.regions if r.kind in ("organ", "marrow") and r.name != "bladder"]
    organs.sort(key=lambda r: -r.mean_dose_gy if math.isfinite(r.mean_dose_gy) else 0.0)
    lesions = sorted(
        (r for r in content.regions if r.kind == "lesion" and r.scored and math.isfinite(r.mean_dose_gy)),
        key=lambda r: -r.mean_dose_gy,
    )
    n_lesions = min(len(lesions), max(MAX_DVH_CURVES // 2, MAX_DVH_CURVES - len(organs)))
    return (organs[: MAX_DVH_CURVES - n_lesions] + lesions[:n_lesions])[:MAX_DVH_CURVES]


def dvh_figure(content: ReportContent) -> Figure | None:
    """Cumulative DVHs, organs and hottest lesions in two panels (own dose axes), ≤ `MAX_DVH_CURVES` curves in all."""
    chosen = _dvh_regions(content)
    images = content.images
    labels = np.asarray(images.labels.array)
    value_of = {n: v for v, n in images.label_names.items()}
    chosen = [r for r in chosen if r.name in value_of and np.any(labels == value_of[r.name])]
    if not chosen:
        return None
    plt = _pyplot()
    dose = np.asarray(images.dose_gy.array, dtype=np.float64)
    groups = [g for g in ([r for r in chosen if r.kind != "lesion"], [r for r in chosen if r.kind == "lesion"]) if g]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        top = 0.0
        for colour, region in zip(_COLOURS, group, strict=False):
            mask = labels == value_of[region.name]
            axis, frac = dvh(dose, mask, bins=256)
            top = max(top, float(np.percentile(dose[mask], 99.5)))  # a few spill-in voxels must not set the axis
            style = "--" if region.kind == "lesion" else "-"
            ax.plot(axis, 100.0 * frac, style, color=colour, linewidth=1.6, label=region_label(region.name))
        ax.set_xlabel("absorbed dose (Gy)")
        ax.set_ylabel("volume receiving at least this dose (%)")
        ax.set_ylim(0, 102)
        ax.set_xlim(0, top * 1.15 if top > 0 else 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
        ax.set_title("Organs" if group[0].kind != "lesion" else "Hottest lesions", fontsize=10)
    fig.tight_layout()
    return fig
