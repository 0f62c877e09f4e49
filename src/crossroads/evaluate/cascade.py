"""Cascades: call a model, judge its answer, stop or call another; and their replay on recorded responses.

A cascade *decision* is a chain of calls.  After each answer a verifier
(:mod:`crossroads.grading.verifiers`) says how far each answer seen so far can be
trusted; the policy then names the next model or stops, and the answer returned is the
one the verifier trusts most.  Two policies, both working on whole batches of queries:

* :class:`FixedCascade` (FrugalGPT's shape): a fixed chain of models, cheapest first;
  stop as soon as the most trusted answer reaches the step's threshold.
* :class:`CascadeRouting` (Dekoninck et al., ICLR 2025): the next model is chosen per
  query from the router's predictions, updated by the answers seen so far, by the value
  ``expected quality of the returned answer - willingness_to_pay x expected cost``;
  stop when no model adds value, after ``max_calls`` calls, or when the next call would
  pass the per-query cap ``max_cost_usd``.  With nothing called yet it picks
  ``argmax prior - opening x wtp x cost``: with ``opening`` 1 what the router would, so a
  plain router is its first step; above 1 it starts cheaper, because a doubtful answer can
  still be escalated (the one-step value below does not count that option).

How the value of calling model k is estimated (one step ahead): ``a`` is the trust of
the best answer so far, ``b`` model k's expected quality.  If the verifier could always
tell a good answer from a bad one, the returned answer would be good with probability
``a + b - ab``; if it could never, ``max(a, b)``.  The policy takes
``max(a, b) + resolve x (min(a, b) - ab)``: ``resolve`` in [0, 1] is how well the verifier
separates answers (0.5 by default; 0 for queries whose answers cannot be extracted).  This is what makes a cheap second opinion worth
calling when the first answer is uncertain: its agreement can save the expensive call.
``b`` is the router's prior moved by what the answers showed: the mean change in log-odds
from prior to trust of the models already called, times ``difficulty``, is added to every
uncalled model's log-odds (answers less trusted than predicted mean a harder query).

Replay (:func:`replay`): the cost of a cascade is the sum of the recorded costs of every
model it called, its latency the sum of their latencies (a sequential chain), its quality
the recorded quality of the answer it returned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.grading.verifiers import PRIOR_FLOOR, Answers, Verifier


class CascadePolicy(ABC):
    """Names the next model of each query's chain, or -1 to stop.

    ``next_models(prior, expected_cost_usd, called, trust, spent_usd, allowed, readable)`` sees,
    per query x model: the router's predicted quality, the expected cost, which models were
    called, the verifier's trust in their answers (NaN where not called), and per query the
    expected cost spent so far; ``allowed`` (optional) masks models that may not be called,
    ``readable`` (optional, per query) says whether an answer can be extracted and compared
    at all (False for code or prose: calling a second model then buys no second opinion).
    """

    @abstractmethod
    def next_models(self, prior: np.ndarray, expected_cost_usd: np.ndarray, called: np.ndarray, trust: np.ndarray,
                    spent_usd: np.ndarray, allowed: np.ndarray | None = None,
                    readable: np.ndarray | None = None) -> np.ndarray: ...


def _best_trust(trust: np.ndarray, called: np.ndarray) -> np.ndarray:
    return np.where(called, np.nan_to_num(trust, nan=0.0), -np.inf).max(1)


class CascadeRouting(CascadePolicy):
    """Cascade routing: the next model maximises added quality - ``willingness_to_pay`` x cost (see the module).

    ``willingness_to_pay`` is in quality per US$, as in :class:`crossroads.objective.rules.MaxUtility`;
    ``max_cost_usd`` caps each query's expected spend (None: no cap); ``max_calls`` the chain's length;
    ``opening`` multiplies the weight of cost in the first call's choice (see the module).
    """

    def __init__(self, willingness_to_pay: float = 0.0, resolve: float = 0.5, difficulty: float = 0.5,
                 max_cost_usd: float | None = None, max_calls: int = 3, opening: float = 1.0):
        if not (willingness_to_pay >= 0 and 0 <= resolve <= 1 and difficulty >= 0 and max_calls >= 1
                and opening >= 1):
            raise CrossroadsError("cascade routing: need willingness_to_pay >= 0, resolve in [0, 1], difficulty >= 0, "
                                  f"max_calls >= 1 and opening >= 1; got {willingness_to_pay}, {resolve}, "
                                  f"{difficulty}, {max_calls}, {opening}")
        if max_cost_usd is not None and not max_cost_usd > 0:
            raise CrossroadsError(f"cascade routing: max_cost_usd must be > 0 US$, got {max_cost_usd}")
        self.willingness_to_pay = willingness_to_pay
        self.resolve = resolve
        self.difficulty = difficulty
        self.max_cost_usd = max_cost_usd
        self.max_calls = max_calls
        self.opening = opening

    def expected_quality(self, prior: np.ndarray, called: np.ndarray, trust: np.ndarray) -> np.ndarray:
        """Each model's prior, moved by the answers seen so far (see the module)."""
        p = np.clip(prior, PRIOR_FLOOR, 1 - PRIOR_FLOOR)
        seen = np.clip(np.nan_to_num(trust, nan=0.5), PRIOR_FLOOR, 1 - PRIOR_FLOOR)
        shift = np.where(called, _logit(seen) - _logit(p), 0.0).sum(1) / np.maximum(called.sum(1), 1)
        return 1.0 / (1.0 + np.exp(-(_logit(p) + self.difficulty * shift[:, None])))

    def next_models(self, prior, expected_cost_usd, called, trust, spent_usd, allowed=None, readable=None):
        n = len(prior)
        none_yet = ~called.any(1)
        a = np.where(none_yet, 0.0, _best_trust(trust, called))[:, None]
        b = self.expected_quality(prior, called, trust)
        resolve = self.resolve if readable is None else self.resolve * np.asarray(readable, dtype=float)[:, None]
        gain = np.maximum(a, b) + resolve * (np.minimum(a, b) - a * b) - a
        weight = np.where(none_yet, self.opening * self.willingness_to_pay, self.willingness_to_pay)[:, None]
        value = gain - weight * expected_cost_usd
        blocked = called.copy() if allowed is None else called | ~allowed
        if self.max_cost_usd is not None:
            over = spent_usd[:, None] + expected_cost_usd > self.max_cost_usd
            blocked |= over & ~none_yet[:, None]  # the first call is always made
        value = np.where(blocked, -np.inf, value)
        choice = value.argmax(1)
        best = value[np.arange(n), choice]
        stop = ~np.isfinite(best) | ((best <= 0) & ~none_yet) | (called.sum(1) >= self.max_calls)
        return np.where(stop, -1, choice)


class FixedCascade(CascadePolicy):
    """A fixed chain of model columns; after step t, stop when the best trust is >= ``thresholds[t]``.

    ``thresholds`` is one value for every step or one per step but the last (FrugalGPT
    calibrates one per step); a chain model that may not be called is skipped.
    """

    def __init__(self, chain: Sequence[int], thresholds: float | Sequence[float] = 0.5,
                 max_cost_usd: float | None = None):
        self.chain = [int(j) for j in chain]
        if not self.chain or len(set(self.chain)) != len(self.chain):
            raise CrossroadsError(f"a fixed cascade needs distinct model columns, got {chain!r}")
        steps = len(self.chain) - 1
        self.thresholds = (np.full(max(steps, 1), float(thresholds)) if np.ndim(thresholds) == 0
                           else np.asarray(thresholds, dtype=np.float64))
        if np.ndim(thresholds) and len(self.thresholds) != steps:
            raise CrossroadsError(f"a chain of {len(self.chain)} models needs {steps} thresholds, got {len(self.thresholds)}")
        self.max_cost_usd = max_cost_usd

    def next_models(self, prior, expected_cost_usd, called, trust, spent_usd, allowed=None, readable=None):
        chain = np.array(self.chain)
        done = called[:, chain].sum(1)
        open_ = ~called[:, chain] & (True if allowed is None else allowed[:, chain])
        if self.max_cost_usd is not None:
            open_ &= (spent_usd[:, None] + expected_cost_usd[:, chain] <= self.max_cost_usd) | (done == 0)[:, None]
        has_next = open_.any(1)
        choice = np.where(has_next, chain[open_.argmax(1)], -1)
        threshold = self.thresholds[np.clip(done - 1, 0, len(self.thresholds) - 1)]
        confident = (done > 0) & (_best_trust(trust, called) >= threshold)
        return np.where(confident, -1, choice)


@dataclass
class CascadeOutcome:
    """What a replayed cascade did per query: models called (in order), answer returned, quality, cost, latency."""

    called: np.ndarray  # (n, m) bool
    order: np.ndarray  # (n, steps) model columns in call order, -1 padded
    answered: np.ndarray  # (n,) column of the returned answer
    quality: np.ndarray
    cost_usd: np.ndarray
    latency_s: np.ndarray

    @property
    def calls(self) -> np.ndarray:
        return self.called.sum(1)


def replay(policy: CascadePolicy, verifier: Verifier, answers: Answers, prior: np.ndarray,
           expected_cost_usd: np.ndarray, true_quality: np.ndarray, true_cost_usd: np.ndarray,
           latency_s: np.ndarray | None = None) -> CascadeOutcome:
    """Run ``policy`` on every query, reading the recorded answers instead of calling the models.

    A model whose outcome is not recorded (NaN quality or cost) is never called.  Latency
    is NaN when ``latency_s`` is not given.
    """
    prior = np.asarray(prior, dtype=np.float64)
    n, m = prior.shape
    expected = np.broadcast_to(np.asarray(expected_cost_usd, dtype=np.float64), (n, m))
    allowed = ~(np.isnan(true_quality) | np.isnan(true_cost_usd))
    if not allowed.any(1).all():
        raise CrossroadsError("some query has no recorded outcome for any model: drop it before replaying")
    latency = np.full((n, m), np.nan) if latency_s is None else np.asarray(latency_s, dtype=np.float64)
    readable = np.array([kind != "none" for kind in answers.kinds], dtype=bool)
    called = np.zeros((n, m), dtype=bool)
    trust = np.full((n, m), np.nan)
    spent = np.zeros(n)
    order = np.full((n, m), -1)
    active = np.arange(n)
    for step in range(m):
        if not len(active):
            break
        nxt = policy.next_models(prior[active], expected[active], called[active], trust[active], spent[active],
                                 allowed[active], readable[active])
        go = nxt >= 0
        active, nxt = active[go], nxt[go]
        called[active, nxt] = True
        order[active, step] = nxt
        spent[active] += expected[active, nxt]
        if len(active):
            sub = answers.subset(active)
            trust[active] = verifier.score(sub, prior[active], expected[active], called[active])
    return outcome(called, order, trust, true_quality, true_cost_usd, latency)


def outcome(called: np.ndarray, order: np.ndarray, trust: np.ndarray, true_quality: np.ndarray,
            true_cost_usd: np.ndarray, latency_s: np.ndarray) -> CascadeOutcome:
    """The returned answer (the most trusted called one; the lower column on ties) and the chain's totals."""
    rows = np.arange(len(called))
    answered = np.where(called, np.nan_to_num(trust, nan=0.0), -np.inf).argmax(1)
    return CascadeOutcome(
        called=called,
        order=order[:, : max(1, int((order >= 0).sum(1).max(initial=0)))],
        answered=answered,
        quality=true_quality[rows, answered],
        cost_usd=np.where(called, true_cost_usd, 0.0).sum(1),
        latency_s=np.where(called, latency_s, 0.0).sum(1),
    )


#: The answer groups (see :func:`answer_groups`); ``other`` pools the small ones.
GROUPS = ("choice-2", "choice-3", "choice-4", "choice-5", "number", "none", "other")


def group_of(kind: str, options: float) -> str:
    """The answer group of a query whose answer kind is ``kind`` with ``options`` possible answers."""
    return kind if kind != "choice" else f"choice-{min(int(options), 5)}"


def answer_groups(answers: Answers, min_queries: int = 100) -> np.ndarray:
    """Each query's group, for settings that depend on how much its answers can tell: its answer kind, and for
    multiple choice its number of options (2, 3, 4, or 5 and more; with two, cheap models agree by chance half
    the time).  Groups of fewer than ``min_queries`` queries are pooled as ``other``."""
    groups = np.array([group_of(kind, options) for kind, options in zip(answers.kinds, answers.options)],
                      dtype=object)
    names, counts = np.unique(groups, return_counts=True)
    small = names[counts < min_queries]
    return np.where(np.isin(groups, small), "other", groups)


def replay_by_group(policies: Mapping[str, CascadePolicy], groups: np.ndarray, verifier: Verifier, answers: Answers,
                    prior: np.ndarray, expected_cost_usd: np.ndarray, true_quality: np.ndarray,
                    true_cost_usd: np.ndarray, latency_s: np.ndarray | None = None) -> CascadeOutcome:
    """:func:`replay` with each query's policy ``policies[groups[i]]`` (queries are independent: a replay per group)."""
    n, m = np.shape(prior)
    expected = np.broadcast_to(np.asarray(expected_cost_usd, dtype=np.float64), (n, m))
    called, order = np.zeros((n, m), dtype=bool), np.full((n, m), -1)
    answered, quality, cost, latency = np.zeros(n, dtype=int), np.zeros(n), np.zeros(n), np.zeros(n)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        part = replay(policies[group], verifier, answers.subset(rows), prior[rows], expected[rows],
                      true_quality[rows], true_cost_usd[rows], None if latency_s is None else latency_s[rows])
        called[rows], order[rows, : part.order.shape[1]], answered[rows] = part.called, part.order, part.answered
        quality[rows], cost[rows], latency[rows] = part.quality, part.cost_usd, part.latency_s
    steps = max(1, int((order >= 0).sum(1).max(initial=0)))
    return CascadeOutcome(called, order[:, :steps], answered, quality, cost, latency)


def replay_fixed_sweep(chain: Sequence[int], thresholds: np.ndarray, verifier: Verifier, answers: Answers,
                       prior: np.ndarray, expected_cost_usd: np.ndarray, true_quality: np.ndarray,
                       true_cost_usd: np.ndarray, latency_s: np.ndarray | None = None) -> list[CascadeOutcome]:
    """:func:`replay` of ``FixedCascade(chain, t)`` for every ``t`` in ``thresholds``, on queries where every chain
    model's outcome is recorded: the trust after each prefix of the chain does not depend on the threshold, so it
    is computed once."""
    n, m = prior.shape
    chain = list(chain)
    expected = np.broadcast_to(np.asarray(expected_cost_usd, dtype=np.float64), (n, m))
    latency = np.full((n, m), np.nan) if latency_s is None else latency_s
    prefixes, trusts = [], []
    called = np.zeros((n, m), dtype=bool)
    for j in chain:
        called = called.copy()
        called[:, j] = True
        prefixes.append(called)
        trusts.append(verifier.score(answers, prior, expected, called))
    best = np.stack([_best_trust(t, c) for t, c in zip(trusts, prefixes)], axis=1)  # (n, steps)
    outcomes = []
    for threshold in np.atleast_1d(thresholds):
        stop = best[:, :-1] >= threshold
        steps = np.where(stop.any(1), stop.argmax(1), len(chain) - 1)
        picked_called = np.stack(prefixes)[steps, np.arange(n)]
        picked_trust = np.stack(trusts)[steps, np.arange(n)]
        order = np.where(np.arange(len(chain))[None, :] <= steps[:, None], np.array(chain)[None, :], -1)
        outcomes.append(outcome(picked_called, order, picked_trust, true_quality, true_cost_usd, latency))
    return outcomes


def next_model(policy: CascadePolicy, prior: Sequence[float], expected_cost_usd: Sequence[float],
               trust: dict[int, float], spent_usd: float = 0.0, allowed: Sequence[bool] | None = None,
               readable: bool = True) -> int | None:
    """One query's next model column, or None to stop: what a server needs between two calls.

    ``trust`` maps each column called so far to the verifier's trust in its answer
    (``Verifier.score`` on that query's answers).
    """
    prior_row = np.asarray(prior, dtype=np.float64)[None, :]
    called = np.zeros_like(prior_row, dtype=bool)
    trust_row = np.full_like(prior_row, np.nan)
    for column, value in trust.items():
        called[0, column], trust_row[0, column] = True, value
    mask = None if allowed is None else np.asarray(allowed, dtype=bool)[None, :]
    choice = int(policy.next_models(prior_row, np.asarray(expected_cost_usd, dtype=np.float64)[None, :], called,
                                    trust_row, np.array([spent_usd]), mask, np.array([readable]))[0])
    return None if choice < 0 else choice


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))
