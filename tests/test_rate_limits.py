"""Rate limits that hold across replicas: token buckets shared through a real PostgreSQL store.

Two replicas are two in-process apps (each its own Gateway, store and uvicorn server on a
socket) on one PostgreSQL database; a burst of requests goes to both at once from threads.
Upstreams are the fake OpenAI-compatible upstream; ``/v1/models`` calls none, so a request
costs only its guards.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from postgres_server import fresh_database
from serve_helpers import ServerThread

from crossroads.errors import CrossroadsError
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.store import open_store
from crossroads.store.rate_limits import SharedBuckets
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

KEY = "the-right-key"


def config(store: str, **security) -> dict:
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0,
               "price_per_mtok_in": price} for name, price in (("big", 10.0), ("small", 0.1))]
    return {"models": models, "routes": {"auto": {"learner": "ucb", "objective": "quality=1,cost=0.5"}},
            "store": store, "security": security}


@pytest.fixture
def replicas():
    """replicas(store, n=2, **security) -> n servers of one config; all stopped at the end."""
    running = []

    def start(store: str, n: int = 2, **security):
        for _ in range(n):
            server = ServerThread(Gateway(parse_config(config(store, **security)),
                                          http_client=FakeUpstream().async_client())).__enter__()
            running.append(server)
        return running[-n:]

    yield start
    for server in running:
        server.__exit__(None, None, None)


def burst(servers, n: int, token=lambda i: None) -> tuple[list[httpx.Response], float]:
    """``n`` GET /v1/models spread over ``servers`` from 8 threads; the answers and the seconds it took."""
    clients = [httpx.Client(base_url=server.url, timeout=30) for server in servers]

    def one(i: int) -> httpx.Response:
        headers = {} if token(i) is None else {"authorization": f"Bearer {token(i)}"}
        return clients[i % len(clients)].get("/v1/models", headers=headers)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(n)))
    took_s = time.monotonic() - started
    for client in clients:
        client.close()
    return answers, took_s


def assert_limited(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert int(answer.headers["retry-after"]) >= 1


def test_a_burst_over_two_replicas_lets_through_one_burst_in_total(replicas, postgres_url, monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_KEYS", KEY)
    rate_per_s = 2.0
    servers = replicas(fresh_database(postgres_url), api_keys_env="CROSSROADS_TEST_KEYS", rate_limit_per_s=rate_per_s,
                       rate_burst=40)
    assert all(server.app.state.server.limits.shared for server in servers)  # the default on PostgreSQL
    answers, took_s = burst(servers, 200, token=lambda i: KEY)
    passed = sum(answer.status_code == 200 for answer in answers)
    per_replica = [sum(a.status_code == 200 for a in answers[i::2]) for i in range(2)]
    print(f"\n200 requests over 2 replicas in {took_s:.2f} s: {passed} let through {per_replica}")
    # Per replica buckets would let 80 through; one shared bucket lets 40 and what refilled meanwhile.
    assert 40 <= passed <= 40 + rate_per_s * took_s + 1
    assert all(n > 0 for n in per_replica)
    for answer in answers:
        if answer.status_code != 200:
            assert_limited(answer)


def test_without_keys_the_limit_is_per_address_and_a_new_bearer_per_request_does_not_bypass_it(replicas,
                                                                                               postgres_url):
    servers = replicas(fresh_database(postgres_url), rate_limit_per_s=1.0, rate_burst=10)
    answers, took_s = burst(servers, 100, token=lambda i: f"fresh-{uuid.uuid4().hex}")
    passed = sum(answer.status_code == 200 for answer in answers)
    print(f"\n100 requests, a new bearer each, over 2 replicas in {took_s:.2f} s: {passed} let through")
    assert 10 <= passed <= 10 + 1.0 * took_s + 1
    assert_limited(next(answer for answer in answers if answer.status_code != 200))


def test_wrong_keys_are_throttled_per_address_across_replicas_and_then_the_right_key_too(replicas, postgres_url,
                                                                                         monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_KEYS", KEY)
    servers = replicas(fresh_database(postgres_url), api_keys_env="CROSSROADS_TEST_KEYS", max_auth_failures=10,
                       auth_failure_window_s=60)
    answers, took_s = burst(servers, 300, token=lambda i: f"guess-{i}")
    statuses = [answer.status_code for answer in answers]
    print(f"\n300 wrong keys over 2 replicas in {took_s:.2f} s: {statuses.count(401)} got 401, "
          f"{statuses.count(429)} got 429")
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= 10 + 10 / 60 * took_s + 1  # each failure takes a token atomically
    first_refused = next(answer for answer in answers if answer.status_code == 429)
    assert_limited(first_refused)
    assert "wrong keys" in first_refused.json()["error"]["message"]
    for server in servers:  # the address is refused while locked out, even with the right key
        assert_limited(httpx.get(server.url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=10))


def test_the_right_key_is_not_counted_as_a_failure(replicas, postgres_url, monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_KEYS", KEY)
    servers = replicas(fresh_database(postgres_url), api_keys_env="CROSSROADS_TEST_KEYS", max_auth_failures=3)
    answers, _ = burst(servers, 30, token=lambda i: KEY)
    assert {answer.status_code for answer in answers} == {200}


def test_a_shared_bucket_refills_at_its_rate_by_the_database_clock(postgres_url):
    url = fresh_database(postgres_url)
    open_store(url).close()  # brings the schema up to date
    a, b = SharedBuckets(url), SharedBuckets(url)
    try:
        assert [a.take("test", 4.0, 3) for _ in range(2)] + [b.take("test", 4.0, 3)] == [0.0, 0.0, 0.0]
        wait_s = b.take("test", 4.0, 3)
        assert 0 < wait_s <= 0.25
        assert 0 < a.wait_s("test", 4.0, 3) <= 0.25  # a refused request took nothing
        time.sleep(wait_s + 0.05)
        assert a.take("test", 4.0, 3) == 0.0
        assert a.take("test", 4.0, 3) > 0
        started = time.perf_counter()
        for i in range(200):
            a.take(f"cost-{i % 10}", 1.0, 40)
        per_take_ms = (time.perf_counter() - started) / 200 * 1e3
        print(f"\none take on a local PostgreSQL: {per_take_ms:.2f} ms")
        assert per_take_ms < 50
    finally:
        a.close()
        b.close()


def test_sqlite_in_one_process_keeps_limits_in_the_store_when_asked(replicas, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_KEYS", KEY)
    store = tmp_path / "store.db"
    (memory,) = replicas(f"sqlite:///{tmp_path}/memory.db", n=1, rate_limit_per_s=0.5, rate_burst=5)
    assert not memory.app.state.server.limits.shared  # SQLite's default: in memory
    (server,) = replicas(f"sqlite:///{store}", n=1, api_keys_env="CROSSROADS_TEST_KEYS", rate_limit_per_s=0.5,
                         rate_burst=5, rate_limit_shared=True)
    assert server.app.state.server.limits.shared
    for limited in (memory, server):
        answers, _ = burst([limited], 8, token=lambda i: KEY)
        assert sorted(answer.status_code for answer in answers) == [200] * 5 + [429] * 3
    with sqlite3.connect(store) as db:
        buckets = [row[0] for row in db.execute("SELECT bucket FROM rate_limits")]
    assert len(buckets) == 1 and buckets[0].startswith("requests:key:sha256:") and KEY not in buckets[0]


@pytest.mark.parametrize("security, fragment", [
    ({"rate_limit_shared": "yes"}, "rate_limit_shared must be true or false"),
    ({"max_auth_failures": 0}, "max_auth_failures must be an integer >= 1"),
    ({"auth_failure_window_s": 0}, "auth_failure_window_s must be a number > 0"),
    ({"rate_limit_per_s": -1}, "rate_limit_per_s must be a number > 0"),
    ({"rate_burst": 0.5}, "rate_burst must be an integer >= 1"),
])
def test_limit_settings_are_checked(security, fragment, tmp_path):
    with pytest.raises(CrossroadsError, match=fragment):
        parse_config(config(f"sqlite:///{tmp_path}/store.db", **security))


def test_limits_fall_back_to_memory_when_the_store_fails(replicas, tmp_path, monkeypatch):
    def down(self, *args):
        raise ConnectionError("store down")  # fault injection: the database stops answering

    (server,) = replicas(f"sqlite:///{tmp_path}/store.db", n=1, rate_limit_per_s=0.5, rate_burst=3,
                         rate_limit_shared=True)
    monkeypatch.setattr(SharedBuckets, "take", down)
    answers, _ = burst([server], 5)
    assert sorted(answer.status_code for answer in answers) == [200] * 3 + [429] * 2
