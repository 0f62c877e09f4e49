"""A grader of meaning: the cosine similarity of a response's and a reference's embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossroads.errors import CrossroadsError
from crossroads.grading.scorers import Scorer

if TYPE_CHECKING:
    from crossroads.embeddings.base import Embedder


class EmbeddingSimilarity(Scorer):
    """Cosine similarity of the response's and the reference's embeddings, mapped to [0, 1].

    The map is ``max(0, (cos - floor) / (1 - floor))``: with the default ``floor=0``
    negative similarities count as 0 and positive ones as themselves.  The embedder's
    vectors are unit length, so the cosine is their dot product.  Similarity measures
    closeness of meaning, not correctness: "18 dollars" and "81 dollars" are close.
    ``embedder=None`` uses ``crossroads.embeddings.make_embedder()`` (offline MiniLM),
    loaded on first use.
    """

    name = "embedding"

    def __init__(self, embedder: Embedder | None = None, *, floor: float = 0.0):
        if not -1.0 <= floor < 1.0:
            raise CrossroadsError(f"floor must lie in [-1, 1), got {floor!r}")
        self.embedder = embedder
        self.floor = floor

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            from crossroads.embeddings import make_embedder

            self.embedder = make_embedder()
        return self.embedder

    def _score(self, response: str, reference: str | None, question: str | None) -> float:
        return float(self.score_many([response], [reference])[0])

    def score_many(self, responses, references=None, questions=None):  # type: ignore[override]
        """All pairs embedded in one batch: much faster than scoring them one by one."""
        import numpy as np

        responses, references = list(responses), list(references or [])
        if len(references) != len(responses):
            raise CrossroadsError(f"score_many got {len(responses)} responses and {len(references)} references")
        for text in (*responses, *references):
            if not isinstance(text, str):
                raise CrossroadsError(f"embedding similarity needs texts, got {type(text).__name__}")
        if not responses:
            return np.zeros(0)
        vectors = self._embedder().embed(responses + references)
        n = len(responses)
        cosine = np.einsum("ij,ij->i", vectors[:n].astype(np.float64), vectors[n:].astype(np.float64))
        return np.clip((cosine - self.floor) / (1.0 - self.floor), 0.0, 1.0)
