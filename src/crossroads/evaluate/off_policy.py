"""Off-policy evaluation: estimate a routing policy's mean reward from another policy's log.

A log holds, for each request, the model index the logging policy chose (``actions``),
the probability it gave that choice (``propensities``, :attr:`Decision.probability`)
and the reward observed (``rewards``).  A target policy is given as its probability of
choosing each model on each logged request (``target_probabilities``, one row per
request).  Three estimators of the target's mean reward:

* :func:`ips` — inverse propensity scoring: unbiased when every model the target may
  choose had a positive logging probability; its variance grows with ``1/propensity``.
* :func:`snips` — self-normalised IPS: divides by the sum of the weights instead of
  ``n``; slightly biased, usually much less variable.
* :func:`doubly_robust` — a reward model's prediction corrected by IPS on its residual
  (Dudik et al. 2011): unbiased if either the propensities or the reward model are right.

Estimates stay unbiased for adaptive logging policies (a learner that changes as it
learns, such as epsilon-greedy) as long as each propensity is the one used at that step.

>>> import numpy as np
>>> actions, propensities, rewards = np.array([0, 1]), np.array([0.5, 0.5]), np.array([1.0, 0.0])
>>> ips(actions, propensities, rewards, fixed_policy(2, 2, 0))
1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.online.base import Learner


@dataclass
class LoggedDecisions:
    """What a logging policy did: one entry per request, ``rows`` into the reward matrix."""

    actions: np.ndarray  # (n,) model index chosen
    propensities: np.ndarray  # (n,) probability the logging policy gave that choice
    rewards: np.ndarray  # (n,) observed reward
    rows: np.ndarray  # (n,) row of the reward matrix (the query) of each request

    def __len__(self) -> int:
        return len(self.actions)


# -- estimators ------------------------------------------------------------------------
def ips(actions, propensities, rewards, target_probabilities) -> float:
    """Inverse propensity scoring: mean of ``target(a_i) / propensity_i * r_i``."""
    a, p, r, pi = _check_log(actions, propensities, rewards, target_probabilities)
    return float(np.mean(_weights(a, p, pi) * r))


def snips(actions, propensities, rewards, target_probabilities) -> float:
    """Self-normalised IPS: ``sum(w_i r_i) / sum(w_i)`` with ``w_i = target(a_i) / propensity_i``.

    Raises if every weight is zero (the target never chooses a logged model).
    """
    a, p, r, pi = _check_log(actions, propensities, rewards, target_probabilities)
    w = _weights(a, p, pi)
    if w.sum() <= 0.0:
        raise CrossroadsError("snips is undefined: the target policy gives probability 0 to every logged choice")
    return float(np.sum(w * r) / np.sum(w))


def doubly_robust(actions, propensities, rewards, target_probabilities, reward_estimates) -> float:
    """Doubly robust: ``sum_a target(a) rhat(a)`` plus IPS on the residual ``r_i - rhat(a_i)``.

    ``reward_estimates`` is the reward model: predicted reward of every model on every
    request, shape (n, m), or one value per model, shape (m,) (see :func:`mean_reward_model`).
    """
    a, p, r, pi = _check_log(actions, propensities, rewards, target_probabilities)
    n, m = pi.shape
    rhat = _as_array(reward_estimates, "reward_estimates")
    if rhat.shape == (m,):
        rhat = np.broadcast_to(rhat, (n, m))
    if rhat.shape != (n, m):
        raise CrossroadsError(f"reward_estimates must have shape ({n}, {m}) or ({m},), got {rhat.shape}")
    if np.isnan(rhat).any() or np.isinf(rhat).any():
        raise CrossroadsError("reward_estimates contain NaN or infinite values")
    direct = np.sum(pi * rhat, axis=1)
    residual = r - rhat[np.arange(n), a]
    return float(np.mean(direct + _weights(a, p, pi) * residual))


def mean_reward_model(actions, rewards, m: int) -> np.ndarray:
    """Each model's mean logged reward, shape (m,): the simplest reward model for DR.

    A model never chosen in the log gets the mean of all rewards.
    """
    a = _actions(actions, m)
    r = _as_array(rewards, "rewards")
    if r.shape != a.shape:
        raise CrossroadsError(f"rewards must have shape {a.shape} like actions, got {r.shape}")
    _finite(r, "rewards")
    counts = np.bincount(a, minlength=m).astype(float)
    sums = np.bincount(a, weights=r, minlength=m)
    overall = float(r.mean()) if r.size else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), overall)


# -- target policies -------------------------------------------------------------------
def uniform_policy(n: int, m: int) -> np.ndarray:
    """Every model with probability ``1/m`` on each of ``n`` requests."""
    _positive(n, "n"), _positive(m, "m")
    return np.full((n, m), 1.0 / m)


def fixed_policy(n: int, m: int, j: int) -> np.ndarray:
    """Always model ``j``."""
    _positive(n, "n"), _positive(m, "m")
    if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < m:
        raise CrossroadsError(f"model index j must be an integer in [0, {m}), got {j!r}")
    out = np.zeros((n, m))
    out[:, j] = 1.0
    return out


def greedy_policy(scores) -> np.ndarray:
    """The model with the highest score on each request (ties split evenly; NaN never chosen)."""
    s = _as_array(scores, "scores")
    if s.ndim != 2 or s.shape[1] == 0:
        raise CrossroadsError(f"scores must have shape (n, m) with m >= 1, got {s.shape}")
    empty = np.flatnonzero(np.isnan(s).all(axis=1))
    if empty.size:
        raise CrossroadsError(f"scores row {empty[0]} is all NaN: no model to choose")
    s = np.where(np.isnan(s), -np.inf, s)
    best = s == s.max(axis=1, keepdims=True)
    return best / best.sum(axis=1, keepdims=True)


# -- logging ---------------------------------------------------------------------------
def replay_log(
    dataset_rewards,
    logging_learner: Learner | None,
    rng: np.random.Generator,
    *,
    passes: int = 1,
    models: Sequence[str] | None = None,
) -> LoggedDecisions:
    """Run a logging policy over the rows of a reward matrix (n, m) and return its log.

    Each pass visits every row once in an order shuffled with ``rng``; the learner
    chooses among all ``m`` models, sees the reward of its choice and updates.
    ``logging_learner=None`` logs a uniform random choice (propensity ``1/m``).
    ``models`` names the columns for the learner (default ``"0"``, ``"1"``, ...).
    Use a non-sticky learner: a converged sticky learner gives the other models
    probability 0, and no estimator can then say anything about them.
    """
    rewards = _as_array(dataset_rewards, "dataset_rewards")
    if rewards.ndim != 2 or rewards.shape[0] == 0 or rewards.shape[1] == 0:
        raise CrossroadsError(f"dataset_rewards must be a non-empty matrix (n, m), got shape {rewards.shape}")
    _finite(rewards, "dataset_rewards")
    if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or passes < 1:
        raise CrossroadsError(f"passes must be an integer >= 1, got {passes!r}")
    n, m = rewards.shape
    names = [str(j) for j in range(m)] if models is None else list(models)
    if len(names) != m:
        raise CrossroadsError(f"models names {len(names)} models but dataset_rewards has {m} columns")
    rows = np.concatenate([rng.permutation(n) for _ in range(passes)])
    actions = np.empty(len(rows), dtype=int)
    propensities = np.empty(len(rows))
    if logging_learner is None:
        actions[:] = rng.integers(m, size=len(rows))
        propensities[:] = 1.0 / m
    else:
        index = {name: j for j, name in enumerate(names)}
        for t, row in enumerate(rows):
            decision = logging_learner.select(names, rng=rng)
            j = index[decision.model]
            logging_learner.update(decision, float(rewards[row, j]))
            actions[t], propensities[t] = j, decision.probability
    return LoggedDecisions(actions, propensities, rewards[rows, actions], rows)


# -- checks ----------------------------------------------------------------------------
def _weights(a: np.ndarray, p: np.ndarray, pi: np.ndarray) -> np.ndarray:
    return pi[np.arange(len(a)), a] / p


def _check_log(actions, propensities, rewards, target_probabilities):
    pi = _as_array(target_probabilities, "target_probabilities")
    if pi.ndim != 2 or pi.shape[1] == 0:
        raise CrossroadsError(f"target_probabilities must have shape (n, m), got {pi.shape}")
    n, m = pi.shape
    if n == 0:
        raise CrossroadsError("the log is empty: nothing to estimate from")
    a = _actions(actions, m)
    p = _as_array(propensities, "propensities")
    r = _as_array(rewards, "rewards")
    for name, value in (("actions", a), ("propensities", p), ("rewards", r)):
        if value.shape != (n,):
            raise CrossroadsError(f"{name} must have shape ({n},), one per row of target_probabilities, got {value.shape}")
    if np.isnan(p).any() or not ((p > 0.0) & (p <= 1.0)).all():
        bad = p[np.isnan(p) | (p <= 0.0) | (p > 1.0)][0]
        raise CrossroadsError(f"propensities must be in (0, 1], found {bad}")
    _finite(r, "rewards")
    _finite(pi, "target_probabilities")
    if (pi < 0).any() or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-6):
        raise CrossroadsError("each row of target_probabilities must be non-negative and sum to 1")
    return a, p, r, pi


def _actions(actions, m: int) -> np.ndarray:
    a = np.asarray(actions)
    if a.ndim != 1:
        raise CrossroadsError(f"actions must be a vector of model indices, got shape {a.shape}")
    whole = np.issubdtype(a.dtype, np.integer) or (
        np.issubdtype(a.dtype, np.floating) and not np.isnan(a).any() and (a == np.round(a)).all()
    )
    if a.size and not whole:
        raise CrossroadsError("actions must be integer model indices (no NaN)")
    a = a.astype(int)
    if a.size and (a.min() < 0 or a.max() >= m):
        raise CrossroadsError(f"actions must be model indices in [0, {m}), found {a.min() if a.min() < 0 else a.max()}")
    return a


def _as_array(value, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CrossroadsError(f"{name} must be numbers") from None


def _finite(value: np.ndarray, name: str) -> None:
    if np.isnan(value).any():
        raise CrossroadsError(f"{name} contain NaN")
    if np.isinf(value).any():
        raise CrossroadsError(f"{name} contain infinite values")


def _positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CrossroadsError(f"{name} must be a positive integer, got {value!r}")
