"""Route, call the chosen model with fallbacks, record what happened, learn from feedback.

``Gateway`` is the whole routing service without HTTP: the server (``crossroads.serve.app``)
and the in-process Python client (``crossroads.Client``) both drive one, so they
decide, fall back, price and record identically.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio

from crossroads.errors import CrossroadsError
from crossroads.objective import LinearReward, parse_objective
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS, NOMINAL_TOKENS_IN
from crossroads.serve.budgets import Budgets
from crossroads.serve.cascade import Call, Chain
from crossroads.serve.config import ServeConfig
from crossroads.serve.learning import RouteLearners
from crossroads.serve.metrics import Metrics
from crossroads.serve.requests import BadRequest, ChatRequest, answer_tokens, message_text
from crossroads.serve.routing import Choice, Routes
from crossroads.serve.shadow import ShadowCalls
from crossroads.serve.tracing import NO_SPAN, build_tracer
from crossroads.serve.turns import FairTurns
from crossroads.store import DuplicateFeedbackError, UnknownDecisionError, open_store
from crossroads.store.spool import Spool
from crossroads.store.sql import StoreUnavailableError, parse_store_url
from crossroads.upstream.http import redact_credentials
from crossroads.upstream.providers import UpstreamError, make_provider

log = logging.getLogger("crossroads.serve")

#: Decisions are written in batches; feedback sent to another replica may arrive before its decision is committed.
DECISION_WAIT_S = 1.0
#: How often a feedback waiting for its decision looks again (on the event loop, holding no worker thread).
DECISION_POLL_S = 0.1
#: Most feedback requests waiting for a decision at once; beyond that an unknown id gets 404 at once, so a flood of
#: bogus ids costs one lookup each (issue 14: 200 of them, each holding a thread 1 s, delayed valid feedback 200x).
MAX_DECISION_WAITERS = 32
#: Prompts embedded at once, each of a different caller (serve/turns.py): 16 at once ran 32 onnxruntime threads on
#: 2 cores and a request needing no embedding waited 10x longer for the CPU; with one, a caller waited behind
#: another's long prompt in progress (benchmarks/chaos.py).
EMBEDDING_TURNS = 2
#: The ids ``Routes.decide`` hands out; only these are worth waiting for.
DECISION_ID = re.compile(r"dec_[0-9a-f]{32}")
#: Readiness reports the store as degraded when its probe write takes longer than this.
READY_STORE_TIMEOUT_S = 2.0


class AllModelsFailed(CrossroadsError):
    """Every model a decision ranked failed; ``errors`` holds each one's UpstreamError."""

    def __init__(self, choice: Choice, errors: list[UpstreamError]):
        self.choice, self.errors = choice, errors
        tried = "; ".join(str(error) for error in errors)
        super().__init__(f"no model could answer (decision {choice.decision_id}): {tried}")


class RequestRejected(AllModelsFailed):
    """Every model refused the request as invalid (HTTP 400 or 422), e.g. ``temperature: 5``: the client's mistake."""

    def __init__(self, choice: Choice, errors: list[UpstreamError]):
        super().__init__(choice, errors)
        tried = "; ".join(str(error) for error in errors)
        self.args = (f"every model rejected the request as invalid (decision {choice.decision_id}): {tried}",)


class DeadlineExceeded(AllModelsFailed):
    """The request's deadline (``request_deadline_s``) passed before any model answered."""

    def __init__(self, choice: Choice, errors: list[UpstreamError], deadline_s: float):
        super().__init__(choice, errors)
        tried = "; ".join(str(error) for error in errors) or "no model was tried"
        self.args = (f"the request deadline of {deadline_s:g} s (request_deadline_s) passed before any model "
                     f"answered (decision {choice.decision_id}): {tried}",)


class FeedbackForbidden(CrossroadsError):
    """Feedback sent with another client key than the one that made the decision."""

    def __init__(self, decision_id: str):
        self.decision_id = decision_id
        super().__init__(f"decision {decision_id!r} was made with another client key: only the client key that "
                         "made a decision may send its feedback")


class Health:
    """Consecutive failures per model; a model that keeps failing cools down for a while."""

    def __init__(self, cooldown_s: float, failures_before_cooldown: int):
        self.cooldown_s, self.limit = cooldown_s, failures_before_cooldown
        self._failures: dict[str, int] = {}
        self._cool_until: dict[str, float] = {}

    def unavailable(self) -> set[str]:
        now = time.monotonic()
        return {model for model, until in self._cool_until.items() if until > now}

    def failed(self, model: str) -> None:
        self._failures[model] = self._failures.get(model, 0) + 1
        if self._failures[model] >= self.limit:
            self._cool_until[model] = time.monotonic() + self.cooldown_s
            self._failures[model] = 0
            log.warning("model %r failed %d times in a row; cooling down for %g s", model, self.limit, self.cooldown_s)

    def succeeded(self, model: str) -> None:
        self._failures.pop(model, None)
        self._cool_until.pop(model, None)


@dataclass
class Attempts:
    """How a call went: the model that answered, the failures before it, and timings."""

    choice: Choice
    started_s: float = field(default_factory=time.perf_counter)
    errors: list[UpstreamError] = field(default_factory=list)
    model: str | None = None
    ttft_s: float | None = None
    deadline_s: float = math.inf  # time.perf_counter() by which the request must have its answer (or first chunk)
    span: Any = NO_SPAN  # the trace span of the model being tried (crossroads.serve.tracing)
    request_span: Any = None  # the trace span of the request, for what runs after its context is gone

    def remaining_s(self) -> float:
        return self.deadline_s - time.perf_counter()


class Gateway:
    """The routing service for one ServeConfig; ``store`` is any object with the Store interface.

    ``http_client`` (an ``httpx.AsyncClient``) carries every upstream call, the seam where
    tests put :class:`crossroads.upstream.fake.FakeUpstream`; ``embedder`` replaces the
    config's embedder.  Routes with ``shadow`` also call other models in the background
    after the answer (``self.shadow``, :mod:`crossroads.serve.shadow`).  ``tracer`` (see
    :mod:`crossroads.serve.tracing`) replaces the one the config's ``tracing`` section builds.
    """

    def __init__(self, config: ServeConfig, store: Any = None, http_client: Any = None,
                 embedder: Any = None, metrics: Metrics | None = None, tracer: Any = None):
        self.config = config
        self.tracer = tracer if tracer is not None else build_tracer(config.tracing)
        self.store = store if store is not None else open_store(config.store, _spool(config))
        self.http_client = http_client
        self.providers = {model.name: make_provider(model, http_client) for model in config.models}
        self.learners = RouteLearners(config.routes, config.model_names, config.snapshot_every)
        self.routes = Routes(config, self.learners, embedder)
        self.routes.load_routers()
        self.metrics = metrics or Metrics()
        self.health = Health(config.cooldown_s, config.failures_before_cooldown)
        self.shadow = ShadowCalls(config, self.providers, self.store, self.metrics, tracer=self.tracer)
        self.routes.budgets = Budgets(config.routes, config.store, self.store, self.metrics)
        self.cascades = self.routes.cascades
        self._decision_waiters = 0  # feedback requests waiting for their decision (see _awaited_decision)
        self.embedding_turns = FairTurns(EMBEDDING_TURNS)  # callers take the turns in rotation
        self.metrics.embedding_waiting.set_function(self.embedding_turns.waiting)
        self.learners.restore(self.store)
        for cascade in self.cascades.values():
            cascade.refit(self.store)
        self.store.record_pool({model.name: (model.price_per_mtok_in, model.price_per_mtok_out)
                                for model in config.models})

    # -- deciding --------------------------------------------------------------------
    async def decide(self, request: ChatRequest) -> Choice:
        """The decision for ``request`` (see ``_decide``), timed in a ``crossroads.decide`` trace span."""
        with self.tracer.start("crossroads.decide") as span:
            choice = await self._decide(request)
            span.set(route=choice.route, kind=choice.kind, model=choice.model, probability=choice.probability,
                     candidates=len(choice.ranking), explored=choice.explored, decision_id=choice.decision_id)
        self.tracer.note(route=choice.route, decision_id=choice.decision_id)
        return choice

    async def _decide(self, request: ChatRequest) -> Choice:
        """The decision for ``request``, recorded in the store (embedding routers run off the event loop).

        Refused (StoreUnavailableError) while the store is down and its spool full: it could not be recorded.
        """
        if getattr(self.store, "spool_full", lambda: False)():
            raise StoreUnavailableError("the store cannot write and its spool is full (store_spool_max_mb): "
                                        "decisions could not be recorded; retry when it is back")
        args = (request.model, request.text, request.overrides, self.health.unavailable(), request.payers)
        if self.routes.needs_embedding(request.model):
            async with self.embedding_turns.turn(request.caller):  # EMBEDDING_TURNS at once, one per caller
                choice = await anyio.to_thread.run_sync(lambda: self.routes.decide(*args))
        else:
            choice = self.routes.decide(*args)
        self.store.record_decision(
            choice.decision_id, route=choice.route, model=choice.model, learner_key=choice.learner_key,
            candidates=choice.ranking, probability=choice.probability,
            scores={"scores": choice.scores, "objective": str(choice.objective), "kind": choice.kind,
                    **({"prior": choice.prior} if choice.prior else {}),
                    **({"explored": True} if choice.explored else {}),
                    **({"budget": choice.budget} if choice.budget is not None else {})},
            context=choice.context, created_s=time.time(),
            prompt=request.text if self.config.store_prompts else None, category=request.overrides.category,
            client=request.client, **({"key_id": request.key_id, "team": request.team} if request.key_id else {}),
        )
        self.metrics.decisions.labels(choice.route, choice.model).inc()
        return choice

    async def written(self) -> None:
        """Return once the rows recorded so far are committed to the store (or fsync'd to its spool), so that an
        answer sent after this survives a crash (kill -9, power loss); at once unless ``ack_after_write``.

        Waits on the event loop, not in a thread: the writer commits what queued meanwhile in one transaction,
        so under load one commit acknowledges many answers.
        """
        when_written = getattr(self.store, "when_written", None)
        if not self.config.ack_after_write or when_written is None:
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        when_written(lambda: loop.call_soon_threadsafe(_resolve, done))
        await done

    # -- calling -----------------------------------------------------------------------
    async def complete(self, request: ChatRequest) -> tuple[Choice, dict[str, Any]]:
        """The answer of the first ranked model that gives one (on a cascade route, the answer its chain trusts
        most), in OpenAI's wire format."""
        choice = await self.decide(request)
        if choice.kind == "cascade":
            return choice, await self._cascade(request, choice)
        attempts = self._attempts(choice)
        for model in choice.ranking:
            if attempts.remaining_s() <= 0:
                break
            self._attempt(attempts, model)
            try:
                answer = await self._before_deadline(attempts, model, self.providers[model].complete(
                    self._body(request, model)))
            except UpstreamError as error:
                self._failed(attempts, model, error)
                continue
            except asyncio.CancelledError:  # the server stops (shutdown_timeout_s passed) with the call in flight
                self._finish(attempts, request, {}, "", "disconnected")
                raise
            self._succeeded(attempts, model)
            usage = answer.get("usage") or {}
            text = "".join(message_text(c.get("message") or {}) for c in answer["choices"] if isinstance(c, dict))
            outcome = self._finish(attempts, request, usage, text, "ok")
            answer["model"] = model
            answer["crossroads"] = {**choice.to_dict(), "model": model, "cost_usd": outcome["cost_usd"],
                                    "fallbacks_used": len(attempts.errors)}
            self.shadow.after_answer(choice.decision_id, choice.route, request, model)
            await self.written()
            return choice, answer
        self._give_up(attempts, request)

    async def stream(self, request: ChatRequest) -> tuple[Choice, AsyncIterator[dict[str, Any]]]:
        """A stream from the first ranked model that sends its first chunk; later failures end it with an error chunk."""
        choice = await self.decide(request)
        return choice, await self.open_stream(request, choice)

    async def open_stream(self, request: ChatRequest, choice: Choice) -> AsyncIterator[dict[str, Any]]:
        """The stream of the first model of ``choice.ranking`` that sends its first chunk before the deadline.

        The request deadline bounds the wait for the first chunk, not the stream after it.  A cascade route's
        answer is streamed once its chain has accepted it (its calls are not streamed).
        """
        if choice.kind == "cascade":
            return _as_stream(await self._cascade(request, choice))
        attempts = self._attempts(choice)
        try:
            for model in choice.ranking:
                if attempts.remaining_s() <= 0:
                    break
                self._attempt(attempts, model)
                chunks = self.providers[model].stream(self._body(request, model))
                try:
                    first = await self._before_deadline(attempts, model, chunks.__anext__())
                except (UpstreamError, StopAsyncIteration) as error:
                    if isinstance(error, StopAsyncIteration):
                        error = UpstreamError(model, "malformed", "the stream ended before its first chunk")
                    self._failed(attempts, model, error)
                    continue
                attempts.ttft_s = time.perf_counter() - attempts.started_s
                attempts.model = model  # healthy once the stream ends well: it may still break (see _relay)
                return self._relay(request, attempts, first, chunks)
        except asyncio.CancelledError:  # the client went away (or the server stops) before the first chunk
            self._finish(attempts, request, {}, "", "disconnected")
            raise
        self._give_up(attempts, request)

    async def _relay(self, request: ChatRequest, attempts: Attempts, first: dict[str, Any],
                     chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        model, texts, usage, status = attempts.model, [], {}, "ok"
        assert model is not None
        first["crossroads"] = {**attempts.choice.to_dict(), "model": model, "fallbacks_used": len(attempts.errors)}
        chunk: dict[str, Any] | None = first
        try:
            while chunk is not None:
                chunk["model"] = model
                usage = chunk.get("usage") or usage
                texts.extend((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
                yield chunk
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            self.health.succeeded(model)
        except UpstreamError as error:
            status = "broken"
            log.warning("decision %s: %s", attempts.choice.decision_id, error)
            self.health.failed(model)  # a model that breaks mid-answer cools down like one that fails at once
            self.metrics.errors.labels(model, error.kind).inc()
            yield {"error": {"message": f"{error}; the answer above is incomplete", "type": "upstream_error",
                             "code": "stream_broken"}}
        except (GeneratorExit, asyncio.CancelledError):  # the client went away before the end
            status = "disconnected"
            raise
        finally:
            self._finish(attempts, request, usage, "".join(texts), status)
            if status in ("ok", "broken"):  # the client read the stream to its end
                self.shadow.after_answer(attempts.choice.decision_id, attempts.choice.route, request, model,
                                         attempts.request_span)  # a stream's end is outside the request's context

    async def _cascade(self, request: ChatRequest, choice: Choice) -> dict[str, Any]:
        """Run a cascade route's chain (:mod:`crossroads.serve.cascade`) and return the answer trusted most.

        Every call is priced, counted and kept in the outcome's ``calls``; the outcome's cost is their sum (what
        a key's budget is charged).  A failed call costs nothing and the chain goes on without that model.
        """
        assert choice.options is not None
        quality, expected = choice.options
        chain = self.cascades[choice.route].chain(
            [m for m in choice.ranking if m in quality], quality, expected, choice.objective, request.text,
            request.overrides.category, choice.model, (choice.budget or {}).get("willingness_to_pay"),
            request.overrides.max_cost_usd)
        attempts, answers = self._attempts(choice), {}
        try:
            while attempts.remaining_s() > 0 and (model := chain.next()) is not None:
                self._attempt(attempts, model)
                started_s = time.perf_counter()
                try:
                    answer = await self._before_deadline(attempts, model, self.providers[model].complete(
                        self._body(request, model)))
                except UpstreamError as error:
                    self._failed(attempts, model, error)
                    chain.add(Call(model, "failed", latency_s=time.perf_counter() - started_s, error=str(error)))
                    continue
                self.health.succeeded(model)
                text = "".join(message_text(c.get("message") or {}) for c in answer["choices"] if isinstance(c, dict))
                tokens_in, tokens_out, cost_usd = self._price(request, model, answer.get("usage") or {}, text)
                latency_s = time.perf_counter() - started_s
                self._count(model, latency_s, None, tokens_in, tokens_out, cost_usd)
                attempts.span.set(outcome="ok", tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost_usd)
                attempts.span.end()
                chain.add(Call(model, "ok", cost_usd, latency_s, tokens_in, tokens_out, text))
                answers[model] = answer
        except asyncio.CancelledError:  # the client went away (or the server stops) mid-chain: what ran is charged
            self._record_chain(attempts, chain, "disconnected")
            raise
        accepted = chain.accepted
        if accepted is None:
            self._give_up(attempts, request)
        attempts.model = accepted.model
        cost_usd = self._record_chain(attempts, chain, "ok")
        answer = answers[accepted.model]
        answer["model"] = accepted.model
        answer["crossroads"] = {**choice.to_dict(), "model": accepted.model, "cost_usd": cost_usd,
                                "fallbacks_used": len(attempts.errors),
                                "cascade": {"calls": [call.as_dict() for call in chain.calls]}}
        self.shadow.after_answer(choice.decision_id, choice.route, request, accepted.model)
        await self.written()
        return answer

    def _record_chain(self, attempts: Attempts, chain: Chain, status: str) -> float:
        """Record a cascade's outcome: the returned answer's model, text and tokens (what the client got, which
        reports price other models on), every call, and their summed cost (what was paid)."""
        cost_usd = sum(call.cost_usd or 0.0 for call in chain.calls if call.status == "ok")
        accepted = chain.accepted
        self.store.record_outcome(
            attempts.choice.decision_id, model=attempts.model or attempts.choice.model, status=status,
            cost_usd=cost_usd, latency_s=time.perf_counter() - attempts.started_s, ttft_s=None,
            tokens_in=None if accepted is None else accepted.tokens_in,
            tokens_out=None if accepted is None else accepted.tokens_out,
            fallbacks=len(attempts.errors), error="; ".join(str(e) for e in attempts.errors) or None,
            response=accepted.text if accepted is not None and self.config.store_prompts else None,
            calls=[call.as_dict(text=self.config.store_prompts) for call in chain.calls])
        self.routes.budgets.settled(attempts.choice.decision_id, cost_usd)
        return cost_usd

    def _attempts(self, choice: Choice) -> Attempts:
        attempts = Attempts(choice, request_span=self.tracer.current())
        attempts.deadline_s = attempts.started_s + self.config.request_deadline_s
        return attempts

    async def _before_deadline(self, attempts: Attempts, model: str, call: Any) -> Any:
        """``await call``, cut off when the request's deadline passes (an UpstreamError of kind ``deadline``)."""
        try:
            return await asyncio.wait_for(call, max(attempts.remaining_s(), 0.0))
        except TimeoutError:
            raise UpstreamError(model, "deadline", f"no answer before the request deadline of "
                                f"{self.config.request_deadline_s:g} s passed") from None

    def _give_up(self, attempts: Attempts, request: ChatRequest) -> NoReturn:
        """Record the call as failed and raise DeadlineExceeded (time ran out) or AllModelsFailed."""
        self._finish(attempts, request, {}, "", "failed")
        if attempts.remaining_s() <= 0:
            raise DeadlineExceeded(attempts.choice, attempts.errors, self.config.request_deadline_s)
        if attempts.errors and all(_rejects_request(error) for error in attempts.errors):
            raise RequestRejected(attempts.choice, attempts.errors)
        raise AllModelsFailed(attempts.choice, attempts.errors)

    def _body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        config = self.config.model(model)
        return {**config.defaults, **request.body, "model": config.upstream_model}

    def _attempt(self, attempts: Attempts, model: str) -> None:
        """Open the ``crossroads.upstream`` trace span of calling ``model``: a fallback after a failed model."""
        attempts.span = self.tracer.start("crossroads.upstream", model=model, attempt=len(attempts.errors) + 1,
                                          fallback=bool(attempts.errors), decision_id=attempts.choice.decision_id)
        attempts.span.propagate()
        if attempts.errors:
            failed = attempts.errors[-1]
            attempts.span.event("crossroads.fallback", from_model=failed.model, to_model=model,
                                error_kind=failed.kind)

    def _failed(self, attempts: Attempts, model: str, error: UpstreamError) -> None:
        attempts.span.set(outcome="error", error_kind=error.kind, upstream_status=error.status)
        attempts.span.fail(error.kind)
        attempts.span.end()
        log.warning("decision %s: %s", attempts.choice.decision_id, error)
        attempts.errors.append(error)
        if not _rejects_request(error):  # a model that refuses a bad request is healthy
            self.health.failed(model)
        self.metrics.errors.labels(model, error.kind).inc()
        ranking = attempts.choice.ranking
        if model != ranking[-1]:
            self.metrics.fallbacks.labels(model, ranking[ranking.index(model) + 1]).inc()

    def _succeeded(self, attempts: Attempts, model: str) -> None:
        attempts.model = model
        self.health.succeeded(model)

    def _price(self, request: ChatRequest, model: str, usage: dict[str, Any], text: str) -> tuple[int, int, float]:
        """Tokens in and out of ``model``'s answer, and what it cost."""
        tokens_in, tokens_out = answer_tokens(usage, request, text)
        return tokens_in, tokens_out, self.config.model(model).cost_usd(tokens_in, tokens_out or 0)

    def _count(self, model: str, latency_s: float, ttft_s: float | None, tokens_in: int | None,
               tokens_out: int | None, cost_usd: float | None) -> None:
        """Count one answered call in the metrics."""
        self.metrics.upstream_latency.labels(model).observe(latency_s)
        if ttft_s is not None:
            self.metrics.time_to_first_token.labels(model).observe(ttft_s)
        self.metrics.tokens.labels(model, "in").inc(tokens_in or 0)
        self.metrics.tokens.labels(model, "out").inc(tokens_out or 0)
        self.metrics.cost.labels(model).inc(cost_usd or 0.0)

    def _finish(self, attempts: Attempts, request: ChatRequest, usage: dict[str, Any], text: str,
                status: str) -> dict[str, Any]:
        """Price and time the call, record its outcome and count it in the metrics."""
        latency_s = time.perf_counter() - attempts.started_s
        model = attempts.model or attempts.choice.model
        tokens_in, tokens_out, cost_usd = (None, None, None) if status == "failed" else self._price(
            request, model, usage, text)
        error = "; ".join(str(e) for e in attempts.errors) or None
        self.store.record_outcome(
            attempts.choice.decision_id, model=model, status=status, cost_usd=cost_usd, latency_s=latency_s,
            ttft_s=attempts.ttft_s, tokens_in=tokens_in, tokens_out=tokens_out, fallbacks=len(attempts.errors),
            error=error, response=text if self.config.store_prompts and text else None,
        )
        self.routes.budgets.settled(attempts.choice.decision_id, cost_usd)
        attempts.span.set(outcome=status, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost_usd,
                          ttft_s=attempts.ttft_s)
        if status == "broken":
            attempts.span.fail(status)
        attempts.span.end()  # a stream's when it ends (_relay)
        if status != "failed":
            self._count(model, latency_s, attempts.ttft_s, tokens_in, tokens_out, cost_usd)
        return {"cost_usd": cost_usd, "latency_s": latency_s}

    # -- learning -------------------------------------------------------------------------
    def feedback(self, decision_id: str, reward: float | None = None, quality: float | None = None,
                 payload: dict[str, Any] | None = None, *, client: str | None = None,
                 idempotency_key: str | None = None) -> dict[str, Any]:
        """Store feedback for an earlier decision (durably, before returning) and apply it to the learners.

        ``client`` (a hash of the caller's key, see ``decide``) must be the one that made the decision, when both
        are known.  ``idempotency_key``: the same key on the same decision again returns the first answer
        (``"replayed": true``) and stores nothing.  A second feedback without it raises DuplicateFeedbackError.
        """
        _check_feedback(decision_id, reward, quality)
        return self._apply_feedback(self._stored_decision(decision_id), reward, quality, payload, client,
                                    idempotency_key)

    async def afeedback(self, decision_id: str, reward: float | None = None, quality: float | None = None,
                        payload: dict[str, Any] | None = None, *, client: str | None = None,
                        idempotency_key: str | None = None) -> dict[str, Any]:
        """``feedback`` for the server: waits for a decision in flight on the event loop, not in a worker thread."""
        _check_feedback(decision_id, reward, quality)

        def apply(decision: dict[str, Any] | None) -> dict[str, Any] | None:
            decision = decision or self.store.decision(decision_id)
            return None if decision is None else self._apply_feedback(decision, reward, quality, payload, client,
                                                                      idempotency_key)

        # one trip to a worker thread when the decision is stored, as it nearly always is
        result = await anyio.to_thread.run_sync(apply, None)
        if result is None:
            decision = await self._awaited_decision(decision_id)
            result = await anyio.to_thread.run_sync(apply, decision)
        assert result is not None
        self.tracer.note(route=result["route"], decision_id=result["decision_id"])
        return result

    def _apply_feedback(self, decision: dict[str, Any], reward: float | None, quality: float | None,
                        payload: dict[str, Any] | None, client: str | None,
                        idempotency_key: str | None) -> dict[str, Any]:
        decision_id = decision["decision_id"]
        if client is not None and decision.get("client") not in (None, client):
            raise FeedbackForbidden(decision_id)
        if idempotency_key is not None and (earlier := self._replayed(decision, idempotency_key)):
            return earlier
        route = decision["route"]
        learning = route in self.learners.routes
        if learning and reward is None:
            reward = self._reward(decision, float(quality))
        if learning and reward is not None:
            low, high = self.learners.learner_type(route).reward_range or (-math.inf, math.inf)
            if not low <= reward <= high:
                raise BadRequest(f"`reward` {reward:g} is outside [{low:g}, {high:g}], the range route "
                                 f"{route!r}'s learner takes", "reward")
        try:
            seq = self.store.add_feedback(decision_id, reward=reward, quality=quality, payload=payload,
                                          created_s=time.time(), once=True,
                                          idempotency_key=_scoped_key(decision_id, idempotency_key))
        except DuplicateFeedbackError:  # another request with the same key may have stored it meanwhile
            if idempotency_key is not None and (earlier := self._replayed(decision, idempotency_key)):
                return earlier
            raise
        self.metrics.feedback.labels(decision["route"]).inc()
        if route in self.cascades and quality is not None:  # teaches the cascade how far to trust its verifier
            self.cascades[route].learned(self.store)
        applied = 0
        if learning:  # 1 once the learner holds it, whether this sync applied it or a concurrent one did
            self.learners.sync(self.store, until=seq)
            applied = int(self.learners.cursor(route) >= seq)
        return {"feedback_id": seq, "decision_id": decision_id, "route": decision["route"], "reward": reward,
                "learned": bool(learning), "applied": applied}

    def _replayed(self, decision: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        """The answer of the feedback stored earlier with ``idempotency_key`` on ``decision``, if there is one."""
        earlier = self.store.feedback_with_key(_scoped_key(decision["decision_id"], idempotency_key))
        if earlier is None:
            return None
        return {"feedback_id": earlier["seq"], "decision_id": decision["decision_id"], "route": decision["route"],
                "reward": earlier["reward"], "learned": decision["route"] in self.learners.routes, "applied": 0,
                "replayed": True}

    def _stored_decision(self, decision_id: str) -> dict[str, Any]:
        """The decision from the store, waiting up to ``DECISION_WAIT_S`` for another replica's writer to commit it."""
        deadline = time.monotonic() + DECISION_WAIT_S
        while (decision := self.store.decision(decision_id)) is None:
            if time.monotonic() > deadline:
                raise self._unknown(decision_id)
            time.sleep(DECISION_POLL_S)
        return decision

    async def _awaited_decision(self, decision_id: str) -> dict[str, Any]:
        """A decision not yet in the store (nor this process's queue) when looked for: waited for without holding a
        thread, as in ``_stored_decision``, and only when its id could be one in flight (the format
        ``Routes.decide`` gives, at most ``MAX_DECISION_WAITERS`` at once)."""
        if not DECISION_ID.fullmatch(decision_id) or self._decision_waiters >= MAX_DECISION_WAITERS:
            raise self._unknown(decision_id)
        self._decision_waiters += 1
        try:
            deadline = time.monotonic() + DECISION_WAIT_S
            while time.monotonic() < deadline:
                await asyncio.sleep(DECISION_POLL_S)
                # our own queue was flushed above: only another replica's commit can bring it now
                decision = await anyio.to_thread.run_sync(
                    lambda: self.store.decision(decision_id, flush=False))
                if decision is not None:
                    return decision
        finally:
            self._decision_waiters -= 1
        raise self._unknown(decision_id)

    def _unknown(self, decision_id: str) -> Exception:
        """UnknownDecisionError, or StoreUnavailableError while rows wait in the spool (the decision may be one)."""
        if getattr(self.store, "spooled_bytes", lambda: 0)() > 0:
            return StoreUnavailableError(f"decision {decision_id!r} is not in the store, which is catching up after "
                                         "an outage (rows wait in its spool); retry later")
        return UnknownDecisionError(decision_id)

    def _reward(self, decision: dict[str, Any], quality: float) -> float:
        """The route objective's reward of ``quality`` at the cost and latency the call had.

        Cost is scaled over what each candidate would have charged for the same token
        counts; a decision never carried out (``/v1/route``) is priced at nominal counts.
        """
        details = decision.get("scores") or {}
        objective = parse_objective(details.get("objective") or "quality=1")
        outcome = decision.get("outcome") or {}
        config = self.config.model(outcome.get("model") or decision["model"])
        tokens_in = outcome.get("tokens_in") or NOMINAL_TOKENS_IN
        tokens_out = outcome.get("tokens_out") or ASSUMED_OUTPUT_TOKENS
        latency_s = outcome.get("latency_s")
        scale = self.routes.scale(list(decision["candidates"]), objective, tokens_in, tokens_out)
        return float(LinearReward(objective, scale)(
            quality, config.cost_usd(tokens_in, tokens_out),
            (config.expected_latency_s or 0.0) if latency_s is None else latency_s,
        ))

    # -- readiness ------------------------------------------------------------------------
    async def not_ready(self) -> list[str]:
        """Why this gateway cannot serve well now (empty when it can): the store cannot write, or a
        route (or, without routes, the pool) has every model cooling down."""
        reasons = []
        try:  # a real write that changes nothing a reader sees: the pool's prices, as this server serves them
            prices = {model.name: (model.price_per_mtok_in, model.price_per_mtok_out) for model in self.config.models}
            await asyncio.wait_for(asyncio.to_thread(self.store.record_pool, prices), READY_STORE_TIMEOUT_S)
        except TimeoutError:
            reasons.append(f"store: a write took longer than {READY_STORE_TIMEOUT_S:g} s")
        except Exception as error:  # noqa: BLE001 (any failure to write is the reason)
            reasons.append(f"store: cannot write ({type(error).__name__}: {redact_credentials(str(error))[:200]})")
        cooling = self.health.unavailable()
        groups = {f"route {route.name!r}": list(route.models) or self.config.model_names for route in self.config.routes}
        for name, models in (groups or {"pool": self.config.model_names}).items():
            if models and set(models) <= cooling:
                reasons.append(f"{name}: every model is cooling down ({', '.join(models)})")
        return reasons

    async def close_providers(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()

    async def aclose(self) -> None:
        await self.shadow.aclose()  # before the providers close: shadow calls in flight use them
        await self.close_providers()
        self.learners.snapshot(self.store)
        self.routes.budgets.close()
        self.store.close()
        await asyncio.to_thread(self.tracer.shutdown)  # exports the spans still queued


def _rejects_request(error: UpstreamError) -> bool:
    """Whether the upstream refused the request's body as invalid (400, 422): the client's fault, not the model's."""
    return error.kind == "status" and error.status in (400, 422)




def _check_feedback(decision_id: Any, reward: Any, quality: Any) -> None:
    """BadRequest unless a feedback's decision id and numbers are well formed."""
    if not isinstance(decision_id, str) or not decision_id:
        raise BadRequest("`decision_id` must be the id of an earlier decision (the x-crossroads-decision-id header)",
                         "decision_id")
    for name, value in (("reward", reward), ("quality", quality)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise BadRequest(f"`{name}` must be a finite number", name)
    if quality is not None and not 0.0 <= quality <= 1.0:
        raise BadRequest("`quality` must lie in [0, 1] (1 = a perfect answer)", "quality")
    if reward is None and quality is None:
        raise BadRequest("send `reward` (in [0, 1]) or `quality` (in [0, 1], priced against the route's objective)")
    if reward is not None and quality is not None:
        raise BadRequest("send `reward` or `quality`, not both: a reward is computed from the quality, so "
                         "both would say the same thing twice", "reward")


def _scoped_key(decision_id: str, idempotency_key: str | None) -> str | None:
    """An idempotency key as stored: per decision, so that two clients' keys never collide."""
    return None if idempotency_key is None else f"{decision_id} {idempotency_key}"


def _spool(config: ServeConfig) -> Spool:
    """Where rows wait while the store is down: ``store_spool``, or beside the SQLite file, or ``./crossroads-spool``."""
    path = config.store_spool
    if path is None:
        kind, where = parse_store_url(config.store)
        path = f"{where}.spool" if kind == "sqlite" and where != ":memory:" else "crossroads-spool"
    return Spool(path, int(config.store_spool_max_mb * 1_000_000))


async def _as_stream(answer: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A whole answer as the chunks of a stream: each choice's text in one chunk (the first carries the
    ``crossroads`` field, as a relayed stream's does), then one with the finish reasons and the usage."""
    head = {"object": "chat.completion.chunk", **{key: answer[key] for key in ("id", "created", "model")
                                                     if key in answer}}
    choices = [choice for choice in answer.get("choices") or [] if isinstance(choice, dict)]
    for n, choice in enumerate(choices):
        delta = {"role": "assistant", "content": message_text(choice.get("message") or {})}
        yield {**head, **({"crossroads": answer["crossroads"]} if n == 0 else {}),
               "choices": [{"index": choice.get("index", n), "delta": delta, "finish_reason": None}]}
    yield {**head, "choices": [{"index": choice.get("index", n), "delta": {},
                                "finish_reason": choice.get("finish_reason") or "stop"}
                               for n, choice in enumerate(choices)],
           **({"usage": answer["usage"]} if answer.get("usage") else {})}


def _resolve(done: asyncio.Future) -> None:
    if not done.done():  # the request may have been cancelled meanwhile
        done.set_result(None)
