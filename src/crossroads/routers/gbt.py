"""Gradient-boosted trees on the embedding, the prompt's shape and the request's category.

Trees split on a query's category (the task it belongs to: an MMLU subject, an app's
feature) as one categorical feature, so a model's per-task strengths are learned
exactly rather than guessed from nearby embeddings.  A query without a category, or
with one not seen in training, follows each tree's branch for missing values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from crossroads.checks import check_count, check_fraction, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.routers.base import Router
from crossroads.routers.text_features import shape_features

#: scikit-learn's trees take at most 255 bins; one is kept for missing values.
MAX_CATEGORIES = 254
#: (query, tree) pairs walked at once: bounds the memory of a large batch.
BATCH_CELLS = 100_000


class GBTRouter(Router):
    """One scikit-learn ``HistGradientBoostingRegressor`` per model, from query features to recorded quality.

    Features: the embedding, the prompt-shape counts of ``ridge``, and (``categories=True``)
    the category code.  Each model is fitted on the queries where its outcome is recorded,
    with 10% of them held back for early stopping.  A ``category_dropout`` share of the
    training queries have their category hidden, so that the trees' missing-value branches
    learn to route from the text alone (without it they follow the commonest category).
    The fitted trees are saved as plain arrays and walked with numpy, so a saved router
    needs scikit-learn only to train.
    """

    name = "gbt"
    reads_text = True
    reads_category = True

    def __init__(self, max_iter: int = 300, learning_rate: float = 0.05, max_leaf_nodes: int = 15,
                 l2_regularization: float = 1.0, categories: bool = True, category_dropout: float = 0.25,
                 random_state: int = 0):
        check_count(max_iter, "gbt max_iter")
        check_positive(learning_rate, "gbt learning_rate")
        check_count(max_leaf_nodes, "gbt max_leaf_nodes", minimum=2)
        check_positive(l2_regularization, "gbt l2_regularization", allow_zero=True)
        check_fraction(category_dropout, "gbt category_dropout")
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.categories = categories
        self.category_dropout = category_dropout
        self.random_state = random_state

    def _features(self, embeddings: np.ndarray, prompts: Sequence[str], categories: Sequence[str | None] | None) -> np.ndarray:
        """The category code first (scikit-learn moves categorical columns first), then embedding and shape."""
        columns = [embeddings.astype(np.float64), shape_features(prompts)]
        if self.categories:
            code = {name: i for i, name in enumerate(self.category_names_)}
            given = categories if categories is not None else [None] * len(prompts)
            columns.insert(0, np.array([code.get(c, np.nan) for c in given], dtype=np.float64).reshape(-1, 1))
        return np.hstack(columns)

    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        counts = Counter(c for c in dataset.categories if c)
        self.category_names_ = np.array(sorted(name for name, _ in counts.most_common(MAX_CATEGORIES)), dtype=str)
        features = self._features(embeddings, dataset.prompts, dataset.categories)
        if self.categories:
            hidden = np.random.default_rng(self.random_state).random(len(features)) < self.category_dropout
            features[hidden, 0] = np.nan
        self.baseline_ = np.nan_to_num(np.nanmean(dataset.quality, axis=0), nan=0.5)
        forests = []
        for j in range(dataset.n_models):
            rows = ~np.isnan(dataset.quality[:, j])
            trees, codes = [], np.zeros(0, np.int64)
            if rows.sum() >= 2:
                fitted = HistGradientBoostingRegressor(
                    max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
                    l2_regularization=self.l2_regularization, early_stopping=True, validation_fraction=0.1,
                    random_state=self.random_state,
                    categorical_features=[0] if self.categories else None,
                ).fit(features[rows], dataset.quality[rows, j])
                self.baseline_[j] = float(np.ravel(fitted._baseline_prediction)[0])
                trees = [predictors[0] for predictors in fitted._predictors]
                if self.categories:
                    seen = fitted._preprocessor.named_transformers_["encoder"].categories_[0]
                    codes = seen[~np.isnan(seen)].astype(np.int64)
            forests.append((trees, codes))
        self.forest_ = Forest.from_sklearn(forests)

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        return self.baseline_ + self.forest_.predict(self._features(embeddings, prompts, categories))

    def _state(self) -> dict[str, np.ndarray]:
        return {"categories": self.category_names_, "baseline": self.baseline_, **self.forest_.arrays()}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.category_names_, self.baseline_ = arrays["categories"], arrays["baseline"]
        self.forest_ = Forest(**{key: arrays[key] for key in Forest.FIELDS})


def _bitset(codes) -> np.ndarray:
    """The 256-bit set (eight uint32 words, scikit-learn's layout) holding the integer ``codes``."""
    words = np.zeros(8, dtype=np.uint32)
    for code in np.asarray(codes, dtype=np.int64):
        words[code >> 5] |= np.uint32(1) << np.uint32(code & 31)
    return words


def _bit(words: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Whether ``code`` is in each bitset of ``words`` (shape ``(..., 8)``), elementwise."""
    word = np.take_along_axis(words, np.clip(code >> 5, 0, 7)[..., None], axis=-1)[..., 0]
    return ((word >> (code & 31).astype(np.uint32)) & 1).astype(bool)


class Forest:
    """Regression trees of several models as flat node arrays, evaluated for all trees at once.

    Follows scikit-learn's histogram trees: a missing value takes the node's missing
    branch; a number goes left when ``<=`` the threshold; a category goes left when its
    bit is set in the node's bitset, and takes the missing branch when the tree's model
    never saw it (``known``).  Leaf values already include the learning rate.
    """

    FIELDS = ("feature", "threshold", "left", "right", "leaf", "value", "missing_left", "categorical", "bitset",
              "bitsets", "known", "roots", "tree_model")

    def __init__(self, feature, threshold, left, right, leaf, value, missing_left, categorical, bitset, bitsets,
                 known, roots, tree_model):
        self.feature, self.threshold, self.left, self.right = feature, threshold, left, right
        self.leaf, self.value, self.missing_left, self.categorical = leaf, value, missing_left, categorical
        self.bitset, self.known, self.roots, self.tree_model = bitset, known, roots, tree_model
        self.bitsets = bitsets if len(bitsets) else np.zeros((1, 8), np.uint32)  # one row, so lookups stay in range

    @classmethod
    def from_sklearn(cls, forests: list[tuple[list, np.ndarray]]) -> Forest:
        """From one (``TreePredictor`` list, category codes) pair per model.

        The codes are the model's ``OrdinalEncoder`` categories (scikit-learn re-encodes a
        categorical column to positions among the values it saw); bitsets are mapped back
        to the codes so that every model reads the same feature matrix.
        """
        nodes, bitsets, roots, tree_model = [], [], [], []
        n_nodes = n_bitsets = 0
        for model, (trees, codes) in enumerate(forests):
            for tree in trees:
                part = tree.nodes.copy()
                part["left"] += n_nodes
                part["right"] += n_nodes
                part["bitset_idx"] = np.where(part["is_categorical"] == 1, part["bitset_idx"] + n_bitsets, 0)
                roots.append(n_nodes)
                tree_model.append(model)
                nodes.append(part)
                for words in tree.raw_left_cat_bitsets:
                    positions = np.flatnonzero(_bit(np.broadcast_to(words, (len(codes), 8)), np.arange(len(codes))))
                    bitsets.append(_bitset(codes[positions]))
                n_nodes += len(part)
                n_bitsets += len(tree.raw_left_cat_bitsets)
        known = np.array([_bitset(codes) for _, codes in forests], dtype=np.uint32).reshape(-1, 8)
        table = np.concatenate(nodes) if nodes else np.zeros(0, dtype=_NODE_DTYPE)
        return cls(
            feature=table["feature_idx"].astype(np.int32), threshold=table["num_threshold"].astype(np.float64),
            left=table["left"].astype(np.int32), right=table["right"].astype(np.int32),
            leaf=table["is_leaf"].astype(bool), value=table["value"].astype(np.float64),
            missing_left=table["missing_go_to_left"].astype(bool), categorical=table["is_categorical"].astype(bool),
            bitset=table["bitset_idx"].astype(np.int32), bitsets=np.array(bitsets, dtype=np.uint32).reshape(-1, 8),
            known=known, roots=np.array(roots, dtype=np.int32), tree_model=np.array(tree_model, dtype=np.int32),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(getattr(self, key)) for key in self.FIELDS}

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Sum of each model's tree outputs, shape ``(n_queries, n_models)``."""
        if len(self.roots) == 0:
            return np.zeros((len(features), len(self.known)))
        batch = max(1, BATCH_CELLS // len(self.roots))
        return np.vstack([self._predict_batch(features[i : i + batch]) for i in range(0, len(features), batch)]
                         or [np.zeros((0, len(self.known)))])

    def _predict_batch(self, features: np.ndarray) -> np.ndarray:
        n, n_models = len(features), len(self.known)
        rows = np.arange(n)[:, None]
        known = self.known[self.tree_model][None, :, :]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        while True:
            inner = ~self.leaf[node]
            if not inner.any():
                break
            x = features[rows, self.feature[node]]
            categorical = self.categorical[node]
            code = np.where(np.isnan(x) | ~categorical, 0, x).astype(np.int64)
            missing = np.isnan(x) | (categorical & ~_bit(known, code))
            go_left = np.where(missing, self.missing_left[node],
                               np.where(categorical, _bit(self.bitsets[self.bitset[node]], code),
                                        x <= self.threshold[node]))
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.value[node] @ np.eye(n_models)[self.tree_model]


_NODE_DTYPE = [("value", "<f8"), ("feature_idx", "<i8"), ("num_threshold", "<f8"), ("missing_go_to_left", "u1"),
               ("left", "<u4"), ("right", "<u4"), ("is_leaf", "u1"), ("is_categorical", "u1"), ("bitset_idx", "<u4")]
