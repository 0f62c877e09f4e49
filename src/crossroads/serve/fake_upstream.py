"""An OpenAI-compatible upstream that answers instantly, or fails on request.

It stands in for paid remote APIs in tests and benchmarks: the overhead of crossroads
is measured against it, and faults are injected through it.  What it does is chosen by
the model name in the request, so that one server plays several models:

* ``status-429``, ``status-500`` (any status): an OpenAI-style error with that status;
* ``flaky-N``: the first N requests for that name get 500, later ones an answer;
* ``malformed``: status 200 with a body that is not JSON;
* ``break-stream``: streams two chunks, then drops the connection (non-streaming: truncated JSON);
* ``hang``: never answers;
* ``echo-key-401``: 401 with the request's Authorization header in the message (as some APIs do);
* anything else: ``echo: <start of the last message>``, with usage counts.

Run it with ``python -m crossroads.serve.fake_upstream --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections import Counter
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class DroppedConnection(Exception):
    """Raised inside a stream to make the server cut the connection."""


def make_app() -> Starlette:
    requests: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()

    async def chat(request: Request) -> Response:
        body = await request.json()
        requests.append({"body": body, "authorization": request.headers.get("authorization")})
        model = str(body.get("model", ""))
        seen[model] += 1
        if model.startswith("status-"):
            status = int(model.removeprefix("status-"))
            return JSONResponse({"error": {"message": f"injected {status}", "type": "injected"}}, status_code=status)
        if model.startswith("flaky-") and seen[model] <= int(model.removeprefix("flaky-")):
            return JSONResponse({"error": {"message": "injected flake", "type": "injected"}}, status_code=500)
        if model == "echo-key-401":
            message = f"invalid key {request.headers.get('authorization')}"
            return JSONResponse({"error": {"message": message, "type": "auth"}}, status_code=401)
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "malformed":
            return Response("{not json", media_type="application/json")
        text = "echo: " + _last_text(body)[:40]
        if body.get("stream"):
            return StreamingResponse(_chunks(model, text, broken=model == "break-stream"), media_type="text/event-stream")
        answer = json.dumps(_completion(model, text, body))
        return Response(answer[: len(answer) // 2] if model == "break-stream" else answer, media_type="application/json")

    async def recorded(request: Request) -> Response:
        return JSONResponse(requests)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/_requests", recorded),
    ])


def _last_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "")
    return content if isinstance(content, str) else json.dumps(content)


def _completion(model: str, text: str, body: dict[str, Any]) -> dict[str, Any]:
    tokens_in = sum(len(str(m.get("content", ""))) // 4 + 1 for m in body.get("messages", []))
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": len(text.split()),
                  "total_tokens": tokens_in + len(text.split())},
    }


async def _chunks(model: str, text: str, broken: bool):
    words = text.split(" ")
    for i, word in enumerate(words):
        if broken and i == 2:
            raise DroppedConnection("injected broken stream")
        delta = {"content": (" " if i else "") + word}
        if i == 0:
            delta["role"] = "assistant"
        chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n"


class ThreadedServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread; a context manager."""

    def __init__(self, app: Any, lifespan: str = "auto"):
        import uvicorn

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan=lifespan))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start within 15 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


class FakeUpstream(ThreadedServer):
    """The fake upstream in a background thread; ``base_url`` ends in ``/v1``."""

    def __init__(self) -> None:
        super().__init__(make_app(), lifespan="off")
        self.base_url = self.url + "/v1"

    def requests(self) -> list[dict[str, Any]]:
        import httpx

        return httpx.get(self.url + "/_requests").json()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(make_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
