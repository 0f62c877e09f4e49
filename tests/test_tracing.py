"""OpenTelemetry traces (the ``tracing:`` section, crossroads.serve.tracing): a span per request with the decision
and each upstream attempt as children, fallbacks marked, streams traced to their end, nothing secret recorded,
and nothing imported while tracing is off.

The real app in process (uvicorn on a socket) on real SQLite; spans go to the SDK's in-memory exporter; the fake
upstream stands in for paid models and fails on cue (its ``script``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from serve_helpers import ServerThread

from crossroads.errors import CrossroadsError
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.tracing import NO_TRACER, build_tracer
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

PROMPT = "the zebra password is hunter2"
HELLO = [{"role": "user", "content": PROMPT}]
ADMIN = "admin-key-never-in-a-span"
CLIENT_KEY = "sk-client-key-never-in-a-span"


def raw_config(store: str, **extra) -> dict:
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0,
               "price_per_mtok_in": price, "price_per_mtok_out": price}
              for name, price in (("big", 10.0), ("small", 1.0))]
    return {"models": models, "routes": {"pair": {"learner": "ucb:seed=0"}}, "store": store,
            "tracing": {"enabled": True}, **extra}


@pytest.fixture
def serve(tmp_path):
    """serve(script=..., transport=..., **config) -> (running server, its span exporter); stopped at the end."""
    running = []

    def start(script=None, transport=None, **extra):
        config = parse_config(raw_config(f"sqlite:///{tmp_path}/store-{len(running)}.db", **extra))
        exporter = InMemorySpanExporter()
        client = httpx.AsyncClient(transport=transport or FakeUpstream(script).transport())
        server = ServerThread(Gateway(config, http_client=client, tracer=build_tracer(config.tracing, exporter)))
        running.append(server.__enter__())
        return server, exporter

    yield start
    for server in running:
        server.__exit__(None, None, None)


def spans(exporter, name):
    return [span for span in exporter.get_finished_spans() if span.name == name]


def chat(server, headers=None, **body):
    return httpx.post(server.url + "/v1/chat/completions", json={"model": "pair", "messages": HELLO, **body},
                      headers=headers, timeout=10)


def children(exporter, parent):
    return sorted((span for span in exporter.get_finished_spans()
                   if span.parent is not None and span.parent.span_id == parent.context.span_id),
                  key=lambda span: span.start_time)


# -- the shape of a trace ---------------------------------------------------------------------
def test_a_chat_is_one_request_span_with_the_decision_and_the_upstream_call_as_children(serve):
    server, exporter = serve()
    answer = chat(server)
    assert answer.status_code == 200
    [request] = spans(exporter, "crossroads.chat")
    assert request.parent is None
    decide, upstream = children(exporter, request)
    assert (decide.name, upstream.name) == ("crossroads.decide", "crossroads.upstream")
    assert len(exporter.get_finished_spans()) == 3
    assert {span.context.trace_id for span in (request, decide, upstream)} == {request.context.trace_id}
    decision_id = answer.headers["x-crossroads-decision-id"]
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["crossroads.route"] == "pair"
    assert request.attributes["crossroads.decision_id"] == decision_id
    assert decide.attributes["crossroads.model"] == answer.json()["model"]
    assert decide.attributes["crossroads.candidates"] == 2 and decide.attributes["crossroads.probability"] == 0.5
    assert upstream.attributes["crossroads.outcome"] == "ok" and upstream.attributes["crossroads.attempt"] == 1
    usage = answer.json()["usage"]
    assert upstream.attributes["crossroads.tokens_in"] == usage["prompt_tokens"]
    assert upstream.attributes["crossroads.tokens_out"] == usage["completion_tokens"]
    assert upstream.attributes["crossroads.cost_usd"] == pytest.approx(answer.json()["crossroads"]["cost_usd"])
    assert upstream.attributes["crossroads.cost_usd"] > 0
    assert not upstream.events and upstream.attributes["crossroads.fallback"] is False


def traceparent(span) -> str:
    """The ``traceparent`` header a call timed by ``span`` sends (W3C trace context)."""
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def test_each_upstream_call_sends_the_traceparent_of_its_own_span(serve):
    fake = FakeUpstream([500])  # a fallback: two attempts, two spans, two different parents upstream
    server, exporter = serve(transport=fake.transport())
    assert chat(server).status_code == 200
    [request] = spans(exporter, "crossroads.chat")
    attempts = [span for span in children(exporter, request) if span.name == "crossroads.upstream"]
    sent = [call["headers"].get("traceparent") for call in fake.requests if call["path"].endswith("/chat/completions")]
    assert sent == [traceparent(span) for span in attempts] and len(set(sent)) == 2


def test_a_shadow_call_is_a_child_span_of_its_request_and_sends_its_traceparent(serve):
    fake = FakeUpstream()
    server, exporter = serve(transport=fake.transport(),
                             routes={"pair": {"learner": "ucb:seed=0", "shadow": {"share": 1.0}}})
    answer = chat(server)
    assert answer.status_code == 200
    deadline = time.monotonic() + 10
    while not spans(exporter, "crossroads.shadow") and time.monotonic() < deadline:
        time.sleep(0.02)
    [request], [shadow] = spans(exporter, "crossroads.chat"), spans(exporter, "crossroads.shadow")
    [served] = [span for span in children(exporter, request) if span.name == "crossroads.upstream"]
    assert shadow.parent.span_id == request.context.span_id  # though it may outlive the request
    other = ({"big", "small"} - {answer.json()["model"]}).pop()
    assert shadow.attributes["crossroads.model"] == other and shadow.attributes["crossroads.outcome"] == "ok"
    assert shadow.attributes["crossroads.decision_id"] == answer.headers["x-crossroads-decision-id"]
    assert shadow.attributes["crossroads.cost_usd"] > 0
    sent = [call["headers"].get("traceparent") for call in fake.requests]
    assert sent == [traceparent(served), traceparent(shadow)]


def test_a_streamed_requests_shadow_calls_are_children_of_its_span(serve):
    server, exporter = serve(routes={"pair": {"learner": "ucb:seed=0", "shadow": {"share": 1.0}}})
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=10,
                      json={"model": "pair", "messages": HELLO, "stream": True}) as answer:
        assert answer.status_code == 200
        answer.read()
    deadline = time.monotonic() + 10
    while not spans(exporter, "crossroads.shadow") and time.monotonic() < deadline:
        time.sleep(0.02)
    [request], [shadow] = spans(exporter, "crossroads.chat"), spans(exporter, "crossroads.shadow")
    assert shadow.parent is not None and shadow.parent.span_id == request.context.span_id
    assert shadow.context.trace_id == request.context.trace_id


def test_route_and_feedback_requests_have_spans_naming_their_decision(serve):
    server, exporter = serve()
    decision = httpx.post(server.url + "/v1/route", json={"model": "pair", "prompt": PROMPT}).json()
    answer = httpx.post(server.url + "/v1/feedback", json={"decision_id": decision["decision_id"], "reward": 1.0})
    assert answer.status_code == 200
    [route], [feedback] = spans(exporter, "crossroads.route"), spans(exporter, "crossroads.feedback")
    assert [span.name for span in children(exporter, route)] == ["crossroads.decide"]  # deciding calls no model
    assert route.attributes["crossroads.decision_id"] == decision["decision_id"]
    assert feedback.attributes["crossroads.decision_id"] == decision["decision_id"]
    assert feedback.attributes["crossroads.route"] == "pair"
    assert feedback.attributes["http.response.status_code"] == 200


def test_a_failing_request_span_carries_its_status(serve):
    server, exporter = serve()
    assert chat(server, model="no-such-route").status_code == 404
    [request] = spans(exporter, "crossroads.chat")
    assert request.attributes["http.response.status_code"] == 404
    [decide] = children(exporter, request)  # no model was called
    assert decide.name == "crossroads.decide" and decide.status.description == "UnknownRoute"


def test_a_fallback_is_a_second_upstream_span_marked_as_one(serve):
    server, exporter = serve(script=[500])  # the first call fails, whichever model the route ranks first
    answer = chat(server)
    assert answer.status_code == 200
    [request] = spans(exporter, "crossroads.chat")
    decide, failed, answered = children(exporter, request)
    ranking = [decide.attributes["crossroads.model"], *answer.json()["crossroads"]["fallbacks"]]
    assert [failed.attributes["crossroads.model"], answered.attributes["crossroads.model"]] == ranking
    assert answered.attributes["crossroads.model"] == answer.json()["model"]
    assert failed.attributes["crossroads.outcome"] == "error" and failed.attributes["crossroads.error_kind"] == "status"
    assert failed.attributes["crossroads.upstream_status"] == 500 and not failed.status.is_ok
    assert [span.attributes["crossroads.attempt"] for span in (failed, answered)] == [1, 2]
    assert answered.attributes["crossroads.fallback"] is True and answered.attributes["crossroads.outcome"] == "ok"
    [event] = answered.events
    assert event.name == "crossroads.fallback"
    assert dict(event.attributes) == {"crossroads.from_model": ranking[0], "crossroads.to_model": ranking[1],
                                      "crossroads.error_kind": "status"}


def test_when_every_model_fails_the_request_span_is_an_error(serve):
    server, exporter = serve(script=[500, 503])
    assert chat(server).status_code == 502
    [request] = spans(exporter, "crossroads.chat")
    assert request.attributes["http.response.status_code"] == 502 and not request.status.is_ok
    attempts = [span for span in children(exporter, request) if span.name == "crossroads.upstream"]
    assert [span.attributes["crossroads.upstream_status"] for span in attempts] == [500, 503]


# -- streams ----------------------------------------------------------------------------------
class HeldStreams(httpx.AsyncBaseTransport):
    """The fake upstream, each streamed answer held after its first event until ``release`` is set."""

    def __init__(self):
        self.fake = FakeUpstream().transport()
        self.release = threading.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.fake.handle_async_request(request)
        if response.headers.get("content-type") != "text/event-stream":
            return response
        return httpx.Response(response.status_code, headers=response.headers, request=request,
                              stream=_Held(response.stream, self.release))


class _Held(httpx.AsyncByteStream):
    def __init__(self, events, release: threading.Event):
        self.events, self.release = events, release

    async def __aiter__(self):
        first = True
        async for part in self.events:
            yield part
            deadline = time.monotonic() + 10
            while first and not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            first = False


def test_a_streamed_request_span_ends_when_the_stream_ends(serve):
    transport = HeldStreams()
    server, exporter = serve(transport=transport)
    body = {"model": "pair", "messages": HELLO, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=10) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        # the answer is under way: its request and upstream spans are open, the decision's is done
        assert [span.name for span in exporter.get_finished_spans()] == ["crossroads.decide"]
        transport.release.set()
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    deadline = time.monotonic() + 5
    while not spans(exporter, "crossroads.chat") and time.monotonic() < deadline:
        time.sleep(0.01)
    [request], [upstream] = spans(exporter, "crossroads.chat"), spans(exporter, "crossroads.upstream")
    assert request.attributes["crossroads.stream"] is True
    assert upstream.parent.span_id == request.context.span_id
    assert upstream.attributes["crossroads.outcome"] == "ok" and upstream.attributes["crossroads.tokens_out"] > 0
    assert request.end_time >= upstream.end_time


# -- what a span may hold --------------------------------------------------------------------
def values(span):
    """Every string a span exports: its attributes', its events', its resource's and its name."""
    found = [span.name, *map(str, span.attributes.values()), *map(str, span.resource.attributes.values())]
    for event in span.events:
        found += [event.name, *map(str, event.attributes.values())]
    return found


def test_no_span_holds_the_prompt_the_answer_or_a_key(serve, monkeypatch):
    monkeypatch.setenv("TRACE_TEST_ADMIN", ADMIN)
    monkeypatch.setenv("TRACE_TEST_KEYS", CLIENT_KEY)
    server, exporter = serve(security={"admin_key_env": "TRACE_TEST_ADMIN", "api_keys_env": "TRACE_TEST_KEYS"},
                             store_prompts=True)
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.post(server.url + "/admin/teams", json={"name": "search"}, headers=admin).status_code in (200, 201)
    created = httpx.post(server.url + "/admin/keys", json={"name": "bot", "team": "search"}, headers=admin).json()
    secret, key_id = created["secret"], created["key"]["key_id"]

    answered = chat(server, headers={"authorization": f"Bearer {secret}"})
    assert answered.status_code == 200 and PROMPT in answered.json()["choices"][0]["message"]["content"]
    streamed = chat(server, headers={"authorization": f"Bearer {CLIENT_KEY}"}, stream=True)
    assert PROMPT.split()[1] in streamed.text
    httpx.post(server.url + "/v1/route", json={"model": "pair", "prompt": PROMPT},
               headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert chat(server, headers={"authorization": "Bearer sk-wrong-key-never-in-a-span"}).status_code == 401
    time.sleep(0.2)  # the stream's span ends just after its last event went out

    traced = exporter.get_finished_spans()
    assert len(spans(exporter, "crossroads.chat")) == 3 and len(spans(exporter, "crossroads.route")) == 1
    by_key = [span for span in spans(exporter, "crossroads.chat") if "crossroads.key_id" in span.attributes]
    assert [(span.attributes["crossroads.key_id"], span.attributes["crossroads.team"]) for span in by_key] \
        == [(key_id, "search")]
    secrets = [PROMPT, "zebra", "hunter2", secret, CLIENT_KEY, ADMIN, "sk-wrong-key-never-in-a-span"]
    leaked = [(span.name, value) for span in traced for value in values(span) if any(s in value for s in secrets)]
    assert leaked == []


# -- off, and misconfigured -------------------------------------------------------------------
IMPORTS = """
import asyncio, sys, tempfile
from crossroads.serve.app import make_app
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.requests import parse_chat_request
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

model = {{"name": "m", "base_url": FAKE_BASE_URL, "upstream_model": "echo"}}
config = parse_config({{"models": [model], "store": f"sqlite:///{{tempfile.mkdtemp()}}/s.db", "tracing": {tracing}}})
gateway = Gateway(config, http_client=FakeUpstream().async_client())
make_app(gateway)
choice, answer = asyncio.run(gateway.complete(parse_chat_request({{"model": "m", "messages": [
    {{"role": "user", "content": "hi"}}]}}, "last_message", 10)))
assert answer["choices"][0]["message"]["content"] == "echo: hi"
print(type(gateway.tracer).__name__, sorted({{name.split(".")[0] for name in sys.modules}} & {{"opentelemetry"}}))
"""


@pytest.mark.parametrize("tracing, expected", [
    ("{}", "NoTracer []"),  # off by default: not even imported
    ('{"enabled": True, "exporter": "console"}', "Tracer ['opentelemetry']"),  # the check can see an import
])
def test_tracing_off_never_imports_opentelemetry(tracing, expected):
    done = subprocess.run([sys.executable, "-c", IMPORTS.format(tracing=tracing)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected


def test_tracing_is_off_by_default():
    config = parse_config(raw_config("sqlite://:memory:", tracing=None))
    assert config.tracing.enabled is False and build_tracer(config.tracing) is NO_TRACER
    assert config.tracing.endpoint == "http://127.0.0.1:4318/v1/traces" and config.tracing.sample_ratio == 1.0


@pytest.mark.parametrize("tracing, message", [
    ({"enabled": True, "exporter": "jaeger"}, "tracing.exporter must be one of otlp, console, got 'jaeger'"),
    ({"enabled": True, "sample_ratio": 2}, "tracing.sample_ratio must be a number in [0, 1], got 2"),
    ({"sample_ratio": "all"}, "tracing.sample_ratio must be a number in [0, 1]"),
    ({"enabled": "yes"}, "tracing.enabled must be true or false, got 'yes'"),
    ({"endpoint": "localhost:4318"}, "tracing.endpoint must be the http(s) URL of an OTLP/HTTP collector"),
    ({"service_name": ""}, "tracing.service_name must be a non-empty string"),
    ({"enabled": True, "endpont": "http://x"}, "tracing has unknown keys ['endpont']; known keys: enabled, endpoint, "
                                               "exporter, sample_ratio, service_name"),
    ("on", "tracing must be a mapping"),
])
def test_a_wrong_tracing_section_is_a_clear_error(tracing, message):
    with pytest.raises(CrossroadsError) as caught:
        parse_config(raw_config("sqlite://:memory:", tracing=tracing))
    assert message in str(caught.value)


def test_tracing_without_the_otel_extra_says_what_to_install(monkeypatch):
    config = parse_config(raw_config("sqlite://:memory:"))
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)  # as if the package were missing
    with pytest.raises(CrossroadsError, match=r"pip install 'crossroads\[otel\]'"):
        build_tracer(config.tracing)


def test_a_sample_ratio_of_zero_traces_nothing(serve):
    server, exporter = serve(tracing={"enabled": True, "sample_ratio": 0.0})
    assert chat(server).status_code == 200
    assert exporter.get_finished_spans() == ()


def test_a_callers_traceparent_makes_the_request_span_its_child(serve):
    server, exporter = serve()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert chat(server, headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}).status_code == 200
    [request] = spans(exporter, "crossroads.chat")
    assert request.context.trace_id == int(trace_id, 16) and request.parent.span_id == int(parent_id, 16)
