"""One fake OpenAI-compatible upstream: in process as an httpx transport, or as a server on a socket.

It stands in for paid remote APIs in tests and benchmarks (the overhead of crossroads is
measured against it) and injects faults at the one seam every caller shares: the HTTP
client.  It answers ``POST /v1/chat/completions``, ``POST /v1/embeddings`` (with real
vectors from any crossroads embedder) and ``GET /v1/models``, and records every request.

What a chat request gets is chosen by, in order:

1. the next entry of ``script`` (consumed one per request), else ``default``: a string
   is the assistant's answer, an int an HTTP error status, a :class:`Fault` a misbehaviour;
2. the model name in the request, so that one fake plays several models:
   ``status-429``, ``status-500`` (any status), ``flaky-N`` (500 for the first N requests
   for that name, then answers), ``malformed`` (200 with a body that is not JSON),
   ``break-stream`` (two chunks, then the connection drops; not streaming: truncated
   JSON), ``hang`` (never answers), ``echo-key-401`` (401 quoting the request's
   Authorization header, as some APIs do);
3. ``recording`` (a :class:`crossroads.upstream.recorded.Recording`), when given: the
   recorded answer of the requested model to the last user message, with usage token
   counts that reproduce its recorded cost and (scaled) its latency; a stream ends with a
   chunk holding only the usage, as OpenAI's does with ``stream_options.include_usage``;
   404 for a model, a prompt or an outcome it does not hold.  This makes the fake a
   production twin;
4. ``answer(body)``: the text to answer with (default ``echo: <start of the last message>``).

In process no time passes: a reply slower than the client's read timeout fails with
``httpx.ReadTimeout`` at once, a faster one comes at once.  On a socket, slow replies
really wait.  Run it alone with ``python -m crossroads.upstream.fake --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from crossroads.upstream.servers import ThreadedServer

if TYPE_CHECKING:
    from crossroads.upstream.recorded import Recording

#: Where a transport-mode fake pretends to live; any URL reaches it through its transport.
FAKE_BASE_URL = "http://fake-upstream/v1"


@dataclass(frozen=True)
class Fault:
    """A misbehaviour: ``status`` (an HTTP error), ``malformed`` (200, not JSON), ``hang`` (no answer),
    ``slow`` (the answer after ``delay_s``), ``break_stream`` (the connection drops mid-answer),
    ``wrong_count`` (embeddings: one vector fewer than texts)."""

    kind: str
    status: int = 0
    delay_s: float = 0.0


MALFORMED = Fault("malformed")
HANG = Fault("hang")
BREAK_STREAM = Fault("break_stream")
WRONG_COUNT = Fault("wrong_count")


def slow(delay_s: float) -> Fault:
    return Fault("slow", delay_s=delay_s)


@dataclass
class Reply:
    """What the fake answers: a status, a JSON body (or raw bytes), headers, or a stream of events."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] | None = None  # server-sent events of a streamed answer
    break_after: int | None = None  # drop the connection after this many bytes or events
    delay_s: float = 0.0  # math.inf: never answers

    def content(self) -> bytes:
        data = self.raw if self.raw is not None else json.dumps(self.body).encode()
        return data if self.break_after is None else data[: self.break_after]


class FakeUpstream:
    """The fake; ``transport()`` (or ``client()``, ``async_client()``) serves it in process, ``serve()`` on a socket.

    ``embedder`` gives ``/v1/embeddings`` its vectors, for requests naming ``embedding_model``.
    With ``api_key`` set, a request without ``Authorization: Bearer <api_key>`` gets 401.
    With ``recording`` set, chat requests get its recorded answers and ``/v1/models`` lists its models.
    ``requests`` holds every request as ``{"path", "headers", "body"}`` (headers lower case,
    body parsed from JSON when it is JSON), unless ``keep_requests`` is False.
    """

    def __init__(self, script: list[Any] | None = None, *, default: Any = None,
                 answer: Callable[[dict[str, Any]], str] | None = None, embedder: Any = None,
                 embedding_model: str = "all-MiniLM-L6-v2", api_key: str | None = None,
                 recording: Recording | None = None, keep_requests: bool = True):
        self.script = list(script or [])
        self.default = default
        self.answer = answer or echo
        self.embedder = embedder
        self.embedding_model = embedding_model
        self.api_key = api_key
        self.recording = recording
        self.keep_requests = keep_requests  # False for a long-running twin: its memory stays flat
        self.requests: list[dict[str, Any]] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- the seams ----------------------------------------------------------------------
    def transport(self) -> FakeTransport:
        return FakeTransport(self)

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(transport=self.transport(), **options)

    def async_client(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport(), **options)

    def serve(self) -> FakeServer:
        """The fake on a free port of 127.0.0.1, as a context manager (``base_url`` ends in ``/v1``)."""
        return FakeServer(self)

    # -- answering ------------------------------------------------------------------------
    def reply(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        """The reply to one request; ``headers`` with lower-case names."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            step = self.script.pop(0) if self.script else self.default
            if self.keep_requests:
                self.requests.append({"path": path, "headers": dict(headers), "body": body})
            model = str(body.get("model", "")) if isinstance(body, dict) else ""
            self._seen[model] += 1
            seen = self._seen[model]
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        if method == "GET" and path.endswith("/models"):
            names = self.recording.dataset.model_names if self.recording is not None else ["echo"]
            return Reply(body={"object": "list", "data": [{"id": name, "object": "model"} for name in names]})
        if not isinstance(body, dict):
            return _error(400, "the body is not a JSON object")
        if path.endswith("/chat/completions"):
            step = step if step is not None else _model_fault(model, seen, headers)
            if step is None and self.recording is not None:
                return self._recorded(body)
            return self._chat(body, headers, step)
        if path.endswith("/embeddings"):
            return self._embeddings(body, step)
        return _error(404, f"no route {path}")

    def _chat(self, body: dict[str, Any], headers: Mapping[str, str], step: Any) -> Reply:
        fault = step if isinstance(step, Fault) else Fault("status", status=step) if isinstance(step, int) else None
        if fault is not None and fault.kind not in ("break_stream", "slow"):
            return _fault_reply(fault, headers)
        text = step if isinstance(step, str) else self.answer(body)
        model = str(body.get("model", ""))
        broken = fault is not None and fault.kind == "break_stream"
        delay_s = fault.delay_s if fault is not None else 0.0
        if body.get("stream"):
            return Reply(events=_chunks(model, text), break_after=2 if broken else None, delay_s=delay_s)
        reply = Reply(body=_completion(model, text, body), delay_s=delay_s)
        if broken:
            reply.break_after = len(reply.content()) // 2
        return reply

    def _recorded(self, body: dict[str, Any]) -> Reply:
        from crossroads.upstream.recorded import NoRecording, last_user_text

        model = str(body.get("model", ""))
        try:
            answer = self.recording.answer(model, last_user_text(body) or "")
        except NoRecording as error:
            return Reply(status=404, body={"error": {"message": str(error), "type": "not_found"}})
        usage = {"prompt_tokens": answer.tokens_in, "completion_tokens": answer.tokens_out,
                 "total_tokens": answer.tokens_in + answer.tokens_out}
        if body.get("stream"):
            events = _chunks(model, answer.text)
            events.append({**events[-1], "choices": [], "usage": usage})
            return Reply(events=events, delay_s=answer.latency_s)
        completion = _completion(model, answer.text, body)
        completion["usage"] = usage
        return Reply(body=completion, delay_s=answer.latency_s)

    def _embeddings(self, body: dict[str, Any], step: Any) -> Reply:
        fault = step if isinstance(step, Fault) else Fault("status", status=step) if isinstance(step, int) else None
        if fault is not None and fault.kind not in ("wrong_count", "slow"):
            return _fault_reply(fault, {})
        if self.embedder is None:
            return _error(404, "this fake upstream serves no embeddings (give it an embedder)")
        if body.get("model") != self.embedding_model:
            return _error(404, f"The model `{body.get('model')}` does not exist")
        texts = body.get("input")
        texts = texts if isinstance(texts, list) else [texts]
        vectors = self.embedder.embed(texts)
        if fault is not None and fault.kind == "wrong_count":
            vectors = vectors[:-1]
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        tokens = sum(len(str(text).split()) for text in texts)
        return Reply(body={"object": "list", "data": data[::-1], "model": self.embedding_model,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                     delay_s=fault.delay_s if fault is not None else 0.0)


def echo(body: dict[str, Any]) -> str:
    """``echo: `` and the start of the last message: the default answer."""
    messages = body.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    content = last.get("content", "")
    return "echo: " + (content if isinstance(content, str) else json.dumps(content))[:40]


def _model_fault(model: str, seen: int, headers: Mapping[str, str]) -> Any:
    """The behaviour a model name asks for (see the module's docstring), else None."""
    if model.startswith("status-") and model.removeprefix("status-").isdigit():
        return int(model.removeprefix("status-"))
    if model.startswith("flaky-") and model.removeprefix("flaky-").isdigit():
        return 500 if seen <= int(model.removeprefix("flaky-")) else None
    if model == "echo-key-401":
        return Fault("echo_key", status=401)
    return {"malformed": MALFORMED, "hang": HANG, "break-stream": BREAK_STREAM}.get(model)


def _fault_reply(fault: Fault, headers: Mapping[str, str]) -> Reply:
    if fault.kind == "status":
        reply = _error(fault.status, f"injected {fault.status}")
        if fault.status == 429:
            reply.headers["retry-after"] = "0"
        return reply
    if fault.kind == "echo_key":
        return _error(401, f"invalid key {headers.get('authorization')}")
    if fault.kind == "malformed":
        return Reply(raw=b"{not json")
    if fault.kind == "hang":
        return Reply(delay_s=math.inf)
    raise ValueError(f"unknown fault {fault.kind!r}")


def _error(status: int, message: str) -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": "injected"}})


def _completion(model: str, text: str, body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    tokens_in = sum(len(str(m.get("content", ""))) // 4 + 1 for m in messages if isinstance(m, dict))
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": len(text.split()),
                  "total_tokens": tokens_in + len(text.split())},
    }


def _chunks(model: str, text: str) -> list[dict[str, Any]]:
    words = text.split(" ")
    chunks = []
    for i, word in enumerate(words):
        delta = {"content": (" " if i else "") + word}
        if i == 0:
            delta["role"] = "assistant"
        chunks.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    chunks.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                   "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return chunks


def _sse(events: list[dict[str, Any]]) -> Iterator[bytes]:
    for event in events:
        yield f"data: {json.dumps(event)}\n\n".encode()
    yield b"data: [DONE]\n\n"


# -- in process ---------------------------------------------------------------------------
class FakeTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The fake as an httpx transport, for ``httpx.Client`` and ``httpx.AsyncClient`` alike."""

    def __init__(self, fake: FakeUpstream):
        self.fake = fake

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._respond(request, request.read())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._respond(request, await request.aread())

    def _respond(self, request: httpx.Request, raw: bytes) -> httpx.Response:
        headers = {key.lower(): value for key, value in request.headers.items()}
        reply = self.fake.reply(request.method, request.url.path, headers, raw)
        read_timeout = (request.extensions.get("timeout") or {}).get("read")
        if reply.delay_s and (reply.delay_s == math.inf or (read_timeout is not None and reply.delay_s > read_timeout)):
            raise httpx.ReadTimeout("the fake upstream answers after the read timeout", request=request)
        if reply.events is not None:
            return httpx.Response(reply.status, headers={"content-type": "text/event-stream"},
                                  stream=_EventStream(reply), request=request)
        return httpx.Response(reply.status, headers={"content-type": "application/json", **reply.headers},
                              content=reply.content(), request=request)


class _EventStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed answer that can drop the connection after ``break_after`` events."""

    def __init__(self, reply: Reply):
        self.reply = reply

    def __iter__(self) -> Iterator[bytes]:
        for i, part in enumerate(_sse(self.reply.events or [])):
            if self.reply.break_after is not None and i == self.reply.break_after:
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            yield part

    async def __aiter__(self):
        for part in self:
            yield part
            await asyncio.sleep(0)  # as a socket read would, let the event loop run between events


# -- on a socket --------------------------------------------------------------------------
class DroppedConnection(Exception):
    """Raised inside a stream to make the server cut the connection."""


def make_app(fake: FakeUpstream):
    """The fake as an ASGI app (Starlette)."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def handle(request: Request) -> Response:
        raw = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        if request.url.path.endswith("/embeddings"):  # embedding takes a while: off the event loop
            reply = await anyio.to_thread.run_sync(fake.reply, request.method, request.url.path, headers, raw)
        else:
            reply = fake.reply(request.method, request.url.path, headers, raw)
        if reply.delay_s:
            await asyncio.sleep(3600 if reply.delay_s == math.inf else reply.delay_s)
        if reply.events is not None:
            async def events():
                for i, part in enumerate(_sse(reply.events or [])):
                    if reply.break_after is not None and i == reply.break_after:
                        raise DroppedConnection("injected broken stream")
                    yield part

            return StreamingResponse(events(), media_type="text/event-stream")
        return Response(reply.content(), status_code=reply.status, headers=reply.headers,
                        media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])


class FakeServer(ThreadedServer):
    """A FakeUpstream served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, fake: FakeUpstream):
        super().__init__(make_app(fake), lifespan="off")
        self.fake = fake
        self.base_url = self.url + "/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.fake.requests


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(make_app(FakeUpstream()), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
