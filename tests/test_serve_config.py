"""Server configuration and request parsing: every mistake names its key and what would be accepted."""

from __future__ import annotations

import pytest

from crossroads.errors import CrossroadsError
from crossroads.objective import Objective
from crossroads.serve.config import load_config, parse_config
from crossroads.serve.defaults import config_from_models, default_config
from crossroads.serve.requests import BadRequest, parse_chat_request
from crossroads.store.sql import describe_store

MODELS = [{"name": "a", "price_per_mtok_in": 1.0}, {"name": "b"}]


def test_a_full_config_round_trips_from_yaml(tmp_path):
    path = tmp_path / "crossroads.yaml"
    path.write_text("""
models:
  - {name: gpt-4o, api_key_env: OPENAI_API_KEY, price_per_mtok_in: 2.5, price_per_mtok_out: 10}
  - {name: local, base_url: "http://127.0.0.1:8080/v1", upstream_model: gemma, defaults: {max_tokens: 64}}
routes:
  auto: {learner: "thompson:discount=0.99", objective: "quality=1,cost=0.5", key: session}
  cheap: {learner: ucb, models: [local]}
default_route: auto
store: sqlite:///x.db
security: {api_keys_env: MY_KEYS, max_body_bytes: 5000}
""")
    config = load_config(path)
    assert config.model_names == ["gpt-4o", "local"]
    assert config.model("gpt-4o").upstream_model == "gpt-4o"  # defaults to the name
    assert config.model("local").defaults == {"max_tokens": 64}
    assert config.routes[0].objective.cost == 0.5 and config.routes[0].key == "session"
    assert config.routes[1].models == ("local",)
    assert config.security.max_body_bytes == 5000


@pytest.mark.parametrize("raw, fragment", [
    ({"models": []}, "`models` is empty"),
    ({"models": [{"name": "a"}, {"name": "a"}]}, "more than once"),
    ({"models": [{"price_per_mtok_in": 1}]}, "needs a `name`"),
    ({"models": [{"name": "a", "colour": "red"}]}, "unknown keys ['colour']"),
    ({"models": [{"name": "a", "provider": "acme"}]}, "provider must be one of"),
    ({"models": [{"name": "a", "price_per_mtok_in": -1}]}, "price_per_mtok_in must be a number >= 0"),
    ({"models": [{"name": "a", "api_key_env": "sk-abc123 456"}]}, "NAME of an environment variable"),
    ({"models": [{"name": "a", "tier": "huge"}]}, "tier must be one of small, medium, large, frontier"),
    ({"models": MODELS, "routes": {"r": {}}}, "needs a `learner`, a `router_file`, or both"),
    ({"models": MODELS, "routes": {"r": {"learner": "thompson", "router_file": "default"}}},
     "the thompson learner cannot start from a router"),
    ({"models": MODELS, "routes": {"r": {"learner": "bandit9000"}}}, "unknown online learner"),
    ({"models": MODELS, "routes": {"r": {"learner": "ucb", "models": ["zz"]}}}, "names model 'zz'"),
    ({"models": MODELS, "routes": {"a": {"learner": "ucb"}}}, "has the name of a model"),
    ({"models": MODELS, "routes": {"r": {"learner": "ucb", "objective": "speed=1"}}}, "unknown weight"),
    ({"models": MODELS, "routes": {"r": {"learner": "thompson:discont=0.9"}}},
     "routes.r: online learner 'thompson' has no option 'discont'; its options: prior_alpha"),
    ({"models": MODELS, "routes": {"r": {"learner": "ucb:window=many"}}}, "window='many' is not a whole number"),
    ({"models": MODELS, "routes": {"r": {"router_file": "default", "rule": "within:tol=0.1"}}},
     "decision rule 'within' has no option 'tol'; its options: tolerance"),
    ({"models": MODELS, "routes": {"r": {"router_file": "default", "rule": "cheapest"}}},
     "unknown decision rule 'cheapest'; choose one of: reward ("),
    ({"models": MODELS, "routes": {"r": {"learner": "ucb", "rule": "within"}}}, "the learner decides (drop `rule`)"),
    ({"models": MODELS, "default_route": "nowhere"}, "default_route 'nowhere'"),
    ({"models": MODELS, "routellm": {"strong": "a", "weak": "zz"}}, "routellm.weak"),
    ({"models": MODELS, "route_on": "vibes"}, "route_on must be one of"),
    ({"models": MODELS, "security": {"keys": "x"}}, "security has unknown keys"),
    ({"models": MODELS, "rotes": {}}, "unknown keys ['rotes']; known keys: ack_after_write, cooldown_s, default_route, embedder, "
     "failures_before_cooldown, models, request_deadline_s, route_on, routellm, routes, security, shutdown_timeout_s"),
    ({"models": MODELS, "routes": {"r": {"learner": "ucb", "name": "s"}}}, "a route's name is its key"),
])
def test_config_mistakes_are_named(raw, fragment):
    with pytest.raises(CrossroadsError) as caught:
        parse_config(raw)
    assert fragment in str(caught.value)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(CrossroadsError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(CrossroadsError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("models: []")
    with pytest.raises(CrossroadsError, match=str(wrong)):
        load_config(wrong)


def test_default_config_routes_two_local_models_priced_by_size_and_adds_openai_only_with_a_key(tmp_path,
                                                                                                  monkeypatch):
    local = default_config(env={})
    assert local.model_names == ["gemma-3-270m", "smollm2-135m"]
    gemma, smol = local.models
    assert gemma.local and smol.local and gemma.price_per_mtok_in == pytest.approx(2 * smol.price_per_mtok_in, rel=0.02)
    (auto,) = local.routes
    assert (auto.router_file, auto.learner, local.default_route) == ("default", "linucb", "auto")
    assert auto.objective == Objective(quality=1)  # both run here: cost is not weighed
    with_key = default_config(env={"OPENAI_API_KEY": "sk-x"})
    assert with_key.model_names == ["gemma-3-270m", "smollm2-135m", "gpt-4o-mini", "gpt-4o"]
    assert with_key.model("gpt-4o").api_key_env == "OPENAI_API_KEY"
    assert with_key.routes[0].objective == Objective(quality=1, cost=0.5)
    monkeypatch.chdir(tmp_path)  # the store is a file in the working directory, never at the filesystem root
    assert describe_store(local.store) == f"SQLite file {tmp_path / 'crossroads.db'}"


def test_models_from_the_command_line_make_a_config_that_routes():
    config = config_from_models(["big:price=10/30,api_key_env=BIG_KEY", "small:price=0.1,tier=small,timeout_s=5"])
    assert config.model("big").price_per_mtok_out == 30 and config.model("small").price_per_mtok_out == 0.1
    assert config.model("small").timeout_s == 5.0 and config.default_route == "auto"
    assert config_from_models(["solo"]).routes == ()
    for spec, message in (("a:price=cheap", "price='cheap'"), ("a:colour=red", "has no option 'colour'"),
                          ("a:timeout_s=soon", "timeout_s='soon' is not a number")):
        with pytest.raises(CrossroadsError, match=message):
            config_from_models([spec])


def test_a_pool_without_routes_gets_the_pretrained_route_and_a_request_naming_no_model_uses_it(tmp_path):
    from serve_helpers import ServerThread

    from crossroads.serve.gateway import Gateway
    from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "price_per_mtok_in": price,
               "price_per_mtok_out": price} for name, price in (("big", 10.0), ("small", 0.1))]
    config = parse_config({"models": models, "store": f"sqlite:///{tmp_path}/store.db"})
    [auto] = config.routes
    assert (config.default_route, auto.name, auto.router_file, auto.learner) == ("auto", "auto", "default", "linucb")
    assert parse_config({"models": models[:1]}).routes == ()  # one model: nothing to route
    declared = parse_config({"models": models, "routes": {"mine": {"learner": "ucb"}}})
    assert [r.name for r in declared.routes] == ["mine"] and declared.default_route is None  # routes named: as said
    assert parse_config({"models": models, "default_route": "big"}).routes == ()
    with ServerThread(Gateway(config, http_client=FakeUpstream().async_client())) as server:
        import httpx

        answer = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                            json={"messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert answer.status_code == 200, answer.text
        decision = answer.json()["crossroads"]
        assert decision["route"] == "auto" and decision["kind"] == "learner"
        assert "starting from the router's expected rewards" in decision["reason"]  # warm start from the default


def test_requests_route_on_the_last_user_message_or_the_conversation():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {}}]}]
    assert parse_chat_request({"messages": messages}).text == "second"
    assert parse_chat_request({"messages": messages}, "conversation").text == (
        "system: be brief\nuser: first\nassistant: ok\nuser: second")


def test_overrides_are_taken_out_of_the_upstream_body():
    request = parse_chat_request({"model": "auto", "messages": [{"role": "user", "content": "x"}], "top_p": 0.5,
                                  "crossroads": {"allowed_models": ["a"], "max_cost_usd": 0.01,
                                                 "objective": {"quality": 1, "cost": 2}, "session_id": "s",
                                                 "category": "college_physics"}})
    assert request.body == {"messages": [{"role": "user", "content": "x"}], "top_p": 0.5}
    assert request.model == "auto" and request.overrides.allowed_models == ("a",)
    assert request.overrides.objective.cost == 2 and request.overrides.session_id == "s"
    assert request.overrides.category == "college_physics"


@pytest.mark.parametrize("body, param", [
    ([1, 2], None),
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "no role"}]}, "messages[0]"),
    ({"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "crossroads": {"max_cost_usd": -1}}, "crossroads.max_cost_usd"),
    ({"messages": [{"role": "user", "content": "x"}], "crossroads": {"allowed_models": "a"}}, "crossroads.allowed_models"),
    ({"messages": [{"role": "user", "content": "x"}], "crossroads": {"objective": "quality=-1"}}, "crossroads.objective"),
    ({"messages": [{"role": "user", "content": "x"}], "crossroads": {"category": 3}}, "crossroads.category"),
    ({"messages": [{"role": "user", "content": "x"}], "crossroads": {"category": ""}}, "crossroads.category"),
])
def test_malformed_requests_name_the_field(body, param):
    with pytest.raises(BadRequest) as caught:
        parse_chat_request(body)
    assert caught.value.param == param
