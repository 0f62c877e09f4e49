"""Property-based fuzzing of every endpoint and every routing override (issue 14).

One real server (uvicorn on a socket, SQLite store, crossroads' fake upstream) takes
generated requests: JSON values of any shape, huge integers, NaN and Infinity, lone
surrogates, deep nesting, wrong types, odd bearer tokens.  Whatever comes in: no 5xx,
every error is JSON in OpenAI's shape, no request hangs (a timeout each), a 200 chat or
route answer's decision is in the store, and no model ever cools down because of a
client's body.  Examples are bounded and derandomized, so CI runs the same ones in
well under a minute.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from serve_helpers import ServerThread

from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.requests import OVERRIDE_KEYS
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

CLIENT_KEY, ADMIN_KEY = "fuzz-client-key", "fuzz-admin-key"
TIMEOUT_S = 10.0
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FUZZ_CLIENT_KEYS", CLIENT_KEY)
        env.setenv("FUZZ_ADMIN_KEY", ADMIN_KEY)
        models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0,
                   "timeout_s": 5, "price_per_mtok_in": price, "price_per_mtok_out": 3 * price}
                  for name, price in (("big", 10.0), ("small", 0.1))]
        config = parse_config({
            "models": models, "default_route": "auto", "failures_before_cooldown": 1,
            "routes": {"auto": {"learner": "thompson:seed=0", "objective": "quality=1,cost=0.5"},
                       "sessions": {"learner": "ucb", "key": "session"}},
            "store": f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/store.db",
            # wrong keys by the thousand are the fuzzer's input, not an attack: throttling them is tested elsewhere
            "security": {"api_keys_env": "FUZZ_CLIENT_KEYS", "admin_key_env": "FUZZ_ADMIN_KEY",
                         "max_auth_failures": 1_000_000},
        })
        with ServerThread(Gateway(config, http_client=FakeUpstream().async_client())) as running:
            running.http = httpx.Client(base_url=running.url, timeout=TIMEOUT_S)
            running.decisions = [_decide(running) for _ in range(3)]
            yield running
            running.http.close()


def _decide(server) -> str:
    response = server.http.post("/v1/route", json={"prompt": "seed decision"},
                                headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == 200, response.text
    return response.headers["x-crossroads-decision-id"]


# -- strategies -----------------------------------------------------------------------------------
SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800", "ok \ud83d"])
TEXT = st.one_of(st.text(max_size=20), SURROGATES, st.sampled_from(["", " ", "auto", "big", "small", "x" * 300]))
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=10**300, max_value=10**500), st.integers(max_value=-(10**300)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, -1.0, 1e308, 5e-324]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(TEXT, children, max_size=4), max_leaves=12)


#: Deep nesting stands in the generated value as this marker and is spliced into the JSON text by ``encode``
#: (a Python value thousands of levels deep would break json.dumps and hypothesis's printing alike).
DEEP = st.integers(min_value=1, max_value=3000).map(lambda depth: f"__deep_{depth}__")
_DEEP_MARK = re.compile(r'"__deep_(\d+)__"')


def encode(value) -> bytes:
    """The JSON text of ``value`` (NaN, Infinity and escaped lone surrogates included), deep markers spliced in."""
    def deep(match: re.Match) -> str:
        depth = int(match.group(1))
        return '{"k": [' * (depth // 2) + "null" + "]}" * (depth // 2)

    return _DEEP_MARK.sub(deep, json.dumps(value)).encode()
ANY = st.one_of(JSON, DEEP)

CONTENT = st.one_of(
    TEXT, st.none(), NUMBERS,
    st.lists(st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(TEXT, SCALARS, JSON)}),
                       st.fixed_dictionaries({"type": st.one_of(TEXT, SCALARS)}, optional={"text": ANY}),
                       ANY), max_size=3),
)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": CONTENT}),
    st.fixed_dictionaries({}, optional={"role": ANY, "content": ANY, "name": ANY}),
    ANY,
)
GOOD_MESSAGES = st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=30)}),
                         min_size=1, max_size=3)
MESSAGES = st.one_of(GOOD_MESSAGES, st.lists(MESSAGE, min_size=1, max_size=4), st.just([]), ANY)
OBJECTIVE = st.one_of(
    st.dictionaries(st.sampled_from(["quality", "cost", "latency", "bogus"]), st.one_of(NUMBERS, TEXT, ANY),
                    max_size=3),
    st.sampled_from(["quality=1,cost=0.5", "quality=1e999", "cost=-1", "quality=", "=", "quality=nan"]),
    ANY,
)
OVERRIDE_VALUES = {
    "allowed_models": st.one_of(st.lists(st.one_of(st.sampled_from(["big", "small"]), TEXT), max_size=3), ANY),
    "category": st.one_of(TEXT, ANY),
    "max_cost_usd": st.one_of(NUMBERS, ANY),
    "objective": OBJECTIVE,
    "session_id": st.one_of(TEXT, ANY),
}
assert set(OVERRIDE_VALUES) == set(OVERRIDE_KEYS)  # a new override key must be fuzzed too
OVERRIDES = st.one_of(st.fixed_dictionaries({}, optional=OVERRIDE_VALUES),
                      st.dictionaries(TEXT, ANY, max_size=2), ANY)
MODEL = st.one_of(st.sampled_from(["auto", "sessions", "big", "small", "router-mf-0.5", "nope"]), TEXT, ANY)
#: Mostly the valid client key, so that most requests get past authentication.
AUTH = st.sampled_from([f"Bearer {CLIENT_KEY}".encode()] * 8 + [
    f"Bearer {ADMIN_KEY}".encode(), b"", b"Bearer", b"Bearer \xe9\xff", b"Basic dXNlcjpwYXNz",
    b"bearer " + CLIENT_KEY.encode() + b" extra", "Bearer clé".encode()])
CHAT = st.fixed_dictionaries(
    {"messages": MESSAGES},
    optional={"model": MODEL, "stream": st.one_of(st.booleans(), ANY), "crossroads": OVERRIDES,
              "temperature": st.one_of(NUMBERS, ANY), "max_tokens": st.one_of(NUMBERS, ANY), "tools": ANY,
              "metadata": ANY},
)
ROUTE = st.one_of(CHAT, st.fixed_dictionaries({"prompt": st.one_of(TEXT, ANY)},
                                              optional={"model": MODEL, "crossroads": OVERRIDES}))
RAW = st.one_of(
    st.binary(max_size=64),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n),
    st.sampled_from([b"", b"NaN", b"-Infinity", b"{", b'{"messages": [}', b"\xff\xfe", b'"\\ud800"',
                     b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}',
                     b'{"decision_id": "x", "reward": 1' + b"0" * 500 + b"}"]),
)


def body(strategy):
    """A request body: the JSON of a generated value (NaN, Infinity and lone surrogates included), or raw bytes."""
    return st.one_of(strategy.map(encode), strategy.map(encode), strategy.map(encode), RAW)


# -- the properties -------------------------------------------------------------------------------
def send(server, method: str, path: str, content: bytes | None, auth: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if auth:
        headers["authorization"] = auth
    return server.http.request(method, path, content=content, headers=headers)


def check(server, response: httpx.Response) -> None:
    """No 5xx; errors in OpenAI's shape; a decision answered with 200 is in the store; no model cools down."""
    event(f"status {response.status_code}")  # --hypothesis-show-statistics: how far requests got
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and response.request.method != "HEAD":  # HEAD: headers only
        assert response.headers["content-type"].startswith("application/json"), response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
    decision_id = response.headers.get("x-crossroads-decision-id")
    if response.status_code == 200 and decision_id:
        assert server.gateway.store.decision(decision_id) is not None, "a decision answered with 200 was not stored"
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        for data in events[:-1]:
            assert "error" not in json.loads(data), data
    assert server.gateway.health.unavailable() == set(), "a client's request put a model into cooldown"


@FUZZ
@given(content=body(CHAT), auth=AUTH)
def test_chat_completions(server, content, auth):
    check(server, send(server, "POST", "/v1/chat/completions", content, auth))


@FUZZ
@given(chat=CHAT, auth=AUTH)
def test_chat_completions_streamed(server, chat, auth):
    content = encode({**chat, "stream": True})
    check(server, send(server, "POST", "/v1/chat/completions", content, auth))


@FUZZ
@given(overrides=OVERRIDES, model=st.sampled_from(["auto", "sessions", "small"]), stream=st.booleans())
def test_every_override_on_an_otherwise_valid_request(server, overrides, model, stream):
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            "crossroads": overrides}
    check(server, send(server, "POST", "/v1/chat/completions", encode(chat),
                       f"Bearer {CLIENT_KEY}".encode()))


@FUZZ
@given(content=body(ROUTE), auth=AUTH)
def test_route(server, content, auth):
    check(server, send(server, "POST", "/v1/route", content, auth))


#: Decision ids that are answered at once: an unknown id of the right shape makes the server wait a second
#: for another replica to commit it (issue 14, item 5), which would make the fuzz slow, not wrong.
DECISION_IDS = st.one_of(st.sampled_from(["SEEDED", "FRESH"]), SURROGATES, st.just("x" * 300), st.just(""), NUMBERS,
                         st.none(), st.lists(TEXT, max_size=2))
FEEDBACK = st.one_of(
    st.fixed_dictionaries({"decision_id": st.just("FRESH"), "reward": st.floats(0, 1)}, optional={"payload": ANY}),
    st.fixed_dictionaries({"decision_id": st.just("FRESH"), "quality": st.floats(0, 1)}),
    st.fixed_dictionaries({"decision_id": DECISION_IDS}, optional={
        "reward": st.one_of(NUMBERS, ANY), "quality": st.one_of(NUMBERS, ANY), "payload": ANY, "extra": ANY}),
)


@FUZZ
@given(feedback=st.one_of(FEEDBACK, ANY), raw=st.one_of(st.none(), RAW), pick=st.integers(0, 2), auth=AUTH)
def test_feedback(server, feedback, raw, pick, auth):
    if isinstance(feedback, dict) and feedback.get("decision_id") == "FRESH":
        feedback = {**feedback, "decision_id": _decide(server)}
    elif isinstance(feedback, dict) and feedback.get("decision_id") == "SEEDED":
        feedback = {**feedback, "decision_id": server.decisions[pick]}
    elif isinstance(feedback, dict) and isinstance(feedback.get("decision_id"), str) and \
            len(feedback["decision_id"]) < 256 and not any("\ud800" <= c <= "\udfff" for c in feedback["decision_id"]):
        feedback = {**feedback, "decision_id": server.decisions[pick]}
    elif not isinstance(feedback, dict) or "decision_id" not in feedback:
        feedback = feedback if not isinstance(feedback, dict) else {**feedback, "decision_id": 0}
    content = raw if raw is not None else encode(feedback)
    check(server, send(server, "POST", "/v1/feedback", content, auth))


ENDPOINTS = ["/v1/chat/completions", "/v1/route", "/v1/feedback", "/v1/models", "/health", "/metrics",
             "/admin/learners", "/admin/snapshot", "/admin/reload", "/", "/v1", "/v1/nothing", "/admin"]


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       path=st.sampled_from(ENDPOINTS), content=st.one_of(st.none(), RAW, body(JSON)), auth=AUTH)
def test_every_endpoint_and_method(server, method, path, content, auth):
    if path == "/v1/feedback" and method == "POST" and content and content.startswith(b'{"'):
        content = None  # a random object would name an unknown decision id: see DECISION_IDS
    check(server, send(server, method, path, content, auth))
