"""A logged (partial feedback) dataset simulated from a full one: what a server with a route would have recorded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from crossroads.data.dataset import RoutingDataset


def explore_probabilities(choice: np.ndarray, m: int, explore: float) -> np.ndarray:
    """A route choosing ``choice[i]`` with ``explore`` of its requests drawn uniformly: each model's probability, (n, m)."""
    probabilities = np.full((len(choice), m), explore / m)
    probabilities[np.arange(len(choice)), choice] += 1.0 - explore
    return probabilities


def simulate_log(full: RoutingDataset, probabilities: np.ndarray, rng: np.random.Generator,
                 shadow: float = 0.02, drop_propensity: float = 0.0) -> RoutingDataset:
    """``full`` as a log: per query one model drawn from ``probabilities`` (n, m) is served and its outcome kept;
    on a share ``shadow`` of queries one other model drawn uniformly is also observed; every other cell is NaN.

    ``drop_propensity`` of the rows lose their logged propensity (NaN), as a route that logs none.
    """
    n, m = full.quality.shape
    served = (rng.random((n, 1)) > np.cumsum(probabilities, axis=1)).sum(axis=1).clip(0, m - 1)
    keep = np.zeros((n, m), dtype=bool)
    keep[np.arange(n), served] = True
    for i in np.flatnonzero(rng.random(n) < shadow):
        others = [j for j in range(m) if j != served[i]]
        keep[i, others[int(rng.integers(len(others)))]] = True
    propensity = probabilities[np.arange(n), served].copy()
    propensity[rng.random(n) < drop_propensity] = np.nan
    return replace(full, quality=np.where(keep, full.quality, np.nan), cost_usd=np.where(keep, full.cost_usd, np.nan),
                   served=served, propensity=propensity)
