"""PNG montages of synthetic patients so a person can look at them (``ludl synth … preview=true``).

One PNG per patient under ``preview/``: coronal maximum-intensity projections of the PET (SUV), of the SPECT at
every time point (first bed; Bq/mL, one shared scale so the washout is visible), of the true dose (Gy) and the
label map (coronal slice through the body centre is not enough for small lesions, so a label MIP), then the
first CT as a coronal MIP (bone window: skeleton shapes, sclerotic lesions) and as a coronal slice through the
spine (soft-tissue window: tissue texture, noise, lytic lesions).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ludl.imaging.volume import Volume
from ludl.io.nifti import read_nifti
from ludl.io.nm import stitch_beds

__all__ = ["coronal_mip", "write_patient_preview", "write_previews"]


def coronal_mip(volume: Volume) -> npt.NDArray[np.float32]:
    """Maximum-intensity projection along y (anterior–posterior), shown head up: array (z, x) flipped in z."""
    mip = np.max(np.asarray(volume.array, dtype=np.float32), axis=1)
    # LPS z grows towards the head; image rows grow downwards, so flip to put the head on top.
    return np.asarray(mip[::-1], dtype=np.float32)


def coronal_slice_through_spine(volume: Volume) -> npt.NDArray[np.float32]:
    """Coronal slice (z, x) at the y of the densest column (the spine in a CT), head up."""
    arr = np.asarray(volume.array, dtype=np.float32)
    mid_x = arr.shape[2] // 2
    y = int(np.argmax(np.mean(arr[:, :, max(mid_x - 2, 0) : mid_x + 3], axis=(0, 2))))
    return np.asarray(arr[::-1, y, :], dtype=np.float32)


def _aspect(volume: Volume) -> float:
    sz, _, sx = volume.spacing_zyx_mm
    return float(sz / sx)


def write_patient_preview(cohort_dir: Path, patient_id: str, out_png: Path) -> Path:
    """One montage for a patient of a written synthetic cohort (reads its NIfTI images and truth maps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    with (cohort_dir / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["patient_id"] == patient_id and r["cycle"] == "1"]
    panels: list[tuple[str, Volume, str, float | None]] = []
    pet = next((r for r in rows if r["role"] == "pet"), None)
    if pet is not None:
        panels.append((f"PET SUV ({pet['pet_tracer']})", read_nifti(cohort_dir / pet["path"]), "gray_r", None))
    by_time: dict[float, list[Volume]] = {}
    for r in rows:
        if r["role"] == "spect" and r["path"].endswith((".nii", ".nii.gz")):
            by_time.setdefault(float(r["timepoint_h"]), []).append(read_nifti(cohort_dir / r["path"]))
    # All beds of a time point, stitched as the readers stitch them, so the montage shows the whole FOV.
    spects = [(t, beds[0] if len(beds) == 1 else stitch_beds(beds)[0]) for t, beds in sorted(by_time.items())]
    vmax = max((float(np.percentile(v.array, 99.9)) for _, v in spects), default=None)
    for t, v in spects:
        panels.append((f"SPECT {t:g} h", v, "inferno", vmax))
    dose_path = cohort_dir / "truth" / patient_id / "dose_c1.nii.gz"
    if dose_path.exists():
        panels.append(("true dose (Gy)", read_nifti(dose_path), "jet", None))
    mask = next((r for r in rows if r["role"] == "mask"), None)
    if mask is not None:
        panels.append(("labels", read_nifti(cohort_dir / mask["path"], unit="label"), "tab20", None))
    ct = next((r for r in rows if r["role"] == "ct"), None)
    ct_panels: list[tuple[str, npt.NDArray[np.float32], float, float, float]] = []
    if ct is not None:
        ct_vol = read_nifti(cohort_dir / ct["path"], unit="HU")
        ct_panels.append(("CT MIP (HU)", coronal_mip(ct_vol), -200.0, 1500.0, _aspect(ct_vol)))
        ct_panels.append(("CT slice (HU)", coronal_slice_through_spine(ct_vol), -160.0, 240.0, _aspect(ct_vol)))
    n_panels = max(1, len(panels) + len(ct_panels))
    fig, axes = plt.subplots(1, n_panels, figsize=(2.2 * n_panels, 4.2))
    axes_list = np.atleast_1d(axes)
    for ax, (title, image, lo, hi, aspect) in zip(axes_list[len(panels) :], ct_panels, strict=False):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    for ax, (title, vol, cmap, top) in zip(axes_list, panels, strict=False):
        mip = coronal_mip(vol)
        ax.imshow(mip, cmap=cmap, vmin=0.0, vmax=top, aspect=_aspect(vol), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(patient_id, fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    # No timestamps in the PNG metadata: previews are byte-identical for the same cohort.
    fig.savefig(out_png, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return out_png


def write_previews(cohort_dir: Path, patient_ids: Sequence[str]) -> int:
    """Montages of every patient under ``cohort_dir/preview``; returns the number of PNG files written."""
    for pid in patient_ids:
        write_patient_preview(cohort_dir, pid, cohort_dir / "preview" / f"{pid}.png")
    return len(patient_ids)
