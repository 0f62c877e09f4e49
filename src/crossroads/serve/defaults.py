"""The embedded default configuration: what ``crossroads serve`` runs with no config file.

A real local model (gemma-3-270m, served by llama.cpp) is always in the pool, so the
server answers on a fresh machine with no API key; with ``$OPENAI_API_KEY`` set,
gpt-4o-mini and gpt-4o join it.  The route ``auto`` learns online (Thompson sampling,
one learner per session id) from the feedback clients send.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from crossroads.objective import Objective
from crossroads.serve.config import ModelConfig, RouteConfig, ServeConfig

#: OpenAI's list prices, US$ per million tokens (input, output), when this default was written.
OPENAI_PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00)}


def default_config(env: Mapping[str, str] = os.environ) -> ServeConfig:
    from crossroads.upstream.local_model import LOCAL_MODEL_NAME, STOP_STRINGS

    models = [ModelConfig(name=LOCAL_MODEL_NAME, local=True, base_url="", upstream_model=LOCAL_MODEL_NAME,
                          max_retries=1, timeout_s=120.0,
                          defaults={"max_tokens": 128, "stop": list(STOP_STRINGS)})]
    if env.get("OPENAI_API_KEY"):
        models += [ModelConfig(name=name, upstream_model=name, api_key_env="OPENAI_API_KEY",
                               price_per_mtok_in=price_in, price_per_mtok_out=price_out)
                   for name, (price_in, price_out) in OPENAI_PRICES.items()]
    route = RouteConfig(name="auto", learner="thompson", objective=Objective(quality=1, cost=0.5), key="session")
    return ServeConfig(models=tuple(models), routes=(route,), default_route="auto",
                       store=env.get("CROSSROADS_STORE", "sqlite:///crossroads.db"))
