"""Deciding which model answers a request: the route it names, its candidates, and their order.

A request's ``model`` is one of
* a model of the pool: it passes through unrouted;
* a named route from the config: an online learner, or a trained router whose predictions
  its decision rule turns into a ranking (:class:`crossroads.routers.pool.PooledRouter`, by
  default the best expected reward under the objective), or both: a learner that starts
  each decision from the router's expected reward of every candidate (its ``prior``) and
  learns from feedback where the router was wrong;
* RouteLLM's ``router-<router>-<threshold>``: the strong model when the router's win
  probability reaches the threshold, else the weak one.
Every decision ranks all its candidates, so that a failing model falls back to the next.
A named route's decision logs the probability it had of choosing the model that answers,
including the share ``explore`` of requests sent to a uniformly drawn candidate, so that
off-policy estimates (:mod:`crossroads.evaluate.off_policy`) can weigh its log.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.objective import Objective, PoolScale
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS, NOMINAL_TOKENS_IN, estimate_tokens
from crossroads.objective.rules import MaxReward, make_rule, parse_routellm_model, route_strong_weak
from crossroads.routers.pool import PooledRouter
from crossroads.serve.budgets import scope_name
from crossroads.serve.cascade import ServedCascade
from crossroads.serve.config import ModelConfig, RouteConfig, ServeConfig
from crossroads.serve.learning import RouteLearners
from crossroads.serve.requests import BadRequest, Overrides


class UnknownRoute(BadRequest):
    """The request's ``model`` is neither a model, a route, nor a configured router name."""


@dataclass
class Choice:
    """A routing decision: ``ranking[0]`` answers, the others are its fallbacks in order.

    ``probability`` is the chance the route had of choosing ``ranking[0]`` (None for a model
    named directly and RouteLLM names); ``explored`` says that the route's exploration draw
    picked it uniformly among the candidates.
    """

    decision_id: str
    route: str
    kind: str  # model, learner, router, cascade, routellm
    ranking: list[str]
    objective: Objective
    reason: str
    learner_key: str | None = None
    probability: float | None = None
    scores: dict[str, float] | None = None
    explored: bool = False
    context: np.ndarray | None = field(default=None, repr=False)
    prior: dict[str, float] | None = field(default=None, repr=False)  # a router's expected reward, for the learner
    # a router's predicted quality and expected cost of each candidate, for a route's budget
    options: tuple[dict[str, float], dict[str, float]] | None = field(default=None, repr=False)
    budget: dict[str, float] | None = None  # a budgeted route's pacing state: lambda, spent and target US$

    @property
    def model(self) -> str:
        return self.ranking[0]

    def to_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "route": self.route, "kind": self.kind, "model": self.model,
                "fallbacks": self.ranking[1:], "probability": self.probability, "scores": self.scores,
                "explored": self.explored, "objective": str(self.objective), "reason": self.reason,
                **({"budget": self.budget} if self.budget is not None else {})}


class Routes:
    """Resolves a request's ``model`` to a decision, for one ServeConfig.

    ``rng`` draws the routes' exploration (seed it for reproducible tests); a lock shares it
    between concurrent requests.
    """

    def __init__(self, config: ServeConfig, learners: RouteLearners, embedder: Any = None,
                 rng: np.random.Generator | None = None):
        self.config = config
        self.learners = learners
        self._embedder = embedder
        self._routes = {route.name: route for route in config.routes}
        self._routers: dict[str, PooledRouter] = {}  # router file -> that router over the config's models
        self._rng = np.random.default_rng() if rng is None else rng
        self._rng_lock = threading.Lock()
        self.budgets: Any = None  # crossroads.serve.budgets.Budgets, set by the gateway
        self.cascades = {route.name: ServedCascade(route) for route in config.routes if route.cascade is not None}

    @property
    def names(self) -> list[str]:
        """Everything a client may put in ``model``: routes, then models."""
        return list(self._routes) + self.config.model_names

    def needs_embedding(self, name: str | None) -> bool:
        target = self._target(name)
        if isinstance(target, RouteConfig):
            return target.router_file is not None or self._learner_contextual(target)
        return isinstance(target, tuple)

    def decide(self, name: str | None, text: str, overrides: Overrides, unavailable: set[str] = frozenset(),
               payers: Sequence[str] = ()) -> Choice:
        """The decision for a request naming ``name`` with routing text ``text``; ``payers`` are the scopes of the
        ``pace`` budgets of the request's key and team (registered with :attr:`budgets`), which a route paces by
        besides its own."""
        target = self._target(name)
        decision_id = "dec_" + uuid.uuid4().hex
        if isinstance(target, ModelConfig):
            objective = overrides.objective or Objective()
            return Choice(decision_id, target.name, "model", [target.name], objective, "model named directly")
        if isinstance(target, tuple):
            return self._routellm(decision_id, name, *target, text, overrides, unavailable)
        route = target
        objective = overrides.objective or route.objective
        candidates = self._candidates(route, text, overrides, unavailable)
        if route.learner is not None:
            choice, own = self._learn(decision_id, route, candidates, objective, text, overrides)
        else:
            choice, own = self._predict(decision_id, route, candidates, objective, text, overrides.category)
            if route.cascade is not None:  # the decision names the first call; the gateway runs the chain
                choice = self._first_call(route, choice, text)
                own = {choice.model: 1.0}
        scopes = [*([route.name] if self.budgets is not None and route.name in self.budgets else []), *payers]
        if scopes:
            choice, own = self._pace(scopes, choice, text)
        return self._explore(route, choice, own)

    def scale(self, models: list[str], objective: Objective, tokens_in: float = NOMINAL_TOKENS_IN,
              tokens_out: float = ASSUMED_OUTPUT_TOKENS) -> PoolScale:
        """The range over ``models`` of what a request of these token counts costs (and, if weighed, takes)."""
        pool = [self.config.model(m) for m in models]
        latency = None
        if objective.latency:
            missing = [m.name for m in pool if m.expected_latency_s is None]
            if missing:
                raise CrossroadsError(
                    f"the objective weighs latency, but models {missing} have no expected_latency_s in the config"
                )
            latency = {m.name: float(m.expected_latency_s) for m in pool}
        return PoolScale.from_models({m.name: m.cost_usd(tokens_in, tokens_out) for m in pool}, latency)

    # -- targets ------------------------------------------------------------------
    def _target(self, name: str | None) -> ModelConfig | RouteConfig | tuple[str, float]:
        if name is None:
            name = self.config.default_route
            if name is None:
                raise UnknownRoute(f"the request names no `model` and the config sets no default_route; "
                                   f"name one of: {', '.join(self.names)}", "model")
        if name in self._routes:
            return self._routes[name]
        if name in self.config.model_names:
            return self.config.model(name)
        if name.startswith("router-"):
            router, threshold = _routellm_name(name)
            if self.config.routellm is None or router not in self.config.routellm.routers:
                configured = sorted(self.config.routellm.routers) if self.config.routellm else []
                raise UnknownRoute(f"model {name!r}: no router {router!r} is configured under routellm.routers "
                                   f"(configured: {', '.join(configured) or 'none'})", "model")
            return router, threshold
        raise UnknownRoute(f"unknown model {name!r}; this server routes: {', '.join(self.names)}", "model")

    def _candidates(self, route: RouteConfig, text: str, overrides: Overrides, unavailable: set[str]) -> list[str]:
        pool = list(route.models) or self.config.model_names
        if overrides.allowed_models is not None:
            unknown = [m for m in overrides.allowed_models if m not in pool]
            if unknown:
                raise BadRequest(f"crossroads.allowed_models names {unknown}, not in route {route.name!r} "
                                 f"({', '.join(pool)})", "crossroads.allowed_models")
            pool = [m for m in pool if m in overrides.allowed_models]
        if overrides.max_cost_usd is not None:
            tokens_in = estimate_tokens(text)
            affordable = [m for m in pool
                          if self.config.model(m).cost_usd(tokens_in, ASSUMED_OUTPUT_TOKENS) <= overrides.max_cost_usd]
            if not affordable:
                raise BadRequest(f"no model of route {route.name!r} is expected to cost at most "
                                 f"{overrides.max_cost_usd:g} US$ for this request; raise crossroads.max_cost_usd",
                                 "crossroads.max_cost_usd")
            pool = affordable
        available = [m for m in pool if m not in unavailable]
        return available or pool  # every candidate cooling down: try them anyway rather than refuse

    # -- deciders -------------------------------------------------------------------
    # A route's decider returns its choice and its own probability of choosing each candidate.
    def _learn(self, decision_id: str, route: RouteConfig, candidates: list[str], objective: Objective,
               text: str, overrides: Overrides) -> tuple[Choice, dict[str, float]]:
        key = overrides.session_id if route.key == "session" else None
        context = self._embed(text) if self._learner_contextual(route) else None
        prior = None
        if route.router_file is not None:  # the learner starts from the router's expected reward of each candidate
            ranking = self._router(route.router_file).rank(context, text, MaxReward(objective),
                                                            category=overrides.category, candidates=candidates)
            candidates, prior = ranking.models, ranking.scores
        decision = self.learners.select(route.name, key, candidates, context, prior)
        rest = sorted((m for m in candidates if m != decision.model),
                      key=lambda m: -(decision.scores or {}).get(m, 0.0))
        reason = (f"{route.learner} chose {decision.model} with probability {decision.probability:.3g}"
                  + (" (converged)" if decision.converged else "")
                  + (f", starting from the router's expected rewards "
                     f"({', '.join(f'{m} {r:.3f}' for m, r in prior.items())})" if prior else ""))
        choice = Choice(decision_id, route.name, "learner", [decision.model, *rest], objective, reason,
                        learner_key=key, probability=decision.probability, scores=decision.scores, context=context,
                        prior=prior)
        return choice, decision.probabilities

    def _predict(self, decision_id: str, route: RouteConfig, candidates: list[str], objective: Objective,
                 text: str, category: str | None) -> tuple[Choice, dict[str, float]]:
        pooled = self._router(route.router_file)
        if not any(m in pooled.models for m in candidates):
            raise CrossroadsError(f"route {route.name!r}: its router knows none of the candidates {candidates}")
        rule = make_rule(route.rule, objective)
        ranking = pooled.rank(self._embed(text), text, rule, category=category, candidates=candidates)
        best = ranking.model
        reason = (f"{route.rule} under {objective}: {best} (predicted quality {ranking.predicted_quality[best]:.3f}, "
                  f"expected cost {ranking.expected_cost_usd[best]:.2e} US$)")
        choice = Choice(decision_id, route.name, "router", ranking.models, objective, reason, probability=1.0,
                        scores=ranking.scores, options=(ranking.predicted_quality, ranking.expected_cost_usd))
        return choice, {best: 1.0}

    def _first_call(self, route: RouteConfig, choice: Choice, text: str) -> Choice:
        """A cascade route's decision: its ranking puts the cascade policy's first call first."""
        assert choice.options is not None and route.cascade is not None
        quality, cost = choice.options
        cascade = self.cascades[route.name]
        ranking = cascade.first_ranking(choice.ranking, quality, cost, choice.objective, text)
        opening = cascade.opening(text)
        reason = (f"cascade, first call {ranking[0]}" + (f" (cost weighed {opening:g} times)" if opening != 1 else "")
                  + f"; the router alone: {choice.reason}")
        return replace(choice, kind="cascade", ranking=ranking, reason=reason, probability=1.0)

    def _pace(self, scopes: list[str], choice: Choice, text: str) -> tuple[Choice, dict[str, float]]:
        """``choice`` re-ranked under the budgets of ``scopes`` (the route's, its key's and team's ``pace`` budgets):
        the best ``quality - lambda * cost``, lambda from the binding controller.

        A router route weighs the router's predicted quality, a learner route the learner's estimated reward
        of each candidate (its own choice is then overridden: the logged probability is 1).
        """
        models = list(choice.ranking)
        if choice.options is not None:
            quality, cost = choice.options
            models = [m for m in models if m in quality]
        else:
            tokens_in = estimate_tokens(text)
            quality = {m: float((choice.scores or {}).get(m, 0.0)) for m in models}
            cost = {m: self.config.model(m).cost_usd(tokens_in, ASSUMED_OUTPUT_TOKENS) for m in models}
        ranking, state, scope = self.budgets.pace(scopes, models, [quality[m] for m in models],
                                                  [cost[m] for m in models], choice.decision_id)
        reason = (f"{choice.reason}; budget {self.budgets.budgets[scope]} of {scope_name(scope)}: spent "
                  f"{state.spent_usd:.4g} US$ (target {state.target_usd:.4g}), willingness to pay {state.willingness_to_pay:.4g} quality per US$"
                  + (", exhausted: the floor model or the cheapest answers" if state.exhausted else "")
                  + f": {ranking[0]}")
        return (replace(choice, ranking=ranking, reason=reason, budget=state.as_scores(), probability=1.0),
                {ranking[0]: 1.0})

    def _explore(self, route: RouteConfig, choice: Choice, own: dict[str, float]) -> Choice:
        """With probability ``route.explore``, a candidate drawn uniformly answers instead of the route's choice.

        The drawn model goes first and the others keep their order.  Whatever the draw, the
        logged probability is the mixture's chance of the model that answers (exact when the
        route's own probabilities are): ``explore / k + (1 - explore) * own[model]`` among ``k``
        candidates.
        """
        share = float(route.explore)
        if share == 0.0:
            return choice
        candidates = choice.ranking
        with self._rng_lock:
            explored = bool(self._rng.random() < share)
            model = candidates[int(self._rng.integers(len(candidates)))] if explored else choice.model
        probability = share / len(candidates) + (1.0 - share) * own.get(model, 0.0)
        if explored:
            own_choice = ("the route's choice too" if model == choice.model
                          else f"instead of the route's choice {choice.model}")
            reason = (f"exploration draw (explore={share:g}): {model} drawn uniformly among {len(candidates)} "
                      f"candidates, {own_choice} ({choice.reason})")
            ranking = [model, *(m for m in candidates if m != model)]
        else:
            reason, ranking = choice.reason, candidates
        reason += f"; logged probability {probability:.3g} with explore={share:g}"
        return replace(choice, ranking=ranking, probability=probability, explored=explored, reason=reason)

    def _routellm(self, decision_id: str, name: str, router_name: str, threshold: float, text: str,
                  overrides: Overrides, unavailable: set[str]) -> Choice:
        assert self.config.routellm is not None
        strong, weak = self.config.routellm.strong, self.config.routellm.weak
        router = self._router(self.config.routellm.routers[router_name]).router
        win = float(router.win_probability(self._embed(text)[None, :], strong, weak, prompts=[text],
                                           categories=[overrides.category])[0])
        go_strong = bool(route_strong_weak(win, threshold))
        ranking = [strong, weak] if go_strong else [weak, strong]
        if overrides.allowed_models is not None:
            ranking = [m for m in ranking if m in overrides.allowed_models] or ranking
        reason = f"P({strong} beats {weak}) = {win:.3f} {'>=' if go_strong else '<'} threshold {threshold:g}"
        return Choice(decision_id, name, "routellm", ranking, overrides.objective or Objective(), reason,
                      scores={strong: win, weak: 1.0 - win})

    # -- previews (the dashboard's playground) ----------------------------------------------
    def preview(self, name: str, text: str, category: str | None = None) -> dict[str, Any]:
        """What route ``name`` expects of each candidate for ``text`` and which one it would pick, without deciding.

        Nothing changes: a learner's copy draws (so the pick may differ from a real decision's), a budgeted route
        ranks under its controller's current willingness to pay without counting the request, nothing is logged.
        Each model gets its ``expected_cost_usd`` and, where the route has them, its ``predicted_quality`` (the
        router's), ``score`` (the rule's value or the learner's estimate) and ``probability`` of being picked.
        """
        route = self._routes.get(name)
        if route is None:
            raise UnknownRoute(f"unknown route {name!r}; routes: {', '.join(self._routes) or 'none'}", "route")
        candidates = self._candidates(route, text, Overrides(category=category), set())
        tokens_in = estimate_tokens(text)
        models = {m: {"expected_cost_usd": self.config.model(m).cost_usd(tokens_in, ASSUMED_OUTPUT_TOKENS)}
                  for m in candidates}
        prior, pick, reason = None, None, ""
        if route.router_file is not None:
            rule = MaxReward(route.objective) if route.learner is not None else make_rule(route.rule, route.objective)
            ranking = self._router(route.router_file).rank(self._embed(text), text, rule, category=category,
                                                           candidates=candidates)
            for m in ranking.models:
                models[m].update(predicted_quality=ranking.predicted_quality[m], score=ranking.scores[m],
                                 expected_cost_usd=ranking.expected_cost_usd[m])
            prior, pick = ranking.scores, ranking.model
            reason = f"{route.rule if route.learner is None else 'expected reward'} under {route.objective}"
            if route.cascade is not None:  # the first call of the chain; the answers decide what follows
                pick = self.cascades[route.name].first_ranking(ranking.models, ranking.predicted_quality,
                                                               ranking.expected_cost_usd, route.objective, text)[0]
                reason = f"cascade, first call under {route.objective} (then the answers decide)"
        if route.learner is not None:
            context = self._embed(text) if self._learner_contextual(route) else None
            decision = self.learners.learner(route.name, None).clone().select(list(models), context, prior=prior)
            for m, probability in decision.probabilities.items():
                models[m]["probability"] = probability
                if decision.scores and m in decision.scores:
                    models[m]["score"] = decision.scores[m]
            pick, reason = decision.model, f"{route.learner} (a copy drew; the learner draws again per request)"
        if self.budgets is not None and route.name in self.budgets:
            quality = {m: v.get("predicted_quality", v.get("score", 0.0)) for m, v in models.items()}
            lam = self.budgets.controllers[route.name].willingness_to_pay
            pick = max(models, key=lambda m: quality[m] - lam * models[m]["expected_cost_usd"])
            reason += f"; budget {route.budget}: willingness to pay {lam:.4g} quality per US$"
        return {"route": route.name, "model": pick, "reason": reason.lstrip("; "), "models": models}

    # -- helpers ----------------------------------------------------------------------
    def _learner_contextual(self, route: RouteConfig) -> bool:
        return route.learner is not None and self.learners.learner_type(route.name).contextual

    def load_routers(self) -> None:
        """Load every router file the config names now, so that a wrong file fails at start-up."""
        files = [route.router_file for route in self.config.routes if route.router_file]
        files += list(self.config.routellm.routers.values()) if self.config.routellm else []
        for path in files:
            self._router(path)

    def _embedder_(self) -> Any:
        if self._embedder is None:
            from crossroads.embeddings import make_embedder

            self._embedder = make_embedder(self.config.embedder, cache=False)  # cache=False: prompts stay off disk
        return self._embedder

    def _embed(self, text: str) -> np.ndarray:
        return np.asarray(self._embedder_().embed([text])[0], dtype=np.float64)

    def _router(self, path: str) -> PooledRouter:
        if path not in self._routers:
            from crossroads.routers import load_router

            router = load_router(path)
            embedder = self._embedder_().name
            if router.embedder_ and router.embedder_ != embedder:
                raise CrossroadsError(f"router file {path} was trained on {router.embedder_} embeddings, but the "
                                      f"server embeds with {embedder}; set the config's `embedder:` to match")
            pool = [self._descriptor(model) for model in self.config.models]
            latency = [model.expected_latency_s for model in self.config.models]
            self._routers[path] = PooledRouter(router, pool, embedder, latency)
        return self._routers[path]

    @staticmethod
    def _descriptor(model: ModelConfig):
        from dataclasses import replace

        from crossroads.data.dataset import ModelInfo
        from crossroads.data.descriptors import describe

        described = describe(ModelInfo(model.name, model.price_per_mtok_in, model.price_per_mtok_out))
        return replace(described, tier=model.tier) if model.tier else described


def _routellm_name(name: str) -> tuple[str, float]:
    try:
        return parse_routellm_model(name)
    except CrossroadsError as error:
        raise UnknownRoute(str(error), "model") from None
