"""What routing saved and what quality it served, estimated from logged traffic with bootstrap intervals.

**Savings.** What the requests would have cost had every one gone to model ``m``: input
tokens are known for every request, so they are priced exactly; output tokens depend on
the model that answers, so ``m``'s answer length on a request is predicted from the
answers ``m`` gave in the same category (a mean weighted by ``1 / propensity``, so that
requests a route sends to ``m`` more often do not count more), pulled by :data:`SHRINK`
pseudo-answers towards a multiplicative prior fitted on every answer: a length per category
times a verbosity per model.  A category ``m`` rarely answered thus borrows its length from
the other models' answers there, scaled to ``m``'s verbosity.  A model that never answered is taken to write as long as the others,
and the estimate says so.

**Quality.** The mean feedback quality of what was served, and off-policy the quality each
single model would have had (:mod:`crossroads.evaluate.off_policy`'s IPS, SNIPS and
doubly robust, the last with a per-category mean of each model's labels as its reward
model), over labelled decisions answered by the model the route chose (no fallback), with
the propensity the route logged for that choice.  Labelled decisions are taken as a
random sample of the traffic: feedback that users send only on bad answers biases every
figure here.

**Intervals.** A Poisson bootstrap over decisions (:data:`REPLICATES` replicates; every
estimate, the answer-length model and the reward model refitted on each), 95% percentile
intervals.  Every statistic is a ratio of per-group sums, so a replicate costs a few
``bincount`` calls and a million decisions take seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from crossroads.evaluate.traffic import Traffic
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS

#: Fewer labelled decisions than this and a quality figure is not given.
MIN_LABELLED = 30
#: Bootstrap replicates per interval.
REPLICATES = 200
#: Pseudo-observations pulling a category's mean (answer length, quality) towards the model's overall mean.
SHRINK = 5.0
#: Rounds of alternating means fitting the answer-length model ``scale[model] * level[category]``.
LENGTH_FIT_ROUNDS = 10
#: Off-policy estimators of a single model's quality.
ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95% interval and the number of decisions it rests on; ``value`` None when there is none."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, replicates: int = REPLICATES,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``statistic(weights)`` at unit weights, and its 2.5% and 97.5% percentiles over Poisson(1) reweightings."""
    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")
    point = np.asarray(statistic(np.ones(n)), dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(_POISSON_1[rng.integers(0, len(_POISSON_1), n, dtype=np.uint16)])
                      for _ in range(replicates)])
    with warnings.catch_warnings():  # a column of NaN draws gives a NaN interval, reported as None
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    return point, low, high


def _poisson_table(size: int = 1 << 16) -> np.ndarray:
    """Poisson(1) draws by inverse CDF at ``size`` evenly spaced quantiles: indexing it with uniform integers
    draws Poisson(1) weights (to 1/65,536 in probability) about fifteen times faster than ``rng.poisson``."""
    from scipy.stats import poisson

    return poisson.ppf((np.arange(size) + 0.5) / size, 1.0).astype(np.float64)


_POISSON_1 = _poisson_table()


# -- savings -----------------------------------------------------------------------------
def spend_if_always(traffic: Traffic, prices: dict[str, tuple[float, float]], replicates: int = REPLICATES,
                    seed: int = 0) -> dict:
    """The served spend and, per priced model, the spend had it answered every answered request, and the savings.

    Returns ``{"decisions", "served_usd", "models": {name: {"spend_usd": Estimate, "savings": Estimate,
    "answers_seen": int}}}`` (a model never served says so in its estimates' notes); savings are
    ``1 - served / always that model``.
    """
    rows = np.flatnonzero(traffic.answered)
    names = [name for name in traffic.model_names if name in prices]
    if not rows.size or not names:
        return {"decisions": int(rows.size), "served_usd": 0.0, "models": {}}
    codes = np.array([traffic.model_index(name) for name in names])
    price_in = np.array([prices[name][0] for name in names]) / 1e6
    price_out = np.array([prices[name][1] for name in names]) / 1e6
    model, category = traffic.model[rows], traffic.category[rows]
    tokens_in, tokens_out, cost = traffic.tokens_in[rows], traffic.tokens_out[rows], traffic.cost_usd[rows]
    cost = np.where(np.isfinite(cost), cost, 0.0)
    inverse = _inverse_propensity(traffic, rows)
    n_models, n_categories = len(traffic.model_names), max(len(traffic.category_names), 1)
    seen = np.bincount(model, minlength=n_models)[codes]

    def statistic(w: np.ndarray) -> np.ndarray:
        length = _answer_lengths(model, category, tokens_out, w * inverse, n_models, n_categories)[codes]
        per_category = np.bincount(category, weights=w, minlength=n_categories)
        always = price_in * (w @ tokens_in) + price_out * (length @ per_category)
        served = w @ cost
        return np.concatenate([always, 1.0 - served / always])

    point, low, high = bootstrap(statistic, len(rows), replicates, seed)
    k = len(names)
    models = {}
    for j, name in enumerate(names):
        note = "" if seen[j] else (f"{name} answered no request here: its answers are assumed to be as long "
                                   "as the other models' in each category")
        models[name] = {
            "spend_usd": Estimate(*_finite(point[j], low[j], high[j]), n=int(rows.size), note=note),
            "savings": Estimate(*_finite(point[k + j], low[k + j], high[k + j]), n=int(rows.size), note=note),
            "answers_seen": int(seen[j]),
        }
    return {"decisions": int(rows.size), "served_usd": float(cost.sum()), "models": models}


# -- quality -------------------------------------------------------------------------------
def served_quality(traffic: Traffic, replicates: int = REPLICATES, seed: int = 0) -> Estimate:
    """The mean feedback quality of the answers served (fallbacks included), over the labelled decisions."""
    rows = np.flatnonzero(traffic.answered & np.isfinite(traffic.quality))
    if rows.size < MIN_LABELLED:
        return Estimate(None, n=int(rows.size), note=_too_few(rows.size))
    quality = traffic.quality[rows]
    point, low, high = bootstrap(lambda w: np.array([w @ quality / w.sum()]), len(rows), replicates, seed)
    return Estimate(*_finite(point[0], low[0], high[0]), n=int(rows.size))


def single_model_quality(traffic: Traffic, replicates: int = REPLICATES,
                         seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """Off-policy: ``{model: {"ips" | "snips" | "dr": Estimate}}``, the quality had every request gone to that model."""
    labelled = traffic.answered & np.isfinite(traffic.quality) & (traffic.fallbacks == 0) & (traffic.model >= 0)
    usable = labelled & np.isfinite(traffic.propensity) & (traffic.propensity > 0)
    rows = np.flatnonzero(usable)
    names = traffic.model_names
    missing = int(labelled.sum() - rows.size)
    why = _why_not(traffic, rows, labelled, missing)
    if why:
        return {name: {estimator: Estimate(None, n=int(rows.size), note=why) for estimator in ESTIMATORS}
                for name in names}
    n_models, n_categories = len(names), max(len(traffic.category_names), 1)
    action, category = traffic.model[rows], traffic.category[rows]
    quality, inverse = traffic.quality[rows], 1.0 / traffic.propensity[rows]
    pair = action * n_categories + category
    chosen = np.bincount(action, minlength=n_models)

    def statistic(w: np.ndarray) -> np.ndarray:
        total = w.sum()
        weighted = w * inverse
        ips_sum = np.bincount(action, weights=weighted * quality, minlength=n_models)
        ips_weight = np.bincount(action, weights=weighted, minlength=n_models)
        overall = w @ quality / total
        fitted = _shrunk_means(pair, quality, w, n_models, n_categories, overall)  # (models, categories)
        per_category = np.bincount(category, weights=w, minlength=n_categories)
        residual = np.bincount(action, weights=weighted * (quality - fitted[action, category]), minlength=n_models)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.concatenate([ips_sum / total, ips_sum / ips_weight, (fitted @ per_category + residual) / total])

    point, low, high = bootstrap(statistic, len(rows), replicates, seed)
    note = f"{missing} labelled decisions without a propensity left out" if missing else ""
    result = {}
    for j, name in enumerate(names):
        if not chosen[j]:
            result[name] = {estimator: Estimate(None, n=int(rows.size), note=f"{name} was never chosen on a "
                                                "labelled decision: nothing says how it would have done")
                            for estimator in ESTIMATORS}
            continue
        result[name] = {estimator: Estimate(*_finite(point[e * n_models + j], low[e * n_models + j],
                                                     high[e * n_models + j]), n=int(rows.size), note=note)
                        for e, estimator in enumerate(ESTIMATORS)}
    return result


# -- internals -----------------------------------------------------------------------------
def _shrunk_means(pair: np.ndarray, values: np.ndarray, weights: np.ndarray, n_models: int, n_categories: int,
                  default: float) -> np.ndarray:
    """Weighted mean of ``values`` per (model, category), pulled towards the model's mean, that towards ``default``."""
    size = n_models * n_categories
    sums = np.bincount(pair, weights=weights * values, minlength=size).reshape(n_models, n_categories)
    counts = np.bincount(pair, weights=weights, minlength=size).reshape(n_models, n_categories)
    model_mean = (sums.sum(axis=1) + SHRINK * default) / (counts.sum(axis=1) + SHRINK)
    return (sums + SHRINK * model_mean[:, None]) / (counts + SHRINK)


def _answer_lengths(model: np.ndarray, category: np.ndarray, tokens: np.ndarray, weights: np.ndarray,
                    n_models: int, n_categories: int) -> np.ndarray:
    """Expected answer length per (model, category): the model's weighted mean there, pulled towards
    ``scale[model] * level[category]``, a multiplicative model fitted to every answer by alternating
    weighted means (:data:`LENGTH_FIT_ROUNDS` rounds; each part pulled towards ``ASSUMED_OUTPUT_TOKENS`` or 1)."""
    pair = model * n_categories + category
    size = n_models * n_categories
    sums = np.bincount(pair, weights=weights * tokens, minlength=size).reshape(n_models, n_categories)
    counts = np.bincount(pair, weights=weights, minlength=size).reshape(n_models, n_categories)
    prior = SHRINK * ASSUMED_OUTPUT_TOKENS
    scale = np.ones(n_models)
    for _ in range(LENGTH_FIT_ROUNDS):
        level = (sums.sum(axis=0) + prior) / (scale @ counts + SHRINK)
        scale = (sums.sum(axis=1) + prior) / (counts @ level + prior)
    return (sums + SHRINK * scale[:, None] * level[None, :]) / (counts + SHRINK)


def _inverse_propensity(traffic: Traffic, rows: np.ndarray) -> np.ndarray:
    """``1 / propensity`` of each answered decision whose chosen model answered; 1 where that is unknown."""
    propensity = traffic.propensity[rows]
    own = (traffic.model[rows] == traffic.chosen[rows]) & np.isfinite(propensity) & (propensity > 0)
    return np.where(own, 1.0 / np.where(own, propensity, 1.0), 1.0)


def _why_not(traffic: Traffic, rows: np.ndarray, labelled: np.ndarray, missing: int) -> str:
    if rows.size < MIN_LABELLED:
        return (_too_few(rows.size) + (f" ({missing} more have no logged propensity)" if missing else "")
                + "; off-policy estimates need labelled decisions with the probability their route gave the choice")
    if np.all(traffic.propensity[rows] >= 1.0):
        return ("every labelled decision was made with probability 1 (a deterministic route): the models it did "
                "not choose were never tried on those requests, so no estimate is unbiased; give the route "
                "`explore: 0.05` (or a learner) to log decisions these estimates can use")
    return ""


def _too_few(n: int) -> str:
    return f"only {n} labelled decisions (at least {MIN_LABELLED} are needed for a figure)"


def _finite(*values: float) -> tuple[float | None, ...]:
    return tuple(float(v) if np.isfinite(v) else None for v in values)
