"""The store's contract, run on a SQLite file and on a real PostgreSQL server."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing

import numpy as np
import pytest
from postgres_server import fresh_database

from crossroads.errors import CrossroadsError
from crossroads.store import (
    GAP_TIMEOUT_S,
    MIGRATIONS,
    UnknownDecisionError,
    open_store,
)
from crossroads.store import records as store_module


def raw(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run SQL on the store's database through a connection of our own (committed at once)."""
    if url.startswith("sqlite://"):
        with closing(sqlite3.connect(url[len("sqlite://") :])) as conn, conn:
            return conn.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def decide(store, decision_id: str, model: str = "small", **overrides) -> None:
    fields = {"route": "default", "model": model, "learner_key": "default", "candidates": ["small", "large"],
              "probability": 0.5, "scores": {"small": 0.4, "large": 0.6}, "context": None, "created_s": 1000.0}
    store.record_decision(decision_id, **(fields | overrides))


def answer(store, decision_id: str, model: str = "small", **overrides) -> None:
    fields = {"model": model, "status": "ok", "cost_usd": 0.002, "latency_s": 1.5, "ttft_s": 0.25,
              "tokens_in": 120, "tokens_out": 40, "fallbacks": 0}
    store.record_outcome(decision_id, **(fields | overrides))


# -- decisions and outcomes ------------------------------------------------------------------------
def test_decision_and_outcome_round_trip(store, store_url):
    context = np.array([0.5, -1.25, 0.1, 3.0])
    decide(store, "d1", context=context, scores={"small": np.float64(0.4), "large": 0.6}, prompt="What is 2+2?",
           client="ab12")
    answer(store, "d1", model="large", status="fallback_ok", fallbacks=1, error="small: 500", response="4")
    got = store.decision("d1")
    outcome = got.pop("outcome")
    context_back = got.pop("context")
    assert got == {"decision_id": "d1", "route": "default", "model": "small", "learner_key": "default",
                   "candidates": ["small", "large"], "probability": 0.5, "scores": {"small": 0.4, "large": 0.6},
                   "created_s": 1000.0, "prompt": "What is 2+2?", "category": None, "client": "ab12",
                   "key_id": None, "team": None}
    assert context_back.dtype == np.float64
    np.testing.assert_array_equal(context_back, context.astype(np.float32).astype(np.float64))
    assert raw(store_url, "SELECT length(context) FROM decisions WHERE decision_id = 'd1'") == [(4 * 4,)]
    assert outcome.pop("created_s") > 0
    assert outcome == {"model": "large", "status": "fallback_ok", "cost_usd": 0.002, "latency_s": 1.5,
                       "ttft_s": 0.25, "tokens_in": 120, "tokens_out": 40, "fallbacks": 1, "error": "small: 500",
                       "response": "4", "calls": None}


def test_a_cascades_calls_round_trip_with_its_outcome(store):
    decide(store, "d1")
    calls = [{"model": "small", "status": "ok", "cost_usd": 0.001, "trust": np.float64(0.4)},
             {"model": "large", "status": "ok", "cost_usd": 0.01, "trust": 0.9}]
    answer(store, "d1", model="large", cost_usd=0.011, calls=calls)
    outcome = store.decision("d1")["outcome"]
    assert outcome["calls"] == [{**calls[0], "trust": 0.4}, calls[1]]
    assert outcome["cost_usd"] == 0.011


def test_prompt_and_context_stay_absent_unless_given(store):
    decide(store, "private", scores=None, probability=None)
    got = store.decision("private")
    assert got["prompt"] is None and got["context"] is None and got["scores"] is None and got["probability"] is None
    assert got["outcome"] is None
    assert store.decision("never-recorded") is None


def test_second_outcome_replaces_the_first(store):
    decide(store, "d1")
    answer(store, "d1", status="error", error="timeout")
    answer(store, "d1", model="large", fallbacks=1)
    assert store.decision("d1")["outcome"]["model"] == "large"
    assert store.decision("d1")["outcome"]["error"] is None
    assert store.counts()["outcomes"] == 1


def test_eight_threads_recording_at_once_all_land(store):
    def record(thread: int) -> None:
        for i in range(250):
            decide(store, f"t{thread}-{i}", context=np.full(8, thread, dtype=np.float64))
            answer(store, f"t{thread}-{i}", tokens_out=i)

    threads = [threading.Thread(target=record, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.counts() | {"feedback": 0, "learner_state": 0} == {
        "decisions": 2000, "outcomes": 2000, "shadow_outcomes": 0, "feedback": 0, "learner_state": 0, "pool": 0,
        "rate_limits": 0}
    assert store.decision("t7-249")["outcome"]["tokens_out"] == 249
    np.testing.assert_array_equal(store.decision("t3-0")["context"], np.full(8, 3.0))


def test_a_bad_row_is_dropped_and_logged_without_losing_its_batch(store, caplog):
    decide(store, "dup")
    store.flush()
    with caplog.at_level(logging.ERROR, logger="crossroads.store"):
        decide(store, "before")
        decide(store, "dup", model="large")  # a decision written twice (a replayed spool) keeps the first
        decide(store, "bad", prompt="\ud800")  # no database can encode a lone surrogate
        decide(store, "after")
        store.flush()
    assert store.counts()["decisions"] == 3
    assert store.decision("after") is not None and store.decision("before") is not None
    assert store.decision("dup")["model"] == "small"
    assert "dropped 1 of" in caplog.text


# -- feedback -------------------------------------------------------------------------------------
def test_feedback_right_after_the_decision_needs_no_flush(store):
    decide(store, "fresh")
    seq = store.add_feedback("fresh", reward=1.0, quality=None, payload=None, created_s=2000.0)
    rows, _ = store.feedback_since(0)
    assert [row["seq"] for row in rows] == [seq]


def test_feedback_on_an_unknown_decision_is_refused(store):
    with pytest.raises(UnknownDecisionError, match="'nope'") as raised:
        store.add_feedback("nope", reward=1.0, quality=None, payload=None, created_s=1.0)
    assert isinstance(raised.value, CrossroadsError)
    assert store.counts()["feedback"] == 0


def test_feedback_since_pages_in_order_with_the_decisions_fields(store):
    decide(store, "a", context=np.array([1.0, 2.0]), scores={"prior": {"small": 0.25, "large": 0.75}})
    decide(store, "b", model="small", learner_key=None)
    answer(store, "b", model="large", fallbacks=1)  # the fallback answered, so feedback is about it
    seqs = [
        store.add_feedback("a", reward=1.0, quality=0.9, payload={"thumbs": "up"}, created_s=10.0),
        store.add_feedback("b", reward=0.0, quality=None, payload=None, created_s=11.0),
        store.add_feedback("a", reward=0.5, quality=None, payload={"thumbs": "meh"}, created_s=12.0),
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3

    first, cursor = store.feedback_since(0, limit=2)
    rest, cursor = store.feedback_since(cursor, limit=2)
    assert [row["seq"] for row in first + rest] == seqs
    assert cursor == seqs[-1]
    assert store.feedback_since(cursor) == ([], cursor)

    a, b, again = first + rest
    np.testing.assert_array_equal(a.pop("context"), [1.0, 2.0])
    assert a == {"seq": seqs[0], "decision_id": "a", "reward": 1.0, "quality": 0.9, "payload": {"thumbs": "up"},
                 "created_s": 10.0, "route": "default", "model": "small", "learner_key": "default",
                 "prior": {"small": 0.25, "large": 0.75}}
    assert (b["model"], b["learner_key"], b["context"], b["payload"], b["prior"]) == ("large", None, None, None, None)
    assert again["decision_id"] == "a" and again["payload"] == {"thumbs": "meh"}


def test_a_decision_that_takes_one_feedback_refuses_a_second_even_from_two_threads_at_once(store):
    from concurrent.futures import ThreadPoolExecutor

    from crossroads.store import DuplicateFeedbackError

    decide(store, "once")

    def send(i: int):
        try:
            return store.add_feedback("once", reward=i / 10, quality=None, payload=None, created_s=1.0, once=True)
        except DuplicateFeedbackError as error:
            return error

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    stored = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, DuplicateFeedbackError)]
    assert len(stored) == 1 and len(refused) == 7 and {e.feedback_id for e in refused} == set(stored)
    rows, _ = store.feedback_since(0)
    assert [row["decision_id"] for row in rows].count("once") == 1


def test_feedback_is_found_by_its_idempotency_key_which_is_unique(store):
    decide(store, "keyed")
    decide(store, "other")
    seq = store.add_feedback("keyed", reward=0.5, quality=None, payload=None, created_s=1.0, idempotency_key="k1")
    assert store.feedback_with_key("k1") == {"seq": seq, "decision_id": "keyed", "reward": 0.5, "quality": None}
    assert store.feedback_with_key("k2") is None
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        store.add_feedback("other", reward=0.5, quality=None, payload=None, created_s=1.0, idempotency_key="k1")
    assert store.counts()["feedback"] == 1


def test_looking_up_an_unknown_decision_does_not_wait_for_the_writer(store):
    """A flush per lookup made 200 lookups of bogus ids take over 1 s (issue 14, item 5)."""
    decide(store, "queued")
    flushes = []
    flush = store.flush
    store.flush = lambda: (flushes.append(1), flush())[1]
    assert store.decision("unknown") is None and flushes == []
    assert store.decision("queued") is not None  # its rows may still be queued: then it waits for them
    store.flush = flush


def test_feedback_since_holds_rows_back_behind_a_gap_until_it_fills_or_times_out(store, store_url):
    decide(store, "d")
    first = store.add_feedback("d", reward=1.0, quality=None, payload=None, created_s=1.0)
    insert = "INSERT INTO feedback (seq, decision_id, reward, created_s) VALUES (?, 'd', 0.0, 2.0)"
    raw(store_url, insert, (first + 2,))  # first + 1 is taken but not yet visible

    rows, cursor = store.feedback_since(0)
    assert ([row["seq"] for row in rows], cursor) == ([first], first)

    raw(store_url, insert, (first + 1,))  # ... and now it is committed
    rows, cursor = store.feedback_since(cursor)
    assert ([row["seq"] for row in rows], cursor) == ([first + 1, first + 2], first + 2)

    raw(store_url, insert, (first + 4,))  # first + 3 never arrives
    assert store.feedback_since(cursor) == ([], cursor)
    raw(store_url, "UPDATE feedback SET stored_s = stored_s - ? WHERE seq = ?", (2 * GAP_TIMEOUT_S, first + 4))
    rows, cursor = store.feedback_since(cursor)
    assert ([row["seq"] for row in rows], cursor) == ([first + 4], first + 4)


def test_postgres_feedback_committed_out_of_seq_order_is_not_missed(postgres_url):
    import psycopg

    url = fresh_database(postgres_url)
    insert = "INSERT INTO feedback (decision_id, reward, created_s) VALUES ('d', 0.0, 1.0) RETURNING seq"
    with open_store(url) as store, psycopg.connect(url) as other:
        decide(store, "d")
        cursor = store.add_feedback("d", reward=1.0, quality=None, payload=None, created_s=1.0)

        slow = other.execute(insert).fetchone()[0]  # takes a seq, then commits late
        fast = store.add_feedback("d", reward=1.0, quality=None, payload=None, created_s=1.0)
        assert fast > slow
        assert store.feedback_since(cursor) == ([], cursor)
        other.commit()
        rows, cursor = store.feedback_since(cursor)
        assert ([row["seq"] for row in rows], cursor) == ([slow, fast], fast)

        other.execute(insert)  # takes a seq, then rolls back
        after = store.add_feedback("d", reward=1.0, quality=None, payload=None, created_s=1.0)
        other.rollback()
        assert store.feedback_since(cursor) == ([], cursor)
        raw(url, "UPDATE feedback SET stored_s = stored_s - ? WHERE seq = ?", (2 * GAP_TIMEOUT_S, after))
        rows, cursor = store.feedback_since(cursor)
        assert ([row["seq"] for row in rows], cursor) == ([after], after)


def test_two_stores_on_one_database_see_each_others_feedback(store, store_url):
    with open_store(store_url) as other:
        decide(store, "mine")
        decide(other, "theirs")
        store.flush()
        other.flush()
        seqs = {
            store.add_feedback("theirs", reward=1.0, quality=None, payload=None, created_s=1.0),
            other.add_feedback("mine", reward=0.0, quality=None, payload=None, created_s=2.0),
        }
        for reader in (store, other):
            rows, _ = reader.feedback_since(0)
            assert {(row["seq"], row["decision_id"]) for row in rows} == {
                (min(seqs), "theirs"), (max(seqs), "mine")}


WRITER = """
import sys
from crossroads.store import open_store

store = open_store(sys.argv[1])
store.record_decision("d", route="r", model="m", learner_key=None, candidates=["m"], probability=None,
                      scores=None, context=None, created_s=0.0)
store.flush()
for i in range(10_000_000):
    print(store.add_feedback("d", reward=1.0, quality=None, payload={"i": i}, created_s=float(i)), flush=True)
"""


def test_acknowledged_feedback_survives_sigkill(store_url):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, store_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        printed = [proc.stdout.readline() for _ in range(50)]
        assert printed[-1], f"the writer died early: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        printed += proc.stdout.read().splitlines(keepends=True)
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL  # killed mid-way, not finished
    acknowledged = [int(line) for line in printed if line.endswith("\n")]  # a cut-off last line was not
    with open_store(store_url) as reopened:
        rows, _ = reopened.feedback_since(0, limit=10_000_000)
    stored = {row["seq"] for row in rows}
    assert len(acknowledged) >= 50
    assert set(acknowledged) <= stored


# -- learner state --------------------------------------------------------------------------------
def test_learner_state_round_trip_and_replace(store):
    assert store.load_learner_state("default") is None
    state = {"arms": {"small": {"n": 3, "mean": 0.25}}, "weights": [0.5, -1.0]}
    store.save_learner_state("default", state, cursor=7)
    assert store.load_learner_state("default") == (state, 7)
    store.save_learner_state("default", {"arms": {}}, cursor=9)
    assert store.load_learner_state("default") == ({"arms": {}}, 9)
    assert store.counts()["learner_state"] == 1


# -- migrations -----------------------------------------------------------------------------------
def test_a_new_store_has_the_latest_schema_and_reopening_applies_nothing(store, store_url):
    assert store.schema_version == len(MIGRATIONS)
    applied = raw(store_url, "SELECT version, applied_s FROM schema_migrations ORDER BY version")
    assert [version for version, _ in applied] == list(range(1, len(MIGRATIONS) + 1))
    decide(store, "kept")
    store.close()
    with open_store(store_url) as reopened:
        assert reopened.schema_version == len(MIGRATIONS)
        assert reopened.decision("kept") is not None
    assert raw(store_url, "SELECT version, applied_s FROM schema_migrations ORDER BY version") == applied


def test_a_new_migration_is_applied_once_to_an_existing_store(store, store_url, monkeypatch):
    decide(store, "kept")
    store.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, ["CREATE TABLE extra (x INTEGER)"]])
    for _ in range(2):
        with open_store(store_url) as reopened:
            assert reopened.schema_version == len(MIGRATIONS) + 1
            assert reopened.decision("kept") is not None
    assert raw(store_url, "SELECT COUNT(*) FROM schema_migrations") == [(len(MIGRATIONS) + 1,)]
    assert raw(store_url, "SELECT COUNT(*) FROM extra") == [(0,)]


def test_a_failing_migration_changes_nothing(store, store_url, monkeypatch):
    store.close()
    broken = ["CREATE TABLE half_done (x INTEGER)", "CREATE TABLE half_done (x INTEGER)"]
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(Exception, match="half_done"):
        open_store(store_url)
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    with open_store(store_url) as reopened:
        assert reopened.schema_version == len(MIGRATIONS)
    assert raw(store_url, "SELECT COUNT(*) FROM schema_migrations") == [(len(MIGRATIONS),)]
    with pytest.raises(Exception, match="half_done"):
        raw(store_url, "SELECT * FROM half_done")


def test_a_store_from_a_newer_crossroads_is_refused(store, store_url):
    store.close()
    raw(store_url, "INSERT INTO schema_migrations (version, applied_s) VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(CrossroadsError, match="created by a newer crossroads; upgrade"):
        open_store(store_url)


def test_processes_opening_a_new_store_at_once_migrate_it_once(store_url):
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_and_close() -> None:
        start.wait()
        try:
            open_store(store_url).close()
        except BaseException as e:  # noqa: BLE001 (reported by the assertion below)
            errors.append(e)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert raw(store_url, "SELECT COUNT(*) FROM schema_migrations") == [(len(MIGRATIONS),)]


# -- opening --------------------------------------------------------------------------------------
def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.db"
    garbage = np.random.default_rng(0).bytes(8192)
    path.write_bytes(garbage)
    with pytest.raises(CrossroadsError, match="notes.db is not a SQLite database"):
        open_store(f"sqlite://{path}")
    assert path.read_bytes() == garbage
    assert [p.name for p in tmp_path.iterdir()] == ["notes.db"]


@pytest.mark.parametrize("url", ["mysql://db/x", "store.txt", "sqlite://", "", "postgresql"])
def test_an_unknown_url_lists_the_accepted_forms(url):
    with pytest.raises(CrossroadsError, match=r"unknown store url.*sqlite:///.*postgresql://"):
        open_store(url)


def test_plain_paths_and_memory_open_sqlite(tmp_path):
    for url in (str(tmp_path / "sub" / "plain.sqlite"), "sqlite://:memory:"):
        with open_store(url) as store:
            decide(store, "d")
            assert store.decision("d")["model"] == "small"
    assert (tmp_path / "sub" / "plain.sqlite").exists()


def test_postgres_without_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(CrossroadsError, match=r"pip install 'crossroads\[postgres\]'"):
        open_store("postgresql://nobody@127.0.0.1:1/nothing")


def test_close_writes_the_queue_is_idempotent_and_then_refuses_records(store_url):
    store = open_store(store_url)
    for i in range(100):
        decide(store, f"d{i}")
    store.close()
    store.close()
    with pytest.raises(CrossroadsError, match="closed"):
        decide(store, "late")
    with open_store(store_url) as reopened:
        assert reopened.counts()["decisions"] == 100
