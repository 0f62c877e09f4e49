"""An ensemble: the mean of several routers' predicted quality."""

from __future__ import annotations

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.routers.base import Router


class EnsembleRouter(Router):
    """Averages the predicted quality of its ``members`` (router names joined by ``+``, default parameters).

    Neighbours (``knn``) see which topics a model handles; ``ridge`` reads difficulty cues in the
    wording.  Their errors differ, so the mean ranks queries better than either alone.
    """

    name = "ensemble"

    def __init__(self, members: str = "knn+ridge"):
        from crossroads.routers import ROUTERS

        self.members = members
        names = [name for name in members.split("+") if name]
        if not names or "ensemble" in names:
            raise CrossroadsError(f"ensemble members {members!r}: give router names joined by '+', e.g. knn+ridge")
        self._classes = [ROUTERS.load(name) for name in names]
        self.reads_text = any(cls.reads_text for cls in self._classes)
        self.reads_category = any(cls.reads_category for cls in self._classes)

    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        self.members_ = [cls().fit(dataset, embeddings, self.embedder_) for cls in self._classes]

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        return np.mean([member.predict(embeddings, prompts, categories) for member in self.members_], axis=0)

    def _state(self) -> dict[str, np.ndarray]:
        return {f"{i}.{key}": value for i, member in enumerate(self.members_) for key, value in member._state().items()}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.members_ = []
        for i, cls in enumerate(self._classes):
            member = cls()
            member.models_, member.embedder_ = self.models_, self.embedder_
            prefix = f"{i}."
            member._restore({key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)})
            self.members_.append(member)
