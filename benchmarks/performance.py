"""How fast crossroads embeds, routes and trains, and how much memory and disk a router takes.

Run from the repository root (data from ``crossroads.paths.shared_data_dir()``)::

    python benchmarks/performance.py

Measures, on the RouteLLM MMLU data (14k queries, GPT-4 vs Mixtral) and RouterBench
(2.2k queries, 11 models):

(a) embedding throughput (1000 MMLU prompts in one call) and one-prompt latency, also
    with onnxruntime on one thread;
(b) routing latency for one MMLU prompt the router never saw, embedding included:
    embed the prompt with an uncached embedder, then ``win_probability``.  200 held-out
    prompts, after a warm-up; every prompt goes through every router (and through the
    embedder alone, the baseline) in rotating order, so load changes hit all alike.
    Measured as installed (``make_embedder(cache=False)``, onnxruntime and BLAS free to
    use every core; the target is checked on this) and, interleaved prompt by prompt,
    single-threaded (``OnnxMiniLMEmbedder(threads=1)``, BLAS limited to one thread with
    threadpoolctl), which is steadier when other processes hold a core.
    Target: p50 <= 15 ms per router;
(c) fit time of each router on the full MMLU set and on RouterBench (best of 2), as
    installed and with BLAS limited to one thread;
(d) memory and disk: in a fresh process per router and dataset (started first, while
    this process is small, because a child's getrusage maxrss starts from its parent's),
    the tracemalloc peak of Python allocations during ``fit``, the process's getrusage
    maxrss after ``fit``, the growth of its peak resident set during ``fit`` (Linux
    ``VmHWM``, reset just before), and the size of the file ``Router.save`` writes.

Timings are the machine's under whatever else runs on it: the load average is
recorded, and (b) reports each router's cost over the embedder alone, measured in
the same loop.  Writes ``benchmarks/results/performance.json`` and ``performance.md``.
Exits 0 even when a target fails; the table says FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _shared import (
    RESULTS_DIR,
    Table,
    cell,
    load_embedded,
    machine,
    missing_data,
    skip_message,
    write_results,
)
from bench_embeddings import best_time_s, mmlu_prompts

from crossroads.paths import shared_data_dir

ROUTERS = ["knn", "ridge", "ensemble", "mlp", "mf", "sw_ranking", "gbt"]
EMBED_ONLY = "embedding only"
LATENCY_PROMPTS = 200
WARMUP_PROMPTS = 20
TARGET_P50_MS = 15.0
THROUGHPUT_TEXTS = 1000
FIT_REPEATS = 2
HOLDOUT_SEED = 0
DATASETS = {
    "mmlu": ("RouteLLM MMLU", "routellm-mmlu", "routellm/mmlu"),
    "routerbench": ("RouterBench", "routerbench", "routerbench"),
}


def spec_of(key: str) -> str:
    _, fmt, folder = DATASETS[key]
    return f"{fmt}:{shared_data_dir() / folder}"


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def proc_status_mb(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` (peak) of this process from /proc/self/status, in MB; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def blas_one_thread():
    """A context limiting BLAS (OpenBLAS, MKL) to one thread in this process."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def percentiles(values_ms: list[float]) -> dict:
    v = np.asarray(values_ms)
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "mean": float(v.mean()), "max": float(v.max())}


# -- (a) embedding -------------------------------------------------------------------------
def embedding_figures() -> dict:
    from crossroads.embeddings import make_embedder

    prompts = mmlu_prompts()
    rng = np.random.default_rng(0)
    sample = [prompts[i] for i in rng.choice(len(prompts), THROUGHPUT_TEXTS, replace=False)]
    embedder = make_embedder(cache=False)
    started = time.perf_counter()
    embedder.embed(["warm-up"])
    cold_start_s = time.perf_counter() - started
    rss_before = proc_status_mb("VmRSS")
    reset = reset_peak_rss()
    batch_s = best_time_s(lambda: embedder.embed(sample), 2)
    peak_rss = proc_status_mb("VmHWM")
    single = []
    for prompt in sample[:LATENCY_PROMPTS]:
        started = time.perf_counter()
        embedder.embed([prompt])
        single.append(1e3 * (time.perf_counter() - started))
    from crossroads.embeddings.onnx_minilm import OnnxMiniLMEmbedder

    one_thread = OnnxMiniLMEmbedder(threads=1)
    one_thread.embed(["warm-up"])
    single_one_thread = []
    for prompt in sample[:LATENCY_PROMPTS]:
        started = time.perf_counter()
        one_thread.embed([prompt])
        single_one_thread.append(1e3 * (time.perf_counter() - started))
    tokens = [len(embedder._tokenizer.encode(p).ids) for p in sample]  # no public token count
    return {"embedder": embedder.name, "cold_start_s": cold_start_s, "texts": len(sample),
            "tokens_mean": float(np.mean(tokens)), "texts_per_s": len(sample) / batch_s,
            "s_per_1000": batch_s * 1000 / len(sample), "single_prompt_ms": percentiles(single),
            "single_prompt_ms_onnxruntime_one_thread": percentiles(single_one_thread),
            "rss_mb_after_first_call": rss_before,
            "peak_rss_growth_mb_throughput_runs": peak_rss - rss_before if reset and peak_rss and rss_before else None,
            "note": "MMLU prompts as in the RouteLLM CSVs; throughput is the best of 2 runs of one embed() call"}


# -- (b) routing latency -------------------------------------------------------------------
def routing_latency(dataset, embeddings, embedder_name: str) -> dict:
    from crossroads.embeddings import make_embedder
    from crossroads.evaluate.harness import default_pair
    from crossroads.routers import make_router

    strong, weak = default_pair(dataset, None, None)
    order = np.random.default_rng(HOLDOUT_SEED).permutation(dataset.n_queries)
    held_out, train_rows = np.sort(order[:LATENCY_PROMPTS]), np.sort(order[LATENCY_PROMPTS:])
    train = dataset.subset(train_rows)
    routers = {}
    for name in ROUTERS:
        print(f"  fitting {name} on {train.n_queries} queries (held out: {LATENCY_PROMPTS})")
        routers[name] = make_router(name).fit(train, embeddings[train_rows], embedder=embedder_name)
    from crossroads.embeddings.onnx_minilm import OnnxMiniLMEmbedder

    prompts = [dataset.prompts[i] for i in held_out]
    category = dict(zip(dataset.prompts, dataset.categories))  # the MMLU subject, read by gbt
    # mode -> (uncached embedder, context the calls run in)
    modes = {"as_installed": (make_embedder(cache=False), contextlib.nullcontext),
             "single_thread": (OnnxMiniLMEmbedder(threads=1), blas_one_thread)}

    def route(embedder, name: str, prompt: str) -> tuple[float, float]:
        started = time.perf_counter()
        vector = embedder.embed([prompt])
        embedded = time.perf_counter()
        if name != EMBED_ONLY:
            routers[name].win_probability(vector, strong, weak, prompts=[prompt], categories=[category[prompt]])
        done = time.perf_counter()
        return 1e3 * (done - started), 1e3 * (done - embedded)

    names = [EMBED_ONLY, *ROUTERS]
    for embedder, context in modes.values():
        with context():
            for prompt in [train.prompts[i] for i in range(WARMUP_PROMPTS)]:
                for name in names:
                    route(embedder, name, prompt)
    total = {mode: {name: [] for name in names} for mode in modes}
    routing_only = {mode: {name: [] for name in names} for mode in modes}
    mode_names = list(modes)
    for k, prompt in enumerate(prompts):
        # Modes and routers take turns going first, so a burst of load elsewhere hits all alike.
        for mode in mode_names[k % 2:] + mode_names[: k % 2]:
            embedder, context = modes[mode]
            with context():
                for name in names[k % len(names):] + names[: k % len(names)]:
                    t, r = route(embedder, name, prompt)
                    total[mode][name].append(t)
                    routing_only[mode][name].append(r)
    out = {}
    for mode in modes:
        baseline = np.median(total[mode][EMBED_ONLY])
        out[mode] = {}
        for name in names:
            entry = {"total_ms": percentiles(total[mode][name]), "routing_only_ms": percentiles(routing_only[mode][name]),
                     "p50_over_embedding_only_p50": float(np.median(total[mode][name]) / baseline)}
            if name != EMBED_ONLY:
                entry["pass"] = bool(entry["total_ms"]["p50"] <= TARGET_P50_MS)
            out[mode][name] = entry
    tokenizer = modes["as_installed"][0]._tokenizer  # no public token count
    tokens = [len(tokenizer.encode(p).ids) for p in prompts]
    return {"prompts": len(prompts), "tokens_median": float(np.median(tokens)), "tokens_max": int(max(tokens)),
            "held_out": f"{LATENCY_PROMPTS} MMLU queries (seed {HOLDOUT_SEED}) left out of every router's training set",
            "pair": {"strong": strong, "weak": weak}, "target_p50_ms": TARGET_P50_MS,
            "modes": {"as_installed": "make_embedder(cache=False), BLAS as installed (target checked here)",
                      "single_thread": "OnnxMiniLMEmbedder(threads=1), BLAS limited to one thread (threadpoolctl)"},
            "routers": out["as_installed"], "routers_single_thread": out["single_thread"]}


# -- (c) fit time --------------------------------------------------------------------------
def fit_seconds(dataset, embeddings, embedder_name: str) -> dict:
    """Best-of-2 fit time per router as installed, and with BLAS limited to one thread."""
    from crossroads.routers import make_router

    out: dict = {"as_installed": {}, "blas_one_thread": {}}
    for name in ROUTERS:
        fit = lambda name=name: make_router(name).fit(dataset, embeddings, embedder=embedder_name)
        out["as_installed"][name] = best_time_s(fit, FIT_REPEATS)
        with blas_one_thread():
            out["blas_one_thread"][name] = best_time_s(fit, FIT_REPEATS)
        print(f"  {name}: {out['as_installed'][name]:.2f} s, BLAS one thread {out['blas_one_thread'][name]:.2f} s")
    return out


# -- (d) memory and disk, one fresh process per router and dataset ----------------------------
def fit_worker(router: str, key: str) -> dict:
    """Run in a child process: maxrss around one fit, tracemalloc peak of a second fit, saved size."""
    from crossroads.routers import load_router, make_router

    dataset, embeddings, embedder_name = load_embedded(spec_of(key))
    before, rss_before = maxrss_mb(), proc_status_mb("VmRSS")
    reset = reset_peak_rss()
    fitted = make_router(router).fit(dataset, embeddings, embedder=embedder_name)
    after, peak_rss = maxrss_mb(), proc_status_mb("VmHWM")
    tracemalloc.start()
    make_router(router).fit(dataset, embeddings, embedder=embedder_name)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as directory:
        path = fitted.save(Path(directory) / f"{router}.npz")
        size = path.stat().st_size
        started = time.perf_counter()
        loaded = load_router(path)
        load_s = time.perf_counter() - started
        probe = embeddings[:50]
        prompts = dataset.prompts[:50]
        same = bool(np.allclose(loaded.predict(probe, prompts), fitted.predict(probe, prompts), atol=1e-6))
    # Resetting VmHWM also resets what getrusage reports, so ``after`` is the peak during the fit alone.
    return {"maxrss_mb_before_fit": before, "maxrss_mb_during_fit": after, "process_maxrss_mb": max(before, after),
            "rss_mb_before_fit": rss_before,
            "peak_rss_growth_during_fit_mb": peak_rss - rss_before if reset and peak_rss and rss_before else None,
            "tracemalloc_peak_mb": peak / 2**20, "saved_bytes": size, "load_s": load_s,
            "reloaded_predictions_match": same}


def memory_figures() -> dict:
    out: dict = {}
    for key in DATASETS:
        out[key] = {}
        for name in ROUTERS:
            run = subprocess.run([sys.executable, __file__, "--fit-worker", name, key], capture_output=True, text=True,
                                 check=False)
            if run.returncode != 0:
                out[key][name] = {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "failed"}
            else:
                out[key][name] = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"  {key} {name}: {out[key][name]}")
    return out


# -- tables ----------------------------------------------------------------------------------
def tables_for(results: dict) -> list[Table]:
    e = results["embedding"]
    embed = Table(f"(a) embedding, {e['embedder']}",
                  ["what", "value"])
    embed.add(f"throughput, {e['texts']} MMLU prompts ({e['tokens_mean']:.0f} tokens on average)",
              f"{e['texts_per_s']:.0f} texts/s ({e['s_per_1000']:.1f} s per 1000)")
    s = e["single_prompt_ms"]
    embed.add("one prompt at a time (ms)", f"p50 {s['p50']:.1f}, p90 {s['p90']:.1f}, p99 {s['p99']:.1f}")
    s = e["single_prompt_ms_onnxruntime_one_thread"]
    embed.add("one prompt at a time, onnxruntime on one thread (ms)",
              f"p50 {s['p50']:.1f}, p90 {s['p90']:.1f}, p99 {s['p99']:.1f}")
    embed.add("cold start (load + first call)", f"{e['cold_start_s']:.2f} s")
    embed.add("resident set after the first call; peak growth during the throughput runs",
              f"{cell(e['rss_mb_after_first_call'], digits=0)} MB; +{cell(e['peak_rss_growth_mb_throughput_runs'], digits=0)} MB")

    lat = results["routing_latency"]
    routing = Table(f"(b) routing one held-out MMLU prompt, embedding included ({lat['prompts']} prompts, "
                    f"{lat['tokens_median']:.0f} tokens median; target p50 <= {TARGET_P50_MS:.0f} ms)",
                    ["router", "p50 (ms)", "p90 (ms)", "p99 (ms)", "routing part p50 (ms)",
                     "routing part p99 (ms)", "p50 / embedding-only p50", "target",
                     "single-threaded: p50 (ms)", "p99 (ms)"])
    for name, r in lat["routers"].items():
        t, o, one = r["total_ms"], r["routing_only_ms"], lat["routers_single_thread"][name]["total_ms"]
        routing.add(name, f"{t['p50']:.1f}", f"{t['p90']:.1f}", f"{t['p99']:.1f}", f"{o['p50']:.2f}",
                    f"{o['p99']:.2f}", f"{r['p50_over_embedding_only_p50']:.2f}",
                    "-" if name == EMBED_ONLY else ("PASS" if r["pass"] else "FAIL"),
                    f"{one['p50']:.1f}", f"{one['p99']:.1f}")
    routing.notes += [
        ("Each timing = embed the prompt (uncached embedder, make_embedder(cache=False)) + win_probability(strong, "
        "weak); 'embedding only' is the embedder alone, timed in the same loop.  The target is checked on these."),
        ("'single-threaded': the same prompts, interleaved with the run above, with OnnxMiniLMEmbedder(threads=1) "
        "and BLAS limited to one thread.  By default onnxruntime runs one thread per core: faster while the cores "
        "are free, but when another process holds a core the as-installed embedding waits for it and can take "
        "2-3 times as long, so on a busy 2-core machine the target can fail (see the load average above)."),
    ]

    fit, mem, shapes = results["fit_seconds"], results["memory"], results["shapes"]
    tables = []
    for key, label in (("mmlu", f"RouteLLM MMLU, {shapes['mmlu']}"), ("routerbench", f"RouterBench, {shapes['routerbench']}")):
        table = Table(f"(c) fit time and (d) memory and saved size: {label}",
                      ["router", "fit (s)", "fit, BLAS 1 thread (s)", "tracemalloc peak (MB)",
                       "peak RSS growth during fit (MB)", "process maxrss (MB)", "saved file (MB)", "load (s)"])
        for name in ROUTERS:
            m = mem[key][name]
            table.add(name, f"{fit[key]['as_installed'][name]:.2f}", f"{fit[key]['blas_one_thread'][name]:.2f}",
                      cell(m.get("tracemalloc_peak_mb"), digits=1), cell(m.get("peak_rss_growth_during_fit_mb"), digits=1),
                      cell(m.get("process_maxrss_mb"), digits=0), cell(m.get("saved_bytes", float("nan")) / 1e6, digits=2),
                      cell(m.get("load_s"), digits=3))
        base = np.median([m["maxrss_mb_before_fit"] for m in mem[key].values() if "maxrss_mb_before_fit" in m])
        table.notes.append(f"All queries, missing outcomes included.  Fit time: best of {FIT_REPEATS}.  Memory: a "
                           f"fresh process per router, already holding the data and embeddings (getrusage maxrss "
                           f"before fit about {base:.0f} MB).  tracemalloc peak = Python and numpy allocations during "
                           "a second fit (not BLAS or onnxruntime buffers); peak RSS growth = VmHWM, reset just "
                           "before the first fit, minus the resident set then; process maxrss = getrusage maxrss "
                           "over loading and fitting.")
        tables.append(table)
    bad = [f"{k}/{n}" for k in mem for n, m in mem[k].items() if not m.get("reloaded_predictions_match", False)]
    if bad:
        tables[-1].notes.append("Saved and reloaded router predicts differently (or failed): " + ", ".join(bad))
    return [embed, routing, *tables]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-worker", nargs=2, metavar=("ROUTER", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.fit_worker:
        print(json.dumps(fit_worker(*args.fit_worker)))
        return 0
    missing = missing_data([shared_data_dir() / folder for _, _, folder in DATASETS.values()]
                           + [shared_data_dir() / "routellm" / "mmlu" / "responses"])
    if missing:
        print(skip_message(missing))
        return 0
    started, at_start = time.perf_counter(), machine()
    results: dict = {"script": "benchmarks/performance.py", "machine_at_start": at_start, "phases": {}}

    def phase(name: str, function, *a):
        print(f"\n== {name} (load average {machine()['load_average'][0]:.2f})")
        t = time.perf_counter()
        out = function(*a)
        results["phases"][name] = {"seconds": time.perf_counter() - t, "load_average_after": machine()["load_average"]}
        return out

    results["memory"] = phase("memory and saved size (a fresh process per router)", memory_figures)
    results["embedding"] = phase("embedding", embedding_figures)
    mmlu, mmlu_emb, embedder_name = load_embedded(spec_of("mmlu"))
    bench, bench_emb, _ = load_embedded(spec_of("routerbench"))
    results["shapes"] = {"mmlu": f"{mmlu.n_queries} queries x {mmlu.n_models} models",
                         "routerbench": f"{bench.n_queries} queries x {bench.n_models} models"}
    results["routing_latency"] = phase("routing latency", routing_latency, mmlu, mmlu_emb, embedder_name)
    results["fit_seconds"] = {
        "mmlu": phase("fit time, MMLU", fit_seconds, mmlu, mmlu_emb, embedder_name),
        "routerbench": phase("fit time, RouterBench", fit_seconds, bench, bench_emb, embedder_name),
    }
    results["main_process_maxrss_mb"] = maxrss_mb()
    results["machine_at_end"] = machine()
    results["run_seconds"] = time.perf_counter() - started

    tables = tables_for(results)
    for table in tables:
        table.print()
    lat = results["routing_latency"]["routers"]
    one = results["routing_latency"]["routers_single_thread"]
    failing = [n for n, r in lat.items() if r.get("pass") is False]
    failing_one = [n for n, r in one.items() if r.get("pass") is False]
    verdict = (f"PASS  all routers route one MMLU prompt in p50 <= {TARGET_P50_MS:.0f} ms, embedding included (p50 "
               + ", ".join(f"{n} {lat[n]['total_ms']['p50']:.1f}" for n in ROUTERS) + " ms)"
               if not failing else f"FAIL  p50 > {TARGET_P50_MS:.0f} ms, embedding included, for: " + ", ".join(
                   f"{n} ({lat[n]['total_ms']['p50']:.1f} ms)" for n in failing))
    verdict += ("; single-threaded every router passes too (p50 " + ", ".join(
        f"{n} {one[n]['total_ms']['p50']:.1f}" for n in ROUTERS) + " ms)" if not failing_one else
        "; single-threaded still over for: " + ", ".join(
        f"{n} ({one[n]['total_ms']['p50']:.1f} ms)" for n in failing_one))
    print("\ntarget:\n  " + verdict)
    load = (f"load average {at_start['load_average'][0]:.2f} at start, "
            f"{results['machine_at_end']['load_average'][0]:.2f} at end")
    intro = [(f"Run {at_start['date_utc']} on {at_start['cores']} cores ({load}); "
             f"{results['run_seconds'] / 60:.1f} min. Timings vary with the machine's load; compare ratios "
             "such as 'p50 / embedding-only p50' across runs.  Peak resident set of this process (everything "
             f"above, getrusage maxrss): {results['main_process_maxrss_mb']:.0f} MB."), "", "Target:", "",
             f"- {verdict}"]
    json_path, md_path = write_results("performance", results, "Performance", intro, tables, args.out_dir)
    print(f"wrote {json_path} and {md_path} ({results['run_seconds'] / 60:.1f} min, {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
