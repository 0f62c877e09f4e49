"""Real `crossroads serve` processes: replicas sharing PostgreSQL, and a server killed mid-feedback.

The servers are child processes on loopback; the store is a real PostgreSQL server
started for the test session (or a SQLite file); upstreams are the fake OpenAI-compatible
server, in this process.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from postgres_server import fresh_database
from serve_helpers import ServerProcess

from crossroads.store import open_store
from crossroads.upstream.fake import FakeUpstream

ADMIN = {"authorization": "Bearer admin-key"}


@pytest.fixture(scope="module")
def upstream():
    """The fake upstream on a socket: the replicas are other processes."""
    with FakeUpstream().serve() as server:
        yield server


def config(upstream, store: str) -> dict:
    models = [{"name": name, "base_url": upstream.base_url, "upstream_model": "echo", "max_retries": 0,
               "price_per_mtok_in": price} for name, price in (("big", 10.0), ("small", 0.1))]
    return {"models": models, "routes": {"auto": {"learner": "ucb", "objective": "quality=1,cost=0.5"}},
            "store": store, "sync_interval_s": 0.1, "snapshot_every": 5,
            "security": {"admin_key_env": "CROSSROADS_TEST_ADMIN"}}


def learner_state(server: ServerProcess) -> dict:
    return httpx.get(server.url + "/admin/learners", headers=ADMIN, timeout=5).json()["auto"]["keys"]["*"]


def route(server: ServerProcess) -> str:
    return httpx.post(server.url + "/v1/route", json={"model": "auto", "prompt": "hi"}, timeout=5).json()["decision_id"]


def wait_for(check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_two_replicas_learn_from_each_others_feedback(upstream, postgres_url, tmp_path):
    store = fresh_database(postgres_url)
    env = {"CROSSROADS_TEST_ADMIN": "admin-key"}
    with ServerProcess(config(upstream, store), tmp_path, env) as a, ServerProcess(config(upstream, store), tmp_path, env) as b:
        decisions = [route(b) for _ in range(6)]
        for decision_id in decisions:  # feedback for B's decisions, sent to A
            response = httpx.post(a.url + "/v1/feedback", json={"decision_id": decision_id, "reward": 1.0}, timeout=5)
            assert response.status_code == 200, response.text
        wait_for(lambda: learner_state(b)["updates"] == 6)
        wait_for(lambda: learner_state(a)["updates"] == 6)
        assert learner_state(a)["arms"] == learner_state(b)["arms"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_killed_server_loses_no_acknowledged_feedback_and_resumes_learning(upstream, postgres_url, tmp_path, backend):
    store = f"sqlite:///{tmp_path}/store.db" if backend == "sqlite" else fresh_database(postgres_url)
    env = {"CROSSROADS_TEST_ADMIN": "admin-key"}
    acknowledged: list[int] = []
    with ServerProcess(config(upstream, store), tmp_path, env) as server:
        decisions = [route(server) for _ in range(200)]
        stop = threading.Event()

        def send():
            for decision_id in decisions:
                if stop.is_set():
                    return
                try:
                    response = httpx.post(server.url + "/v1/feedback",
                                          json={"decision_id": decision_id, "reward": 0.5}, timeout=5)
                except httpx.HTTPError:
                    return  # the server died under this request: it was never acknowledged
                assert response.status_code == 200, response.text
                acknowledged.append(response.json()["feedback_id"])

        sender = threading.Thread(target=send)
        sender.start()
        wait_for(lambda: len(acknowledged) >= 20)
        server.kill()  # SIGKILL: no shutdown hook runs
        stop.set()
        sender.join(timeout=10)
    assert 20 <= len(acknowledged) < 200
    with open_store(store) as reopened:
        rows, _ = reopened.feedback_since(0, limit=1000)
    assert {row["seq"] for row in rows} >= set(acknowledged)

    with ServerProcess(config(upstream, store), tmp_path, env) as restarted:
        assert learner_state(restarted)["updates"] == len(rows)  # last snapshot + the feedback logged after it
