"""The embedder interface: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np


class Embedder(ABC):
    """Turns texts into unit-length vectors.

    ``name`` identifies the model and its settings; the disk cache keys on it, so two
    embedders that could give different vectors must have different names.
    """

    name: str
    dimension: int

    @abstractmethod
    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Return an ``(len(texts), dimension)`` float32 array of unit vectors.

        With ``progress`` a progress bar is shown on standard error for long inputs.
        """


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
