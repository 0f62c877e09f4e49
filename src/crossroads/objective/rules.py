"""Decision rules: turn predicted quality and expected cost into a choice of model, per query.

Pure numpy, vectorised over queries.  :func:`decide` is the one call that the server,
the Python client, ``crossroads route``, the evaluation harness and the simulator make,
so that the same predictions under the same rule always give the same model.

Any number of models (a :class:`DecisionRule`, written as a spec such as ``within:tolerance=0.05``):

* ``reward`` (:class:`MaxReward`): the best expected reward under the objective, with
  cost and latency scaled over the query's candidates (or any ``Reward`` object);
* ``utility`` (:class:`MaxUtility`): the best ``quality - willingness_to_pay * cost``;
* ``within`` (:class:`CheapestWithin`): the cheapest model predicted within ``tolerance``
  of the best prediction.

Strong/weak (RouteLLM): a win probability P(strong beats weak) per query and a threshold;
the strong model is called when the probability is >= threshold (:func:`route_strong_weak`).

Ties are broken by lower expected cost, then by column order (the first model of the
pool wins).  Values equal up to rounding (within ``TIE_RTOL`` relative, at least 1e-12
absolute) count as ties, so that 0.7 - 0.2 and 0.9 - 0.4 tie.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Literal

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.objective.rewards import LinearReward, PoolScale, Reward
from crossroads.objective.weights import Objective
from crossroads.registry import Registry, Spec

OverCap = Literal["cheapest", "raise"]
TIE_RTOL = 1e-12

_ROUTELLM_MODEL = re.compile(r"router-(?P<router>[A-Za-z0-9_]+)-(?P<threshold>.+)")


# -- any number of models ------------------------------------------------------------
class DecisionRule(ABC):
    """Orders the models of each query from first choice to last.

    A rule values each model (``values``: what it weighs, higher is better) and gives
    sort keys (lower sorts first, the most significant key first); column order breaks
    whatever ties remain.
    """

    name: ClassVar[str]

    @abstractmethod
    def values(self, quality: np.ndarray, cost: np.ndarray, latency: np.ndarray | None,
               candidates: np.ndarray) -> np.ndarray:
        """What the rule weighs each model at, ``(n_queries, n_models)``; ``candidates`` marks those that compete."""

    def keys(self, quality: np.ndarray, cost: np.ndarray, latency: np.ndarray | None,
             candidates: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
        """Sort keys, each ``(n_queries, n_models)``: by default the best value first, then the cheapest."""
        return [-_snap(values, candidates), cost]


@dataclass(frozen=True)
class MaxUtility(DecisionRule):
    """The model maximising ``quality - willingness_to_pay * cost``; the harness sweeps it.

    ``willingness_to_pay`` is in quality units per US$ (a number, or one per query): 0
    picks the best predicted model, a large value the cheapest.
    """

    name: ClassVar[str] = "utility"
    willingness_to_pay: float | np.ndarray = 0.0

    def __post_init__(self) -> None:
        wtp = np.asarray(self.willingness_to_pay, dtype=np.float64)
        if wtp.ndim > 1 or not np.isfinite(wtp).all() or (wtp < 0).any():
            raise CrossroadsError("willingness_to_pay must be finite and >= 0 (quality units per US$; 0 = ignore "
                                  "cost), one number or one per query")

    def values(self, quality, cost, latency, candidates):
        wtp = np.asarray(self.willingness_to_pay, dtype=np.float64)
        if wtp.ndim == 1 and len(wtp) != len(quality):
            raise CrossroadsError(f"willingness_to_pay must be a number or one value per query ({len(quality)}), "
                                  f"got shape {wtp.shape}")
        return quality - (wtp[:, None] if wtp.ndim else wtp) * cost


@dataclass(frozen=True)
class CheapestWithin(DecisionRule):
    """The cheapest model predicted within ``tolerance`` (quality units) of the best candidate.

    Among equally cheap ones the better predicted; the models outside the tolerance
    follow, best predicted first.
    """

    name: ClassVar[str] = "within"
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        tolerance = _finite_scalar(self.tolerance, "tolerance")
        if tolerance < 0:
            raise CrossroadsError(f"tolerance must be >= 0 (quality units below the best prediction), got {tolerance}")

    def values(self, quality, cost, latency, candidates):
        return quality

    def keys(self, quality, cost, latency, candidates, values):
        best = np.where(candidates, quality, -np.inf).max(axis=1, keepdims=True)
        close = quality >= best - self.tolerance - _slack(best)
        return [~close, np.where(close, cost, -quality), np.where(close, -quality, cost)]


@dataclass(frozen=True)
class MaxReward(DecisionRule):
    """The model with the best expected reward: predicted quality against expected cost and latency.

    With an :class:`Objective`, the reward is its ``LinearReward`` with cost and latency
    scaled over each query's candidates; any other ``Reward`` is used as it is.
    """

    name: ClassVar[str] = "reward"
    objective: Objective | Reward = field(default_factory=Objective)

    def values(self, quality, cost, latency, candidates):
        weights = self.objective if isinstance(self.objective, Objective) else None
        if weights is not None and weights.latency and latency is None:
            raise CrossroadsError(f"the objective {weights} weighs latency: give every candidate model an expected "
                                  "latency (expected_latency_s in a server's config)")
        if weights is None:
            return np.asarray(self.objective(quality, cost, latency), dtype=np.float64)
        if not (weights.cost or weights.latency):
            return LinearReward(weights)(quality)
        reward = np.empty_like(quality)
        for i, row in enumerate(candidates):  # a scale per query, over its candidates
            scale = PoolScale.from_observed(cost[i, row], None if latency is None else latency[i, row])
            reward[i] = LinearReward(weights, scale)(quality[i], cost[i], None if latency is None else latency[i])
        return reward


#: The rules by their spec names: ``reward``, ``utility:willingness_to_pay=100``, ``within:tolerance=0.05``.
RULES = Registry(
    "decision rule",
    {"reward": "crossroads.objective.rules:MaxReward",
     "utility": "crossroads.objective.rules:MaxUtility",
     "within": "crossroads.objective.rules:CheapestWithin"},
    {"reward": "the best expected reward under the objective",
     "utility": "the best quality - willingness_to_pay x cost",
     "within": "the cheapest model predicted within tolerance of the best"},
)


def make_rule(spec: str | Spec, objective: Objective) -> DecisionRule:
    """The decision rule ``spec`` names (``reward``, ``within:tolerance=0.05`` ...); ``reward`` weighs by ``objective``.

    >>> make_rule("within:tolerance=0.02", Objective())
    CheapestWithin(tolerance=0.02)
    """
    spec = RULES.spec(spec)
    return MaxReward(objective) if spec.name == MaxReward.name else RULES.build(spec)


class Choices:
    """What :func:`decide` decided: ``chosen`` per query, the full ``ranking``, the rule's ``values`` of every
    model, and where the cost cap was unmet."""

    def __init__(self, keys: list[np.ndarray], candidates: np.ndarray, cap_unmet: np.ndarray, values: np.ndarray):
        self._keys = keys
        self.values = values
        self.candidates = candidates
        #: True for the queries where no allowed model's expected cost was under the cap (the cheapest was taken).
        self.cap_unmet = cap_unmet

    @cached_property
    def chosen(self) -> np.ndarray:
        """The column chosen for each query, shape ``(n_queries,)``."""
        alive = self.candidates
        for key in self._keys:
            masked = np.where(alive, key, np.inf)
            alive = alive & (masked <= masked.min(axis=1, keepdims=True))
        return np.argmax(alive, axis=1)

    @cached_property
    def ranking(self) -> np.ndarray:
        """Every column of each query from first choice to last, candidates before the others, ``(n_queries, n_models)``."""
        columns = np.broadcast_to(np.arange(self.candidates.shape[1]), self.candidates.shape)
        return np.lexsort([columns, *reversed(self._keys), ~self.candidates], axis=-1)


def decide(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    rule: DecisionRule,
    *,
    expected_latency_s: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    max_cost_usd: float | np.ndarray | None = None,
    if_none_within_cap: OverCap = "cheapest",
) -> Choices:
    """The choice of ``rule`` among each query's candidates.

    ``predicted_quality`` is ``(n_queries, n_models)``; ``expected_cost_usd`` and
    ``expected_latency_s`` are ``(n_models,)`` or the same shape.  Candidates are the
    ``allowed`` models (bool mask ``(n_models,)`` or ``(n_queries, n_models)``) whose
    expected cost is <= ``max_cost_usd``.  When no allowed model fits under the cap,
    ``if_none_within_cap="cheapest"`` takes the cheapest allowed model (flagged in
    ``cap_unmet``) and ``"raise"`` raises.

    >>> quality = np.array([[0.70, 0.72, 0.90]])
    >>> cost = np.array([0.001, 0.002, 0.030])
    >>> decide(quality, cost, CheapestWithin(0.05)).chosen.tolist(), decide(quality, cost, MaxUtility(0.0)).chosen.tolist()
    ([0], [2])
    >>> decide(quality, cost, MaxUtility(10.0)).ranking.tolist()
    [[2, 1, 0]]
    """
    if not isinstance(rule, DecisionRule):
        raise CrossroadsError(f"rule must be a DecisionRule (MaxReward, MaxUtility, CheapestWithin), got {rule!r}")
    quality, cost, mask = _checked(predicted_quality, expected_cost_usd, allowed)
    latency = None
    if expected_latency_s is not None:
        latency = np.asarray(expected_latency_s, dtype=np.float64)
        if latency.shape not in ((quality.shape[1],), quality.shape) or not np.isfinite(latency).all() or (latency < 0).any():
            raise CrossroadsError(f"expected latencies must be finite, >= 0 s and of shape {cost.shape[1:]} or {cost.shape}")
        latency = np.broadcast_to(latency, quality.shape)
    candidates, unmet = _within_cap(cost, mask, max_cost_usd, if_none_within_cap)
    values = rule.values(quality, cost, latency, candidates)
    return Choices(rule.keys(quality, cost, latency, candidates, values), candidates, unmet, values)


# -- strong / weak -------------------------------------------------------------
def route_strong_weak(win_probability: np.ndarray | float, threshold: float) -> np.ndarray:
    """True where the strong model is called: ``win_probability >= threshold`` (RouteLLM's rule)."""
    threshold = _finite_scalar(threshold, "threshold")
    p = np.asarray(win_probability, dtype=np.float64)
    if np.isnan(p).any():
        raise CrossroadsError("win probabilities contain NaN: the router produced no score for some queries")
    return p >= threshold


def calibrate_threshold(win_probabilities: np.ndarray, strong_share: float) -> float:
    """The threshold that sends ``strong_share`` of the calibration queries to the strong model.

    Same as RouteLLM's ``calibrate_threshold.py``: the ``1 - strong_share`` quantile
    of the win probabilities with linear interpolation.  On untied probabilities the
    share routed strong by :func:`route_strong_weak` is within ``1/n`` of the target.
    """
    strong_share = _finite_scalar(strong_share, "strong_share")
    if not 0.0 <= strong_share <= 1.0:
        raise CrossroadsError(f"strong_share must be a fraction in [0, 1] (0.3 = 30% strong calls), got {strong_share}")
    p = np.asarray(win_probabilities, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise CrossroadsError(f"need a non-empty 1-D array of win probabilities, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise CrossroadsError("win probabilities contain NaN or infinity")
    return float(np.quantile(p, 1.0 - strong_share))


def parse_routellm_model(name: str) -> tuple[str, float]:
    """``"router-<router>-<threshold>"`` -> ``(router, threshold)``, as RouteLLM's server reads it.

    >>> parse_routellm_model("router-sw_ranking-0.2143")
    ('sw_ranking', 0.2143)
    """
    match = _ROUTELLM_MODEL.fullmatch(name.strip()) if isinstance(name, str) else None
    expected = (
        "expected a model name of the form 'router-<router>-<threshold>', e.g. 'router-mf-0.11593' "
        "(router name: letters, digits and underscores; threshold: a number in [0, 1])"
    )
    if match is None:
        raise CrossroadsError(f"malformed RouteLLM model name {name!r}: {expected}")
    try:
        threshold = float(match["threshold"])
    except ValueError:
        raise CrossroadsError(
            f"malformed RouteLLM model name {name!r}: threshold is not a number; {expected}"
        ) from None
    if not 0.0 <= threshold <= 1.0:  # also rejects nan
        raise CrossroadsError(f"RouteLLM model name {name!r}: threshold {threshold} is outside [0, 1]; {expected}")
    return match["router"], threshold


# -- helpers -------------------------------------------------------------------
def _slack(best: np.ndarray) -> np.ndarray:
    """How far below the best value still counts as a tie (rounding error only)."""
    return TIE_RTOL * np.maximum(1.0, np.abs(best))


def _snap(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``values`` with those within rounding of the best candidate's set to it, so that they tie exactly."""
    best = np.where(candidates, values, -np.inf).max(axis=1, keepdims=True)
    return np.where(values >= best - _slack(best), best, values)


def _finite_scalar(value: object, name: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CrossroadsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise CrossroadsError(f"{name} must be a finite number, got {number}")
    return number


def _checked(
    predicted_quality: np.ndarray, expected_cost_usd: np.ndarray, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(quality (n,m), cost (n,m), allowed (n,m))``."""
    quality = np.asarray(predicted_quality, dtype=np.float64)
    if quality.ndim != 2 or quality.shape[1] == 0:
        raise CrossroadsError(
            f"predicted quality must have shape (n_queries, n_models), got {quality.shape}; "
            "for a single query pass quality[None, :]"
        )
    n, m = quality.shape
    if not np.isfinite(quality).all():
        raise CrossroadsError("predicted quality contains NaN or infinity: every allowed model needs a prediction")
    cost = np.asarray(expected_cost_usd, dtype=np.float64)
    if cost.shape not in ((m,), (n, m)):
        raise CrossroadsError(
            f"expected cost must have shape ({m},) or ({n}, {m}) to match the predictions, got {cost.shape}"
        )
    if not np.isfinite(cost).all() or (cost < 0).any():
        raise CrossroadsError("expected costs must be finite and >= 0 US$")
    cost = np.broadcast_to(cost, (n, m))
    if allowed is None:
        mask = np.ones((n, m), dtype=bool)
    else:
        mask = np.asarray(allowed)
        if mask.dtype != bool:
            raise CrossroadsError(f"allowed must be a boolean mask, got dtype {mask.dtype}")
        if mask.shape not in ((m,), (n, m)):
            raise CrossroadsError(f"allowed must have shape ({m},) or ({n}, {m}), got {mask.shape}")
        mask = np.broadcast_to(mask, (n, m))
        empty = ~mask.any(axis=1)
        if empty.any():
            raise CrossroadsError(
                f"no model is allowed for {int(empty.sum())} of {n} queries (first: query {int(np.argmax(empty))}); "
                "allow at least one model per query"
            )
    return quality, cost, mask


def _within_cap(cost: np.ndarray, mask: np.ndarray, max_cost_usd: float | np.ndarray | None,
                if_none_within_cap: OverCap) -> tuple[np.ndarray, np.ndarray]:
    """The mask of models competing for each query, and the queries where none of the allowed fit under the cap."""
    if if_none_within_cap not in ("cheapest", "raise"):
        raise CrossroadsError(f"if_none_within_cap must be 'cheapest' or 'raise', got {if_none_within_cap!r}")
    n = len(cost)
    if max_cost_usd is None:
        return mask, np.zeros(n, dtype=bool)
    cap = np.asarray(max_cost_usd, dtype=np.float64)
    if cap.ndim > 1 or (cap.ndim == 1 and len(cap) != n):
        raise CrossroadsError(f"max_cost_usd must be a number or one value per query ({n}), got shape {cap.shape}")
    if np.isnan(cap).any() or (cap < 0).any():
        raise CrossroadsError("max_cost_usd must be >= 0 US$ (use None for no cap)")
    cap = np.broadcast_to(cap, (n,))
    within = mask & (cost <= cap[:, None])
    unmet = ~within.any(axis=1)
    if unmet.any():
        if if_none_within_cap == "raise":
            first = int(np.argmax(unmet))
            cheapest = float(np.where(mask[first], cost[first], np.inf).min())
            raise CrossroadsError(
                f"no allowed model fits under max_cost_usd for {int(unmet.sum())} queries "
                f"(query {first}: cap {cap[first]:g} US$, cheapest allowed model {cheapest:g} US$); "
                "raise the cap or allow cheaper models"
            )
        allowed_cost = np.where(mask, cost, np.inf)
        cheapest_allowed = mask & (allowed_cost == allowed_cost.min(axis=1, keepdims=True))
        within = np.where(unmet[:, None], cheapest_allowed, within)
    return within, unmet
