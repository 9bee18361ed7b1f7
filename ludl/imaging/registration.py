"""Rigid registration of CT images (SimpleITK): Euler 3D transform, Mattes mutual information, two resolution levels.

Used to bring the CTs of several SPECT/CT time points into one pose. The result's transform follows SimpleITK's
convention — it maps points of the *fixed* image to the *moving* image — so
``resample_to(moving_spect, fixed_ct, transform=result.transform)`` puts a moving-time-point image in the fixed pose.

Deterministic: metric sampling is random but seeded, and images are first reduced to a working grid (smoothed, then
resampled to ``working_spacing_mm``) so that a whole-body CT registers in seconds. After registration a quality
report compares the two CTs inside the fixed body outline; large residuals mean the anatomy moved in ways a rigid
transform cannot explain (arms, bladder, bowel, breathing), and are flagged rather than silently accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ludl.errors import InputError
from ludl.imaging.resample import grid_with_spacing, resample_to
from ludl.imaging.volume import AIR_HU, Volume

__all__ = ["RegistrationQuality", "RigidResult", "register_rigid", "registration_quality", "rigid_transform"]

# The body outline threshold (`registration_quality`): -500 HU separates air (−1000) from any tissue, lung included
# only when dense; the outline is filled per slice so lungs count as body.
# Gaussian FWHM → sigma.
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class RegistrationQuality:
    """How well the registered moving CT matches the fixed CT inside the fixed body outline.

    Attributes:
        correlation: Pearson correlation of HU values (1 = identical up to a linear map).
        mean_abs_diff_hu: mean |fixed − moving| in HU.
        large_diff_fraction: share of body voxels with |difference| above the large-difference threshold.
        overlap_fraction: share of the fixed body covered by the moving image's field of view.
        n_voxels: body voxels compared (working grid).
        ok: True when no check failed.
        reasons: one line per failed check.
    """

    correlation: float
    mean_abs_diff_hu: float
    large_diff_fraction: float
    overlap_fraction: float
    n_voxels: int
    ok: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RigidResult:
    """A rigid registration: transform (fixed → moving points), final metric, parameters and quality report.

    Attributes:
        transform: SimpleITK ``Euler3DTransform`` mapping fixed physical points (mm) to moving ones.
        final_metric: Mattes mutual information at the end (negative; lower is better).
        translation_mm: transform translation (x, y, z) in mm, about `center_xyz_mm`.
        rotation_deg: Euler angles about x, y, z in degrees (ITK Euler3D order, Z·X·Y by default).
        center_xyz_mm: rotation centre (the fixed image's field-of-view centre).
        iterations: optimiser iterations at the last level.
        stop_condition: optimiser's stop description.
        quality: residual report, see `RegistrationQuality`.
    """

    transform: Any
    final_metric: float
    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    center_xyz_mm: tuple[float, float, float]
    iterations: int
    stop_condition: str
    quality: RegistrationQuality


def rigid_transform(
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    center_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Any:
    """A SimpleITK Euler3D transform p ↦ R(p − c) + c + t (angles about x, y, z in degrees; LPS mm)."""
    import SimpleITK as sitk

    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(c) for c in center_xyz_mm))
    transform.SetRotation(*(float(np.deg2rad(a)) for a in rotation_deg))
    transform.SetTranslation(tuple(float(t) for t in translation_mm))
    return transform


def _working_image(volume: Volume, spacing_mm: float) -> Volume:
    """Smooth (to the working resolution) and resample a CT to isotropic `spacing_mm`, clamped to [−1000, 2000] HU.

    Each axis finer than the working spacing is smoothed by the Gaussian that brings its own spacing to the working
    one (FWHMs add in quadrature); an axis already at or above it (a 5 mm slice of a 0.98 × 0.98 × 5 mm CT) is left
    alone — a recursive Gaussian refuses σ = 0, so those axes are skipped rather than given a zero width.
    """
    import SimpleITK as sitk

    array = np.clip(np.asarray(volume.array, dtype=np.float32), AIR_HU, 2000.0)
    clamped = volume.with_array(array)
    if min(volume.spacing_zyx_mm) >= spacing_mm:
        return clamped
    image = clamped.to_sitk()
    sigma_xyz = [float(np.sqrt(max(spacing_mm**2 - s**2, 0.0)) * _FWHM_TO_SIGMA) for s in volume.spacing_xyz_mm]
    # Below a tenth of a voxel the kernel is a delta anyway; the recursive filter also needs ≥ 4 voxels on its axis.
    sizes = volume.shape[::-1]
    smooth = [s > 0.1 * d and n >= 4 for s, d, n in zip(sigma_xyz, volume.spacing_xyz_mm, sizes, strict=True)]
    if all(smooth):
        image = sitk.SmoothingRecursiveGaussian(image, sigma_xyz)  # the same filter, all axes in one pass
    else:
        for axis in (a for a in range(3) if smooth[a]):
            order = sitk.RecursiveGaussianImageFilter.ZeroOrder
            image = sitk.RecursiveGaussian(image, sigma_xyz[axis], False, order, axis)
    smooth_volume = Volume.from_sitk(image, unit=volume.unit)
    grid = grid_with_spacing(volume, (spacing_mm, spacing_mm, spacing_mm))
    return resample_to(smooth_volume, grid, kind="linear", default=AIR_HU)


def _body_mask(array: npt.NDArray[Any], threshold_hu: float) -> npt.NDArray[np.bool_]:
    from scipy import ndimage

    body = array > threshold_hu
    # Fill per axial slice so that lungs and bowel gas inside the outline count as body.
    return np.asarray([ndimage.binary_fill_holes(s) for s in body], dtype=bool)


def _centroid_xyz(volume: Volume, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise InputError("no voxel above the body threshold; is this a CT in HU?")
    return np.asarray(volume.index_to_physical(idx.mean(axis=0)), dtype=np.float64)


def registration_quality(
    fixed: Volume,
    moving: Volume,
    transform: Any,
    *,
    body_threshold_hu: float = -500.0,
    min_correlation: float = 0.85,
    max_mean_abs_diff_hu: float = 80.0,
    large_diff_hu: float = 300.0,
    max_large_diff_fraction: float = 0.05,
    min_overlap_fraction: float = 0.5,
    smooth_fwhm_mm: float = 8.0,
) -> RegistrationQuality:
    """Compare `fixed` with `moving` resampled through `transform`, inside the fixed body outline.

    Args:
        fixed: fixed CT (HU), on the grid where the comparison happens.
        moving: moving CT (HU).
        transform: SimpleITK transform mapping fixed points to moving points.
        body_threshold_hu: HU above which a voxel is body (outline then filled per slice).
        min_correlation: flag below this Pearson correlation.
        max_mean_abs_diff_hu: flag above this mean absolute HU difference.
        large_diff_hu: a voxel differing by more than this is "large" (bone vs soft tissue, gas vs tissue).
        max_large_diff_fraction: flag when more of the body than this differs by more than `large_diff_hu`.
        min_overlap_fraction: flag when less of the fixed body than this lies inside the moving field of view.
        smooth_fwhm_mm: both CTs are blurred by a Gaussian of this FWHM before comparing, so that noise,
            interpolation and sub-voxel residuals at sharp edges do not count as misregistration.
    """
    from scipy import ndimage

    def smooth(volume: Volume) -> npt.NDArray[np.float64]:
        sigma = [smooth_fwhm_mm * _FWHM_TO_SIGMA / s for s in volume.spacing_zyx_mm]
        return np.asarray(ndimage.gaussian_filter(np.asarray(volume.array, dtype=np.float64), sigma, mode="nearest"))

    fixed_array = np.asarray(fixed.array, dtype=np.float64)
    smooth_moving = moving.with_array(smooth(moving).astype(np.float32))
    warped = resample_to(smooth_moving, fixed, transform=transform, default=np.nan)
    body = _body_mask(fixed_array, body_threshold_hu)
    covered = np.isfinite(np.asarray(warped.array))
    use = body & covered
    n_body = int(body.sum())
    overlap = float(use.sum()) / n_body if n_body else 0.0
    reasons: list[str] = []
    if use.sum() < 10:
        return RegistrationQuality(
            float("nan"),
            float("nan"),
            float("nan"),
            overlap,
            int(use.sum()),
            False,
            ("fewer than 10 body voxels overlap; the images do not cover the same anatomy",),
        )
    a = smooth(fixed)[use]
    b = np.asarray(warped.array, dtype=np.float64)[use]
    diff = np.abs(a - b)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    mad = float(diff.mean())
    large = float(np.mean(diff > large_diff_hu))
    if not corr >= min_correlation:
        reasons.append(f"HU correlation {corr:.3f} < {min_correlation}")
    if mad > max_mean_abs_diff_hu:
        reasons.append(f"mean |ΔHU| {mad:.1f} > {max_mean_abs_diff_hu} HU")
    if large > max_large_diff_fraction:
        reasons.append(
            f"{100 * large:.1f} % of the body differs by > {large_diff_hu:.0f} HU "
            f"(limit {100 * max_large_diff_fraction:.1f} %) — motion a rigid transform cannot explain"
        )
    if overlap < min_overlap_fraction:
        reasons.append(f"only {100 * overlap:.0f} % of the fixed body lies in the moving field of view")
    return RegistrationQuality(corr, mad, large, overlap, int(use.sum()), not reasons, tuple(reasons))


def _initial_transform(
    fixed_w: Volume, moving_w: Volume, fixed_body: npt.NDArray[np.bool_], initial: str, body_threshold_hu: float
) -> tuple[Any, npt.NDArray[np.float64]]:
    """The starting rigid transform (rotation centre: the fixed working grid's centre) and that centre."""
    center = fixed_w.index_to_physical((np.asarray(fixed_w.shape, dtype=np.float64) - 1) / 2.0)
    if initial == "none":
        start = np.zeros(3)
    elif initial == "geometry":
        start = moving_w.index_to_physical((np.asarray(moving_w.shape, dtype=np.float64) - 1) / 2.0) - center
    elif initial == "body":
        moving_body = _body_mask(np.asarray(moving_w.array), body_threshold_hu)
        start = _centroid_xyz(moving_w, moving_body) - _centroid_xyz(fixed_w, fixed_body)
    else:
        raise InputError(f"initial must be 'none', 'geometry' or 'body', got {initial!r}")
    transform = rigid_transform(center_xyz_mm=tuple(center), translation_mm=tuple(start))  # type: ignore[arg-type]
    return transform, center


def _set_optimizer(
    method: Any, iterations: int, shrink_factors: tuple[int, ...], smoothing_sigmas_mm: tuple[float, ...]
) -> None:
    """Regular-step gradient descent over a multi-resolution pyramid (sigmas in mm)."""
    # Step 2 mm (or its angular equivalent via physical-shift scales), halved on each direction change.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=int(iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([int(s) for s in shrink_factors])
    method.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_sigmas_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()


# Over 80 lines only by its signature and Args docstring: the body is one sequence of steps.
def register_rigid(
    fixed: Volume,
    moving: Volume,
    *,
    initial: Literal["none", "geometry", "body"] = "none",
    working_spacing_mm: float = 4.0,
    shrink_factors: tuple[int, ...] = (2, 1),
    smoothing_sigmas_mm: tuple[float, ...] = (4.0, 0.0),
    sampling_fraction: float = 0.25,
    histogram_bins: int = 32,
    iterations: int = 200,
    seed: int = 20240,
    threads: int = 1,
    body_threshold_hu: float = -500.0,
    **quality_limits: float,
) -> RigidResult:
    """Rigidly register a moving CT to a fixed CT (HU images), deterministically.

    Args:
        fixed: fixed CT; the result maps its points to `moving`.
        moving: moving CT.
        initial: starting translation: ``"none"`` (scanner coordinates already close — same patient, same
            scanner), ``"geometry"`` (field-of-view centres) or ``"body"`` (body-outline centroids).
        working_spacing_mm: both CTs are smoothed and resampled to this isotropic spacing first (speed).
        shrink_factors: multi-resolution pyramid on the working grid (coarse → fine).
        smoothing_sigmas_mm: Gaussian sigma per level (mm).
        sampling_fraction: share of fixed-mask voxels sampled by the metric (random, seeded).
        histogram_bins: Mattes mutual information bins.
        iterations: maximum optimiser iterations per level.
        seed: metric sampling seed (same inputs + same seed + same `threads` → same result).
        threads: worker threads; the metric's per-thread sums are added in thread order, so the result depends on
            the thread count — 1 (default) makes it identical on every machine (the working grid keeps it fast).
        body_threshold_hu: body outline threshold, used for the metric mask and the quality report.
        **quality_limits: passed to `registration_quality` (e.g. ``max_mean_abs_diff_hu=60``).
    """
    import SimpleITK as sitk

    if fixed.unit != "HU" or moving.unit != "HU":
        raise InputError(f"register_rigid registers CTs in HU, got units {fixed.unit!r} and {moving.unit!r}")
    if len(shrink_factors) != len(smoothing_sigmas_mm):
        raise InputError("shrink_factors and smoothing_sigmas_mm need one value per level")
    if not 0 < sampling_fraction <= 1:
        raise InputError(f"sampling_fraction must be in (0, 1], got {sampling_fraction}")
    fixed_w = _working_image(fixed, working_spacing_mm)
    moving_w = _working_image(moving, working_spacing_mm)
    fixed_body = _body_mask(np.asarray(fixed_w.array), body_threshold_hu)
    transform, center = _initial_transform(fixed_w, moving_w, fixed_body, initial, body_threshold_hu)
    fixed_img = fixed_w.to_sitk()
    moving_img = moving_w.to_sitk()
    mask_img = fixed_w.with_array(fixed_body.astype(np.uint8)).to_sitk()
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(int(threads))
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(sampling_fraction), int(seed))
    method.SetMetricFixedMask(mask_img)
    method.SetInterpolator(sitk.sitkLinear)
    _set_optimizer(method, iterations, shrink_factors, smoothing_sigmas_mm)
    method.SetInitialTransform(transform, inPlace=True)
    # The metric's internal filters use the *global* thread count, not the method's: pin it for this call.
    previous_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        method.Execute(sitk.Cast(fixed_img, sitk.sitkFloat32), sitk.Cast(moving_img, sitk.sitkFloat32))
    except RuntimeError as exc:
        raise InputError(
            f"rigid registration failed ({str(exc).splitlines()[-1]}); check that both CTs overlap"
        ) from exc
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous_threads)

    quality = registration_quality(fixed_w, moving_w, transform, body_threshold_hu=body_threshold_hu, **quality_limits)
    angles = (transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ())
    translation = transform.GetTranslation()
    return RigidResult(
        transform=transform,
        final_metric=float(method.GetMetricValue()),
        translation_mm=(float(translation[0]), float(translation[1]), float(translation[2])),
        rotation_deg=tuple(float(np.rad2deg(a)) for a in angles),  # type: ignore[arg-type]
        center_xyz_mm=(float(center[0]), float(center[1]), float(center[2])),
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=str(method.GetOptimizerStopConditionDescription()),
        quality=quality,
    )
