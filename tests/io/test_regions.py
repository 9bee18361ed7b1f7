"""The region tables of ludl.io.regions: one evaluation class per region, the same for every caller."""

from __future__ import annotations

from ludl.dosimetry.stp_population import OTHER_CLASS, region_class
from ludl.io.regions import EVALUATION_CLASSES, REGION_NAMES, evaluation_class
from ludl.synth.reference.features import region_class as reference_region_class


def test_evaluation_class_of_every_canonical_region() -> None:
    # The grouping docs/architecture.md "Evaluation" names, written out by hand.
    expected = {
        "kidney_left": "kidneys",
        "kidney_right": "kidneys",
        "parotid_left": "salivary",
        "parotid_right": "salivary",
        "submandibular_left": "salivary",
        "submandibular_right": "salivary",
        "lacrimal_left": "lacrimal",
        "lacrimal_right": "lacrimal",
        "liver": "liver",
        "spleen": "spleen",
        "bladder": None,
        "red_marrow": "red_marrow",
        "body": None,
    }
    assert set(expected) == set(REGION_NAMES)
    for region, cls in expected.items():
        assert evaluation_class(region) == cls, region
    assert evaluation_class("lesion_007") == "lesions" == evaluation_class("x", kind="lesion")
    assert set(expected.values()) - {None} | {"lesions"} == set(EVALUATION_CLASSES)


def test_stp_baselines_and_the_single_scan_reference_group_regions_alike() -> None:
    for region in (*REGION_NAMES, "lesion_012", "blood", "rest_of_body"):
        cls = evaluation_class(region)
        assert reference_region_class(region) == cls
        assert region_class(region, "lesion" if region.startswith("lesion_") else "organ") == (cls or OTHER_CLASS)
