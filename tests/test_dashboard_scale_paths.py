"""What keeps the dashboard usable on a store of a million decisions (issue 15): a report is built through a
connection of its own, so writes and the readiness probe never wait for it, and once per window however many ask;
the decision log pages by cursor (every decision once, in order, ties included) and caps a search's count.

The slow report is a seam: ``build_report`` replaced by one that takes the connection it was given (a stream of the
store held open, as a real report holds it for 20 s at a million decisions) and waits on an event."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from logged_traffic import PRICES, draw, fill
from serve_helpers import ServerThread

from crossroads.errors import CrossroadsError
from crossroads.evaluate.report import build_report
from crossroads.serve import dashboard
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import READY_STORE_TIMEOUT_S, Gateway
from crossroads.store import decision_log, open_store
from crossroads.store.decision_log import search_decisions
from crossroads.upstream.fake import FAKE_BASE_URL

ADMIN, ADMIN_ENV = "scale-paths-admin", "CROSSROADS_SCALE_PATHS_TEST_ADMIN"
#: Long enough for a request sent before it to be waiting on the report being built, short for the suite.
SETTLE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real app on a SQLite file holding 300 logged decisions."""
    os.environ[ADMIN_ENV] = ADMIN
    models = [{"name": name, "base_url": FAKE_BASE_URL, "price_per_mtok_in": price_in,
               "price_per_mtok_out": price_out} for name, (price_in, price_out) in PRICES.items()]
    config = parse_config({"models": models, "routes": {"auto": {"learner": "thompson"}},
                           "store": f"sqlite:///{tmp_path_factory.mktemp('scale')}/store.db",
                           "security": {"admin_key_env": ADMIN_ENV}})
    with ServerThread(Gateway(config)) as running:
        fill(running.gateway.store, draw(300))
        yield running


def get(server, path: str, **params) -> httpx.Response:
    return httpx.get(server.url + path, params=params, headers={"authorization": f"Bearer {ADMIN}"}, timeout=60)


def test_a_report_being_built_never_makes_writes_or_the_readiness_probe_wait(server, monkeypatch):
    store = server.gateway.store
    holding, release = threading.Event(), threading.Event()

    def slow_build(reading, **window):
        chunks = reading.traffic(chunk_rows=1)
        next(chunks)  # the connection it reads through is taken from here until the stream ends
        holding.set()
        release.wait(30)
        chunks.close()
        return build_report(reading, **window)

    monkeypatch.setattr(dashboard, "build_report", slow_build)
    with ThreadPoolExecutor(2) as pool:
        report = pool.submit(get, server, "/ui/api/report", since_s=1.5)
        try:
            assert holding.wait(30), report.result()
            started = time.perf_counter()
            ready = httpx.get(server.url + "/health", timeout=30)
            probe_s = time.perf_counter() - started

            def write() -> float:
                began = time.perf_counter()
                store.record_pool(PRICES)
                store.record_decision("during-report", route="auto", model="small", learner_key=None,
                                      candidates=list(PRICES), probability=1.0, scores=None, context=None,
                                      created_s=time.time())
                store.flush()
                return time.perf_counter() - began

            write_s = pool.submit(write).result(timeout=10)  # the old shared connection: 30 s, until released
        finally:
            release.set()
        assert report.result().status_code == 200
    assert ready.status_code == 200, ready.text
    assert probe_s < READY_STORE_TIMEOUT_S and write_s < READY_STORE_TIMEOUT_S
    assert store.decision("during-report") is not None


def test_concurrent_requests_for_one_window_build_its_report_once(server, monkeypatch):
    built, release = [], threading.Event()

    def counted_build(reading, **window):
        built.append(window["since_s"])
        release.wait(30)
        return build_report(reading, **window)

    monkeypatch.setattr(dashboard, "build_report", counted_build)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(get, server, "/ui/api/report", since_s=2.5)
        deadline = time.monotonic() + 30
        while not built and time.monotonic() < deadline:
            time.sleep(0.01)
        second = pool.submit(get, server, "/ui/api/report", since_s=2.5)
        other = pool.submit(get, server, "/ui/api/report", since_s=3.5)
        time.sleep(SETTLE_S)  # both are waiting now: on the build in progress, and on their own
        release.set()
        answers = [first.result(), second.result(), other.result()]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert Counter(built) == {2.5: 1, 3.5: 1}
    assert answers[0].json()["report"] == answers[1].json()["report"]
    assert answers[0].json()["report"]["window"]["since_s"] == 2.5


def test_the_decisions_endpoint_pages_by_cursor(server):
    first = get(server, "/ui/api/decisions", per_page=200).json()
    rest = get(server, "/ui/api/decisions", per_page=200, cursor=first["next"]).json()
    ids = [d["decision_id"] for d in first["decisions"] + rest["decisions"]]
    assert len(ids) == len(set(ids)) == first["total"] >= 300 and rest["next"] is None
    assert rest["page"] is None and first["total_capped"] is False
    bad = get(server, "/ui/api/decisions", cursor="nonsense")
    assert bad.status_code == 400 and "not one this server gave" in bad.json()["error"]["message"]


def test_a_failed_build_fails_its_waiters_and_is_not_kept(monkeypatch):
    calls, release = [], threading.Event()

    def failing_build(reading, **window):
        calls.append(window)
        release.wait(30)
        raise CrossroadsError("the store holds no decision in the window asked for")

    monkeypatch.setattr(dashboard, "build_report", failing_build)
    with open_store("sqlite://:memory:") as store:
        board = dashboard.Dashboard(SimpleNamespace(gateway=SimpleNamespace(store=store)))
        window = {"route": None, "since_s": None, "until_s": None, "team": None}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(board._report, window)
            while not calls:
                time.sleep(0.01)
            second = pool.submit(board._report, window)
            time.sleep(SETTLE_S)
            release.set()
            for answer in (first, second):
                with pytest.raises(CrossroadsError, match="holds no decision"):
                    answer.result()
        assert len(calls) == 1
        with pytest.raises(CrossroadsError):
            board._report(window)
        assert len(calls) == 2  # a failure is not cached


def test_a_report_slower_than_the_cache_lifetime_is_still_reused(monkeypatch):
    calls = []

    def slow_build(reading, **window):
        calls.append(window)
        time.sleep(0.3)
        return {"built": len(calls)}

    monkeypatch.setattr(dashboard, "build_report", slow_build)
    monkeypatch.setattr(dashboard, "REPORT_TTL_S", 0.2)  # shorter than a build: counted from when it is ready
    with open_store("sqlite://:memory:") as store:
        board = dashboard.Dashboard(SimpleNamespace(gateway=SimpleNamespace(store=store)))
        window = {"route": None, "since_s": None, "until_s": None, "team": None}
        assert board._report(window) == board._report(window) == {"built": 1}
        time.sleep(0.25)
        assert board._report(window) == {"built": 2}


# -- the store's reader ---------------------------------------------------------------------------------------
def test_the_reader_is_a_second_connection_that_sees_what_was_recorded(store):
    reader = store.reader()
    assert reader is store.reader() and reader.reader() is reader
    assert reader._db is not store._db
    record(store, "d1", created_s=1.0)
    assert reader.decision("d1")["model"] == "small"  # its reads wait for the same writer
    chunks = reader.traffic(chunk_rows=1)
    next(chunks)  # the reader is taken, as while a report streams
    try:
        store.record_pool(PRICES)  # the store's own connection is free
    finally:
        chunks.close()
    reader.close()  # harmless: the store closes it
    assert [row[0] for chunk in reader.traffic() for row in chunk] == ["auto"]


def test_an_in_memory_store_reads_for_itself():
    with open_store("sqlite://:memory:") as memory:
        assert memory.reader() is memory


# -- the decision log ------------------------------------------------------------------------------------------
def record(store, decision_id: str, *, created_s: float, team: str | None = None, prompt: str | None = None,
           answered: bool = True) -> None:
    store.record_decision(decision_id, route="auto", model="small", learner_key=None, candidates=list(PRICES),
                          probability=0.5, scores=None, context=None, created_s=created_s, prompt=prompt, team=team)
    if answered:
        store.record_outcome(decision_id, model="small", status="ok", cost_usd=0.001, latency_s=0.1, ttft_s=None,
                             tokens_in=10, tokens_out=5, fallbacks=0)


def walk(store, cursor: str | None = None, **search) -> list[str]:
    """The ids on every page by cursor from ``cursor`` on; checks that only the last page is short and has no
    ``next``, and that paging by cursor says nothing about page numbers."""
    ids = []
    while True:
        found = search_decisions(store, cursor=cursor, **search)
        assert found["decisions"] and len(found["decisions"]) <= search["per_page"]
        assert found["page"] is None or cursor is None
        ids += [d["decision_id"] for d in found["decisions"]]
        cursor = found["next"]
        if cursor is None:
            return ids
        assert len(found["decisions"]) == search["per_page"]


def test_cursor_pages_give_every_decision_once_newest_first_ties_included(store):
    # 23 decisions in groups of four made in the same instant, recorded in an order that is not the id's
    made = {f"d{(i * 7) % 23:02d}": (1_000.0 + i // 4, ("red", "blue")[i % 2]) for i in range(23)}
    for decision_id, (created_s, team) in made.items():
        record(store, decision_id, created_s=created_s, team=team,
               prompt=f"question {decision_id}" + (" zebra" if created_s % 2 else ""))
    newest_first = sorted(made, key=lambda d: (-made[d][0], d))
    ids = walk(store, per_page=3)  # 3 splits groups of 4: ties straddle pages
    assert ids == newest_first and len(set(ids)) == 23
    by_offset = [d["decision_id"] for page in range(1, math.ceil(23 / 3) + 1)
                 for d in search_decisions(store, page=page, per_page=3)["decisions"]]
    assert by_offset == newest_first  # the old way still answers, in the same order
    assert walk(store, per_page=2, team="red") == [d for d in newest_first if made[d][1] == "red"]
    assert walk(store, per_page=2, query="ZEBRA") == [d for d in newest_first if made[d][0] % 2]
    # a decision made while someone pages neither repeats nor hides a row on the pages after
    first = search_decisions(store, per_page=5)
    record(store, "d99", created_s=2_000.0)
    assert [d["decision_id"] for d in first["decisions"]] + walk(store, first["next"], per_page=5) == newest_first
    assert search_decisions(store, per_page=5, cursor=first["next"])["total"] == 24  # the count is of every match


def test_a_cursor_is_checked(store):
    record(store, "d1", created_s=1.0)
    for cursor in ("nonsense", "bm90IGpzb24", "WzFd"):  # not base64 JSON, not JSON, JSON but not a pair
        with pytest.raises(CrossroadsError, match="not one this server gave"):
            search_decisions(store, cursor=cursor)
    with pytest.raises(CrossroadsError, match="not both"):
        search_decisions(store, cursor=search_decisions(store, per_page=1)["next"] or "x", page=2)


def test_a_searchs_count_stops_at_the_cap_and_an_unsearched_count_reads_decisions_alone(store, monkeypatch):
    monkeypatch.setattr(decision_log, "SEARCH_COUNT_CAP", 5)
    for i in range(12):
        record(store, f"z{i:02d}", created_s=float(i), team=("red", "blue")[i % 3 == 0], prompt=f"a zebra {i}",
               answered=i % 4 != 0)
    for i in range(3):
        record(store, f"p{i}", created_s=100.0 + i, prompt="plain")
    statements = []
    execute = store._db.execute
    monkeypatch.setattr(store._db, "execute", lambda sql, params=(): statements.append(sql) or execute(sql, params))

    capped = search_decisions(store, query="zebra", per_page=2)
    assert (capped["total"], capped["total_capped"], len(capped["decisions"])) == (5, True, 2)
    assert walk(store, query="zebra", per_page=5) == [f"z{i:02d}" for i in reversed(range(12))]  # pages go on
    under_cap = search_decisions(store, query="zebra", team="blue", per_page=2)
    assert (under_cap["total"], under_cap["total_capped"]) == (4, False)
    none = search_decisions(store, query="okapi")
    assert (none["total"], none["total_capped"], none["decisions"], none["next"]) == (0, False, [], None)
    statements.clear()
    everything = search_decisions(store, per_page=2)
    assert (everything["total"], everything["total_capped"]) == (15, False)  # no search: counted exactly
    [count] = [sql for sql in statements if "COUNT(*)" in sql]
    assert "outcomes" not in count and "JOIN" not in count
    statements.clear()
    whole = search_decisions(store, query="plain")  # one page holds every match: nothing to count
    assert whole["total"] == 3 and not [sql for sql in statements if "COUNT(*)" in sql]


def test_a_teams_decisions_are_read_through_their_index(tmp_path, monkeypatch):
    with open_store(f"sqlite://{tmp_path / 'store.db'}") as store:
        for i in range(50):
            record(store, f"d{i:02d}", created_s=float(i), team=("red", "blue")[i % 2])
        executed = []
        execute = store._db.execute
        monkeypatch.setattr(store._db, "execute",
                            lambda sql, params=(): executed.append((sql, params)) or execute(sql, params))
        first = search_decisions(store, team="red", per_page=5)
        search_decisions(store, team="red", per_page=5, cursor=first["next"])
        for sql, params in executed:
            plan = " ".join(row[-1] for row in execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "decisions_team_created_s" in plan, (sql, plan)
