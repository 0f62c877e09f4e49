"""The embedder interface: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


#: Below this many texts no progress bar is shown, even when asked for.
PROGRESS_MIN_TEXTS = 256
#: Characters read per token an embedder keeps, a generous bound: English averages about 4.5 characters a
#: token, so the tokens a model keeps come from far fewer characters and cutting there changes no vector of
#: ordinary text, while a 1 MB prompt is no longer tokenized whole (0.9 s with MiniLM) to keep 256 tokens.
CHARS_PER_TOKEN_BOUND = 16


class Embedder(ABC):
    """Turns texts into unit-length vectors.

    ``name`` identifies the model and its settings; the disk cache keys on it, so two
    embedders that could give different vectors must have different names.  ``embed``
    checks its input and calls the ``_embed`` hook with a non-empty list.
    """

    name: str
    dimension: int
    #: Texts are cut to this many characters before tokenizing (None: not cut); see ``CHARS_PER_TOKEN_BOUND``.
    max_chars: int | None = None

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Return an ``(len(texts), dimension)`` float32 array of unit vectors.

        With ``progress`` a progress bar is shown on standard error for long inputs.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str: wrap it in a list")
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        if self.max_chars is not None:
            texts = [text[: self.max_chars] for text in texts]
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
