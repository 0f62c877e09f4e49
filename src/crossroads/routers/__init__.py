"""Offline routers, by their command-line names."""

from __future__ import annotations

from pathlib import Path

from crossroads.errors import CrossroadsError
from crossroads.routers.base import Router, read_router_file

_ROUTERS = {
    "random": "crossroads.routers.random_router:RandomRouter",
    "sw_ranking": "crossroads.routers.sw_ranking:SWRankingRouter",
    "mf": "crossroads.routers.mf:MatrixFactorizationRouter",
    "knn": "crossroads.routers.knn:KNNRouter",
    "mlp": "crossroads.routers.mlp:MLPRouter",
    "ridge": "crossroads.routers.ridge:RidgeRouter",
    "gbt": "crossroads.routers.gbt:GBTRouter",
    "ensemble": "crossroads.routers.ensemble:EnsembleRouter",
    "bert": "crossroads.routers.bert:BertRouter",
    "causal_llm": "crossroads.routers.causal_llm:CausalLLMRouter",
    "irt": "crossroads.routers.irt:IRTRouter",
}

ROUTER_NAMES = tuple(_ROUTERS)


def router_class(name: str) -> type[Router]:
    """The Router subclass registered as ``name``."""
    import importlib

    if name not in _ROUTERS:
        raise CrossroadsError(f"unknown router {name!r}; choose one of: {', '.join(_ROUTERS)}")
    module, attr = _ROUTERS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_router(name: str, **params) -> Router:
    return router_class(name)(**params)


def load_router(path: str | Path) -> Router:
    """A fitted router from a file written by ``Router.save``."""
    header, arrays = read_router_file(path)
    router = make_router(header["router"], **header["params"])
    router.models_ = list(header["models"])
    router.embedder_ = header["embedder"]
    router._restore(arrays)
    return router


__all__ = ["ROUTER_NAMES", "Router", "load_router", "make_router", "router_class"]
