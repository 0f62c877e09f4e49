"""How long one online decision takes: select plus update, per learner.

Run from the repository root::

    python benchmarks/bench_online_latency.py

Every learner routes among 4 models; contextual learners get a 384-dimensional unit
embedding (all-MiniLM-L6-v2's size), computed beforehand, as a server would have it.
PickLLM's learners run with ``sticky=False``: a converged sticky session skips the
policy entirely, which would flatter them.  Each learner first learns for ``--warmup``
steps, then ``--steps`` select+update pairs are timed one by one; the figures are the
p50 and p99 of those timings, in milliseconds.  Prints a table and writes
``benchmarks/results/online_latency.json``.

BLAS runs on one thread unless ``OPENBLAS_NUM_THREADS`` (or ``OMP_NUM_THREADS``) says
otherwise: one request's 385 x 385 algebra is too small to share, and on a busy machine
OpenBLAS's worker threads stall the occasional matrix refresh of the discounted linear
learners by tens or hundreds of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # before numpy loads BLAS

import numpy as np

from crossroads.online import make_learner

RESULTS = Path(__file__).parent / "results" / "online_latency.json"
MODELS = ["small", "medium", "large", "frontier"]
MEANS = {"small": 0.4, "medium": 0.55, "large": 0.7, "frontier": 0.75}
DIM = 384

#: (label, learner name, parameters); the target is 1 ms p50 without context, 5 ms with.
CASES = [
    ("automaton", "automaton", {"sticky": False}),
    ("qlearning", "qlearning", {"sticky": False}),
    ("ucb", "ucb", {}),
    ("ucb discount=0.99", "ucb", {"discount": 0.99}),
    ("ucb window=1000", "ucb", {"window": 1000}),
    ("thompson", "thompson", {}),
    ("thompson discount=0.99", "thompson", {"discount": 0.99}),
    ("linucb", "linucb", {}),
    ("linucb discount=0.99", "linucb", {"discount": 0.99}),
    ("lints", "lints", {}),
    ("lints discount=0.99", "lints", {"discount": 0.99}),
]


def measure(name: str, params: dict, steps: int, warmup: int, seed: int = 0) -> dict:
    learner = make_learner(name, seed=seed, **params)
    rng = np.random.default_rng(seed + 1)
    contexts = rng.normal(size=(steps + warmup, DIM))
    contexts /= np.linalg.norm(contexts, axis=1, keepdims=True)
    rewards = rng.random(steps + warmup)
    timings = np.empty(steps)
    for i in range(steps + warmup):
        context = contexts[i] if learner.contextual else None
        start = time.perf_counter()
        decision = learner.select(MODELS, context=context)
        learner.update(decision, float(rewards[i] < MEANS[decision.model]))
        elapsed = time.perf_counter() - start
        if i >= warmup:
            timings[i - warmup] = elapsed
    ms = timings * 1e3
    return {
        "learner": name,
        "params": params,
        "contextual": learner.contextual,
        "context_dim": DIM if learner.contextual else None,
        "n_models": len(MODELS),
        "steps": steps,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "target_p50_ms": 5.0 if learner.contextual else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed select+update pairs per learner")
    parser.add_argument("--warmup", type=int, default=200, help="untimed steps first")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = []
    print(f"{'learner':<24}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}  target p50")
    for label, name, params in CASES:
        row = measure(name, params, args.steps, args.warmup) | {"label": label}
        row["meets_target"] = row["p50_ms"] < row["target_p50_ms"]
        rows.append(row)
        mark = "ok" if row["meets_target"] else "MISSED"
        print(
            f"{label:<24}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['mean_ms']:>9.3f}  < {row['target_p50_ms']:g} {mark}"
        )

    report = {
        "what": "one select + one update, 4 models, contextual learners on a 384-dim embedding",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
