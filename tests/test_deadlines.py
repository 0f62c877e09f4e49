"""Time limits of the server (issue 14, items 8 and 10): the request deadline, early stream headers with
keep-alives, the graceful-shutdown deadline, readiness, and upstream 4xx answers that are the request's fault.

Upstream faults come from the fake upstream served on a socket, where a hang really hangs.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time

import httpx
import openai
import pytest
from serve_helpers import ServerProcess, ServerThread

from crossroads.errors import CrossroadsError
from crossroads.serve import app as app_module
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.store import open_store
from crossroads.upstream.fake import FakeUpstream, slow

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def upstream():
    fake = FakeUpstream()
    with fake.serve() as server:
        yield server
        server._server.force_exit = True  # its hung handlers sleep for an hour: do not wait for them


def model(name, upstream, behaviour="echo", **extra):
    """A model on the socket fake with the shipped defaults' patience (60 s timeout, 2 retries)."""
    return {"name": name, "base_url": upstream.base_url, "upstream_model": behaviour, "timeout_s": 60,
            "max_retries": 2, **extra}


@pytest.fixture
def serve(tmp_path):
    running = []

    def start(models, **config):
        raw = {"models": models, "routes": {"auto": {"learner": "thompson:seed=0", "models": [m["name"] for m in models]}},
               "store": f"sqlite:///{tmp_path}/store-{len(running)}.db", **config}
        server = ServerThread(Gateway(parse_config(raw))).__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


def outcome(server, decision_id):
    server.gateway.store.flush()
    return server.gateway.store.decision(decision_id)["outcome"]


def assert_openai_error(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    return error


# -- item 8: the request deadline -------------------------------------------------------------
def test_hung_upstreams_get_504_at_the_request_deadline_not_after_every_retry(serve, upstream):
    server = serve([model("a", upstream, "hang"), model("b", upstream, "hang")], request_deadline_s=1.5)
    started = time.perf_counter()
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, timeout=60)
    elapsed = time.perf_counter() - started
    error = assert_openai_error(response, 504, "deadline_exceeded")
    assert 1.4 <= elapsed < 1.5 + 5, elapsed  # without the deadline: 3 x 60 s
    assert "deadline of 1.5 s" in error["message"] and error["type"] == "upstream_error"
    recorded = outcome(server, response.headers["x-crossroads-decision-id"])
    assert recorded["status"] == "failed" and "deadline" in recorded["error"]


def test_request_deadline_must_be_positive(upstream):
    with pytest.raises(CrossroadsError, match="request_deadline_s"):
        parse_config({"models": [model("a", upstream)], "request_deadline_s": 0})


# -- item 8: stream headers at once, keep-alives while the first chunk is awaited -------------
@pytest.fixture(scope="module")
def slow_upstream():
    """A fake whose every answer (and so a stream's first chunk) comes after 3 s."""
    fake = FakeUpstream(default=slow(3.0))
    with fake.serve() as server:
        yield server
        server._server.force_exit = True


@pytest.fixture
def fast_keepalive(monkeypatch):
    monkeypatch.setattr(app_module, "STREAM_KEEPALIVE_S", 0.25)


def test_a_slow_first_chunk_still_gets_headers_at_once_then_keep_alives(serve, slow_upstream, fast_keepalive):
    server = serve([model("a", slow_upstream)])
    body = {"model": "auto", "messages": HELLO, "stream": True}
    started = time.perf_counter()
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        headers_s = time.perf_counter() - started
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-crossroads-decision-id"].startswith("dec_")
        lines = [line for line in response.iter_lines() if line]
    assert headers_s < app_module.STREAM_HEADERS_S + 1.0, headers_s  # the first chunk takes 3 s
    keepalives = [i for i, line in enumerate(lines) if line == ": keep-alive"]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: {"))
    assert len(keepalives) >= 3 and max(keepalives) < first_data, lines[:20]
    assert lines[-1] == "data: [DONE]"


def test_the_openai_sdk_reads_a_stream_with_keep_alives(serve, slow_upstream, fast_keepalive):
    server = serve([model("a", slow_upstream)])
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in
                   client.chat.completions.create(model="auto", messages=HELLO, stream=True) if chunk.choices)
    assert text == "echo: hello there"


def test_a_stream_whose_deadline_passes_before_its_first_chunk_ends_with_an_error_event(serve, upstream,
                                                                                       fast_keepalive):
    server = serve([model("a", upstream, "hang"), model("b", upstream, "hang")], request_deadline_s=2.5)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO, stream=True)
    assert raw.http_response.status_code == 200  # the headers went out before the models were tried
    with pytest.raises(openai.APIError, match="deadline of 2.5 s"):
        list(raw.parse())
    assert time.perf_counter() - started < 2.5 + 5
    recorded = outcome(server, raw.headers["x-crossroads-decision-id"])
    assert recorded["status"] == "failed" and "deadline" in recorded["error"]


# -- item 8: the graceful-shutdown deadline -----------------------------------------------------
def test_sigterm_ends_the_process_within_the_shutdown_deadline_and_keeps_the_hung_calls_decision(upstream, tmp_path):
    store = f"sqlite:///{tmp_path}/store.db"
    config = {"models": [model("stuck", upstream, "hang")], "store": store, "request_deadline_s": 300,
              "shutdown_timeout_s": 2}
    seen = len(upstream.requests)
    with ServerProcess(config, tmp_path) as server:
        call = threading.Thread(target=lambda: _quietly(lambda: httpx.post(
            server.url + "/v1/chat/completions", json={"model": "stuck", "messages": HELLO}, timeout=60)))
        call.start()
        wait_until = time.monotonic() + 30
        while len(upstream.requests) == seen:  # the call is in flight, hanging at the upstream
            assert time.monotonic() < wait_until, "the chat never reached the upstream"
            time.sleep(0.05)
        started = time.perf_counter()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=2 + 20)
        except subprocess.TimeoutExpired:
            pytest.fail("crossroads serve was still up 22 s after SIGTERM with shutdown_timeout_s: 2")
        assert time.perf_counter() - started < 2 + 20
        call.join(timeout=30)
    with open_store(store) as stored:
        counts = stored.counts()
    assert counts["decisions"] == 1 and counts["outcomes"] == 1, counts
    assert server.process.returncode == 0, server.log_path.read_text()[-2000:]


def _quietly(call):
    try:
        call()
    except httpx.HTTPError:  # the server went away under the hung call
        pass


# -- item 10: liveness and readiness ---------------------------------------------------------
def test_readiness_is_degraded_naming_the_route_whose_every_model_cools_down(serve, upstream):
    server = serve([model("a", upstream, "status-500", max_retries=0), model("b", upstream, "status-500",
                                                                             max_retries=0)],
                   failures_before_cooldown=1, cooldown_s=600)
    ready = httpx.get(server.url + "/health/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ok", ready.text
    chat = httpx.post(server.url + "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, timeout=60)
    assert chat.status_code == 502
    for path in ("/health/ready", "/health"):  # /health stays readiness
        response = httpx.get(server.url + path, timeout=30)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "degraded" and body["cooling_down"] == ["a", "b"]
        assert any("route 'auto'" in reason and "cooling down" in reason for reason in body["reasons"]), body
    live = httpx.get(server.url + "/health/live", timeout=30)
    assert live.status_code == 200 and live.json() == {"status": "ok"}


def test_readiness_is_degraded_naming_the_store_when_it_cannot_write(serve, upstream, monkeypatch):
    server = serve([model("a", upstream)])
    assert httpx.get(server.url + "/health/ready", timeout=30).status_code == 200

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(server.gateway.store, "record_pool", disk_full)  # the store's one synchronous write
    response = httpx.get(server.url + "/health/ready", timeout=30)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "degraded" and body["reasons"] == [
        "store: cannot write (OperationalError: database or disk is full)"]
    assert httpx.get(server.url + "/health/live", timeout=30).status_code == 200
    monkeypatch.undo()
    assert httpx.get(server.url + "/health", timeout=30).json()["status"] == "ok"


# -- a request every upstream rejects as invalid is the client's 400, not a model failure ----------
def test_a_request_every_model_rejects_with_400_is_a_400_and_cools_no_model_down(serve, upstream):
    server = serve([model("a", upstream, "status-400", max_retries=0), model("b", upstream, "status-400",
                                                                             max_retries=0)],
                   failures_before_cooldown=1, cooldown_s=600)
    body = {"model": "auto", "messages": HELLO, "temperature": 5}
    for _ in range(3):
        response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
        error = assert_openai_error(response, 400, "upstream_rejected_request")
        assert error["type"] == "invalid_request_error" and "status 400: injected 400" in error["message"]
    health = httpx.get(server.url + "/health/ready", timeout=30)
    assert health.status_code == 200 and health.json()["cooling_down"] == [], health.text
    recorded = outcome(server, response.headers["x-crossroads-decision-id"])
    assert recorded["status"] == "failed" and "status 400" in recorded["error"]


def test_a_model_that_rejects_the_request_falls_back_without_cooling_down(serve, upstream):
    server = serve([model("a", upstream, "status-422", max_retries=0), model("b", upstream, "echo", max_retries=0)],
                   failures_before_cooldown=1, cooldown_s=600)
    tried_a = sum(1 for r in upstream.requests if (r["body"] or {}).get("model") == "status-422")
    for _ in range(4):
        response = httpx.post(server.url + "/v1/chat/completions", json={"model": "auto", "messages": HELLO},
                              timeout=60)
        assert response.status_code == 200 and response.json()["model"] == "b", response.text
    assert httpx.get(server.url + "/health", timeout=30).json()["cooling_down"] == []
    assert sum(1 for r in upstream.requests if (r["body"] or {}).get("model") == "status-422") > tried_a
