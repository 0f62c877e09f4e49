"""UCB1: the model with the highest optimistic estimate of its mean reward."""

from __future__ import annotations

import math

from crossroads.checks import check_positive
from crossroads.online.base import CountingLearner, argmax_ties, uniform_over


class UCB(CountingLearner):
    """Chooses the candidate with the highest ``mean + exploration * sqrt(2 ln N / n)``.

    ``n`` is the model's number of rewards and ``N`` the total over the candidates
    (Auer et al. 2002; ``exploration=1`` is UCB1).  Candidates without any reward are
    tried first, in random order.  Rewards must be in [0, 1].  The choice is
    deterministic apart from ties, so ``Decision.probability`` is 1 (``1/t`` when ``t``
    candidates tie, including untried ones, and ``probabilities`` splits evenly among
    them).  ``discount`` or ``window`` (see :class:`~crossroads.online.base.CountingLearner`)
    give discounted or sliding-window UCB for pools whose models drift.

    >>> learner = UCB(seed=0)
    >>> for model, reward in [("small", 0.2), ("large", 0.9)]:
    ...     learner.update(learner.select([model]), reward)
    >>> decision = learner.select(["small", "large"])
    >>> decision.model, decision.probability
    ('large', 1.0)
    """

    name = "ucb"

    def __init__(
        self, exploration: float = 1.0, discount: float = 1.0, window: int | None = None, seed: int | None = None
    ):
        check_positive(exploration, "exploration", allow_zero=True)
        self.exploration = exploration
        super().__init__(discount=discount, window=window, seed=seed)

    def _select(self, candidates, context, rng):
        n = [self.arms_[m]["n"] for m in candidates]
        untried = [i for i, ni in enumerate(n) if ni <= 0.0]
        if untried:
            chosen = untried[int(rng.integers(len(untried)))] if len(untried) > 1 else untried[0]
            return candidates[chosen], uniform_over(candidates, untried), None
        log_total = math.log(max(sum(n), 1.0))
        index = [
            self.arms_[m]["s"] / ni + self.exploration * math.sqrt(2.0 * log_total / ni) for m, ni in zip(candidates, n)
        ]
        chosen, ties = argmax_ties(index, rng)
        return candidates[chosen], uniform_over(candidates, ties), dict(zip(candidates, index))
