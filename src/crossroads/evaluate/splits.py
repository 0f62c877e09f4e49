"""The splits that keep training and test queries apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from crossroads.errors import CrossroadsError


def kfold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Test indices of ``folds`` folds of a seeded shuffle of ``range(n)``."""
    if folds < 2 or folds > n:
        raise CrossroadsError(f"--cv {folds}: need 2 <= K <= number of queries ({n})")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


@dataclass
class Split:
    train: np.ndarray
    test: np.ndarray


def cross_validation_splits(n: int, folds: int, seed: int = 0) -> Iterator[Split]:
    everything = np.arange(n)
    for test in kfold_indices(n, folds, seed):
        yield Split(np.setdiff1d(everything, test), test)
