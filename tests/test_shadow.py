"""Shadow traffic: other models answer a share of a route's requests in the background, stored, never returned.

The route is a trained router that always sends the chemistry prompt to A, so that which
models shadow a request is known; the upstreams are the fake (in process, or on sockets
where a slow answer must really take time); the store is a real SQLite file, and a real
PostgreSQL under a real `crossroads serve` process.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing, contextmanager

import httpx
import numpy as np
import openai
import pytest
from postgres_server import fresh_database
from serve_helpers import ServerProcess, ServerThread
from synthetic import TopicEmbedder, topic_router_file

from crossroads.errors import CrossroadsError
from crossroads.evaluate.report import build_report
from crossroads.serve import shadow as shadow_module
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.store import open_store
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream, slow

CHEMISTRY = [{"role": "user", "content": "a chemistry question"}]  # the router sends it to A


@pytest.fixture(scope="module")
def router_file(tmp_path_factory):
    return topic_router_file(tmp_path_factory.mktemp("routers"))


def named_answer(body):
    return f"answer of {body['model']}"


def model(name, base_url=FAKE_BASE_URL, upstream="", price=1.0, **extra):
    return {"name": name, "base_url": base_url, "upstream_model": upstream or name, "price_per_mtok_in": price,
            "price_per_mtok_out": price, "max_retries": 0, "timeout_s": 10, **extra}


def raw_config(tmp_path, router_file, shadow, models=None, **config):
    return {"models": models or [model("A"), model("B"), model("C")],
            "routes": {"r": {"router_file": router_file, "shadow": shadow}},
            "store": f"sqlite://{tmp_path / 'store.db'}", **config}


@contextmanager
def serving(tmp_path, router_file, shadow, http_client=None, models=None, **config):
    """A server over models A, B, C (by default on one in-process fake naming the model in its answer)."""
    http_client = http_client or FakeUpstream(answer=named_answer).async_client()
    gateway = Gateway(parse_config(raw_config(tmp_path, router_file, shadow, models, **config)),
                      http_client=http_client, embedder=TopicEmbedder())
    with ServerThread(gateway) as server:
        server.store_path = tmp_path / "store.db"
        yield server


def sdk(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=30)


def settle(server, timeout_s=10.0):
    """Wait until no shadow call is in flight and everything queued is in the store."""
    deadline = time.monotonic() + timeout_s
    while server.gateway.shadow.in_flight:
        assert time.monotonic() < deadline, "shadow calls still running"
        time.sleep(0.02)
    server.gateway.store.flush()


def shadow_rows(path):
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT decision_id, model, status, cost_usd, latency_s, error, response "
                          "FROM shadow_outcomes ORDER BY decision_id, model").fetchall()
    keys = ("decision_id", "model", "status", "cost_usd", "latency_s", "error", "response")
    return [dict(zip(keys, row)) for row in rows]


def metric(server, prefix):
    lines = httpx.get(server.url + "/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


# -- config -----------------------------------------------------------------------------------
def test_a_shadow_option_parses_with_its_defaults(tmp_path, router_file):
    config = parse_config(raw_config(tmp_path, router_file, {"share": 0.02}))
    shadow = config.routes[0].shadow
    assert (shadow.share, shadow.models, shadow.max_usd_per_day) == (0.02, (), None)
    config = parse_config(raw_config(tmp_path, router_file, {"share": 1, "models": ["A", "C"], "max_usd_per_day": 5}))
    assert config.routes[0].shadow.models == ("A", "C") and config.routes[0].shadow.max_usd_per_day == 5
    assert parse_config(raw_config(tmp_path, router_file, None)).routes[0].shadow is None


@pytest.mark.parametrize("shadow, message", [
    ({"share": 1.5}, r"routes\.r\.shadow: share must be a number in \[0, 1\], got 1.5 \(the share of requests"),
    ({"share": -0.1}, r"share must be a number in \[0, 1\], got -0.1"),
    ({"share": "2%"}, r"share must be a number in \[0, 1\], got '2%'"),
    ({"models": ["B"]}, r"routes\.r\.shadow needs a `share`"),
    ({"share": 0.1, "max_usd_per_day": -1}, r"max_usd_per_day must be a number >= 0 .*got -1"),
    ({"share": 0.1, "max_usd_per_day": "five"}, r"max_usd_per_day must be a number >= 0 .*got 'five'"),
    ({"share": 0.1, "models": ["B", "gpt-9"]}, r"models names 'gpt-9', which is not in `models` \(A, B, C, D\)"),
    ({"share": 0.1, "models": ["D"]}, r"models names 'D', which is not among the route's models \(A, B, C\); add it"),
    ({"share": 0.1, "models": ["B", "B"]}, r"models \['B'\] are listed more than once"),
    ({"share": 0.1, "models": "B"}, r"`routes\.r\.shadow\.models` must be a list"),
    ({"share": 0.1, "cap": 5}, r"routes\.r\.shadow has unknown keys \['cap'\]; known keys: max_usd_per_day, models"),
    ("yes", r"routes\.r\.shadow must be a mapping"),
])
def test_a_wrong_shadow_option_is_a_one_line_config_error(tmp_path, router_file, shadow, message):
    raw = raw_config(tmp_path, router_file, shadow, models=[model("A"), model("B"), model("C"), model("D")])
    raw["routes"]["r"]["models"] = ["A", "B", "C"]
    with pytest.raises(CrossroadsError, match=message) as caught:
        parse_config(raw)
    assert "\n" not in str(caught.value)


# -- through the app ------------------------------------------------------------------------------
def test_with_share_one_every_answer_is_shadowed_by_the_other_listed_models(tmp_path, router_file):
    fake = FakeUpstream(answer=named_answer)
    with serving(tmp_path, router_file, {"share": 1.0}, http_client=fake.async_client()) as server:
        client = sdk(server)
        ids = []
        for _ in range(5):
            raw = client.chat.completions.with_raw_response.create(model="r", messages=CHEMISTRY)
            answer = raw.parse()
            assert answer.model == "A" and answer.choices[0].message.content == "answer of A"
            assert "shadow" not in answer.to_json()  # nothing of the shadow calls reaches the client
            ids.append(raw.headers["x-crossroads-decision-id"])
        chunks = list(client.chat.completions.create(model="r", messages=CHEMISTRY, stream=True,
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer of A"
        ids.append(chunks[0].crossroads["decision_id"])
        settle(server)
        assert metric(server, 'crossroads_shadow_calls_total{model="B",route="r",status="ok"}') == 6
        shadow_cost = metric(server, "crossroads_shadow_cost_usd_total")
    rows = shadow_rows(server.store_path)
    assert {(row["decision_id"], row["model"]) for row in rows} == {(i, m) for i in ids for m in ("B", "C")}
    assert all(row["status"] == "ok" and row["cost_usd"] > 0 and row["error"] is None for row in rows)
    assert all(row["response"] is None for row in rows)  # store_prompts is off
    assert sum(row["cost_usd"] for row in rows) == pytest.approx(shadow_cost)
    shadow_bodies = [r["body"] for r in fake.requests if r["body"]["model"] != "A"]
    assert len(shadow_bodies) == 12 and not any("stream" in body or "stream_options" in body for body in shadow_bodies)
    assert [r["body"].get("stream") for r in fake.requests if r["body"]["model"] == "A"] == [None] * 5 + [True]


def test_listed_models_and_allowed_models_narrow_the_shadow_calls_and_responses_are_kept_when_asked(
        tmp_path, router_file):
    shadow = {"share": 1.0, "models": ["A", "C"]}
    with serving(tmp_path, router_file, shadow, store_prompts=True) as server:
        client = sdk(server)
        client.chat.completions.create(model="r", messages=CHEMISTRY)
        client.chat.completions.create(model="r", messages=CHEMISTRY,
                                       extra_body={"crossroads": {"allowed_models": ["A", "B"]}})
        settle(server)
    rows = shadow_rows(server.store_path)
    assert [(row["model"], row["response"]) for row in rows] == [("C", "answer of C")]


def test_with_share_zero_no_model_is_shadowed(tmp_path, router_file):
    fake = FakeUpstream(answer=named_answer)
    with serving(tmp_path, router_file, {"share": 0.0}, http_client=fake.async_client()) as server:
        for _ in range(5):
            sdk(server).chat.completions.create(model="r", messages=CHEMISTRY)
        settle(server)
        assert metric(server, "crossroads_shadow_calls_total") == 0
    assert shadow_rows(server.store_path) == [] and [r["body"]["model"] for r in fake.requests] == ["A"] * 5


def test_a_share_shadows_about_that_share_of_requests(tmp_path, router_file):
    n, share = 300, 0.25
    with serving(tmp_path, router_file, {"share": share, "models": ["B"]}) as server:
        gateway, client = server.gateway, sdk(server)
        for _ in range(n):
            client.chat.completions.create(model="r", messages=CHEMISTRY)
        settle(server)
        shadowed = len(gateway.store.shadow_spend()) and gateway.store.shadow_spend()["B"]["calls"]
    assert abs(shadowed / n - share) <= 4 * np.sqrt(share * (1 - share) / n)


def test_the_client_has_its_answer_before_a_slow_shadow_model_answers(tmp_path, router_file, monkeypatch):
    delay_s = 1.0
    with FakeUpstream(answer=named_answer).serve() as fast, \
            FakeUpstream(answer=named_answer, default=slow(delay_s)).serve() as slow_fake:
        models = [model("A", fast.base_url), model("B", slow_fake.base_url), model("C", slow_fake.base_url)]
        with serving(tmp_path, router_file, {"share": 1.0}, http_client=httpx.AsyncClient(), models=models) as server:
            client = sdk(server)
            started = time.perf_counter()
            answer = client.chat.completions.create(model="r", messages=CHEMISTRY)
            answered_s = time.perf_counter() - started
            assert answer.choices[0].message.content == "answer of A" and answered_s < delay_s / 2
            assert server.gateway.shadow.in_flight == 2  # B and C still on their way
            started = time.perf_counter()
            streamed = list(client.chat.completions.create(model="r", messages=CHEMISTRY, stream=True))
            assert time.perf_counter() - started < delay_s / 2 and len(streamed) > 1
            server.gateway.shadow.max_in_flight = 4  # full: the next request is not shadowed, and that is counted
            client.chat.completions.create(model="r", messages=CHEMISTRY)
            assert metric(server, 'crossroads_shadow_skipped_total{reason="busy",route="r"}') == 2
            settle(server)
            assert metric(server, "crossroads_shadow_latency_seconds_count") == 4
        rows = shadow_rows(server.store_path)
    assert len(rows) == 4 and all(row["status"] == "ok" and row["latency_s"] >= delay_s for row in rows)


def test_a_failing_shadow_model_leaves_the_answer_and_the_models_health_alone(tmp_path, router_file):
    models = [model("A"), model("B", upstream="status-500"), model("C", upstream="malformed")]
    with serving(tmp_path, router_file, {"share": 1.0}, models=models, failures_before_cooldown=2) as server:
        for _ in range(4):
            raw = sdk(server).chat.completions.with_raw_response.create(model="r", messages=CHEMISTRY)
            assert raw.http_response.status_code == 200 and raw.parse().choices[0].message.content == "answer of A"
        settle(server)
        assert server.gateway.health.unavailable() == set()  # B failed 4 times, twice the cool-down limit
        assert httpx.get(server.url + "/health").json()["cooling_down"] == []
        assert metric(server, 'crossroads_shadow_calls_total{model="B",route="r",status="error"}') == 4
        assert metric(server, "crossroads_upstream_errors_total") == 0  # served traffic only
    rows = shadow_rows(server.store_path)
    assert {row["model"] for row in rows} == {"B", "C"} and len(rows) == 8
    assert all(row["status"] == "error" and row["cost_usd"] is None for row in rows)
    assert all("500" in row["error"] for row in rows if row["model"] == "B")


def test_the_daily_cap_stops_shadow_calls_and_a_restart_keeps_counting(tmp_path, router_file):
    # at 1 US$ per token a shadow call costs some US$ 13 (and is expected to cost 260: while B's call is in
    # flight, its expected cost counts against the cap and C's call does not start); the cap lets a few through
    cap = 25.0
    models = [model("A"), model("B", price=1e6), model("C", price=1e6)]
    shadow = {"share": 1.0, "max_usd_per_day": cap}
    for _ in range(2):  # the second server starts over the same store on the same day
        with serving(tmp_path, router_file, shadow, models=models) as server:
            for _ in range(6):
                sdk(server).chat.completions.create(model="r", messages=CHEMISTRY)
                settle(server)
            skipped = metric(server, 'crossroads_shadow_skipped_total{reason="cap",route="r"}')
            spent = server.gateway.shadow.spent_usd("r")
            report = build_report(server.gateway.store, replicates=20)
        rows = shadow_rows(server.store_path)
        costs = [row["cost_usd"] for row in rows]
        assert cap <= sum(costs) < cap + max(costs)  # the last call started below the cap
        assert spent == pytest.approx(sum(costs)) and 2 <= len(rows) < 12
    assert skipped == 12  # the restarted server read the day's spend: no call at all
    assert report["shadow_spend_usd"]["total"] == pytest.approx(sum(costs))
    assert report["shadow_spend_usd"]["models"] == pytest.approx(
        {m: sum(row["cost_usd"] for row in rows if row["model"] == m) for m in {row["model"] for row in rows}})
    assert report["shadow_calls"]["total"] == len(rows) and report["shadow_calls"]["errors"] == 0


def test_a_cap_of_zero_allows_no_shadow_call(tmp_path, router_file):
    with serving(tmp_path, router_file, {"share": 1.0, "max_usd_per_day": 0}) as server:
        sdk(server).chat.completions.create(model="r", messages=CHEMISTRY)
        settle(server)
        assert metric(server, 'crossroads_shadow_skipped_total{reason="cap",route="r"}') == 2
    assert shadow_rows(server.store_path) == []


def test_shutdown_cancels_shadow_calls_still_running_and_records_them(tmp_path, router_file, monkeypatch):
    monkeypatch.setattr(shadow_module, "SHUTDOWN_WAIT_S", 0.2)
    with FakeUpstream(answer=named_answer).serve() as fast, \
            FakeUpstream(default=slow(3)).serve() as stuck:
        models = [model("A", fast.base_url), model("B", stuck.base_url), model("C", fast.base_url)]
        started = time.perf_counter()
        with serving(tmp_path, router_file, {"share": 1.0}, http_client=httpx.AsyncClient(), models=models) as server:
            sdk(server).chat.completions.create(model="r", messages=CHEMISTRY)
            deadline = time.monotonic() + 5
            while server.gateway.shadow.in_flight > 1 and time.monotonic() < deadline:
                time.sleep(0.02)  # C answers at once, B hangs
        assert time.perf_counter() - started < 2.5  # B would answer after 3 s
    statuses = {row["model"]: (row["status"], row["error"]) for row in shadow_rows(server.store_path)}
    assert statuses["C"] == ("ok", None) and statuses["B"][0] == "cancelled" and "shut down" in statuses["B"][1]


# -- a real `crossroads serve` process on PostgreSQL -------------------------------------------------
def test_serve_process_stores_shadow_outcomes_in_postgresql(tmp_path, postgres_url):
    store = fresh_database(postgres_url)
    with FakeUpstream(answer=named_answer).serve() as fake:
        models = [model(name, fake.base_url) for name in ("A", "B", "C")]
        config = {"models": models, "store": store,
                  "routes": {"bandit": {"learner": "thompson", "shadow": {"share": 1.0, "models": ["B", "C"]}}}}
        with ServerProcess(config, tmp_path) as server:
            served = [sdk(server).chat.completions.create(model="bandit", messages=CHEMISTRY).model for _ in range(8)]
    with open_store(store) as opened:
        spend = opened.shadow_spend()
    expected = {m: sum(1 for s in served if s != m) for m in ("B", "C")}
    assert {m: entry["calls"] for m, entry in spend.items()} == expected
    assert all(entry["errors"] == 0 and entry["spend_usd"] > 0 for entry in spend.values())
