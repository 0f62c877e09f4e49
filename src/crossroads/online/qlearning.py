"""PickLLM's second learner: stateless Q-learning with epsilon-greedy selection."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from crossroads.checks import check_bool, check_fraction
from crossroads.errors import CrossroadsError
from crossroads.online.base import Learner


class QLearning(Learner):
    """One value ``Q`` per model, chosen greedily except for a share epsilon of random picks.

    After model ``i`` earns reward ``r``: ``Q_i <- Q_i + step_size * (r - Q_i)``
    (PickLLM, arXiv 2412.12170, Section 3).  A constant ``step_size`` is an
    exponential moving average that keeps following a model whose quality, price or
    latency drifts; ``step_size=None`` uses ``1/n`` (the sample mean) instead.

    At selection ``t`` (0-based) the learner explores with probability
    ``eps_t = max(epsilon_min, epsilon * epsilon_decay**t)``: constant epsilon by
    default, decaying with ``epsilon_decay < 1``.  The greedy model is therefore chosen
    with probability ``1 - eps_t + eps_t/k`` among ``k`` candidates (split evenly when
    several tie), any other with ``eps_t/k``.  New models start at ``initial_q``; the
    default 1.0 is optimistic for rewards in [0, 1], so every model gets tried early.
    Rewards may be any finite number (PickLLM's weighted reward can be negative).

    The session has converged once the same model has been the greedy one (the only
    model with the highest ``Q``) at ``patience`` consecutive selections, whatever the
    exploration drew meanwhile; with ``sticky`` it then gets every request.

    >>> learner = QLearning(epsilon=0.1, seed=0)
    >>> learner.update(learner.select(["small", "large"]), reward=0.0)
    >>> decision = learner.select(["small", "large"])
    >>> round(decision.probability, 3)  # greedy: 1 - 0.1 + 0.1 / 2
    0.95
    """

    name = "qlearning"
    reward_range = None

    def __init__(
        self,
        step_size: float | None = 0.1,
        epsilon: float = 0.1,
        epsilon_decay: float = 1.0,
        epsilon_min: float = 0.0,
        initial_q: float = 1.0,
        patience: int = 50,
        sticky: bool = True,
        seed: int | None = None,
    ):
        if step_size is not None:
            check_fraction(step_size, "step_size", low_open=True)
        check_fraction(epsilon, "epsilon")
        check_fraction(epsilon_decay, "epsilon_decay", low_open=True)
        check_fraction(epsilon_min, "epsilon_min")
        if isinstance(initial_q, bool) or not isinstance(initial_q, (int, float)) or not math.isfinite(initial_q):
            raise CrossroadsError(f"initial_q must be a finite number, got {initial_q!r}")
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise CrossroadsError(f"patience must be a positive number of selections, got {patience!r}")
        check_bool(sticky, "sticky")
        self.step_size = step_size
        self.epsilon = epsilon
        self.epsilon_decay = epsilon_decay
        self.epsilon_min = epsilon_min
        self.initial_q = initial_q
        self.patience = patience
        self.sticky = sticky
        super().__init__(seed=seed)

    def current_epsilon(self) -> float:
        """The exploration rate of the next selection."""
        return max(self.epsilon_min, self.epsilon * self.epsilon_decay**self.steps_)

    def _new_stats(self) -> dict[str, Any]:
        return {"last": None, "streak": 0}

    def _new_arm(self, model: str) -> dict[str, Any]:
        return {"q": float(self.initial_q), "n": 0}

    def _select(self, candidates, context, rng):
        q = [self.arms_[m]["q"] for m in candidates]
        k, eps = len(candidates), self.current_epsilon()
        best = max(q)
        greedy = [i for i, v in enumerate(q) if v == best]
        if rng.random() < eps:
            chosen = int(rng.integers(k))
        else:
            chosen = greedy[int(rng.integers(len(greedy)))] if len(greedy) > 1 else greedy[0]
        probabilities = {m: eps / k for m in candidates}
        for i in greedy:
            probabilities[candidates[i]] += (1.0 - eps) / len(greedy)
        stats = self.stats_
        leader = candidates[greedy[0]] if len(greedy) == 1 else None  # no leader while values tie
        if leader is None:
            stats["streak"] = 0
        elif stats["last"] == leader:
            stats["streak"] += 1
        else:
            stats["streak"] = 1
        stats["last"] = leader
        return candidates[chosen], probabilities, dict(zip(candidates, q))

    def _update(self, model: str, reward: float, context: np.ndarray | None) -> None:
        arm = self.arms_[model]
        arm["n"] += 1
        step = self.step_size if self.step_size is not None else 1.0 / arm["n"]
        arm["q"] += step * (reward - arm["q"])

    def _on_remove(self, model: str) -> None:
        if self.stats_["last"] == model:
            self.stats_["last"], self.stats_["streak"] = None, 0

    def _converged(self) -> str | None:
        return self.stats_["last"] if self.stats_["streak"] >= self.patience else None
