"""How fast the dashboard answers on a big store: its endpoints over HTTP against the report's own code.

Run from the repository root::

    python benchmarks/dashboard_scale.py [--decisions 200000]

Fills a fresh SQLite store with ``--decisions`` decisions (prompts stored, two teams' keys,
outcomes and feedback: ``tests/logged_traffic.py``), serves it with the real app in this
process, and times each dashboard endpoint (median of 3) with httpx on loopback.  The
baseline, in the same process on the same store: ``build_report`` called directly, so the
ratio says what serving it through the dashboard adds.

Then what issue 15 found at a million decisions, each against a baseline in this process:
the readiness probe (``/health``, polled all along) while a report is built through the
store's shared connection (what the dashboard did before it had a reader) and while the
dashboard builds a cold one (through the reader); two requests at once for one cold window
against one alone; a deep page by cursor against the same page by OFFSET; a search that
matches nothing and one that matches everything, against counting their matches the old
way (joined and uncapped).  Writes ``benchmarks/results/dashboard_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import httpx
from _shared import Table, machine, write_results
from logged_traffic import PRICES
from report_scale import fill_fast
from serve_helpers import ServerThread

from crossroads.evaluate.report import build_report
from crossroads.serve import dashboard
from crossroads.serve.config import parse_config
from crossroads.serve.dashboard import REPORT_REPLICATES
from crossroads.serve.gateway import READY_STORE_TIMEOUT_S, Gateway
from crossroads.store.decision_log import SEARCH_COUNT_CAP
from crossroads.upstream.fake import FAKE_BASE_URL

ADMIN, ADMIN_ENV = "bench-admin", "CROSSROADS_BENCH_ADMIN"
REPEATS = 3
#: One prompt in this many holds the searched word.
RARE = 100
#: Pause between two readiness probes (a load balancer polls every few seconds; this is denser, to catch stalls).
PROBE_GAP_S = 0.05
#: Rows per page of the decision log in the deep-page comparison (the endpoint's default).
PER_PAGE = 50
#: How the decision log counted a search's matches before its count was capped and joined only when needed.
OLD_SEARCH_COUNT = ("SELECT COUNT(*) FROM decisions d LEFT JOIN outcomes o ON o.decision_id = d.decision_id "
                    "WHERE 1 = 1 AND (d.decision_id LIKE ? ESCAPE '\\' OR d.route = ? OR d.model = ? OR o.model = ? "
                    "OR LOWER(d.prompt) LIKE ? ESCAPE '\\')")


def fill(store, n: int) -> None:
    """``n`` decisions over 30 days with prompts, outcomes, feedback and two teams' keys."""
    def prompt(i: int, category: str) -> str:
        return f"question {i} about {category}" + (" zebra" if i % RARE == 0 else "")

    fill_fast(store, n, prompt=prompt, team=lambda i: ("search", "support")[i % 2])


def timed(call) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def probed_while(url: str, work) -> dict:
    """Poll ``/health`` while ``work()`` runs: the work's seconds, and the probes' count, worst time, time over the
    readiness timeout, and answers other than 200."""
    stop, probes = threading.Event(), []

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                started = time.perf_counter()
                status = client.get("/health").status_code
                probes.append((time.perf_counter() - started, status))
                time.sleep(PROBE_GAP_S)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # a few probes before the work starts
    started = time.perf_counter()
    work()
    work_s = time.perf_counter() - started
    stop.set()
    poller.join()
    times = [seconds for seconds, _ in probes]
    return {"work_s": work_s, "probes": len(probes), "max_probe_s": max(times),
            "median_probe_s": statistics.median(times),
            "over_timeout": sum(seconds > READY_STORE_TIMEOUT_S for seconds in times),
            "not_200": sum(status != 200 for _, status in probes)}


def timed_once(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    args = parser.parse_args()
    os.environ[ADMIN_ENV] = ADMIN
    with tempfile.TemporaryDirectory() as tmp:
        models = [{"name": name, "base_url": FAKE_BASE_URL, "price_per_mtok_in": price_in,
                   "price_per_mtok_out": price_out} for name, (price_in, price_out) in PRICES.items()]
        config = parse_config({"models": models, "routes": {"auto": {"learner": "thompson"}},
                               "store": f"sqlite:///{tmp}/store.db", "store_prompts": True,
                               "security": {"admin_key_env": ADMIN_ENV}})
        gateway = Gateway(config)
        started = time.perf_counter()
        fill(gateway.store, args.decisions)
        fill_s = time.perf_counter() - started
        baseline_s = timed(lambda: build_report(gateway.store, replicates=REPORT_REPLICATES))
        headers = {"authorization": f"Bearer {ADMIN}"}
        with ServerThread(gateway) as server, httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
            def get(path: str, **params) -> dict:
                answer = client.get(path, params=params)
                assert answer.status_code == 200, answer.text[:300]
                return answer.json()

            started = time.perf_counter()
            window = get("/ui/api/report")["report"]["window"]
            cold_s = time.perf_counter() - started
            first, last = window["first_s"], window["last_s"]
            windows = itertools.count()
            figures = {
                "report, all (cold)": cold_s,
                "report, all (cached)": timed(lambda: get("/ui/api/report")),
                # a window of its own each time, so that no call is answered from the dashboard's cache
                "report, last 10% of the window (cold)": timed(lambda: get(
                    "/ui/api/report", since_s=last - 0.1 * (last - first) + next(windows))),
                "decisions, page 1": timed(lambda: get("/ui/api/decisions")),
                "decisions, page 100": timed(lambda: get("/ui/api/decisions", page=100)),
                f"decisions, prompt search (1 in {RARE})": timed(lambda: get("/ui/api/decisions", q="zebra")),
                "decisions, one route": timed(lambda: get("/ui/api/decisions", route="auto")),
                "one decision": timed(lambda: get(f"/ui/api/decisions/d{args.decisions // 2}")),
                "budgets": timed(lambda: get("/ui/api/budgets")),
                "the page /ui": timed(lambda: client.get("/ui")),
            }
            # each report below asks for a window no request asked for before, so that it is built (cold)
            cold = (first - 1 - k for k in itertools.count())
            probes = {
                "idle": probed_while(server.url, lambda: time.sleep(2.0)),
                "report on the shared connection (before)": probed_while(server.url, lambda: build_report(
                    gateway.store, replicates=REPORT_REPLICATES, since_s=next(cold))),
                "dashboard cold report (reader)": probed_while(server.url, lambda since_s=next(cold): get(
                    "/ui/api/report", since_s=since_s)),
                "no-match prompt searches x3": probed_while(server.url, lambda: [
                    get("/ui/api/decisions", q="okapi") for _ in range(3)]),
            }

            def together(since_s: float) -> float:
                started = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:
                    answers = list(pool.map(lambda _: get("/ui/api/report", since_s=since_s), range(2)))
                assert answers[0] == answers[1]
                return time.perf_counter() - started

            builds = []  # the windows the dashboard built a report for, counted through its own seam
            build = dashboard.build_report
            dashboard.build_report = lambda store, **window: builds.append(window) or build(store, **window)
            alone, paired = [], []
            for _ in range(REPEATS):  # interleaved, so that other load on the machine falls on both alike
                alone.append(timed_once(lambda: get("/ui/api/report", since_s=next(cold))))
                paired.append(together(next(cold)))
            dashboard.build_report = build
            alone_s, together_s = statistics.median(alone), statistics.median(paired)
            assert len(builds) == 2 * REPEATS, builds  # one build per window, however many asked at once

            depth = max(2, args.decisions // PER_PAGE // 2)  # the middle of the log
            before = get("/ui/api/decisions", page=depth - 1, per_page=PER_PAGE)
            by_offset = get("/ui/api/decisions", page=depth, per_page=PER_PAGE)
            by_cursor = get("/ui/api/decisions", cursor=before["next"], per_page=PER_PAGE)
            assert by_offset["decisions"] == by_cursor["decisions"]
            db = gateway.store._db  # noqa: SLF001 - the old count, run as it was

            def old_search(word: str) -> None:
                db.execute(OLD_SEARCH_COUNT, [word + "%", word, word, word, "%" + word + "%"])
                get("/ui/api/decisions", q=word)
            pages = {
                f"page {depth:,} by OFFSET": timed(lambda: get("/ui/api/decisions", page=depth, per_page=PER_PAGE)),
                f"page {depth:,} by cursor": timed(lambda: get("/ui/api/decisions", cursor=before["next"],
                                                                per_page=PER_PAGE)),
                # before: the old count, then the page's query (the same query as now, whose count is skipped when the
                # first page holds every match, and capped otherwise)
                "no-match search, before (old count, then the page)": timed(lambda: old_search("okapi")),
                "no-match search (the page: nothing to count)": timed(lambda: get("/ui/api/decisions", q="okapi")),
                "match-all search, before (old count, then the page)": timed(lambda: old_search("question")),
                "match-all search (the page, count capped)": timed(lambda: get("/ui/api/decisions", q="question")),
            }
            everything = get("/ui/api/decisions", q="question")
            assert everything["total_capped"] == (args.decisions > SEARCH_COUNT_CAP)  # every prompt matches
    table = Table(f"Dashboard endpoints on {args.decisions:,} logged decisions (SQLite), median of {REPEATS}",
                  ["endpoint", "seconds", "x build_report direct"])
    for name, seconds in figures.items():
        table.add(name, f"{seconds:.3f}", f"{seconds / baseline_s:.2f}")
    table.notes.append(f"baseline: build_report called directly on the same store, {baseline_s:.2f} s; store filled in "
                       f"{fill_s:.0f} s")
    table.print()
    ready = Table(f"Readiness probe (/health, every {PROBE_GAP_S:g} s) while the store is read",
                  ["while", "work s", "probes", "median probe s", "max probe s",
                   f"probes over {READY_STORE_TIMEOUT_S:g} s", "not 200", "max x idle"])
    for name, seen in probes.items():
        ready.add(name, f"{seen['work_s']:.2f}", seen["probes"], f"{seen['median_probe_s']:.3f}",
                  f"{seen['max_probe_s']:.3f}", seen["over_timeout"], seen["not_200"],
                  f"{seen['max_probe_s'] / probes['idle']['max_probe_s']:.1f}")
    ready.notes.append("before: build_report on the store's one connection, which the probe's write (record_pool, "
                       f"{READY_STORE_TIMEOUT_S:g} s timeout) waits for; the dashboard now reads through a second one")
    ready.print()
    once = Table(f"Two requests at once for one cold report window, median of {REPEATS}",
                 ["", "seconds", "x one request alone", "reports built"])
    once.add("one request alone", f"{alone_s:.2f}", "1.00", "1")
    once.add("two requests at once", f"{together_s:.2f}", f"{together_s / alone_s:.2f}", "1")
    once.notes.append(f"reports built: counted through the dashboard's build_report ({len(builds)} for "
                      f"{2 * REPEATS} windows, {3 * REPEATS} requests)")
    once.print()
    log = Table(f"Decision log on {args.decisions:,} decisions, median of {REPEATS}", ["query", "seconds", "ratio"])
    offset_s, cursor_s = pages[f"page {depth:,} by OFFSET"], pages[f"page {depth:,} by cursor"]
    before = {"no-match search (the page: nothing to count)": "no-match search, before (old count, then the page)",
              "match-all search (the page, count capped)": "match-all search, before (old count, then the page)"}
    for name, seconds in pages.items():
        ratio = (f"{cursor_s / offset_s:.3f} x OFFSET" if name == f"page {depth:,} by cursor" else
                 f"{seconds / pages[before[name]]:.2f} x before" if name in before else "")
        log.add(name, f"{seconds:.3f}", ratio)
    log.notes.append("before: the COUNT the decision log ran first (outcomes joined, every match counted), then the "
                     "endpoint as it is now, whose page query is the old one (the match-all search also runs its "
                     "capped count there, so its 'before' is overstated by at most its 'after')")
    log.print()
    write_results("dashboard_scale", {"machine": machine(), "decisions": args.decisions, "baseline_s": baseline_s,
                                      "seconds": figures, "readiness": probes,
                                      "same_window": {"alone_s": alone_s, "together_s": together_s},
                                      "decision_log_s": pages},
                  "Dashboard endpoints at scale", ["`python benchmarks/dashboard_scale.py`"],
                  [table, ready, once, log])


if __name__ == "__main__":
    main()
