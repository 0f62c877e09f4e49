"""Replay a routing dataset as a stream of requests and score online learners on it.

PickLLM-style simulation (arXiv 2412.12170): queries arrive one at a time in a seeded
random order; at each step a learner chooses among the models whose outcome is
recorded for that query, receives the objective's reward of that recorded outcome
(quality, cost and latency) and updates.  Nothing is called: every outcome is replayed.

* The stream is a seeded shuffle of the queries; asking for more queries than the
  dataset has samples them with replacement (each step an independent uniform draw),
  asking for fewer takes the first ``queries`` of one shuffle (no repeats).
* ``sessions="category"`` gives each query category its own learner
  (:class:`~crossroads.online.KeyedLearners`), like PickLLM's per-context sessions;
  ``sessions="none"`` runs one learner over the whole stream.
* Rewards come from :func:`~crossroads.objective.make_reward`; cost and latency
  are scaled over the range of the pool's mean cost and latency on the dataset (as
  :meth:`PoolScale.from_dataset`, with latency from :func:`latency_matrix`, which
  estimates it where the dataset records none).
* Baselines on the same stream: ``random`` (the *expected* outcome of a uniform choice
  among the available models: exact, no sampling noise), ``best_fixed`` (the model with
  the best mean reward over the steps where it is available, in hindsight),
  ``most_expensive`` (the model with the highest mean cost on the stream; among models
  priced alike, the one with the best mean quality) and ``oracle``
  (the best reward of each step).  At a step where its model has no outcome, a fixed
  baseline gets the random baseline's expected outcome.
* Drift (:class:`Drift`) changes one model's outcomes from a step on; ``add_at`` and
  ``remove_at`` make a model join or leave the pool mid-stream.

Metrics are averaged over ``seeds`` streams (mean and sample standard deviation, NaN
for one seed); NaN values (a learner that never converged) are left out of the mean:

``cumulative_reward``, ``mean_reward``
    sum and mean of the rewards earned over the stream.
``regret_vs_best_fixed``, ``regret_vs_oracle``
    the baseline's cumulative reward minus the entry's, at the end of the stream.
``convergence_step``, ``converged_share``
    selections a session had made when it converged (``Learner.converged_step``; the
    mean over the sessions that converged) and the share of sessions that did.
``mean_quality``, ``total_cost_usd``, ``mean_latency_s``
    of the outcomes the entry received; the session's cost is the total.
``cost_reduction_vs_most_expensive``, ``latency_reduction_vs_random``, ``quality_retained``
    ``1 - cost / cost of most_expensive``, ``1 - latency / latency of random`` and
    ``mean quality / mean quality of most_expensive``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError, UnknownModelError
from crossroads.evaluate.latency import LatencyProfile, latency_matrix
from crossroads.objective import (
    MaxReward,
    Objective,
    PoolScale,
    Reward,
    decide,
    make_reward,
    parse_objective,
)
from crossroads.online import LEARNERS, KeyedLearners, Learner
from crossroads.registry import Spec

SESSIONS = ("category", "none")
BASELINES = ("random", "best_fixed", "most_expensive", "oracle")
#: Metrics of every entry, in the order they are written.
METRICS = (
    "cumulative_reward",
    "mean_reward",
    "regret_vs_best_fixed",
    "regret_vs_oracle",
    "convergence_step",
    "converged_share",
    "mean_quality",
    "total_cost_usd",
    "mean_latency_s",
    "cost_reduction_vs_most_expensive",
    "latency_reduction_vs_random",
    "quality_retained",
)


@dataclass(frozen=True)
class Drift:
    """From step ``at_step`` on, ``model``'s outcomes change.

    Quality moves by ``quality_delta`` (clipped to [0, 1]; a missing outcome stays
    missing), cost and latency are multiplied by ``cost_factor`` and ``latency_factor``.
    The reward's cost and latency scale is not refitted: it is the pool's before drift.
    """

    at_step: int
    model: str
    quality_delta: float = 0.0
    cost_factor: float = 1.0
    latency_factor: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.at_step, bool) or not isinstance(self.at_step, (int, np.integer)) or self.at_step < 0:
            raise CrossroadsError(f"drift at_step must be an integer >= 0, got {self.at_step!r}")
        if not math.isfinite(self.quality_delta):
            raise CrossroadsError(f"drift quality_delta must be finite, got {self.quality_delta!r}")
        for name in ("cost_factor", "latency_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise CrossroadsError(f"drift {name} must be a finite number >= 0, got {value!r}")


@dataclass
class Entry:
    """One learner or baseline: metrics (mean over seeds), their sd, and seed 0's trace."""

    name: str
    kind: str  # "learner" or one of BASELINES
    metrics: dict[str, float]
    sd: dict[str, float]
    reward_trace: np.ndarray  # seed 0: reward at each step
    model_trace: np.ndarray  # seed 0: pool index chosen at each step (-1 for random's expectation)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "sd": {k: _json_float(v) for k, v in self.sd.items()},
            "trace": {"reward": [_json_float(v) for v in self.reward_trace], "model": self.model_trace.tolist()},
        }


@dataclass
class SimulationResult:
    """Every entry of one simulation, with its setup."""

    entries: list[Entry]
    setup: dict
    rows: np.ndarray  # seed 0: the dataset row (query) of each step
    query_ids: list[str]  # seed 0: the query id of each step
    rewards: np.ndarray  # seed 0: every model's reward at each step, drift applied (NaN: not available)

    def __getitem__(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "setup": self.setup,
            "trace_query_ids": self.query_ids,
            "entries": {entry.name.lower(): entry.to_json() for entry in self.entries},
        }


@dataclass
class _Run:
    """What one learner or baseline did on one stream."""

    reward: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray
    latency_s: np.ndarray
    model: np.ndarray
    convergence_step: float = math.nan
    converged_share: float = math.nan


def simulate(
    dataset: RoutingDataset,
    learners: Sequence[str | Spec | Callable[[int], Learner]],
    objective: Objective | str | Reward = "quality=1",
    *,
    models: Sequence[str] | None = None,
    queries: int | None = None,
    seeds: int = 1,
    seed: int = 0,
    sessions: str = "category",
    embeddings: np.ndarray | None = None,
    drift: Drift | Sequence[Drift] | None = None,
    add_at: Mapping[str, int] | None = None,
    remove_at: Mapping[str, int] | None = None,
    latency_profiles: Mapping[str, LatencyProfile] | None = None,
) -> SimulationResult:
    """Replay ``dataset`` as a stream of ``queries`` requests for each learner and baseline.

    ``learners`` are learner specs (``"ucb"``, ``"automaton:learning_rate=0.1"``, or a
    :class:`~crossroads.registry.Spec`) or functions ``seed -> Learner``.  Contextual learners read
    row ``i`` of ``embeddings`` for query ``i``.  Stream ``k`` (of ``seeds``) shuffles
    with ``default_rng([seed, k])``; a learner's own seed is ``seed + k`` (plus the
    session number under ``sessions="category"``).

    >>> from crossroads.data.dataset import ModelInfo, RoutingDataset
    >>> data = RoutingDataset(["q0", "q1"], ["hi", "2+2?"], ["chat", "math"], ["s", "s"],
    ...                       [ModelInfo("small"), ModelInfo("large")], [[1.0, 1.0], [0.0, 1.0]], [[0.001, 0.01]] * 2)
    >>> result = simulate(data, ["ucb", "automaton:learning_rate=0.5"], "quality=1", seeds=3)
    >>> result["oracle"].metrics["cumulative_reward"], result["random"].metrics["mean_reward"]
    (2.0, 0.75)
    >>> sorted(result.to_json()["entries"])
    ['automaton:learning_rate=0.5', 'best_fixed', 'most_expensive', 'oracle', 'random', 'ucb']
    """
    if sessions not in SESSIONS:
        raise CrossroadsError(f"sessions must be one of {', '.join(SESSIONS)}, got {sessions!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise CrossroadsError(f"seeds must be an integer >= 1, got {seeds!r}")
    if models is not None:
        if not list(models):
            raise CrossroadsError("the pool is empty: name at least one model")
        dataset = dataset.select_models(list(models))
    if dataset.n_models == 0:
        raise CrossroadsError("the pool is empty: the dataset has no models")
    specs = [_spec(learner) for learner in learners]
    if not specs:
        raise CrossroadsError("no learner to simulate: name at least one (e.g. automaton, ucb, thompson)")
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] != dataset.n_queries:
            raise CrossroadsError(
                f"embeddings must be one row per query ({dataset.n_queries}), got shape {embeddings.shape}"
            )
    names = dataset.model_names
    drifts = [] if drift is None else [drift] if isinstance(drift, Drift) else list(drift)
    for change in drifts:
        if change.model not in names:
            raise UnknownModelError(change.model, names)
    add_at, remove_at = _steps(add_at, names, "add_at"), _steps(remove_at, names, "remove_at")

    if isinstance(objective, str):
        objective = parse_objective(objective)
    latency, reward_fn = _pool_reward(dataset, objective, latency_profiles)
    rows_kept = np.flatnonzero((~np.isnan(dataset.quality) & ~np.isnan(dataset.cost_usd)).any(axis=1))
    n_steps = len(rows_kept) if queries is None else queries
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise CrossroadsError(f"queries must be an integer >= 1, got {queries!r}")
    categories = [category or "(none)" for category in dataset.categories]

    runs: dict[str, list[_Run]] = {}
    labels = []
    for k in range(seeds):
        rng = np.random.default_rng([seed, k])
        if n_steps <= len(rows_kept):
            rows = rows_kept[rng.permutation(len(rows_kept))[:n_steps]]
        else:
            rows = rows_kept[rng.integers(len(rows_kept), size=n_steps)]
        if k == 0:
            first_rows = rows
        stream = _stream(dataset, latency, rows, drifts, add_at, remove_at, reward_fn)
        if k == 0:
            first_rewards = np.where(stream.available, stream.reward, np.nan)
        for spec in specs:
            label, run = _run_learner(spec, stream, rows, categories, embeddings, sessions, seed + k, names)
            if k == 0:
                if label in labels or label in BASELINES:
                    raise CrossroadsError(f"two entries are named {label!r}; give each learner a distinct setting")
                labels.append(label)
            runs.setdefault(label, []).append(run)
        for name, run in _baselines(stream, reward_fn).items():
            runs.setdefault(name, []).append(run)

    per_seed = {name: [] for name in runs}
    for k in range(seeds):
        reference = {name: runs[name][k] for name in BASELINES}
        for name in runs:
            per_seed[name].append(_metrics(runs[name][k], reference))
    entries = []
    for name in [*labels, *BASELINES]:
        values = {metric: np.array([m[metric] for m in per_seed[name]]) for metric in METRICS}
        first = runs[name][0]
        entries.append(
            Entry(
                name=name,
                kind=name if name in BASELINES else "learner",
                metrics={metric: _nanmean(v) for metric, v in values.items()},
                sd={metric: _nansd(v) for metric, v in values.items()},
                reward_trace=first.reward,
                model_trace=first.model,
            )
        )
    setup = {
        "queries": int(n_steps),
        "dataset_queries": len(rows_kept),
        "with_replacement": bool(n_steps > len(rows_kept)),
        "models": names,
        "objective": str(objective) if isinstance(objective, Objective) else repr(reward_fn),
        "sessions": sessions,
        "seeds": int(seeds),
        "seed": int(seed),
        "drift": [asdict(change) for change in drifts],
        "add_at": add_at,
        "remove_at": remove_at,
        "latency": "recorded" if dataset.latency_s is not None and not np.isnan(dataset.latency_s).any()
        else "estimated" if dataset.latency_s is None or np.isnan(dataset.latency_s).all() else "recorded, else estimated",
    }
    return SimulationResult(entries, setup, first_rows, [dataset.query_ids[i] for i in first_rows], first_rewards)


def replay_rewards(
    dataset: RoutingDataset,
    objective: Objective | str | Reward,
    latency_profiles: Mapping[str, LatencyProfile] | None = None,
) -> np.ndarray:
    """The reward every model earns on every query, ``(n_queries, n_models)``, as the simulator scores it.

    NaN where an outcome is missing.  Off-policy estimates are checked against values
    computed from this matrix (the true replayed value of a policy).
    """
    if isinstance(objective, str):
        objective = parse_objective(objective)
    latency, reward_fn = _pool_reward(dataset, objective, latency_profiles)
    recorded = ~np.isnan(dataset.quality) & ~np.isnan(dataset.cost_usd)
    rewards = np.full(dataset.quality.shape, np.nan)
    rewards[recorded] = reward_fn(dataset.quality[recorded], dataset.cost_usd[recorded], latency[recorded])
    return rewards


def _pool_reward(dataset, objective, latency_profiles) -> tuple[np.ndarray, Reward]:
    """(latency matrix, reward function) with cost and latency scaled over the pool's mean per model."""
    latency = latency_matrix(dataset, latency_profiles)
    recorded = ~np.isnan(dataset.quality) & ~np.isnan(dataset.cost_usd)
    if not recorded.any():
        raise CrossroadsError("no query has a recorded outcome (quality and cost) for any model of the pool")
    names = dataset.model_names
    scale = PoolScale.from_models(
        dict(zip(names, _column_means(np.where(recorded, dataset.cost_usd, np.nan)))),
        dict(zip(names, _column_means(np.where(recorded, latency, np.nan)))),
    )
    return latency, make_reward(objective, scale)


# -- the stream ------------------------------------------------------------------------
@dataclass
class _Stream:
    """Per-step outcomes of every model after drift; NaN where a model has no outcome."""

    quality: np.ndarray
    cost_usd: np.ndarray
    latency_s: np.ndarray
    reward: np.ndarray
    available: np.ndarray
    removals: dict[int, list[str]]


def _stream(dataset, latency, rows, drifts, add_at, remove_at, reward_fn) -> _Stream:
    quality = dataset.quality[rows].copy()
    cost = dataset.cost_usd[rows].copy()
    lat = latency[rows].copy()
    for change in drifts:
        j = dataset.model_index(change.model)
        later = slice(change.at_step, None)
        quality[later, j] = np.clip(quality[later, j] + change.quality_delta, 0.0, 1.0)
        cost[later, j] *= change.cost_factor
        lat[later, j] *= change.latency_factor
    available = ~np.isnan(quality) & ~np.isnan(cost)
    for name, step in add_at.items():
        available[:step, dataset.model_index(name)] = False
    for name, step in remove_at.items():
        available[step:, dataset.model_index(name)] = False
    empty = np.flatnonzero(~available.any(axis=1))
    if empty.size:
        raise CrossroadsError(
            f"step {empty[0]} has no model to choose: every model is missing, not yet added or removed there"
        )
    reward = np.full(quality.shape, np.nan)
    reward[available] = reward_fn(quality[available], cost[available], lat[available])
    if np.isnan(reward[available]).any():
        raise CrossroadsError("the objective gave a NaN reward for a recorded outcome")
    removals: dict[int, list[str]] = {}
    for name, step in remove_at.items():
        removals.setdefault(step, []).append(name)
    return _Stream(quality, cost, lat, reward, available, removals)


def _run_learner(spec, stream: _Stream, rows, categories, embeddings, sessions, seed, names) -> tuple[str, _Run]:
    probe = _build(spec, seed)
    if not isinstance(probe, Learner):
        raise CrossroadsError(f"a learner factory returned {type(probe).__name__}, not a Learner")
    label = spec.label if isinstance(spec, Spec) else probe.name
    if probe.contextual and embeddings is None:
        raise CrossroadsError(
            f"the {probe.name} learner routes on prompt embeddings: pass embeddings (one row per query)"
        )
    created = [probe]

    def factory() -> Learner:  # the first session reuses the probe; later ones get their own seed
        if created:
            return created.pop()
        count[0] += 1
        return _build(spec, seed + 1000 * count[0])

    count = [0]
    keyed = KeyedLearners(factory)
    n = len(rows)
    run = _Run(np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=int))
    for t, row in enumerate(rows):
        for name in stream.removals.get(t, []):
            for learner in keyed.learners_.values():
                if name in learner.arms_:
                    learner.remove_model(name)
        key = categories[row] if sessions == "category" else "all"
        candidates = [names[j] for j in np.flatnonzero(stream.available[t])]
        context = None if embeddings is None else embeddings[row]
        learner = keyed.get(key)
        decision = learner.select(candidates, context=context if learner.contextual else None)
        j = names.index(decision.model)
        learner.update(decision, float(stream.reward[t, j]))
        run.reward[t], run.quality[t] = stream.reward[t, j], stream.quality[t, j]
        run.cost_usd[t], run.latency_s[t], run.model[t] = stream.cost_usd[t, j], stream.latency_s[t, j], j
    steps = [learner.converged_step for learner in keyed.learners_.values()]
    converged = [s for s in steps if s is not None]
    run.convergence_step = float(np.mean(converged)) if converged else math.nan
    run.converged_share = len(converged) / len(steps)
    return label, run


def _baselines(stream: _Stream, reward_fn: Reward) -> dict[str, _Run]:
    avail = stream.available
    count = avail.sum(axis=1)

    def expected(values: np.ndarray) -> np.ndarray:
        return np.where(avail, values, 0.0).sum(axis=1) / count

    random = _Run(*(expected(v) for v in (stream.reward, stream.quality, stream.cost_usd, stream.latency_s)),
                  model=np.full(len(count), -1))

    def fixed(j: int) -> _Run:
        run = _Run(random.reward.copy(), random.quality.copy(), random.cost_usd.copy(), random.latency_s.copy(),
                   np.full(len(count), -1))
        on = avail[:, j]
        for mine, column in ((run.reward, stream.reward), (run.quality, stream.quality),
                             (run.cost_usd, stream.cost_usd), (run.latency_s, stream.latency_s)):
            mine[on] = column[on, j]
        run.model[on] = j
        return run

    best = int(np.nanargmax(_column_means(stream.reward)))
    dearest = most_expensive_model(_column_means(np.where(avail, stream.cost_usd, np.nan)),
                       _column_means(np.where(avail, stream.quality, np.nan)))
    steps = np.arange(len(count))
    first = np.argmax(avail, axis=1)  # an available model's outcome stands in for the missing ones

    def filled(values: np.ndarray) -> np.ndarray:
        return np.where(avail, values, values[steps, first][:, None])

    top = decide(filled(stream.quality), filled(stream.cost_usd), MaxReward(reward_fn),
                 expected_latency_s=filled(stream.latency_s), allowed=avail).chosen
    oracle = _Run(stream.reward[steps, top], stream.quality[steps, top], stream.cost_usd[steps, top],
                  stream.latency_s[steps, top], top)
    return {"random": random, "best_fixed": fixed(best), "most_expensive": fixed(dearest), "oracle": oracle}


def most_expensive_model(mean_cost_usd: np.ndarray, mean_quality: np.ndarray) -> int:
    """Index of the model with the highest mean cost; among models priced alike, the best one."""
    top = np.nanmax(mean_cost_usd)
    tied = np.flatnonzero(mean_cost_usd >= top * (1.0 - 1e-9))
    return int(tied[np.nanargmax(mean_quality[tied])]) if len(tied) > 1 else int(tied[0])


def _metrics(run: _Run, reference: dict[str, _Run]) -> dict[str, float]:
    total = float(run.reward.sum())
    dearest, random = reference["most_expensive"], reference["random"]
    return {
        "cumulative_reward": total,
        "mean_reward": float(run.reward.mean()),
        "regret_vs_best_fixed": float(reference["best_fixed"].reward.sum()) - total,
        "regret_vs_oracle": float(reference["oracle"].reward.sum()) - total,
        "convergence_step": run.convergence_step,
        "converged_share": run.converged_share,
        "mean_quality": float(run.quality.mean()),
        "total_cost_usd": float(run.cost_usd.sum()),
        "mean_latency_s": float(run.latency_s.mean()),
        "cost_reduction_vs_most_expensive": 1.0 - _ratio(run.cost_usd.sum(), dearest.cost_usd.sum()),
        "latency_reduction_vs_random": 1.0 - _ratio(run.latency_s.mean(), random.latency_s.mean()),
        "quality_retained": _ratio(run.quality.mean(), dearest.quality.mean()),
    }


# -- helpers ---------------------------------------------------------------------------
def _spec(learner: Any) -> Spec | Callable[[int], Learner]:
    if isinstance(learner, (str, Spec)):
        return LEARNERS.spec(learner)
    if callable(learner):
        return learner
    raise CrossroadsError(f"a learner is a spec (e.g. 'ucb'), a Spec or a function seed -> Learner, got {learner!r}")


def _build(spec: Spec | Callable[[int], Learner], seed: int) -> Learner:
    """A new learner of ``spec`` seeded with ``seed`` (unless the spec sets its own seed)."""
    if isinstance(spec, Spec):
        return LEARNERS.build(Spec(spec.name, {"seed": seed, **spec.params}))
    return spec(seed)


def _steps(steps: Mapping[str, int] | None, names: list[str], what: str) -> dict[str, int]:
    out = {}
    for name, step in (steps or {}).items():
        if name not in names:
            raise UnknownModelError(name, names)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise CrossroadsError(f"{what}[{name!r}] must be a step number >= 0, got {step!r}")
        out[name] = int(step)
    return out


def _column_means(values: np.ndarray) -> np.ndarray:
    counts = (~np.isnan(values)).sum(axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else math.nan


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _nansd(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.std(ddof=1)) if finite.size > 1 else math.nan


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
