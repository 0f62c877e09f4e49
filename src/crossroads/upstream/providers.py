"""Upstream LLM providers: the one border between crossroads and the models it calls.

A ``Provider`` sends an OpenAI chat-completions body to one model and returns the
answer (a dict in OpenAI's wire format) or its stream of chunks.  ``OpenAIProvider``
speaks to any OpenAI-compatible endpoint through the official ``openai`` async client,
which retries 408/409/429/5xx and network errors with exponential backoff (honouring
``Retry-After``); ``LiteLLMProvider`` reaches other APIs through LiteLLM when it is
installed.  Every failure becomes an ``UpstreamError`` whose message never contains
the API key.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from crossroads.registry import Registry
from crossroads.upstream.http import redact_credentials
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
    """Any OpenAI-compatible ``/chat/completions`` endpoint, through ``openai.AsyncOpenAI``.

    A ``local`` model's answer loses the space it begins with (the transcript it
    continues ends in ``Assistant:``; see :mod:`crossroads.upstream.local_model`).
    """

    def __init__(self, model: ModelConfig, http_client: Any = None):
        super().__init__(model, http_client)
        self._client: Any = None

    def _openai(self) -> Any:
        if self._client is None:  # created on first use: no client, and no key needed, at import or config time
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=self.api_key() or "no-key",
                timeout=self.config.timeout_s,
                max_retries=self.config.max_retries,
                http_client=self.http_client,
            )
        return self._client

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        body = {**body, "stream": False} if "stream" in body else body
        with self._errors():
            response = await self._openai().post("/chat/completions", body=body, cast_to=httpx.Response)
        try:
            answer = response.json()
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
        import openai
        from openai import AsyncStream

        with self._errors():
            chunks = await self._openai().post(
                "/chat/completions", body={**body, "stream": True}, cast_to=object, stream=True,
                stream_cls=AsyncStream[object],
            )
            count, started = 0, not self.config.local
            try:
                async for chunk in chunks:
                    if not isinstance(chunk, dict):
                        raise UpstreamError(self.config.name, "malformed", "a stream chunk is not a JSON object")
                    count += 1
                    if not started:
                        started = _strip_first_text(chunk)
                    yield chunk
            except (openai.APIError, httpx.TransportError, ValueError) as error:
                if not count:
                    raise  # nothing sent yet: a failure to reach or read the model, as any other
                raise UpstreamError(self.config.name, "broken", f"the stream broke mid-answer after {count} chunks "
                                    f"({type(error).__name__}: {self.redact(str(error))[:200]})") from None
            if not count:
                raise UpstreamError(self.config.name, "malformed", "the stream ended without a single chunk")

    async def aclose(self) -> None:
        if self._client is not None and self.http_client is None:  # a given client is its owner's to close
            await self._client.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turns the openai SDK's exceptions into UpstreamError, with the key redacted."""
        import httpx
        import openai

        name = self.config.name
        try:
            yield
        except openai.APITimeoutError:
            raise UpstreamError(name, "timeout", f"no answer within {self.config.timeout_s:g} s") from None
        except (openai.APIConnectionError, httpx.TransportError):
            raise UpstreamError(name, "connection", f"could not reach {self.redact(self.config.base_url)}") from None
        except openai.APIStatusError as error:
            message = self.redact(_status_message(error))
            raise UpstreamError(name, "status", f"status {error.status_code}: {message}", error.status_code) from None
        except (openai.APIError, ValueError) as error:  # includes JSON that does not decode
            raise UpstreamError(name, "malformed", f"bad answer: {self.redact(str(error))[:300]}") from None


def _strip_first_text(chunk: dict[str, Any]) -> bool:
    """Strip the leading spaces of the chunk's text; whether the answer's text has begun."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str) and delta["content"]:
            delta["content"] = delta["content"].lstrip(" ")
            return bool(delta["content"])
    return False


def _status_message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(getattr(error, "message", error))[:300]


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
