"""Thompson sampling with a Beta posterior per model."""

from __future__ import annotations

import numpy as np

from crossroads.checks import check_positive
from crossroads.errors import CrossroadsError
from crossroads.online.base import CountingLearner


class ThompsonSampling(CountingLearner):
    """Draws a mean reward for each candidate from its posterior and picks the largest draw.

    Each model's posterior is ``Beta(prior_alpha + s, prior_beta + n - s)``, where ``n``
    counts its rewards and ``s`` sums them.  Rewards must be in [0, 1]; a fractional
    reward ``r`` counts as ``r`` of a success and ``1 - r`` of a failure (the usual
    Beta-Bernoulli update generalised to graded quality scores, which keeps decisions
    deterministic given the seed, unlike re-sampling a Bernoulli outcome).

    The probability of the chosen model has no closed form, so the decision records a
    Monte Carlo estimate: ``(1 + wins) / (1 + propensity_draws)``, where ``wins``
    counts how often the model also wins in ``propensity_draws`` further joint draws
    from the posteriors; the decision's own draw is the ``+1``, which keeps the
    estimate in (0, 1] at a bias below ``1 / (1 + propensity_draws)``.  Every other
    candidate's probability is its share of wins in the same draws, so the estimates
    sum to 1 (a candidate that never wins gets 0).  ``discount``
    or ``window`` forget old rewards (see :class:`~crossroads.online.base.CountingLearner`).

    >>> learner = ThompsonSampling(seed=0)
    >>> learner.add_model("small"); learner.add_model("large")
    >>> for _ in range(20):
    ...     learner.update("large", 1.0)
    ...     learner.update("small", 0.0)
    >>> decision = learner.select(["small", "large"])
    >>> decision.model, decision.probability > 0.95
    ('large', True)
    """

    name = "thompson"

    def __init__(
        self,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        discount: float = 1.0,
        window: int | None = None,
        propensity_draws: int = 100,
        seed: int | None = None,
    ):
        check_positive(prior_alpha, "prior_alpha")
        check_positive(prior_beta, "prior_beta")
        _check_draws(propensity_draws)
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_draws = propensity_draws
        super().__init__(discount=discount, window=window, seed=seed)

    def _select(self, candidates, context, rng):
        n = np.array([self.arms_[m]["n"] for m in candidates])
        s = np.array([self.arms_[m]["s"] for m in candidates])
        a, b = self.prior_alpha + s, self.prior_beta + np.maximum(n - s, 0.0)
        draws = rng.beta(a, b)
        chosen = int(np.argmax(draws))
        probabilities = {candidates[0]: 1.0}
        if len(candidates) > 1:
            more = rng.beta(a, b, size=(self.propensity_draws, len(candidates)))
            probabilities = propensities(more, chosen, candidates)
        return candidates[chosen], probabilities, dict(zip(candidates, draws.tolist()))


def propensities(draws: np.ndarray, chosen: int, candidates: list[str]) -> dict[str, float]:
    """Monte Carlo probability that each column wins, counting the decision's own draw as a win of ``chosen``."""
    wins = np.bincount(np.argmax(draws, axis=1), minlength=len(candidates)).astype(np.float64)
    wins[chosen] += 1.0
    return dict(zip(candidates, (wins / (1 + len(draws))).tolist()))


def _check_draws(propensity_draws: int) -> None:
    if not isinstance(propensity_draws, int) or isinstance(propensity_draws, bool) or propensity_draws < 1:
        raise CrossroadsError(
            f"propensity_draws must be a positive number of posterior draws, got {propensity_draws!r}"
        )
