"""Route one prompt among a described pool and explain the decision (``crossroads route``).

The router (the pretrained default router unless a router file is given) predicts each
model's quality on the prompt, and :class:`~crossroads.routers.pool.PooledRouter` ranks the
pool by a decision rule, exactly as a server route with the same router file, rule and
objective does.  The rule is, unless one is named: the best expected reward under the
objective when one is given, else the cheapest model predicted within 0.05 of the best.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossroads.data.descriptors import ModelDescriptor, parse_pool
from crossroads.errors import CrossroadsError
from crossroads.objective import Objective, parse_objective
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS
from crossroads.objective.rules import CheapestWithin, MaxUtility, make_rule
from crossroads.pretrained import DEFAULT_ROUTER_NAME

#: The rule when neither a rule nor an objective is given.
DEFAULT_RULE = "within:tolerance=0.05"


@dataclass
class RouteDecision:
    model: str
    rule: str
    router: str
    rows: list[dict]

    def to_json(self) -> dict:
        return {"model": self.model, "rule": self.rule, "router": self.router, "models": self.rows}


def route_prompt(prompt: str, pool: str, *, router_file: str | None = None, rule: str | None = None,
                 objective: str | Objective | None = None, embedder: str = "minilm-onnx",
                 category: str | None = None) -> RouteDecision:
    """Which model of ``pool`` (see :func:`crossroads.data.descriptors.parse_pool`) should answer ``prompt``.

    ``rule`` is a decision rule spec (``reward``, ``utility:willingness_to_pay=100``,
    ``within:tolerance=0.05``); ``objective`` weighs quality, cost and latency for the
    ``reward`` rule.  ``category`` is the prompt's task, for routers that read categories.
    """
    from crossroads.embeddings import make_embedder
    from crossroads.routers import load_router
    from crossroads.routers.pool import PooledRouter

    if not prompt.strip():
        raise CrossroadsError("the prompt is empty: pass the text to route")
    descriptors = parse_pool(pool)
    if len(descriptors) < 2:
        raise CrossroadsError(f"the pool has one model ({descriptors[0].name}): name at least two to choose between")
    weights = Objective() if objective is None else parse_objective(objective)
    decision_rule = make_rule(rule or ("reward" if objective is not None else DEFAULT_RULE), weights)
    router = load_router(router_file or DEFAULT_ROUTER_NAME)
    encoder = make_embedder(embedder)
    if router.embedder_ and encoder.name != router.embedder_:
        raise CrossroadsError(f"{router_file} was trained on {router.embedder_} embeddings; pass --embedder to match")
    pooled = PooledRouter(router, descriptors, encoder.name)
    unknown = [d.name for d in descriptors if d.name not in pooled.models]
    if unknown:
        raise CrossroadsError(f"the {router.name} router of {router_file} predicts only for the models it was trained "
                              f"on ({', '.join(router.models_)}), not {', '.join(unknown)}")
    ranking = pooled.rank(encoder.embed([prompt])[0], prompt, decision_rule, category=category)
    rows = [{
        "model": d.name,
        "tier": d.resolved_tier,
        "price": _price(d),
        "predicted_quality": ranking.predicted_quality[d.name],
        "expected_cost_usd": ranking.expected_cost_usd[d.name],
    } for d in descriptors]
    label = f"pretrained default ({router.name})" if router_file is None else f"{router.name} from {router_file}"
    explained = _explain(decision_rule, weights, ranking)
    explained += f"; cost = list price x (prompt tokens + {ASSUMED_OUTPUT_TOKENS} answer tokens)"
    return RouteDecision(ranking.model, explained, label, rows)


def _explain(rule, objective: Objective, ranking) -> str:
    pick = ranking.model
    quality, cost = ranking.predicted_quality, ranking.expected_cost_usd
    if isinstance(rule, MaxUtility):
        wtp = rule.willingness_to_pay
        return (f"highest predicted quality - {wtp:g} x expected cost (US$): "
                f"{quality[pick]:.3f} - {wtp:g} x {cost[pick]:.6f}")
    if isinstance(rule, CheapestWithin):
        best = max(quality, key=lambda m: quality[m])
        text = (f"cheapest model predicted within {rule.tolerance:g} of the best ({best} {quality[best]:.3f}): "
                f"{pick} {quality[pick]:.3f}")
        if pick != best and cost[best] > 0:
            text += f", {100 * (1 - cost[pick] / cost[best]):.0f}% cheaper than {best}"
        return text
    return (f"best expected reward under {objective}, cost scaled over the pool: {pick} "
            f"(predicted quality {quality[pick]:.3f}, expected cost {cost[pick]:.6f} US$)")


def _price(descriptor: ModelDescriptor) -> str:
    if descriptor.price_per_mtok_in is None or descriptor.price_per_mtok_out is None:
        return f"{descriptor.resolved_tier} tier typical"
    return f"{descriptor.price_per_mtok_in:g}/{descriptor.price_per_mtok_out:g}"
