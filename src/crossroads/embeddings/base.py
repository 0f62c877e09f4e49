"""The embedder interface: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


#: Below this many texts no progress bar is shown, even when asked for.
PROGRESS_MIN_TEXTS = 256


class Embedder(ABC):
    """Turns texts into unit-length vectors.

    ``name`` identifies the model and its settings; the disk cache keys on it, so two
    embedders that could give different vectors must have different names.  ``embed``
    checks its input and calls the ``_embed`` hook with a non-empty list.
    """

    name: str
    dimension: int

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Return an ``(len(texts), dimension)`` float32 array of unit vectors.

        With ``progress`` a progress bar is shown on standard error for long inputs.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str: wrap it in a list")
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        return self._embed(texts, progress and len(texts) > PROGRESS_MIN_TEXTS)

    @abstractmethod
    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        """The vectors of ``texts`` (at least one); ``progress``: show a bar, the input is long."""


def tracked(steps: Iterable[T], progress: bool) -> Iterable[T]:
    """``steps`` behind a transient progress bar on standard error when ``progress``."""
    if not progress:
        return steps
    from rich.console import Console
    from rich.progress import track

    return track(steps, description="embedding", console=Console(stderr=True), transient=True)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
