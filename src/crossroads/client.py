"""``crossroads.Client``: a drop-in for the OpenAI client that routes in-process, without a server.

Like RouteLLM's Controller, it takes the server's configuration and answers
``client.chat.completions.create(...)`` with the chosen model's completion (an
``openai`` ``ChatCompletion``, or an iterator of ``ChatCompletionChunk`` when
``stream=True``).  ``client.route(prompt)`` decides without calling a model and
``client.feedback(decision_id, quality=...)`` teaches the online learners.

>>> client = Client("crossroads.yaml")                                  # doctest: +SKIP
>>> answer = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hi"}])  # doctest: +SKIP
>>> client.feedback(answer.crossroads["decision_id"], quality=1.0)      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from crossroads.serve.config import ServeConfig, load_config, parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.requests import parse_chat_request


def _config(config: ServeConfig | str | Path | dict) -> ServeConfig:
    if isinstance(config, ServeConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


def _request(kwargs: dict[str, Any], route_on: str):
    body = dict(kwargs)
    extra = body.pop("extra_body", None) or {}
    return parse_chat_request({**body, **extra}, route_on)


def _route_body(prompt: str | list[dict[str, Any]], model: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    body: dict[str, Any] = {"messages": messages}
    if model is not None:
        body["model"] = model
    if overrides:
        body["crossroads"] = overrides
    return body


class AsyncClient:
    """The async twin of :class:`Client`: ``await client.chat.completions.create(...)``."""

    def __init__(self, config: ServeConfig | str | Path | dict, **gateway_options: Any):
        self.gateway = Gateway(_config(config), **gateway_options)
        self.chat = _AsyncChat(self)

    async def route(self, prompt: str | list[dict[str, Any]], model: str | None = None, **overrides: Any) -> dict:
        """The decision for ``prompt`` (a string or a list of messages), recorded for later feedback."""
        request = parse_chat_request(_route_body(prompt, model, overrides), self.gateway.config.route_on)
        return (await self.gateway.decide(request)).to_dict()

    async def feedback(self, decision_id: str, reward: float | None = None, quality: float | None = None,
                       payload: dict[str, Any] | None = None) -> dict:
        return await asyncio.to_thread(self.gateway.feedback, decision_id, reward, quality, payload)

    async def close(self) -> None:
        await self.gateway.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _AsyncChat:
    def __init__(self, client: AsyncClient):
        self.completions = _AsyncCompletions(client)


class _AsyncCompletions:
    def __init__(self, client: AsyncClient):
        self._gateway = client.gateway

    async def create(self, **kwargs: Any) -> Any:
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        request = _request(kwargs, self._gateway.config.route_on)
        if not request.stream:
            _, answer = await self._gateway.complete(request)
            return ChatCompletion.model_validate(answer)
        _, chunks = await self._gateway.stream(request)

        async def typed() -> AsyncIterator[Any]:
            async for chunk in chunks:
                if "error" in chunk:
                    from crossroads.upstream.providers import UpstreamError

                    raise UpstreamError(chunk.get("model", "?"), "connection", chunk["error"]["message"])
                yield ChatCompletionChunk.model_validate(chunk)

        return typed()


class Client:
    """Routes OpenAI-style chat requests in this process; the same config as ``crossroads serve``.

    The calls are synchronous; the gateway runs on an event loop in a background thread.
    """

    def __init__(self, config: ServeConfig | str | Path | dict, **gateway_options: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crossroads-client", daemon=True)
        self._thread.start()
        self._async = self._run(self._make(config, gateway_options))
        self.gateway = self._async.gateway
        self.chat = _Chat(self)

    async def _make(self, config: Any, options: dict[str, Any]) -> AsyncClient:
        return AsyncClient(config, **options)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def route(self, prompt: str | list[dict[str, Any]], model: str | None = None, **overrides: Any) -> dict:
        """The decision for ``prompt`` (a string or a list of messages), recorded for later feedback."""
        return self._run(self._async.route(prompt, model, **overrides))

    def feedback(self, decision_id: str, reward: float | None = None, quality: float | None = None,
                 payload: dict[str, Any] | None = None) -> dict:
        """Store feedback for ``decision_id`` and apply it to the route's learner; returns its receipt."""
        return self.gateway.feedback(decision_id, reward, quality, payload)

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Chat:
    def __init__(self, client: Client):
        self.completions = _Completions(client)


class _Completions:
    def __init__(self, client: Client):
        self._client = client

    def create(self, **kwargs: Any) -> Any:
        result = self._client._run(self._client._async.chat.completions.create(**kwargs))
        if not kwargs.get("stream"):
            return result
        return self._iterate(result)

    def _iterate(self, chunks: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self._client._run(chunks.__anext__())
            except StopAsyncIteration:
                return
