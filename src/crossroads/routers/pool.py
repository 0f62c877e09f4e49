"""A fitted router over a described pool: rank the pool's models for one prompt by a decision rule.

The server's router routes, the Python client (through the server's gateway) and
``crossroads route`` all decide here, so that the same router file, pool, prompt, rule
and objective give the same model everywhere.  Expected cost is each model's list price
for the prompt's estimated tokens plus ``ASSUMED_OUTPUT_TOKENS`` of answer
(:class:`~crossroads.objective.cost.ExpectedCost`); the rule is applied by
:func:`~crossroads.objective.rules.decide`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossroads.data.descriptors import ModelDescriptor
from crossroads.errors import CrossroadsError
from crossroads.objective.cost import ExpectedCost, estimate_tokens
from crossroads.objective.rules import DecisionRule, decide
from crossroads.routers.base import Router


@dataclass
class Ranking:
    """The pool's models for one prompt, first choice first: what each was predicted to reach and cost, and
    the rule's value of each (the expected reward, the utility, or the predicted quality)."""

    models: list[str]
    predicted_quality: dict[str, float]
    expected_cost_usd: dict[str, float]
    scores: dict[str, float]

    @property
    def model(self) -> str:
        return self.models[0]


class PooledRouter:
    """``router`` placed over ``pool``; ``latency_s`` gives each model's expected latency (for objectives that weigh it).

    A router with ``open_pool`` places every model of the pool by its descriptor; any
    other router ranks only the pool models it was trained on (``models``).
    """

    def __init__(self, router: Router, pool: Sequence[ModelDescriptor], embedder: str,
                 latency_s: Sequence[float | None] | None = None):
        if router.embedder_ and router.embedder_ != embedder:
            raise CrossroadsError(f"the router was trained on {router.embedder_} embeddings, but the prompts are "
                                  f"embedded with {embedder}: embed with the router's embedder")
        if router.open_pool:
            router.add_models(list(pool))
        known = [j for j, d in enumerate(pool) if d.name in router.models_]
        self.router = router
        self.models = [pool[j].name for j in known]
        self._columns = [router.model_column(name) for name in self.models]
        self._cost = ExpectedCost.from_prices([pool[j].price for j in known])
        latencies = [None] * len(pool) if latency_s is None else list(latency_s)
        self._latency = [latencies[j] for j in known]

    def rank(self, embedding: np.ndarray, prompt: str, rule: DecisionRule, *, category: str | None = None,
             candidates: Sequence[str] | None = None) -> Ranking:
        """The ``candidates`` (default: every model of ``models``) ranked by ``rule`` for ``prompt``."""
        names = self.models if candidates is None else [m for m in candidates if m in self.models]
        if not names:
            raise CrossroadsError(f"the {self.router.name} router predicts for none of {list(candidates or [])}; "
                                  f"it knows {', '.join(self.router.models_)}")
        columns = [self.models.index(m) for m in names]
        quality = self.router.predict(np.asarray(embedding)[None, :], [prompt], [category])[:, [self._columns[j] for j in columns]]
        cost = self._cost.predict([estimate_tokens(prompt)])[:, columns]
        latencies = [self._latency[j] for j in columns]
        latency = None if None in latencies else np.array([latencies], dtype=np.float64)
        choices = decide(quality, cost, rule, expected_latency_s=latency)
        return Ranking([names[k] for k in choices.ranking[0]], dict(zip(names, quality[0].tolist())),
                       dict(zip(names, cost[0].tolist())), dict(zip(names, choices.values[0].tolist())))
