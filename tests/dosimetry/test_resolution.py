"""System resolution: analytic sphere recovery, recovery-curve fit, cohort.yaml keys, choice, image-based estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from ludl.dosimetry.regions import RegionSet
from ludl.dosimetry.resolution import (
    NEMA_SPHERE_DIAMETERS_MM,
    choose_resolution,
    fwhm_from_recovery,
    sphere_recovery,
    sphere_volume_ml,
)
from ludl.dosimetry.resolution_estimate import estimate_fwhm_mm
from ludl.errors import InputError, ManifestError
from ludl.io.cohort import MeasuredResolution, ResolutionConfig, parse_cohort_config

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
NEMA_VOLUMES_ML = [sphere_volume_ml(d) for d in NEMA_SPHERE_DIAMETERS_MM]


def test_nema_sphere_volumes_match_the_standard() -> None:
    # NEMA NU 2-2007 / IEC 61675-1: 0.52, 1.15, 2.57, 5.58, 11.49, 26.52 mL.
    assert np.allclose(NEMA_VOLUMES_ML, [0.52, 1.15, 2.57, 5.58, 11.49, 26.52], atol=0.01)


@pytest.mark.parametrize(("volume_ml", "fwhm_mm"), [(5.58, 12.0), (1.15, 8.0), (26.52, 15.0)])
def test_sphere_recovery_matches_a_numerically_blurred_sphere(volume_ml: float, fwhm_mm: float) -> None:
    h = 0.5
    radius = (3 * volume_ml * 1000 / (4 * math.pi)) ** (1 / 3)
    n = int(2 * (radius + 3 * fwhm_mm) / h) | 1
    c = (n - 1) / 2
    z, y, x = np.ogrid[:n, :n, :n]
    r = np.sqrt(((z - c) * h) ** 2 + ((y - c) * h) ** 2 + ((x - c) * h) ** 2)
    ball = (r <= radius).astype(np.float64)
    blurred = ndimage.gaussian_filter(ball, fwhm_mm / FWHM_PER_SIGMA / h)
    numeric = float(blurred[ball > 0].mean())
    exact_volume = float(ball.sum()) * h**3 / 1000
    assert sphere_recovery(exact_volume, fwhm_mm)[0] == pytest.approx(numeric, rel=0.01)


def test_sphere_recovery_limits() -> None:
    assert sphere_recovery(1e6, 10.0)[0] == pytest.approx(1.0, abs=0.01)
    assert sphere_recovery(5.0, 0.01)[0] == pytest.approx(1.0, abs=1e-3)
    assert sphere_recovery(0.001, 20.0)[0] < 0.01
    with pytest.raises(InputError):
        sphere_recovery(5.0, 0.0)


def test_fwhm_from_recovery_recovers_the_fwhm_of_a_gaussian_curve() -> None:
    curve = sphere_recovery(NEMA_VOLUMES_ML, 14.3)
    fit = fwhm_from_recovery(NEMA_VOLUMES_ML, curve.tolist())
    assert fit.fwhm_mm == pytest.approx(14.3, rel=1e-3)
    assert fit.rms_residual < 1e-4


@pytest.mark.parametrize(
    ("volumes", "recovery"), [([5.0], [0.5]), ([1.0, 2.0], [0.3]), ([1.0, -2.0], [0.3, 0.4]), ([1.0, 2.0], [30, 40])]
)
def test_fwhm_from_recovery_rejects_bad_curves(volumes: list[float], recovery: list[float]) -> None:
    with pytest.raises(InputError):
        fwhm_from_recovery(volumes, recovery)


def _config(resolution: object) -> tuple[object, list[str]]:
    return parse_cohort_config({"name": "c", "nuclide": "Lu-177", "labels": {"liver": 1}, "resolution": resolution})


def test_cohort_yaml_takes_a_recovery_curve_a_fwhm_and_per_camera_values() -> None:
    config, problems = _config(
        {
            "use": "auto",
            "recovery": {"volume_ml": NEMA_VOLUMES_ML, "recovery": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
            "cameras": {"intevo_2": {"fwhm_mm": 13.1}},
        }
    )
    assert problems == []
    res = config.resolution  # type: ignore[attr-defined]
    assert res.measured.recovery == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    assert res.cameras["intevo_2"].fwhm_mm == 13.1
    again, problems = parse_cohort_config(config.to_dict())  # type: ignore[attr-defined]
    assert problems == [] and again is not None and again.resolution == res


@pytest.mark.parametrize(
    ("resolution", "fragment"),
    [
        ({"use": "best"}, "resolution.use"),
        ({"fwhm_mm": -3}, "positive"),
        ({"fwhm_mm": 12, "recovery": {"volume_ml": [1, 2], "recovery": [0.2, 0.3]}}, "give one measurement"),
        ({"recovery": {"volume_ml": [1, 2], "recovery": [20, 30]}}, "fractions, not %"),
        ({"recovery": [0.1, 0.2]}, "volume_ml"),
        ({"use": "measured"}, "no fwhm_mm or recovery"),
        ({"fwhm": 12}, "unknown key"),
    ],
)
def test_cohort_yaml_resolution_problems_are_named(resolution: object, fragment: str) -> None:
    config, problems = _config(resolution)
    assert config is None
    assert any(fragment in p for p in problems), problems


def test_choose_resolution_follows_use() -> None:
    measured = ResolutionConfig(measured=MeasuredResolution(fwhm_mm=14.0))
    assert choose_resolution(12.0, None).source == "nominal"
    auto = choose_resolution(12.0, measured)
    assert (auto.source, auto.fwhm_mm) == ("measured_fwhm", 14.0)
    nominal = choose_resolution(12.0, ResolutionConfig(use="nominal", measured=measured.measured))
    assert (nominal.source, nominal.fwhm_mm) == ("nominal", 12.0)
    estimated = choose_resolution(12.0, ResolutionConfig(use="estimated"), estimated_fwhm_mm=14.5)
    assert (estimated.source, estimated.fwhm_mm) == ("estimated", 14.5)
    assert any("differs from the nominal" in n for n in estimated.notes)
    assert not choose_resolution(12.0, None, estimated_fwhm_mm=12.5).notes  # 4 %: no warning
    camera = ResolutionConfig(cameras={"b": MeasuredResolution(fwhm_mm=15.0)})
    assert choose_resolution(12.0, camera, camera="b").fwhm_mm == 15.0
    assert choose_resolution(12.0, camera, camera="a").source == "nominal"
    curve = MeasuredResolution(volume_ml=tuple(NEMA_VOLUMES_ML), recovery=tuple(sphere_recovery(NEMA_VOLUMES_ML, 13.0)))
    fitted = choose_resolution(12.0, ResolutionConfig(measured=curve))
    assert fitted.source == "recovery_curve" and fitted.fwhm_mm == pytest.approx(13.0, rel=1e-3)


def test_measured_use_without_measurement_is_a_cohort_error(tmp_path: object) -> None:
    from ludl.io.cohort import load_cohort_config

    path = tmp_path / "cohort.yaml"  # type: ignore[operator]
    path.write_text("name: c\nnuclide: Lu-177\nresolution: {use: measured}\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="resolution"):
        load_cohort_config(path)


def _organ_phantom(true_fwhm_mm: float, seed: int = 0) -> tuple[np.ndarray, RegionSet, np.ndarray, tuple]:
    """A kidney-like ellipsoid (hot rim) on a 4.8 mm grid, drawn at 1.2 mm, blurred by the true FWHM, with noise."""
    s, fine = 4, 1.2
    n = 22
    axes = [(np.arange(n * s) + 0.5) * fine - n * s * fine / 2 + o for o in (0.7, -0.4, 0.3)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = np.sqrt((z / 50) ** 2 + (y / 28) ** 2 + (x / 22) ** 2)
    organ = r <= 1.0
    act = np.where(organ, np.where(r > 0.7, 30.0, 10.0), 1.0)
    blurred = ndimage.gaussian_filter(act, true_fwhm_mm / FWHM_PER_SIGMA / fine)

    def coarse(a: np.ndarray) -> np.ndarray:
        return a.reshape(n, s, n, s, n, s).mean(axis=(1, 3, 5))

    image = coarse(blurred)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(image.shape), 1.0)
    image = image * (1 + 0.10 * noise / noise.std())
    fraction = coarse(organ.astype(np.float64))
    labels = (fraction >= 0.5).astype(np.int32)
    voxel = np.flatnonzero((fraction > 0) & (fraction < 1))
    fractions = (voxel, np.ones(voxel.size, np.int64), fraction.ravel()[voxel])
    return (
        image,
        RegionSet(labels, {"kidney_left": 1}, {"kidney_left": "organ"}),
        np.ones(labels.shape, bool),
        fractions,
    )


@pytest.mark.parametrize("true_fwhm_mm", [11.0, 14.3, 16.5])
def test_image_based_estimate_recovers_the_true_fwhm_within_8_percent(true_fwhm_mm: float) -> None:
    image, regions, body, fractions = _organ_phantom(true_fwhm_mm)
    est = estimate_fwhm_mm([image], regions, body, (4.8, 4.8, 4.8), 12.0, fractions)
    assert est.n_used == 1
    # The fine-grid voxel averaging adds (4.8 mm)²/12 per axis to the blur; the estimate is of the total.
    effective = math.sqrt(true_fwhm_mm**2 + FWHM_PER_SIGMA**2 * 4.8**2 / 12)
    assert true_fwhm_mm * 0.92 <= est.fwhm_mm <= effective * 1.08
