"""Patient-level folds: every patient in exactly one test fold, stratified by outcome, seeded, written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ludl.errors import InputError
from ludl.io.outcomes import load_outcomes
from ludl.io.splits import SPLITS_FILE, make_splits, read_splits, write_splits

PATIENTS = [f"P{i:02d}" for i in range(1, 24)]
# 8 non-responders, 12 responders, 3 unknown.
OUTCOMES: dict[str, int | None] = {p: (1 if i < 8 else 0 if i < 20 else None) for i, p in enumerate(PATIENTS)}


@pytest.mark.parametrize("n_folds", [2, 3, 5, 23])
def test_every_patient_in_exactly_one_test_fold(n_folds: int) -> None:
    splits = make_splits(PATIENTS, OUTCOMES, n_folds=n_folds, seed=3)
    flat = [p for fold in splits.folds for p in fold]
    assert sorted(flat) == sorted(PATIENTS) and len(flat) == len(set(flat))
    sizes = [len(f) for f in splits.folds]
    assert max(sizes) - min(sizes) <= 1
    for k in range(n_folds):
        assert set(splits.train(k)).isdisjoint(splits.test(k))
        assert set(splits.train(k)) | set(splits.test(k)) == set(PATIENTS)
        for p in splits.test(k):
            assert splits.fold_of(p) == k


def test_folds_are_stratified_by_non_response() -> None:
    splits = make_splits(PATIENTS, OUTCOMES, n_folds=4, seed=0)
    assert splits.stratified_by == "non_response"
    for label, total in ((1, 8), (0, 12)):
        counts = [sum(OUTCOMES[p] == label for p in fold) for fold in splits.folds]
        # Dealt per stratum: each fold holds total/k of each class, give or take one patient.
        assert sum(counts) == total and max(counts) - min(counts) <= 1, (label, counts)


def test_seeded_and_reproducible() -> None:
    a = make_splits(PATIENTS, OUTCOMES, n_folds=5, seed=7)
    assert a == make_splits(list(reversed(PATIENTS)), OUTCOMES, n_folds=5, seed=7)  # input order is irrelevant
    assert a.folds != make_splits(PATIENTS, OUTCOMES, n_folds=5, seed=8).folds


def test_without_outcomes_split_by_patient_only() -> None:
    splits = make_splits(PATIENTS, None, n_folds=5, seed=0)
    assert splits.stratified_by is None and set(splits.strata.values()) == {"unknown"}
    assert make_splits(PATIENTS, {p: None for p in PATIENTS}, n_folds=5).stratified_by is None


def test_bad_fold_counts() -> None:
    with pytest.raises(InputError, match="n_folds"):
        make_splits(PATIENTS[:3], None, n_folds=4)
    with pytest.raises(InputError, match="n_folds"):
        make_splits(PATIENTS, None, n_folds=0)
    with pytest.raises(InputError, match="no patients"):
        make_splits([], None)
    with pytest.raises(InputError, match="fold 5"):
        make_splits(PATIENTS, None, n_folds=5).test(5)


def test_write_read_round_trip_and_disjointness_check(tmp_path: Path) -> None:
    splits = make_splits(PATIENTS, OUTCOMES, n_folds=5, seed=1)
    file = write_splits(splits, tmp_path)
    assert file.name == SPLITS_FILE
    back = read_splits(tmp_path)
    assert back.folds == splits.folds and back.seed == 1 and back.stratified_by == "non_response"
    doc = json.loads(file.read_text())
    assert doc["fold_of"]["P01"] == splits.fold_of("P01")
    doc["folds"][1]["test"].append(doc["folds"][0]["test"][0])  # one patient in two test folds
    file.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="test sets of folds 0 and 1"):
        read_splits(file)


def test_load_outcomes(tmp_path: Path) -> None:
    assert load_outcomes(tmp_path) is None
    (tmp_path / "outcomes.csv").write_text(
        "patient_id,psa_baseline,psa_week12,non_response\nP01,10,2,0\nP02,10,9,1\nP03,,,\n", encoding="utf-8"
    )
    assert load_outcomes(tmp_path) == {"P01": 0, "P02": 1, "P03": None}
    (tmp_path / "outcomes.csv").write_text("patient_id,non_response\nP01,yes\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        load_outcomes(tmp_path)
