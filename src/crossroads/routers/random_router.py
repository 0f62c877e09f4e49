"""The random baseline: every model gets an independent uniform score per query."""

from __future__ import annotations

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.routers.base import Router


class RandomRouter(Router):
    """Scores drawn uniformly at random; ``random_state`` makes them repeatable.

    >>> import numpy as np
    >>> from crossroads.data.dataset import ModelInfo, RoutingDataset
    >>> data = RoutingDataset(["q"], ["hi"], ["c"], ["s"], [ModelInfo("a"), ModelInfo("b")], [[1, 0]], [[1, 1]])
    >>> RandomRouter(random_state=0).fit(data, np.ones((1, 4))).predict(np.ones((3, 4))).shape
    (3, 2)
    """

    name = "random"

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        pass

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        rng = np.random.default_rng(self.random_state)
        return rng.random((len(embeddings), len(self.models_)))

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        pass
