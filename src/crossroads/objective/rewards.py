"""Rewards: what an outcome (quality, cost, latency) is worth under an objective.

``LinearReward`` (the default, in [0, 1])
    Cost and latency are min-max scaled over the pool's range (a ``PoolScale``) and
    ``reward = (w_q * quality + w_c * (1 - cost_scaled) + w_l * (1 - latency_scaled)) / (w_q + w_c + w_l)``.
    The cheapest model of the pool gets the full cost credit, the dearest none; values
    outside the range are clipped to it.
``PickLLMReward`` (for reproducing PickLLM, unbounded)
    ``R = w_a * accuracy - w_c * cost_usd - w_l * t_scaling * log10(latency_s)``; see the
    class for the source and what could not be confirmed.
``CallableReward``
    any function ``(quality, cost_usd, latency_s) -> float``.

All three also take numpy arrays and then return arrays; a missing (NaN) quality
gives a NaN reward, never a made-up one.

>>> scale = PoolScale.from_models({"small": 0.001, "large": 0.021})
>>> round(LinearReward(Objective(quality=1, cost=0.5), scale)(1.0, 0.011), 4)  # (1 * 1 + 0.5 * (1 - 0.5)) / 1.5
0.8333
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossroads.errors import CrossroadsError, UnknownModelError
from crossroads.objective.weights import Objective, parse_objective


@dataclass(frozen=True)
class PoolScale:
    """The range of cost (US$ per query) and latency (s) over the pool, for min-max scaling.

    Build it from each model's expected cost and latency (``from_models``) or from
    observed outcomes (``from_observed``).  Latency bounds
    are None when the pool's latency is unknown; an objective that weighs latency
    then cannot be scored.  When a range is empty (min == max, e.g. a pool of one model,
    or equal prices) the scaled value is 0 at or below it and 1 above it.

    >>> scale = PoolScale(cost_usd_min=0.0, cost_usd_max=0.02)
    >>> scale.scaled_cost(0.01), scale.scaled_cost(0.5)
    (0.5, 1.0)
    """

    cost_usd_min: float
    cost_usd_max: float
    latency_s_min: float | None = None
    latency_s_max: float | None = None

    def __post_init__(self) -> None:
        _check_range("cost_usd", self.cost_usd_min, self.cost_usd_max)
        if (self.latency_s_min is None) != (self.latency_s_max is None):
            raise CrossroadsError("PoolScale needs both latency_s_min and latency_s_max, or neither")
        if self.latency_s_min is not None:
            _check_range("latency_s", self.latency_s_min, self.latency_s_max)

    @property
    def has_latency(self) -> bool:
        return self.latency_s_min is not None

    def scaled_cost(self, cost_usd: float | np.ndarray) -> float | np.ndarray:
        """``cost_usd`` mapped to [0, 1]: 0 at the pool's cheapest, 1 at its dearest."""
        return _out(_min_max(cost_usd, self.cost_usd_min, self.cost_usd_max, "cost_usd"))

    def scaled_latency(self, latency_s: float | np.ndarray) -> float | np.ndarray:
        """``latency_s`` mapped to [0, 1]: 0 at the pool's fastest, 1 at its slowest."""
        if self.latency_s_min is None or self.latency_s_max is None:
            raise CrossroadsError(
                "the objective weighs latency but the pool's latency range is unknown: build the PoolScale "
                "with latencies (from_models(..., latency_s=...), from_observed(..., latency_s=...)) or set latency=0"
            )
        return _out(_min_max(latency_s, self.latency_s_min, self.latency_s_max, "latency_s"))

    @classmethod
    def from_models(
        cls,
        cost_usd: Mapping[str, float],
        latency_s: Mapping[str, float] | None = None,
        *,
        models: Sequence[str] | None = None,
    ) -> PoolScale:
        """The range of each model's expected cost (and latency) per query.

        ``models`` restricts the pool to those names, each of which must be in the
        mappings (UnknownModelError otherwise); by default the pool is ``cost_usd``'s keys.

        >>> PoolScale.from_models({"a": 0.002, "b": 0.03, "c": 0.5}, {"a": 0.4, "b": 2.0, "c": 9.0}, models=["a", "b"])
        PoolScale(cost_usd_min=0.002, cost_usd_max=0.03, latency_s_min=0.4, latency_s_max=2.0)
        """
        pool = list(cost_usd) if models is None else list(models)
        if not pool:
            raise CrossroadsError("the pool is empty: a PoolScale needs the expected cost of at least one model")
        for name in pool:
            if name not in cost_usd:
                raise UnknownModelError(name, list(cost_usd))
            if latency_s is not None and name not in latency_s:
                raise UnknownModelError(name, list(latency_s))
        costs = [float(cost_usd[name]) for name in pool]
        latencies = None if latency_s is None else [float(latency_s[name]) for name in pool]
        return cls._from_values(costs, latencies, "the pool's expected")

    @classmethod
    def from_observed(
        cls, cost_usd: Sequence[float] | np.ndarray, latency_s: Sequence[float] | np.ndarray | None = None
    ) -> PoolScale:
        """The range of observed costs (and latencies); NaN (missing) values are ignored.

        >>> PoolScale.from_observed([0.01, float("nan"), 0.03], [1.5, 0.5, 2.5])
        PoolScale(cost_usd_min=0.01, cost_usd_max=0.03, latency_s_min=0.5, latency_s_max=2.5)
        """
        return cls._from_values(cost_usd, latency_s, "observed")

    @classmethod
    def _from_values(cls, costs: Any, latencies: Any, what: str) -> PoolScale:
        costs = _finite(costs, f"{what} cost_usd")
        latency_bounds: tuple[float | None, float | None] = (None, None)
        if latencies is not None:
            values = _finite(latencies, f"{what} latency_s")
            latency_bounds = (float(values.min()), float(values.max()))
        return cls(float(costs.min()), float(costs.max()), *latency_bounds)


# -- rewards ---------------------------------------------------------------------------
class Reward:
    """Scores an outcome: ``reward(quality, cost_usd, latency_s) -> float`` (or an array).

    ``bounded`` is True when every reward lies in [0, 1].
    """

    bounded: bool = False

    def __call__(
        self,
        quality: float | np.ndarray,
        cost_usd: float | np.ndarray | None = None,
        latency_s: float | np.ndarray | None = None,
    ) -> float | np.ndarray:
        """The reward of an outcome; ``cost_usd`` and ``latency_s`` may be None when unweighted."""
        raise NotImplementedError


class LinearReward(Reward):
    """``(w_q * q + w_c * (1 - cost_scaled) + w_l * (1 - latency_scaled)) / (w_q + w_c + w_l)``, in [0, 1].

    ``cost_scaled`` and ``latency_scaled`` are min-max scaled over ``scale`` (see
    ``PoolScale``).  Quality must lie in [0, 1]; NaN quality gives a NaN reward.
    ``latency_s`` may be None when the objective gives latency no weight.

    >>> reward = LinearReward(Objective(quality=2, cost=1, latency=1), PoolScale(0.0, 0.01, 1.0, 3.0))
    >>> reward(quality=0.5, cost_usd=0.0025, latency_s=2.0)  # (2 * 0.5 + 1 * 0.75 + 1 * 0.5) / 4
    0.5625
    """

    bounded = True

    def __init__(self, objective: Objective, scale: PoolScale | None = None):
        if not isinstance(objective, Objective):
            raise CrossroadsError(f"LinearReward needs an Objective, got {type(objective).__name__}")
        if scale is None and (objective.cost or objective.latency):
            raise CrossroadsError(
                f"objective {objective} weighs cost or latency: give the pool's range as a PoolScale "
                "(PoolScale.from_models or from_observed)"
            )
        self.objective = objective
        self.scale = scale

    def __repr__(self) -> str:
        return f"LinearReward(objective={self.objective!r}, scale={self.scale!r})"

    def __call__(self, quality, cost_usd=None, latency_s=None):
        w = self.objective
        total = w.quality * _quality(quality)
        if w.cost:
            assert self.scale is not None
            total = total + w.cost * (1.0 - self.scale.scaled_cost(_required(cost_usd, "cost_usd", w)))
        if w.latency:
            assert self.scale is not None
            total = total + w.latency * (1.0 - self.scale.scaled_latency(_required(latency_s, "latency_s", w)))
        return _out(np.clip(total / w.total, 0.0, 1.0))


class PickLLMReward(Reward):
    """PickLLM's reward: ``R = w_a * a - w_c * c - w_l * t_scaling * log10(l)``.

    ``a`` is the accuracy score in [0, 1], ``c`` the cost of the query in US$ and ``l``
    the latency in seconds; ``w_a, w_c, w_l`` are the objective's quality, cost and
    latency weights.  The reward is not normalised: it can be negative or above 1,
    and latencies under one second (negative log10) raise it.

    Source: PickLLM, Sikeridis, Ramdass and Pareek, "PickLLM: Context-Aware
    RL-Assisted Large Language Model Routing", arXiv 2412.12170 (2024), reward
    ``R_m(a_m, c_m, l_m)``.  The paper itself could not be read here; the formula is
    taken from a published summary of it (themoonlight.io's review, https://www.themoonlight.io/
    tw/review/pickllm-context-aware-rl-assisted-large-language-model-routing), which renders it as ``w_a·a_m - w_c·c_m · w_l·log10(l_m)·t_scaling`` with the
    operator between the cost and latency terms lost.  A penalty for latency, as
    for cost, is the only reading consistent with the paper's aim (lower latency is
    better), so a minus is used.  The paper's values of the weights and of
    ``t_scaling`` were not found; ``t_scaling`` defaults to 1 (latency in seconds
    taken as it is).  Check both against the paper before claiming a reproduction.

    >>> reward = PickLLMReward(Objective(quality=1, cost=10, latency=0.5))
    >>> reward(quality=1.0, cost_usd=0.002, latency_s=10.0)  # 1 - 10 * 0.002 - 0.5 * 1 * log10(10)
    0.48
    """

    def __init__(self, objective: Objective, t_scaling: float = 1.0):
        if not isinstance(objective, Objective):
            raise CrossroadsError(f"PickLLMReward needs an Objective, got {type(objective).__name__}")
        if not (math.isfinite(t_scaling) and t_scaling > 0):
            raise CrossroadsError(f"t_scaling must be a finite number > 0, got {t_scaling!r}")
        self.objective = objective
        self.t_scaling = float(t_scaling)

    def __repr__(self) -> str:
        return f"PickLLMReward(objective={self.objective!r}, t_scaling={self.t_scaling!r})"

    def __call__(self, quality, cost_usd=None, latency_s=None):
        w = self.objective
        total = w.quality * _quality(quality)
        if w.cost:
            total = total - w.cost * _finite_input(_required(cost_usd, "cost_usd", w), "cost_usd", minimum=0.0)
        if w.latency:
            latency = _finite_input(_required(latency_s, "latency_s", w), "latency_s", minimum=0.0)
            if np.any(latency == 0):
                raise CrossroadsError("PickLLM's reward takes log10 of the latency: latency_s must be > 0")
            total = total - w.latency * self.t_scaling * np.log10(latency)
        return _out(total)


class CallableReward(Reward):
    """A user function ``fn(quality, cost_usd, latency_s) -> float`` as a reward.

    The function is called once per outcome (arrays are scored element by element);
    its result must be a finite number, and with ``bounded=True`` lie in [0, 1].

    >>> reward = CallableReward(lambda q, c, l: q - 100 * c, bounded=False)
    >>> reward(1.0, 0.002, 1.0)
    0.8
    """

    def __init__(self, fn: Callable[[float, float | None, float | None], float], *, bounded: bool = False):
        if not callable(fn):
            raise CrossroadsError(f"a reward function must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.bounded = bounded

    def __repr__(self) -> str:
        return f"CallableReward({getattr(self.fn, '__name__', self.fn)!r}, bounded={self.bounded})"

    def __call__(self, quality, cost_usd=None, latency_s=None):
        if all(np.ndim(x) == 0 for x in (quality, cost_usd, latency_s)):
            return self._one(quality, cost_usd, latency_s)
        q = np.asarray(quality, dtype=np.float64)
        shape = np.broadcast_shapes(*(np.shape(x) for x in (quality, cost_usd, latency_s) if x is not None))
        cells = [
            np.broadcast_to(np.asarray(x, dtype=np.float64), shape).ravel()
            if x is not None
            else [None] * math.prod(shape)
            for x in (q, cost_usd, latency_s)
        ]
        return np.array([self._one(*outcome) for outcome in zip(*cells)], dtype=np.float64).reshape(shape)

    def _one(self, quality: Any, cost_usd: Any, latency_s: Any) -> float:
        if math.isnan(float(quality)):
            return math.nan  # a missing outcome stays missing
        value = self.fn(float(quality), _float_or_none(cost_usd), _float_or_none(latency_s))
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise CrossroadsError(f"reward function returned {value!r}, not a number") from None
        if not math.isfinite(value):
            raise CrossroadsError(f"reward function returned {value!r}; rewards must be finite")
        if self.bounded and not 0.0 <= value <= 1.0:
            raise CrossroadsError(f"reward function returned {value!r}, outside [0, 1] (bounded=True)")
        return value


#: Reward forms for ``make_reward``.
REWARD_FORMS = ("linear", "pickllm")


def make_reward(
    objective: Objective | str | Callable[..., float],
    scale: PoolScale | None = None,
    *,
    form: str = "linear",
    t_scaling: float = 1.0,
) -> Reward:
    """The reward for ``objective``: an Objective, its string form, or a callable.

    ``form`` is ``"linear"`` (``LinearReward``, needs ``scale`` when cost or latency
    are weighted) or ``"pickllm"`` (``PickLLMReward`` with ``t_scaling``).  A callable
    becomes a ``CallableReward`` (``form`` and ``scale`` are then unused); an existing
    Reward is returned as it is.

    >>> make_reward("quality=1")(0.75)
    0.75
    """
    if isinstance(objective, Reward):
        return objective
    if isinstance(objective, str):
        objective = parse_objective(objective)
    if not isinstance(objective, Objective):
        if callable(objective):
            return CallableReward(objective)
        raise CrossroadsError(
            f"an objective is an Objective, a string like 'quality=1,cost=0.5' or a function, got {type(objective).__name__}"
        )
    if form == "linear":
        return LinearReward(objective, scale)
    if form == "pickllm":
        return PickLLMReward(objective, t_scaling)
    raise CrossroadsError(f"unknown reward form {form!r}; choose one of: {', '.join(REWARD_FORMS)}")


# -- helpers ---------------------------------------------------------------------------
def _check_range(name: str, low: Any, high: Any) -> None:
    for value in (low, high):
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value) or value < 0:
            raise CrossroadsError(f"PoolScale {name} bounds must be finite numbers >= 0, got {low!r} and {high!r}")
    if low > high:
        raise CrossroadsError(f"PoolScale {name}_min ({low:g}) is above {name}_max ({high:g})")


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _finite(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[~np.isnan(array)]
    if array.size == 0:
        raise CrossroadsError(f"no {what} values: the pool is empty or every value is missing")
    if not np.isfinite(array).all() or (array < 0).any():
        raise CrossroadsError(f"{what} values must be finite and >= 0")
    return array


def _min_max(values: Any, low: float, high: float, name: str) -> np.ndarray:
    x = _finite_input(values, name, minimum=0.0)
    if high > low:
        return np.clip((x - low) / (high - low), 0.0, 1.0)
    return (x > high).astype(np.float64)


def _finite_input(values: Any, name: str, minimum: float) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise CrossroadsError(f"{name} must be a number, got {values!r}") from None
    if not np.isfinite(x).all() or (x < minimum).any():
        raise CrossroadsError(f"{name} must be finite and >= {minimum:g}, got {values!r}")
    return x


def _required(values: Any, name: str, objective: Objective) -> Any:
    if values is None:
        unit = "US$ per query" if name == "cost_usd" else "seconds"
        raise CrossroadsError(f"objective {objective} weighs {name.split('_')[0]}: pass {name} ({unit})")
    return values


def _quality(values: Any) -> np.ndarray:
    try:
        q = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise CrossroadsError(f"quality must be a number in [0, 1], got {values!r}") from None
    if ((q < 0) | (q > 1) | np.isinf(q)).any():
        raise CrossroadsError(f"quality must lie in [0, 1] (NaN for missing), got {values!r}")
    return q


def _out(value: np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value
