"""How ``crossroads logs export`` scales: 100,000 logged decisions on SQLite and on PostgreSQL.

Run from the repository root::

    python benchmarks/logs_export.py [--decisions 100000] [--backends sqlite,postgresql]

Fills a fresh store per backend with ``--decisions`` decisions with their prompts (about 300
characters) and responses, outcomes, a shadow answer on 20% of them, users' labels on half
of them and a judge's on 30% (served and shadow answers), then runs ``crossroads logs export``
in a child process and measures its wall time and peak resident memory (``getrusage``).  The
export is checked against what was written (queries, labelled answers, shadow outcomes).
Target (issue 13): 100,000 decisions in under 30 s and 1 GB.  Writes
``benchmarks/results/logs_export.json`` and ``logs_export.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _shared import Table, backend_stores, machine, write_results

from crossroads.store import open_store
from crossroads.store.records import _INSERT_DECISION, _INSERT_FEEDBACK, _UPSERT_OUTCOME, _UPSERT_SHADOW

TARGET_S = 30.0
TARGET_MB = 1024.0
BATCH = 20_000
MODELS = ("small", "medium", "large")
PROMPT = "Explain, step by step and with an example, how routing request {i} to the cheapest adequate model works. "


def fill_fast(store, n: int) -> dict[str, int]:
    """Write ``n`` decisions in large batches; what an export of them must hold."""
    store.record_pool({"small": (0.1, 0.2), "medium": (0.6, 0.6), "large": (5.0, 15.0)})
    db = store._db  # noqa: SLF001 - bulk loading for the benchmark only
    expected = {"queries": n, "labelled": 0, "shadow": 0}
    for start in range(0, n, BATCH):
        rows = range(start, min(start + BATCH, n))
        model = [MODELS[i % 3] for i in rows]
        with db.transaction():
            db.executemany(_INSERT_DECISION, [
                (f"d{i}", "auto", m, None, json.dumps(MODELS), 0.5, None, None, 1000.0 + i, PROMPT.format(i=i) * 2,
                 f"c{i % 7}", None) for i, m in zip(rows, model)])
            db.executemany(_UPSERT_OUTCOME, [
                (f"d{i}", m, "ok", 0.001, 0.5, None, 80, 200, 0, None, f"answer {i} " * 20, 1000.0 + i)
                for i, m in zip(rows, model)])
            shadows = [i for i in rows if i % 5 == 0]
            db.executemany(_UPSERT_SHADOW, [
                (f"d{i}", MODELS[(i + 1) % 3], "ok", 0.002, 0.7, 80, 180, None, f"shadow {i}", 1000.0 + i)
                for i in shadows])
            feedback = [(f"d{i}", None, 0.8, None, 1000.0 + i, "user", None, None) for i in rows if i % 2 == 0]
            feedback += [(f"d{i}", None, 0.6, None, 1000.0 + i, "judge:x", None, None) for i in rows if i % 10 < 3]
            feedback += [(f"d{i}", None, 0.7, None, 1000.0 + i, "judge:x", MODELS[(i + 1) % 3], None)
                         for i in shadows]
            db.executemany(_INSERT_FEEDBACK, feedback)
        expected["labelled"] += sum(1 for i in rows if i % 2 == 0 or i % 10 < 3)
        expected["shadow"] += len(shadows)
    return expected


def export_in_child(url: str, out: Path) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB and the printed summary of ``crossroads logs export`` in a child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "crossroads.cli.main", "logs", "export", "--store", url,
                           "--out", str(out)], check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        raise RuntimeError("could not measure the child's memory (a larger child ran before)")
    return elapsed, peak_kb / 1024.0, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    results = {"machine": machine(), "decisions": args.decisions, "targets": {"seconds": TARGET_S, "mb": TARGET_MB},
               "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in backend_stores(args.backends, tmp):
            out = Path(tmp) / f"logs-{backend}.jsonl"
            with open_store(url) as store:
                expected = fill_fast(store, args.decisions)
            export_s, peak_mb, printed = export_in_child(url, out)
            want = (f"{expected['queries']:,} queries ({expected['labelled']:,} with quality), "
                    f"{expected['shadow']:,} shadow outcomes ({expected['shadow']:,} with quality)")
            if want not in printed:
                raise RuntimeError(f"the export does not hold what was written: expected {want!r}, got {printed!r}")
            size_mb = out.stat().st_size / 1e6
            results["backends"][backend] = {"export_s": export_s, "peak_mb": peak_mb, "file_mb": size_mb,
                                            "pass": export_s < TARGET_S and peak_mb < TARGET_MB}
            print(f"{backend}: export {export_s:.1f} s, peak {peak_mb:.0f} MB, file {size_mb:.0f} MB")
    table = Table(f"crossroads logs export of {args.decisions:,} logged decisions",
                  ["backend", "export (s)", "peak memory (MB)", "file (MB)", "target met"])
    for backend, row in results["backends"].items():
        table.add(backend, f"{row['export_s']:.1f}", f"{row['peak_mb']:.0f}", f"{row['file_mb']:.0f}",
                  "yes" if row["pass"] else "NO")
    table.print()
    write_results("logs_export", results, "crossroads logs export at scale",
                  [f"Run {results['machine']['date_utc']} on {results['machine']['cores']} cores. Target: under "
                   f"{TARGET_S:.0f} s and {TARGET_MB:.0f} MB. `python benchmarks/logs_export.py`"], [table])


if __name__ == "__main__":
    main()
