"""Item-response router: query difficulty from the text, model ability from descriptors.

Item response theory, the psychometric model behind adaptive tests, fitted to recorded
LLM outcomes.  The log-odds that model m answers query q well is

    ability(m) - difficulty(q) + loading(m) . skills(q)

* ``difficulty(q)`` and the ``rank`` skill coordinates ``skills(q)`` are linear in the
  query's features (its embedding and prompt-shape counts), so they extend to queries
  and benchmarks never seen;
* ``ability(m)`` and ``loading(m)`` are linear in the model's descriptor vector (price,
  tier, size, instruction tuning, specialty, published scores: see
  :mod:`crossroads.data.descriptors`) plus a residual of its own, learned when the model
  is in the training data and shrunk toward zero by ``residual_l2``.

Datasets with different pools train one router: a model known under several names
(``mistralai/mixtral-8x7b-chat`` in RouterBench, ``Mixtral-8x7B-Instruct-v0.1`` in
MMLU-Pro) shares one residual through the catalogue.  A model the router never saw
joins with :meth:`IRTRouter.add_models`: its descriptors place it, and a few probe
outcomes, if given, fit its residual (a MAP estimate with the other parameters fixed).
Training is full-batch Adam on the binary cross-entropy of the recorded quality, each
query weighing the same whatever the size of its pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.descriptors import (
    FEATURE_GROUPS,
    ModelDescriptor,
    describe,
    feature_matrix,
    feature_names,
)
from crossroads.errors import CrossroadsError
from crossroads.routers.base import Router
from crossroads.routers.optim import Adam
from crossroads.routers.text_features import shape_features


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class IRTRouter(Router):
    name = "irt"
    reads_text = True
    open_pool = True

    def __init__(self, rank: int = 4, features: str = "price+tier", steps: int = 600,
                 learning_rate: float = 0.02, l2: float = 1e-3, residual_l2: float = 1e-3,
                 probe_prior: float = 1.0, seed: int = 0):
        check_count(rank, "irt rank", minimum=0)
        check_count(steps, "irt steps")
        check_positive(learning_rate, "irt learning_rate")
        for name, penalty in (("l2", l2), ("residual_l2", residual_l2), ("probe_prior", probe_prior)):
            check_positive(penalty, f"irt {name}", allow_zero=True)
        self.rank, self.features, self.steps = rank, features, steps
        self.learning_rate, self.l2, self.residual_l2, self.probe_prior, self.seed = (
            learning_rate, l2, residual_l2, probe_prior, seed)
        self._groups()  # unknown feature groups fail at construction

    def _groups(self) -> list[str]:
        groups = [g for g in self.features.split("+") if g]
        unknown = [g for g in groups if g not in FEATURE_GROUPS]
        if unknown or not groups:
            raise CrossroadsError(f"irt: features={self.features!r}; join some of {', '.join(FEATURE_GROUPS)} with '+'")
        return groups

    # -- features ---------------------------------------------------------------
    def _query_features(self, embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        shape = (shape_features(prompts) - self.shape_mean_) / self.shape_scale_
        return np.hstack([embeddings.astype(np.float64), shape])

    def _model_features(self, descriptors: Sequence[ModelDescriptor]) -> np.ndarray:
        return (feature_matrix(descriptors, self._groups()) - self.feature_mean_) / self.feature_scale_

    # -- training -----------------------------------------------------------------
    def _training_features(self, descriptors: Sequence[ModelDescriptor]) -> np.ndarray:
        """Raw descriptor features; a training model described by nothing gets the others' mean (its residual learns it)."""
        groups = self._groups()
        rows = []
        for d in descriptors:
            try:
                rows.append(feature_matrix([d], groups)[0])
            except CrossroadsError:
                rows.append(np.full(len(feature_names(groups)), np.nan))
        raw = np.asarray(rows)
        filler = np.nanmean(raw, axis=0) if np.isfinite(raw).any() else np.zeros(raw.shape[1])
        return np.where(np.isfinite(raw), raw, np.nan_to_num(filler))

    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        descriptors = [describe(model) for model in dataset.models]
        raw = self._training_features(descriptors)
        self.feature_mean_ = raw.mean(axis=0)
        self.feature_scale_ = np.where(raw.std(axis=0) > 1e-9, raw.std(axis=0), 1.0)
        shape = shape_features(dataset.prompts)
        self.shape_mean_ = shape.mean(axis=0)
        self.shape_scale_ = np.where(shape.std(axis=0) > 1e-9, shape.std(axis=0), 1.0)
        x = self._query_features(embeddings, dataset.prompts)
        z = (raw - self.feature_mean_) / self.feature_scale_
        keys = sorted({d.key for d in descriptors})
        column_key = np.array([keys.index(d.key) for d in descriptors])

        observed = np.isfinite(dataset.quality)
        y = np.where(observed, dataset.quality, 0.0)
        per_query = observed.sum(axis=1)
        rows = per_query > 0
        weight = np.where(observed, 1.0 / np.maximum(per_query, 1)[:, None], 0.0) / max(rows.sum(), 1)

        rng = np.random.default_rng(self.seed)
        k, d_x, d_z = self.rank, x.shape[1], z.shape[1]
        p = {
            "difficulty": np.zeros(d_x), "bias": np.zeros(1), "skills": rng.normal(0, 0.1, (d_x, k)),
            "ability": np.zeros(d_z), "loading": rng.normal(0, 0.1, (d_z, k)),
            "ability_residual": np.zeros(len(keys)), "loading_residual": np.zeros((len(keys), k)),
        }
        adam = Adam(p, lr=self.learning_rate)
        for _ in range(self.steps):
            skills = x @ p["skills"]
            ability = z @ p["ability"] + p["ability_residual"][column_key]
            loading = z @ p["loading"] + p["loading_residual"][column_key]
            logit = ability[None, :] - (x @ p["difficulty"] + p["bias"])[:, None] + skills @ loading.T
            g = weight * (_sigmoid(logit) - y)
            g_ability, g_loading = g.sum(axis=0), g.T @ skills
            g_difficulty = -g.sum(axis=1)
            adam.step({
                "difficulty": x.T @ g_difficulty + 2 * self.l2 * p["difficulty"],
                "bias": np.array([g_difficulty.sum()]),
                "skills": x.T @ (g @ loading) + 2 * self.l2 * p["skills"],
                "ability": z.T @ g_ability + 2 * self.l2 * p["ability"],
                "loading": z.T @ g_loading + 2 * self.l2 * p["loading"],
                "ability_residual": np.bincount(column_key, g_ability, len(keys))
                + 2 * self.residual_l2 * p["ability_residual"],
                "loading_residual": _sum_by(column_key, g_loading, len(keys))
                + 2 * self.residual_l2 * p["loading_residual"],
            })
        self.difficulty_, self.bias_, self.skills_ = p["difficulty"], float(p["bias"][0]), p["skills"]
        self.ability_weights_, self.loading_weights_ = p["ability"], p["loading"]
        self.residual_keys_ = keys
        self.ability_residual_, self.loading_residual_ = p["ability_residual"], p["loading_residual"]
        self.model_ability_, self.model_loading_ = self._placement(descriptors, z)

    def _placement(self, descriptors: Sequence[ModelDescriptor],
                   z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ability and loading of each model: from its descriptor vector ``z``, plus its residual if trained."""
        z = self._model_features(descriptors) if z is None else z
        ability, loading = z @ self.ability_weights_, z @ self.loading_weights_
        for j, d in enumerate(descriptors):
            if d.key in self.residual_keys_:
                r = self.residual_keys_.index(d.key)
                ability[j] += self.ability_residual_[r]
                loading[j] += self.loading_residual_[r]
        return ability, loading

    # -- new models -----------------------------------------------------------------
    def add_models(self, models: Sequence[str | ModelInfo | ModelDescriptor], probes: RoutingDataset | None = None,
                   probe_embeddings: np.ndarray | None = None) -> IRTRouter:
        """Let the pool include ``models``: placed by their descriptors, refined by ``probes``' outcomes.

        A model already in the pool is placed again (its probes, if any, refit it).
        ``probes`` holds recorded outcomes of some of these models on a few queries, with
        ``probe_embeddings`` their embeddings; each probed model's residual is the MAP
        estimate under a Gaussian prior: zero mean, and per coordinate the variance of the
        trained models' residuals (empirical Bayes), divided by ``probe_prior``.
        """
        self._check_fitted()
        descriptors = [describe(model) for model in models]
        ability, loading = self._placement(descriptors)
        if probes is not None:
            if probe_embeddings is None or len(probe_embeddings) != probes.n_queries:
                raise CrossroadsError("add_models: pass probe_embeddings, one per probe query")
            x = self._query_features(np.asarray(probe_embeddings, dtype=np.float64), probes.prompts)
            offset = -(x @ self.difficulty_ + self.bias_)
            skills = x @ self.skills_
            for j, d in enumerate(descriptors):
                if d.name not in probes.model_names:
                    continue
                y = probes.quality[:, probes.model_index(d.name)]
                seen = np.isfinite(y)
                if seen.any():
                    shift = self._probe_residual(offset[seen] + ability[j] + skills[seen] @ loading[j],
                                                 skills[seen], y[seen])
                    ability[j] += shift[0]
                    loading[j] += shift[1:]
        for j, d in enumerate(descriptors):
            if d.name in self.models_:
                column = self.models_.index(d.name)
                self.model_ability_[column], self.model_loading_[column] = ability[j], loading[j]
            else:
                self.models_.append(d.name)
                self.model_ability_ = np.append(self.model_ability_, ability[j])
                self.model_loading_ = np.vstack([self.model_loading_, loading[j]])
        return self

    def _probe_residual(self, prior_logit: np.ndarray, skills: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Newton's method for the (ability, loading) shift maximising the probes' likelihood times the prior."""
        design = np.hstack([np.ones((len(y), 1)), skills])
        shift = np.zeros(design.shape[1])
        residuals = np.hstack([self.ability_residual_[:, None], self.loading_residual_])
        spread = residuals.var(axis=0) if len(residuals) > 1 else np.ones(design.shape[1])
        precision = self.probe_prior / np.maximum(spread, 1e-4)
        for _ in range(25):
            prob = _sigmoid(prior_logit + design @ shift)
            gradient = design.T @ (prob - y) + precision * shift
            hessian = (design * (prob * (1 - prob))[:, None]).T @ design + np.diag(precision)
            step = np.linalg.solve(hessian, gradient)
            shift -= step
            if np.abs(step).max() < 1e-8:
                break
        return shift

    # -- prediction and state ---------------------------------------------------------
    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        x = self._query_features(embeddings, prompts)
        logit = (self.model_ability_[None, :] - (x @ self.difficulty_ + self.bias_)[:, None]
                 + (x @ self.skills_) @ self.model_loading_.T)
        return _sigmoid(logit)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "difficulty": self.difficulty_, "bias": np.array(self.bias_), "skills": self.skills_,
            "ability_weights": self.ability_weights_, "loading_weights": self.loading_weights_,
            "feature_mean": self.feature_mean_, "feature_scale": self.feature_scale_,
            "shape_mean": self.shape_mean_, "shape_scale": self.shape_scale_,
            "residual_keys": np.array(self.residual_keys_, dtype=str),
            "ability_residual": self.ability_residual_, "loading_residual": self.loading_residual_,
            "model_ability": self.model_ability_, "model_loading": self.model_loading_,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.difficulty_, self.bias_, self.skills_ = arrays["difficulty"], float(arrays["bias"]), arrays["skills"]
        self.ability_weights_, self.loading_weights_ = arrays["ability_weights"], arrays["loading_weights"]
        self.feature_mean_, self.feature_scale_ = arrays["feature_mean"], arrays["feature_scale"]
        self.shape_mean_, self.shape_scale_ = arrays["shape_mean"], arrays["shape_scale"]
        self.residual_keys_ = [str(key) for key in arrays["residual_keys"]]
        self.ability_residual_, self.loading_residual_ = arrays["ability_residual"], arrays["loading_residual"]
        self.model_ability_ = arrays["model_ability"]
        self.model_loading_ = arrays["model_loading"].reshape(len(self.models_), self.rank)


def _sum_by(index: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, rows.shape[1]))
    np.add.at(out, index, rows)
    return out
