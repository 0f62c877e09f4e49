"""What ``crossroads serve`` runs with no config file, and with models named by ``--model``.

The embedded default pool is two small models run here by llama.cpp, gemma-3-270m and
SmolLM2-135M-Instruct, so a fresh machine with no API key serves and routes.  They are
priced by size (``LOCAL_PRICE_PER_BILLION_USD`` per billion parameters per million
tokens, the smallest serverless tier pro rata), which is how the pretrained default router
tells them apart.  The route ``auto`` starts every decision from that router's
predictions and puts a ``linucb`` learner on top, which learns from the feedback clients
send.  Both models cost nothing to run here, so its objective weighs quality alone.  With
``$OPENAI_API_KEY`` set, gpt-4o-mini and gpt-4o join the pool and the objective becomes
``quality=1,cost=0.5``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from crossroads.errors import CrossroadsError
from crossroads.objective import Objective
from crossroads.registry import Spec, bind
from crossroads.serve.config import (
    DEFAULT_ROUTE,
    DEFAULT_STORE,
    ModelConfig,
    ServeConfig,
    parse_config,
    pretrained_route,
)
from crossroads.upstream.local_model import LOCAL_MODELS

#: OpenAI's list prices, US$ per million tokens (input, output), when this default was written.
OPENAI_PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00)}
#: A local model's price per billion parameters, US$ per million tokens: serverless hosting's
#: smallest tier ($0.10 for models up to 4B parameters) pro rata.
LOCAL_PRICE_PER_BILLION_USD = 0.10 / 4


def default_config(env: Mapping[str, str] = os.environ) -> ServeConfig:
    models = [local_model(name) for name in LOCAL_MODELS]
    objective = Objective(quality=1)
    if env.get("OPENAI_API_KEY"):
        models += [ModelConfig(name=name, upstream_model=name, api_key_env="OPENAI_API_KEY",
                               price_per_mtok_in=price_in, price_per_mtok_out=price_out)
                   for name, (price_in, price_out) in OPENAI_PRICES.items()]
        objective = Objective(quality=1, cost=0.5)
    return ServeConfig(models=tuple(models), routes=(pretrained_route(objective),), default_route=DEFAULT_ROUTE,
                       store=env.get("CROSSROADS_STORE", DEFAULT_STORE))


def local_model(name: str) -> ModelConfig:
    """A model of ``LOCAL_MODELS`` as a pool member, priced by size; its base_url comes when it starts."""
    model = LOCAL_MODELS[name]
    price = round(model.params_billion * LOCAL_PRICE_PER_BILLION_USD, 6)
    defaults = {"max_tokens": 128, **({"stop": list(model.stop)} if model.stop else {})}
    return ModelConfig(name=name, local=name, base_url="", upstream_model=name, max_retries=1, timeout_s=120.0,
                       price_per_mtok_in=price, price_per_mtok_out=price, tier="small", defaults=defaults)


def config_from_models(specs: Sequence[str]) -> ServeConfig:
    """A config from ``--model NAME[:key=value,...]`` specs: the pool, and ``auto`` when it has two or more models.

    Keys are a model's config keys (``base_url``, ``api_key_env``, ``tier`` ...), plus
    ``price=IN/OUT`` (or one figure for both) for ``price_per_mtok_in`` and ``_out``.

    >>> config_from_models(["a:price=1/2", "b:price=0.1"]).model("b").price_per_mtok_out
    0.1
    """
    models = []
    for text in specs:
        spec = Spec.parse(text, "--model")
        if spec.positional is not None:
            raise CrossroadsError(f"--model {text!r}: {spec.positional!r} is not key=value; write NAME:price=IN/OUT,...")
        params = dict(spec.params)
        if "price" in params:
            params.update(_price(text, params.pop("price")))
        models.append(bind(ModelConfig, Spec(spec.name, {"name": spec.name, **params}), f"--model {text!r}"))
    return parse_config({"models": models})  # two or more models: the route `auto` (config.pretrained_route)


def _price(text: str, price: str) -> dict[str, float]:
    try:
        figures = [float(part) for part in price.split("/")]
    except ValueError:
        figures = []
    if len(figures) not in (1, 2) or min(figures, default=-1) < 0:
        raise CrossroadsError(f"--model {text!r}: price={price!r}: give US$ per million tokens, IN/OUT or one figure")
    return {"price_per_mtok_in": figures[0], "price_per_mtok_out": figures[-1]}
