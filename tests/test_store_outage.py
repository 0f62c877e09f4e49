"""The store down or full (issue 14, item 7): no acknowledged decision or outcome is lost.

Rows the writer cannot commit go to the spool on disk and are written when the store is back;
feedback meanwhile gets 503 with Retry-After (never 400); a full spool refuses chats with 503.
The real app, the real PostgreSQL (stopped and restarted) and real SQLite, whose full disk is
injected at one seam (a database whose writes raise SQLite's own "database or disk is full").
"""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest
from postgres_server import PostgresServer
from serve_helpers import ServerThread

from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.store import Store, open_store
from crossroads.store.spool import Spool
from crossroads.store.sql import SqliteDatabase
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

HELLO = [{"role": "user", "content": "hello there"}]


class FullDisk(SqliteDatabase):
    """SQLite whose writes fail as on a full disk while ``full`` is set (reads still work, as they do)."""

    full = False

    def _refuse(self, sql: str) -> None:
        if self.full and not sql.lstrip().upper().startswith("SELECT"):
            raise sqlite3.OperationalError("database or disk is full")

    def _execute(self, sql, params):
        self._refuse(sql)
        return super()._execute(sql, params)

    def _executemany(self, sql, rows):
        self._refuse(sql)
        return super()._executemany(sql, rows)

    def insert_returning_seq(self, sql, params):
        self._refuse(sql)
        return super().insert_returning_seq(sql, params)


def config(store_url: str):
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "max_retries": 0,
               "price_per_mtok_in": price} for name, price in (("big", 10.0), ("small", 0.1))]
    return parse_config({"models": models, "store": store_url, "sync_interval_s": 0.2,
                         "routes": {"auto": {"learner": "thompson:seed=0", "objective": "quality=1,cost=0.5"}}})


def chat(server) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json={"model": "auto", "messages": HELLO}, timeout=10)


def feedback(server, decision_id: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/feedback", json={"decision_id": decision_id, "reward": 1.0}, timeout=10)


def wait_for(check, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "store_unavailable"


def assert_all_recorded(store: Store, decision_ids: list[str]) -> None:
    missing = [d for d in decision_ids if (store.decision(d) or {}).get("outcome") is None]
    assert missing == [], f"{len(missing)} of {len(decision_ids)} acknowledged decisions or outcomes lost"


def test_sqlite_full_disk_spools_decisions_and_writes_them_when_space_is_back(tmp_path):
    db = FullDisk(str(tmp_path / "store.db"))
    store = Store(db, Spool(tmp_path / "spool", 10_000_000))
    with ServerThread(Gateway(config(f"sqlite:///{tmp_path}/store.db"), store=store,
                              http_client=FakeUpstream().async_client())) as server:
        before = chat(server).headers["x-crossroads-decision-id"]
        store.flush()
        db.full = True
        during = []
        for _ in range(10):
            response = chat(server)
            assert response.status_code == 200, response.text  # the answer goes out; its rows wait in the spool
            during.append(response.headers["x-crossroads-decision-id"])
        store.flush()
        assert store.spooled_bytes() > 0 and all(store.decision(d) is None for d in during)
        assert_unavailable(feedback(server, before))  # could not be stored: retry, not 400
        assert_unavailable(feedback(server, during[0]))  # its decision waits in the spool: not 404
        assert httpx.get(server.url + "/health", timeout=10).status_code == 503
        db.full = False
        wait_for(lambda: store.spooled_bytes() == 0)
        assert_all_recorded(store, [before, *during])
        assert feedback(server, during[0]).status_code == 200


def test_a_full_spool_refuses_chats_with_503_and_retry_after(tmp_path):
    db = FullDisk(str(tmp_path / "store.db"))
    store = Store(db, Spool(tmp_path / "spool", 1))  # full with its first row
    with ServerThread(Gateway(config(f"sqlite:///{tmp_path}/store.db"), store=store,
                              http_client=FakeUpstream().async_client())) as server:
        db.full = True
        accepted = chat(server)
        assert accepted.status_code == 200
        store.flush()
        assert store.spool_full()
        assert_unavailable(chat(server))
        db.full = False
        wait_for(lambda: not store.spool_full())
        assert chat(server).status_code == 200
        assert_all_recorded(store, [accepted.headers["x-crossroads-decision-id"]])


def test_the_spool_outlives_the_process_and_is_replayed_at_the_next_start(tmp_path):
    db = FullDisk(str(tmp_path / "store.db"))
    store = Store(db, Spool(tmp_path / "spool", 10_000_000))
    db.full = True
    store.record_decision("dec_1", route="auto", model="small", learner_key="*", candidates=["small", "big"],
                          probability=0.5, scores=None, context=None, created_s=1.0)
    store.close()  # the server stops with the store still full
    assert (tmp_path / "spool").stat().st_size > 0
    with open_store(f"sqlite:///{tmp_path}/store.db", Spool(tmp_path / "spool", 10_000_000)) as again:
        wait_for(lambda: again.spooled_bytes() == 0)
        assert again.decision("dec_1")["model"] == "small"


def test_postgres_outage_keeps_every_acknowledged_decision_and_answers_feedback_503(tmp_path):
    reason = PostgresServer.available()
    if reason is not None:
        pytest.skip(reason)
    with PostgresServer() as postgres:
        store = open_store(postgres.url, Spool(tmp_path / "spool", 10_000_000))
        with ServerThread(Gateway(config(postgres.url), store=store,
                                  http_client=FakeUpstream().async_client())) as server:
            acknowledged = [chat(server).headers["x-crossroads-decision-id"] for _ in range(5)]
            store.flush()
            postgres.stop()
            try:
                for _ in range(20):
                    response = chat(server)
                    assert response.status_code == 200, response.text
                    acknowledged.append(response.headers["x-crossroads-decision-id"])
                store.flush()
                assert store.spooled_bytes() > 0
                assert_unavailable(feedback(server, acknowledged[0]))
                grown = store.spooled_bytes()
                acknowledged.append(chat(server).headers["x-crossroads-decision-id"])
                store.flush()
                assert store.spooled_bytes() > grown
            finally:
                postgres.restart()
            wait_for(lambda: store.spooled_bytes() == 0)
            wait_for(lambda: feedback(server, acknowledged[0]).status_code == 200)  # a stale connection may 503 once
            assert_all_recorded(store, acknowledged)
            assert store.counts()["decisions"] == len(acknowledged)


def test_a_decision_spooled_by_an_older_schema_is_written_after_an_upgrade(tmp_path):
    """Rows spooled before an upgrade added decision columns (schema 4 had 12) are replayed, not dropped."""
    old_row = ["dec_old", "auto", "small", "*", '["small", "big"]', 0.5, None, None, 1.0, None, None, None]
    Spool(tmp_path / "spool", 10_000_000).append([("decision", tuple(old_row))])
    with open_store(f"sqlite:///{tmp_path}/store.db", Spool(tmp_path / "spool", 10_000_000)) as store:
        wait_for(lambda: store.spooled_bytes() == 0)
        decision = store.decision("dec_old")
    assert decision is not None and decision["model"] == "small" and decision["candidates"] == ["small", "big"]
