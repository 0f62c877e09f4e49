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

Cascade routing's ``resolve`` (how much a second opinion is worth), ``opening`` (how much
cheaper than the router it starts) and ``difficulty`` (how far answers seen move the other
models' expected quality; see :mod:`crossroads.evaluate.cascade`) are chosen per willingness to
pay and per answer group (kind and number of options, :func:`~crossroads.evaluate.cascade.answer_groups`)
on the training queries, unless given: each in turn, the value with the best mean quality -
willingness to pay x cost there (:func:`calibrated_policies`).  The curve of cascade routing sweeps the willingness to pay over one grid shared by all folds
(0, then :data:`WTP_POINTS` values log-spaced from 0.001 to 100 quality points per median
expected cost of the dearest model); the fixed
cascade sweeps its threshold over :data:`THRESHOLDS`.  Only queries with every model's
outcome recorded are replayed (``RoutingDataset.complete_rows``).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.evaluate import metrics
from crossroads.evaluate.cascade import CascadeRouting, answer_groups, replay_by_group, replay_fixed_sweep
from crossroads.evaluate.harness import Entry, cross_validated_predictions
from crossroads.evaluate.latency import latency_matrix
from crossroads.evaluate.splits import cross_validation_splits
from crossroads.grading.verifiers import VERIFIERS, Answers, Verifier
from crossroads.objective.cost import ExpectedCost, prompt_tokens
from crossroads.registry import Spec
from crossroads.routers import ROUTERS

KINDS = ("routing", "fixed")
#: The values of cascade routing's ``resolve`` tried on the training queries at each willingness to pay.
RESOLVES = (0.0, 0.1, 0.25, 0.5)
#: ... of its ``opening``.
OPENINGS = (1.0, 4.0, 16.0, 64.0)
#: ... and of its ``difficulty``.
DIFFICULTIES = (0.0, 0.5, 1.0)
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
    # cascade routing's calibrated settings per point: per answer group, the most frequent over the folds
    calibrated: list[dict[str, dict[str, float]]] = field(default_factory=list)

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

    def settings_at_97(self, dataset: RoutingDataset) -> dict[str, Any] | None:
        """Cascade routing's willingness to pay and calibrated settings per answer group at its cheapest point
        reaching 97% of the best model's quality (None if it never does): what a served ``cascade:`` can take."""
        cost, quality = self.cost_usd.mean(1), self.quality.mean(1)
        at = operating_point(cost, quality, curve_metrics(cost, quality, dataset.quality, dataset.cost_usd)["target_97"])
        if at is None or not self.calibrated:
            return None
        return {"willingness_to_pay": float(self.settings[at]), "groups": self.calibrated[at]}


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
    verifier: str | Spec | Verifier = "learned",
    folds: int = 5,
    seed: int = 0,
    inner_folds: int = 3,
    embedder: str = "",
    resolve: float | None = None,
    opening: float | None = None,
    difficulty: float | None = None,
    max_calls: int = 3,
    max_cost_usd: float | None = None,
    on_step: Callable[[str], None] | None = None,
    answers: Answers | None = None,
) -> list[CascadeCurve]:
    """Cross-validate each cascade of ``kinds`` (``routing``, ``fixed``) on ``dataset``; see the module.

    ``verifier`` may be a Verifier itself (a fresh copy is fitted per fold); ``answers`` replaces what the
    verifier reads of the dataset's responses (for a bound: a verifier reading the recorded quality).
    """
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise CrossroadsError(f"unknown cascade {unknown[0]!r}; cascades: {', '.join(KINDS)}")
    if np.isnan(dataset.quality).any() or np.isnan(dataset.cost_usd).any():
        raise CrossroadsError("cascades are replayed on queries with every model's outcome recorded: "
                              "pass dataset.complete_rows()")
    if dataset.n_models < 2:
        raise CrossroadsError("a cascade needs a pool of at least two models")
    spec = ROUTERS.spec(router)
    verifier_spec = None if isinstance(verifier, Verifier) else VERIFIERS.spec(verifier)
    n = dataset.n_queries
    answers = answers or Answers.from_dataset(dataset)
    groups = answer_groups(answers)
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
    votes: list[dict[str, Counter]] = [{} for _ in grid]  # per point and group: the folds' calibrated settings
    label = f"{verifier.name if verifier_spec is None else verifier_spec.label}+{spec.label}"
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
        fresh = copy.deepcopy(verifier) if verifier_spec is None else VERIFIERS.build(verifier_spec)
        judge = fresh.fit(answers.subset(train), train_prior, train_cost, dataset.quality[train], seed=seed + k)
        test_args = (judge, answers.subset(test), prior, expected[test], dataset.quality[test],
                     dataset.cost_usd[test], latency[test])
        for kind in kinds:
            if kind == "routing":
                train_args = (judge, answers.subset(train), train_prior, train_cost, dataset.quality[train],
                              dataset.cost_usd[train], latency[train])
                calibrated = calibrated_policies(grid, train_args, difficulty, max_cost_usd, max_calls, resolve,
                                                 opening, groups[train])
                outcomes = [replay_by_group(policies, groups[test], *test_args) for policies in calibrated]
                for p, policies in enumerate(calibrated):
                    for g, policy in policies.items():
                        votes[p].setdefault(g, Counter())[(policy.resolve, policy.opening, policy.difficulty)] += 1
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
    calibrated = [{g: dict(zip(("resolve", "opening", "difficulty"), counts.most_common(1)[0][0]))
                   for g, counts in sorted(point.items())} for point in votes]
    return [CascadeCurve(f"cascade-{kind}:{label}", kind, settings[kind], results[kind]["quality"],
                         results[kind]["cost"], results[kind]["latency"], results[kind]["calls"],
                         chains if kind == "fixed" else [], calibrated if kind == "routing" else [])
            for kind in kinds]


def fit_verifier(dataset: RoutingDataset, embeddings: np.ndarray, *, router: str | Spec = "knn",
                 verifier: str | Spec = "learned", folds: int = 5, seed: int = 0, embedder: str = ""):
    """``verifier`` fitted on every query of ``dataset`` whose outcomes are all recorded, for serving.

    As in :func:`evaluate_cascades`, it reads priors of ``router`` cross-validated over ``folds`` (never a
    prior from a router that trained on the query) and the expected cost fitted on the recorded costs.
    """
    if dataset.responses is None:
        raise CrossroadsError("the dataset keeps no responses, and a verifier learns from reading them: use a set "
                              "with responses (routerbench, routellm gsm8k, mmlu-pro with ,responses=true)")
    complete = ~(np.isnan(dataset.quality).any(1) | np.isnan(dataset.cost_usd).any(1))
    if complete.sum() < 3:
        raise CrossroadsError(f"{int(complete.sum())} queries have every model's outcome: too few to fit a verifier")
    dataset, embeddings = dataset.subset(complete), embeddings[complete]
    tokens = prompt_tokens(dataset.prompts, dataset.full_prompts)
    splits = list(cross_validation_splits(dataset.n_queries, min(folds, dataset.n_queries), seed))
    prior, _ = cross_validated_predictions(ROUTERS.spec(router), dataset, embeddings, splits, embedder=embedder)
    cost = ExpectedCost.fit(tokens, dataset.cost_usd).predict(tokens)
    return VERIFIERS.build(VERIFIERS.spec(verifier)).fit(Answers.from_dataset(dataset), prior, cost,
                                                           dataset.quality, seed=seed)


def calibrated_policies(grid: np.ndarray, train_args: tuple, difficulty: float | None, max_cost_usd: float | None,
                        max_calls: int, resolve: float | None = None, opening: float | None = None,
                        groups: np.ndarray | None = None) -> list[dict[str, CascadeRouting]]:
    """Cascade routing at each willingness to pay of ``grid``, per answer group of the training queries (``groups``,
    see :func:`~crossroads.evaluate.cascade.answer_groups`; None: one group, ``all``).

    Each group's ``resolve``, ``opening`` and ``difficulty`` (those given as None) are chosen in turn, from
    :data:`RESOLVES`, :data:`OPENINGS` and :data:`DIFFICULTIES`, as the value whose replay on the group's training
    queries has the highest mean utility (quality - willingness to pay x cost), the others held at their defaults
    (0.5, 1, 0.5) or their values chosen so far; a value stays unless another does strictly better.  Queries are
    independent, so one replay per candidate value serves every group.
    """
    n_train = len(train_args[2])
    groups = np.full(n_train, "all", dtype=object) if groups is None else np.asarray(groups, dtype=object)
    names = list(np.unique(groups))
    given = {"resolve": resolve, "opening": opening, "difficulty": difficulty}
    searched = {"resolve": RESOLVES, "opening": OPENINGS, "difficulty": DIFFICULTIES}
    defaults = {"resolve": 0.5, "opening": 1.0, "difficulty": 0.5}

    def policies(wtp: float, settings: dict[str, dict]) -> dict[str, CascadeRouting]:
        return {g: CascadeRouting(wtp, max_cost_usd=max_cost_usd, max_calls=max_calls, **settings[g]) for g in names}

    def best(wtp: float, chosen: dict[str, dict], key: str) -> dict[str, dict]:
        values = searched[key]
        utility = np.empty((len(values), len(names)))
        for v, value in enumerate(values):
            result = replay_by_group(policies(wtp, {g: {**chosen[g], key: value} for g in names}), groups,
                                     *train_args)
            gain = result.quality - wtp * result.cost_usd
            utility[v] = [gain[groups == g].mean() for g in names]
        picked = {}
        for i, g in enumerate(names):
            top = int(np.argmax(utility[:, i]))
            now = values.index(chosen[g][key])
            picked[g] = {**chosen[g], key: values[now] if utility[now, i] >= utility[top, i] - 1e-12 else values[top]}
        return picked

    calibrated = []
    for wtp in grid:
        start = {key: defaults[key] if value is None else value for key, value in given.items()}
        chosen = {g: dict(start) for g in names}
        for key in ("resolve", "opening", "difficulty"):
            if given[key] is None:
                chosen = best(wtp, chosen, key)
        calibrated.append(policies(wtp, chosen))
    return calibrated


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
