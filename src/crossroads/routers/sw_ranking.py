"""RouteLLM's similarity-weighted (SW) ranking router, for any number of models.

For a new query, every training battle is weighted by how similar its query is to
the new one, and a weighted Bradley-Terry model is fitted to those battles; the
ratings give P(a beats b) = sigmoid(r_a - r_b) for every pair of the pool.  As in
RouteLLM (``routers.py``, ``similarity_weighted/utils.py``) the weight of a training
query with cosine similarity ``sim`` is ``gamma * gamma ** (sim / max_sim)``, where
``max_sim`` is the largest similarity to any training query (``gamma`` = 10 there),
and ties count half a win for each side.  RouteLLM grouped its 64 arena models into
10 tiers before fitting; here every model of the pool is its own tier.

The router learns nothing up front: it keeps the training embeddings (float16) and
each training query's battle outcomes (int8), and fits one small Bradley-Terry model
per new query, vectorised over a batch: the weighted win counts of every pair are a
single matrix product ``weights @ per-query wins``.
"""

from __future__ import annotations

import numpy as np

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.routers.base import Router
from crossroads.routers.comparisons import (
    bradley_terry,
    decode_outcomes,
    encode_outcomes,
    mean_quality_per_query,
    pair_outcomes,
    quality_from_win_probabilities,
    win_tensor,
)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class SWRankingRouter(Router):
    """Similarity-weighted Bradley-Terry ranking of the pool, refitted for each query.

    ``predict`` gives quality_a = level + (1/m) sum_b (2 P(a beats b) - 1), where
    level is the similarity-weighted mean recorded quality of the training queries:
    the predicted qualities average to the level and their differences are the
    expected quality differences implied by the win probabilities (see
    ``comparisons.quality_from_win_probabilities``).

    ``gamma``: base of the similarity weights (RouteLLM: 10); ``top_k``: keep only the
    k most similar training queries (None: all, as RouteLLM); ``tie_weight``: weight
    of a tie against a decisive battle (1: RouteLLM, 0: drop ties); ``l2``: Gaussian
    prior on ratings, in units where the average training query weighs 1 (keeps
    ratings finite when a model never loses; RouteLLM used none); ``num_iters``:
    Newton iterations; ``batch_size``: new queries per similarity block.

    >>> from crossroads.data.dataset import ModelInfo, RoutingDataset
    >>> emb = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> data = RoutingDataset(list("wxyz"), list("wxyz"), ["c"] * 4, ["s"] * 4,
    ...                       [ModelInfo("a"), ModelInfo("b")], [[1, 0], [1, 0], [0, 1], [0, 1]], np.ones((4, 2)))
    >>> router = SWRankingRouter().fit(data, emb)
    >>> router.predict([[1.0, 0.05], [0.05, 1.0]]).argmax(axis=1)
    array([0, 1])
    """

    name = "sw_ranking"

    def __init__(self, gamma: float = 10.0, top_k: int | None = None, tie_weight: float = 1.0,
                 l2: float = 1e-2, num_iters: int = 30, batch_size: int = 256):
        check_positive(gamma, "sw_ranking gamma", allow_zero=True)
        if top_k is not None:
            check_count(top_k, "sw_ranking top_k")
        check_positive(tie_weight, "sw_ranking tie_weight", allow_zero=True)
        check_positive(l2, "sw_ranking l2", allow_zero=True)
        check_count(num_iters, "sw_ranking num_iters")
        check_count(batch_size, "sw_ranking batch_size")
        self.gamma = gamma
        self.top_k = top_k
        self.tie_weight = tie_weight
        self.l2 = l2
        self.num_iters = num_iters
        self.batch_size = batch_size

    # -- learning: keep the battles ------------------------------------------------
    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        levels = mean_quality_per_query(dataset.quality)
        keep = ~np.isnan(levels)
        if not keep.any():
            raise CrossroadsError("the dataset records no outcome at all: nothing to rank the models on")
        self.embeddings_ = _unit_rows(embeddings[keep]).astype(np.float16)
        self.outcomes_ = encode_outcomes(pair_outcomes(dataset.quality[keep]))
        self.levels_ = levels[keep].astype(np.float32)
        self._prepare()

    def _prepare(self) -> None:
        """Working copies of the stored state, in the shapes prediction multiplies."""
        m = len(self.models_)
        self._train_unit = self.embeddings_.astype(np.float32)
        wins = win_tensor(decode_outcomes(self.outcomes_), m, self.tie_weight)
        self._train_wins = wins.reshape(len(wins), m * m)

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings_, "outcomes": self.outcomes_, "levels": self.levels_}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.embeddings_, self.outcomes_, self.levels_ = arrays["embeddings"], arrays["outcomes"], arrays["levels"]
        self._prepare()

    # -- prediction: one weighted Bradley-Terry fit per query -----------------------
    def similarity_weights(self, similarities: np.ndarray) -> np.ndarray:
        """RouteLLM's ``gamma * gamma ** (sim / max_sim)`` per row, zero outside the ``top_k``."""
        max_sim = similarities.max(axis=1, keepdims=True)
        ratio = np.where(max_sim > 0, similarities / np.where(max_sim > 0, max_sim, 1.0), 0.0)
        weights = self.gamma * np.power(np.float32(self.gamma), ratio, dtype=np.float32)
        if self.top_k is not None and self.top_k < similarities.shape[1]:
            drop = np.argpartition(-similarities, self.top_k, axis=1)[:, self.top_k:]
            np.put_along_axis(weights, drop, 0.0, axis=1)
        return weights

    def ratings(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bradley-Terry ratings (natural log-odds units) per query and model, and the quality level per query."""
        self._check_fitted()
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if embeddings.shape[1] != self._train_unit.shape[1]:
            raise CrossroadsError(
                f"embeddings have {embeddings.shape[1]} dimensions, the router was trained on "
                f"{self._train_unit.shape[1]} (embedder {self.embedder_ or 'unknown'}): embed with the same model"
            )
        m = len(self.models_)
        ratings = np.zeros((len(embeddings), m))
        levels = np.zeros(len(embeddings))
        for start in range(0, len(embeddings), self.batch_size):
            block = slice(start, start + self.batch_size)
            weights = self.similarity_weights(_unit_rows(embeddings[block]) @ self._train_unit.T)
            total = weights.sum(axis=1, dtype=np.float64)
            # Rescale so the average kept training query weighs 1: l2 is then in battle units.
            kept = min(self.top_k or len(self._train_unit), len(self._train_unit))
            counts = (weights @ self._train_wins).astype(np.float64) * (kept / total)[:, None]
            ratings[block] = bradley_terry(counts.reshape(-1, m, m), l2=self.l2, num_iters=self.num_iters)
            levels[block] = (weights @ self.levels_).astype(np.float64) / total
        return ratings, levels

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        ratings, levels = self.ratings(embeddings)
        win_prob = 1.0 / (1.0 + np.exp(-(ratings[:, :, None] - ratings[:, None, :])))
        return quality_from_win_probabilities(win_prob, levels)

    def _pair_logit(self, embeddings: np.ndarray, a: int, b: int) -> np.ndarray:
        ratings, _ = self.ratings(embeddings)
        return ratings[:, a] - ratings[:, b]
