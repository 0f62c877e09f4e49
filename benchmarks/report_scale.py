"""How ``crossroads report`` scales: a million logged decisions on SQLite and on PostgreSQL.

Run from the repository root::

    python benchmarks/report_scale.py [--decisions 1000000]

Fills a fresh store per backend with ``--decisions`` decisions, outcomes and feedback
(three models, four categories, an exploring policy: ``tests/logged_traffic.py``), then
runs ``crossroads report`` on it in a child process and measures its wall time and peak
resident memory (``getrusage`` of the child).  The baseline, run in this process on the
same store just before: reading the same rows with the store's own cursor and doing
nothing with them, so the ratio says what the report adds to reading its input.
Targets (issue 13): under 60 s and under 1 GB.  Writes ``benchmarks/results/report_scale.json``
and ``report_scale.md``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _shared import Table, backend_stores, machine, write_results
from logged_traffic import CATEGORIES, MODELS, PRICES, draw

from crossroads.store import open_store
from crossroads.store.records import _INSERT_DECISION, _INSERT_FEEDBACK, _UPSERT_OUTCOME, _from_spool

TARGET_S = 60.0
TARGET_MB = 1024.0
BATCH = 20_000


def fill_fast(store, n: int, seed: int = 0, prompt=lambda i, category: None, team=lambda i: None) -> None:
    """Write ``n`` decisions with outcomes and feedback in large batches (the server's writer does 500 a time);
    ``prompt(i, category)`` and ``team(i)`` give decision ``i``'s stored prompt and its key's team (None: none)."""
    logged = draw(n, seed=seed, days=30.0)
    store.record_pool(PRICES)
    cost = logged.served(logged.cost_usd)
    out = logged.served(logged.tokens_out)
    quality = logged.served(logged.quality)
    db = store._db  # noqa: SLF001 - bulk loading for the benchmark only
    for start in range(0, n, BATCH):
        rows = range(start, min(start + BATCH, n))
        with db.transaction():
            db.executemany(_INSERT_DECISION, [
                (f"d{i}", "auto", MODELS[logged.chosen[i]], None, '["small", "medium", "large"]',
                 float(logged.propensity[i]), None, None, float(logged.created_s[i]),
                 prompt(i, CATEGORIES[logged.category[i]]), CATEGORIES[logged.category[i]], None,
                 None if team(i) is None else f"key_{team(i)}", team(i)) for i in rows])
            db.executemany(_UPSERT_OUTCOME, [_from_spool("outcome", (  # None for the columns added since
                f"d{i}", MODELS[logged.chosen[i]], "ok", float(cost[i]), 0.2 + 0.001 * (i % 300), None,
                int(logged.tokens_in[i]), int(out[i]), 0, None, None, float(logged.created_s[i])))[1] for i in rows])
            db.executemany(_INSERT_FEEDBACK, [
                (f"d{i}", None, float(quality[i]), None, float(logged.created_s[i]), None, None, None) for i in rows])


def read_only(store) -> float:
    started = time.perf_counter()
    count = sum(len(chunk) for chunk in store.traffic())
    elapsed = time.perf_counter() - started
    assert count > 0
    return elapsed


def report_in_child(url: str, out: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of ``crossroads report`` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "crossroads.cli.main", "report", "--store", url, "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        raise RuntimeError("could not measure the child's memory (a larger child ran before)")
    return elapsed, peak_kb / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    results = {"machine": machine(), "decisions": args.decisions, "targets": {"seconds": TARGET_S, "mb": TARGET_MB},
               "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in backend_stores(args.backends, tmp):
            started = time.perf_counter()
            with open_store(url) as store:
                fill_fast(store, args.decisions)
                fill_s = time.perf_counter() - started
                read_s = min(read_only(store) for _ in range(2))
            report_s, peak_mb = report_in_child(url, Path(tmp) / f"report-{backend}")
            results["backends"][backend] = {"fill_s": fill_s, "read_rows_s": read_s, "report_s": report_s,
                                            "report_over_read": report_s / read_s, "peak_mb": peak_mb,
                                            "pass": report_s < TARGET_S and peak_mb < TARGET_MB}
            print(f"{backend}: report {report_s:.1f} s ({report_s / read_s:.1f}x reading the rows, {read_s:.1f} s), "
                  f"peak {peak_mb:.0f} MB")
    table = Table(f"crossroads report on {args.decisions:,} logged decisions",
                  ["backend", "report (s)", "reading the rows alone (s)", "ratio", "peak memory (MB)", "target met"])
    for backend, row in results["backends"].items():
        table.add(backend, f"{row['report_s']:.1f}", f"{row['read_rows_s']:.1f}", f"{row['report_over_read']:.1f}x",
                  f"{row['peak_mb']:.0f}", "yes" if row["pass"] else "NO")
    table.print()
    write_results("report_scale", results, "crossroads report at scale",
                  [f"Run {results['machine']['date_utc']} on {results['machine']['cores']} cores. Target: under "
                   f"{TARGET_S:.0f} s and {TARGET_MB:.0f} MB. `python benchmarks/report_scale.py`"], [table])


if __name__ == "__main__":
    main()
