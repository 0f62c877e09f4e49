"""The HTTP server end to end: the official openai SDK against crossroads over a real socket.

Upstreams are crossroads' fake OpenAI-compatible upstream (answers instantly, or fails
as its model name says: see crossroads.upstream.fake), reached in process through the
gateway's HTTP client, and over a socket by LiteLLM, which opens its own connections;
the store is a real SQLite file.
"""

from __future__ import annotations

import json
import logging

import httpx
import openai
import pytest
import yaml
from serve_helpers import ServerThread

from crossroads.serve.config import load_config, parse_config
from crossroads.serve.gateway import Gateway
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream


@pytest.fixture(scope="module")
def upstream():
    """One fake upstream, in process for the gateways and on a socket (``upstream.socket``) for LiteLLM."""
    fake = FakeUpstream()
    with fake.serve() as server:
        fake.socket = server
        yield fake


def model(name, upstream, behaviour="echo", **extra):
    return {"name": name, "base_url": FAKE_BASE_URL, "upstream_model": behaviour, "max_retries": 0,
            "timeout_s": 2, **extra}


@pytest.fixture
def serve(upstream, tmp_path):
    """serve(models=..., routes=..., **config) -> a running server; all stopped at the end."""
    running = []

    def start(models=None, routes=None, **config):
        models = models or [model("big", upstream, price_per_mtok_in=10, price_per_mtok_out=30),
                            model("small", upstream, price_per_mtok_in=0.1, price_per_mtok_out=0.3)]
        routes = routes if routes is not None else {"auto": {"learner": "thompson:seed=0",
                                                             "objective": "quality=1,cost=0.5"}}
        raw = {"models": models, "routes": routes, "store": f"sqlite:///{tmp_path}/store-{len(running)}.db", **config}
        server = ServerThread(Gateway(parse_config(raw), http_client=upstream.async_client())).__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


def sdk(server, key="none"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)


HELLO = [{"role": "user", "content": "hello there"}]


def metric(server, prefix):
    """The sum of the /metrics samples whose line starts with ``prefix``."""
    lines = httpx.get(server.url + "/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


# -- the wire format ------------------------------------------------------------------------
def test_completion_names_the_model_that_answered_and_carries_the_decision_id(serve):
    server = serve()
    raw = sdk(server).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    answer = raw.parse()
    assert answer.model in ("big", "small")
    assert answer.choices[0].message.content == "echo: hello there"
    decision_id = raw.headers["x-crossroads-decision-id"]
    assert decision_id.startswith("dec_") and answer.crossroads["decision_id"] == decision_id
    assert answer.crossroads["route"] == "auto" and answer.crossroads["model"] == answer.model
    assert answer.usage.completion_tokens > 0


def test_streaming_sends_openai_chunks_and_done(serve):
    server = serve()
    chunks = list(sdk(server).chat.completions.create(model="auto", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} <= {"big", "small"} and len({c.model for c in chunks}) == 1
    assert chunks[0].crossroads["decision_id"].startswith("dec_")


def test_direct_model_name_passes_through_unrouted(serve):
    server = serve()
    answer = sdk(server).chat.completions.create(model="small", messages=HELLO)
    assert answer.model == "small" and answer.crossroads["kind"] == "model"


def test_models_lists_routes_and_models(serve):
    server = serve()
    ids = [m.id for m in sdk(server).models.list()]
    assert ids == ["auto", "big", "small"]


def test_only_fields_the_client_sent_reach_the_upstream(serve, upstream):
    server = serve()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    image = [{"type": "text", "text": "what is this"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    sdk(server).chat.completions.create(model="small", messages=[{"role": "user", "content": image}], tools=tools,
                                        temperature=0.3, extra_body={"crossroads": {"session_id": "s1"}})
    body = upstream.requests[-1]["body"]
    assert body == {"messages": [{"role": "user", "content": image}], "tools": tools, "temperature": 0.3,
                    "model": "echo"}


def test_model_defaults_fill_only_what_the_client_left_out(serve, upstream):
    server = serve(models=[model("small", upstream, defaults={"max_tokens": 7, "stop": ["\n"]})], routes={})
    sdk(server).chat.completions.create(model="small", messages=HELLO, max_tokens=3)
    body = upstream.requests[-1]["body"]
    assert body["max_tokens"] == 3 and body["stop"] == ["\n"]


# -- routing choices ---------------------------------------------------------------------------
def test_route_endpoint_decides_without_calling_a_model(serve, upstream):
    server = serve()
    before = len(upstream.requests)
    decision = httpx.post(server.url + "/v1/route", json={"model": "auto", "prompt": "2+2?"}).json()
    assert decision["model"] in ("big", "small") and set(decision["fallbacks"]) == {"big", "small"} - {decision["model"]}
    assert len(upstream.requests) == before


def test_allowed_models_and_cost_cap_restrict_the_candidates(serve):
    server = serve()
    client = sdk(server)
    for _ in range(5):
        answer = client.chat.completions.create(model="auto", messages=HELLO,
                                                extra_body={"crossroads": {"allowed_models": ["big"]}})
        assert answer.model == "big"
        answer = client.chat.completions.create(model="auto", messages=HELLO,
                                                extra_body={"crossroads": {"max_cost_usd": 0.001}})
        assert answer.model == "small"  # big is expected to cost 500 x 10 / 1e6 + 256 x 30 / 1e6 = 0.0127 US$


def test_sessions_get_their_own_learner(serve):
    server = serve(routes={"auto": {"learner": "automaton:learning_rate=0.5,seed=0", "key": "session"}})
    client = sdk(server)
    for session, good in (("alice", "big"), ("bob", "small")):
        for _ in range(30):
            answer = client.chat.completions.create(model="auto", messages=HELLO,
                                                    extra_body={"crossroads": {"session_id": session}})
            httpx.post(server.url + "/v1/feedback", json={"decision_id": answer.crossroads["decision_id"],
                                                          "reward": float(answer.model == good)})
    learners = server.gateway.learners
    assert learners.learner("auto", "alice").converged_model == "big"
    assert learners.learner("auto", "bob").converged_model == "small"


# -- feedback ----------------------------------------------------------------------------------
def test_feedback_teaches_the_route_learner(serve):
    server = serve()
    answer = sdk(server).chat.completions.create(model="auto", messages=HELLO)
    learner = server.gateway.learners.learner("auto", None)
    assert learner.updates_ == 0
    receipt = httpx.post(server.url + "/v1/feedback", json={"decision_id": answer.crossroads["decision_id"],
                                                             "quality": 1.0}).json()
    assert receipt["learned"] and receipt["applied"] == 1 and learner.updates_ == 1
    assert learner.arms_[answer.model]["pulls"] == 1
    # quality 1 at this model's cost under quality=1,cost=0.5: 1 for the cheapest model, 2/3 for the dearest
    assert receipt["reward"] == pytest.approx(1.0 if answer.model == "small" else 2 / 3)
    again = httpx.post(server.url + "/v1/feedback", json={"decision_id": answer.crossroads["decision_id"],
                                                          "quality": 0.0})
    assert again.status_code == 409 and again.json()["error"]["code"] == "feedback_exists"
    assert f"feedback_id {receipt['feedback_id']}" in again.json()["error"]["message"]
    assert learner.updates_ == 1  # the second was not stored, nor learned from


@pytest.mark.parametrize("body, status, fragment", [
    ({"decision_id": "dec_nope", "quality": 1.0}, 404, "unknown decision"),
    ({"decision_id": "X", "quality": 2.0}, 400, "[0, 1]"),
    ({"decision_id": "X"}, 400, "reward"),
    ({"decision_id": "X", "reward": 1.0, "colour": "red"}, 400, "unknown feedback fields"),
    ({"decision_id": "X", "reward": 1.0, "quality": 1.0}, 400, "`reward` or `quality`, not both"),
])
def test_bad_feedback_is_refused_with_a_reason(serve, body, status, fragment):
    server = serve()
    response = httpx.post(server.url + "/v1/feedback", json=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


# -- bad requests ------------------------------------------------------------------------------
@pytest.mark.parametrize("content, status, code", [
    (b"{not json", 400, "invalid_json"),
    (json.dumps({"model": "nope", "messages": HELLO}).encode(), 404, "model_not_found"),
    (json.dumps({"model": "auto"}).encode(), 400, None),
    (json.dumps({"model": "auto", "messages": HELLO, "crossroads": {"colour": 1}}).encode(), 400, None),
    (json.dumps({"model": "router-mf-0.3", "messages": HELLO}).encode(), 404, "model_not_found"),
    (json.dumps({"model": "router-mf-abc", "messages": HELLO}).encode(), 404, "model_not_found"),
])
def test_bad_requests_get_4xx_with_an_openai_error_body(serve, content, status, code):
    server = serve()
    response = httpx.post(server.url + "/v1/chat/completions", content=content,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["code"] == code


def test_oversized_body_gets_413(serve):
    server = serve(security={"max_body_bytes": 1000})
    big = [{"role": "user", "content": "x" * 2000}]
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(server).chat.completions.create(model="auto", messages=big)
    assert caught.value.status_code == 413 and "1000 bytes" in caught.value.message


def test_client_keys_are_required_when_configured(serve, monkeypatch):
    monkeypatch.setenv("TEST_CLIENT_KEYS", "key-one,key-two")
    server = serve(security={"api_keys_env": "TEST_CLIENT_KEYS"})
    with pytest.raises(openai.AuthenticationError):
        sdk(server, key="wrong").chat.completions.create(model="auto", messages=HELLO)
    assert sdk(server, key="key-two").chat.completions.create(model="auto", messages=HELLO).model


def test_admin_endpoints_need_the_admin_key(serve, monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_KEY", "admin-secret")
    server = serve(security={"admin_key_env": "TEST_ADMIN_KEY"})
    assert httpx.get(server.url + "/admin/learners").status_code == 401
    assert httpx.get(server.url + "/admin/learners", headers={"authorization": "Bearer nope"}).status_code == 401
    state = httpx.get(server.url + "/admin/learners", headers={"authorization": "Bearer admin-secret"}).json()
    assert state["auto"]["learner"] == "thompson"
    unset = serve()
    refused = httpx.get(unset.url + "/admin/learners")
    assert refused.status_code == 403 and "security.admin_key_env" in refused.json()["error"]["message"]
    assert "$" not in refused.json()["error"]["message"]  # no variable is named, so none is shown


def test_the_access_log_has_a_line_per_request_and_never_the_prompt(serve, caplog):
    server = serve()
    with caplog.at_level(logging.INFO, logger="crossroads.access"):
        answer = sdk(server).chat.completions.create(model="auto", messages=[{"role": "user", "content": "secret plan"}])
        httpx.post(server.url + "/v1/feedback", json={"decision_id": "dec_nope", "reward": 1.0})
    lines = [record.getMessage() for record in caplog.records if record.name == "crossroads.access"]
    assert len(lines) == 2 and not any("secret" in line for line in lines)
    assert lines[0].startswith("POST /v1/chat/completions 200 ")
    assert f"route=auto model={answer.model} cost_usd=" in lines[0] and lines[1].startswith("POST /v1/feedback 404")


def test_rate_limit_answers_429_with_retry_after(serve):
    server = serve(security={"rate_limit_per_s": 0.5, "rate_burst": 2})
    statuses = [httpx.post(server.url + "/v1/route", json={"model": "auto", "prompt": "x"}) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 429, 429]
    assert int(statuses[2].headers["retry-after"]) >= 1
    assert statuses[2].json()["error"]["code"] == "rate_limit_exceeded"


# -- faults ------------------------------------------------------------------------------------
@pytest.mark.parametrize("behaviour", ["status-429", "status-500", "malformed", "hang", "break-stream"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_model_falls_back_to_the_next(serve, upstream, behaviour, stream):
    server = serve(models=[model("bad", upstream, behaviour, timeout_s=1), model("good", upstream)],
                   routes={"pair": {"learner": "ucb:seed=0", "models": ["bad", "good"]}})
    client = sdk(server)
    tried = len([r for r in upstream.requests if r["body"] and r["body"].get("model") == behaviour])
    for _ in range(4):  # with no feedback UCB draws among untried models: some of these calls go to "bad"
        if stream and behaviour == "break-stream":
            continue  # breaks after its first chunks: see the next test
        if stream:
            chunks = list(client.chat.completions.create(model="pair", messages=HELLO, stream=True))
            assert {c.model for c in chunks} == {"good"}
        else:
            answer = client.chat.completions.create(model="pair", messages=HELLO)
            assert answer.model == "good"
    if not (stream and behaviour == "break-stream"):
        fallbacks = metric(server, 'crossroads_fallbacks_total{from_model="bad",to_model="good"}')
        tried = len([r for r in upstream.requests if r["body"] and r["body"].get("model") == behaviour]) - tried
        assert fallbacks >= 1 and tried == fallbacks  # max_retries 0: each failure tried once, then the next model


def test_a_stream_that_breaks_after_its_first_chunk_ends_with_a_clear_error(serve, upstream):
    server = serve(models=[model("flaky", upstream, "break-stream")], routes={})
    stream = sdk(server).chat.completions.create(model="flaky", messages=[{"role": "user", "content": "a b c d e"}],
                                                 stream=True)
    with pytest.raises(openai.APIError, match="incomplete"):
        for _ in stream:
            pass


def test_when_every_model_fails_the_client_gets_502_naming_each_failure(serve, upstream):
    server = serve(models=[model("a", upstream, "status-500"), model("b", upstream, "malformed")],
                   routes={"pair": {"learner": "ucb"}})
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(server).chat.completions.create(model="pair", messages=HELLO)
    assert caught.value.status_code == 502
    assert "'a'" in caught.value.message and "'b'" in caught.value.message


def test_a_model_that_keeps_failing_cools_down(serve, upstream):
    server = serve(models=[model("bad", upstream, "status-500"), model("good", upstream)],
                   routes={"pair": {"learner": "thompson:seed=1", "models": ["bad", "good"]}},
                   failures_before_cooldown=2, cooldown_s=60)
    client = sdk(server)
    for _ in range(12):
        client.chat.completions.create(model="pair", messages=HELLO)
    assert metric(server, 'crossroads_upstream_errors_total{kind="status",model="bad"}') == 2
    assert httpx.get(server.url + "/health").json()["cooling_down"] == ["bad"]


def test_upstream_keys_never_reach_errors_logs_or_metrics(serve, upstream, monkeypatch, caplog):
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-very-secret-123456")
    server = serve(models=[model("leaky", upstream, "echo-key-401", api_key_env="TEST_UPSTREAM_KEY")], routes={})
    caplog.set_level(logging.DEBUG)
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "leaky", "messages": HELLO})
    assert upstream.requests[-1]["headers"]["authorization"] == "Bearer sk-very-secret-123456"  # the key did go upstream
    assert response.status_code == 502 and "401" in response.text
    everything = response.text + caplog.text + httpx.get(server.url + "/metrics").text
    assert "very-secret" not in everything


# -- metrics -----------------------------------------------------------------------------------
def test_metrics_count_requests_decisions_tokens_and_cost(serve):
    server = serve()
    client = sdk(server)
    answers = [client.chat.completions.create(model="auto", messages=HELLO) for _ in range(3)]
    text = httpx.get(server.url + "/metrics").text
    assert 'crossroads_requests_total{endpoint="chat",status="200"} 3.0' in text
    assert metric(server, "crossroads_decisions_total{") == 3
    assert metric(server, "crossroads_cost_usd_total") == pytest.approx(sum(a.crossroads["cost_usd"] for a in answers))
    assert "crossroads_upstream_latency_seconds_count" in text


def test_a_flaky_upstream_is_retried_before_any_fallback(serve, upstream):
    server = serve(models=[model("flaky", upstream, "flaky-1", max_retries=1), model("good", upstream)],
                   routes={"pair": {"learner": "ucb", "models": ["flaky"]}})
    answer = sdk(server).chat.completions.create(model="pair", messages=HELLO)
    assert answer.model == "flaky" and answer.crossroads["fallbacks_used"] == 0
    flaky_calls = [r for r in upstream.requests if r["body"]["model"] == "flaky-1"]
    assert len(flaky_calls) == 2  # the first got 500, the retry answered


def test_outcomes_record_cost_from_usage_and_latency(serve):
    server = serve()
    answer = sdk(server).chat.completions.create(model="big", messages=HELLO)
    expected = (answer.usage.prompt_tokens * 10 + answer.usage.completion_tokens * 30) / 1e6
    assert answer.crossroads["cost_usd"] == pytest.approx(expected)
    chunks = list(sdk(server).chat.completions.create(model="small", messages=HELLO, stream=True))
    store = server.gateway.store
    done = store.decision(answer.crossroads["decision_id"])["outcome"]
    assert done["cost_usd"] == pytest.approx(expected) and done["latency_s"] > 0 and done["ttft_s"] is None
    streamed = store.decision(chunks[0].crossroads["decision_id"])["outcome"]
    assert streamed["status"] == "ok" and 0 < streamed["ttft_s"] <= streamed["latency_s"]
    assert streamed["tokens_out"] > 0  # no usage in the stream: estimated from the text


@pytest.mark.parametrize("store_prompts", [False, True])
def test_prompts_and_responses_are_stored_only_when_the_config_says_so(serve, store_prompts):
    server = serve(store_prompts=store_prompts)
    answer = sdk(server).chat.completions.create(model="auto", messages=HELLO)
    decision = server.gateway.store.decision(answer.crossroads["decision_id"])
    assert decision["model"] == answer.model and decision["outcome"]["cost_usd"] > 0  # always kept
    if store_prompts:
        assert decision["prompt"] == "hello there" and decision["outcome"]["response"] == "echo: hello there"
    else:
        assert decision["prompt"] is None and decision["outcome"]["response"] is None


def test_litellm_provider_answers_streams_and_falls_back(serve, upstream):
    pytest.importorskip("litellm", reason="LiteLLM is the optional provider: pip install 'crossroads[litellm]'")
    socket = upstream.socket.base_url
    server = serve(models=[model("via-litellm", upstream, "openai/echo", provider="litellm", base_url=socket),
                           model("broken-litellm", upstream, "openai/status-500", provider="litellm", base_url=socket),
                           model("good", upstream)],
                   routes={"pair": {"learner": "ucb:seed=0", "models": ["broken-litellm", "good"]}})
    client = sdk(server)
    answer = client.chat.completions.create(model="via-litellm", messages=HELLO)
    assert answer.model == "via-litellm" and answer.choices[0].message.content == "echo: hello there"
    chunks = list(client.chat.completions.create(model="via-litellm", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
    assert {client.chat.completions.create(model="pair", messages=HELLO).model for _ in range(4)} == {"good"}
    assert metric(server, 'crossroads_upstream_errors_total{kind="status",model="broken-litellm"}') >= 1


def test_admin_reload_serves_the_new_config_and_keeps_learning_state(upstream, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_KEY", "admin-secret")
    admin = {"authorization": "Bearer admin-secret"}
    path = tmp_path / "crossroads.yaml"
    raw = {"models": [model("big", upstream), model("small", upstream)], "store": f"sqlite:///{tmp_path}/r.db",
           "routes": {"auto": {"learner": "ucb"}}, "security": {"admin_key_env": "TEST_ADMIN_KEY"}}
    path.write_text(yaml.safe_dump(raw))
    with ServerThread(Gateway(load_config(path), http_client=upstream.async_client()), config_path=str(path)) as server:
        answer = sdk(server).chat.completions.create(model="auto", messages=HELLO)
        httpx.post(server.url + "/v1/feedback", json={"decision_id": answer.crossroads["decision_id"], "reward": 1.0})
        assert httpx.post(server.url + "/admin/reload").status_code == 401

        path.write_text(yaml.safe_dump({**raw, "routes": {**raw["routes"], "cheap": {"learner": "ucb", "models": ["small"]}}}))
        response = httpx.post(server.url + "/admin/reload", headers=admin)
        assert response.status_code == 200 and response.json()["routes"] == ["auto", "cheap"]
        assert sdk(server).chat.completions.create(model="cheap", messages=HELLO).model == "small"
        assert server.gateway.learners.learner("auto", None).updates_ == 1  # learned before the reload
        assert metric(server, 'crossroads_requests_total{endpoint="chat",status="200"}') == 2  # counters go on

        path.write_text("models: []")
        response = httpx.post(server.url + "/admin/reload", headers=admin)
        assert response.status_code == 400 and "`models` is empty" in response.json()["error"]["message"]
        path.write_text(yaml.safe_dump({**raw, "store": f"sqlite:///{tmp_path}/other.db"}))
        assert httpx.post(server.url + "/admin/reload", headers=admin).json()["error"]["code"] == "store_changed"
        assert sdk(server).chat.completions.create(model="cheap", messages=HELLO).model == "small"  # still serving
