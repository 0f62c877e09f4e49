"""Issue 14, the input side: what a client sends never gets a 500, never cools a model down, never
leaks a base_url's credentials, and is bounded before the expensive work.

Each test reproduces a finding of the issue against the real server (uvicorn on a socket,
SQLite store) with crossroads' fake upstream in place of paid APIs.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from serve_helpers import ServerThread

from crossroads.errors import CrossroadsError
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.requests import MAX_NAME_CHARS
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream
from crossroads.upstream.http import Endpoint, redact_credentials
from crossroads.upstream.servers import free_port

CLIENT_KEY, ADMIN_KEY = "client-key-1", "admin-key-1"
HELLO = [{"role": "user", "content": "hello there"}]
SECRETS = ("secret-pw", "sekrit-query", "tok-value-99")


def model(name, behaviour="echo", **extra):
    return {"name": name, "base_url": FAKE_BASE_URL, "upstream_model": behaviour, "max_retries": 0, "timeout_s": 2,
            **extra}


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("HARDENING_CLIENT_KEYS", CLIENT_KEY)
    monkeypatch.setenv("HARDENING_ADMIN_KEY", ADMIN_KEY)


@pytest.fixture
def serve(tmp_path, keys):
    """serve(models=..., routes=..., upstream=..., http_client=..., **config) -> a running server with client keys."""
    running = []

    def start(models=None, routes=None, upstream=None, http_client="fake", **config):
        upstream = upstream or FakeUpstream()
        models = models or [model("big", price_per_mtok_in=10, price_per_mtok_out=30),
                            model("small", price_per_mtok_in=0.1, price_per_mtok_out=0.3)]
        routes = routes if routes is not None else {"auto": {"learner": "thompson:seed=0",
                                                             "objective": "quality=1,cost=0.5"}}
        security = {"api_keys_env": "HARDENING_CLIENT_KEYS", "admin_key_env": "HARDENING_ADMIN_KEY",
                    **config.pop("security", {})}
        raw = {"models": models, "routes": routes, "store": f"sqlite:///{tmp_path}/store-{len(running)}.db",
               "security": security, **config}
        client = upstream.async_client() if http_client == "fake" else http_client
        server = ServerThread(Gateway(parse_config(raw), http_client=client)).__enter__()
        server.upstream = upstream
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__(None, None, None)


def post(server, path, body=None, *, raw=None, key=CLIENT_KEY, timeout=10):
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    content = raw if raw is not None else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers=headers, timeout=timeout)


def assert_openai_error(response, status, *words):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    for word in words:
        assert word in error["message"], error["message"]
    return error


def chat(content, **extra):
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


# -- item 1: HTTP 500 from client input -------------------------------------------------------
@pytest.mark.parametrize("text", [None, 5, ["a"], {"t": "x"}])
def test_a_text_part_whose_text_is_not_a_string_is_400_naming_the_part(serve, text):
    server = serve()
    response = post(server, "/v1/chat/completions", chat([{"type": "text", "text": text}]))
    error = assert_openai_error(response, 400, "messages[0].content[0].text must be a string")
    assert error["param"] == "messages[0].content[0].text"
    assert server.upstream.requests == []  # refused before any model was called


@pytest.mark.parametrize("content, where", [(7, "messages[0].content"), ([{"text": "no type"}], "messages[0].content[0]")])
def test_content_of_the_wrong_shape_is_400_before_any_model_is_called(serve, content, where):
    server = serve()
    error = assert_openai_error(post(server, "/v1/chat/completions", chat(content)), 400, where)
    assert error["param"] == where and server.upstream.requests == []


def test_content_parts_with_images_and_text_still_pass(serve):
    server = serve()
    parts = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:,x"}}]
    response = post(server, "/v1/chat/completions", chat(parts))
    assert response.status_code == 200, response.text
    assert server.upstream.requests[-1]["body"]["messages"][0]["content"] == parts


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route", "/v1/feedback"])
def test_a_deeply_nested_body_is_400_not_a_recursion_error(serve, path):
    server = serve()
    error = assert_openai_error(post(server, path, raw="[" * 100_000), 400, "nests", "too deeply")
    assert error["code"] == "invalid_json"


def test_nesting_is_capped_by_the_config_and_the_message_says_where(serve):
    server = serve(security={"max_json_depth": 5})
    nested = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    error = assert_openai_error(post(server, "/v1/route", {"prompt": "hi", "model": "auto", "metadata": nested}),
                                400, "more than 5 levels", "metadata.a.b.c.d")
    assert error["param"] == "metadata.a.b.c.d"
    assert post(server, "/v1/route", {"prompt": "hi", "model": "auto", "metadata": {"a": 1}}).status_code == 200


@pytest.mark.parametrize("path, method", [("/v1/chat/completions", "POST"), ("/v1/route", "POST"),
                                          ("/v1/feedback", "POST"), ("/v1/models", "GET"), ("/metrics", "GET"),
                                          ("/admin/learners", "GET"), ("/admin/snapshot", "POST")])
def test_a_non_ascii_bearer_token_is_401_not_500(serve, path, method):
    server = serve()
    response = httpx.request(method, server.url + path, headers={"authorization": b"Bearer \xe9\xff"},
                             content=json.dumps(chat("hi")), timeout=10)
    error = assert_openai_error(response, 401)
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"


def test_metrics_take_a_client_key_or_the_admin_key_and_nothing_else(serve):
    server = serve()
    assert post(server, "/v1/chat/completions", chat("hi")).status_code == 200
    for key in (CLIENT_KEY, ADMIN_KEY):
        scraped = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert scraped.status_code == 200 and "crossroads_requests_total" in scraped.text, key
    for headers in ({"authorization": "Bearer not-a-key"}, {}):
        assert_openai_error(httpx.get(server.url + "/metrics", headers=headers, timeout=10), 401, "key")


def test_a_non_ascii_key_in_the_environment_matches_its_utf8_bytes(serve, monkeypatch):
    server = serve()
    monkeypatch.setenv("HARDENING_CLIENT_KEYS", "clé-secrète")
    good = httpx.get(server.url + "/v1/models", headers={"authorization": "Bearer clé-secrète".encode()}, timeout=10)
    assert good.status_code == 200, good.text
    assert_openai_error(httpx.get(server.url + "/v1/models", headers={"authorization": "Bearer cle-secrete"},
                                  timeout=10), 401)


HUGE = "1" + "0" * 400


@pytest.mark.parametrize("path, raw", [
    ("/v1/feedback", '{"decision_id": "dec_x", "reward": %s}' % HUGE),
    ("/v1/feedback", '{"decision_id": "dec_x", "quality": -%s}' % HUGE),
    ("/v1/route", '{"model": "auto", "prompt": "hi", "crossroads": {"max_cost_usd": %s}}' % HUGE),
    ("/v1/route", '{"model": "auto", "prompt": "hi", "crossroads": {"objective": {"quality": 1, "cost": %s}}}' % HUGE),
    ("/v1/chat/completions", '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "seed": %s}' % HUGE),
    ("/v1/route", '{"model": "auto", "prompt": "hi", "crossroads": {"max_cost_usd": 1e400}}'),
])
def test_numbers_beyond_a_floats_range_are_400_not_an_overflow(serve, path, raw):
    server = serve()
    error = assert_openai_error(post(server, path, raw=raw), 400, "out of range")
    assert error["code"] == "invalid_json"


def test_objective_weights_given_as_text_that_overflow_are_400(serve):
    server = serve()
    response = post(server, "/v1/route", {"model": "auto", "prompt": "hi",
                                          "crossroads": {"objective": "quality=1,cost=1e999"}})
    assert_openai_error(response, 400, "crossroads.objective")


SURROGATE = '"\\ud800"'


@pytest.mark.parametrize("path, raw, where", [
    ("/v1/feedback", '{"decision_id": %s, "reward": 1}' % SURROGATE, "decision_id"),
    ("/v1/route", '{"model": "auto", "prompt": "hi", "crossroads": {"session_id": %s}}' % SURROGATE,
     "crossroads.session_id"),
    ("/v1/route", '{"model": "auto", "prompt": "hi", "crossroads": {"category": %s}}' % SURROGATE, "crossroads.category"),
    ("/v1/chat/completions", '{"model": "auto", "messages": [{"role": "user", "content": %s}]}' % SURROGATE,
     "messages[0].content"),
    ("/v1/chat/completions", '{"model": %s, "messages": [{"role": "user", "content": "hi"}]}' % SURROGATE, "model"),
    ("/v1/chat/completions", '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": true, '
     '"crossroads": {"allowed_models": ["big", %s]}}' % SURROGATE, "crossroads.allowed_models[1]"),
    ("/v1/feedback", '{"decision_id": "dec_x", "reward": 1, "payload": {"\\udfff": 1}}', "payload"),
])
def test_a_lone_surrogate_anywhere_is_400_saying_the_text_is_not_valid_unicode(serve, path, raw, where):
    server = serve()
    error = assert_openai_error(post(server, path, raw=raw), 400, "not valid Unicode", where)
    assert server.upstream.requests == []
    assert error["code"] == "invalid_json"


def test_a_session_id_with_a_real_non_bmp_character_is_stored_and_takes_feedback(serve):
    """Item 3: an escaped surrogate PAIR is valid text: decided, stored, and its feedback finds the decision."""
    server = serve(routes={"auto": {"learner": "thompson:seed=0", "key": "session"}})
    raw = '{"model": "auto", "messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}], ' \
          '"crossroads": {"session_id": "s-\\ud83d\\ude00"}}'
    response = post(server, "/v1/chat/completions", raw=raw)
    assert response.status_code == 200, response.text
    decision_id = response.headers["x-crossroads-decision-id"]
    stored = server.gateway.store.decision(decision_id)
    assert stored is not None and stored["learner_key"] == "s-\U0001f600"
    feedback = post(server, "/v1/feedback", {"decision_id": decision_id, "reward": 1.0})
    assert feedback.status_code == 200, feedback.text


def test_names_and_ids_are_capped_in_length(serve):
    server = serve()
    long = "x" * (MAX_NAME_CHARS + 1)
    assert_openai_error(post(server, "/v1/feedback", {"decision_id": long, "reward": 1}), 400, "decision_id")
    assert_openai_error(post(server, "/v1/route", {"prompt": "hi", "model": long}), 400, "`model` is")
    assert_openai_error(post(server, "/v1/route", {"prompt": "hi", "model": "auto", "crossroads": {"session_id": long}}),
                        400, "session_id")


def test_too_many_messages_is_400_and_a_big_body_413(serve):
    server = serve(security={"max_messages": 3, "max_body_bytes": 10_000})
    messages = [{"role": "user", "content": "hi"}] * 4
    error = assert_openai_error(post(server, "/v1/chat/completions", {"model": "auto", "messages": messages}), 400,
                                "4 messages", "security.max_messages")
    assert error["param"] == "messages" and server.upstream.requests == []
    error = assert_openai_error(post(server, "/v1/chat/completions", chat("x" * 20_000)), 413, "security.max_body_bytes")
    assert error["code"] == "request_too_large"


@pytest.mark.parametrize("name, value", [("max_messages", 0), ("max_json_depth", "deep"), ("max_body_bytes", True)])
def test_limits_in_the_config_are_checked(name, value):
    with pytest.raises(CrossroadsError, match=f"security.{name} must be an integer >= 1"):
        parse_config({"models": [model("a")], "security": {name: value}})


# -- item 2: client mistakes are not upstream failures --------------------------------------------
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_400_and_never_cool_a_model_down(serve, value):
    server = serve(failures_before_cooldown=2)
    raw = '{"model": "auto", "temperature": %s, "messages": [{"role": "user", "content": "hi"}]}' % value
    for _ in range(4):
        assert_openai_error(post(server, "/v1/chat/completions", raw=raw), 400)
        nested = '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [{"x": [%s]}]}' % value
        assert_openai_error(post(server, "/v1/chat/completions", raw=nested), 400)
    assert server.upstream.requests == []
    assert httpx.get(server.url + "/health", timeout=10).json()["cooling_down"] == []
    assert post(server, "/v1/chat/completions", chat("hi")).status_code == 200


# -- item 4: credentials in a base_url ------------------------------------------------------------
CREDENTIAL_URL = "http://user:secret-pw@127.0.0.1:{port}/v1?api-key=sekrit-query&token=tok-value-99"


def assert_no_secret(text):
    for secret in SECRETS:
        assert secret not in text, text


def test_redact_credentials_blanks_userinfo_and_secret_query_parameters():
    text = redact_credentials("could not reach " + CREDENTIAL_URL.format(port=1) + " nor https://h/v1?key=k1&model=m")
    assert_no_secret(text)
    assert "k1" not in text and "model=m" in text and "http://[redacted]@127.0.0.1:1/v1?api-key=[redacted]" in text


@pytest.mark.parametrize("stream", [False, True])
def test_an_unreachable_base_url_with_credentials_is_redacted_in_the_502_the_log_and_the_store(serve, caplog, stream):
    url = CREDENTIAL_URL.format(port=free_port())  # nothing listens there
    server = serve(models=[model("remote", base_url=url, upstream_model="gpt")], routes={}, http_client=None)
    with caplog.at_level(logging.INFO):
        response = post(server, "/v1/chat/completions", {"model": "remote", "messages": HELLO, "stream": stream})
    error = assert_openai_error(response, 502, "could not reach", "[redacted]")
    assert_no_secret(error["message"])
    assert_no_secret(caplog.text)
    assert "could not reach" in caplog.text
    stored = server.gateway.store.decision(response.headers["x-crossroads-decision-id"])
    assert "[redacted]" in stored["outcome"]["error"]
    assert_no_secret(stored["outcome"]["error"])


def test_an_upstream_error_quoting_its_url_is_redacted(serve):
    """Some gateways and proxies quote the URL they were called on in their error message."""
    quoting = httpx.AsyncClient(transport=httpx.MockTransport(
        lambda request: httpx.Response(500, json={"error": {"message": f"upstream {request.url} is down"}})))
    server = serve(models=[model("remote", base_url=CREDENTIAL_URL.format(port=9))], routes={}, http_client=quoting)
    response = post(server, "/v1/chat/completions", {"model": "remote", "messages": HELLO})
    error = assert_openai_error(response, 502, "status 500", "api-key=[redacted]")
    assert_no_secret(error["message"])


def test_endpoint_errors_never_show_a_base_urls_credentials():
    """The path of the LLM judge and the /embeddings embedder (upstream/http.py)."""
    def quoting(request):
        return httpx.Response(400, json={"error": {"message": f"bad request to {request.url}"}})

    for status in (400, 401):
        endpoint = Endpoint(CREDENTIAL_URL.format(port=9), api_key_env=None, timeout_s=2, max_retries=0, backoff_s=0,
                            http_client=httpx.Client(transport=httpx.MockTransport(
                                lambda request, status=status: httpx.Response(status, json={"error": {
                                    "message": f"bad request to {request.url}"}}))))
        with pytest.raises(CrossroadsError) as raised:
            endpoint.post("embeddings", {"input": ["x"]}, model="m")
        assert_no_secret(str(raised.value))
        assert "[redacted]" in str(raised.value)
    unreachable = Endpoint(CREDENTIAL_URL.format(port=free_port()), api_key_env=None, timeout_s=2, max_retries=0,
                           backoff_s=0)
    with pytest.raises(CrossroadsError, match="failed 1 times") as raised:
        unreachable.post("embeddings", {"input": ["x"]}, model="m")
    assert_no_secret(str(raised.value))
    unreachable.close()


def test_litellm_errors_never_show_a_base_urls_credentials():
    pytest.importorskip("litellm")
    import asyncio

    from crossroads.upstream.models import ModelConfig
    from crossroads.upstream.providers import LiteLLMProvider, UpstreamError

    config = ModelConfig(name="remote", provider="litellm", upstream_model="openai/gpt",
                         base_url=CREDENTIAL_URL.format(port=free_port()), max_retries=0, timeout_s=2)
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(LiteLLMProvider(config).complete({"messages": HELLO}))
    assert_no_secret(str(raised.value))


# -- item 12: smaller ones ------------------------------------------------------------------------------
def test_unknown_paths_and_wrong_methods_answer_in_openais_error_shape(serve):
    server = serve()
    error = assert_openai_error(httpx.get(server.url + "/v1/nothing", timeout=10), 404, "/v1/nothing",
                                "POST /v1/chat/completions")
    assert error["code"] == "not_found"
    response = httpx.get(server.url + "/v1/chat/completions", timeout=10)
    error = assert_openai_error(response, 405, "GET is not allowed", "POST")
    assert error["code"] == "method_not_allowed" and "POST" in response.headers["allow"]


@pytest.mark.parametrize("content, words", [
    (b"just some text\n", "not a crossroads router file"),
    (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.", "not a crossroads router file"),
    (None, "is a directory"),
])
def test_router_file_must_be_a_crossroads_router(tmp_path, content, words):
    path = tmp_path / "router.npz"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    config = parse_config({"models": [model("a"), model("b")], "routes": {"r": {"router_file": str(path)}},
                           "store": f"sqlite:///{tmp_path}/s.db"})
    with pytest.raises(CrossroadsError, match=words) as raised:
        Gateway(config)
    assert "pickle" not in str(raised.value) and "crossroads train" in str(raised.value)


def test_an_npz_that_is_not_a_router_is_named_as_such(tmp_path):
    import numpy as np

    from crossroads.routers import load_router

    np.savez(tmp_path / "arrays.npz", weights=np.zeros(3), objects=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CrossroadsError, match="not a crossroads router file") as raised:
        load_router(tmp_path / "arrays.npz")
    assert "allow_pickle" not in str(raised.value)


def test_router_file_in_the_config_must_be_a_path():
    with pytest.raises(CrossroadsError, match="routes.r.router_file must be the path of a router file"):
        parse_config({"models": [model("a")], "routes": {"r": {"router_file": 5}}})


def sse(response):
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


def test_a_model_that_breaks_mid_stream_says_so_and_cools_down(serve):
    server = serve(models=[model("broken", "break-stream"), model("fine")], routes={}, failures_before_cooldown=2)
    for attempt in range(2):
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "broken", "messages": HELLO, "stream": True}) as response:
            assert response.status_code == 200
            events = sse(response)
            decision_id = response.headers["x-crossroads-decision-id"]
        message = events[-1]["error"]["message"]
        assert "broke mid-answer" in message and "could not reach" not in message
        assert events[-1]["error"]["code"] == "stream_broken"
        assert server.gateway.store.decision(decision_id)["outcome"]["status"] == "broken"
    assert httpx.get(server.url + "/health", timeout=10).json()["cooling_down"] == ["broken"]


def test_a_client_that_leaves_mid_stream_is_recorded_as_disconnected(serve):
    upstream = FakeUpstream(answer=lambda body: "word " * 50_000)  # long enough to still be streaming when it leaves
    server = serve(upstream=upstream, models=[model("long")], routes={})
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "long", "messages": HELLO, "stream": True}) as response:
        decision_id = response.headers["x-crossroads-decision-id"]
        next(response.iter_lines())  # the first chunk, then hang up
    deadline = time.monotonic() + 10
    while (outcome := server.gateway.store.decision(decision_id)["outcome"]) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert outcome is not None and outcome["status"] == "disconnected"


def test_a_stream_read_to_the_end_is_still_ok(serve):
    server = serve(models=[model("fine")], routes={})
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "fine", "messages": HELLO, "stream": True}) as response:
        events = sse(response)
        decision_id = response.headers["x-crossroads-decision-id"]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices")) == \
        "echo: hello there"
    assert server.gateway.store.decision(decision_id)["outcome"]["status"] == "ok"


# -- input bounded before the expensive work (item 6) ------------------------------------------------
class TokenizerSpy:
    """The embedder's real tokenizer, noting the length of every text it is given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.lengths = tokenizer, []

    def encode(self, text):
        self.lengths.append(len(text))
        return self.tokenizer.encode(text)

    def encode_batch(self, texts):
        self.lengths.extend(len(text) for text in texts)
        return self.tokenizer.encode_batch(texts)


PROMPT_1MB = "The quick brown fox jumps over the lazy dog. " * 22_000


def test_the_embedder_tokenizes_only_what_it_can_keep():
    from crossroads.embeddings.onnx_minilm import MAX_TOKENS, OnnxMiniLMEmbedder

    embedder = OnnxMiniLMEmbedder()
    embedder.embed(["load the model"])
    tokenizer = embedder._tokenizer
    embedder._tokenizer = spy = TokenizerSpy(tokenizer)
    one, batch = embedder.embed([PROMPT_1MB]), embedder.embed([PROMPT_1MB, "short"])
    assert max(spy.lengths) == embedder.max_chars and embedder.max_chars >= 8 * MAX_TOKENS
    whole = tokenizer.encode(PROMPT_1MB)
    assert len(whole.ids) == MAX_TOKENS  # the tokenizer keeps 256 tokens of the whole text ...
    assert tokenizer.encode(PROMPT_1MB[: embedder.max_chars]).ids == whole.ids  # ... the same as of the cut text
    assert abs(float(one[0] @ batch[0]) - 1.0) < 1e-5


def test_a_huge_prompt_on_an_embedding_route_is_cut_before_tokenizing(serve):
    server = serve(routes={"smart": {"learner": "linucb:seed=0"}})
    assert post(server, "/v1/route", {"model": "smart", "prompt": "warm up"}).status_code == 200
    embedder = server.gateway.routes._embedder_()
    embedder._tokenizer = spy = TokenizerSpy(embedder._tokenizer)
    response = post(server, "/v1/route", {"model": "smart", "prompt": PROMPT_1MB})
    assert response.status_code == 200, response.text
    assert spy.lengths and max(spy.lengths) == embedder.max_chars < len(PROMPT_1MB) / 100
