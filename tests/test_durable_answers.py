"""An answer goes out only once its decision and outcome are written (issue 14): kill -9 loses nothing answered.

With ``ack_after_write`` (the default) the chat, stream and ``/v1/route`` answers wait for the
store's writer to commit their rows; ``false`` answers at once and writes behind.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import ServerProcess, ServerThread

from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.store import Store, open_store
from crossroads.store.sql import SqliteDatabase
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

HELLO = [{"role": "user", "content": "hello there"}]
ROUTES = {"auto": {"learner": "thompson:seed=0", "objective": "quality=1,cost=0.5"}}


def models(base_url: str) -> list[dict]:
    return [{"name": name, "base_url": base_url, "upstream_model": "echo", "max_retries": 0,
             "price_per_mtok_in": price} for name, price in (("big", 10.0), ("small", 0.1))]


class HeldWrites(SqliteDatabase):
    """SQLite whose commits of new rows wait until ``release`` is set: a writer that is slow to commit."""

    def __init__(self, path: str):
        super().__init__(path)
        self.release = threading.Event()

    def _executemany(self, sql, rows):
        self.release.wait(timeout=30)
        return super()._executemany(sql, rows)


@pytest.mark.parametrize("ack_after_write", [True, False])
def test_an_answer_waits_for_its_rows_to_be_committed(tmp_path, ack_after_write):
    db = HeldWrites(str(tmp_path / "store.db"))
    config = parse_config({"models": models(FAKE_BASE_URL), "routes": ROUTES, "ack_after_write": ack_after_write,
                           "store": f"sqlite:///{tmp_path}/store.db"})
    gateway = Gateway(config, store=Store(db), http_client=FakeUpstream().async_client())
    with ServerThread(gateway) as server, ThreadPoolExecutor(3) as pool:
        sent = [pool.submit(httpx.post, server.url + path, json=body, timeout=30) for path, body in (
            ("/v1/chat/completions", {"model": "auto", "messages": HELLO}),
            ("/v1/chat/completions", {"model": "auto", "messages": HELLO, "stream": True}),
            ("/v1/route", {"model": "auto", "messages": HELLO}))]
        threading.Event().wait(1.0)  # time enough for an answer that does not wait
        answered_before_commit = [future.done() for future in sent]
        db.release.set()
        responses = [future.result() for future in sent]
    assert all(response.status_code == 200 for response in responses)
    assert answered_before_commit == [not ack_after_write] * 3
    assert responses[1].text.rstrip().endswith("data: [DONE]")


def test_kill_9_after_the_answers_loses_none_of_them(tmp_path):
    store_url = f"sqlite:///{tmp_path}/store.db"
    with FakeUpstream().serve() as upstream:
        config = {"models": models(upstream.base_url), "routes": ROUTES, "store": store_url,
                  "security": {"rate_limit_per_s": None}}
        with ServerProcess(config, tmp_path) as server:
            def one(i: int) -> str:
                body = {"model": "auto", "messages": HELLO, "stream": i % 3 == 0}
                response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
                assert response.status_code == 200
                if body["stream"]:
                    assert response.text.rstrip().endswith("data: [DONE]")
                return response.headers["x-crossroads-decision-id"]

            with ThreadPoolExecutor(8) as pool:
                answered = list(pool.map(one, range(120)))
            server.kill()  # SIGKILL at once: nothing queued in memory gets written after this
    with open_store(store_url) as store:
        decisions = [store.decision(decision_id, flush=False) for decision_id in answered]
    assert sum(d is None for d in decisions) == 0
    assert sum(d["outcome"] is None for d in decisions) == 0
    assert all(d["outcome"]["status"] == "ok" for d in decisions)


def test_ack_after_write_must_be_a_boolean():
    with pytest.raises(Exception, match="ack_after_write must be true or false"):
        parse_config({"models": models(FAKE_BASE_URL), "ack_after_write": "yes"})


def test_a_stream_answer_carries_its_outcome_by_done(tmp_path):
    """The stored outcome of a stream read to [DONE] is there when [DONE] arrives, with the streamed text's cost."""
    config = parse_config({"models": models(FAKE_BASE_URL), "routes": ROUTES, "store": f"sqlite:///{tmp_path}/s.db"})
    gateway = Gateway(config, http_client=FakeUpstream().async_client())
    with ServerThread(gateway) as server:
        response = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                              json={"model": "auto", "messages": HELLO, "stream": True})
        decision_id = response.headers["x-crossroads-decision-id"]
        events = [json.loads(line[6:]) for line in response.text.splitlines()
                  if line.startswith("data: {")]
        outcome = gateway.store.decision(decision_id, flush=False)["outcome"]
    assert events and outcome is not None and outcome["status"] == "ok"
