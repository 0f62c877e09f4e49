"""k-nearest-neighbours: a model's predicted quality is its mean outcome on the most similar training queries."""

from __future__ import annotations

import numpy as np

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.routers.base import Router


def masked_mean(weights: np.ndarray, quality: np.ndarray, prior: np.ndarray, prior_weight: float) -> np.ndarray:
    """Weighted mean of ``quality`` (k, m or n, k, m with NaN missing), shrunk towards ``prior``."""
    observed = ~np.isnan(quality)
    values = np.where(observed, quality, 0.0)
    total = np.einsum("...k,...km->...m", weights, values) + prior_weight * prior
    mass = np.einsum("...k,...km->...m", weights, observed.astype(np.float64)) + prior_weight
    return total / mass


class KNNRouter(Router):
    """Averages the recorded quality of the ``k`` training queries closest in embedding space.

    Missing outcomes are skipped; each model's mean is shrunk towards its global mean
    with ``prior_weight`` pseudo-observations so sparse neighbourhoods stay sensible.
    ``temperature`` > 0 weights neighbours by ``exp(similarity / temperature)``; 0 weighs them equally.
    """

    name = "knn"

    def __init__(self, k: int = 100, temperature: float = 0.0, prior_weight: float = 1.0, batch_size: int = 1024):
        check_count(k, "knn k")
        check_positive(temperature, "knn temperature", allow_zero=True)
        check_positive(prior_weight, "knn prior_weight", allow_zero=True)
        check_count(batch_size, "knn batch_size")
        self.k = k
        self.temperature = temperature
        self.prior_weight = prior_weight
        self.batch_size = batch_size

    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        self.embeddings_ = embeddings.astype(np.float16).astype(np.float32)  # as saved, so a reload predicts the same
        self.quality_ = dataset.quality.astype(np.float32)
        self.prior_ = np.nan_to_num(np.nanmean(dataset.quality, axis=0), nan=0.5)

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        train = self.embeddings_
        k = min(self.k, len(train))
        out = np.empty((len(embeddings), self.quality_.shape[1]))
        for start in range(0, len(embeddings), self.batch_size):
            sims = embeddings[start : start + self.batch_size] @ train.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            near_sims = np.take_along_axis(sims, nearest, axis=1)
            if self.temperature > 0:
                weights = np.exp((near_sims - near_sims.max(axis=1, keepdims=True)) / self.temperature)
            else:
                weights = np.ones_like(near_sims)
            out[start : start + len(sims)] = masked_mean(
                weights.astype(np.float64), self.quality_[nearest].astype(np.float64), self.prior_, self.prior_weight
            )
        return out

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings_.astype(np.float16), "quality": self.quality_, "prior": self.prior_}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.embeddings_ = arrays["embeddings"].astype(np.float32)
        self.quality_, self.prior_ = arrays["quality"], arrays["prior"]
