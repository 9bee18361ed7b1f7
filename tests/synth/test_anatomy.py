"""Procedural anatomy and lesion placement (ludl.synth.anatomy) and smooth random fields (ludl.synth.fields).

Expected values come from anatomy (ICRP Publication 89 reference-male organ masses and where organs lie), from
the definition of the fields (mean 1 per region, independence) and from the statistics of Gaussian-filtered
white noise, never from the generator's own output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from ludl.errors import InputError
from ludl.physics.dose import density_from_hu
from ludl.synth.anatomy import LESION_LABEL_BASE, TISSUE_LABELS, Anatomy, AnatomySpec, make_anatomy
from ludl.synth.fields import gaussian_random_field
from ludl.synth.kinetics import Lesions
from tests.synth.populations import PUBLISHED_HU_RANGES

# The demo preset's truth grid (SPECT 64×64×96 at 6 mm → truth 2× finer) and a whole-body grid at 4 mm.
DEMO = AnatomySpec((192, 128, 128), (3.0, 3.0, 3.0), "torso")
WHOLE_BODY = AnatomySpec((240, 160, 160), (4.0, 4.0, 4.0), "whole_body")

_VOLUMES = np.array([0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 40.0, 80.0, 2.5, 6.0, 15.0, 30.0, 4.0, 10.0, 60.0, 80.0])
_SITES = ("bone",) * 8 + ("lymph_node",) * 6 + ("liver",) * 4


def _lesions(seed: int) -> Lesions:
    perm = np.random.default_rng(seed).permutation(len(_VOLUMES))
    return Lesions(volumes_ml=_VOLUMES[perm], sites=tuple(_SITES[i] for i in perm))


def _build(spec: AnatomySpec, seed: int, lesions: Lesions) -> Anatomy:
    return make_anatomy(np.random.default_rng(seed), spec, lesions)


@pytest.fixture(scope="module")
def demo() -> Anatomy:
    return _build(DEMO, 11, _lesions(11))


@pytest.fixture(scope="module")
def demo_no_lesions() -> Anatomy:
    # Same generator state: everything drawn before the lesions is identical, so this is the lesion-free twin.
    return _build(DEMO, 11, Lesions(volumes_ml=np.zeros(0), sites=()))


@pytest.fixture(scope="module")
def whole_body() -> Anatomy:
    return _build(WHOLE_BODY, 5, _lesions(5))


# ----------------------------------------------------------------------------------------------- grid


def test_maps_are_on_the_truth_grid(demo: Anatomy) -> None:
    lab = demo.labels
    assert lab.shape == DEMO.shape_zyx
    assert lab.spacing_zyx_mm == DEMO.spacing_zyx_mm
    assert np.array_equal(lab.direction, np.eye(3))
    assert lab.unit == "label" and lab.array.dtype == np.int16
    assert demo.hu.same_grid(lab) and demo.density_g_per_ml.same_grid(lab)
    assert demo.hu.unit == "HU" and demo.density_g_per_ml.unit == "g/mL"
    for arr in (demo.uptake_weight, demo.clearance_shift_per_h, demo.pet_weight):
        assert arr.shape == DEMO.shape_zyx and arr.dtype == np.float32
    assert demo.kidney_cortex.shape == DEMO.shape_zyx and demo.kidney_cortex.dtype == bool


# ----------------------------------------------------------------------------------------------- organs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_torso_organs_present_with_reference_volumes(seed: int) -> None:
    # ICRP 89 adult male: kidneys 310 g the pair, liver 1800 g, spleen 150 g (± patient variation), ≈ 1.05 g/mL.
    a = _build(DEMO, seed, Lesions(volumes_ml=np.array([5.0]), sites=("bone",)))
    v = a.region_volumes_ml()
    for k in ("kidney_left", "kidney_right"):
        assert 120.0 <= v[k] <= 200.0, (k, v[k])
    assert 1200.0 <= v["liver"] <= 2000.0
    assert 100.0 <= v["spleen"] <= 250.0
    assert 50.0 <= v["bladder"] <= 600.0
    # red_marrow = L2–L4 vertebral bodies' cancellous bone: 3 × (≈ π·22·15 mm² × 25 mm ≈ 26 mL).
    assert 30.0 <= v["red_marrow"] <= 150.0
    assert v["lung"] > 1500.0
    # A torso crop from the chest to the pelvis has no head glands.
    assert not any(k.startswith(("parotid", "lacrimal")) for k in a.label_values)
    assert set(TISSUE_LABELS) <= set(a.label_values)


def test_tiny_crop_keeps_the_dosimetry_regions() -> None:
    # The tiny preset's truth grid (SPECT 48³ at 8 mm → 96³ at 4 mm): a 384 mm crop must still hold the
    # kidneys, liver, spleen and L2–L4, and every lesion.
    tiny = AnatomySpec((96, 96, 96), (4.0, 4.0, 4.0), "torso")
    les = Lesions(volumes_ml=np.array([3.0, 20.0, 1.0, 8.0]), sites=("liver", "bone", "lymph_node", "bone"))
    a = _build(tiny, 4, les)
    v = a.region_volumes_ml()
    for name in ("kidney_left", "kidney_right", "liver", "spleen", "red_marrow"):
        assert v.get(name, 0.0) > 0.0, name
    assert 120.0 <= v["kidney_left"] <= 200.0
    np.testing.assert_allclose(a.lesion_volumes_ml, les.volumes_ml, rtol=0.15)


def test_whole_body_has_all_design_regions(whole_body: Anatomy) -> None:
    v = whole_body.region_volumes_ml()
    for name in (
        "kidney_left",
        "kidney_right",
        "parotid_left",
        "parotid_right",
        "submandibular_left",
        "submandibular_right",
        "lacrimal_left",
        "lacrimal_right",
        "liver",
        "spleen",
        "bladder",
        "red_marrow",
    ):
        assert v.get(name, 0.0) > 0.0, name
    for k in ("parotid_left", "parotid_right"):
        assert 20.0 <= v[k] <= 35.0, (k, v[k])  # ICRP 89: 50 g the pair
    for k in ("submandibular_left", "submandibular_right"):
        assert 6.0 <= v[k] <= 20.0, (k, v[k])  # ICRP 89: 25 g the pair
    for k in ("lacrimal_left", "lacrimal_right"):
        assert 0.3 <= v[k] <= 1.5, (k, v[k])  # MRI ≈ 0.7 mL each (Bukhari 2014)
    # Head to upper thighs of an adult man (70–100 kg whole body, minus legs below mid-thigh).
    assert 30_000.0 <= v["body"] <= 80_000.0


def test_organs_lie_where_anatomy_puts_them(whole_body: Anatomy) -> None:
    def centroid(name: str) -> np.ndarray:
        idx = np.argwhere(whole_body.mask(name)).mean(axis=0)
        return whole_body.labels.index_to_physical(idx)  # LPS: +x patient left, +z superior

    liver, spleen = centroid("liver"), centroid("spleen")
    kl, kr = centroid("kidney_left"), centroid("kidney_right")
    assert liver[0] < 0 < spleen[0]  # liver on the right, spleen on the left
    assert kr[0] < 0 < kl[0]
    assert kl[1] > liver[1]  # kidneys are retroperitoneal: posterior
    heart = centroid("blood_pool")
    assert centroid("lung")[2] > liver[2] > kl[2] > centroid("bladder")[2]
    assert centroid("parotid_left")[2] > heart[2]
    assert centroid("lacrimal_left")[2] > centroid("parotid_left")[2]
    assert centroid("parotid_left")[0] > 0 > centroid("parotid_right")[0]


def test_ct_hu_by_tissue_matches_published_values(demo: Anatomy) -> None:
    hu, lab = demo.hu.array, demo.labels.array
    lv = demo.label_values
    assert np.all(hu[lab == 0] == -1000.0)
    rest = hu[lab == lv["rest_of_body"]]
    by_tissue = {"fat": rest[rest < -30.0], "muscle": rest[(rest >= -30.0) & (rest < 150.0)]}
    by_tissue.update({name: hu[lab == lv[name]] for name in PUBLISHED_HU_RANGES if name in lv})
    for name, (lo, hi) in PUBLISHED_HU_RANGES.items():
        assert lo <= float(np.median(by_tissue[name])) <= hi, name
    # Tissue is not uniform (no one-number organs), yet its spread stays below a soft-tissue contrast (≈ 15 HU).
    for name in ("muscle", "liver", "spleen", "kidney_left"):
        assert 3.0 <= float(np.std(by_tissue[name])) <= 15.0, name
    assert float(np.mean(hu[lab == lv["bone"]])) >= 400.0
    np.testing.assert_allclose(demo.density_g_per_ml.array, density_from_hu(hu), rtol=1e-6)


def test_patients_differ_and_are_reproducible() -> None:
    les = Lesions(volumes_ml=np.array([4.0, 9.0]), sites=("bone", "lymph_node"))
    a, b, c = _build(DEMO, 21, les), _build(DEMO, 21, les), _build(DEMO, 22, les)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.array_equal(a.hu.array, b.hu.array)
    assert np.array_equal(a.uptake_weight, b.uptake_weight)
    assert np.array_equal(a.clearance_shift_per_h, b.clearance_shift_per_h)
    assert np.array_equal(a.pet_weight, b.pet_weight)
    assert not np.array_equal(a.labels.array, c.labels.array)
    va, vc = a.region_volumes_ml(), c.region_volumes_ml()
    assert abs(va["body"] - vc["body"]) > 100.0 or abs(va["liver"] - vc["liver"]) > 10.0


# ----------------------------------------------------------------------------------------------- marrow


def test_red_marrow_is_lesion_free_l2_l4(demo: Anatomy, demo_no_lesions: Anatomy) -> None:
    red = demo.label_values["red_marrow"]
    red_free = demo_no_lesions.labels.array == red
    lesion = demo.labels.array > LESION_LABEL_BASE
    # Lesions are the only difference: red marrow is the lesion-free part of the same vertebral bodies.
    assert np.array_equal(demo.labels.array == red, red_free & ~lesion)
    # ... and those bodies are L2–L4: between the landmarks, on the midline.
    z = demo.labels.index_to_physical(np.argwhere(red_free))
    z_top = demo.landmarks_xyz_mm["l2_top"][2]
    z_bottom = demo.landmarks_xyz_mm["l4_bottom"][2]
    assert z[:, 2].max() <= z_top + 1e-6 and z[:, 2].min() >= z_bottom - 1e-6
    assert np.abs(z[:, 0]).max() < 40.0
    # Three lumbar bodies of ≈ 35 mm pitch: 90–110 mm from the top of L2 to the bottom of L4.
    assert 90.0 <= z_top - z_bottom <= 115.0


def test_red_marrow_loses_voxels_to_spine_lesions() -> None:
    # Many bone lesions: some land in L2–L4 and take marrow voxels away from red_marrow.
    many = Lesions(volumes_ml=np.full(60, 6.0), sites=("bone",) * 60)
    none = Lesions(volumes_ml=np.zeros(0), sites=())
    a, b = _build(DEMO, 3, many), _build(DEMO, 3, none)
    assert a.region_volumes_ml()["red_marrow"] < b.region_volumes_ml()["red_marrow"]


# ----------------------------------------------------------------------------------------------- lesions


def test_lesions_labelled_in_given_order_with_requested_volumes(demo: Anatomy) -> None:
    les = _lesions(11)
    assert demo.lesion_sites == les.sites
    assert demo.lesion_regions == tuple(f"lesion_{i + 1:03d}" for i in range(les.n))
    vox = demo.labels.voxel_volume_ml
    for i, name in enumerate(demo.lesion_regions):
        m = demo.mask(name)
        assert demo.label_values[name] == LESION_LABEL_BASE + i + 1
        assert math.isclose(demo.lesion_volumes_ml[i], m.sum() * vox)
        if les.volumes_ml[i] >= 2.0:
            assert abs(demo.lesion_volumes_ml[i] / les.volumes_ml[i] - 1.0) <= 0.1, name
        assert ndimage.label(m)[1] == 1, f"{name} is not one piece"
    np.testing.assert_array_equal(demo.requested_lesion_volumes_ml, les.volumes_ml)


def test_lesions_sit_at_their_sites(demo: Anatomy, demo_no_lesions: Anatomy) -> None:
    before = demo_no_lesions.labels.array
    lv = demo.label_values
    skeleton = np.isin(before, [lv["bone"], lv["marrow_other"], lv["red_marrow"]])
    organs = np.isin(before, [v for k, v in lv.items() if k in ("kidney_left", "kidney_right", "spleen", "liver")])
    for name, site in zip(demo.lesion_regions, demo.lesion_sites, strict=True):
        m = demo.mask(name)
        if site == "liver":
            assert np.all(before[m] == lv["liver"]), name
        elif site == "bone":
            # Centred in bone; large ones may break through the cortex into soft tissue.
            assert skeleton[m].mean() >= 0.5, name
            assert not organs[m].any(), name
        else:
            assert not (skeleton[m].any() or organs[m].any() or (before[m] == lv["lung"]).any()), name


def test_bone_lesions_sit_inside_bone_with_mixed_ct_appearance() -> None:
    # Many bone lesions of clinical sizes on the demo grid and their lesion-free twin (same draws before them).
    vols = np.random.default_rng(2).lognormal(math.log(4.0), 0.8, 40).clip(0.5, 40.0)
    many = Lesions(volumes_ml=vols, sites=("bone",) * 40)
    a, b = _build(DEMO, 8, many), _build(DEMO, 8, Lesions(volumes_ml=np.zeros(0), sites=()))
    lv = a.label_values
    skeleton = np.isin(b.labels.array, [lv["bone"], lv["marrow_other"], lv["red_marrow"]])
    lesion = a.labels.array > LESION_LABEL_BASE
    # Prostate-cancer bone metastases are intra-osseous: nearly all lesion voxels were bone.
    assert skeleton[lesion].mean() >= 0.9
    # Mixed appearance (not one dense ball per lesion): lytic voxels at soft-tissue HU and sclerotic voxels far
    # above cancellous bone (> 350 HU) both occur; no lesion is uniform.
    hu = a.hu.array
    inside = lesion & skeleton
    assert (hu[inside] < 100.0).mean() > 0.05 and (hu[inside] > 350.0).mean() > 0.2
    for name in a.lesion_regions:
        m = a.mask(name)
        if m.sum() >= 20:
            assert np.std(hu[m]) > 8.0, name


def test_diffuse_marrow_involvement_mottles_the_marrow() -> None:
    les = _lesions(11)
    diffuse = Lesions(volumes_ml=les.volumes_ml, sites=les.sites, diffuse_marrow=True)
    a, b = _build(DEMO, 11, les), _build(DEMO, 11, diffuse)
    marrow = a.labels.array == a.label_values["marrow_other"]
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.median(b.hu.array[marrow]) > np.median(a.hu.array[marrow]) + 20.0
    assert np.percentile(b.hu.array[marrow], 95) > np.percentile(a.hu.array[marrow], 95) + 80.0


def test_large_lesions_have_necrotic_cores(demo: Anatomy) -> None:
    big = [n for n, v in zip(demo.lesion_regions, _lesions(11).volumes_ml, strict=True) if v >= 40.0]
    assert len(big) == 4
    cores = [float(demo.uptake_weight[demo.mask(n)].min()) for n in big]
    # A core holds ≈ 0.1 of the mean uptake; normalisation and the field keep it well below 0.3.
    assert min(cores) < 0.3


# ----------------------------------------------------------------------------------------------- fields


def test_fields_mean_one_per_region(demo: Anatomy) -> None:
    lab = demo.labels.array
    for name, v in demo.label_values.items():
        m = lab == v
        if not m.any():
            continue
        assert math.isclose(float(demo.uptake_weight[m].mean(dtype=np.float64)), 1.0, rel_tol=1e-4), name
        assert math.isclose(float(demo.pet_weight[m].mean(dtype=np.float64)), 1.0, rel_tol=1e-4), name
    assert np.all(demo.uptake_weight >= 0) and np.all(demo.pet_weight >= 0)
    assert np.all(demo.uptake_weight[lab == 0] == 0)


def test_clearance_shift_is_zero_mean_independent_of_uptake(demo: Anatomy) -> None:
    lab = demo.labels.array
    hetero = (lab > LESION_LABEL_BASE) | np.isin(
        lab, [demo.label_values["kidney_left"], demo.label_values["kidney_right"]]
    )
    assert np.all(demo.clearance_shift_per_h[~hetero] == 0)
    for name in (*demo.lesion_regions, "kidney_left", "kidney_right"):
        m = demo.mask(name)
        assert abs(float(demo.clearance_shift_per_h[m].mean(dtype=np.float64))) < 1e-7, name
    shift, up, pet = demo.clearance_shift_per_h[hetero], demo.uptake_weight[hetero], demo.pet_weight[hetero]
    assert float(shift.std()) > 5e-4  # heterogeneity present (SD ≈ 0.002/h by default)
    # Independent fields: no correlation of T_eff heterogeneity with 177Lu or PET uptake.
    assert abs(np.corrcoef(shift, up)[0, 1]) < 0.1
    assert abs(np.corrcoef(shift, pet)[0, 1]) < 0.1
    # PET shares the expression pattern partly, not exactly.
    r = np.corrcoef(up[lab[hetero] > LESION_LABEL_BASE], pet[lab[hetero] > LESION_LABEL_BASE])[0, 1]
    assert 0.4 < r < 0.98


def test_kidney_cortex_takes_up_more_than_medulla(demo: Anatomy) -> None:
    for name in ("kidney_left", "kidney_right"):
        m = demo.mask(name)
        cortex = demo.kidney_cortex[m]
        # Cortex ≈ 70 % of the renal parenchyma; PSMA uptake sits in the proximal tubules of the cortex.
        assert 0.6 <= cortex.mean() <= 0.8
        u = demo.uptake_weight[m]
        assert u[cortex].mean() > 1.8 * u[~cortex].mean()
        assert float(u.std()) > 0.1  # a smooth random field on top
    assert not np.any(demo.kidney_cortex & ~np.isin(demo.labels.array, [10, 11]))


def test_random_field_statistics() -> None:
    rng = np.random.default_rng(0)
    sigma_mm, spacing = 6.0, (2.0, 2.0, 2.0)
    f = gaussian_random_field(rng, (80, 80, 80), spacing, sigma_mm)
    assert f.dtype == np.float32 and f.shape == (80, 80, 80)
    core = f[12:-12, 12:-12, 12:-12]
    assert abs(float(core.mean())) < 0.1
    assert 0.85 < float(core.std()) < 1.15
    # Gaussian-filtered white noise has correlation exp(−d²/(4σ²)) at lag d: 0.78 at d = σ (3 voxels).
    lag = 3
    r = np.corrcoef(core[:, :, :-lag].ravel(), core[:, :, lag:].ravel())[0, 1]
    assert abs(r - math.exp(-0.25)) < 0.06
    # Coarse path (σ ≫ voxel): same variance and correlation.
    g = gaussian_random_field(rng, (40, 120, 120), (2.0, 2.0, 2.0), 16.0)
    gc = g[:, 30:-30, 30:-30]
    assert 0.6 < float(gc.std()) < 1.4
    r = np.corrcoef(gc[:, :, :-8].ravel(), gc[:, :, 8:].ravel())[0, 1]
    assert abs(r - math.exp(-0.25)) < 0.1
    several = gaussian_random_field(rng, (30, 30, 30), spacing, 4.0, count=3)
    assert several.shape == (3, 30, 30, 30)
    assert abs(np.corrcoef(several[0].ravel(), several[1].ravel())[0, 1]) < 0.15


# ----------------------------------------------------------------------------------------------- inputs


def test_bad_inputs_raise() -> None:
    with pytest.raises(InputError):
        AnatomySpec((4, 64, 64), (3.0, 3.0, 3.0))
    with pytest.raises(InputError):
        AnatomySpec((64, 64, 64), (0.0, 3.0, 3.0))
    with pytest.raises(InputError):
        AnatomySpec((64, 64, 64), (3.0, 3.0, 3.0), extent="legs")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        make_anatomy(np.random.default_rng(0), DEMO, Lesions(volumes_ml=np.array([-1.0]), sites=("bone",)))
    with pytest.raises(InputError):
        gaussian_random_field(np.random.default_rng(0), (8, 8, 8), (1.0, 1.0, 1.0), 0.0)


def test_vertebral_bodies_are_waisted(demo_no_lesions: Anatomy) -> None:
    # L2–L4 (the red marrow, no lesions): each body's cancellous cross-section is smaller at mid-height than
    # near its endplates (a cylinder would keep it constant).
    red = demo_no_lesions.labels.array == demo_no_lesions.label_values["red_marrow"]
    area = red.sum(axis=(1, 2))
    z_idx = np.flatnonzero(area)
    bodies = np.split(z_idx, np.flatnonzero(np.diff(z_idx) > 1) + 1)
    assert len(bodies) == 3
    for k in bodies:
        assert len(k) >= 5
        assert area[k[len(k) // 2]] < 0.9 * area[k].max()
