"""How fast the dashboard answers on a big store: its endpoints over HTTP against the report's own code.

Run from the repository root::

    python benchmarks/dashboard_scale.py [--decisions 200000]

Fills a fresh SQLite store with ``--decisions`` decisions (prompts stored, two teams' keys,
outcomes and feedback: ``tests/logged_traffic.py``), serves it with the real app in this
process, and times each dashboard endpoint (median of 3) with httpx on loopback.  The
baseline, in the same process on the same store: ``build_report`` called directly, so the
ratio says what serving it through the dashboard adds.  Writes
``benchmarks/results/dashboard_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import httpx
from _shared import Table, machine, write_results
from logged_traffic import PRICES
from report_scale import fill_fast
from serve_helpers import ServerThread

from crossroads.evaluate.report import build_report
from crossroads.serve.config import parse_config
from crossroads.serve.dashboard import REPORT_REPLICATES
from crossroads.serve.gateway import Gateway
from crossroads.upstream.fake import FAKE_BASE_URL

ADMIN, ADMIN_ENV = "bench-admin", "CROSSROADS_BENCH_ADMIN"
REPEATS = 3
#: One prompt in this many holds the searched word.
RARE = 100


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
    table = Table(f"Dashboard endpoints on {args.decisions:,} logged decisions (SQLite), median of {REPEATS}",
                  ["endpoint", "seconds", "x build_report direct"])
    for name, seconds in figures.items():
        table.add(name, f"{seconds:.3f}", f"{seconds / baseline_s:.2f}")
    table.notes.append(f"baseline: build_report called directly on the same store, {baseline_s:.2f} s; store filled in "
                       f"{fill_s:.0f} s")
    table.print()
    write_results("dashboard_scale", {"machine": machine(), "decisions": args.decisions, "baseline_s": baseline_s,
                                      "seconds": figures},
                  "Dashboard endpoints at scale", ["`python benchmarks/dashboard_scale.py`"], [table])


if __name__ == "__main__":
    main()
