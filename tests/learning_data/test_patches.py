"""Patch placement, padding, the `valid` mask and the regions-inside rule on hand-made arrays."""

from __future__ import annotations

import numpy as np

from ludl.data.patches import PAD_VALUES, cut_patch, patch_start, regions_inside, valid_mask
from ludl.physics.dose import AIR_DENSITY_G_PER_ML


def _arrays(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "spect": rng.uniform(0, 1e6, shape).astype(np.float32),
        "density": np.ones(shape, np.float32),
        "dose": rng.uniform(0, 5, shape).astype(np.float32),
        "tia": rng.uniform(0, 5, shape).astype(np.float32),
        "labels": np.zeros(shape, np.int32),
        "classes": np.zeros(shape, np.uint8),
        "gt_fov": np.ones(shape, bool),
    }


def test_patch_inside_the_volume_reads_those_voxels_in_batch_units() -> None:
    arrays = _arrays((10, 12, 14))
    start = patch_start((5, 6, 7), (10, 12, 14), (4, 4, 4))
    assert start == (3, 4, 5)
    out = cut_patch(arrays, start, (4, 4, 4))
    np.testing.assert_allclose(out["activity_mbq_per_ml"][0], arrays["spect"][3:7, 4:8, 5:9] * 1e-6, rtol=1e-6)
    np.testing.assert_array_equal(out["dose_gy"][0], arrays["dose"][3:7, 4:8, 5:9])
    assert not out["suv"].any()  # no PET channel: zeros
    assert out["classes"].dtype == np.int64 and out["regions"].dtype == np.int32


def test_patch_centred_near_an_edge_moves_inside_and_a_small_volume_is_padded() -> None:
    assert patch_start((0, 11, 13), (10, 12, 14), (4, 4, 4)) == (0, 8, 10)
    arrays = _arrays((3, 12, 14))
    start = patch_start((1, 6, 7), (3, 12, 14), (6, 4, 4))
    assert start[0] == -1  # 3 slices centred in 6: one padded slice before, two after
    out = cut_patch(arrays, start, (6, 4, 4))
    np.testing.assert_array_equal(
        out["dose_gy"][0, 1:4], arrays["dose"][:, start[1] : start[1] + 4, start[2] : start[2] + 4]
    )
    for z in (0, 4, 5):
        assert not out["activity_mbq_per_ml"][0, z].any() and not out["gt_fov"][0, z].any()
        assert np.all(out["density_g_per_ml"][0, z] == np.float32(AIR_DENSITY_G_PER_ML))
    assert PAD_VALUES["valid"] is False


def test_valid_drops_only_the_border_of_faces_that_cut_the_volume() -> None:
    gt_fov = np.ones((1, 8, 8, 8), bool)
    gt_fov[0, 3, 3, 5] = False
    # z spans the volume (no cut); y is cut on both sides; x starts inside (cut) and ends on the volume's edge.
    valid = valid_mask(gt_fov, (0, 2, 4), (8, 8, 8), (8, 20, 12), border_voxels=2)
    expected = np.zeros((8, 8, 8), bool)
    expected[:, 2:6, 2:] = True
    expected[3, 3, 5] = False
    np.testing.assert_array_equal(valid[0], expected)
    np.testing.assert_array_equal(valid_mask(gt_fov, (0, 0, 0), (8, 8, 8), (8, 8, 8), border_voxels=2), gt_fov)


def test_regions_inside_needs_every_voxel_of_the_region_in_the_patch() -> None:
    boxes = {1: ((2, 2, 2), (4, 4, 4)), 2: ((0, 0, 0), (9, 1, 1)), 3: ((5, 5, 5), (8, 8, 8))}
    inside = regions_inside(boxes, [1, 2, 3, 4], (2, 2, 2), (6, 6, 6))
    np.testing.assert_array_equal(inside, [True, False, False, False])  # 3 reaches 8 > 7; 4 has no voxel
    np.testing.assert_array_equal(regions_inside(boxes, [1, 3], (2, 2, 2), (7, 7, 7)), [True, True])
