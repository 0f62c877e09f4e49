"""How fast the default embedder is: throughput, one-prompt latency, disk cache speed-up.

Run from the repository root (the MMLU prompts are read from
``crossroads.paths.shared_data_dir()/routellm/mmlu/responses``)::

    python benchmarks/bench_embeddings.py

Prints the figures and writes them to ``benchmarks/results/embeddings.json``.  Each
timing is the best of ``--repeats`` runs, because other processes on a shared machine
only ever make a run slower.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from crossroads.embeddings.cache import CachedEmbedder
from crossroads.embeddings.onnx_minilm import OnnxMiniLMEmbedder
from crossroads.paths import shared_data_dir

RESULTS = Path(__file__).parent / "results" / "embeddings.json"


def mmlu_prompts() -> list[str]:
    directory = shared_data_dir() / "routellm" / "mmlu" / "responses"
    prompts = []
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            prompts.extend(row["prompt"] for row in csv.DictReader(f))
    return prompts


def best_time_s(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000, help="prompts for the throughput runs")
    parser.add_argument("--latency-prompts", type=int, default=200, help="prompts embedded one at a time")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    prompts = mmlu_prompts()
    if len(prompts) < args.texts:
        print(f"skipped: needs {args.texts} MMLU prompts under {shared_data_dir() / 'routellm/mmlu/responses'}, "
              f"found {len(prompts)} (set CROSSROADS_DATA to the shared data directory)")
        return 0
    rng = random.Random(0)
    sample = rng.sample(prompts, args.texts)
    # Short sentences: the question line of MMLU prompts with 4 to 16 words.
    stems = [p.split("\n")[0] for p in prompts if 4 <= len(p.split("\n")[0].split()) <= 16]
    short = rng.sample(stems, min(args.texts, len(stems)))
    single = sample[: args.latency_prompts]
    load_at_start = os.getloadavg()

    started = time.perf_counter()
    embedder = OnnxMiniLMEmbedder()
    embedder.embed(["warm-up"])
    cold_start_s = time.perf_counter() - started
    tokens = [len(embedder._tokenizer.encode(p).ids) for p in sample]

    mmlu_s = best_time_s(lambda: embedder.embed(sample), args.repeats)
    short_s = best_time_s(lambda: embedder.embed(short), args.repeats)

    latencies = []
    for _ in range(args.repeats):
        run = []
        for prompt in single:
            started = time.perf_counter()
            embedder.embed([prompt])
            run.append(time.perf_counter() - started)
        latencies.append(run)
    latency_ms = np.min(np.array(latencies), axis=0) * 1e3  # best of the repeats, prompt by prompt

    with tempfile.TemporaryDirectory() as directory:
        cached = CachedEmbedder(embedder, directory)
        started = time.perf_counter()
        first = cached.embed(sample)
        uncached_s = time.perf_counter() - started
        cached_s = best_time_s(lambda: cached.embed(sample), args.repeats)
        started = time.perf_counter()
        reloaded = CachedEmbedder(embedder, directory).embed(sample)
        from_disk_s = time.perf_counter() - started
        assert np.array_equal(first, reloaded)

    results = {
        "embedder": embedder.name,
        "machine": {
            "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "python": platform.python_version(),
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        "cold_start_s": round(cold_start_s, 3),
        "throughput": {
            "mmlu_prompts": len(sample),
            "mmlu_tokens_mean": round(float(np.mean(tokens)), 1),
            "mmlu_texts_per_s": round(len(sample) / mmlu_s, 1),
            "mmlu_s_per_1000": round(mmlu_s * 1000 / len(sample), 2),
            "short_sentences": len(short),
            "short_texts_per_s": round(len(short) / short_s, 1),
            "short_s_per_1000": round(short_s * 1000 / len(short), 2),
        },
        "single_prompt_latency_ms": {
            "prompts": len(single),
            "tokens_median": int(np.median(tokens[: len(single)])),
            "p50": round(float(np.percentile(latency_ms, 50)), 2),
            "p90": round(float(np.percentile(latency_ms, 90)), 2),
            "p99": round(float(np.percentile(latency_ms, 99)), 2),
        },
        "cache": {
            "texts": len(sample),
            "uncached_s": round(uncached_s, 3),
            "cached_in_memory_s": round(cached_s, 4),
            "cached_from_disk_s": round(from_disk_s, 4),
            "speedup_in_memory": round(uncached_s / cached_s, 1),
            "speedup_from_disk": round(uncached_s / from_disk_s, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    t, l, c = results["throughput"], results["single_prompt_latency_ms"], results["cache"]
    print(f"embedder {embedder.name} on {os.cpu_count()} cores (load average at start {load_at_start[0]:.2f})")
    print(f"cold start (hash check + session): {cold_start_s:.2f} s")
    print(f"MMLU prompts ({t['mmlu_tokens_mean']} tokens on average): {t['mmlu_texts_per_s']} texts/s, "
          f"{t['mmlu_s_per_1000']} s per 1000")
    print(f"short sentences: {t['short_texts_per_s']} texts/s, {t['short_s_per_1000']} s per 1000")
    print(f"one MMLU prompt at a time ({l['tokens_median']} tokens median): "
          f"p50 {l['p50']} ms, p90 {l['p90']} ms, p99 {l['p99']} ms")
    print(f"cache, {c['texts']} prompts: uncached {c['uncached_s']} s, in memory {c['cached_in_memory_s']} s "
          f"(x{c['speedup_in_memory']}), from disk {c['cached_from_disk_s']} s (x{c['speedup_from_disk']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
