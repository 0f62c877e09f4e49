"""Cascades cross-validated on recorded responses, scored like the routers beside them.

``evaluate_cascades`` replays cascades (:mod:`crossroads.evaluate.cascade`) on each test fold
and returns :class:`~crossroads.evaluate.harness.Entry` objects with the routers' metrics
(AIQ, best quality, cost share at 95/97/100% of the best single model), so that cascades,
routers and cascade routing share one cost-quality plot and one ``metrics.json``.

Per outer fold, everything a cascade uses is learned on the training queries only:

* the router's prior on the test queries: the router fitted on the training queries (the
  same predictions the harness scores the plain router on);
* the expected cost: :class:`~crossroads.objective.cost.ExpectedCost` fitted on the training costs;
* the verifier: fitted on the training queries with priors from an inner cross-validation
  (``inner_folds``), so that it never sees a prior from a router that trained on the query;
* the fixed cascade's chain: among chains of one or two cheap models (under a third of the
  best model's mean cost: the cost-quality frontier and the best few) then the best model,
  the one whose threshold sweep has the highest AIQ on the training queries.

Cascade routing's ``resolve`` (how much a second opinion is worth, see
:mod:`crossroads.evaluate.cascade`) is chosen per willingness to pay on the training queries
(the value of :data:`RESOLVES` with the best mean quality - willingness to pay x cost there)
unless given.  The curve of cascade routing sweeps the willingness to pay over one grid shared by all folds
(0, then :data:`WTP_POINTS` values log-spaced from 0.001 to 100 quality points per median
expected cost of the dearest model); the fixed
cascade sweeps its threshold over :data:`THRESHOLDS`.  Only queries with every model's
outcome recorded are replayed (``RoutingDataset.complete_rows``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.evaluate import metrics
from crossroads.evaluate.cascade import CascadeRouting, replay, replay_fixed_sweep
from crossroads.evaluate.harness import Entry, cross_validated_predictions
from crossroads.evaluate.latency import latency_matrix
from crossroads.evaluate.splits import cross_validation_splits
from crossroads.grading.verifiers import VERIFIERS, Answers
from crossroads.objective.cost import ExpectedCost, prompt_tokens
from crossroads.registry import Spec
from crossroads.routers import ROUTERS

KINDS = ("routing", "fixed")
#: The values of cascade routing's ``resolve`` tried on the training queries at each willingness to pay.
RESOLVES = (0.0, 0.1, 0.25, 0.5)
WTP_POINTS = 40
THRESHOLDS = np.r_[np.linspace(0.0, 1.0, 41), 1.01]
#: Cheap chain members: models under this share of the best model's mean cost, at most MAX_CHEAP of them.
CHEAP_SHARE = 1 / 3
MAX_CHEAP = 5


@dataclass
class CascadeCurve:
    """One cascade's replay at every operating point: per point and query, quality, cost, latency and calls."""

    name: str
    kind: str
    settings: np.ndarray  # willingness to pay (routing) or threshold (fixed), one per point
    quality: np.ndarray  # (points, queries)
    cost_usd: np.ndarray
    latency_s: np.ndarray
    calls: np.ndarray
    chains: list[list[str]] = field(default_factory=list)  # the fixed cascade's chain in each fold

    def entry(self, dataset: RoutingDataset, rows: np.ndarray | None = None) -> Entry:
        """The harness entry (on ``rows`` only, if given) with the routers' metrics and the curve."""
        rows = slice(None) if rows is None else rows
        cost, quality = self.cost_usd[:, rows].mean(1), self.quality[:, rows].mean(1)
        found = curve_metrics(cost, quality, dataset.quality[rows], dataset.cost_usd[rows])
        at = operating_point(cost, quality, found["target_97"])
        found.pop("target_97")
        if at is not None:
            found["mean_calls_at_97"] = float(self.calls[at, rows].mean())
            found["mean_latency_s_at_97"] = float(self.latency_s[at, rows].mean())
        found["mean_calls_max"] = float(self.calls[:, rows].mean(1).max())
        return Entry(self.name, "cascade", found, cost_curve=metrics.CostQualityPoints(cost, quality))


def curve_metrics(mean_cost_usd: np.ndarray, mean_quality: np.ndarray, true_quality: np.ndarray,
                  true_cost_usd: np.ndarray) -> dict[str, float]:
    """AIQ, best quality and cost shares of a curve, against the pool's single models (as
    :func:`~crossroads.evaluate.metrics.multi_model_metrics` scores a router), plus ``target_97``."""
    single_cost, single_quality = metrics.single_model_points(true_quality, true_cost_usd)
    best = int(np.lexsort((single_cost, -single_quality))[0])
    low, high = float(single_cost.min()), float(single_cost.max())
    found = {"aiq": metrics.aiq(mean_cost_usd, mean_quality, (low, high)) if high > low else float("nan"),
             "best_quality": metrics.best_quality(mean_quality)}
    for key, fraction in metrics.COST_SHARE_FRACTIONS.items():
        found[key] = (metrics.cost_share_at(mean_cost_usd, mean_quality, float(single_cost[best]),
                                            float(single_quality[best]), fraction)
                      if single_cost[best] > 0 else float("nan"))
    found["target_97"] = 0.97 * float(single_quality[best])
    return found


def operating_point(mean_cost_usd: np.ndarray, mean_quality: np.ndarray, target: float) -> int | None:
    """The cheapest point whose quality reaches ``target``, or None."""
    reached = np.flatnonzero(mean_quality >= target - 1e-12)
    return None if not len(reached) else int(reached[np.argmin(mean_cost_usd[reached])])


def evaluate_cascades(
    kinds: Sequence[str],
    dataset: RoutingDataset,
    embeddings: np.ndarray,
    *,
    router: str | Spec = "knn",
    verifier: str | Spec = "learned",
    folds: int = 5,
    seed: int = 0,
    inner_folds: int = 3,
    embedder: str = "",
    resolve: float | None = None,
    difficulty: float = 0.5,
    max_calls: int = 3,
    max_cost_usd: float | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[CascadeCurve]:
    """Cross-validate each cascade of ``kinds`` (``routing``, ``fixed``) on ``dataset``; see the module."""
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise CrossroadsError(f"unknown cascade {unknown[0]!r}; cascades: {', '.join(KINDS)}")
    if np.isnan(dataset.quality).any() or np.isnan(dataset.cost_usd).any():
        raise CrossroadsError("cascades are replayed on queries with every model's outcome recorded: "
                              "pass dataset.complete_rows()")
    if dataset.n_models < 2:
        raise CrossroadsError("a cascade needs a pool of at least two models")
    spec, verifier_spec = ROUTERS.spec(router), VERIFIERS.spec(verifier)
    n = dataset.n_queries
    answers = Answers.from_dataset(dataset)
    latency = latency_matrix(dataset)
    tokens = prompt_tokens(dataset.prompts, dataset.full_prompts)
    splits = list(cross_validation_splits(n, folds, seed))
    expected = np.empty_like(dataset.cost_usd)
    for split in splits:
        expected[split.test] = ExpectedCost.fit(tokens[split.train], dataset.cost_usd[split.train]).predict(
            tokens[split.test])
    scale = float(np.median(expected.max(1)))
    grid = np.r_[0.0, np.geomspace(1e-3, 1e2, WTP_POINTS) / scale]
    settings = {"routing": grid, "fixed": THRESHOLDS}
    shape = {kind: (len(settings[kind]), n) for kind in kinds}
    results = {kind: {what: np.zeros(shape[kind]) for what in ("quality", "cost", "latency", "calls")}
               for kind in kinds}
    chains: list[list[str]] = []
    label = f"{verifier_spec.label}+{spec.label}"
    for k, split in enumerate(splits):
        train, test = split.train, split.test
        cost_model = ExpectedCost.fit(tokens[train], dataset.cost_usd[train])
        train_cost = cost_model.predict(tokens[train])
        fitted = ROUTERS.build(spec).fit(dataset.subset(train), embeddings[train], embedder=embedder)
        prior = fitted.predict(embeddings[test], [dataset.prompts[i] for i in test],
                               [dataset.categories[i] for i in test])
        inner = list(cross_validation_splits(len(train), min(inner_folds, len(train)), seed))
        train_prior, _ = cross_validated_predictions(spec, dataset.subset(train), embeddings[train], inner,
                                                     embedder=embedder)
        judge = VERIFIERS.build(verifier_spec).fit(answers.subset(train), train_prior, train_cost,
                                                   dataset.quality[train], seed=seed + k)
        test_args = (judge, answers.subset(test), prior, expected[test], dataset.quality[test],
                     dataset.cost_usd[test], latency[test])
        for kind in kinds:
            if kind == "routing":
                resolves = np.full(len(grid), resolve) if resolve is not None else calibrated_resolve(
                    grid, (judge, answers.subset(train), train_prior, train_cost, dataset.quality[train],
                           dataset.cost_usd[train], latency[train]), difficulty, max_cost_usd, max_calls)
                outcomes = [replay(CascadeRouting(wtp, r, difficulty, max_cost_usd, max_calls), *test_args)
                            for wtp, r in zip(grid, resolves)]
            else:
                chain = best_chain(judge, answers.subset(train), train_prior, train_cost, dataset.quality[train],
                                   dataset.cost_usd[train])
                chains.append([dataset.model_names[j] for j in chain])
                outcomes = replay_fixed_sweep(chain, THRESHOLDS, *test_args)
            for p, result in enumerate(outcomes):
                for what, values in (("quality", result.quality), ("cost", result.cost_usd),
                                     ("latency", result.latency_s), ("calls", result.calls)):
                    results[kind][what][p, test] = values
        if on_step:
            on_step(f"cascades ({label}) fold {k + 1}/{len(splits)}")
    return [CascadeCurve(f"cascade-{kind}:{label}", kind, settings[kind], results[kind]["quality"],
                         results[kind]["cost"], results[kind]["latency"], results[kind]["calls"],
                         chains if kind == "fixed" else []) for kind in kinds]


def calibrated_resolve(grid: np.ndarray, train_args: tuple, difficulty: float, max_cost_usd: float | None,
                       max_calls: int) -> np.ndarray:
    """For each willingness to pay, the :data:`RESOLVES` value whose replay on the training queries has the
    highest mean utility (quality - willingness to pay x cost)."""
    utility = np.empty((len(RESOLVES), len(grid)))
    for r, resolve in enumerate(RESOLVES):
        for p, wtp in enumerate(grid):
            result = replay(CascadeRouting(wtp, resolve, difficulty, max_cost_usd, max_calls), *train_args)
            utility[r, p] = result.quality.mean() - wtp * result.cost_usd.mean()
    return np.asarray(RESOLVES)[utility.argmax(0)]


def candidate_chains(quality: np.ndarray, cost_usd: np.ndarray) -> list[list[int]]:
    """Chains cheapest first, ending with the best model: one or two cheap models (see the module) then it."""
    mean_cost, mean_quality = metrics.single_model_points(quality, cost_usd)
    top = int(np.lexsort((mean_cost, -mean_quality))[0])
    cheap = [j for j in range(len(mean_cost)) if j != top and mean_cost[j] < CHEAP_SHARE * mean_cost[top]]
    if not cheap:
        cheap = [int(np.argmin(np.where(np.arange(len(mean_cost)) == top, np.inf, mean_cost)))]
    frontier = [j for j in cheap if not any(mean_cost[k] <= mean_cost[j] and mean_quality[k] > mean_quality[j]
                                            for k in cheap)]
    best_few = sorted(cheap, key=lambda j: -mean_quality[j])[:3]
    pool = sorted(dict.fromkeys(frontier + best_few), key=lambda j: -mean_quality[j])[:MAX_CHEAP]
    pool.sort(key=lambda j: mean_cost[j])
    chains = [[j, top] for j in pool]
    chains += [[a, b, top] for x, a in enumerate(pool) for b in pool[x + 1:]]
    return chains


def best_chain(verifier, answers: Answers, prior: np.ndarray, expected_cost_usd: np.ndarray, quality: np.ndarray,
               cost_usd: np.ndarray) -> list[int]:
    """The candidate chain whose threshold sweep has the highest AIQ on these (training) queries."""
    latency = np.zeros_like(cost_usd)
    scored = []
    for chain in candidate_chains(quality, cost_usd):
        outcomes = replay_fixed_sweep(chain, THRESHOLDS, verifier, answers, prior, expected_cost_usd, quality,
                                      cost_usd, latency)
        cost = np.array([o.cost_usd.mean() for o in outcomes])
        found = curve_metrics(cost, np.array([o.quality.mean() for o in outcomes]), quality, cost_usd)
        scored.append((np.nan_to_num(found["aiq"], nan=-np.inf), chain))
    return max(scored, key=lambda pair: pair[0])[1]
