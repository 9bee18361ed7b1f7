"""Tests of ludl.physics.kernels against published tables, analytic limits and conservation laws."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ludl.errors import KernelError
from ludl.physics import kernels
from ludl.physics.kernels import (
    MEDIA,
    kernel_energy_per_decay_mev,
    point_kernel_mgy_per_mbq_s,
    sphere_s_value_mgy_per_mbq_s,
    voxel_s_kernel,
)
from ludl.physics.nuclides import get_nuclide

# docs/physics.md §1 (ICRP 107): 177Lu electron (β + IE + Auger) and photon energy per decay.
E_ELECTRON_KEV = 147.92
E_PHOTON_KEV = 35.10
# docs/physics.md §4: 1 MBq·s of 177Lu electrons absorbed locally in a 4.8 mm voxel of unit density.
LDM_4P8MM_UNIT_DENSITY_MGY = 0.2143
# 1 MeV/g per decay = J/MeV · 1e3 g/kg · 1e6 decays/(MBq·s) · 1e3 mGy/Gy (CODATA e = 1.602176634e-19 C).
MGY_PER_MBQ_S_PER_MEV_PER_G = 1.602176634e-13 * 1e3 * 1e6 * 1e3


def _energy_kev(kernel: npt.NDArray[np.float64], spacing_mm: tuple[float, float, float], rho: float) -> float:
    """Σ K · m_voxel in keV per decay, computed here from first principles (not with the module's helper)."""
    mass_g = rho * float(np.prod(spacing_mm)) * 1e-3
    return float(kernel.sum()) * mass_g / MGY_PER_MBQ_S_PER_MEV_PER_G * 1000.0


def _read_lanconelli(path: Path) -> npt.NDArray[np.float64]:
    """Parse a published octant table (i j k S, CRLF, two header lines) into the full centred 11³ array."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 4 and all(p.lstrip("-").replace(".", "", 1).isdigit() for p in parts[:3]):
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])))
    assert len(rows) == 216, f"expected the 6×6×6 octant in {path}, got {len(rows)} rows"
    full = np.zeros((11, 11, 11))
    for i, j, k, s in rows:
        for si, sj, sk in itertools.product((1, -1), repeat=3):
            full[5 + si * i, 5 + sj * j, 5 + sk * k] = s
    return full


@pytest.fixture(scope="module")
def published(testdata: Path) -> dict[str, npt.NDArray[np.float64]]:
    folder = testdata / "voxel_s"  # Lanconelli 2012 tables, vendored with their MIT licence (tests/data/README.md)
    return {
        "soft_tissue": _read_lanconelli(folder / "177Lu4.42mmsoft.txt"),
        "bone": _read_lanconelli(folder / "177Lu4.42mmbone.txt"),
    }


@pytest.fixture(autouse=True)
def _fresh_memory_cache() -> None:
    kernels.clear_kernel_cache()


# ------------------------------------------------------------------------------------ published tables


def test_published_table_parses_to_its_documented_values(published: dict[str, npt.NDArray[np.float64]]) -> None:
    soft = published["soft_tissue"]
    # docs/physics.md §4 quotes the 4.42 mm soft-tissue table: centre, face, edge, corner.
    assert soft[5, 5, 5] == pytest.approx(2.26e-1)
    assert soft[5, 5, 6] == pytest.approx(3.39e-3)
    assert soft[5, 6, 6] == pytest.approx(1.19e-4)
    assert soft[6, 6, 6] == pytest.approx(2.82e-5)
    # and notes it holds ≈ 142 keV per decay at ρ 1.04 (bone ≈ 146 keV at 1.85)
    assert _energy_kev(soft, (4.42,) * 3, 1.04) == pytest.approx(142.0, abs=1.0)
    assert _energy_kev(published["bone"], (4.42,) * 3, 1.85) == pytest.approx(146.0, abs=1.0)


@pytest.mark.parametrize("medium", ["soft_tissue", "bone"])
def test_kernel_matches_lanconelli_2012_at_4p42_mm(medium: str, published: dict[str, npt.NDArray[np.float64]]) -> None:
    ours = voxel_s_kernel((4.42, 4.42, 4.42), medium=medium)
    ref = published[medium]
    assert ours.shape == (11, 11, 11)
    c = 5
    assert ours[c, c, c] == pytest.approx(ref[c, c, c], rel=0.10)
    faces = [(c + 1, c, c), (c - 1, c, c), (c, c + 1, c), (c, c - 1, c), (c, c, c + 1), (c, c, c - 1)]
    for face in faces:
        assert ours[face] == pytest.approx(ref[face], rel=0.30)
    # energy-normalised shape: the centre's share of the 11³ block
    assert ours[c, c, c] / ours.sum() == pytest.approx(ref[c, c, c] / ref.sum(), abs=0.03)
    # far, photon-dominated voxels: the build-up model within a factor 1.3
    for far in [(c, c, c + 3), (c, c, c + 5), (c + 5, c + 5, c + 5)]:
        assert ours[far] == pytest.approx(ref[far], rel=0.3)


def test_bone_keeps_more_energy_in_the_source_voxel_than_soft_tissue(
    published: dict[str, npt.NDArray[np.float64]],
) -> None:
    # Electron ranges in mm shrink ~1/ρ, so less energy escapes a bone voxel of the same size: the centre holds more
    # energy (K·m) in bone, although K itself (per gram) is lower.
    soft = voxel_s_kernel(4.42, medium="soft_tissue")
    bone = voxel_s_kernel(4.42, medium="bone")
    e_soft = soft[5, 5, 5] * MEDIA["soft_tissue"].density_g_per_ml
    e_bone = bone[5, 5, 5] * MEDIA["bone"].density_g_per_ml
    assert e_bone > e_soft
    assert bone[5, 5, 5] < soft[5, 5, 5]
    # the published tables show the same ordering
    ref_soft, ref_bone = published["soft_tissue"], published["bone"]
    assert ref_bone[5, 5, 5] * 1.85 > ref_soft[5, 5, 5] * 1.04
    # and the face neighbour gets less in bone (fewer electrons cross the face)
    assert bone[5, 5, 6] * 1.85 < soft[5, 5, 6] * 1.04


# ---------------------------------------------------------------------------------- LDM and energy


def test_centre_approaches_local_deposition_for_large_voxels() -> None:
    rho = MEDIA["soft_tissue"].density_g_per_ml
    fractions = []
    for h in (2.0, 4.8, 10.0, 20.0):
        k = voxel_s_kernel(h)
        c = tuple(s // 2 for s in k.shape)
        # centre dose × voxel mass, as a fraction of the electron energy: docs/physics.md's LDM number (§4) is E_e/m for
        # 4.8 mm at unit density, so E_e/m for this voxel is 0.2143 mGy × (4.8 mm / h)³ / ρ.
        ldm_mgy = LDM_4P8MM_UNIT_DENSITY_MGY * (4.8 / h) ** 3 / rho
        fractions.append(k[c] / ldm_mgy)
    assert np.all(np.diff(fractions) > 0), fractions  # escape falls as the voxel grows
    # a 2 mm voxel loses a sizeable share: thick-target estimate 1 − (3/4)·1.24·0.24 mm / 1.24 mm ≈ 0.82
    assert fractions[0] < 0.88
    # 20 mm: escape ≈ (3/4)·1.24·0.24 mm / 12.4 mm ≈ 2 %, offset by ≈ 1 % of absorbed photon energy
    assert fractions[-1] == pytest.approx(1.0, abs=0.02)
    assert fractions[-1] < 1.0 + 0.02 * E_PHOTON_KEV / E_ELECTRON_KEV + 0.01


def test_unit_conversion_matches_physics_md_ldm_number() -> None:
    # A 4.8 mm kernel's energy helper, fed the LDM dose of docs/physics.md §4 in one voxel of unit-density medium,
    # must give back the 177Lu electron energy per decay (0.2143 mGy per MBq·s ⇔ 147.92 keV per decay in 0.1106 g).
    one_voxel = np.zeros((1, 1, 1))
    one_voxel[0, 0, 0] = LDM_4P8MM_UNIT_DENSITY_MGY / MEDIA["soft_tissue"].density_g_per_ml
    e_mev = kernel_energy_per_decay_mev(one_voxel, (4.8, 4.8, 4.8), "soft_tissue")
    assert e_mev * 1000.0 == pytest.approx(E_ELECTRON_KEV, rel=2e-3)


def _photon_energy_in_box_kev(half_extent_mm: tuple[float, float, float], medium: str) -> float:
    """Photon energy absorbed inside a box centred on a point source: ∫dΩ ∫₀^{R(ω)} ρ D_γ(r) r² dr, in keV.

    Independent quadrature (Gauss–Legendre in cos θ, φ and r over one octant) of the point kernel, not the
    kernel's ray code.
    """
    rho_g_per_mm3 = MEDIA[medium].density_g_per_ml * 1e-3
    x, w = np.polynomial.legendre.leggauss(48)
    cos_t = np.repeat(0.5 * (x + 1.0), x.size)
    phi = np.tile(0.25 * math.pi * (x + 1.0), x.size)
    w_dir = np.outer(0.5 * w, 0.25 * math.pi * w).ravel()
    sin_t = np.sqrt(1.0 - cos_t**2)
    omega = np.stack([cos_t, sin_t * np.sin(phi), sin_t * np.cos(phi)], axis=1)
    r_end = np.min(np.asarray(half_extent_mm)[None, :] / omega, axis=1)
    rx, rw = np.polynomial.legendre.leggauss(100)
    total = 0.0
    # r² D(r) is smooth (no 1/r² left); split each ray at 20 mm where the short-range part bends
    for a, b in ((np.zeros_like(r_end), np.minimum(20.0, r_end)), (np.minimum(20.0, r_end), r_end)):
        half = 0.5 * (b - a)
        r = half[:, None] * (rx[None, :] + 1.0) + a[:, None]
        d = point_kernel_mgy_per_mbq_s(r, medium, component="photon") / MGY_PER_MBQ_S_PER_MEV_PER_G
        total += float(np.sum(w_dir * half * np.sum(rw[None, :] * d * r * r, axis=1)))
    return 8.0 * total * rho_g_per_mm3 * 1000.0  # 8 octants


def _local_photon_kev() -> float:
    # Lines below 15 keV (Hf L X-rays and below) are deposited in the source voxel by the model's documented choice.
    lines = get_nuclide("Lu-177").photon_lines_mev
    low = lines[:, 0] < 0.015
    return float(np.sum(lines[low, 0] * lines[low, 1])) * 1000.0


def test_large_kernel_conserves_energy() -> None:
    spacing = (4.8, 4.8, 4.8)
    k = voxel_s_kernel(spacing, size=41)
    absorbed = _energy_kev(k, spacing, MEDIA["soft_tissue"].density_g_per_ml)
    photons_in_box = _photon_energy_in_box_kev((20.5 * 4.8,) * 3, "soft_tissue") + _local_photon_kev()
    assert photons_in_box == pytest.approx(16.0, abs=4.0)  # sanity: roughly half of the 35.1 keV in a 20 cm box
    assert absorbed == pytest.approx(E_ELECTRON_KEV + photons_in_box, rel=0.01)
    assert kernel_energy_per_decay_mev(k, spacing) * 1000.0 == pytest.approx(absorbed, rel=1e-12)


@pytest.mark.parametrize("medium", ["soft_tissue", "bone"])
def test_point_kernel_integrates_to_the_emitted_energy(medium: str) -> None:
    rho_g_per_mm3 = MEDIA[medium].density_g_per_ml * 1e-3
    # electrons: all energy within 3 mm, on a fine grid (the tabulated kernel is piecewise constant)
    r = np.geomspace(1e-5, 3.0, 200001)
    mid = 0.5 * (r[1:] + r[:-1])
    d_e = point_kernel_mgy_per_mbq_s(mid, medium, component="electron") / MGY_PER_MBQ_S_PER_MEV_PER_G
    e_electron_kev = float(np.sum(4.0 * math.pi * rho_g_per_mm3 * d_e * mid**2 * np.diff(r))) * 1000.0
    nuclide = get_nuclide("Lu-177")
    # electrons below 10 keV are deposited at the source by the model (documented), so add them here
    lines = nuclide.electron_lines_mev
    low_lines_kev = float(np.sum(lines[lines[:, 0] < 0.010, 0] * lines[lines[:, 0] < 0.010, 1])) * 1000.0
    spec = nuclide.beta_spectrum_mev
    e_grid = np.linspace(0.0, 0.010, 201)
    low_beta_kev = float(np.trapezoid(np.interp(e_grid, spec[:, 0], spec[:, 1]) * e_grid, e_grid)) * 1000.0
    assert e_electron_kev + low_lines_kev + low_beta_kev == pytest.approx(E_ELECTRON_KEV, rel=0.005)
    assert point_kernel_mgy_per_mbq_s(2.2, medium, component="electron") == 0.0  # beyond the 177Lu β range
    # photons: an infinite medium absorbs all photon energy (the build-up normalisation), up to 4 m
    r = np.geomspace(1e-4, 4000.0, 40001)
    mid = 0.5 * (r[1:] + r[:-1])
    d_g = point_kernel_mgy_per_mbq_s(mid, medium, component="photon") / MGY_PER_MBQ_S_PER_MEV_PER_G
    e_photon_kev = float(np.sum(4.0 * math.pi * rho_g_per_mm3 * d_g * mid**2 * np.diff(r))) * 1000.0
    assert e_photon_kev + _local_photon_kev() == pytest.approx(E_PHOTON_KEV, rel=0.01)


def test_photon_point_kernel_exceeds_the_uncollided_dose() -> None:
    # Hubbell & Seltzer (NIST SRD 126), ICRU-44 muscle: μ/ρ and μ_en/ρ at 100 and 200 keV (cm²/g); the 113 and
    # 208 keV lines alone, unscattered, are a lower bound on the photon dose far from the source.
    rho = MEDIA["soft_tissue"].density_g_per_ml
    r_cm = np.array([2.0, 5.0, 10.0, 20.0])
    uncollided = np.zeros_like(r_cm)
    for e_mev, yld, mu_rho, muen_rho in ((0.11295, 0.064, 0.1693, 0.02544), (0.208366, 0.11, 0.1358, 0.02942)):
        # coefficients at the tabulated energy just below the line overestimate μ slightly: still a lower bound
        uncollided += yld * e_mev * muen_rho * np.exp(-mu_rho * rho * r_cm) / (4.0 * math.pi * r_cm**2)
    d = point_kernel_mgy_per_mbq_s(r_cm * 10.0, component="photon") / MGY_PER_MBQ_S_PER_MEV_PER_G
    assert np.all(d > uncollided)
    # water's energy-absorption build-up at 100–200 keV is ≲ 30 at 4 mean free paths (ANS-6.4.3): not orders more
    assert np.all(d < 40.0 * uncollided)


# --------------------------------------------------------------------------------------------- symmetry


def _assert_mirror_symmetric(k: npt.NDArray[np.float64]) -> None:
    for axis in range(3):
        np.testing.assert_allclose(k, np.flip(k, axis=axis), rtol=1e-12, atol=0)


def test_isotropic_kernel_has_full_cubic_symmetry() -> None:
    k = voxel_s_kernel(4.42)
    _assert_mirror_symmetric(k)
    for perm in itertools.permutations(range(3)):
        np.testing.assert_allclose(k, np.transpose(k, perm), rtol=1e-12, atol=0)


def test_anisotropic_kernels_keep_the_symmetries_they_must() -> None:
    k = voxel_s_kernel((3.0, 4.8, 4.8))
    assert k.shape[1] == k.shape[2]
    _assert_mirror_symmetric(k)
    np.testing.assert_allclose(k, np.swapaxes(k, 1, 2), rtol=1e-12, atol=0)  # y ↔ x: equal spacings
    c = tuple(s // 2 for s in k.shape)
    # The z neighbour shares a 4.8 × 4.8 mm face with the source, the x neighbour a 3.0 × 4.8 mm face; both have
    # the same mass, so more electron energy reaches the z neighbour.
    assert k[c[0] + 1, c[1], c[2]] > k[c[0], c[1], c[2] + 1]
    k2 = voxel_s_kernel((2.5, 4.0, 5.5))
    _assert_mirror_symmetric(k2)
    c2 = tuple(s // 2 for s in k2.shape)
    faces = [k2[c2[0] + 1, c2[1], c2[2]], k2[c2[0], c2[1] + 1, c2[2]], k2[c2[0], c2[1], c2[2] + 1]]
    # face areas 4.0×5.5 > 2.5×5.5 > 2.5×4.0 for the z, y, x neighbours
    assert faces[0] > faces[1] > faces[2]


def test_default_size_covers_eleven_voxels_and_the_electron_range() -> None:
    assert voxel_s_kernel(4.8).shape == (11, 11, 11)
    k = voxel_s_kernel(0.5)  # the 177Lu β range (≈ 2 mm) spans 4–5 voxels
    assert all(s % 2 == 1 and s >= 11 for s in k.shape)
    c = k.shape[0] // 2
    assert k[c, c, 0] > 0  # photons reach the edge, electrons do not: the electron range fits inside
    k_small = voxel_s_kernel((0.5, 4.8, 4.8))
    assert k_small.shape[0] >= 2 * math.ceil(2.0 / 0.5) + 1 and k_small.shape[1:] == (11, 11)


# ------------------------------------------------------------------------------------------------ sphere


def test_sphere_electron_self_dose_tends_to_local_deposition() -> None:
    rho = MEDIA["soft_tissue"].density_g_per_ml
    volumes = np.array([0.01, 0.1, 1.0, 10.0, 100.0, 1000.0])
    s_e = sphere_s_value_mgy_per_mbq_s(volumes, component="electron")
    ldm = E_ELECTRON_KEV / 1000.0 * MGY_PER_MBQ_S_PER_MEV_PER_G / (rho * volumes)  # E_e / m
    phi = s_e / ldm
    assert np.all(np.diff(phi) > 0) and np.all(phi <= 1.0 + 1e-9)
    # thick-sphere limit 1 − (3/4)⟨r⟩/R with ⟨r⟩ < 0.3 mm (177Lu): > 0.99 at 1000 mL (R = 62 mm)
    radius_mm = np.cbrt(volumes * 1000.0 * 3.0 / (4.0 * math.pi))
    assert np.all(phi[2:] > 1.0 - 0.75 * 0.3 / radius_mm[2:])
    assert phi[-1] == pytest.approx(1.0, abs=0.005)
    # tiny sphere (R = 0.13 mm, about half the mean electron distance): most energy escapes
    tiny_ldm = E_ELECTRON_KEV / 1000.0 * MGY_PER_MBQ_S_PER_MEV_PER_G / (rho * 1e-5)
    assert float(sphere_s_value_mgy_per_mbq_s(1e-5, component="electron")) / tiny_ldm < 0.6


def test_sphere_and_cube_of_equal_volume() -> None:
    # Riesz rearrangement: for a radially decreasing kernel the sphere has the largest self-dose of all shapes of
    # that volume, so S(sphere) > K(centre) of a cube of equal volume; and escape scales with the surface (the
    # cube's is 1.24× the sphere's), so the gap is a fraction of the cube's escape 1 − φ.
    for medium in ("soft_tissue", "bone"):
        k = voxel_s_kernel(4.42, medium=medium)
        s = float(sphere_s_value_mgy_per_mbq_s(4.42**3 / 1000.0, medium=medium))
        rho = MEDIA[medium].density_g_per_ml
        ldm = E_ELECTRON_KEV / 1000.0 * MGY_PER_MBQ_S_PER_MEV_PER_G / (rho * 4.42**3 / 1000.0)
        escape_cube = 1.0 - k[5, 5, 5] / ldm
        assert 1.0 < s / k[5, 5, 5] < 1.0 + 0.5 * escape_cube


def test_sphere_total_adds_photons_and_is_near_ldm_for_large_spheres() -> None:
    volumes = np.array([1.0, 100.0, 10000.0])
    total = sphere_s_value_mgy_per_mbq_s(volumes)
    parts = sphere_s_value_mgy_per_mbq_s(volumes, component="electron") + sphere_s_value_mgy_per_mbq_s(
        volumes, component="photon"
    )
    np.testing.assert_allclose(total, parts, rtol=1e-12)
    rho = MEDIA["soft_tissue"].density_g_per_ml
    e_over_m = (total * rho * volumes) / MGY_PER_MBQ_S_PER_MEV_PER_G * 1000.0  # keV per decay absorbed
    assert np.all(np.diff(e_over_m) > 0)
    assert e_over_m[-1] < E_ELECTRON_KEV + E_PHOTON_KEV
    assert e_over_m[-1] > E_ELECTRON_KEV + 0.3 * E_PHOTON_KEV  # a 10 L sphere (R 13 cm) absorbs most photons
    assert np.shape(sphere_s_value_mgy_per_mbq_s(5.0)) == ()


# ------------------------------------------------------------------------------------------------- cache


def test_disk_cache_is_used_and_keyed_by_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = voxel_s_kernel(4.8, cache_dir=tmp_path)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))

    def _no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("kernel regenerated although it is cached")

    monkeypatch.setattr(kernels, "_generate_kernel", _no_generation)
    kernels.clear_kernel_cache()
    again = voxel_s_kernel(4.8, cache_dir=tmp_path)  # from disk
    np.testing.assert_array_equal(first, again)
    monkeypatch.undo()

    voxel_s_kernel(4.8, medium="bone", cache_dir=tmp_path)
    voxel_s_kernel((4.8, 4.8, 4.0), cache_dir=tmp_path)
    voxel_s_kernel(4.8, size=13, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 4


def test_memory_cache_returns_independent_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    first = voxel_s_kernel(4.8)
    first[5, 5, 5] = -1.0  # callers may scribble on their copy

    def _no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("kernel regenerated although it is in memory")

    monkeypatch.setattr(kernels, "_generate_kernel", _no_generation)
    second = voxel_s_kernel(4.8)
    assert second[5, 5, 5] > 0 and second.flags.writeable
    assert second is not voxel_s_kernel(4.8)


def test_corrupt_cache_file_is_regenerated(tmp_path: Path) -> None:
    good = voxel_s_kernel(4.8, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(b"not a numpy file")
    kernels.clear_kernel_cache()
    np.testing.assert_array_equal(voxel_s_kernel(4.8, cache_dir=tmp_path), good)


# -------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "spacing",
    [0.0, -4.8, float("nan"), float("inf"), (4.8, 4.8), (4.8, 0.0, 4.8), (4.8, float("nan"), 4.8), 0.3, 25.0, "4.8"],
)
def test_bad_spacing_raises(spacing: object) -> None:
    with pytest.raises(KernelError):
        voxel_s_kernel(spacing)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [10, 1, 3, (11, 11), (11, 12, 11), (11.0, 11, 11), 0, -11, 131, True])
def test_bad_size_raises(size: object) -> None:
    # 3 is odd but cannot hold the electron range at 0.5 mm
    with pytest.raises(KernelError):
        voxel_s_kernel(0.5 if size == 3 else 4.8, size=size)  # type: ignore[arg-type]


def test_unknown_medium_or_nuclide_raises() -> None:
    with pytest.raises(KernelError):
        voxel_s_kernel(4.8, medium="lung")
    with pytest.raises(KernelError):
        voxel_s_kernel(4.8, nuclide="Xx-999")
    with pytest.raises(KernelError):
        voxel_s_kernel(4.8, nuclide="F-18")  # β⁺: annihilation photons are not modelled
    with pytest.raises(KernelError):
        voxel_s_kernel(4.8, nuclide="Y-90")  # electrons beyond the 1 MeV scaled kernels
    with pytest.raises(KernelError):
        sphere_s_value_mgy_per_mbq_s(1.0, medium="water")
    with pytest.raises(KernelError):
        sphere_s_value_mgy_per_mbq_s(0.0)
    with pytest.raises(KernelError):
        point_kernel_mgy_per_mbq_s(0.0)
    with pytest.raises(KernelError):
        point_kernel_mgy_per_mbq_s(1.0, component="alpha")  # type: ignore[arg-type]


def test_cache_dir_that_is_a_file_raises(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(KernelError):
        voxel_s_kernel(4.8, cache_dir=not_a_dir)


def test_alpha_emitter_is_refused_with_its_emission_named() -> None:
    # 225Ac decays by α (ICRP 107): the β/photon kernel model must not pretend to cover it.
    with pytest.raises(KernelError, match="alpha"):
        voxel_s_kernel((4.8, 4.8, 4.8), nuclide="Ac-225")
