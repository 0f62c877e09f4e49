"""What the user wants, and how predictions and outcomes are weighed against it.

* :mod:`~crossroads.objective.weights`: the :class:`Objective` (weights of quality, cost, latency);
* :mod:`~crossroads.objective.cost`: the one cost estimate (token counts, prices, expected cost);
* :mod:`~crossroads.objective.rewards`: what an outcome is worth (``LinearReward`` and others);
* :mod:`~crossroads.objective.rules`: decision rules and :func:`decide`, the one call that
  turns predictions into a choice of model.
"""

from crossroads.objective.cost import (
    ASSUMED_OUTPUT_TOKENS,
    NOMINAL_TOKENS_IN,
    ExpectedCost,
    Price,
    cost_usd,
    estimate_tokens,
)
from crossroads.objective.rewards import (
    CallableReward,
    LinearReward,
    PickLLMReward,
    PoolScale,
    Reward,
    make_reward,
)
from crossroads.objective.rules import (
    RULES,
    CheapestWithin,
    Choices,
    DecisionRule,
    MaxReward,
    MaxUtility,
    decide,
)
from crossroads.objective.weights import Objective, parse_objective

__all__ = [
    "ASSUMED_OUTPUT_TOKENS",
    "NOMINAL_TOKENS_IN",
    "RULES",
    "CallableReward",
    "CheapestWithin",
    "Choices",
    "DecisionRule",
    "ExpectedCost",
    "LinearReward",
    "MaxReward",
    "MaxUtility",
    "Objective",
    "PickLLMReward",
    "PoolScale",
    "Price",
    "Reward",
    "cost_usd",
    "decide",
    "estimate_tokens",
    "make_reward",
    "parse_objective",
]
