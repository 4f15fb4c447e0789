"""Deterministic, patient-disjoint train/validate/test splits.

A patient's split depends only on a hash of ``salt``, its source and its patient id, never on the other
patients: adding or removing patients leaves everyone else in place, and every machine computes the
same split. Patients known to be the same person (e.g. one image listed under two ids) can be linked
so that they always share a split.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from codixr.data.records import Study
from codixr.errors import InputError

DEFAULT_SALT = "codixr"


def hash_fraction(key: str, salt: str = DEFAULT_SALT) -> float:
    """A number in [0, 1) that is a fixed, uniformly spread function of ``salt`` and ``key``."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_fractions(validate_fraction: float, test_fraction: float) -> None:
    """Raise InputError unless both fractions are in [0, 1) and sum to less than 1."""
    if not (0.0 <= validate_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and validate_fraction + test_fraction < 1.0):
        raise InputError(
            f"Split fractions must be in [0, 1) and leave some training data: got validate_fraction="
            f"{validate_fraction}, test_fraction={test_fraction}."
        )


def split_for_key(key: str, validate_fraction: float = 0.1, test_fraction: float = 0.0, salt: str = DEFAULT_SALT) -> str:
    """"test" for the first ``test_fraction`` of the hash range, then "validate", else "train"."""
    check_fractions(validate_fraction, test_fraction)
    u = hash_fraction(key, salt)
    if u < test_fraction:
        return "test"
    if u < test_fraction + validate_fraction:
        return "validate"
    return "train"


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_splits(
    studies: Iterable[Study],
    validate_fraction: float = 0.1,
    test_fraction: float = 0.0,
    salt: str = DEFAULT_SALT,
    linked: Iterable[tuple[str, str]] = (),
) -> None:
    """Set ``study.split`` in place, patient-disjoint, from a hash of ``source/patient_id``.

    ``linked`` pairs of ``source/patient_id`` keys are put in the same split (the group is hashed by
    its smallest key).
    """
    check_fractions(validate_fraction, test_fraction)
    groups = _UnionFind()
    for a, b in linked:
        groups.union(a, b)
    for study in studies:
        key = groups.find(f"{study.source}/{study.patient_id}")
        study.split = split_for_key(key, validate_fraction, test_fraction, salt)


def patient_overlap(studies: Iterable[Study]) -> dict[tuple[str, str], set[str]]:
    """Patients (source, patient_id) that occur in more than one split, with their splits (empty when disjoint)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for study in studies:
        seen.setdefault((study.source, study.patient_id), set()).add(study.split)
    return {key: splits for key, splits in seen.items() if len(splits) > 1}
