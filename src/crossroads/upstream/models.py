"""How to reach one upstream model and what it costs: the settings every provider reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossroads.objective.cost import Price, cost_usd


@dataclass(frozen=True)
class ModelConfig:
    """One upstream model: where it is served, how to reach it, and its price."""

    name: str
    base_url: str = "https://api.openai.com/v1"
    upstream_model: str = ""  # the name the upstream knows it by (default: name)
    api_key_env: str | None = None  # environment variable holding the key; never the key itself
    provider: str = "openai"
    price_per_mtok_in: float = 0.0
    price_per_mtok_out: float = 0.0
    expected_latency_s: float | None = None  # for objectives that weigh latency before any is measured
    tier: str | None = None  # small/medium/large/frontier, for routers that place models by descriptors
    timeout_s: float = 60.0
    max_retries: int = 2
    local: str | bool = False  # a model crossroads runs here by llama.cpp: a name of LOCAL_MODELS (True: gemma-3-270m)
    defaults: dict[str, Any] = field(default_factory=dict)  # request fields used when the client sends none

    @property
    def price(self) -> Price:
        return Price(self.price_per_mtok_in, self.price_per_mtok_out, "config")

    def cost_usd(self, tokens_in: float, tokens_out: float) -> float:
        return cost_usd(tokens_in, tokens_out, self.price)
