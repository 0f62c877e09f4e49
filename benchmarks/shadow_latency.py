"""Does shadow traffic slow the client down? Client latency with shadow shares 0, 0.02 and 0.2 through the twin.

Run from the repository root (data from ``crossroads.paths.shared_data_dir()``)::

    python benchmarks/shadow_latency.py [--requests 1500] [--latency-scale 0]   # about 2 minutes

The recorded upstream of LLMRouter's 9-model set (``crossroads twin``, answers after the
recorded latency times ``--latency-scale``, by default at once) in its own process; for each shadow share,
``crossroads serve`` as a process in front of it on a fresh SQLite store (one Thompson
route over the 9 models, ``shadow: {share}``, every other model shadowed) and
the same ``--requests`` queries replayed through it with the openai SDK (8 in flight, no feedback).
The baseline (share 0) runs first and again last, so that the drift between two identical
runs shows the noise.  Share 0.2 is a stress: each shadowed request calls 8 more models.

Target (issue 13): no measurable p50 increase at share 0.02: its p50 ratio against the
baseline under 1.05 (the drift between the two baseline runs is printed beside it).  Writes
``benchmarks/results/shadow_latency.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _shared import Table, machine, missing_data, skip_message, twin_process, write_results
from serve_helpers import ServerProcess

from crossroads.evaluate.replay import replay
from crossroads.paths import shared_data_dir
from crossroads.store import open_store
from crossroads.upstream.recorded import Recording

SPEC = "llmrouter:{data}/llmrouter/dcrouter_train.json"
SHARES = (0.0, 0.02, 0.2, 0.0)  # the baseline again at the end: the noise between identical runs


def one_run(recording: Recording, twin_url: str, share: float, requests: int, workdir: Path, index: int) -> dict:
    """Replay through a server whose route shadows ``share`` of requests; client latencies and shadow counts."""
    config = recording.serve_config(twin_url)
    config["routes"] = {"auto": {"learner": "thompson", **({"shadow": {"share": share}} if share else {})}}
    config["default_route"] = "auto"
    config["store"] = f"sqlite://{workdir / f'store-{index}.db'}"
    with ServerProcess(config, workdir) as server:
        result = replay(recording, server.url + "/v1", "auto", requests=requests, concurrency=8, feedback="none",
                        seed=0)  # the same queries in the same order in every run
    latencies = np.array([r.latency_s for r in result.answered])
    with open_store(config["store"]) as store:
        shadow = store.shadow_spend()
    return {"share": share, "answered": len(latencies), "requests_per_s": result.summary()["requests_per_s"],
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
            "shadow_calls": sum(entry["calls"] for entry in shadow.values()),
            "shadow_errors": sum(entry["errors"] for entry in shadow.values()),
            "shadow_spend_usd": sum(entry["spend_usd"] for entry in shadow.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--latency-scale", type=float, default=0.0,
                        help="the twin answers after the recorded latency times this (default 0: at once, so that "
                        "the client's latency is crossroads' own work and shadow calls compete with it for the CPU)")
    args = parser.parse_args()
    spec = SPEC.format(data=shared_data_dir())
    missing = missing_data([Path(spec.split(":", 1)[1])])
    if missing:
        print(skip_message(missing))
        return
    recording = Recording.load([spec])
    runs = []
    latency = ("--latency-scale", str(args.latency_scale))
    with tempfile.TemporaryDirectory() as tmp, twin_process(spec, *latency) as twin_url:
        for index, share in enumerate(SHARES):
            runs.append(one_run(recording, twin_url, share, args.requests, Path(tmp), index))
            run = runs[-1]
            print(f"share {share:g}: p50 {1e3 * run['p50_s']:.1f} ms, p95 {1e3 * run['p95_s']:.1f} ms, "
                  f"{run['requests_per_s']:.0f} req/s, {run['shadow_calls']} shadow calls", flush=True)
    first, last = runs[0], runs[-1]
    baseline = {"p50_s": float(np.mean([first["p50_s"], last["p50_s"]])),
                "p95_s": float(np.mean([first["p95_s"], last["p95_s"]]))}
    noise_p50 = abs(last["p50_s"] / first["p50_s"] - 1.0)
    table = Table(f"client latency against the no-shadow baseline (mean of the first and last run), "
                  f"{args.requests:,} replayed requests each, 8 in flight",
                  ["shadow share", "p50 (ms)", "p95 (ms)", "p50 ratio", "p95 ratio", "requests/s",
                   "shadow calls", "shadow errors"])
    for run in runs:
        run["p50_ratio"] = run["p50_s"] / baseline["p50_s"]
        run["p95_ratio"] = run["p95_s"] / baseline["p95_s"]
        table.add(f"{run['share']:g}", f"{1e3 * run['p50_s']:.1f}", f"{1e3 * run['p95_s']:.1f}",
                  f"{run['p50_ratio']:.3f}", f"{run['p95_ratio']:.3f}", f"{run['requests_per_s']:.0f}",
                  f"{run['shadow_calls']:,}", f"{run['shadow_errors']:,}")
    table.print()
    at_002 = next(run for run in runs if run["share"] == 0.02)
    met = at_002["p50_ratio"] < 1.05
    print(f"target (share 0.02: no measurable p50 increase): p50 ratio {at_002['p50_ratio']:.3f}, "
          f"baseline drift {noise_p50:.3f}: {'met' if met else 'NOT met'}")
    results = {"machine": machine(), "spec": spec, "requests": args.requests, "latency_scale": args.latency_scale,
               "baseline": baseline, "baseline_drift_p50": noise_p50, "target_met": met, "runs": runs}
    write_results("shadow_latency", results, "Shadow traffic: client latency",
                  [f"Run {results['machine']['date_utc']} on {results['machine']['cores']} cores; twin latency scale "
                   f"{args.latency_scale:g}; baseline drift between the two share-0 runs {100 * noise_p50:.1f}% (p50). "
                   "`python benchmarks/shadow_latency.py`"], [table])


if __name__ == "__main__":
    main()
