"""Region table: lesion splitting, statistics against hand-made dose maps, FOV rule, BED, CSV, DVH plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from ludl.dosimetry.regions import (
    REGION_COLUMNS,
    RegionExtent,
    corrected_doses_on_extent,
    cumulative_kidney_bed,
    expand_regions,
    region_density_g_per_ml,
    region_extents,
    region_table,
    whole_body_tumour_dose_gy,
    write_regions_csv,
)
from ludl.physics.kinetics import fit_tac


def _labels() -> np.ndarray:
    labels = np.zeros((10, 12, 14), dtype=np.int16)
    labels[1:4, 1:5, 1:5] = 1  # kidney_left, 48 voxels
    labels[6:8, 2:4, 2:4] = 9  # lesion component, 8 voxels
    labels[6:9, 7:10, 8:12] = 9  # another lesion component, 36 voxels
    return labels


def test_lesion_class_is_split_into_components() -> None:
    regions = expand_regions(_labels(), {"kidney_left": 1, "lesion": 9})
    assert sorted(regions.values) == ["kidney_left", "lesion_001", "lesion_002"]
    assert regions.kinds == {"kidney_left": "organ", "lesion_001": "lesion", "lesion_002": "lesion"}
    sizes = sorted(int(regions.mask(n).sum()) for n in ("lesion_001", "lesion_002"))
    assert sizes == [8, 36]


def test_table_statistics_fov_rule_and_bed() -> None:
    regions = expand_regions(_labels(), {"kidney_left": 1, "lesion": 9})
    dose = np.zeros(regions.labels.shape)
    dose[regions.mask("kidney_left")] = np.linspace(1.0, 5.0, 48)
    big = "lesion_001" if regions.mask("lesion_001").sum() == 36 else "lesion_002"
    small = "lesion_002" if big == "lesion_001" else "lesion_001"
    dose[regions.mask(big)] = 30.0
    dose[regions.mask(small)] = 10.0
    tia = dose * 0.1
    times = np.array([4.0, 24.0, 48.0, 96.0, 168.0])
    kidney_fit = fit_tac(times, 10.0 * np.exp(-math.log(2) * times / 40.0), model="mono")
    rows = region_table(
        dose,
        tia,
        regions,
        0.1,
        kinetics={"kidney_left": kidney_fit},
        pvc="rc",
        pvc_factor={"kidney_left": 1.25, big: 2.0, small: 3.0},
        in_fov_fraction={"kidney_left": 1.0, big: 1.0, small: 0.9},
    )
    by = {r["region"]: r for r in rows}
    k = by["kidney_left"]
    assert k["mean_dose_uncorrected_gy"] == pytest.approx(3.0)
    assert k["mean_dose_gy"] == pytest.approx(3.75)
    assert k["max_dose_gy"] == pytest.approx(5.0) and k["volume_ml"] == pytest.approx(4.8)
    assert k["tia_uncorrected_mbq_h"] == pytest.approx(0.3 * 48 * 0.1)
    assert k["t_eff_h"] == pytest.approx(40.0, rel=1e-3)
    # Dale BED for mono-exponential clearance: G = λ/(λ + μ), kidney α/β 2.6 Gy, T_rep 2.8 h (docs/physics.md §5).
    lam, mu = math.log(2) / 40.0, math.log(2) / 2.8
    assert k["bed_gy"] == pytest.approx(3.75 * (1 + lam / (lam + mu) * 3.75 / 2.6), rel=1e-3)
    assert by[small]["scored"] is False and math.isnan(by[small]["mean_dose_gy"])  # 90 % < 95 % in the FOV
    assert by[big]["scored"] is True and by[big]["mean_dose_gy"] == pytest.approx(60.0)
    assert whole_body_tumour_dose_gy(rows) == pytest.approx(60.0)  # the unscored lesion does not count


def test_csv_bed_accumulation_and_report(tmp_path: Path) -> None:
    regions = expand_regions(_labels(), {"kidney_left": 1, "lesion": 9})
    dose = np.where(regions.labels > 0, 2.0, 0.0) + np.linspace(0, 1, regions.labels.size).reshape(regions.labels.shape)
    times = np.array([4.0, 24.0, 48.0, 96.0])
    fit = fit_tac(times, 5.0 * np.exp(-math.log(2) * times / 35.0), model="mono")
    rows = region_table(
        dose, dose, regions, 0.1, kinetics={"kidney_left": fit}, pvc="none", pvc_factor={}, in_fov_fraction={}
    )
    paths = [write_regions_csv(rows, tmp_path / f"cycle{c}.csv") for c in (1, 2)]
    with open(paths[0], encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == REGION_COLUMNS
        kidney = next(r for r in reader if r["region"] == "kidney_left")
    assert cumulative_kidney_bed(paths)["kidney_left"] == pytest.approx(2 * float(kidney["bed_gy"]), rel=1e-5)


def _extent_case() -> tuple[object, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A 5³ grid: organ (value 1) whole in the centre 3×3×1 slab, sharing its rim voxels; a hot lesion (value 9)
    filling 40 % of one voxel it shares with unlabelled tissue."""
    labels = np.zeros((5, 5, 5), dtype=np.int16)
    labels[2, 1:4, 1:4] = 1
    labels[0, 0, 0] = 9
    regions = expand_regions(labels, {"organ": 1, "lesion_001": 9})
    flat = np.ravel_multi_index
    rim = [flat((2, 0, c), labels.shape) for c in range(1, 4)]  # organ fraction 0.3 just outside its majority
    edge = flat((2, 1, 1), labels.shape)  # a majority voxel the organ fills to 0.8 only
    voxel = np.array([*rim, edge, flat((0, 0, 0), labels.shape)])
    value = np.array([1, 1, 1, 1, regions.values["lesion_001"]])
    fraction = np.array([0.3, 0.3, 0.3, 0.8, 0.4])
    return regions, (voxel, value, fraction)


def test_extent_is_whole_majority_voxels_plus_the_fractions_of_shared_ones() -> None:
    regions, fractions = _extent_case()
    extents = region_extents(regions, fractions)  # type: ignore[arg-type]
    assert extents["organ"].voxel_count == pytest.approx(8 * 1.0 + 0.8 + 3 * 0.3)
    assert extents["lesion_001"].voxel_count == pytest.approx(0.4)
    whole = region_extents(regions, None)  # type: ignore[arg-type]
    assert whole["organ"].voxel_count == 9 and whole["lesion_001"].voxel_count == 1


@pytest.mark.parametrize("surrounding_density", [1.0, 0.3])
def test_corrected_dose_over_the_extent_is_the_local_dose_of_its_concentration(surrounding_density: float) -> None:
    # Local deposition (D = k·TIA/ρ): the dose of a region's tissue is k·c/ρ_region wherever it lies, whatever shares
    # the voxels hold — the region's true mean dose, independent of its extent's shape and of its neighbours.
    regions, fractions = _extent_case()
    extents = region_extents(regions, fractions)  # type: ignore[arg-type]
    k = 0.085  # Gy per MBq·h/mL at unit density
    tissue = 1.05
    # The CT of a mixed voxel holds both tissues by their shares (lung-like surroundings at 0.3).
    density = np.full((5, 5, 5), surrounding_density)
    density[regions.labels == regions.values["organ"]] = tissue
    voxel, _, fraction = fractions
    density.ravel()[voxel] = fraction * tissue + (1.0 - fraction) * surrounding_density
    tia = np.random.default_rng(0).uniform(0.5, 2.0, (5, 5, 5))  # observed, blurred: any values
    conc = {"organ": 10.0, "lesion_001": 300.0}
    doses = corrected_doses_on_extent(tia, extents, conc, lambda m: k * m / density, density, k)
    assert doses["organ"] == pytest.approx(k * 10.0 / tissue, rel=1e-9)  # the organ's own density, unmixed
    # The lesion fills 40 % of its only voxel: no voxel shows its own density, the voxel's mixed one stands for it.
    assert doses["lesion_001"] == pytest.approx(k * 300.0 / float(density[0, 0, 0]), rel=1e-12)


@pytest.mark.parametrize(("radius_mm", "centre_mm"), [(8.0, 24.0), (9.0, 24.0), (15.0, 27.0)])
def test_region_density_is_unmixed_from_the_voxels_it_shares(radius_mm: float, centre_mm: float) -> None:
    """A uniform sphere (ρ 1.5: sclerotic bone) in soft tissue (1.0), the CT each 6 mm voxel's mean density (a CT
    box-averaged onto the SPECT grid): the voxels it shares hold f·1.5 + (1 − f)·1.0, so the unmixing gives 1.5
    exactly — also for 2.1–3.1 mL spheres with no whole voxel, where the fraction-weighted mean reads ≈ 10 % low."""
    n, block = 48, 6
    zyx = np.indices((n, n, n)) + 0.5  # 1 mm grid
    inside = np.sqrt(((zyx - centre_mm) ** 2).sum(axis=0)) <= radius_mm
    m = n // block

    def coarse(a: np.ndarray) -> np.ndarray:
        return a.reshape(m, block, m, block, m, block).mean(axis=(1, 3, 5))

    ct = coarse(np.where(inside, 1.5, 1.0)).ravel()
    fraction = coarse(inside.astype(np.float64)).ravel()
    voxels = np.flatnonzero(fraction > 0)
    extent = RegionExtent(voxels.astype(np.int64), fraction[voxels])
    assert region_density_g_per_ml(ct, extent, (m, m, m)) == pytest.approx(1.5, rel=1e-9)
    if not (fraction >= 1.0).any():
        assert float(np.average(ct[voxels], weights=fraction[voxels])) < 1.4


def test_volume_column_comes_from_the_label_grid_when_given() -> None:
    regions = expand_regions(_labels(), {"kidney_left": 1, "lesion": 9})
    dose = np.ones(regions.labels.shape)
    rows = region_table(
        dose, dose, regions, 0.1, kinetics={}, pvc="none", pvc_factor={}, in_fov_fraction={},
        volume_ml={"kidney_left": 4.321},
    )  # fmt: skip
    by_name = {r["region"]: r for r in rows}
    assert by_name["kidney_left"]["volume_ml"] == 4.321
    assert by_name["lesion_002"]["volume_ml"] == pytest.approx(3.6)  # not given: its 36 voxels on this grid
