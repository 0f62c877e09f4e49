"""Linear Thompson sampling: LinUCB's regressions, explored by posterior sampling."""

from __future__ import annotations

import numpy as np

from crossroads.online.linucb import LinUCB
from crossroads.online.thompson import _check_draws, propensities


class LinTS(LinUCB):
    """Samples each candidate's reward for this query from its posterior; picks the largest.

    The per-model regressions, warm start and discounting are LinUCB's.  Model ``m``'s
    posterior is ``theta ~ N(theta_m, exploration^2 A_m^-1)`` (Agrawal & Goyal 2013);
    only the score ``x . theta`` matters for this query, and it is exactly
    ``N(x . theta_m, exploration^2 x' A_m^-1 x)``, so a scalar draw per model suffices
    and the cost stays O(k d^2).  The decision's probabilities are Monte Carlo estimates
    from ``propensity_draws`` further joint draws, as in
    :class:`~crossroads.online.thompson.ThompsonSampling`.

    >>> rng = np.random.default_rng(0)
    >>> learner = LinTS(exploration=0.1, seed=0)
    >>> for _ in range(200):
    ...     x = rng.normal(size=3)
    ...     decision = learner.select(["small", "large"], context=x)
    ...     learner.update(decision, reward=float((x[0] > 0) == (decision.model == "large")))
    >>> learner.select(["small", "large"], context=np.array([2.0, 0.0, 0.0])).model
    'large'
    """

    name = "lints"

    def __init__(
        self,
        exploration: float = 0.5,
        ridge: float = 1.0,
        fit_intercept: bool = True,
        discount: float = 1.0,
        propensity_draws: int = 100,
        seed: int | None = None,
    ):
        _check_draws(propensity_draws)
        self.propensity_draws = propensity_draws
        super().__init__(
            exploration=exploration, ridge=ridge, fit_intercept=fit_intercept, discount=discount, seed=seed
        )

    def _select(self, candidates, context, rng):
        mean, std = self._posterior(candidates, context)
        mean, std = np.array(mean), self.exploration * np.array(std)
        draws = mean + std * rng.standard_normal(len(candidates))
        chosen = int(np.argmax(draws))
        probabilities = {candidates[0]: 1.0}
        if len(candidates) > 1:
            more = mean + std * rng.standard_normal((self.propensity_draws, len(candidates)))
            probabilities = propensities(more, chosen, candidates)
        return candidates[chosen], probabilities, dict(zip(candidates, draws.tolist()))
