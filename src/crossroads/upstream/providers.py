"""Upstream LLM providers: the one border between crossroads and the models it calls.

A ``Provider`` sends an OpenAI chat-completions body to one model and returns the
answer (a dict in OpenAI's wire format) or its stream of chunks.  ``OpenAIProvider``
speaks to any OpenAI-compatible endpoint over ``httpx``, retrying 408/409/429/5xx and
network errors with exponential backoff (honouring ``Retry-After``); ``LiteLLMProvider`` reaches other APIs through LiteLLM when it is
installed.  Every failure becomes an ``UpstreamError`` whose message never contains
the API key.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from crossroads.registry import Registry
from crossroads.upstream.http import CALL_HEADERS, RETRY_STATUSES, redact_credentials, retry_after_s, server_message
from crossroads.upstream.models import ModelConfig

_SECRET_LIKE = re.compile(r"\b(sk|key|tok)-[A-Za-z0-9_\-]{6,}")


class UpstreamError(Exception):
    """A model could not answer: ``kind`` is one of status, timeout, connection, malformed, broken (mid-stream)."""

    def __init__(self, model: str, kind: str, message: str, status: int | None = None):
        self.model, self.kind, self.status = model, kind, status
        super().__init__(f"model {model!r}: {message}")


class Provider(ABC):
    """Calls one upstream model; ``body`` is the client's request with ``model`` set for the upstream.

    ``http_client`` (an ``httpx.AsyncClient``) is the seam to the network: tests give one
    whose transport is :class:`crossroads.upstream.fake.FakeUpstream`.  Without one, the
    provider opens its own.
    """

    def __init__(self, model: ModelConfig, http_client: Any = None):
        self.config = model
        self.http_client = http_client

    @abstractmethod
    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat completion for ``body`` as a dict, or UpstreamError."""

    @abstractmethod
    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed chat completion for ``body``, or UpstreamError."""

    async def aclose(self) -> None:
        return None

    def api_key(self) -> str | None:
        env = self.config.api_key_env
        return os.environ.get(env) or None if env else None

    def redact(self, text: str) -> str:
        """``text`` with the API key, anything shaped like a key and the credentials in URLs blanked out."""
        key = self.api_key()
        if key:
            text = text.replace(key, "[redacted]")
        return redact_credentials(_SECRET_LIKE.sub("[redacted]", text))


class OpenAIProvider(Provider):
    """Any OpenAI-compatible ``/chat/completions`` endpoint, called with ``httpx`` directly.

    Each call is retried ``max_retries`` times on 408/409/429/5xx and network errors, after
    the server's ``Retry-After`` (up to a minute) or an exponential backoff (0.5 s doubling,
    at most 8 s, with jitter), as the openai SDK does; the SDK itself is not used here: it
    cost about 40% of the server's CPU per request.  A ``local`` model's answer loses the
    space it begins with (the transcript it continues ends in ``Assistant:``; see
    :mod:`crossroads.upstream.local_model`).
    """

    def __init__(self, model: ModelConfig, http_client: Any = None):
        super().__init__(model, http_client)
        self._own: Any = None
        self._url = model.base_url.rstrip("/") + "/chat/completions"

    def _client(self) -> Any:
        if self.http_client is not None:
            return self.http_client
        if self._own is None:  # created on first use: no client, and no key needed, at import or config time
            import httpx

            self._own = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        return self._own

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._post({**body, "stream": False} if "stream" in body else body, stream=False)
        try:
            answer = json.loads(response.content)
        except ValueError:
            raise UpstreamError(self.config.name, "malformed", "the upstream's answer is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamError(self.config.name, "malformed", "the upstream's answer has no `choices` list")
        if self.config.local:
            for choice in answer["choices"]:
                message = choice.get("message") if isinstance(choice, dict) else None
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    message["content"] = message["content"].lstrip(" ")
        return answer

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        import httpx

        response = await self._post({**body, "stream": True}, stream=True)
        count, started = 0, not self.config.local
        try:
            async for chunk in _server_sent_events(response):
                if not isinstance(chunk, dict):
                    raise ValueError("a stream chunk is not a JSON object")
                if "error" in chunk:
                    raise ValueError(f"the upstream sent an error: {_error_message(chunk)}")
                count += 1
                if not started:
                    started = _strip_first_text(chunk)
                yield chunk
        except (httpx.TransportError, ValueError) as error:
            if not count:
                raise self._failure(error) from None
            raise UpstreamError(self.config.name, "broken", f"the stream broke mid-answer after {count} chunks "
                                f"({type(error).__name__}: {self.redact(str(error))[:200]})") from None
        finally:
            await response.aclose()
        if not count:
            raise UpstreamError(self.config.name, "malformed", "the stream ended without a single chunk")

    async def aclose(self) -> None:
        if self._own is not None:  # a given client is its owner's to close
            await self._own.aclose()
            self._own = None

    async def _post(self, body: dict[str, Any], *, stream: bool) -> Any:
        """The 2xx response to ``body`` (unread when ``stream``), after the retries; else UpstreamError."""
        import httpx

        client, content, headers = self._client(), json.dumps(body).encode(), self._headers()
        failure: UpstreamError | None = None
        wait_s = 0.0
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                await asyncio.sleep(wait_s)
            wait_s = min(0.5 * 2**attempt, 8.0) * (1.0 - 0.25 * random.random())
            request = client.build_request("POST", self._url, content=content, headers=headers,
                                           timeout=self.config.timeout_s)
            try:
                response = await client.send(request, stream=stream)
            except httpx.TransportError as error:
                failure = self._failure(error)
                continue
            if response.status_code < 300:
                return response
            try:
                await response.aread()
            except httpx.TransportError as error:
                failure = self._failure(error)
                continue
            finally:
                await response.aclose()
            status = response.status_code
            failure = UpstreamError(self.config.name, "status",
                                    f"status {status}: {self.redact(server_message(response)[:300])}", status)
            if status not in RETRY_STATUSES:
                break
            wait_s = retry_after_s(response, default=wait_s)
        assert failure is not None
        raise failure

    def _headers(self) -> dict[str, str]:
        headers = {**(CALL_HEADERS.get() or {}), "content-type": "application/json", "accept": "application/json"}
        key = self.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def _failure(self, error: Exception) -> UpstreamError:
        """The UpstreamError for a network failure or an unreadable answer, with the key redacted."""
        import httpx

        name = self.config.name
        if isinstance(error, httpx.TimeoutException):
            return UpstreamError(name, "timeout", f"no answer within {self.config.timeout_s:g} s")
        if isinstance(error, httpx.TransportError):
            return UpstreamError(name, "connection", f"could not reach {self.redact(self.config.base_url)}")
        return UpstreamError(name, "malformed", f"bad answer: {self.redact(str(error))[:300]}")


async def _server_sent_events(response: Any) -> AsyncIterator[Any]:
    """The decoded JSON ``data`` of each server-sent event of ``response``, up to ``[DONE]``.

    Comment lines (``: keep-alive``) and fields other than ``data`` are skipped; the data
    lines of one event are joined by newlines, as the SSE format says.  A ``data`` that is
    not JSON raises ValueError.
    """
    data: list[str] = []
    async for line in response.aiter_lines():
        if line:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue
        if not data:
            continue
        text, data = "\n".join(data), []
        if text.startswith("[DONE]"):
            return
        yield json.loads(text)
    if data and not data[0].startswith("[DONE]"):
        yield json.loads("\n".join(data))


def _strip_first_text(chunk: dict[str, Any]) -> bool:
    """Strip the leading spaces of the chunk's text; whether the answer's text has begun."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str) and delta["content"]:
            delta["content"] = delta["content"].lstrip(" ")
            return bool(delta["content"])
    return False


def _error_message(body: Any) -> str:
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])[:300]
    return str(inner)[:300]


class LiteLLMProvider(Provider):
    """Models LiteLLM knows (Anthropic, Bedrock, Vertex ...); ``upstream_model`` is LiteLLM's name."""

    def _litellm(self) -> Any:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of its price list at import
        try:
            import litellm
        except ImportError:
            raise UpstreamError(
                self.config.name, "connection", "provider litellm needs LiteLLM: pip install litellm"
            ) from None
        return litellm

    def _options(self, body: dict[str, Any]) -> dict[str, Any]:
        options = {**body, "timeout": self.config.timeout_s, "num_retries": self.config.max_retries}
        options["api_key"] = self.api_key() or "no-key"  # LiteLLM refuses to call without one, even a local server
        if self.config.base_url != ModelConfig.base_url:
            options["api_base"] = self.config.base_url
        if extra := CALL_HEADERS.get():
            options["extra_headers"] = {**extra, **(options.get("extra_headers") or {})}
        return options

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        litellm = self._litellm()
        try:
            answer = await litellm.acompletion(**self._options({**body, "stream": False}))
        except Exception as error:  # LiteLLM maps every provider's errors onto its own classes
            raise UpstreamError(self.config.name, "status", self.redact(str(error))[:300],
                                getattr(error, "status_code", None)) from None
        return answer.model_dump()

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        litellm = self._litellm()
        try:
            chunks = await litellm.acompletion(**self._options({**body, "stream": True}))
            async for chunk in chunks:
                yield chunk.model_dump()
        except Exception as error:
            raise UpstreamError(self.config.name, "status", self.redact(str(error))[:300],
                                getattr(error, "status_code", None)) from None


#: Providers by the name a model's ``provider:`` gives.
PROVIDERS = Registry(
    "provider",
    {"openai": "crossroads.upstream.providers:OpenAIProvider", "litellm": "crossroads.upstream.providers:LiteLLMProvider"},
    {"openai": "any OpenAI-compatible endpoint", "litellm": "other APIs through LiteLLM"},
)


def make_provider(model: ModelConfig, http_client: Any = None) -> Provider:
    """The provider ``model.provider`` names, calling through ``http_client`` when one is given."""
    return PROVIDERS.build(model.provider, model=model, http_client=http_client)
