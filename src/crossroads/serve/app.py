"""The OpenAI-compatible HTTP server: a Starlette app over a Gateway.

Endpoints: ``POST /v1/chat/completions`` (JSON or server-sent events),
``GET /v1/models``, ``POST /v1/route`` (decide only), ``POST /v1/feedback``,
``GET /health`` (= ``/health/ready``, readiness), ``GET /health/live``, ``GET /metrics`` (Prometheus), and the admin endpoints
``GET /admin/learners``, ``POST /admin/snapshot``, ``POST /admin/reload`` and those of virtual keys and teams
(:mod:`crossroads.serve.keys_api`; docs/keys.md), and the dashboard at ``/ui`` (:mod:`crossroads.serve.dashboard`).  Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with a 4xx status for the
client's mistakes and 502 when no upstream model could answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import time
import weakref
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from crossroads.errors import CrossroadsError
from crossroads.serve.budgets import BudgetExhausted
from crossroads.serve.config import ServeConfig, load_config
from crossroads.serve.dashboard import Dashboard
from crossroads.serve.gateway import AllModelsFailed, DeadlineExceeded, FeedbackForbidden, Gateway, RequestRejected
from crossroads.serve.keys import KeyRefused, KeyRing
from crossroads.serve.keys_api import KeysAdmin
from crossroads.serve.limits import Limits, retry_after
from crossroads.serve.requests import MAX_NAME_CHARS, BadJSON, BadRequest, parse_chat_request, parse_json_body
from crossroads.serve.routing import UnknownRoute
from crossroads.serve.tracing import leave
from crossroads.store import DuplicateFeedbackError, UnknownDecisionError
from crossroads.store.keys import KeySettingsError, UnknownKeyError, UnknownTeamError
from crossroads.store.sql import unavailable as store_unavailable
from crossroads.upstream.http import redact_credentials

log = logging.getLogger("crossroads.serve")
#: One INFO line per request (``crossroads serve --access-log``): never the prompt or a key.
access_log = logging.getLogger("crossroads.access")

DECISION_HEADER = "x-crossroads-decision-id"
#: After a reload, the old config's upstream clients stay open this long for requests still in flight.
RELOAD_GRACE_S = 120.0
#: At shutdown, requests cancelled at ``shutdown_timeout_s`` get this long to record their outcomes.
SHUTDOWN_FLUSH_S = 5.0
#: A stream whose first chunk takes longer than this sends its headers (status 200) before it.
STREAM_HEADERS_S = 1.0
#: Bodies bigger than this are parsed one at a time in a worker thread: sixteen 1 MB prompts at once held the
#: event loop for about 16 x 8 ms each round, and every small request waited behind them (benchmarks/chaos.py).
LARGE_BODY_BYTES = 64 * 1024
#: A stream waiting for its first chunk sends an SSE comment this often, so that clients and proxies keep waiting.
STREAM_KEEPALIVE_S = 5.0
#: Retry-After of a 503 while the store cannot answer (down, disk full, spool full).
STORE_RETRY_AFTER_S = 5.0
#: The endpoints traced when the config's ``tracing`` is on, and the name of each one's span.
TRACED = {"chat": "crossroads.chat", "route": "crossroads.route", "feedback": "crossroads.feedback"}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}
        super().__init__(message)


def error_response(error: HTTPError) -> JSONResponse:
    body = {"error": {"message": _printable(error.message), "type": error.kind, "param": _printable(error.param),
                      "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _error_event(error: Exception) -> str:
    """A failure before a stream's first chunk, as the SSE error event the openai SDK raises as ``APIError``."""
    if isinstance(error, DeadlineExceeded):
        kind, code = "upstream_error", "deadline_exceeded"
    elif isinstance(error, RequestRejected):
        kind, code = "invalid_request_error", "upstream_rejected_request"
    elif isinstance(error, AllModelsFailed):
        kind, code = "upstream_error", "all_models_failed"
    else:
        log.error("unexpected error before a stream's first chunk", exc_info=error)
        error, kind, code = Exception("internal error in crossroads; see the server log"), "server_error", None
    body = {"error": {"message": _printable(str(error)), "type": kind, "param": None, "code": code}}
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def _printable(text: str | None) -> str | None:
    """``text`` encodable as UTF-8: a message may quote what the client sent, lone surrogates included."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


class Server:
    """Request handling: authentication, limits, parsing, and the mapping of errors to statuses."""

    def __init__(self, gateway: Gateway, config_path: str | None = None):
        self.config_path = config_path
        self.router_overrides: dict[str, str] = {}  # route -> router file set by /admin/reload, kept for later reloads
        self.tasks: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()  # the tasks serving requests
        self.large_bodies = asyncio.Semaphore(1)  # see LARGE_BODY_BYTES
        self._use(gateway)
        self.keyring = KeyRing(gateway.store)  # a reload keeps the store, so the ring stays

    def _use(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config: ServeConfig = gateway.config
        self.limits = Limits(self.config, getattr(self, "limits", None))

    # -- guards ------------------------------------------------------------------------
    async def client(self, request: Request, admin: bool = False) -> str:
        """Who is calling; raises 401/403/429 for a missing or wrong key or too many requests (see serve/limits.py)."""
        security = self.config.security
        token = _bearer(request)
        address = request.client.host if request.client else "?"
        keys = set() if admin else security.client_keys()
        virtual = None if admin else await self._virtual_key(token)
        guarded = admin or bool(keys) or virtual is not None or await self._has_virtual_keys()
        if guarded:
            await self._limit(self.limits.auth_locked, address, message=f"too many wrong keys from {address}")
        if admin:
            admin_key = security.admin_key()
            if admin_key is None:
                how = (f"put the admin key in ${security.admin_key_env} (security.admin_key_env)" if security.admin_key_env
                       else "name an environment variable holding the admin key in the config's "
                       "security.admin_key_env and set it")
                raise HTTPError(403, f"admin endpoints are disabled: {how}", "permission_error")
            if token is None or not _same_key(token, admin_key):
                await self._limit(self.limits.auth_failed, address, message=f"too many wrong keys from {address}")
                raise HTTPError(401, "this endpoint needs the admin key as a bearer token", "authentication_error",
                                "invalid_api_key")
            return "admin"
        if virtual is not None:
            KeyRing.check_alive(virtual)  # a revoked or expired key: 401 saying so (not counted as a guess)
            request.state.key = virtual
        elif guarded and (token is None or not any(_same_key(token, key) for key in keys)):
            await self._limit(self.limits.auth_failed, address, message=f"too many wrong keys from {address}")
            raise HTTPError(401, "missing or wrong API key: send `Authorization: Bearer <key>` with a key this "
                            "server accepts", "authentication_error", "invalid_api_key")
        who = token or address
        await self._limit(self.limits.request, token if guarded else None, address,
                          message=f"rate limit of {security.rate_limit_per_s} requests/s exceeded")
        if virtual is not None and virtual.rate_limit_per_s is not None:
            await self._limit(self.limits.virtual_key, virtual.key_id, virtual.rate_limit_per_s,
                              virtual.rate_burst or security.rate_burst,
                              message=f"rate limit of the API key {virtual.prefix}... ({virtual.name!r}) of "
                              f"{virtual.rate_limit_per_s:g} requests/s exceeded")
        return who

    def sends_admin_key(self, request: Request) -> bool:
        """Whether the request's bearer token is the admin key (the guard itself is ``client(request, admin=True)``)."""
        token, admin_key = _bearer(request), self.config.security.admin_key()
        return token is not None and admin_key is not None and _same_key(token, admin_key)

    async def _virtual_key(self, token: str | None) -> Any:
        """The virtual key ``token`` is (see serve/keys.py), or None; a lookup the cache lacks runs off the loop."""
        hit, key = self.keyring.cached(token)
        return key if hit else await anyio.to_thread.run_sync(self.keyring.resolve, token)

    async def _has_virtual_keys(self) -> bool:
        known = self.keyring.any_cached()
        return known if known is not None else await anyio.to_thread.run_sync(self.keyring.any)

    async def _as_key(self, request: Request, chat: Any, spends: bool) -> Any:
        """``chat`` within its virtual key's routes and models (and, if it ``spends``, budget), attributed to it."""
        key = getattr(request.state, "key", None)
        if key is None:
            return chat
        chat = KeyRing.restrict(key, chat, self.config)
        payers: tuple[str, ...] = ()
        if spends:
            await anyio.to_thread.run_sync(self.keyring.check_budget, key)
            payers = await anyio.to_thread.run_sync(self.keyring.paced_by, key, self.gateway.routes.budgets)
        return dataclasses.replace(chat, key_id=key.key_id, team=key.team, payers=payers)

    async def _limit(self, check: Any, *args: Any, message: str) -> None:
        """429 with Retry-After if ``check(*args)`` says to wait; store-backed checks run off the event loop."""
        wait_s = await anyio.to_thread.run_sync(check, *args) if self.limits.shared else check(*args)
        if wait_s > 0:
            raise HTTPError(429, f"{message}; retry in {wait_s:.2f} s", "rate_limit_error", "rate_limit_exceeded",
                            headers=retry_after(wait_s))

    async def json_body(self, request: Request) -> Any:
        limit = self.config.security.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                            "(security.max_body_bytes)", "invalid_request_error", "request_too_large")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > limit:
                raise HTTPError(413, f"request body exceeds the limit of {limit} bytes (security.max_body_bytes)",
                                "invalid_request_error", "request_too_large")
        try:
            if len(raw) <= LARGE_BODY_BYTES:
                return parse_json_body(bytes(raw), self.config.security.max_json_depth)
            async with self.large_bodies:
                return await anyio.to_thread.run_sync(parse_json_body, bytes(raw), self.config.security.max_json_depth)
        except BadJSON as error:
            raise HTTPError(400, str(error), "invalid_request_error", "invalid_json", error.param) from None

    # -- endpoints ----------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        await self.client(request)
        chat = parse_chat_request(await self.json_body(request), self.config.route_on,
                                  self.config.security.max_messages)
        chat = await self._as_key(request, self._sent_by(request, chat), spends=True)
        key = getattr(request.state, "key", None)
        if not chat.stream:
            choice, answer = await self.gateway.complete(chat)
            if key is not None:  # charged before the answer returns: the next request of the key sees it
                await anyio.to_thread.run_sync(self.keyring.charge, key, answer["crossroads"]["cost_usd"])
            request.state.access = {"route": choice.route, "model": answer["model"],
                                    "cost_usd": answer["crossroads"]["cost_usd"]}
            return JSONResponse(answer, headers=_decision_headers(choice.decision_id, answer["model"]))
        gateway = self.gateway
        choice = await gateway.decide(chat)
        request.state.access = {"route": choice.route, "model": choice.model, "cost_usd": "after the stream"}

        opening = asyncio.ensure_future(gateway.open_stream(chat, choice))
        try:  # a stream that opens or fails at once answers as before: 200, or an error with its status
            if (await asyncio.wait({opening}, timeout=STREAM_HEADERS_S))[0]:
                opening.result()
        except BaseException:
            opening.cancel()
            raise

        async def events():
            # The headers go out now; while the models are tried, keep-alive comments stop clients and
            # proxies from timing out, and a failure before the first chunk becomes an error event.
            charged = key is None
            try:
                while not (await asyncio.wait({opening}, timeout=STREAM_KEEPALIVE_S))[0]:
                    yield ": keep-alive\n\n"
                try:
                    chunks = opening.result()
                except Exception as error:
                    yield _error_event(error)
                    yield "data: [DONE]\n\n"
                    return
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
                if not charged:
                    charged = True
                    await anyio.to_thread.run_sync(self.keyring.charge_decision, key, choice.decision_id, gateway.store)
                await gateway.written()  # [DONE] acknowledges the answer: its outcome is stored by then
                yield "data: [DONE]\n\n"
            finally:
                opening.cancel()
                if not charged and opening.done() and not opening.cancelled() and opening.exception() is None:
                    # the client went away mid-stream: charge what the outcome records, in the background
                    asyncio.ensure_future(anyio.to_thread.run_sync(self.keyring.charge_decision, key,
                                                                   choice.decision_id, gateway.store))

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers=_decision_headers(choice.decision_id, choice.model))

    async def route(self, request: Request) -> Response:
        await self.client(request)
        body = await self.json_body(request)
        if isinstance(body, dict) and "prompt" in body and "messages" not in body:
            if not isinstance(body["prompt"], str):
                raise BadRequest("`prompt` must be a string", "prompt")
            body = {**body, "messages": [{"role": "user", "content": body.pop("prompt")}]}
        chat = parse_chat_request(body, self.config.route_on, self.config.security.max_messages)
        chat = await self._as_key(request, self._sent_by(request, chat), spends=False)
        choice = await self.gateway.decide(chat)
        await self.gateway.written()
        return JSONResponse(choice.to_dict(), headers=_decision_headers(choice.decision_id, choice.model))

    async def feedback(self, request: Request) -> Response:
        await self.client(request)
        body = await self.json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("the feedback body must be an object: {decision_id, reward | quality}")
        unknown = sorted(set(body) - {"decision_id", "reward", "quality", "payload", "idempotency_key"})
        if unknown:
            raise BadRequest(f"unknown feedback fields {unknown}; send decision_id and reward or quality "
                             "(payload: any JSON you want kept with it; idempotency_key: see the docs)")
        if isinstance(body.get("decision_id"), str) and len(body["decision_id"]) > MAX_NAME_CHARS:
            raise BadRequest(f"`decision_id` is {len(body['decision_id'])} characters long; decision ids (the "
                             f"x-crossroads-decision-id header) have at most {MAX_NAME_CHARS}", "decision_id")
        result = await self.gateway.afeedback(body.get("decision_id"), body.get("reward"), body.get("quality"),
                                              body.get("payload"), client=self._client_id(request),
                                              idempotency_key=_idempotency_key(request, body))
        return JSONResponse(result)

    def _sent_by(self, request: Request, chat: Any) -> Any:
        """``chat`` with its client key's digest and the caller's address."""
        return dataclasses.replace(chat, client=self._client_id(request),
                                   address=request.client.host if request.client else None)

    def _client_id(self, request: Request) -> str | None:
        """A sha256 hex digest of the caller's client key (never the key itself); None without client keys."""
        token = _bearer(request)
        if token is None or not (self.config.security.client_keys() or getattr(request.state, "key", None)):
            return None
        return hashlib.sha256(token.encode("latin-1", "replace")).hexdigest()

    async def models(self, request: Request) -> Response:
        await self.client(request)
        created = int(time.time())
        data = [{"id": route.name, "object": "model", "created": created, "owned_by": "crossroads",
                 "crossroads": {"kind": "route"}} for route in self.config.routes]
        data += [{"id": m.name, "object": "model", "created": created, "owned_by": "crossroads",
                  "crossroads": {"kind": "model", "price_per_mtok_in": m.price_per_mtok_in,
                                 "price_per_mtok_out": m.price_per_mtok_out}} for m in self.config.models]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request: Request) -> Response:
        """Readiness (``/health``, ``/health/ready``): 503 ``degraded`` with the reasons when the store
        cannot write or a route has no model available."""
        reasons = await self.gateway.not_ready()
        cooling = sorted(self.gateway.health.unavailable())
        body = {"status": "degraded" if reasons else "ok", **({"reasons": reasons} if reasons else {}),
                "models": self.config.model_names, "cooling_down": cooling}
        return JSONResponse(body, status_code=503 if reasons else 200)

    async def live(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        """Prometheus text, for a client key or the admin key (a scraper run by the operator holds the latter)."""
        await self.client(request, admin=self.sends_admin_key(request))
        return Response(self.gateway.metrics.render(), media_type=self.gateway.metrics.content_type)

    async def learners(self, request: Request) -> Response:
        await self.client(request, admin=True)
        return JSONResponse({route: self.gateway.learners.state(route) for route in self.gateway.learners.routes})

    async def snapshot(self, request: Request) -> Response:
        await self.client(request, admin=True)
        await anyio.to_thread.run_sync(self.gateway.learners.snapshot, self.gateway.store)
        return JSONResponse({"saved": self.gateway.learners.routes})

    async def reload(self, request: Request) -> Response:
        """Read the config file again and serve it; learners continue from the store, counters go on."""
        await self.client(request, admin=True)
        if self.config_path is None:
            raise HTTPError(409, "this server runs on the embedded default (no --config file): nothing to reload",
                            "invalid_request_error", "no_config_file")
        overrides = await self._router_overrides(request)
        config = load_config(self.config_path)  # a mistake: 400, and the running config stays
        config = self._keep_running_parts(config)
        kept = {**self.router_overrides, **overrides}
        config = await anyio.to_thread.run_sync(lambda: _with_router_files(config, kept, set(overrides)))
        old = self.gateway
        await anyio.to_thread.run_sync(old.learners.snapshot, old.store)
        tracer = old.tracer if config.tracing == old.config.tracing else None  # None: the new config's
        new = await anyio.to_thread.run_sync(
            lambda: Gateway(config, store=old.store, http_client=old.http_client, metrics=old.metrics, tracer=tracer))
        if tracer is None:
            asyncio.get_running_loop().call_later(RELOAD_GRACE_S, lambda: asyncio.ensure_future(
                asyncio.to_thread(old.tracer.shutdown)))
        self._use(new)
        self.router_overrides = {name: path for name, path in kept.items()
                                 if name in {route.name for route in config.routes}}
        asyncio.get_running_loop().call_later(RELOAD_GRACE_S, lambda: asyncio.ensure_future(old.close_providers()))
        log.warning("reloaded %s: models %s, routes %s%s", self.config_path, config.model_names,
                    [route.name for route in config.routes],
                    f"; router files set by /admin/reload: {self.router_overrides}" if self.router_overrides else "")
        body = {"reloaded": self.config_path, "models": config.model_names,
                "routes": [route.name for route in config.routes]}
        if self.router_overrides:
            body["router_files"] = {route.name: route.router_file for route in config.routes if route.router_file}
            body["overrides"] = dict(self.router_overrides)
            body["config_file_changed"] = False
            body["note"] = (f"router files set here override {self.config_path} until this server stops; put them "
                            "in the config file to keep them after a restart")
        return JSONResponse(body)

    async def _router_overrides(self, request: Request) -> dict[str, str]:
        """The optional body ``{"routes": {ROUTE: {"router_file": "/abs/path.npz"}}}`` of a reload, checked."""
        declared = request.headers.get("content-length")
        if declared in (None, "0") and "transfer-encoding" not in request.headers:
            return {}
        body = await self.json_body(request)
        if body is None or body == {}:
            return {}
        shape = 'send {"routes": {"ROUTE": {"router_file": "/absolute/path.npz"}}} or no body'
        routes = body.get("routes") if isinstance(body, dict) else None
        if not isinstance(routes, dict) or set(body) != {"routes"}:
            raise HTTPError(400, f"reload body: {shape}", "invalid_request_error", param="routes")
        overrides = {}
        for name, values in routes.items():
            path = values.get("router_file") if isinstance(values, dict) else None
            if not isinstance(path, str) or set(values) != {"router_file"}:
                raise HTTPError(400, f"reload body: routes.{name}: {shape}", "invalid_request_error",
                                param=f"routes.{name}")
            if not path.startswith("/"):
                raise HTTPError(400, f"reload body: routes.{name}.router_file {path!r} is relative: give the "
                                "absolute path of the router file (the server resolves nothing against the caller's "
                                "directory)", "invalid_request_error", param=f"routes.{name}.router_file")
            overrides[name] = path
        return overrides

    def _keep_running_parts(self, config: ServeConfig) -> ServeConfig:
        """``config`` with the running store and local model servers, which a reload cannot replace."""
        if config.store != self.config.store:
            raise HTTPError(409, f"the new config names another store ({config.store}); restart the server to "
                            "change stores", "invalid_request_error", "store_changed")
        running = {model.name: model for model in self.config.models if model.local}
        models = []
        for model in config.models:
            if model.local:
                if model.name not in running:
                    raise HTTPError(409, f"local model {model.name!r} is new: restart the server to start it",
                                    "invalid_request_error", "local_model_added")
                model = dataclasses.replace(model, base_url=running[model.name].base_url,
                                            upstream_model=running[model.name].upstream_model)
            models.append(model)
        return dataclasses.replace(config, models=tuple(models))

    async def sync_forever(self) -> None:
        """Apply other replicas' feedback every ``sync_interval_s``."""
        while True:
            await asyncio.sleep(self.config.sync_interval_s)
            try:
                await anyio.to_thread.run_sync(self.gateway.learners.sync, self.gateway.store)
            except Exception:  # a database hiccup must not end the task; the next round retries
                log.exception("could not read feedback from the store")

    # -- error mapping -------------------------------------------------------------------
    def endpoint(self, name: str, handler):
        async def run(request: Request) -> Response:
            status, started = 500, time.perf_counter()
            self.tasks.add(asyncio.current_task())
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPError as error:
                status = error.status
                return error_response(error)
            except KeyRefused as error:
                status = error.status
                headers = retry_after(error.wait_s) if error.wait_s is not None else None
                return error_response(HTTPError(error.status, str(error), error.kind, error.code, error.param,
                                                headers=headers))
            except KeySettingsError as error:
                status = 400
                return error_response(HTTPError(400, str(error), "invalid_request_error", "invalid_key_settings",
                                                error.param))
            except UnknownKeyError as error:
                status = 404
                return error_response(HTTPError(404, str(error), "invalid_request_error", "key_not_found", "key_id"))
            except UnknownTeamError as error:
                status = 404
                return error_response(HTTPError(404, str(error), "invalid_request_error", "team_not_found", "team"))
            except BudgetExhausted as error:
                status = 429
                return error_response(HTTPError(429, str(error), "rate_limit_error", "budget_exhausted", "model",
                                                headers=retry_after(error.retry_after_s)))
            except UnknownRoute as error:
                status = 404
                return error_response(HTTPError(404, str(error), "invalid_request_error", "model_not_found", error.param))
            except BadRequest as error:
                status = 400
                return error_response(HTTPError(400, str(error), "invalid_request_error", None, error.param))
            except FeedbackForbidden as error:
                status = 403
                return error_response(HTTPError(403, str(error), "permission_error", "decision_of_another_client",
                                                "decision_id"))
            except DuplicateFeedbackError as error:
                status = 409
                return error_response(HTTPError(409, str(error), "invalid_request_error", "feedback_exists",
                                                "decision_id"))
            except UnknownDecisionError as error:
                status = 404
                return error_response(HTTPError(404, str(error), "invalid_request_error", "decision_not_found",
                                                "decision_id"))
            except RequestRejected as error:
                status = 400
                return error_response(HTTPError(400, str(error), "invalid_request_error", "upstream_rejected_request",
                                                headers={DECISION_HEADER: error.choice.decision_id}))
            except DeadlineExceeded as error:
                status = 504
                return error_response(HTTPError(504, str(error), "upstream_error", "deadline_exceeded",
                                                headers={DECISION_HEADER: error.choice.decision_id}))
            except AllModelsFailed as error:
                status = 502
                return error_response(HTTPError(502, str(error), "upstream_error", "all_models_failed",
                                                headers={DECISION_HEADER: error.choice.decision_id}))
            except Exception as error:
                if store_unavailable(error):  # the store is down or full: the server's trouble, retry later
                    status = 503
                    log.warning("%s: the store cannot answer: %s", name, redact_credentials(str(error))[:300])
                    return error_response(HTTPError(
                        503, f"the store cannot answer now ({type(error).__name__}); retry later", "server_error",
                        "store_unavailable", headers=retry_after(STORE_RETRY_AFTER_S)))
                if isinstance(error, CrossroadsError):
                    status = 400
                    return error_response(HTTPError(400, str(error), "invalid_request_error"))
                log.exception("unexpected error in %s", name)
                return error_response(HTTPError(500, "internal error in crossroads; see the server log",
                                                "server_error"))
            finally:
                self.gateway.metrics.requests.labels(name, str(status)).inc()
                if access_log.isEnabledFor(logging.INFO):
                    fields = getattr(request.state, "access", {})
                    access_log.info("%s %s %d %.0f ms%s", request.method, request.url.path, status,
                                    1e3 * (time.perf_counter() - started),
                                    "".join(f" {key}={value}" for key, value in fields.items()))

        return run


def _with_router_files(config: ServeConfig, router_files: dict[str, str], new: set[str]) -> ServeConfig:
    """``config`` with the routes of ``router_files`` using those files; the ``new`` ones must exist in the config,
    load, and predict for every model of their route (a kept override whose route is gone is dropped)."""
    from crossroads.routers import load_router

    routes = {route.name: route for route in config.routes}
    unknown = sorted(name for name in new if name not in routes)
    if unknown:
        raise HTTPError(400, f"reload body names routes the config does not have: {', '.join(unknown)}; its routes "
                        f"are {', '.join(routes) or 'none'}", "invalid_request_error", param="routes")
    replaced = []
    for route in config.routes:
        path = router_files.get(route.name)
        if path is None:
            replaced.append(route)
            continue
        if route.name in new:
            if route.router_file is None:
                raise HTTPError(400, f"route {route.name!r} decides with the learner {route.learner}, not a router "
                                "file: only a route with a router_file can have it replaced", "invalid_request_error",
                                param=f"routes.{route.name}.router_file")
            try:
                router = load_router(path)
            except CrossroadsError as error:
                raise HTTPError(400, f"routes.{route.name}.router_file: {error}", "invalid_request_error",
                                param=f"routes.{route.name}.router_file") from None
            models = list(route.models) or config.model_names
            missing = [m for m in models if m not in router.models_]
            if missing and not router.open_pool:
                raise HTTPError(400, f"routes.{route.name}.router_file {path}: the {router.name} router predicts for "
                                f"{', '.join(router.models_)}, not for {', '.join(missing)} of the route's models; "
                                "train it on the route's models", "invalid_request_error",
                                param=f"routes.{route.name}.router_file")
        replaced.append(dataclasses.replace(route, router_file=path))
    return dataclasses.replace(config, routes=tuple(replaced))


def _traced(server: Server, name: str, path: str, run: Any) -> Any:
    """The endpoint ``run`` in a span of its own (``TRACED[name]``) while the gateway traces; a stream's span
    ends with the stream.  Its attributes: the status, decision id, route, and virtual key id and team."""

    async def traced(request: Request) -> Response:
        tracer = server.gateway.tracer
        if not tracer.enabled:
            return await run(request)
        span = tracer.request(TRACED[name], request.headers, {"http.request.method": request.method,
                                                              "http.route": path})
        try:
            response = await run(request)
        except BaseException as error:  # cancelled: ``run`` answers every exception
            span.set(outcome=type(error).__name__)
            span.end()
            raise
        finally:
            leave(span)
        key = getattr(request.state, "key", None)
        streaming = isinstance(response, StreamingResponse)
        span.set({"http.response.status_code": response.status_code}, decision_id=response.headers.get(DECISION_HEADER),
                 key_id=key.key_id if key else None, team=key.team if key else None, stream=streaming)
        if response.status_code >= 500:
            span.fail(f"HTTP {response.status_code}")
        if streaming:
            response.body_iterator = _ending(response.body_iterator, span)
        else:
            span.end()
        return response

    return traced


async def _ending(events: Any, span: Any) -> Any:
    """``events`` (a streamed body), then the end of ``span``, however the stream ends."""
    try:
        async for event in events:
            yield event
    finally:
        span.end()


def _same_key(token: str, key: str) -> bool:
    """Whether a bearer token is ``key``, compared as bytes in constant time.

    Header values arrive decoded as latin-1 and keys from the environment may hold any
    character; ``hmac.compare_digest`` refuses non-ASCII text, so both go back to bytes.
    """
    return hmac.compare_digest(token.encode("latin-1", "replace"), key.encode("utf-8", "surrogateescape"))


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _idempotency_key(request: Request, body: dict[str, Any]) -> str | None:
    """The feedback's idempotency key, from the ``Idempotency-Key`` header or the ``idempotency_key`` field."""
    header, field = request.headers.get("idempotency-key"), body.get("idempotency_key")
    if header is not None and field is not None and header != field:
        raise BadRequest("the Idempotency-Key header and the `idempotency_key` field differ: send one",
                         "idempotency_key")
    key = field if field is not None else header
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_NAME_CHARS and key.isascii()
                                and key.isprintable()):
        raise BadRequest(f"an idempotency key must be 1 to {MAX_NAME_CHARS} printable ASCII characters",
                         "idempotency_key")
    return key


def _decision_headers(decision_id: str, model: str) -> dict[str, str]:
    return {DECISION_HEADER: decision_id, "x-crossroads-model": model}


def make_app(gateway: Gateway, config_path: str | None = None) -> Starlette:
    """The ASGI app serving ``gateway``; run it with uvicorn.  ``config_path`` is what ``/admin/reload`` reads."""
    server = Server(gateway, config_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.create_task(server.sync_forever())
        try:
            yield
        finally:
            in_flight = [request_task for request_task in server.tasks if not request_task.done()]
            if in_flight:  # cancelled at the shutdown deadline: they record their outcomes before the store closes
                await asyncio.wait(in_flight, timeout=SHUTDOWN_FLUSH_S)
            task.cancel()
            await server.gateway.aclose()
            server.limits.close()

    endpoints = [
        ("/v1/chat/completions", "chat", server.chat, ["POST"]),
        ("/v1/route", "route", server.route, ["POST"]),
        ("/v1/feedback", "feedback", server.feedback, ["POST"]),
        ("/v1/models", "models", server.models, ["GET"]),
        ("/health", "health", server.health, ["GET"]),
        ("/health/ready", "health", server.health, ["GET"]),
        ("/health/live", "health_live", server.live, ["GET"]),
        ("/metrics", "metrics", server.metrics, ["GET"]),
        ("/admin/learners", "admin_learners", server.learners, ["GET"]),
        ("/admin/snapshot", "admin_snapshot", server.snapshot, ["POST"]),
        ("/admin/reload", "admin_reload", server.reload, ["POST"]),
        *KeysAdmin(server).endpoints(),
        *Dashboard(server).endpoints(),
    ]
    routes = [Route(path, _traced(server, name, path, server.endpoint(name, handler)) if name in TRACED
                    else server.endpoint(name, handler), methods=methods) for path, name, handler, methods in endpoints]

    async def starlette_error(request: Request, error: Exception) -> Response:
        """Starlette's own answers (no such path, wrong method) in OpenAI's error shape."""
        assert isinstance(error, StarletteHTTPException)
        known = ", ".join(f"{' '.join(methods)} {path}" for path, _, _, methods in endpoints)
        if error.status_code == 404:
            message, code = f"no endpoint {request.url.path}; this server has: {known}", "not_found"
        elif error.status_code == 405:
            allow = {key.lower(): value for key, value in (error.headers or {}).items()}.get("allow")
            message = f"{request.method} is not allowed on {request.url.path}; use {allow or 'another method'}"
            code = "method_not_allowed"
        else:
            message, code = str(error.detail), None
        return error_response(HTTPError(error.status_code, message, "invalid_request_error", code,
                                        headers=dict(error.headers or {})))

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={StarletteHTTPException: starlette_error})
    app.state.server = server
    return app
