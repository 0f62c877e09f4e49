"""Router specs and the splits that keep training and test queries apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.routers import make_router


@dataclass(frozen=True)
class RouterSpec:
    """A router name with hyper-parameters, written ``name`` or ``name:key=value,key=value``."""

    name: str
    params: tuple[tuple[str, object], ...] = ()

    @classmethod
    def parse(cls, text: str) -> RouterSpec:
        name, _, rest = text.partition(":")
        params = []
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise CrossroadsError(f"router option {item!r} in {text!r}: expected key=value, e.g. knn:k=100")
            params.append((key.strip(), _parse_value(value.strip())))
        return cls(name.strip(), tuple(params))

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    def build(self, **defaults):
        return make_router(self.name, **{**defaults, **dict(self.params)})


def _parse_value(value: str) -> object:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


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
