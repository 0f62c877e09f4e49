"""Offline routers, by their spec names: ``make_router("knn:k=100")``, ``load_router("default")``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossroads.pretrained import router_path
from crossroads.registry import Registry
from crossroads.routers.base import Router, read_router_file

#: The routers by spec name.
ROUTERS = Registry("router", {
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
})


def make_router(spec: str, **params: Any) -> Router:
    """A new, unfitted router: ``make_router("knn", k=100)`` or ``make_router("knn:k=100")``."""
    return ROUTERS.build(spec, **params)


def load_router(path: str | Path) -> Router:
    """A fitted router from a file written by ``Router.save``, or ``"default"``: the pretrained default router."""
    header, arrays = read_router_file(router_path(path))
    router = make_router(header["router"], **header["params"])
    router.models_ = list(header["models"])
    router.embedder_ = header["embedder"]
    router._restore(arrays)
    return router


__all__ = ["ROUTERS", "Router", "load_router", "make_router"]
