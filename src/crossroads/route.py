"""Route one prompt among a described pool and explain the decision (``crossroads route``).

The router predicts each model's quality on the prompt (the pretrained default router
unless a router file is given); each model's expected cost comes from its list price
(input tokens of the prompt plus a typical answer); a decision rule from
:mod:`crossroads.decisions` picks the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossroads.costs import ExpectedCost
from crossroads.data.descriptors import parse_pool
from crossroads.data.pricing import ASSUMED_OUTPUT_TOKENS, estimate_tokens
from crossroads.decisions import choose_cheapest_within, choose_max_utility
from crossroads.errors import CrossroadsError

DEFAULT_TOLERANCE = 0.05


@dataclass
class RouteDecision:
    model: str
    rule: str
    router: str
    rows: list[dict]

    def to_json(self) -> dict:
        return {"model": self.model, "rule": self.rule, "router": self.router, "models": self.rows}


def decide(prompt: str, pool: str, *, router_file: str | None = None, tolerance: float | None = None,
           willingness_to_pay: float | None = None, embedder: str = "minilm-onnx",
           category: str | None = None) -> RouteDecision:
    """Which model of ``pool`` (see :func:`crossroads.data.descriptors.parse_pool`) should answer ``prompt``.

    ``category`` is the prompt's task, for routers that read categories (see ``Router.reads_category``).
    """
    from crossroads.embeddings import make_embedder
    from crossroads.pretrained import default_router_path
    from crossroads.routers import load_router

    if not prompt.strip():
        raise CrossroadsError("the prompt is empty: pass the text to route")
    descriptors = parse_pool(pool)
    if len(descriptors) < 2:
        raise CrossroadsError(f"the pool has one model ({descriptors[0].name}): name at least two to choose between")
    path = router_file or default_router_path()
    router = load_router(path)
    names = [d.name for d in descriptors]
    if router.open_pool:
        router.add_models(descriptors)
    cols = [router.model_column(name) for name in names]
    encoder = make_embedder(embedder)
    if router.embedder_ and encoder.name != router.embedder_:
        raise CrossroadsError(f"{path} was trained on {router.embedder_} embeddings; pass --embedder to match")
    quality = router.predict(encoder.embed([prompt]), [prompt], [category])[:, cols]
    cost = ExpectedCost.from_prices(descriptors).predict([estimate_tokens(prompt)])
    if willingness_to_pay is not None:
        pick = int(choose_max_utility(quality, cost, willingness_to_pay)[0])
        rule = (f"highest predicted quality - {willingness_to_pay:g} x expected cost (US$): "
                f"{quality[0, pick]:.3f} - {willingness_to_pay:g} x {cost[0, pick]:.6f}")
    else:
        tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
        pick = int(choose_cheapest_within(quality, cost, tolerance)[0])
        best = int(np.argmax(quality[0]))
        rule = (f"cheapest model predicted within {tolerance:g} of the best ({names[best]} {quality[0, best]:.3f}): "
                f"{names[pick]} {quality[0, pick]:.3f}")
        if pick != best and cost[0, best] > 0:
            rule += f", {100 * (1 - cost[0, pick] / cost[0, best]):.0f}% cheaper than {names[best]}"
    rows = [{
        "model": d.name,
        "tier": d.resolved_tier,
        "price": _price(d),
        "predicted_quality": float(quality[0, j]),
        "expected_cost_usd": float(cost[0, j]),
    } for j, d in enumerate(descriptors)]
    label = "pretrained default (irt)" if router_file is None else f"{router.name} from {router_file}"
    rule += f"; cost = list price x (prompt tokens + {ASSUMED_OUTPUT_TOKENS} answer tokens)"
    return RouteDecision(names[pick], rule, label, rows)


def _price(descriptor) -> str:
    if descriptor.price_per_mtok_in is None or descriptor.price_per_mtok_out is None:
        return f"{descriptor.resolved_tier} tier typical"
    return f"{descriptor.price_per_mtok_in:g}/{descriptor.price_per_mtok_out:g}"
