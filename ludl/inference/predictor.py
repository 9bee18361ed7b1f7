"""`Predictor`: a model artifact (or a fold ensemble) loaded once; one scan in, dose/TIA/labels/regions out.

The network input is built by the data layer's own `ludl.data.patches.cut_patch` (same channels, units and dtypes as
training's whole-volume batches), the whole volume goes through `ludl.models.whole_volume.VolumePredictor` (sliding
window with cached Gaussian weights over the network, the physics layer on the whole volume), and the regions are
scored by `ludl.inference.regions.region_table`. With ``tta=True`` each member also sees the left-right mirrored
scan (the augmentation it was trained with); members' dose maps are averaged and their spread kept.

A SPECT of another voxel size than the model's is resampled to the model's (activity conserved) and the outputs are
mapped back onto the SPECT grid, with a note; a scan time outside the training range is a warning, far outside it
(beyond half the earliest / twice the latest) an error unless ``allow_time_extrapolation``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from ludl.data.patches import cut_patch
from ludl.data.transforms import SIDE_SWAP
from ludl.dosimetry.regions import RegionSet, expand_regions
from ludl.errors import InputError
from ludl.imaging.resample import grid_with_spacing, resample_to
from ludl.imaging.volume import Volume
from ludl.inference.inputs import ScanInputs, read_scan_inputs
from ludl.inference.model import ModelSet, load_models
from ludl.inference.regions import region_table
from ludl.io.regions import SEGMENTATION_CLASSES
from ludl.models.network import DoseNetOutput
from ludl.models.region_model import FeatureClasses
from ludl.models.whole_volume import (
    FLIP_AXES,
    VolumePredictor,
    flipped_batch,
    scored_region_features,
    unflip_output,
    volume_response_features,
)
from ludl.physics.units import MBQ_PER_GBQ, ML_PER_MM3

__all__ = ["Prediction", "Predictor", "network_batch"]

_LESION_CLASS = next(c.index for c in SEGMENTATION_CLASSES if c.kind == "lesion")
_FEATURE_CLASSES = FeatureClasses.of(SEGMENTATION_CLASSES)
# Smallest lesion the network's segmentation reports: ≈ 4 voxels of a 4.8 mm SPECT. Below it a lesion-class
# component is noise, and thousands of such specks (an untrained or ill-fitting model) would each become a GTM region.
MIN_LESION_ML = 0.5
# An organ's corrected mean above this multiple of its voxel mean: the correction, not the image, makes the number
# (organs at SPECT resolution need ≈ 1.1–1.6; a large factor means a region too small or wrongly drawn).
MAX_ORGAN_CORRECTION = 3.0
_CLASS_VALUES = {c.name: c.index for c in SEGMENTATION_CLASSES if c.kind != "background"}
_SPACING_TOLERANCE = 0.05  # relative voxel-size difference accepted without resampling


@dataclass(frozen=True, eq=False)
class Prediction:
    """One scan's prediction, every map on the SPECT grid.

    Attributes:
        inputs: what went in. dose: Gy; tia: MBq·h/mL; dose_sd: voxel SD over members (Gy; 0 with one member).
        labels: the network's regions (organs by class, lesions numbered lesion_001 …); region_values/kinds.
        classes: the network's class map (canonical class indices).
        regions: the region table (`ludl.inference.regions.REGION_TABLE_COLUMNS`): network regions, then the
            reference label map's (``source`` column).
        p_non_response: P(non-response after two cycles) (member mean) with its member range; None without a head.
        n_members: models × flips averaged; warnings: for the report's box; timings_s: seconds per stage.
        interval_coverage: the 90 % region-interval coverage the training measured on held-out patients
            (`ModelSet.interval_coverage`; {} when the artifact records none).
    """

    inputs: ScanInputs
    dose: Volume
    tia: Volume
    dose_sd: Volume
    labels: Volume
    region_values: Mapping[str, int]
    region_kinds: Mapping[str, str]
    classes: Volume
    regions: list[dict[str, Any]]
    p_non_response: float | None
    p_non_response_range: tuple[float, float] | None
    n_members: int
    model_description: str
    warnings: tuple[str, ...]
    timings_s: dict[str, float] = field(default_factory=dict)
    interval_coverage: dict[str, float] = field(default_factory=dict)


def network_batch(
    spect_bq_per_ml: Any,
    suv: Any | None,
    density_g_per_ml: Any,
    time_h: float,
    injected_mbq: float,
    spacing_zyx_mm: Sequence[float],
) -> dict[str, Any]:
    """The whole-volume network batch (batch of one) from the scan's arrays, as training builds it from a prepared
    case: `cut_patch` of the whole volume (channels in batch units and dtypes), scalars as float32."""
    arrays = {"spect": np.asarray(spect_bq_per_ml), "density": np.asarray(density_g_per_ml)}
    if suv is not None:
        arrays["pet"] = np.asarray(suv)
    shape = arrays["spect"].shape
    image = cut_patch(arrays, (0, 0, 0), shape)
    batch: dict[str, Any] = {
        k: torch.from_numpy(image[k][None]) for k in ("activity_mbq_per_ml", "suv", "density_g_per_ml")
    }
    batch["time_h"] = torch.as_tensor(np.stack([np.float32(time_h)]))
    batch["injected_gbq"] = torch.as_tensor(np.stack([np.float32(float(injected_mbq) / MBQ_PER_GBQ)]))
    batch["spacing_zyx_mm"] = torch.as_tensor(np.stack([np.asarray(spacing_zyx_mm, dtype=np.float32)]))
    return batch


class Predictor:
    """Single-scan dosimetry with a trained model (or fold ensemble), loaded once.

    Args:
        models: artifact folder(s) or a loaded `ModelSet`.
        roi_size_zyx: sliding-window size (voxels); None: one forward of the whole volume (small grids only).
        sw_batch_size, overlap: windows per forward and their overlap.
        device: where the networks live and outputs are stitched ("cpu", "cuda"); sw_device: where windows run
            (a GPU while `device` is the CPU: whole-body volumes on a small GPU).
        tta: also predict the left-right mirrored scan (doubles the members).
        allow_time_extrapolation: predict scans far outside the training time range (with a warning).
        min_lesion_ml: lesion-class components of the network's segmentation smaller than this are set to background
            (a few SPECT voxels of lesion class are noise, not a lesion one could score), with a note.
    """

    def __init__(
        self,
        models: ModelSet | str | Path | Sequence[str | Path],
        *,
        roi_size_zyx: Sequence[int] | None = (96, 96, 96),
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        device: str = "cpu",
        sw_device: str | None = None,
        tta: bool = False,
        allow_time_extrapolation: bool = False,
        pad_multiple: int = 16,
        min_lesion_ml: float = MIN_LESION_ML,
    ) -> None:
        self.device = torch.device(device)
        self.models = models if isinstance(models, ModelSet) else load_models(models, self.device)
        self.window = VolumePredictor(
            roi_size_zyx, sw_batch_size, overlap, sw_device=sw_device, device=device, pad_multiple=pad_multiple
        )
        self.flips = FLIP_AXES if tta else FLIP_AXES[:1]
        self.allow_time_extrapolation = bool(allow_time_extrapolation)
        self.min_lesion_ml = float(min_lesion_ml)

    # ------------------------------------------------------------------------------------------ checks

    def _time_warnings(self, time_h: float) -> list[str]:
        times = self.models.training_timepoints_h
        if not times:
            return []
        lo, hi = min(times), max(times)
        if time_h < lo / 2 or time_h > 2 * hi:
            text = (
                f"scan time {time_h:.1f} h is far outside the model's training range {lo:g}–{hi:g} h: its kinetics "
                "are extrapolated"
            )
            if not self.allow_time_extrapolation:
                raise InputError(
                    f"time_h={time_h:g}: {text}; check time_h (hours after injection), or set "
                    "allow_time_extrapolation=true to predict anyway"
                )
            return [text]
        if time_h < lo or time_h > hi:
            return [f"scan time {time_h:.1f} h is outside the model's training range {lo:g}–{hi:g} h"]
        return []

    def _model_grid(self, spect: Volume) -> tuple[Volume | None, list[str]]:
        """The grid to predict on when the SPECT's voxel size is not one the model was trained on."""
        spacings = self.models.spacings_zyx_mm
        if not spacings:
            return None, []
        own = np.asarray(spect.spacing_zyx_mm)
        for s in spacings:
            if np.all(np.abs(own / np.asarray(s) - 1.0) <= _SPACING_TOLERANCE):
                return None, []
        target = spacings[0]
        note = (
            f"SPECT voxel size {tuple(round(float(v), 2) for v in own)} mm differs from the model's "
            f"{tuple(round(v, 2) for v in target)} mm: resampled to it for the network (activity conserved), outputs "
            "mapped back to the SPECT grid"
        )
        return grid_with_spacing(spect, target), [note]

    # ------------------------------------------------------------------------------------------ prediction

    def _members(self, batch: Mapping[str, Any]) -> tuple[list[DoseNetOutput], list[torch.Tensor]]:
        """Every member's outputs (models × flips) and response features."""
        outs, features = [], []
        swap = torch.as_tensor(SIDE_SWAP)
        moved = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.inference_mode():
            for model in self.models.models:
                for dims in self.flips:
                    out = self.window(model.net, flipped_batch(moved, dims))
                    out = unflip_output(out, dims, swap if dims else None)
                    outs.append(out)
                    if model.response_head is not None:
                        feats = volume_response_features(moved, out, _LESION_CLASS)
                        logit = model.response_head(feats.to(next(model.response_head.parameters()).device))
                        features.append(torch.sigmoid(logit).reshape(-1).cpu())
        return outs, features

    def predict(self, inputs: ScanInputs) -> Prediction:
        """Dose, TIA, labels, region table, P(non-response) and uncertainty of one scan."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        warnings = [*inputs.warnings, *self._time_warnings(inputs.time_h)]
        grid, notes = self._model_grid(inputs.spect)
        warnings += notes
        spect, density, suv = inputs.spect, inputs.density, inputs.suv
        if grid is not None:
            spect = resample_to(spect, grid, kind="activity")
            density = resample_to(density, grid, kind="linear", default=float(np.min(density.array)))
            suv = None if suv is None else resample_to(suv, grid, kind="activity")

        def batch_of(activity: Volume, pet: Volume | None, ct_density: Volume) -> dict[str, Any]:
            arrays = (activity.array, None if pet is None else pet.array, ct_density.array)
            return network_batch(*arrays, inputs.time_h, inputs.injected_mbq, activity.spacing_zyx_mm)

        batch = batch_of(spect, suv, density)
        # the region features are read on the grid the regions are scored on: the scan's own
        scan_batch = batch if grid is None else batch_of(inputs.spect, inputs.suv, inputs.density)
        timings["inputs"] = time.perf_counter() - started
        started = time.perf_counter()
        outs, probs = self._members(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings["network_and_dose"] = time.perf_counter() - started
        started = time.perf_counter()
        maps = _combine(outs)
        result = self._on_spect_grid(maps, spect, inputs.spect, grid is not None)
        prediction = self._score(inputs, result, probs, warnings, scan_batch)
        timings["regions"] = time.perf_counter() - started
        prediction.timings_s.update(timings)
        return prediction

    def _on_spect_grid(
        self, maps: dict[str, torch.Tensor], grid: Volume, spect: Volume, resampled: bool
    ) -> dict[str, torch.Tensor]:
        if not resampled:
            return maps
        back: dict[str, torch.Tensor] = {}
        for key, kind in (("dose", "linear"), ("dose_sd", "linear"), ("tia", "activity"), ("classes", "nearest")):
            unit = {"dose": "Gy", "dose_sd": "Gy", "tia": "MBq*h/mL", "classes": "label"}[key]
            array = maps[key].cpu().numpy()
            volume = resample_to(grid.with_array(array, unit=unit), spect, kind=kind)  # type: ignore[arg-type]
            back[key] = torch.as_tensor(np.asarray(volume.array))
        back["members"] = torch.stack(
            [
                torch.as_tensor(
                    np.asarray(resample_to(grid.with_array(m.cpu().numpy(), unit="Gy"), spect, kind="linear").array)
                )
                for m in maps["members"]
            ]
        )
        return back

    def _score(
        self,
        inputs: ScanInputs,
        maps: Mapping[str, torch.Tensor],
        probs: Sequence[torch.Tensor],
        warnings: list[str],
        batch: Mapping[str, Any],
    ) -> Prediction:
        spect = inputs.spect
        network_classes = maps["classes"]
        classes = network_classes.cpu().numpy().astype(np.int32)
        classes, specks = drop_small_lesions(classes, spect.spacing_zyx_mm, self.min_lesion_ml)
        if specks:
            warnings.append(
                f"{specks} lesion-class speck(s) under {self.min_lesion_ml:g} mL in the network's segmentation set to "
                "background (not scored)"
            )
        regions = expand_regions(classes, {n: v for n, v in _CLASS_VALUES.items() if (classes == v).any()})
        edge = _edge_lesions(regions)
        for name, why in edge.items():
            warnings.append(f"{name}: {why}; left out of the whole-body tumour dose")
        activity = torch.as_tensor(np.asarray(spect.array, dtype=np.float64) / 1e6)
        density = torch.as_tensor(np.asarray(inputs.density.array))
        members = list(maps["members"])
        relative = self.models.region_relative_sds(inputs.time_h)
        common: dict[str, Any] = {
            "time_h": inputs.time_h,
            "fwhm_mm": inputs.fwhm_mm,
            "relative_sd": relative,
            "calibration": self.models.region_factor,
        }

        def features(scored: RegionSet) -> dict[str, dict[str, float]]:
            labels = torch.as_tensor(np.asarray(scored.labels, dtype=np.int32))
            return scored_region_features(batch, network_classes, labels, scored.values, _FEATURE_CLASSES)

        rows = region_table(
            maps["dose"],
            members,
            maps["tia"],
            activity,
            density,
            regions,
            spect.spacing_zyx_mm,
            source="network",
            edge_flags=edge,
            features=features(regions),
            **common,
        )
        ref = inputs.reference_labels
        if ref is not None:
            reference = RegionSet(np.asarray(ref.labels.array, dtype=np.int32), dict(ref.values), dict(ref.kinds))
            rows += region_table(
                maps["dose"],
                members,
                maps["tia"],
                activity,
                density,
                reference,
                spect.spacing_zyx_mm,
                source="reference",
                features=features(reference),
                **common,
            )
        warnings += flag_large_corrections(rows)
        if inputs.fwhm_mm is None:
            warnings.append("no SPECT resolution (fwhm_mm) given: region means are not partial-volume corrected")
        p, p_range = None, None
        if probs:
            values = torch.cat(list(probs)).double()
            p, p_range = float(values.mean()), (float(values.min()), float(values.max()))
        labels = spect.with_array(regions.labels, unit="label")
        return Prediction(
            inputs=inputs,
            dose=spect.with_array(maps["dose"].cpu().numpy().astype(np.float32), unit="Gy"),
            tia=spect.with_array(maps["tia"].cpu().numpy().astype(np.float32), unit="MBq*h/mL"),
            dose_sd=spect.with_array(maps["dose_sd"].cpu().numpy().astype(np.float32), unit="Gy"),
            labels=labels,
            region_values=dict(regions.values),
            region_kinds=dict(regions.kinds),
            classes=spect.with_array(classes, unit="label"),
            regions=rows,
            p_non_response=p,
            p_non_response_range=p_range,
            n_members=len(members),
            model_description=self.models.description,
            warnings=tuple(warnings),
            interval_coverage=self.models.interval_coverage,
        )

    def predict_files(self, spect: str | Path | Sequence[str | Path], ct: str | Path, **kwargs: Any) -> Prediction:
        """`predict` on files: DICOM folders or NIfTI (`ludl.inference.inputs.read_scan_inputs` keywords)."""
        started = time.perf_counter()
        inputs = read_scan_inputs(spect, ct, **kwargs)
        read_s = time.perf_counter() - started
        prediction = self.predict(inputs)
        prediction.timings_s["read_and_register"] = read_s
        return prediction


def _combine(outs: Sequence[DoseNetOutput]) -> dict[str, torch.Tensor]:
    """Member mean of dose and TIA, voxel SD of dose, class map of the mean probabilities (z, y, x tensors)."""
    doses = [o.dose_gy[0, 0].float().cpu() for o in outs]
    if len(outs) == 1:  # one member: its own maps, bit for bit (the one-road equality with training's evaluation)
        dose, sd = doses[0], torch.zeros_like(doses[0])
        classes = outs[0].seg_logits[0].argmax(dim=0).cpu()
    else:
        stacked = torch.stack(doses)
        dose, sd = stacked.mean(dim=0), stacked.std(dim=0)
        probs = sum(torch.softmax(o.seg_logits[0].float(), dim=0).cpu() for o in outs)
        classes = torch.as_tensor(probs).argmax(dim=0)
    tias = [o.tia_mbq_h_per_ml for o in outs]
    if any(t is None for t in tias):
        raise InputError("the model predicts dose directly (dose_mode=direct): it has no TIA map for ludl.inference")
    tia = torch.stack([t[0, 0].float().cpu() for t in tias if t is not None]).mean(dim=0)
    return {"dose": dose, "dose_sd": sd, "tia": tia, "classes": classes, "members": torch.stack(doses)}


def flag_large_corrections(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Flag organs whose single-scan corrected mean exceeds `MAX_ORGAN_CORRECTION` × their voxel mean (in place:
    the row's ``flags``; its value and ``scored`` stay), and return the warnings saying so."""
    warnings = []
    for row in rows:
        factor = float(row.get("correction_factor", math.nan))
        if row["kind"] == "lesion" or not (math.isfinite(factor) and factor > MAX_ORGAN_CORRECTION):
            continue
        text = (
            f"partial-volume correction ×{factor:.1f}: the segmented region is small for the scan's resolution or "
            "mis-segmented; its corrected mean dose is uncertain"
        )
        row["flags"] = "; ".join(f for f in (row.get("flags", ""), text) if f)
        warnings.append(f"{row['region']} ({row['source']} regions): {text}")
    return warnings


def drop_small_lesions(
    classes: npt.NDArray[np.int32], spacing_zyx_mm: Sequence[float], min_lesion_ml: float
) -> tuple[npt.NDArray[np.int32], int]:
    """The class map with lesion components (26-connected, as `expand_regions` numbers them) under `min_lesion_ml`
    set to background, and how many there were."""
    lesion = classes == _LESION_CLASS
    if min_lesion_ml <= 0 or not lesion.any():
        return classes, 0
    components, n = ndimage.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    voxel_ml = float(np.prod(spacing_zyx_mm)) * ML_PER_MM3
    sizes_ml = np.bincount(components.ravel(), minlength=n + 1) * voxel_ml
    small = sizes_ml < min_lesion_ml
    small[0] = False
    if not small[1:].any():
        return classes, 0
    out = classes.copy()
    out[small[components]] = 0
    return out, int(small[1:].sum())


def _edge_lesions(regions: RegionSet) -> dict[str, str]:
    """Lesions touching the first or last slice of the field of view: partly outside it, not scored."""
    labels = regions.labels
    border = set(np.unique(labels[0]).tolist()) | set(np.unique(labels[-1]).tolist())
    return {
        name: "lesion touches the edge of the SPECT field of view (partly outside it)"
        for name, value in regions.values.items()
        if regions.kinds[name] == "lesion" and value in border
    }
