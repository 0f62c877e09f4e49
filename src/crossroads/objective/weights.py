"""The user's objective: how much quality, cost and latency each matter.

``Objective(quality=1, cost=0.5)`` holds the weights; :mod:`crossroads.objective.rewards`
turns them into a reward for an outcome and :mod:`crossroads.objective.rules` into a
decision among predicted outcomes.

>>> parse_objective("quality=1,cost=0.5")
Objective(quality=1.0, cost=0.5, latency=0.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from crossroads.errors import CrossroadsError

#: The weight names ``parse_objective`` accepts, in the order ``str(objective)`` writes them.
WEIGHTS = ("quality", "cost", "latency")


@dataclass(frozen=True)
class Objective:
    """The user's weights for quality, cost and latency: finite, non-negative, not all zero.

    Only the ratios matter to ``LinearReward`` (it divides by the sum).
    ``str(objective)`` gives the form ``parse_objective`` reads.

    >>> Objective(quality=1, cost=0.5)
    Objective(quality=1.0, cost=0.5, latency=0.0)
    >>> str(Objective(quality=1, cost=0.5))
    'quality=1,cost=0.5,latency=0'
    """

    quality: float = 1.0
    cost: float = 0.0
    latency: float = 0.0

    def __post_init__(self) -> None:
        for name in WEIGHTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise CrossroadsError(f"objective weight {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise CrossroadsError(f"objective weight {name} must be finite, got {value!r}")
            if value < 0:
                raise CrossroadsError(
                    f"objective weight {name}={value:g} is negative; weights are >= 0 "
                    f"(a larger {name} weight already penalises {'a low quality' if name == 'quality' else 'a high ' + name})"
                )
            object.__setattr__(self, name, float(value))
        if self.total == 0:
            raise CrossroadsError("objective weights are all zero: give quality, cost or latency a positive weight")

    @property
    def total(self) -> float:
        return self.quality + self.cost + self.latency

    def __str__(self) -> str:
        return ",".join(f"{name}={getattr(self, name):g}" for name in WEIGHTS)


def parse_objective(text: str | Mapping[str, object] | Objective) -> Objective:
    """An Objective from ``"quality=1,cost=0.5,latency=0.2"`` (the CLI's form) or a mapping (a config's or request's).

    Names may come in any order and in any case.  A name the text leaves out has weight 0;
    one a mapping leaves out has ``Objective``'s default (quality 1, cost and latency 0).

    >>> parse_objective("quality=1, cost=0.5") == parse_objective({"cost": 0.5})
    True
    """
    example = "for example quality=1,cost=0.5,latency=0.2"
    if isinstance(text, Objective):
        return text
    if isinstance(text, Mapping):
        given = {str(name).lower(): value for name, value in text.items()}
        unknown = sorted(set(given) - set(WEIGHTS))
        if unknown:
            raise CrossroadsError(f"objective {dict(text)!r}: unknown weight {unknown[0]!r}; the weights are "
                                  f"{', '.join(WEIGHTS)}")
        return Objective(**given)  # type: ignore[arg-type]
    if not isinstance(text, str) or not text.strip():
        raise CrossroadsError(f"objective is empty: write weights as name=value pairs, {example}")
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = (piece.strip() for piece in part.partition("="))
        name = name.lower()
        if not sep or not name or not value:
            raise CrossroadsError(f"objective {text!r}: {part.strip()!r} is not name=value; {example}")
        if name not in WEIGHTS:
            raise CrossroadsError(f"objective {text!r}: unknown weight {name!r}; the weights are {', '.join(WEIGHTS)}")
        if name in weights:
            raise CrossroadsError(f"objective {text!r}: {name} is given twice")
        try:
            weights[name] = float(value)
        except ValueError:
            raise CrossroadsError(f"objective {text!r}: {name}={value!r} is not a number") from None
    return Objective(**{name: weights.get(name, 0.0) for name in WEIGHTS})
