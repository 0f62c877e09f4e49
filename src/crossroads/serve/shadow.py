"""Shadow traffic: on a sampled share of a route's requests, other models answer too, in the background.

A route with ``shadow: {share, models, max_usd_per_day}`` (:class:`crossroads.serve.config.ShadowConfig`)
draws, for each answered request, whether to shadow it (a draw of the gateway's generator,
independent of the prompt); if so, every listed model except the one that served (and those
the request's ``crossroads.allowed_models`` excludes) gets the same request body (never
streamed) once the client has its answer.  What each did is stored
as a shadow outcome (``Store.record_shadow_outcome``), counted in the ``crossroads_shadow_*``
metrics and in the day's shadow spend, and never returned.  This gives the log full
information on those requests, for reports, labelling and training.

Shadow calls never delay or fail the client's request: they are background tasks started
after the answer, at most ``max_in_flight`` at once (more are skipped and counted), and every
error becomes the shadow outcome's status.  They leave the served path's model health alone:
a failing shadow call does not cool a model down, a good one does not end a cool-down.

The daily cap counts in process: the spend of finished calls plus the expected cost of those
in flight; no call starts once it reaches ``max_usd_per_day``.  At start-up a gateway reads
the UTC day's shadow spend from the store, so a restart keeps counting; replicas do not see
each other's calls after that, so ``R`` replicas may spend up to ``R`` times the cap in a day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import numpy as np

from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS
from crossroads.serve.config import RouteConfig, ServeConfig
from crossroads.serve.metrics import Metrics
from crossroads.serve.requests import ChatRequest, answer_tokens, message_text, prompt_tokens
from crossroads.serve.tracing import NO_TRACER
from crossroads.upstream.providers import UpstreamError

log = logging.getLogger("crossroads.serve")

#: Shadow calls of one gateway in flight at once; a request finding this many is not shadowed.
MAX_IN_FLIGHT = 32
#: On shutdown, how long calls in flight may take to finish before they are cancelled.
SHUTDOWN_WAIT_S = 5.0
#: Fields of a request body that only make sense for a stream; a shadow call is never streamed.
_STREAM_FIELDS = ("stream", "stream_options")


class ShadowCalls:
    """The shadow calls of one gateway: sampling, the daily caps, the background tasks and their outcomes.

    ``providers`` maps model names to the gateway's providers; ``rng`` draws which requests
    are shadowed (seed it for reproducible tests).
    """

    def __init__(self, config: ServeConfig, providers: dict[str, Any], store: Any, metrics: Metrics,
                 rng: np.random.Generator | None = None, max_in_flight: int = MAX_IN_FLIGHT, tracer: Any = NO_TRACER):
        self.config, self.providers, self.store, self.metrics = config, providers, store, metrics
        self.tracer = tracer
        self.routes = {route.name: route for route in config.routes if route.shadow is not None}
        self.max_in_flight = max_in_flight
        self._rng = np.random.default_rng() if rng is None else rng
        self._tasks: set[asyncio.Task] = set()
        self._day = _utc_day(time.time())
        self._spent_usd: dict[str, float] = {}  # route -> the day's spend of finished shadow calls
        self._reserved_usd: dict[str, float] = {}  # route -> expected cost of its calls in flight
        capped = [name for name, route in self.routes.items() if route.shadow.max_usd_per_day is not None]
        if capped:  # a restart within the day keeps counting from what the store holds
            since_s = dt.datetime.combine(self._day, dt.time(), dt.timezone.utc).timestamp()
            for name in capped:
                spent = store.shadow_spend(route=name, since_s=since_s)
                self._spent_usd[name] = sum(entry["spend_usd"] for entry in spent.values())

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def spent_usd(self, route: str) -> float:
        """The current UTC day's shadow spend of ``route`` counted by this gateway (finished calls)."""
        self._roll_day()
        return self._spent_usd.get(route, 0.0)

    def after_answer(self, decision_id: str, route_name: str, request: ChatRequest, served: str,
                     parent: Any = None) -> None:
        """Maybe shadow a request the client has its answer to; returns at once, the calls run in the background.

        ``parent`` is the request's trace span (by default the one current in this task)."""
        route = self.routes.get(route_name)
        if route is None or not route.shadow.share or not self._rng.random() < route.shadow.share:
            return
        allowed = request.overrides.allowed_models  # a request that rules models out rules out their shadow calls too
        for model in self._models(route):
            if model != served and (allowed is None or model in allowed):
                self._start(route, decision_id, request, model, parent)

    async def aclose(self) -> None:
        """Let the calls in flight finish for up to ``SHUTDOWN_WAIT_S``, then cancel the rest (recorded as cancelled)."""
        if not self._tasks:
            return
        tasks = list(self._tasks)
        _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- internals ---------------------------------------------------------------------------
    def _models(self, route: RouteConfig) -> tuple[str, ...]:
        return route.shadow.models or route.models or tuple(self.config.model_names)

    def _start(self, route: RouteConfig, decision_id: str, request: ChatRequest, model: str, parent: Any) -> None:
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.shadow_skipped.labels(route.name, "busy").inc()
            return
        self._roll_day()
        cap = route.shadow.max_usd_per_day
        if cap is not None and self._spent_usd.get(route.name, 0.0) + self._reserved_usd.get(route.name, 0.0) >= cap:
            self.metrics.shadow_skipped.labels(route.name, "cap").inc()
            return
        expected_usd = self.config.model(model).cost_usd(prompt_tokens(request), ASSUMED_OUTPUT_TOKENS)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a stream finalised after its event loop stopped: nothing can run any more
            return
        self._reserved_usd[route.name] = self._reserved_usd.get(route.name, 0.0) + expected_usd
        task = loop.create_task(self._call(route.name, decision_id, request, model, expected_usd, self._day, parent))
        self._tasks.add(task)  # a reference, so that the task is not garbage-collected while it runs
        task.add_done_callback(self._tasks.discard)

    async def _call(self, route: str, decision_id: str, request: ChatRequest, model: str, expected_usd: float,
                    day: dt.date, parent: Any) -> None:
        config = self.config.model(model)
        body = {key: value for key, value in {**config.defaults, **request.body}.items() if key not in _STREAM_FIELDS}
        body["model"] = config.upstream_model
        started_s = time.perf_counter()
        status, error, usage, text = "ok", None, {}, ""
        # a child of the request's span, though the request may end first
        span = self.tracer.start("crossroads.shadow", parent, route=route, model=model, decision_id=decision_id)
        span.propagate()
        try:
            answer = await self.providers[model].complete(body)
            usage = answer.get("usage") or {}
            text = "".join(message_text(c.get("message") or {}) for c in answer["choices"] if isinstance(c, dict))
        except UpstreamError as failure:
            status, error = "error", str(failure)
        except asyncio.CancelledError:
            status, error = "cancelled", "the server shut down before the shadow call ended"
            raise
        except Exception as failure:  # a background task must never raise: whatever went wrong is its outcome
            log.exception("decision %s: shadow call to %s failed", decision_id, model)
            status, error = "error", f"{type(failure).__name__}: {failure}"
        finally:
            cost_usd = self._finish(route, decision_id, request, model, expected_usd, day, status, error, usage, text,
                                    time.perf_counter() - started_s)
            span.set(outcome=status, cost_usd=cost_usd)
            if status != "ok":
                span.fail(status)
            span.end()

    def _finish(self, route: str, decision_id: str, request: ChatRequest, model: str, expected_usd: float,
                day: dt.date, status: str, error: str | None, usage: dict[str, Any], text: str,
                latency_s: float) -> float | None:
        """Release the call's reservation, price it (as the served call is priced), store and count it; its cost."""
        self._reserved_usd[route] = max(0.0, self._reserved_usd.get(route, 0.0) - expected_usd)
        tokens_in = tokens_out = cost_usd = None
        if status == "ok":
            tokens_in, tokens_out = answer_tokens(usage, request, text)
            cost_usd = self.config.model(model).cost_usd(tokens_in, tokens_out)
            self._roll_day()
            if day == self._day:
                self._spent_usd[route] = self._spent_usd.get(route, 0.0) + cost_usd
            self.metrics.shadow_cost.labels(route, model).inc(cost_usd)
            self.metrics.shadow_latency.labels(model).observe(latency_s)
        try:
            self.store.record_shadow_outcome(
                decision_id, model=model, status=status, cost_usd=cost_usd, latency_s=latency_s, tokens_in=tokens_in,
                tokens_out=tokens_out, error=error, response=text if self.config.store_prompts and text else None)
        except Exception:  # e.g. the store closed under a call cancelled late; the client's answer is long gone
            log.exception("decision %s: could not store the shadow outcome of %s", decision_id, model)
        self.metrics.shadow_calls.labels(route, model, status).inc()
        return cost_usd

    def _roll_day(self) -> None:
        today = _utc_day(time.time())
        if today != self._day:
            self._day, self._spent_usd = today, {}


def _utc_day(time_s: float) -> dt.date:
    return dt.datetime.fromtimestamp(time_s, dt.timezone.utc).date()
