"""Mask utilities against hand-counted boxes, components and volumes."""

from __future__ import annotations

import numpy as np
import pytest

from ludl.errors import GeometryError, InputError
from ludl.imaging import Volume
from ludl.imaging.masks import (
    bounding_box,
    connected_components,
    crop,
    label_masks,
    largest_component,
    masks_to_labels,
    present_labels,
    region_volume_ml,
    region_volumes_ml,
)

NAMES = {"liver": 3, "spleen": 5, "kidney_left": 7}


@pytest.fixture
def labels() -> Volume:
    array = np.zeros((10, 12, 14), dtype=np.uint8)
    array[2:6, 3:7, 4:9] = 3  # 4 × 4 × 5 = 80 voxels
    array[7:9, 1:3, 10:13] = 5  # 2 × 2 × 3 = 12 voxels
    return Volume(array, (2.0, 2.0, 2.0), origin_xyz_mm=(10.0, 20.0, 30.0), unit="label")


def test_bounding_box_margin_clipping_and_empty(labels: Volume) -> None:
    assert bounding_box(labels.array == 3) == (slice(2, 6), slice(3, 7), slice(4, 9))
    # All labels span z 2–8, y 1–6, x 4–12; a 2-voxel margin is clipped at the array edges (10, 12, 14).
    assert bounding_box(labels, margin_voxels=2) == (slice(0, 10), slice(0, 9), slice(2, 14))
    assert bounding_box(np.zeros((3, 3, 3))) is None
    with pytest.raises(InputError):
        bounding_box(labels, margin_voxels=-1)


def test_crop_keeps_physical_positions(labels: Volume) -> None:
    box = (slice(2, 6), slice(3, 7), slice(4, 9))
    cropped = crop(labels, box)
    assert cropped.shape == (4, 4, 5) and (cropped.array == 3).all()
    np.testing.assert_allclose(cropped.index_to_physical([1, 2, 3]), labels.index_to_physical([3, 5, 7]))


def test_label_masks_and_back(labels: Volume) -> None:
    masks = label_masks(labels, NAMES)
    assert set(masks) == set(NAMES) and masks["kidney_left"].array.sum() == 0
    assert masks["liver"].unit == "mask" and masks["liver"].array.sum() == 80
    assert set(label_masks(labels, NAMES, missing="skip")) == {"liver", "spleen"}
    with pytest.raises(InputError, match="kidney_left"):
        label_masks(labels, NAMES, missing="error")
    rebuilt = masks_to_labels(masks, NAMES)
    np.testing.assert_array_equal(rebuilt.array, labels.array)
    assert present_labels(rebuilt) == [3, 5]


def test_masks_to_labels_overlap_and_grid_checks(labels: Volume) -> None:
    a = labels.with_array(labels.array == 3, unit="mask")
    with pytest.raises(InputError, match="overlaps"):
        masks_to_labels({"liver": a, "spleen": a}, NAMES)
    assert (masks_to_labels({"liver": a, "spleen": a}, NAMES, overlap="last").array[a.array] == 5).all()
    other = Volume(np.zeros((2, 2, 2), dtype=bool), (1.0, 1.0, 1.0), unit="mask")
    with pytest.raises(GeometryError):
        masks_to_labels({"liver": a, "spleen": other}, NAMES)


def test_connected_components_connectivity() -> None:
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # touch only at a corner
    mask[4, 4, 0] = True
    assert connected_components(mask, 26)[1] == 2
    assert connected_components(mask, 6)[1] == 3
    volume = Volume(mask, (1.0, 1.0, 1.0), unit="mask")
    assert largest_component(volume).array.sum() == 2
    with pytest.raises(InputError):
        connected_components(mask, 8)


def test_region_volumes_in_ml(labels: Volume) -> None:
    # 80 voxels of 2 mm × 2 mm × 2 mm = 80 × 8 mm³ = 0.64 mL.
    assert region_volume_ml(labels.with_array(labels.array == 3, unit="mask")) == pytest.approx(0.64)
    assert region_volumes_ml(labels, NAMES) == pytest.approx({"liver": 0.64, "spleen": 0.096, "kidney_left": 0.0})
