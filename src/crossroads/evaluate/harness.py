"""The evaluation harness: replay recorded outcomes and score routers, baselines and the oracle.

Every router is judged on predictions for queries it did not train on (K-fold
cross-validation by query, or a separate test set).  Decisions need an expected cost
per query and model: :class:`crossroads.objective.cost.ExpectedCost` fitted on the
training queries' recorded costs.  Routers are named by specs (``knn:k=100``, see
:data:`crossroads.routers.ROUTERS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.evaluate import metrics
from crossroads.evaluate.splits import Split, cross_validation_splits
from crossroads.objective.cost import ExpectedCost, prompt_tokens
from crossroads.registry import Spec
from crossroads.routers import ROUTERS

RANDOM_SEEDS = 10


@dataclass
class Entry:
    """One router, baseline or the oracle: its metrics and the curves to plot."""

    name: str
    kind: str  # "router", "random", "model" or "oracle"
    metrics: dict[str, float] = field(default_factory=dict)
    strong_weak_curve: metrics.StrongWeakCurve | None = None
    cost_curve: metrics.CostQualityPoints | None = None

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind, **{k: _json_float(v) for k, v in self.metrics.items()}}
        if self.strong_weak_curve is not None:
            out["strong_weak_curve"] = {
                "strong_share": self.strong_weak_curve.strong_share.tolist(),
                "quality": self.strong_weak_curve.quality.tolist(),
            }
        if self.cost_curve is not None:
            out["cost_curve"] = {
                "mean_cost_usd": self.cost_curve.mean_cost_usd.tolist(),
                "mean_quality": self.cost_curve.mean_quality.tolist(),
            }
        return out


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


@dataclass
class Evaluation:
    """The entries of one run, with what they were measured on."""

    test: RoutingDataset
    pair: tuple[str, str] | None
    entries: list[Entry]
    setup: dict

    def to_json(self) -> dict:
        return {
            "setup": self.setup,
            "pair": {"strong": self.pair[0], "weak": self.pair[1]} if self.pair else None,
            "entries": {entry.name.lower(): entry.to_json() for entry in self.entries},
        }


def default_pair(dataset: RoutingDataset, strong: str | None, weak: str | None) -> tuple[str, str] | None:
    """The strong/weak pair: as given, or for a 2-model pool the better model on average as strong."""
    if strong or weak:
        if not (strong and weak):
            raise CrossroadsError("give both --strong and --weak, or neither")
        dataset.model_index(strong), dataset.model_index(weak)
        if strong == weak:
            raise CrossroadsError(f"--strong and --weak are both {strong!r}: name two different models")
        return strong, weak
    if dataset.n_models != 2:
        return None
    means = np.nanmean(dataset.quality, axis=0)
    first, second = dataset.model_names
    return (first, second) if means[0] >= means[1] else (second, first)


def evaluate(
    specs: Sequence[str | Spec],
    dataset: RoutingDataset,
    embeddings: np.ndarray,
    *,
    folds: int | None = 5,
    test: tuple[RoutingDataset, np.ndarray] | None = None,
    pair: tuple[str, str] | None = None,
    seed: int = 0,
    embedder: str = "",
    on_step: Callable[[str], None] | None = None,
    probes: tuple[RoutingDataset, np.ndarray] | None = None,
) -> Evaluation:
    """Score each router in ``specs`` and the baselines.

    With ``test=None`` the routers are cross-validated with ``folds`` folds over
    ``dataset``; otherwise they train on ``dataset`` and are scored on ``test``
    (models the training pool lacks are placed by their descriptors, which only
    routers with ``open_pool`` can do; ``probes``, queries with those models'
    outcomes and their embeddings, refine the placement).
    """
    specs = [ROUTERS.spec(spec) for spec in specs]
    if test is None:
        test_data, test_emb = dataset, embeddings
        splits = list(cross_validation_splits(dataset.n_queries, folds or 5, seed))
        tokens = prompt_tokens(dataset.prompts, dataset.full_prompts)
        expected_cost = np.empty_like(dataset.cost_usd)
        for split in splits:
            model = ExpectedCost.fit(tokens[split.train], dataset.cost_usd[split.train])
            expected_cost[split.test] = model.predict(tokens[split.test])
    else:
        test_data, test_emb = test
        missing = [m for m in test_data.model_names if m not in dataset.model_names]
        closed = [spec.label for spec in specs if not ROUTERS.load(spec.name).open_pool]
        if missing and closed:
            raise CrossroadsError(
                f"the test set has models the training set lacks: {', '.join(missing)}; routers "
                f"{', '.join(closed)} predict only for models they trained on: evaluate on the shared models with "
                "--models, or use the irt router, which places new models by their descriptors"
            )
        expected_cost = expected_costs(dataset, test_data)
    scorer = _Scorer(test_data, expected_cost, pair)
    entries: list[Entry] = []
    for spec in specs:
        if test is None:
            quality, win = cross_validated_predictions(spec, dataset, embeddings, splits, pair, embedder, on_step)
        else:
            quality, win = held_out_predictions(spec, dataset, embeddings, test_data, test_emb, pair, embedder, on_step,
                                                probes)
        entries.append(scorer.score(spec.label, "router", quality, win))
    entries.append(scorer.random(seeds=RANDOM_SEEDS, seed=seed))
    entries.extend(scorer.single_models())
    entries.append(scorer.oracle())
    setup = {
        "queries": test_data.n_queries,
        "models": test_data.model_names,
        "method": f"{folds}-fold cross-validation (seed {seed})" if test is None else "train/test",
        "embedder": embedder,
    }
    return Evaluation(test_data, pair, entries, setup)


def expected_costs(train: RoutingDataset, test: RoutingDataset) -> np.ndarray:
    """Expected cost of each test query and model: fitted on the training costs, from list prices for new models."""
    from crossroads.data.descriptors import describe

    tokens = prompt_tokens(test.prompts, test.full_prompts)
    known = [m for m in test.model_names if m in train.model_names]
    cost = np.empty((test.n_queries, test.n_models))
    if known:
        priced = train.select_models(known)
        fitted = ExpectedCost.fit(prompt_tokens(priced.prompts, priced.full_prompts), priced.cost_usd).predict(tokens)
        for j, name in enumerate(known):
            cost[:, test.model_index(name)] = fitted[:, j]
    new = [model for model in test.models if model.name not in train.model_names]
    if new:
        listed = ExpectedCost.from_prices([describe(model).price for model in new]).predict(tokens)
        for j, model in enumerate(new):
            cost[:, test.model_index(model.name)] = listed[:, j]
    return cost


def cross_validated_predictions(spec: Spec, dataset: RoutingDataset, embeddings: np.ndarray,
                                splits: Sequence[Split], pair: tuple[str, str] | None = None, embedder: str = "",
                                on_step: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each test query's predicted quality (and P(strong beats weak)) from the router fitted on the other folds."""
    quality = np.full((dataset.n_queries, dataset.n_models), np.nan)
    win = np.full(dataset.n_queries, np.nan) if pair else None
    for k, split in enumerate(splits):
        router = ROUTERS.build(spec).fit(dataset.subset(split.train), embeddings[split.train], embedder=embedder)
        prompts = [dataset.prompts[i] for i in split.test]
        categories = [dataset.categories[i] for i in split.test]
        quality[split.test] = router.predict(embeddings[split.test], prompts, categories)
        if pair:
            win[split.test] = router.win_probability(embeddings[split.test], *pair, prompts=prompts,
                                                     categories=categories)
        if on_step:
            on_step(f"{spec.label} fold {k + 1}/{len(splits)}")
    return quality, win


def held_out_predictions(spec: Spec, train: RoutingDataset, train_emb: np.ndarray, test: RoutingDataset,
                         test_emb: np.ndarray, pair: tuple[str, str] | None = None, embedder: str = "",
                         on_step: Callable[[str], None] | None = None,
                         probes: tuple[RoutingDataset, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions on ``test`` (its models' columns) of the router fitted on ``train``.

    Test models the router was not trained on join by their descriptors and, given
    ``probes`` (a dataset and its embeddings), those models' outcomes on the probe queries.
    """
    router = ROUTERS.build(spec).fit(train, train_emb, embedder=embedder)
    new = [model for model in test.models if model.name not in router.models_]
    if new:
        router.add_models(new, *(probes or (None, None)))
    cols = [router.model_column(name) for name in test.model_names]
    quality = router.predict(test_emb, test.prompts, test.categories)[:, cols]
    win = router.win_probability(test_emb, *pair, prompts=test.prompts, categories=test.categories) if pair else None
    if on_step:
        on_step(f"{spec.label} trained and tested")
    return quality, win


class _Scorer:
    """Turns predictions on the test queries into an Entry."""

    def __init__(self, test: RoutingDataset, expected_cost: np.ndarray, pair: tuple[str, str] | None):
        self.test = test
        self.expected_cost = expected_cost
        self.pair = pair
        self.lambdas: np.ndarray | None = None
        if pair:
            strong, weak = (test.quality[:, test.model_index(name)] for name in pair)
            self.pair_rows = ~(np.isnan(strong) | np.isnan(weak))
            if not self.pair_rows.any():
                raise CrossroadsError(f"no query has outcomes for both {pair[0]} and {pair[1]}")
            self.strong, self.weak = strong[self.pair_rows], weak[self.pair_rows]

    def score(self, name: str, kind: str, quality: np.ndarray, win: np.ndarray | None) -> Entry:
        entry = Entry(name, kind)
        if self.pair is not None and win is not None:
            scores = win[self.pair_rows]
            entry.metrics.update(metrics.strong_weak_metrics(scores, self.strong, self.weak))
            entry.strong_weak_curve = metrics.fine_curve(scores, self.strong, self.weak)
        if self.test.n_models >= 2:
            multi = metrics.multi_model_metrics(quality, self.expected_cost, self.test.quality, self.test.cost_usd)
            entry.cost_curve = metrics.CostQualityPoints(multi.pop("mean_cost_usd"), multi.pop("mean_quality"))
            entry.metrics.update(multi)
        return entry

    def random(self, seeds: int, seed: int) -> Entry:
        """The random router's metrics averaged over ``seeds`` seeds (curves from the first).

        A metric that some seed never reaches (a cost share, a CPT) is NaN.
        """
        runs = []
        for k in range(seeds):
            rng = np.random.default_rng(seed + 1000 + k)
            quality = rng.random(self.test.quality.shape)
            win = rng.random(self.test.n_queries) if self.pair else None
            runs.append(self.score("random", "random", quality, win))
        averaged = runs[0]
        for key in averaged.metrics:
            values = np.array([run.metrics[key] for run in runs], dtype=float)
            reached = values[np.isfinite(values)]
            averaged.metrics[key] = float(reached.mean()) if len(reached) == len(values) else float("nan")
        return averaged

    def single_models(self) -> list[Entry]:
        cost, quality = metrics.single_model_points(self.test.quality, self.test.cost_usd)
        entries = []
        for j, name in enumerate(self.test.model_names):
            entry = Entry(name, "model", {"mean_quality": float(quality[j]), "mean_cost_usd": float(cost[j])})
            if self.pair and name in self.pair:
                entry.metrics["strong_share"] = 1.0 if name == self.pair[0] else 0.0
            entries.append(entry)
        return entries

    def oracle(self) -> Entry:
        quality = np.nan_to_num(self.test.quality, nan=-1.0)
        win = None
        if self.pair:
            strong, weak = (quality[:, self.test.model_index(name)] for name in self.pair)
            win = 0.5 + 0.5 * (strong - weak)
        entry = self.score("oracle", "oracle", quality, win)
        cost, best = metrics.oracle_point(self.test.quality, self.test.cost_usd)
        entry.metrics.update({"mean_cost_usd": cost, "mean_quality": best})
        return entry
