"""Ridge regression on what a prompt says and how it is shaped: TF-IDF n-grams, the embedding, shape counts."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.routers.base import Router
from crossroads.routers.text_features import TfidfVocabulary, shape_features


class RidgeRouter(Router):
    """One ridge regression per model from prompt features to recorded quality.

    Embeddings capture topic; word n-grams and shape counts (length, numbers) capture the
    difficulty cues that decide whether a cheap model's answer holds up.  Each model is
    fitted on the queries where its outcome is recorded.  ``alpha`` is the L2 penalty.
    """

    name = "ridge"
    reads_text = True

    def __init__(self, alpha: float = 10.0, min_df: int = 2, max_terms: int = 50_000):
        check_positive(alpha, "ridge alpha")
        check_count(min_df, "ridge min_df")
        check_count(max_terms, "ridge max_terms")
        self.alpha = alpha
        self.min_df = min_df
        self.max_terms = max_terms

    def _features(self, embeddings: np.ndarray, prompts) -> sparse.csr_matrix:
        return sparse.hstack(
            [self.vocabulary_.transform(prompts), sparse.csr_matrix(embeddings), sparse.csr_matrix(shape_features(prompts))]
        ).tocsr()

    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        from sklearn.linear_model import Ridge

        self.vocabulary_ = TfidfVocabulary.fit(dataset.prompts, self.min_df, self.max_terms)
        features = self._features(embeddings, dataset.prompts)
        self.coef_ = np.zeros((dataset.n_models, features.shape[1]), dtype=np.float32)
        self.intercept_ = np.nan_to_num(np.nanmean(dataset.quality, axis=0), nan=0.5)
        for j in range(dataset.n_models):
            rows = ~np.isnan(dataset.quality[:, j])
            if rows.sum() >= 2:
                fitted = Ridge(alpha=self.alpha).fit(features[rows], dataset.quality[rows, j])
                self.coef_[j], self.intercept_[j] = fitted.coef_, fitted.intercept_

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        return np.asarray(self._features(embeddings, prompts) @ self.coef_.T.astype(np.float64)) + self.intercept_

    def _state(self) -> dict[str, np.ndarray]:
        return {"terms": self.vocabulary_.terms, "idf": self.vocabulary_.idf, "coef": self.coef_,
                "intercept": self.intercept_}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.vocabulary_ = TfidfVocabulary(arrays["terms"], arrays["idf"])
        self.coef_, self.intercept_ = arrays["coef"], arrays["intercept"]
