"""Patient-level k-fold splits stratified by outcome, written as ``splits.json`` (docs/architecture.md "Data formats").

Every step that learns from a cohort (population baselines, training) reads the same file, so that no patient's
cycles ever sit on both sides of a split. Folds are dealt per stratum (``non_response`` = 0, 1, unknown): the
patients of each stratum are shuffled with the seed and dealt round-robin, the dealing position carried from one
stratum to the next, so fold sizes differ by at most one and each fold's share of non-responders differs from the
cohort's by at most one patient's worth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text

__all__ = [
    "SPLITS_FILE",
    "SPLITS_VERSION",
    "Splits",
    "make_splits",
    "read_splits",
    "write_splits",
]

SPLITS_FILE = "splits.json"
SPLITS_VERSION = 1
_UNKNOWN = "unknown"


@dataclass(frozen=True)
class Splits:
    """Patient-level folds.

    Attributes:
        folds: fold k → its test patients (sorted); a patient is in exactly one.
        n_folds, seed: how they were made.
        stratified_by: ``"non_response"`` or None (patients only).
        strata: patient → stratum (``"0"``, ``"1"`` or ``"unknown"``).
    """

    folds: tuple[tuple[str, ...], ...]
    n_folds: int
    seed: int
    stratified_by: str | None
    strata: Mapping[str, str]

    @property
    def patients(self) -> tuple[str, ...]:
        """Every patient, sorted."""
        return tuple(sorted(p for fold in self.folds for p in fold))

    def fold_of(self, patient_id: str) -> int:
        """The fold whose test set holds this patient."""
        for k, fold in enumerate(self.folds):
            if patient_id in fold:
                return k
        raise InputError(f"patient {patient_id!r} is in no fold of these splits")

    def test(self, fold: int) -> tuple[str, ...]:
        """Test patients of one fold."""
        self._check_fold(fold)
        return self.folds[fold]

    def train(self, fold: int) -> tuple[str, ...]:
        """Training patients of one fold: everybody not in its test set."""
        self._check_fold(fold)
        return tuple(sorted(p for k, f in enumerate(self.folds) if k != fold for p in f))

    def _check_fold(self, fold: int) -> None:
        if not 0 <= fold < self.n_folds:
            raise InputError(f"fold {fold} does not exist; folds are 0 … {self.n_folds - 1}")

    def to_dict(self) -> dict[str, Any]:
        """The ``splits.json`` document."""
        return {
            "format_version": SPLITS_VERSION,
            "n_folds": self.n_folds,
            "seed": self.seed,
            "stratified_by": self.stratified_by,
            "folds": [
                {"fold": k, "test": list(fold), "train": list(self.train(k))} for k, fold in enumerate(self.folds)
            ],
            "fold_of": {p: self.fold_of(p) for p in self.patients},
            "strata": dict(sorted(self.strata.items())),
        }


def make_splits(
    patient_ids: Sequence[str],
    outcomes: Mapping[str, int | None] | None = None,
    *,
    n_folds: int = 5,
    seed: int = 0,
) -> Splits:
    """Deal patients into `n_folds` test folds, stratified by ``non_response`` where known.

    Args:
        patient_ids: the cohort's patients (duplicates are counted once).
        outcomes: patient → non_response (0/1, None when unknown); None or empty: stratify by patient only.
        n_folds: number of folds, 1 ≤ n_folds ≤ number of patients.
        seed: shuffling seed (same inputs and seed → same folds).
    """
    patients = sorted(set(patient_ids))
    if not patients:
        raise InputError("no patients to split")
    if not 1 <= n_folds <= len(patients):
        raise InputError(f"n_folds={n_folds} must be between 1 and the number of patients ({len(patients)})")
    known = {p: outcomes.get(p) for p in patients} if outcomes else {}
    stratified = any(v is not None for v in known.values())
    strata = {p: (str(int(v)) if (v := known.get(p)) is not None else _UNKNOWN) for p in patients}
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    position = int(rng.integers(n_folds))
    for stratum in ("0", "1", _UNKNOWN):
        members = [p for p in patients if strata[p] == stratum]
        for p in (members[i] for i in rng.permutation(len(members))):
            folds[position % n_folds].append(p)
            position += 1
    return Splits(
        folds=tuple(tuple(sorted(f)) for f in folds),
        n_folds=n_folds,
        seed=seed,
        stratified_by="non_response" if stratified else None,
        strata=strata if stratified else {p: _UNKNOWN for p in patients},
    )


def write_splits(splits: Splits, path: str | Path) -> Path:
    """Write ``splits.json`` atomically (`path`: the file or its folder)."""
    file = Path(path)
    if file.is_dir():
        file = file / SPLITS_FILE
    return atomic_write_text(file, json.dumps(splits.to_dict(), indent=1) + "\n")


def read_splits(path: str | Path) -> Splits:
    """Read ``splits.json`` (the file or its folder) and check that the folds are disjoint."""
    file = Path(path)
    if file.is_dir():
        file = file / SPLITS_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        folds = tuple(tuple(str(p) for p in f["test"]) for f in data["folds"])
        n_folds, seed = int(data["n_folds"]), int(data["seed"])
    except FileNotFoundError as err:
        raise InputError(f"{file} not found; `ludl prepare` writes it") from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{file}: not a valid splits file ({err}); rerun `ludl prepare`") from err
    seen: dict[str, int] = {}
    for k, fold in enumerate(folds):
        for p in fold:
            if p in seen:
                raise InputError(f"{file}: patient {p!r} is in the test sets of folds {seen[p]} and {k}")
            seen[p] = k
    if len(folds) != n_folds:
        raise InputError(f"{file}: n_folds is {n_folds} but {len(folds)} folds are listed")
    strata = {str(k): str(v) for k, v in (data.get("strata") or {}).items()}
    return Splits(folds=folds, n_folds=n_folds, seed=seed, stratified_by=data.get("stratified_by"), strata=strata)
