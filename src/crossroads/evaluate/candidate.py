"""How a candidate router would have done on logged traffic, estimated off-policy (``crossroads eval --logs``).

The candidate decides every logged query as a server route with its router file would:
its predicted quality of each model of the pool, each model's expected cost at list price
for the prompt's estimated tokens plus ``ASSUMED_OUTPUT_TOKENS`` of answer, and the
route's decision rule (:func:`crossroads.objective.rules.decide`, the best expected reward
under the objective unless another rule is named).  Its mean reward, quality and cost are
then estimated from the decisions where the logged choice matches it, weighted by
``1 / propensity``: IPS, self-normalised IPS and doubly robust (reward model: each model's
mean observed value per category, shrunk to its overall mean, as in
:mod:`crossroads.evaluate.traffic_estimates`), each with a 95% Poisson-bootstrap interval,
beside the logging policy's own observed means.

A decision's reward is the route objective's :class:`~crossroads.objective.rewards.LinearReward`
of the served answer's quality and cost, with cost scaled over what the pool's models are
expected to charge for that prompt (the logged values use the same scale, so the two
compare).  Quality figures need labelled decisions (a quality on the served answer);
cost figures use every decision with a recorded cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.evaluate.traffic_estimates import MIN_LABELLED, REPLICATES, Estimate, _shrunk_means, bootstrap
from crossroads.objective import LinearReward, Objective, PoolScale
from crossroads.objective.cost import ExpectedCost, estimate_tokens_many
from crossroads.objective.rules import DecisionRule, decide

ESTIMATORS = ("ips", "snips", "dr")
METRICS = ("reward", "quality", "cost_usd")


@dataclass
class CandidateEstimate:
    """Off-policy estimates of a candidate policy against the logging policy's observed values, per metric."""

    decisions: int
    objective: str
    rule: str
    candidate: dict[str, dict[str, Estimate]]  # metric -> estimator -> estimate
    logged: dict[str, Estimate]  # metric -> the logging policy's observed mean
    matching: dict[str, int]  # metric -> decisions whose logged choice is the candidate's
    chosen: dict[str, int] = field(default_factory=dict)  # how often the candidate picks each model

    def to_dict(self) -> dict:
        return {"decisions": self.decisions, "objective": self.objective, "rule": self.rule,
                "candidate": {metric: {e: est.to_dict() for e, est in by.items()}
                              for metric, by in self.candidate.items()},
                "logged": {metric: est.to_dict() for metric, est in self.logged.items()},
                "matching": self.matching, "chosen": self.chosen}


def logged_rewards(logs: RoutingDataset, objective: Objective) -> np.ndarray:
    """Each logged decision's reward under ``objective`` (NaN where unlabelled or nothing was served)."""
    if objective.latency:
        raise CrossroadsError(f"the objective {objective} weighs latency: off-policy estimates from logs weigh "
                              "quality and cost only; drop the latency weight")
    n = logs.n_queries
    rows = np.arange(n)
    served = np.maximum(logs.served, 0)
    quality = np.where(logs.served >= 0, logs.quality[rows, served], np.nan)
    expected = expected_costs(logs)
    cost = np.where(logs.served >= 0, logs.cost_usd[rows, served], np.nan)
    cost = np.where(np.isfinite(cost), cost, expected[rows, served])
    if not (objective.cost or objective.latency):
        return LinearReward(objective)(quality)
    reward = np.full(n, np.nan)
    for i in np.flatnonzero(np.isfinite(quality)):
        reward[i] = LinearReward(objective, PoolScale.from_observed(expected[i]))(quality[i], cost[i])
    return reward


def expected_costs(logs: RoutingDataset) -> np.ndarray:
    """What each model of the pool is expected to charge for each logged prompt, (n, m): its list price for the
    prompt's tokens plus an assumed answer, or, for a model without a known price, its mean logged cost."""
    from crossroads.data.descriptors import describe

    intercept, per_token = np.zeros(logs.n_models), np.zeros(logs.n_models)
    for j, model in enumerate(logs.models):
        try:
            price = describe(model).price
        except CrossroadsError:
            seen = logs.cost_usd[:, j][np.isfinite(logs.cost_usd[:, j])]
            if not seen.size:
                raise CrossroadsError(f"model {model.name!r} has no price and no logged cost: give the pool's "
                                      "prices (the server stores them; `crossroads logs export` writes them)") from None
            intercept[j] = seen.mean()
            continue
        one = ExpectedCost.from_prices([price])
        intercept[j], per_token[j] = one.intercept_usd[0], one.usd_per_token[0]
    return ExpectedCost(intercept, per_token).predict(estimate_tokens_many(logs.prompts))


def candidate_choices(router, logs: RoutingDataset, embeddings: np.ndarray, rule: DecisionRule) -> np.ndarray:
    """The column of ``logs``' pool a router route with ``rule`` would choose for each logged query, (n,).

    Models the router was not trained on are never chosen (as in a server route).
    """
    known = [j for j, name in enumerate(logs.model_names) if name in router.models_]
    if not known:
        raise CrossroadsError(f"the {router.name} router predicts for none of the logged models "
                              f"({', '.join(logs.model_names)}); it knows {', '.join(router.models_)}")
    columns = [router.model_column(logs.model_names[j]) for j in known]
    predicted = router.predict(embeddings, logs.prompts, logs.categories)[:, columns]
    cost = expected_costs(logs)[:, known]
    return np.asarray(known)[decide(predicted, cost, rule).chosen]


def estimate_candidate(logs: RoutingDataset, chosen: Sequence[int] | np.ndarray, objective: Objective,
                       rule: str = "reward", replicates: int = REPLICATES, seed: int = 0) -> CandidateEstimate:
    """Mean reward, quality and cost had the policy choosing column ``chosen[i]`` for each logged query served them.

    ``logs`` must be logged (:attr:`RoutingDataset.logged`).  A figure rests on the logged
    decisions with a propensity and the metric's value; under :data:`MIN_LABELLED` of them,
    or of those where the logged choice matches the candidate's, there is no figure but a
    note saying why.
    """
    if not logs.logged:
        raise CrossroadsError("these outcomes hold no logged decisions (served model and propensity): off-policy "
                              "estimates need a server's log; export one with `crossroads logs export`")
    chosen = np.asarray(chosen, dtype=np.int64)
    n, m = logs.n_queries, logs.n_models
    if chosen.shape != (n,) or ((chosen < 0) | (chosen >= m)).any():
        raise CrossroadsError(f"chosen must hold one model column in 0..{m - 1} per logged query")
    rows = np.arange(n)
    served, propensity = logs.served, logs.propensity
    has_served = served >= 0
    action = np.maximum(served, 0)
    values = {"reward": logged_rewards(logs, objective),
              "quality": np.where(has_served, logs.quality[rows, action], np.nan),
              "cost_usd": np.where(has_served, logs.cost_usd[rows, action], np.nan)}
    usable = has_served & np.isfinite(propensity) & (propensity > 0) & (propensity <= 1)
    inverse = np.where(usable, 1.0 / np.where(usable, propensity, 1.0), 0.0)
    match = usable & (chosen == served)
    names, category = np.unique(np.asarray(logs.categories, dtype=object).astype(str), return_inverse=True)
    n_categories = len(names)
    pair = action * n_categories + category
    masks = {metric: np.isfinite(v) & has_served for metric, v in values.items()}
    filled = {metric: np.where(masks[metric], v, 0.0) for metric, v in values.items()}

    def statistic(w: np.ndarray) -> np.ndarray:
        out = []
        for metric in METRICS:
            v, seen = filled[metric], masks[metric]
            wk = w * (seen & usable)
            total = wk.sum()
            hit = wk * match * inverse
            overall = (wk @ v) / total if total > 0 else 0.0
            fitted = _shrunk_means(pair, v, wk, m, n_categories, overall)
            with np.errstate(invalid="ignore", divide="ignore"):
                direct = wk @ fitted[chosen, category]
                residual = hit @ (v - fitted[action, category])
                observed = w * seen
                out += [hit @ v / total, hit @ v / hit.sum(), (direct + residual) / total,
                        observed @ v / observed.sum()]
        return np.array(out)

    point, low, high = bootstrap(statistic, n, replicates, seed)
    candidate: dict[str, dict[str, Estimate]] = {}
    logged: dict[str, Estimate] = {}
    matching: dict[str, int] = {}
    for k, metric in enumerate(METRICS):
        seen = masks[metric]
        support, agree = int((seen & usable).sum()), int((seen & match).sum())
        matching[metric] = agree
        why = _why_not(metric, int(seen.sum()), support, agree, propensity[seen & usable])
        base = 4 * k
        candidate[metric] = {
            estimator: Estimate(None, n=support, note=why) if why else
            Estimate(*_finite(point[base + e], low[base + e], high[base + e]), n=support,
                     note=f"{agree} of them chose as the candidate does")
            for e, estimator in enumerate(ESTIMATORS)}
        count = int(seen.sum())
        logged[metric] = (Estimate(None, n=count, note=f"only {count} logged decisions with a {metric} (at least "
                                   f"{MIN_LABELLED} are needed for a figure)") if count < MIN_LABELLED else
                          Estimate(*_finite(point[base + 3], low[base + 3], high[base + 3]), n=count))
    picks = np.bincount(chosen, minlength=m)
    return CandidateEstimate(n, str(objective), rule, candidate, logged, matching,
                             {name: int(picks[j]) for j, name in enumerate(logs.model_names)})


def _why_not(metric: str, labelled: int, support: int, agree: int, propensities: np.ndarray) -> str:
    what = "labelled decisions" if metric != "cost_usd" else "decisions with a recorded cost"
    if support < MIN_LABELLED:
        missing = labelled - support
        return (f"only {support} {what} with a logged propensity (at least {MIN_LABELLED} are needed"
                + (f"; {missing} more have no propensity" if missing else "") + ")")
    if np.all(propensities >= 1.0):
        return ("every logged decision was made with probability 1 (a deterministic route): what the candidate "
                "would choose differently was never tried; give the route `explore: 0.05` to log usable decisions")
    if agree < MIN_LABELLED:
        return (f"only {agree} of the {support} {what} chose as the candidate does (at least {MIN_LABELLED} "
                "are needed): the log says too little about this candidate; log more traffic or explore more")
    return ""


def _finite(*values: float) -> tuple[float | None, ...]:
    return tuple(float(v) if np.isfinite(v) else None for v in values)
