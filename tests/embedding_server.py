"""A small OpenAI-compatible embeddings server on 127.0.0.1 for tests.

It serves real vectors from any crossroads ``Embedder`` in OpenAI's wire format, and
can be told to misbehave (rate limits, server errors, bad JSON ...) request by request.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crossroads.embeddings.base import Embedder

#: Misbehaviours a request can be answered with.
FAULTS = ("429", "500", "malformed", "wrong_count", "slow")


class EmbeddingServer:
    """``POST /v1/embeddings`` backed by ``embedder``; use as a context manager.

    ``faults`` is a list consumed one entry per request (``None`` means answer
    normally); once it is empty, ``default_fault`` applies to every request.  Every
    request is recorded in ``requests`` as ``{"headers": ..., "body": ...}``.  With
    ``api_key`` set, requests without ``Authorization: Bearer <api_key>`` get 401.  Answers
    list the vectors in reverse order (as the ``index`` field allows).
    """

    def __init__(
        self, embedder: Embedder, model: str = "all-MiniLM-L6-v2", slow_s: float = 1.0, api_key: str | None = None
    ):
        self.embedder = embedder
        self.api_key = api_key
        self.model = model
        self.slow_s = slow_s
        self.faults: list[str | None] = []
        self.default_fault: str | None = None
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server with `with EmbeddingServer(...) as server:`"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> EmbeddingServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- request handling -----------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        raw = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        with self._lock:
            fault = self.faults.pop(0) if self.faults else self.default_fault
            self.requests.append({"headers": dict(request.headers), "body": raw})
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _send(request, 401, {"error": {"message": "Incorrect API key provided"}})
        if request.path != "/v1/embeddings":
            return _send(request, 404, {"error": {"message": f"no route {request.path}"}})
        if fault == "429":
            return _send(request, 429, {"error": {"message": "Rate limit reached, slow down"}}, {"Retry-After": "0"})
        if fault == "500":
            return _send(request, 500, {"error": {"message": "the GPU caught fire"}})
        if fault == "malformed":
            return _send_bytes(request, 200, b'{"data": [{"embedding": [0.1, 0.2', "application/json")
        if fault == "slow":
            time.sleep(self.slow_s)
        body = json.loads(raw)
        if body.get("model") != self.model:
            return _send(request, 404, {"error": {"message": f"The model `{body.get('model')}` does not exist"}})
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = self.embedder.embed(texts)
        if fault == "wrong_count":
            vectors = vectors[:-1]
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        tokens = sum(len(text.split()) for text in texts)
        _send(
            request,
            200,
            {
                "object": "list",
                "data": data[::-1],
                "model": self.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def _send(request: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None) -> None:
    _send_bytes(request, status, json.dumps(body).encode("utf-8"), "application/json", headers)


def _send_bytes(
    request: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
) -> None:
    try:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
        pass
